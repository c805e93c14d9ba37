//! Projection `trading`: portfolio, equity curve, positions, prices and risk state; also held in memory
//! ([`HotModels`]) so that the gateway serves them without a query.
//!
//! Tables (schema `projections`): `portfolio` (one row), `equity_curve` (one row per `PortfolioMarked`),
//! `positions`, `prices` (latest per symbol, by event time), `prices_recent` (the newest
//! [`RECENT_PER_SYMBOL`] per symbol), `risk_state` (one row), `risk_rejections` (one row per `OrderRefused`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jarvis_domain::market::{MarketFeedEvent, PriceFeedEvent};
use jarvis_domain::trading::portfolio::PortfolioEvent;
use jarvis_domain::trading::risk::RiskEvent;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::projector::Projection;
use crate::source::{Body, Event};
use crate::ProjectionError;

/// Recent prices kept per symbol in `prices_recent`.
pub const RECENT_PER_SYMBOL: i64 = 500;

/// The portfolio: cash, equity and P&L.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PortfolioView {
    /// Quote asset, e.g. `USDT`.
    pub quote_asset: String,
    /// Starting cash.
    pub initial_cash: Decimal,
    /// Cash now.
    pub cash: Decimal,
    /// Cash plus positions at their last marked price (average cost when none).
    pub equity: Decimal,
    /// Unrealised P&L at the last mark.
    pub unrealized_pnl: Decimal,
    /// Realised P&L, gross of fees (Σ `PnlRealized.pnl`).
    pub realized_pnl: Decimal,
    /// Fees paid.
    pub fees: Decimal,
    /// Highest equity seen.
    pub high_water_mark: Decimal,
    /// Equity at the start of the UTC day of the last mark.
    pub day_start_equity: Decimal,
    /// Fills applied.
    pub trades: i64,
    /// When it was opened (event time).
    pub opened_at: Option<DateTime<Utc>>,
    /// Event time of the last change.
    pub updated_at: Option<DateTime<Utc>>,
}

/// One point of the equity curve (one per `PortfolioMarked`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct EquityPoint {
    /// Event time of the mark.
    pub at: DateTime<Utc>,
    /// Equity.
    pub equity: Decimal,
    /// Cash at the time.
    pub cash: Decimal,
    /// Unrealised P&L.
    pub unrealized_pnl: Decimal,
    /// High-water mark.
    pub high_water_mark: Decimal,
}

/// A position.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct PositionView {
    /// The pair, e.g. `SOL/USDT`.
    pub symbol: String,
    /// Base units held.
    pub quantity: Decimal,
    /// Average cost (fees excluded; 0 once closed).
    pub avg_cost: Decimal,
    /// Last price the portfolio marked it at.
    pub last_price: Option<Decimal>,
    /// Realised P&L of this symbol, gross of fees.
    pub realized_pnl: Decimal,
    /// Fees paid on this symbol.
    pub fees: Decimal,
    /// Event time of the last change.
    pub updated_at: DateTime<Utc>,
}

/// The latest price of a symbol.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct PriceView {
    /// The pair.
    pub symbol: String,
    /// Price.
    pub price: Decimal,
    /// Event time (a candle's close time, or when a price was observed).
    pub at: DateTime<Utc>,
    /// `candle`, or the price source (e.g. `jupiter`).
    pub source: String,
}

/// The risk state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct RiskView {
    /// Whether trading is halted.
    pub halted: bool,
    /// The rule that halted it (`halted` for a command), while halted.
    pub halt_rule: Option<String>,
    /// Why it was halted or resumed last.
    pub halt_reason: Option<String>,
    /// When it was last halted or resumed (event time).
    pub changed_at: Option<DateTime<Utc>>,
    /// The limits in force (as set by `RiskLimitsSet`).
    #[schema(value_type = Option<Object>)]
    pub limits: Option<serde_json::Value>,
    /// Proposals admitted.
    pub admitted: i64,
    /// Proposals refused.
    pub refused: i64,
}

