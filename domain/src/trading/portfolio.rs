//! The `Portfolio` aggregate (context `portfolio`, id `main`, snapshotted): cash, positions, average cost,
//! realised P&L, fees, last prices, the equity high-water mark and the equity at the start of the UTC day.
//! See `docs/adr/0002-trading-domain.md`.
//!
//! Choices, in the ADR's spirit:
//! - **Average cost excludes fees.** A fee is charged to cash and summed in `fees_paid`; `pnl` is gross of
//!   fees (the net figure is `pnl − fee`). A sell keeps the average cost; closing a position resets it to 0
//!   (the position stays listed with its realised P&L).
//! - **A fill is an observed price.** It becomes the symbol's last price unless a later one is stored, and
//!   raises the high-water mark if equity rose. A position without a price is valued at its average cost.
//! - **A mark changes state only through newer prices.** A point replaces the stored one of its symbol only
//!   if its `at` is later; a mark with no such point emits nothing. `PortfolioMarked` carries the points it
//!   stored (`prices`), so that replaying events rebuilds the prices.
//! - **Day start.** The mark's time is the latest `at` of the points it stores. The first mark ever, and the
//!   first mark of a later UTC day, set the day-start equity to the equity *before* that mark: the last
//!   equity of the previous day (or `initial_cash` before any mark). Fills do not roll the day.
//! - **Repeats.** `Open` with the same quote and cash is a no-op (its `at` is not compared); the same
//!   `fill_id` again is a no-op whatever its numbers (only ids are recorded).
//! - **Overflow.** `decide` rehearses its events on a copy of the state and refuses any command whose
//!   outcome would overflow, naming the field; `apply` therefore never meets an overflow from `decide`.

use std::collections::{BTreeMap, VecDeque};

/// How many recent fill ids the portfolio remembers to recognise a repeated fill.
pub const FILL_MEMORY: usize = 256;

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{mul, non_negative, positive, AmountError, OrderId, PricePoint, Side};
use crate::event::JarvisAggregate;
use crate::values::Symbol;

fn overflow(field: &'static str, value: String) -> AmountError {
    AmountError {
        field,
        value,
        reason: "overflows",
    }
}

fn add(field: &'static str, a: Decimal, b: Decimal) -> Result<Decimal, AmountError> {
    a.checked_add(b)
        .ok_or_else(|| overflow(field, format!("{a} + {b}")))
}

fn sub(field: &'static str, a: Decimal, b: Decimal) -> Result<Decimal, AmountError> {
    a.checked_sub(b)
        .ok_or_else(|| overflow(field, format!("{a} - {b}")))
}

fn div(field: &'static str, a: Decimal, b: Decimal) -> Result<Decimal, AmountError> {
    a.checked_div(b)
        .ok_or_else(|| overflow(field, format!("{a} / {b}")))
}

/// The quote asset of a symbol: the part after `/` (`USDT` in `SOL/USDT`).
fn quote_of(symbol: &Symbol) -> &str {
    symbol.as_str().split_once('/').map_or("", |(_, q)| q)
}

/// Commands the portfolio accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum PortfolioCommand {
    /// Open the portfolio with its quote asset and starting cash. Once.
    Open {
        /// The asset cash and prices are counted in, e.g. `USDT` (folded to upper case).
        quote_asset: String,
        /// The starting cash, in the quote asset; not negative.
        initial_cash: Decimal,
        /// When it was opened (event time).
        at: DateTime<Utc>,
    },
    /// Book one venue fill of an order.
    ApplyFill {
        /// The order filled.
        order_id: OrderId,
        /// The venue's fill id: a fill already applied is a no-op.
        fill_id: String,
        /// The pair; its quote must be the portfolio's.
        symbol: Symbol,
        /// Buy or sell.
        side: Side,
        /// Base units filled; greater than zero.
        quantity: Decimal,
        /// Price per base unit, in the quote asset; greater than zero.
        price: Decimal,
        /// Fee charged, in the quote asset; not negative.
        fee: Decimal,
        /// When the venue filled it (event time).
        filled_at: DateTime<Utc>,
    },
    /// Revalue the portfolio at observed prices.
    Mark {
        /// Prices of any symbols in the portfolio's quote; only points newer than the stored ones count.
        prices: Vec<PricePoint>,
    },
}

