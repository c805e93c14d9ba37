//! The trading pipeline: what happens when a candle closes, in order, each step an agent's own command
//! on its own aggregate, each event caused by the one before it.
//!
//! 1. **execution** matches the paper venue's open orders against the candle (the next observed price
//!    after their submission) and records each fill on its `Order`. A buy the portfolio cannot pay for,
//!    or a sell of more than is held, fails the order instead: a real venue would refuse it too.
//! 2. **settlement** applies each fill to the `Portfolio` and marks it to the candle's close.
//! 3. **treasury** asks the strategy for trades. A symbol with an order still open at the venue gets no
//!    new proposal, so orders never stack. Each proposal becomes an `Order`, with an id derived from the
//!    candle event and the symbol.
//! 4. **risk** assesses each proposal in the `RiskBook` and approves or rejects the order with the
//!    reasons.
//! 5. **execution** submits approved orders to the paper venue. They fill at a later candle.
//!
//! The whole candle runs through the trading gate (`jarvis_store::gate`), so an operator's halt lands
//! before or after a candle's decisions, never between an approval and its submission. Every step
//! is idempotent: a redelivered candle repeats what was done as no-ops and finishes what was not.
//! Every time is event time: the candle's close time, and the open time of the candle a fill is
//! priced from.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Duration;
use cqrs_es::Aggregate;
use jarvis_bus::{Envelope, Handler, HandlerError};
use jarvis_domain::market::{MarketFeed, MarketFeedEvent, MarketFeedId};
use jarvis_domain::trading::order::{Order, OrderCommand, OrderStatus, TradeProposal};
use jarvis_domain::trading::paper::{PaperCommand, PaperConfig, PaperVenue};
use jarvis_domain::trading::portfolio::{Portfolio, PortfolioCommand};
use jarvis_domain::trading::risk::{
    ProposalToAssess, QuoteCheck, RiskBook, RiskCommand, RiskLimits, RiskView,
};
use jarvis_domain::trading::{OrderId, PricePoint, Side};
use jarvis_domain::{AnyEvent, Candle, EventMetadata, RecordedEvent, Symbol};
use jarvis_store::{execute_with_retry, EventStore, StoreError};
use rust_decimal::Decimal;

use crate::runtime::{handler_error, SNAPSHOT_EVERY};
use crate::treasury::{Strategy, StrategyConfig, StrategyInput};

/// The one portfolio.
pub const PORTFOLIO: &str = "main";
/// The one paper venue.
pub const PAPER_VENUE: &str = "paper";
/// Retries after conflicts with another writer.
const RETRIES: u32 = 5;

/// What the pipeline trades with.
#[derive(Debug, Clone, PartialEq)]
pub struct TradingSettings {
    /// The portfolio's quote asset; candles of symbols quoted in anything else are not traded.
    pub quote_asset: String,
    /// Cash the portfolio opens with.
    pub initial_cash: Decimal,
    /// The strategy.
    pub strategy: StrategyConfig,
    /// The risk limits.
    pub limits: RiskLimits,
    /// The paper venue's fill model.
    pub paper: PaperConfig,
    /// Submit approved orders to the paper venue (false when another venue's agent executes them).
    pub submit_to_paper: bool,
}

impl Default for TradingSettings {
    fn default() -> Self {
        Self {
            quote_asset: "USDT".into(),
            initial_cash: Decimal::from(10_000),
            strategy: StrategyConfig::default(),
            limits: RiskLimits::default(),
            paper: PaperConfig::default(),
            submit_to_paper: true,
        }
    }
}

/// The pipeline, as a consumer of `CandleClosed` events.
pub struct TradingPipeline {
    store: EventStore,
    settings: TradingSettings,
    strategy: Box<dyn Strategy>,
    set_up: AtomicBool,
}

fn transient(e: StoreError) -> HandlerError {
    HandlerError::Transient(e.to_string())
}

impl TradingPipeline {
    /// A pipeline on `store` with the strategy of `settings.strategy` (the rebalancer).
    pub fn new(store: EventStore, settings: TradingSettings) -> Self {
        let strategy = settings.strategy.build();
        Self::with_strategy(store, settings, strategy)
    }