/// A refused proposal.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct Rejection {
    /// Global position of the `OrderRefused` event (the paging cursor).
    pub position: i64,
    /// The order.
    pub order_id: Uuid,
    /// The pair.
    pub symbol: String,
    /// Broken rules, e.g. `max_notional`.
    pub rules: Vec<String>,
    /// The violations with their limits and actual values.
    #[schema(value_type = Object)]
    pub reasons: serde_json::Value,
    /// When (the proposal's time).
    pub at: DateTime<Utc>,
}

/// What the `trading` projection holds in memory: served by the gateway without a query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct TradingSnapshot {
    /// The portfolio, once opened.
    pub portfolio: Option<PortfolioView>,
    /// Positions, by symbol (closed ones stay with quantity 0).
    pub positions: Vec<PositionView>,
    /// Latest price per symbol.
    pub prices: Vec<PriceView>,
    /// Risk state.
    pub risk: RiskView,
}

/// A shared handle on the latest committed [`TradingSnapshot`]; cheap to clone and to read.
#[derive(Debug, Clone, Default)]
pub struct HotModels {
    inner: Arc<RwLock<Arc<TradingSnapshot>>>,
}

impl HotModels {
    /// The latest committed snapshot.
    pub fn snapshot(&self) -> Arc<TradingSnapshot> {
        match self.inner.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn publish(&self, snapshot: TradingSnapshot) {
        let snapshot = Arc::new(snapshot);
        match self.inner.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct State {
    portfolio: Option<PortfolioView>,
    positions: BTreeMap<String, PositionView>,
    prices: BTreeMap<String, PriceView>,
    risk: RiskView,
}

impl State {
    fn snapshot(&self) -> TradingSnapshot {
        TradingSnapshot {
            portfolio: self.portfolio.clone(),
            positions: self.positions.values().cloned().collect(),
            prices: self.prices.values().cloned().collect(),
            risk: self.risk.clone(),
        }
    }
}

/// Rows a page of events changed.
#[derive(Debug, Default)]
struct Dirty {
    /// Position of the last event that changed the portfolio row.
    portfolio: Option<i64>,
    /// Position of the last event that changed the risk row.
    risk: Option<i64>,
    positions: BTreeSet<String>,
    prices: BTreeSet<String>,
    recent: BTreeMap<(String, DateTime<Utc>), (Decimal, String)>,
    equity: BTreeMap<DateTime<Utc>, (EquityPoint, i64)>,
    rejections: Vec<Rejection>,
}

/// The `trading` projection.
#[derive(Debug, Default)]
pub struct TradingProjection {
    committed: State,
    pending: Option<State>,
    hot: HotModels,
    /// In a rebuild's bulk phase: the one-row summaries and recent prices changed since it began, written
    /// once by `flush` (their last values are all that survive).
    deferred: Option<Dirty>,
}

impl TradingProjection {
    /// A projection that publishes its state to `hot` at each commit.
    pub fn new(hot: HotModels) -> Self {
        Self {
            committed: State::default(),
            pending: None,
            hot,
            deferred: None,
        }
    }
}

impl Dirty {
    /// Moves the rows whose last value is all that counts into `into` (the recent prices trimmed to the
    /// newest [`RECENT_PER_SYMBOL`] of each symbol), leaving the rows every event adds.
    fn defer(&mut self, into: &mut Dirty) {
        into.portfolio = self.portfolio.take().or(into.portfolio);
        into.risk = self.risk.take().or(into.risk);
        into.positions.append(&mut self.positions);
        into.prices.append(&mut self.prices);
        into.recent.append(&mut self.recent);
        // Oldest first: a symbol's first rows go while more than RECENT_PER_SYMBOL are left.
        let mut left: BTreeMap<String, i64> = BTreeMap::new();
        for (symbol, _) in into.recent.keys() {
            *left.entry(symbol.clone()).or_default() += 1;
        }
        into.recent.retain(|(symbol, _), _| {
            left.get_mut(symbol).is_none_or(|n| {
                *n -= 1;
                *n < RECENT_PER_SYMBOL
            })
        });
    }
}

pub(crate) fn name_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => e.to_string(),
    }
}

fn observe(
    state: &mut State,
    dirty: &mut Dirty,
    symbol: &str,
    price: Decimal,
    at: DateTime<Utc>,
    source: &str,
) {
    dirty
        .recent
        .insert((symbol.to_string(), at), (price, source.to_string()));
    let newer = state.prices.get(symbol).is_none_or(|p| at >= p.at);
    if newer {
        state.prices.insert(
            symbol.to_string(),
            PriceView {
                symbol: symbol.to_string(),
                price,
                at,
                source: source.to_string(),
            },
        );
        dirty.prices.insert(symbol.to_string());
    }
}

fn apply_portfolio(state: &mut State, dirty: &mut Dirty, event: &PortfolioEvent, position: i64) {
    match event {
        PortfolioEvent::PortfolioOpened {
            quote_asset,
            initial_cash,
            at,
        } => {
            state.portfolio = Some(PortfolioView {
                quote_asset: quote_asset.clone(),
                initial_cash: *initial_cash,
                cash: *initial_cash,
                equity: *initial_cash,
                unrealized_pnl: Decimal::ZERO,
                realized_pnl: Decimal::ZERO,
                fees: Decimal::ZERO,
                high_water_mark: *initial_cash,
                day_start_equity: *initial_cash,
                trades: 0,
                opened_at: Some(*at),
                updated_at: Some(*at),
            });
            dirty.portfolio = Some(position);
        }
        PortfolioEvent::PositionChanged {
            symbol,
            fee,
            position_after,
            avg_cost_after,
            cash_after,
            at,
            ..
        } => {
            let key = symbol.as_str().to_string();
            let held = state
                .positions
                .entry(key.clone())
                .or_insert_with(|| PositionView {
                    symbol: key.clone(),
                    quantity: Decimal::ZERO,
                    avg_cost: Decimal::ZERO,
                    last_price: None,
                    realized_pnl: Decimal::ZERO,
                    fees: Decimal::ZERO,
                    updated_at: *at,
                });
            held.quantity = *position_after;
            held.avg_cost = *avg_cost_after;
            held.fees += *fee;
            held.updated_at = *at;
            dirty.positions.insert(key);
            if let Some(p) = &mut state.portfolio {
                p.cash = *cash_after;
                p.fees += *fee;
                p.trades += 1;
                p.updated_at = Some(*at);
                // Equity between marks: cash plus positions at their last marked price (or cost).
                p.equity = p.cash
                    + state
                        .positions
                        .values()
                        .map(|q| q.quantity * q.last_price.unwrap_or(q.avg_cost))
                        .sum::<Decimal>();
                dirty.portfolio = Some(position);
            }
        }
        PortfolioEvent::PnlRealized {
            symbol, pnl, at, ..
        } => {
            if let Some(position) = state.positions.get_mut(symbol.as_str()) {
                position.realized_pnl += *pnl;
                position.updated_at = *at;
                dirty.positions.insert(symbol.as_str().to_string());
            }
            if let Some(p) = &mut state.portfolio {
                p.realized_pnl += *pnl;
                p.updated_at = Some(*at);
                dirty.portfolio = Some(position);
            }
        }
        PortfolioEvent::PortfolioMarked {
            at,
            prices,
            equity,
            unrealized_pnl,
            high_water_mark,
            day_start_equity,
        } => {
            for point in prices {
                if let Some(position) = state.positions.get_mut(point.symbol.as_str()) {
                    position.last_price = Some(point.price);
                    dirty.positions.insert(point.symbol.as_str().to_string());
                }
            }
            if let Some(p) = &mut state.portfolio {
                p.equity = *equity;
                p.unrealized_pnl = *unrealized_pnl;
                p.high_water_mark = *high_water_mark;
                p.day_start_equity = *day_start_equity;
                p.updated_at = Some(*at);
                dirty.portfolio = Some(position);
                dirty.equity.insert(
                    *at,
                    (
                        EquityPoint {
                            at: *at,
                            equity: *equity,
                            cash: p.cash,
                            unrealized_pnl: *unrealized_pnl,
                            high_water_mark: *high_water_mark,
                        },
                        position,
                    ),
                );
            }
        }
    }
}

fn apply_risk(state: &mut State, dirty: &mut Dirty, event: &RiskEvent, position: i64) {
    let risk = &mut state.risk;
    match event {
        RiskEvent::RiskLimitsSet { limits, .. } => {
            risk.limits = serde_json::to_value(limits).ok();
        }
        RiskEvent::OrderAdmitted { .. } => risk.admitted += 1,
        RiskEvent::OrderRefused {
            order_id,
            symbol,
            reasons,
            at,
        } => {
            risk.refused += 1;
            dirty.rejections.push(Rejection {
                position,
                order_id: order_id.0,
                symbol: symbol.as_str().to_string(),
                rules: reasons.iter().map(|r| name_of(&r.rule)).collect(),
                reasons: serde_json::to_value(reasons).unwrap_or_default(),
                at: *at,
            });
        }
        RiskEvent::TradingHalted { rule, reason, at } => {
            risk.halted = true;
            risk.halt_rule = Some(name_of(rule));
            risk.halt_reason = Some(reason.clone());
            risk.changed_at = Some(*at);
        }
        RiskEvent::TradingResumed { reason, at, .. } => {
            risk.halted = false;
            risk.halt_rule = None;
            risk.halt_reason = Some(reason.clone());
            risk.changed_at = Some(*at);
        }
    }
    dirty.risk = Some(position);
}

#[async_trait]
impl Projection for TradingProjection {
    fn name(&self) -> &'static str {
        "trading"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "portfolio",
            "equity_curve",
            "positions",
            "prices",
            "prices_recent",
            "risk_state",
            "risk_rejections",
        ]
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["MarketFeed", "PriceFeed", "Portfolio", "RiskBook"]
    }

    async fn load(&mut self, db: &mut PgConnection, schema: &str) -> Result<(), ProjectionError> {
        self.committed = load_state(db, schema).await?;
        self.pending = None;
        self.hot.publish(self.committed.snapshot());
        Ok(())
    }

    async fn apply(
        &mut self,
        db: &mut PgConnection,
        schema: &str,
        events: &[Event],
    ) -> Result<(), ProjectionError> {
        let mut state = self
            .pending
            .take()
            .unwrap_or_else(|| self.committed.clone());
        let mut dirty = Dirty::default();
        for event in events {
            match &event.body {
                Body::Market(MarketFeedEvent::CandleClosed(c)) => observe(
                    &mut state,
                    &mut dirty,
                    c.symbol.as_str(),
                    c.close,
                    c.close_time,
                    "candle",
                ),
                Body::Price(PriceFeedEvent::PriceObserved(p)) => observe(
                    &mut state,
                    &mut dirty,
                    p.symbol.as_str(),
                    p.price,
                    p.observed_at,
                    &p.source,
                ),
                Body::Portfolio(e) => apply_portfolio(&mut state, &mut dirty, e, event.position),
                Body::Risk(e) => apply_risk(&mut state, &mut dirty, e, event.position),
                _ => {}
            }
        }
        if let Some(deferred) = &mut self.deferred {
            dirty.defer(deferred);
        }
        write(db, schema, &state, &dirty).await?;
        self.pending = Some(state);
        Ok(())
    }

    fn bulk(&mut self, on: bool) {
        self.deferred = on.then(Dirty::default);
    }

    async fn flush(&mut self, db: &mut PgConnection, schema: &str) -> Result<(), ProjectionError> {
        if let Some(deferred) = self.deferred.take() {
            write(db, schema, &self.committed, &deferred).await?;
        }
        Ok(())
    }

    fn committed(&mut self) {
        if let Some(state) = self.pending.take() {
            self.hot.publish(state.snapshot());
            self.committed = state;
        }
    }

    fn rolled_back(&mut self) {
        self.pending = None;
    }
}