/// Events of the portfolio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum PortfolioEvent {
    /// The portfolio was opened.
    PortfolioOpened {
        /// The quote asset, upper case.
        quote_asset: String,
        /// The starting cash.
        initial_cash: Decimal,
        /// When (event time).
        at: DateTime<Utc>,
    },
    /// A fill changed a position and the cash.
    PositionChanged {
        /// The order filled.
        order_id: OrderId,
        /// The venue's fill id.
        fill_id: String,
        /// The pair.
        symbol: Symbol,
        /// Buy or sell.
        side: Side,
        /// Base units filled.
        quantity: Decimal,
        /// Price per base unit.
        price: Decimal,
        /// Fee charged to cash.
        fee: Decimal,
        /// The position's quantity after the fill.
        position_after: Decimal,
        /// The position's average cost after the fill (fees excluded; 0 once closed).
        avg_cost_after: Decimal,
        /// The cash after the fill.
        cash_after: Decimal,
        /// When the venue filled it.
        at: DateTime<Utc>,
    },
    /// A sell realised P&L, gross of its fee (net = `pnl − fee`).
    PnlRealized {
        /// The order filled.
        order_id: OrderId,
        /// The venue's fill id.
        fill_id: String,
        /// The pair.
        symbol: Symbol,
        /// Base units sold.
        quantity: Decimal,
        /// `(price − avg_cost) × quantity`.
        pnl: Decimal,
        /// The fill's fee (already charged by `PositionChanged`; not counted twice).
        fee: Decimal,
        /// When the venue filled it.
        at: DateTime<Utc>,
    },
    /// Newer prices revalued the portfolio.
    PortfolioMarked {
        /// The latest `at` of the stored points.
        at: DateTime<Utc>,
        /// The points stored by this mark (newer than what was held), one per symbol.
        prices: Vec<PricePoint>,
        /// Cash plus every position at its last price (average cost when none).
        equity: Decimal,
        /// Σ quantity × (last price − average cost), over positions with a price.
        unrealized_pnl: Decimal,
        /// The highest equity seen so far, this mark included.
        high_water_mark: Decimal,
        /// The equity at the start of the UTC day of `at`.
        day_start_equity: Decimal,
    },
}

impl PortfolioEvent {
    /// Every event type of this enum with its current version.
    pub const TYPES: &'static [(&'static str, u32)] = &[
        ("PortfolioOpened", 1),
        ("PositionChanged", 1),
        ("PnlRealized", 1),
        ("PortfolioMarked", 1),
    ];
}