    /// A pipeline with a strategy of your own: implement [`Strategy`], nothing else changes.
    pub fn with_strategy(
        store: EventStore,
        settings: TradingSettings,
        strategy: Box<dyn Strategy>,
    ) -> Self {
        Self {
            store,
            settings,
            strategy,
            set_up: AtomicBool::new(false),
        }
    }

    async fn run<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        snapshot: bool,
    ) -> Result<(), HandlerError>
    where
        A: Aggregate,
        A::Command: Clone,
        A::Services: Default,
    {
        let cqrs = if snapshot {
            self.store
                .snapshot_cqrs::<A>(SNAPSHOT_EVERY, A::Services::default())
        } else {
            self.store.cqrs::<A>(A::Services::default())
        };
        execute_with_retry(&cqrs, id, command, metadata, RETRIES)
            .await
            .map(|_| ())
            .map_err(handler_error)
    }

    async fn load<A: Aggregate>(&self, id: &str, snapshot: bool) -> Result<A, HandlerError> {
        self.store
            .load::<A>(id, snapshot.then_some(SNAPSHOT_EVERY))
            .await
            .map_err(handler_error)
    }

    /// The event of `order` of type `event_type` satisfying `pick`, just written or written before.
    async fn order_event(
        &self,
        order: OrderId,
        event_type: &str,
        pick: impl Fn(&RecordedEvent) -> bool,
    ) -> Result<RecordedEvent, HandlerError> {
        self.store
            .events_of(Order::TYPE, &order.to_string())
            .await
            .map_err(transient)?
            .into_iter()
            .rev()
            .find(|e| e.event_type == event_type && pick(e))
            .ok_or_else(|| {
                HandlerError::Transient(format!("order {order} has no {event_type} yet"))
            })
    }

    /// Opens the portfolio, sets the risk limits and configures the venue, once per process (each is a
    /// no-op when already done), at the event time of the first candle.
    async fn set_up(
        &self,
        env: &Envelope,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), HandlerError> {
        if self.set_up.load(Ordering::Acquire) {
            return Ok(());
        }
        let open = PortfolioCommand::Open {
            quote_asset: self.settings.quote_asset.clone(),
            initial_cash: self.settings.initial_cash,
            at,
        };
        match self
            .run::<Portfolio>(PORTFOLIO, open, &env.caused("settlement"), true)
            .await
        {
            // Opened before with other values: its opening is history, and trading goes on with it.
            Err(HandlerError::Permanent(reason)) => {
                tracing::warn!(%reason, "[portfolio] differs from the portfolio as opened; the configuration is ignored");
            }
            other => other?,
        }
        let limits = RiskCommand::SetLimits {
            limits: self.settings.limits.clone(),
            at,
        };
        self.run::<RiskBook>(crate::risk::RISK_BOOK, limits, &env.caused("risk"), true)
            .await?;
        let paper = PaperCommand::Configure {
            config: self.settings.paper.clone(),
            at,
        };
        self.run::<PaperVenue>(PAPER_VENUE, paper, &env.caused("execution"), true)
            .await?;
        self.set_up.store(true, Ordering::Release);
        Ok(())
    }

    /// Handles one closed candle: every step, through the trading gate.
    ///
    /// # Errors
    /// [`HandlerError`]: transient for store failures, permanent for a refusal by an aggregate.
    pub async fn on_candle(&self, env: &Envelope, candle: Candle) -> Result<(), HandlerError> {
        let quote = candle.symbol.as_str().split('/').nth(1).unwrap_or_default();
        if quote != self.settings.quote_asset {
            tracing::debug!(symbol = %candle.symbol, quote, "not traded: another quote asset");
            return Ok(());
        }
        let gate = self.store.close_gate().await.map_err(transient)?;
        let done = self.steps(env, &candle).await;
        if let Err(e) = gate.open().await {
            tracing::warn!(cause = %e, "releasing the trading gate failed");
        }
        done
    }

    async fn steps(&self, env: &Envelope, candle: &Candle) -> Result<(), HandlerError> {
        let at = candle.close_time;
        self.set_up(env, at).await?;
        self.fill(env, candle).await?;
        let mark = PortfolioCommand::Mark {
            prices: vec![PricePoint {
                symbol: candle.symbol.clone(),
                price: candle.close,
                at,
            }],
        };
        self.run::<Portfolio>(PORTFOLIO, mark, &env.caused("settlement"), true)
            .await?;
        self.decide(env, candle).await
    }

    /// Steps 1 and 2: the venue's fills at this candle, recorded on their orders and in the portfolio.
    async fn fill(&self, env: &Envelope, candle: &Candle) -> Result<(), HandlerError> {
        let matched = PaperCommand::Match {
            candle: candle.clone(),
        };
        self.run::<PaperVenue>(PAPER_VENUE, matched, &env.caused("execution"), true)
            .await?;
        let venue: PaperVenue = self.load(PAPER_VENUE, true).await?;
        for fill in venue.fills_at(&candle.symbol, candle.open_time) {
            let order: Order = self.load(&fill.order_id.to_string(), false).await?;
            // A failed order takes no more fills. A fill the order already has (a redelivered candle) is
            // not recorded again, but still goes to the portfolio, which applies each fill once.
            if order.status() == OrderStatus::Failed && !order.fills().contains_key(&fill.fill_id) {
                // Failed before (perhaps by a run that crashed before withdrawing it): withdraw it now.
                self.withdraw(env, &fill.order_id, "the order failed", fill.filled_at)
                    .await?;
                continue;
            }
            let recorded = order.fills().contains_key(&fill.fill_id);
            let submitted = self
                .order_event(fill.order_id, "OrderSubmitted", |_| true)
                .await?;
            let portfolio: Portfolio = self.load(PORTFOLIO, true).await?;
            let held = portfolio
                .position(&fill.symbol)
                .map_or(Decimal::ZERO, |p| p.quantity);
            let cost = fill
                .quantity
                .checked_mul(fill.price)
                .and_then(|n| n.checked_add(fill.fee))
                .ok_or_else(|| {
                    HandlerError::Permanent(format!("fill {} overflows", fill.fill_id))
                })?;
            let refusal = match fill.side {
                _ if recorded => None,
                Side::Buy if cost > portfolio.cash() => Some(format!(
                    "insufficient cash at fill {}: needs {cost}, has {}",
                    fill.fill_id,
                    portfolio.cash()
                )),
                Side::Sell if fill.quantity > held => Some(format!(
                    "insufficient position at fill {}: sells {}, holds {held}",
                    fill.fill_id, fill.quantity
                )),
                _ => None,
            };
            let metadata = EventMetadata::caused_by(&submitted, "execution");
            if let Some(reason) = refusal {
                tracing::warn!(order = %fill.order_id, %reason, "failing the order");
                let fail = OrderCommand::Fail {
                    reason,
                    failed_at: fill.filled_at,
                };
                self.run::<Order>(&fill.order_id.to_string(), fail, &metadata, false)
                    .await?;
                self.withdraw(env, &fill.order_id, "the order failed", fill.filled_at)
                    .await?;
                continue;
            }
            let record = OrderCommand::Fill {
                fill_id: fill.fill_id.clone(),
                quantity: fill.quantity,
                price: fill.price,
                fee: fill.fee,
                filled_at: fill.filled_at,
            };
            if !recorded {
                self.run::<Order>(&fill.order_id.to_string(), record, &metadata, false)
                    .await?;
            }
            let filled = self
                .order_event(fill.order_id, "OrderFilled", |e| {
                    e.payload.get("fill_id").and_then(|v| v.as_str()) == Some(fill.fill_id.as_str())
                })
                .await?;
            let apply = PortfolioCommand::ApplyFill {
                order_id: fill.order_id,
                fill_id: fill.fill_id.clone(),
                symbol: fill.symbol.clone(),
                side: fill.side,
                quantity: fill.quantity,
                price: fill.price,
                fee: fill.fee,
                filled_at: fill.filled_at,
            };
            self.run::<Portfolio>(
                PORTFOLIO,
                apply,
                &EventMetadata::caused_by(&filled, "settlement"),
                true,
            )
            .await?;
        }
        Ok(())
    }

    /// Withdraws what is still open of a failed order from the venue, so it fills nothing more.
    async fn withdraw(
        &self,
        env: &Envelope,
        order_id: &OrderId,
        reason: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), HandlerError> {
        let cancel = PaperCommand::Cancel {
            order_id: *order_id,
            reason: reason.to_string(),
            at,
        };
        self.run::<PaperVenue>(PAPER_VENUE, cancel, &env.caused("execution"), true)
            .await
    }

    /// The candles of the symbol the strategy may look at, up to this one, oldest first: at least as many
    /// as it asks for (it reads whole days of the feed).
    async fn history(&self, candle: &Candle) -> Result<Vec<Candle>, HandlerError> {
        let interval = (candle.close_time - candle.open_time).num_seconds().max(1);
        let wanted = self.strategy.history_len() as i64 * interval;
        let days = wanted / 86_400 + 1;
        let mut history = Vec::new();
        for back in (0..=days).rev() {
            let id = MarketFeedId {
                symbol: candle.symbol.clone(),
                day: candle.open_time.date_naive() - Duration::days(back),
            };
            let feed: MarketFeed = self.load(&id.to_string(), false).await?;
            history.extend(
                feed.candles()
                    .filter(|c| c.open_time <= candle.open_time)
                    .cloned(),
            );
        }
        Ok(history)
    }

    /// Steps 3 to 5: proposals, their risk verdicts, and the submission of approved orders.
    async fn decide(&self, env: &Envelope, candle: &Candle) -> Result<(), HandlerError> {
        let venue: PaperVenue = self.load(PAPER_VENUE, true).await?;
        if venue.open_orders().any(|o| o.symbol == candle.symbol) {
            return Ok(());
        }
        let portfolio: Portfolio = self.load(PORTFOLIO, true).await?;
        let view = portfolio.view();
        // The pipeline's clock: the latest close it has seen, of any symbol (the portfolio's marks, so it is
        // persisted and the same after a restart). A candle that arrives late, or a file of older history
        // ingested after newer, is decided at this time, so the risk book sees its price as stale.
        let now = view
            .prices
            .values()
            .map(|p| p.at)
            .max()
            .unwrap_or(candle.close_time)
            .max(candle.close_time);
        let history = self.history(candle).await?;
        // The symbols with candles so far, as the portfolio's marks recorded them: persisted and in event
        // order, so a restart decides exactly as an uninterrupted run would.
        let mut symbols: BTreeSet<Symbol> = view.prices.keys().cloned().collect();
        symbols.insert(candle.symbol.clone());
        let input = StrategyInput {
            candle,
            candle_event: env.id,
            history: &history,
            portfolio: &view,
            symbols: &symbols,
            sentiment: None,
        };
        for proposal in self.strategy.decide(&input) {
            let order_id = OrderId::derived(&format!("{}/{}", env.id, proposal.symbol));
            let id = order_id.to_string();
            let propose = TradeProposal {
                order_id,
                symbol: proposal.symbol.clone(),
                side: proposal.side,
                quantity: proposal.quantity,
                reference: proposal.reference.clone(),
                proposed_at: now,
                rationale: proposal.rationale,
            };
            self.run::<Order>(
                &id,
                OrderCommand::Propose(propose),
                &env.caused("treasury"),
                false,
            )
            .await?;
            let proposed = self
                .order_event(order_id, "TradeProposed", |_| true)
                .await?;
            let assess = RiskCommand::Assess {
                proposal: ProposalToAssess {
                    order_id,
                    symbol: proposal.symbol.clone(),
                    side: proposal.side,
                    quantity: proposal.quantity,
                    reference: proposal.reference,
                    proposed_at: now,
                },
                view: RiskView {
                    cash: view.cash,
                    positions: view.positions.clone(),
                    prices: view.prices.clone(),
                    equity: view.equity,
                    high_water_mark: view.high_water_mark,
                    day_start_equity: view.day_start_equity,
                },
                // The paper venue's quote: its slippage, and as the price impact the order's share of the
                // candle's volume in basis points (what the venue's volume cap prices in).
                quote: Some(QuoteCheck {
                    slippage_bps: self.settings.paper.slippage_bps,
                    price_impact_bps: proposal
                        .quantity
                        .checked_div(candle.volume)
                        .and_then(|share| share.checked_mul(Decimal::from(10_000)))
                        .map_or(Decimal::MAX, |bps| bps.round_dp(4)),
                }),
            };
            let risk = EventMetadata::caused_by(&proposed, "risk");
            match self
                .run::<RiskBook>(crate::risk::RISK_BOOK, assess, &risk, true)
                .await
            {
                Ok(()) => {}
                // A malformed proposal: reject the order with the reason instead of stalling the pipeline.
                // A proposal risk cannot assess (malformed numbers) is rejected with the reason, not left
                // pending.
                Err(HandlerError::Permanent(reason)) => {
                    tracing::warn!(order = %order_id, %reason, "risk refused to assess the proposal");
                    let reject = OrderCommand::Reject {
                        reasons: vec![jarvis_domain::trading::RiskViolation {
                            rule: jarvis_domain::trading::RiskRule::Unassessable,
                            limit: None,
                            actual: None,
                            detail: format!("not assessable: {reason}"),
                        }],
                        decided_at: now,
                    };
                    self.run::<Order>(&id, reject, &risk, false).await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let verdict = self
                .store
                .events_caused_by(proposed.event_id)
                .await
                .map_err(transient)?
                .into_iter()
                .find(|e| e.event_type == "OrderAdmitted" || e.event_type == "OrderRefused");
            let Some(verdict) = verdict else {
                continue;
            };
            let decided = EventMetadata::caused_by(&verdict, "risk");
            if verdict.event_type == "OrderRefused" {
                let reasons = serde_json::from_value(verdict.payload["reasons"].clone())
                    .map_err(|e| HandlerError::Permanent(format!("OrderRefused reasons: {e}")))?;
                let reject = OrderCommand::Reject {
                    reasons,
                    decided_at: now,
                };
                self.run::<Order>(&id, reject, &decided, false).await?;
                continue;
            }
            let approve = OrderCommand::Approve { decided_at: now };
            self.run::<Order>(&id, approve, &decided, false).await?;
            let approved = self
                .order_event(order_id, "TradeApproved", |_| true)
                .await?;
            if !self.settings.submit_to_paper {
                continue;
            }
            // Still not halted? Inside the gate this is exact: a halt since the assessment (possible when
            // this candle is a redelivery) keeps the approved order from ever being submitted.
            let book: RiskBook = self.load(crate::risk::RISK_BOOK, true).await?;
            if let Some(halt) = book.halt() {
                tracing::info!(order = %order_id, reason = %halt.reason, "approved before a halt: not submitted");
                continue;
            }
            let submit = OrderCommand::Submit {
                venue: PAPER_VENUE.into(),
                submitted_at: now,
            };
            let execution = EventMetadata::caused_by(&approved, "execution");
            self.run::<Order>(&id, submit, &execution, false).await?;
            let submitted = self
                .order_event(order_id, "OrderSubmitted", |_| true)
                .await?;
            let accept = PaperCommand::Accept {
                order_id,
                symbol: proposal.symbol,
                side: proposal.side,
                quantity: proposal.quantity,
                submitted_at: now,
            };
            self.run::<PaperVenue>(
                PAPER_VENUE,
                accept,
                &EventMetadata::caused_by(&submitted, "execution"),
                true,
            )
            .await?;
        }
        Ok(())
    }
}

impl Handler for TradingPipeline {
    async fn handle(&self, envelope: &Envelope, event: AnyEvent) -> Result<(), HandlerError> {
        match event {
            AnyEvent::Market(MarketFeedEvent::CandleClosed(candle)) => {
                self.on_candle(envelope, candle).await
            }
            _ => Ok(()),
        }
    }
}