async fn write(
    db: &mut PgConnection,
    schema: &str,
    state: &State,
    dirty: &Dirty,
) -> Result<(), ProjectionError> {
    if let (Some(position), Some(p)) = (dirty.portfolio, &state.portfolio) {
        sqlx::query(&format!(
            "INSERT INTO {schema}.portfolio (id, quote_asset, initial_cash, cash, equity, unrealized_pnl,
                    realized_pnl, fees, high_water_mark, day_start_equity, trades, opened_at, updated_at, position)
             VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (id) DO UPDATE SET quote_asset = excluded.quote_asset, initial_cash = excluded.initial_cash,
                cash = excluded.cash, equity = excluded.equity, unrealized_pnl = excluded.unrealized_pnl,
                realized_pnl = excluded.realized_pnl, fees = excluded.fees, high_water_mark = excluded.high_water_mark,
                day_start_equity = excluded.day_start_equity, trades = excluded.trades,
                opened_at = excluded.opened_at, updated_at = excluded.updated_at, position = excluded.position"
        ))
        .bind(&p.quote_asset)
        .bind(p.initial_cash)
        .bind(p.cash)
        .bind(p.equity)
        .bind(p.unrealized_pnl)
        .bind(p.realized_pnl)
        .bind(p.fees)
        .bind(p.high_water_mark)
        .bind(p.day_start_equity)
        .bind(p.trades)
        .bind(p.opened_at)
        .bind(p.updated_at)
        .bind(position)
        .execute(&mut *db)
        .await?;
    }
    if !dirty.equity.is_empty() {
        let points: Vec<&EquityPoint> = dirty.equity.values().map(|(p, _)| p).collect();
        sqlx::query(&format!(
            "INSERT INTO {schema}.equity_curve (at, equity, cash, unrealized_pnl, high_water_mark, position)
             SELECT * FROM unnest($1::timestamptz[], $2::numeric[], $3::numeric[], $4::numeric[], $5::numeric[],
                                  $6::bigint[])
             ON CONFLICT (at) DO UPDATE SET equity = excluded.equity, cash = excluded.cash,
                unrealized_pnl = excluded.unrealized_pnl, high_water_mark = excluded.high_water_mark,
                position = excluded.position"
        ))
        .bind(points.iter().map(|p| p.at).collect::<Vec<_>>())
        .bind(points.iter().map(|p| p.equity).collect::<Vec<_>>())
        .bind(points.iter().map(|p| p.cash).collect::<Vec<_>>())
        .bind(points.iter().map(|p| p.unrealized_pnl).collect::<Vec<_>>())
        .bind(points.iter().map(|p| p.high_water_mark).collect::<Vec<_>>())
        .bind(dirty.equity.values().map(|(_, position)| *position).collect::<Vec<_>>())
        .execute(&mut *db)
        .await?;
    }
    if !dirty.positions.is_empty() {
        let rows: Vec<&PositionView> = dirty
            .positions
            .iter()
            .filter_map(|s| state.positions.get(s))
            .collect();
        sqlx::query(&format!(
            "INSERT INTO {schema}.positions (symbol, quantity, avg_cost, last_price, realized_pnl, fees, updated_at)
             SELECT * FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::numeric[], $5::numeric[],
                                  $6::numeric[], $7::timestamptz[])
             ON CONFLICT (symbol) DO UPDATE SET quantity = excluded.quantity, avg_cost = excluded.avg_cost,
                last_price = excluded.last_price, realized_pnl = excluded.realized_pnl, fees = excluded.fees,
                updated_at = excluded.updated_at"
        ))
        .bind(rows.iter().map(|p| p.symbol.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|p| p.quantity).collect::<Vec<_>>())
        .bind(rows.iter().map(|p| p.avg_cost).collect::<Vec<_>>())
        .bind(rows.iter().map(|p| p.last_price).collect::<Vec<_>>())
        .bind(rows.iter().map(|p| p.realized_pnl).collect::<Vec<_>>())
        .bind(rows.iter().map(|p| p.fees).collect::<Vec<_>>())
        .bind(rows.iter().map(|p| p.updated_at).collect::<Vec<_>>())
        .execute(&mut *db)
        .await?;
    }
    if !dirty.prices.is_empty() {
        let rows: Vec<&PriceView> = dirty
            .prices
            .iter()
            .filter_map(|s| state.prices.get(s))
            .collect();
        sqlx::query(&format!(
            "INSERT INTO {schema}.prices (symbol, price, at, source)
             SELECT * FROM unnest($1::text[], $2::numeric[], $3::timestamptz[], $4::text[])
             ON CONFLICT (symbol) DO UPDATE SET price = excluded.price, at = excluded.at, source = excluded.source"
        ))
        .bind(rows.iter().map(|p| p.symbol.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|p| p.price).collect::<Vec<_>>())
        .bind(rows.iter().map(|p| p.at).collect::<Vec<_>>())
        .bind(rows.iter().map(|p| p.source.as_str()).collect::<Vec<_>>())
        .execute(&mut *db)
        .await?;
    }
    if !dirty.recent.is_empty() {
        // Only the newest RECENT_PER_SYMBOL of this page per symbol can survive the pruning below.
        let mut kept: Vec<(&str, DateTime<Utc>, Decimal, &str)> = Vec::new();
        let mut per_symbol: BTreeMap<&str, i64> = BTreeMap::new();
        for ((symbol, at), (price, source)) in dirty.recent.iter().rev() {
            let n = per_symbol.entry(symbol.as_str()).or_default();
            if *n < RECENT_PER_SYMBOL {
                *n += 1;
                kept.push((symbol, *at, *price, source));
            }
        }
        sqlx::query(&format!(
            "INSERT INTO {schema}.prices_recent (symbol, at, price, source)
             SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::numeric[], $4::text[])
             ON CONFLICT (symbol, at) DO UPDATE SET price = excluded.price, source = excluded.source"
        ))
        .bind(kept.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(kept.iter().map(|r| r.3).collect::<Vec<_>>())
        .execute(&mut *db)
        .await?;
        sqlx::query(&format!(
            "DELETE FROM {schema}.prices_recent r
              USING (SELECT symbol, (SELECT at FROM {schema}.prices_recent x WHERE x.symbol = s.symbol
                                      ORDER BY at DESC OFFSET $2 LIMIT 1) AS oldest
                       FROM unnest($1::text[]) AS s(symbol)) cut
              WHERE r.symbol = cut.symbol AND r.at <= cut.oldest"
        ))
        .bind(per_symbol.keys().copied().collect::<Vec<_>>())
        .bind(RECENT_PER_SYMBOL)
        .execute(&mut *db)
        .await?;
    }
    if let Some(position) = dirty.risk {
        let r = &state.risk;
        sqlx::query(&format!(
            "INSERT INTO {schema}.risk_state (id, halted, halt_rule, halt_reason, changed_at, limits, admitted, refused, position)
             VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO UPDATE SET halted = excluded.halted, halt_rule = excluded.halt_rule,
                halt_reason = excluded.halt_reason, changed_at = excluded.changed_at, limits = excluded.limits,
                admitted = excluded.admitted, refused = excluded.refused, position = excluded.position"
        ))
        .bind(r.halted)
        .bind(&r.halt_rule)
        .bind(&r.halt_reason)
        .bind(r.changed_at)
        .bind(&r.limits)
        .bind(r.admitted)
        .bind(r.refused)
        .bind(position)
        .execute(&mut *db)
        .await?;
    }
    if !dirty.rejections.is_empty() {
        let rs = &dirty.rejections;
        sqlx::query(&format!(
            "INSERT INTO {schema}.risk_rejections (position, order_id, symbol, rules, reasons, at)
             SELECT u.position, u.order_id, u.symbol, ARRAY(SELECT jsonb_array_elements_text(u.rules)),
                    u.reasons, u.at
               FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::jsonb[], $5::jsonb[], $6::timestamptz[])
                    AS u(position, order_id, symbol, rules, reasons, at)
             ON CONFLICT (position) DO NOTHING"
        ))
        .bind(rs.iter().map(|r| r.position).collect::<Vec<_>>())
        .bind(rs.iter().map(|r| r.order_id).collect::<Vec<_>>())
        .bind(rs.iter().map(|r| r.symbol.as_str()).collect::<Vec<_>>())
        .bind(rs.iter().map(|r| serde_json::json!(r.rules)).collect::<Vec<_>>())
        .bind(rs.iter().map(|r| r.reasons.clone()).collect::<Vec<_>>())
        .bind(rs.iter().map(|r| r.at).collect::<Vec<_>>())
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