impl DomainEvent for PortfolioEvent {
    fn event_type(&self) -> String {
        match self {
            Self::PortfolioOpened { .. } => "PortfolioOpened",
            Self::PositionChanged { .. } => "PositionChanged",
            Self::PnlRealized { .. } => "PnlRealized",
            Self::PortfolioMarked { .. } => "PortfolioMarked",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why the portfolio refused a command. Nothing is recorded when a command is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PortfolioError {
    /// A fill or a mark before `Open`.
    #[error("the portfolio is not opened")]
    NotOpened,
    /// `Open` again with another quote or cash.
    #[error("the portfolio is already opened with {recorded_cash} {recorded_quote}; offered {offered_cash} {offered_quote}")]
    AlreadyOpened {
        /// The recorded quote asset.
        recorded_quote: String,
        /// The recorded initial cash.
        recorded_cash: Decimal,
        /// The offered quote asset.
        offered_quote: String,
        /// The offered initial cash.
        offered_cash: Decimal,
    },
    /// A quote asset that is not 1 to 16 letters or digits.
    #[error("invalid quote_asset {0:?}: expected 1 to 16 letters or digits, e.g. USDT")]
    InvalidQuoteAsset(String),
    /// An amount that is zero, negative or overflows; names the field and the value.
    #[error(transparent)]
    Amount(#[from] AmountError),
    /// A symbol quoted in another asset than the portfolio's.
    #[error("{symbol} is quoted in {symbol_quote}, but the portfolio is in {portfolio_quote}")]
    QuoteMismatch {
        /// The symbol offered.
        symbol: Symbol,
        /// Its quote asset.
        symbol_quote: String,
        /// The portfolio's quote asset.
        portfolio_quote: String,
    },
    /// A fill would leave the cash negative.
    #[error("insufficient cash for the {side} of {symbol}: cash {cash}, cost {cost}")]
    InsufficientCash {
        /// The symbol.
        symbol: Symbol,
        /// The side of the fill.
        side: Side,
        /// The cash available (for a sell, including its proceeds).
        cash: Decimal,
        /// What the fill costs (for a buy `quantity × price + fee`, for a sell the fee).
        cost: Decimal,
    },
    /// A sell of more than is held (spot only, no shorting).
    #[error("cannot sell {offered} {symbol}: {held} held (no shorting)")]
    Oversell {
        /// The symbol.
        symbol: Symbol,
        /// The quantity held.
        held: Decimal,
        /// The quantity offered for sale.
        offered: Decimal,
    },
}

/// A holding of one symbol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Position {
    /// Base units held (never negative).
    pub quantity: Decimal,
    /// Average cost per unit, fees excluded; 0 when flat.
    pub avg_cost: Decimal,
    /// P&L realised on this symbol so far, gross of fees.
    pub realized_pnl: Decimal,
}

/// What the risk book needs to know of the portfolio, passed in its `Assess` command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PortfolioView {
    /// Cash, in the quote asset.
    pub cash: Decimal,
    /// Quantity held per symbol (open positions only).
    pub positions: BTreeMap<Symbol, Decimal>,
    /// Last observed price per symbol.
    pub prices: BTreeMap<Symbol, PricePoint>,
    /// Cash plus positions at their last prices.
    pub equity: Decimal,
    /// The highest equity seen.
    pub high_water_mark: Decimal,
    /// The equity at the start of the current UTC day.
    pub day_start_equity: Decimal,
}

/// One fill to book (the fields of [`PortfolioCommand::ApplyFill`]).
struct Fill {
    order_id: OrderId,
    fill_id: String,
    symbol: Symbol,
    side: Side,
    quantity: Decimal,
    price: Decimal,
    fee: Decimal,
    filled_at: DateTime<Utc>,
}

/// The portfolio's state, rebuilt from its events only (and snapshotted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Portfolio {
    quote_asset: Option<String>,
    initial_cash: Decimal,
    cash: Decimal,
    positions: BTreeMap<Symbol, Position>,
    fees_paid: Decimal,
    realized_pnl: Decimal,
    /// The last [`FILL_MEMORY`] fills applied, oldest first: bounded, because the state is loaded on every
    /// command. A redelivered fill is always recent (the execution agent re-sends only the fills of the candle
    /// it is processing).
    applied_fills: VecDeque<String>,
    prices: BTreeMap<Symbol, PricePoint>,
    high_water_mark: Decimal,
    day: Option<NaiveDate>,
    day_start_equity: Decimal,
}

impl Portfolio {
    /// The quote asset, once opened.
    pub fn quote_asset(&self) -> Option<&str> {
        self.quote_asset.as_deref()
    }

    /// Cash, in the quote asset.
    pub fn cash(&self) -> Decimal {
        self.cash
    }

    /// The position in `symbol`, if it was ever traded (a closed one has quantity 0).
    pub fn position(&self, symbol: &Symbol) -> Option<&Position> {
        self.positions.get(symbol)
    }

    /// Every position ever traded, by symbol.
    pub fn positions(&self) -> &BTreeMap<Symbol, Position> {
        &self.positions
    }

    /// Fees paid so far.
    pub fn fees_paid(&self) -> Decimal {
        self.fees_paid
    }

    /// P&L realised so far, gross of fees.
    pub fn realized_pnl(&self) -> Decimal {
        self.realized_pnl
    }

    /// The last observed price of `symbol` (a mark or a fill).
    pub fn last_price(&self, symbol: &Symbol) -> Option<&PricePoint> {
        self.prices.get(symbol)
    }

    /// Cash + Σ quantity × last price; a position without a price counts at its average cost.
    /// Saturates at `Decimal::MAX` on overflow, which `decide` never lets happen.
    pub fn equity(&self) -> Decimal {
        self.value(&BTreeMap::new())
            .map_or(Decimal::MAX, |(e, _)| e)
    }

    /// Σ quantity × (last price − average cost) over positions with a price.
    /// Saturates at `Decimal::MAX` on overflow, which `decide` never lets happen.
    pub fn unrealized_pnl(&self) -> Decimal {
        self.value(&BTreeMap::new())
            .map_or(Decimal::MAX, |(_, u)| u)
    }

    /// The highest equity seen (initially the initial cash).
    pub fn high_water_mark(&self) -> Decimal {
        self.high_water_mark
    }

    /// The equity at the start of the current UTC day (see the module docs).
    pub fn day_start_equity(&self) -> Decimal {
        self.day_start_equity
    }

    /// The view the risk book assesses proposals against.
    pub fn view(&self) -> PortfolioView {
        PortfolioView {
            cash: self.cash,
            positions: self
                .positions
                .iter()
                .filter(|(_, p)| !p.quantity.is_zero())
                .map(|(s, p)| (s.clone(), p.quantity))
                .collect(),
            prices: self.prices.clone(),
            equity: self.equity(),
            high_water_mark: self.high_water_mark,
            day_start_equity: self.day_start_equity,
        }
    }

    /// (equity, unrealized P&L), with `fresh` prices taking precedence over the stored ones.
    fn value(
        &self,
        fresh: &BTreeMap<Symbol, PricePoint>,
    ) -> Result<(Decimal, Decimal), AmountError> {
        let (mut equity, mut unrealized) = (self.cash, Decimal::ZERO);
        for (symbol, p) in &self.positions {
            let price = fresh.get(symbol).or_else(|| self.prices.get(symbol));
            let price = price.map_or(p.avg_cost, |pp| pp.price);
            equity = add("equity", equity, mul("equity", p.quantity, price)?)?;
            let gain = mul(
                "unrealized_pnl",
                p.quantity,
                sub("unrealized_pnl", price, p.avg_cost)?,
            )?;
            unrealized = add("unrealized_pnl", unrealized, gain)?;
        }
        Ok((equity, unrealized))
    }

    /// Decides what a command records. Pure: returns the events (none for a repeat), or the refusal.
    ///
    /// # Errors
    /// [`PortfolioError`] naming what is recorded and what was offered, or the invalid field and value.
    pub fn decide(&self, command: PortfolioCommand) -> Result<Vec<PortfolioEvent>, PortfolioError> {
        let events = match command {
            PortfolioCommand::Open {
                quote_asset,
                initial_cash,
                at,
            } => self.decide_open(quote_asset, initial_cash, at)?,
            PortfolioCommand::ApplyFill {
                order_id,
                fill_id,
                symbol,
                side,
                quantity,
                price,
                fee,
                filled_at,
            } => self.decide_fill(Fill {
                order_id,
                fill_id,
                symbol,
                side,
                quantity,
                price,
                fee,
                filled_at,
            })?,
            PortfolioCommand::Mark { prices } => self.decide_mark(prices)?,
        };
        // A mark applies only numbers `decide_mark` has already computed (and checked); a fill or an opening
        // does arithmetic of its own.
        let arithmetic = events
            .iter()
            .any(|e| !matches!(e, PortfolioEvent::PortfolioMarked { .. }));
        if arithmetic {
            // Rehearse: refuse now any overflow that `apply` would otherwise meet.
            let mut next = self.clone();
            for event in &events {
                next.try_apply(event)?;
            }
            next.value(&BTreeMap::new())?;
        }
        Ok(events)
    }

    fn decide_open(
        &self,
        quote_asset: String,
        initial_cash: Decimal,
        at: DateTime<Utc>,
    ) -> Result<Vec<PortfolioEvent>, PortfolioError> {
        let cash = non_negative("initial_cash", initial_cash)?;
        let quote = quote_asset.trim().to_ascii_uppercase();
        if quote.is_empty() || quote.len() > 16 || !quote.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(PortfolioError::InvalidQuoteAsset(quote_asset));
        }
        match &self.quote_asset {
            Some(recorded) if *recorded == quote && self.initial_cash == cash => Ok(vec![]),
            Some(recorded) => Err(PortfolioError::AlreadyOpened {
                recorded_quote: recorded.clone(),
                recorded_cash: self.initial_cash,
                offered_quote: quote,
                offered_cash: cash,
            }),
            None => Ok(vec![PortfolioEvent::PortfolioOpened {
                quote_asset: quote,
                initial_cash: cash,
                at,
            }]),
        }
    }

    fn check_quote(&self, symbol: &Symbol) -> Result<(), PortfolioError> {
        let quote = self
            .quote_asset
            .as_deref()
            .ok_or(PortfolioError::NotOpened)?;
        if quote_of(symbol) == quote {
            Ok(())
        } else {
            Err(PortfolioError::QuoteMismatch {
                symbol: symbol.clone(),
                symbol_quote: quote_of(symbol).to_string(),
                portfolio_quote: quote.to_string(),
            })
        }
    }