type PortfolioRow = (
    String,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    i64,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// Reads the state of the `trading` projection from the tables of `schema`.
async fn load_state(db: &mut PgConnection, schema: &str) -> Result<State, ProjectionError> {
    let portfolio: Option<PortfolioRow> = sqlx::query_as(&format!(
        "SELECT quote_asset, initial_cash, cash, equity, unrealized_pnl, realized_pnl, fees, high_water_mark,
                day_start_equity, trades, opened_at, updated_at FROM {schema}.portfolio WHERE id = 1"
    ))
    .fetch_optional(&mut *db)
    .await?;
    let positions: Vec<PositionView> = sqlx::query_as(&format!(
        "SELECT symbol, quantity, avg_cost, last_price, realized_pnl, fees, updated_at FROM {schema}.positions"
    ))
    .fetch_all(&mut *db)
    .await?;
    let prices: Vec<PriceView> = sqlx::query_as(&format!(
        "SELECT symbol, price, at, source FROM {schema}.prices"
    ))
    .fetch_all(&mut *db)
    .await?;
    #[allow(clippy::type_complexity)]
    let risk: Option<(
        bool,
        Option<String>,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<serde_json::Value>,
        i64,
        i64,
    )> = sqlx::query_as(&format!(
        "SELECT halted, halt_rule, halt_reason, changed_at, limits, admitted, refused FROM {schema}.risk_state WHERE id = 1"
    ))
    .fetch_optional(&mut *db)
    .await?;
    Ok(State {
        portfolio: portfolio.map(|p| PortfolioView {
            quote_asset: p.0,
            initial_cash: p.1,
            cash: p.2,
            equity: p.3,
            unrealized_pnl: p.4,
            realized_pnl: p.5,
            fees: p.6,
            high_water_mark: p.7,
            day_start_equity: p.8,
            trades: p.9,
            opened_at: p.10,
            updated_at: p.11,
        }),
        positions: positions
            .into_iter()
            .map(|p| (p.symbol.clone(), p))
            .collect(),
        prices: prices.into_iter().map(|p| (p.symbol.clone(), p)).collect(),
        risk: risk.map_or_else(RiskView::default, |r| RiskView {
            halted: r.0,
            halt_rule: r.1,
            halt_reason: r.2,
            changed_at: r.3,
            limits: r.4,
            admitted: r.5,
            refused: r.6,
        }),
    })
}

/// Reads the committed [`TradingSnapshot`] from the live tables (for a process that does not run the
/// projector itself; see [`crate::ReadModels::follow`]).
///
/// # Errors
/// [`ProjectionError::Database`].
pub async fn load_snapshot(
    db: &mut PgConnection,
    schema: &str,
) -> Result<TradingSnapshot, ProjectionError> {
    Ok(load_state(db, schema).await?.snapshot())
}