    fn decide_fill(&self, f: Fill) -> Result<Vec<PortfolioEvent>, PortfolioError> {
        if self.quote_asset.is_none() {
            return Err(PortfolioError::NotOpened);
        }
        if self.applied_fills.iter().any(|id| *id == f.fill_id) {
            return Ok(vec![]);
        }
        self.check_quote(&f.symbol)?;
        let quantity = positive("quantity", f.quantity)?;
        let price = positive("price", f.price)?;
        let fee = non_negative("fee", f.fee)?;
        let held = self.positions.get(&f.symbol).cloned().unwrap_or_default();
        let notional = mul("notional", quantity, price)?;
        let insufficient = |cash, cost| PortfolioError::InsufficientCash {
            symbol: f.symbol.clone(),
            side: f.side,
            cash,
            cost,
        };
        let (position_after, avg_cost_after, cash_after, pnl) = match f.side {
            Side::Buy => {
                let cost = add("cost", notional, fee)?;
                if cost > self.cash {
                    return Err(insufficient(self.cash, cost));
                }
                let position_after = add("position_after", held.quantity, quantity)?;
                let basis = mul("avg_cost_after", held.quantity, held.avg_cost)?;
                let basis = add("avg_cost_after", basis, notional)?;
                let avg = div("avg_cost_after", basis, position_after)?;
                (
                    position_after,
                    avg,
                    sub("cash_after", self.cash, cost)?,
                    None,
                )
            }
            Side::Sell => {
                if quantity > held.quantity {
                    return Err(PortfolioError::Oversell {
                        symbol: f.symbol,
                        held: held.quantity,
                        offered: quantity,
                    });
                }
                let position_after = sub("position_after", held.quantity, quantity)?;
                let pnl = mul("pnl", sub("pnl", price, held.avg_cost)?, quantity)?;
                let available = add("cash_after", self.cash, notional)?;
                if fee > available {
                    return Err(insufficient(available, fee));
                }
                let avg = if position_after.is_zero() {
                    Decimal::ZERO
                } else {
                    held.avg_cost
                };
                (
                    position_after,
                    avg,
                    sub("cash_after", available, fee)?,
                    Some(pnl),
                )
            }
        };
        let mut events = vec![PortfolioEvent::PositionChanged {
            order_id: f.order_id,
            fill_id: f.fill_id.clone(),
            symbol: f.symbol.clone(),
            side: f.side,
            quantity,
            price,
            fee,
            position_after,
            avg_cost_after,
            cash_after,
            at: f.filled_at,
        }];
        if let Some(pnl) = pnl {
            events.push(PortfolioEvent::PnlRealized {
                order_id: f.order_id,
                fill_id: f.fill_id,
                symbol: f.symbol,
                quantity,
                pnl,
                fee,
                at: f.filled_at,
            });
        }
        Ok(events)
    }

    fn decide_mark(&self, prices: Vec<PricePoint>) -> Result<Vec<PortfolioEvent>, PortfolioError> {
        if self.quote_asset.is_none() {
            return Err(PortfolioError::NotOpened);
        }
        let mut fresh: BTreeMap<Symbol, PricePoint> = BTreeMap::new();
        for point in prices {
            self.check_quote(&point.symbol)?;
            positive("price", point.price)?;
            let known = fresh
                .get(&point.symbol)
                .or_else(|| self.prices.get(&point.symbol));
            if known.is_none_or(|k| point.at > k.at) {
                fresh.insert(point.symbol.clone(), point);
            }
        }
        let Some(at) = fresh.values().map(|p| p.at).max() else {
            return Ok(vec![]);
        };
        let (equity, unrealized_pnl) = self.value(&fresh)?;
        // A new day starts from the equity before this mark (at the stored prices, which the previous
        // event valued, so this cannot overflow).
        let day_start_equity = match self.day {
            Some(day) if at.date_naive() <= day => self.day_start_equity,
            _ => self.value(&BTreeMap::new())?.0,
        };
        Ok(vec![PortfolioEvent::PortfolioMarked {
            at,
            prices: fresh.into_values().collect(),
            equity,
            unrealized_pnl,
            high_water_mark: self.high_water_mark.max(equity),
            day_start_equity,
        }])
    }

    /// Applies one event. Fails only on an overflow, which `decide` rehearses and refuses beforehand.
    fn try_apply(&mut self, event: &PortfolioEvent) -> Result<(), AmountError> {
        match event {
            PortfolioEvent::PortfolioOpened {
                quote_asset,
                initial_cash,
                ..
            } => {
                self.quote_asset = Some(quote_asset.clone());
                self.initial_cash = *initial_cash;
                self.cash = *initial_cash;
                self.high_water_mark = *initial_cash;
                self.day_start_equity = *initial_cash;
            }
            PortfolioEvent::PositionChanged {
                fill_id,
                symbol,
                price,
                fee,
                position_after,
                avg_cost_after,
                cash_after,
                at,
                ..
            } => {
                self.fees_paid = add("fees_paid", self.fees_paid, *fee)?;
                self.applied_fills.push_back(fill_id.clone());
                while self.applied_fills.len() > FILL_MEMORY {
                    self.applied_fills.pop_front();
                }
                self.cash = *cash_after;
                let position = self.positions.entry(symbol.clone()).or_default();
                position.quantity = *position_after;
                position.avg_cost = *avg_cost_after;
                if self.prices.get(symbol).is_none_or(|p| *at >= p.at) {
                    let point = PricePoint {
                        symbol: symbol.clone(),
                        price: *price,
                        at: *at,
                    };
                    self.prices.insert(symbol.clone(), point);
                }
                let (equity, _) = self.value(&BTreeMap::new())?;
                self.high_water_mark = self.high_water_mark.max(equity);
            }
            PortfolioEvent::PnlRealized { symbol, pnl, .. } => {
                let total = add("realized_pnl", self.realized_pnl, *pnl)?;
                let position = self.positions.entry(symbol.clone()).or_default();
                position.realized_pnl = add("realized_pnl", position.realized_pnl, *pnl)?;
                self.realized_pnl = total;
            }
            PortfolioEvent::PortfolioMarked {
                at,
                prices,
                high_water_mark,
                day_start_equity,
                ..
            } => {
                for point in prices {
                    self.prices.insert(point.symbol.clone(), point.clone());
                }
                self.high_water_mark = *high_water_mark;
                self.day_start_equity = *day_start_equity;
                self.day = self.day.max(Some(at.date_naive()));
            }
        }
        Ok(())
    }
}

impl Aggregate for Portfolio {
    const TYPE: &'static str = "Portfolio";
    type Command = PortfolioCommand;
    type Event = PortfolioEvent;
    type Error = PortfolioError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        // `decide` rehearsed this event and refused any overflow, so this cannot fail for recorded events.
        let _ = self.try_apply(&event);
    }
}

impl JarvisAggregate for Portfolio {
    const CONTEXT: &'static str = "portfolio";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTypes as _;
    use cqrs_es::test::TestFramework;
    use std::collections::BTreeSet;

    type Given = TestFramework<Portfolio>;

    fn d(text: &str) -> Decimal {
        Decimal::from_str_exact(text).unwrap()
    }

    fn sym(text: &str) -> Symbol {
        Symbol::new_checked(text).unwrap()
    }

    fn t(text: &str) -> DateTime<Utc> {
        format!("2024-03-{text}Z").parse().unwrap()
    }

    fn opened() -> PortfolioEvent {
        PortfolioEvent::PortfolioOpened {
            quote_asset: "USDT".into(),
            initial_cash: d("10000"),
            at: t("01T00:00:00"),
        }
    }

    fn fill(id: &str, symbol: &str, side: Side, q: &str, p: &str, fee: &str) -> PortfolioCommand {
        PortfolioCommand::ApplyFill {
            order_id: OrderId::derived(id),
            fill_id: id.into(),
            symbol: sym(symbol),
            side,
            quantity: d(q),
            price: d(p),
            fee: d(fee),
            filled_at: t("01T10:00:00"),
        }
    }

    fn buy(id: &str, q: &str, p: &str, fee: &str) -> PortfolioCommand {
        fill(id, "SOL/USDT", Side::Buy, q, p, fee)
    }

    fn sell(id: &str, q: &str, p: &str, fee: &str) -> PortfolioCommand {
        fill(id, "SOL/USDT", Side::Sell, q, p, fee)
    }

    fn mark(price: &str, at: &str) -> PortfolioCommand {
        let point = PricePoint {
            symbol: sym("SOL/USDT"),
            price: d(price),
            at: t(at),
        };
        PortfolioCommand::Mark {
            prices: vec![point],
        }
    }

    /// Decides and applies, like the framework does; returns the events.
    fn run(p: &mut Portfolio, command: PortfolioCommand) -> Vec<PortfolioEvent> {
        let events = p.decide(command).unwrap();
        events.iter().cloned().for_each(|e| p.apply(e));
        events
    }

    fn open_book() -> (Portfolio, Vec<PortfolioEvent>) {
        let mut p = Portfolio::default();
        p.apply(opened());
        (p, vec![opened()])
    }

    fn refusal(given: Vec<PortfolioEvent>, command: PortfolioCommand) -> String {
        let result = Given::with(()).given(given).when(command).inspect_result();
        result.unwrap_err().to_string()
    }

    #[test]
    fn opens_once() {
        let open = |cash: &str| PortfolioCommand::Open {
            quote_asset: "usdt".into(),
            initial_cash: d(cash),
            at: t("01T00:00:00"),
        };
        Given::with(())
            .given_no_previous_events()
            .when(open("10000"))
            .then_expect_events(vec![opened()]);
        Given::with(())
            .given(vec![opened()])
            .when(open("10000.00"))
            .then_expect_events(vec![]);
        Given::with(())
            .given(vec![opened()])
            .when(open("5"))
            .then_expect_error_message(
                "the portfolio is already opened with 10000 USDT; offered 5 USDT",
            );
        let err = refusal(vec![], open("-1"));
        assert!(err.contains("initial_cash = -1"), "{err}");
    }

    #[test]
    fn buy_then_sell_realizes_exact_pnl_and_reconciles_cash() {
        Given::with(())
            .given(vec![opened()])
            .when(buy("f1", "10", "100", "1"))
            .then_expect_events(vec![PortfolioEvent::PositionChanged {
                order_id: OrderId::derived("f1"),
                fill_id: "f1".into(),
                symbol: sym("SOL/USDT"),
                side: Side::Buy,
                quantity: d("10"),
                price: d("100"),
                fee: d("1"),
                position_after: d("10"),
                avg_cost_after: d("100"),
                cash_after: d("8999"),
                at: t("01T10:00:00"),
            }]);
        let (mut p, _) = open_book();
        run(&mut p, buy("f1", "10", "100", "1"));
        let events = run(&mut p, sell("f2", "4", "125.25", "0.5"));
        let PortfolioEvent::PositionChanged { cash_after, .. } = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            *cash_after,
            d("10000") - d("1000") - d("1") + d("501") - d("0.5")
        );
        assert_eq!(
            events[1],
            PortfolioEvent::PnlRealized {
                order_id: OrderId::derived("f2"),
                fill_id: "f2".into(),
                symbol: sym("SOL/USDT"),
                quantity: d("4"),
                pnl: d("101"),
                fee: d("0.5"),
                at: t("01T10:00:00"),
            }
        );
        assert_eq!(p.cash(), d("9499.5"));
        assert_eq!((p.fees_paid(), p.realized_pnl()), (d("1.5"), d("101")));
        assert_eq!(p.position(&sym("SOL/USDT")).unwrap().realized_pnl, d("101"));
        assert_eq!(p.unrealized_pnl(), d("151.5"));
        // equity = initial + realised + unrealised − fees
        assert_eq!(p.equity(), d("10000") + d("101") + d("151.5") - d("1.5"));
    }

    #[test]
    fn average_cost_partial_sell_and_full_close() {
        let (mut p, _) = open_book();
        run(&mut p, buy("f1", "2", "100", "0"));
        run(&mut p, buy("f2", "3", "110", "1"));
        let position = p.position(&sym("SOL/USDT")).unwrap();
        assert_eq!((position.quantity, position.avg_cost), (d("5"), d("106")));
        assert_eq!(p.high_water_mark(), d("10019")); // 9469 cash + 5 × 110: equity rose on the fill
        run(&mut p, sell("f3", "1", "90", "0"));
        assert_eq!(p.position(&sym("SOL/USDT")).unwrap().avg_cost, d("106"));
        assert_eq!(p.realized_pnl(), d("-16"));
        run(&mut p, sell("f4", "4", "120", "0"));
        let closed = p.position(&sym("SOL/USDT")).unwrap();
        assert_eq!((closed.quantity, closed.avg_cost), (d("0"), d("0")));
        assert_eq!(closed.realized_pnl, d("40"));
        assert!(p.view().positions.is_empty());
        run(&mut p, buy("f5", "1", "50", "0"));
        assert_eq!(p.position(&sym("SOL/USDT")).unwrap().avg_cost, d("50"));
    }

    #[test]
    fn same_fill_id_again_is_a_no_op() {
        let (mut p, mut given) = open_book();
        given.extend(run(&mut p, buy("f1", "1", "100", "0")));
        Given::with(())
            .given(given)
            .when(buy("f1", "1", "100", "0"))
            .then_expect_events(vec![]);
    }

    #[test]
    fn refusals_name_their_numbers() {
        let (mut p, mut given) = open_book();
        given.extend(run(&mut p, buy("f1", "2", "100", "0")));
        let cases = [
            (vec![], buy("x", "1", "1", "0"), "not opened"),
            (vec![], mark("1", "01T10:00:00"), "not opened"),
            (
                given.clone(),
                fill("x", "SOL/BTC", Side::Buy, "1", "1", "0"),
                "SOL/BTC is quoted in BTC, but the portfolio is in USDT",
            ),
            (
                given.clone(),
                sell("x", "3", "100", "0"),
                "cannot sell 3 SOL/USDT: 2 held",
            ),
            (
                given.clone(),
                buy("x", "100", "99", "1"),
                "cash 9800, cost 9901",
            ),
            (given.clone(), buy("x", "0", "100", "0"), "quantity = 0"),
            (
                given.clone(),
                sell("x", "1", "1", "10000"),
                "cash 9801, cost 10000",
            ),
            (given.clone(), buy("x", "1", "100", "-1"), "fee = -1"),
            (given.clone(), buy("x", "1", "0", "0"), "price = 0"),
            (
                given,
                buy("x", &Decimal::MAX.to_string(), "2", "0"),
                "notional",
            ),
        ];
        for (given, command, expected) in cases {
            let err = refusal(given, command);
            assert!(err.contains(expected), "{err} does not contain {expected}");
        }
    }

    #[test]
    fn marks_track_equity_high_water_mark_and_day_start() {
        let (mut p, mut given) = open_book();
        given.extend(run(&mut p, buy("f1", "10", "100", "0")));
        Given::with(())
            .given(given.clone())
            .when(mark("100", "01T09:00:00")) // older than the fill's price
            .then_expect_events(vec![]);
        let marked = |equity, unrealized, hwm, day_start, price: &str, at: &str| {
            PortfolioEvent::PortfolioMarked {
                at: t(at),
                prices: vec![PricePoint {
                    symbol: sym("SOL/USDT"),
                    price: d(price),
                    at: t(at),
                }],
                equity: d(equity),
                unrealized_pnl: d(unrealized),
                high_water_mark: d(hwm),
                day_start_equity: d(day_start),
            }
        };
        let up = marked("10200", "200", "10200", "10000", "120", "01T11:00:00");
        Given::with(())
            .given(given.clone())
            .when(mark("120", "01T11:00:00"))
            .then_expect_events(vec![up.clone()]);
        given.push(up);
        Given::with(())
            .given(given.clone())
            .when(mark("120", "01T11:00:00"))
            .then_expect_events(vec![]);
        let down = marked("10100", "100", "10200", "10000", "110", "01T23:00:00");
        Given::with(())
            .given(given.clone())
            .when(mark("110", "01T23:00:00"))
            .then_expect_events(vec![down.clone()]);
        given.push(down);
        let next_day = marked("9900", "-100", "10200", "10100", "90", "02T00:00:00");
        Given::with(())
            .given(given.clone())
            .when(mark("90", "02T00:00:00"))
            .then_expect_events(vec![next_day.clone()]);
        given.push(next_day);
        let mut replayed = Portfolio::default();
        given.into_iter().for_each(|e| replayed.apply(e));
        let view = replayed.view();
        assert_eq!(
            (view.equity, view.high_water_mark, view.day_start_equity),
            (d("9900"), d("10200"), d("10100"))
        );
        assert_eq!(view.positions[&sym("SOL/USDT")], d("10"));
        assert_eq!(
            replayed.last_price(&sym("SOL/USDT")).unwrap().price,
            d("90")
        );
    }

    #[test]
    fn state_and_every_event_survive_serde() {
        let (mut p, mut events) = open_book();
        events.extend(run(&mut p, buy("f1", "10", "100", "1")));
        events.extend(run(&mut p, sell("f2", "4", "125", "0.5")));
        events.extend(run(&mut p, mark("130", "02T00:00:00")));
        let kinds: BTreeSet<String> = events.iter().map(|e| e.event_type()).collect();
        assert_eq!(kinds.len(), PortfolioEvent::TYPES.len());
        for event in &events {
            assert_eq!(PortfolioEvent::version_of(&event.event_type()), Some(1));
            let json = serde_json::to_string(event).unwrap();
            assert_eq!(
                &serde_json::from_str::<PortfolioEvent>(&json).unwrap(),
                event
            );
        }
        let snapshot = serde_json::to_value(&p).unwrap();
        let restored: Portfolio = serde_json::from_value(snapshot).unwrap();
        assert_eq!(restored, p);
        let mut replayed = Portfolio::default();
        events.into_iter().for_each(|e| replayed.apply(e));
        assert_eq!(replayed, p);
        for schema in [
            schemars::schema_for!(PortfolioEvent),
            schemars::schema_for!(PortfolioCommand),
            schemars::schema_for!(PortfolioView),
        ] {
            assert!(serde_json::to_string(&schema).unwrap().contains("Symbol"));
        }
        let view = serde_json::to_string(&p.view()).unwrap();
        assert_eq!(
            serde_json::from_str::<PortfolioView>(&view).unwrap(),
            p.view()
        );
    }
}
