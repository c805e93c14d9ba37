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
use std::sync::Arc;

use chrono::Duration;
use jarvis_bus::{Envelope, Handler, HandlerError};
use jarvis_domain::market::{MarketFeed, MarketFeedEvent, MarketFeedId};
use jarvis_domain::trading::order::{Order, OrderCommand, OrderEvent, OrderStatus, TradeProposal};
use jarvis_domain::trading::paper::{PaperCommand, PaperConfig, PaperVenue};
use jarvis_domain::trading::portfolio::{Portfolio, PortfolioCommand};
use jarvis_domain::trading::risk::{
    PendingOrder, ProposalToAssess, QuoteCheck, RiskBook, RiskCommand, RiskEvent, RiskLimits,
    RiskView,
};
use jarvis_domain::trading::{OrderId, PricePoint, Side};
use jarvis_domain::{AnyEvent, Candle, EventMetadata, EventRef, Symbol};
use jarvis_store::EventStore;
use rust_decimal::Decimal;

use crate::ledger::{Ledger, LedgerAggregate};
use crate::llm::{AskError, AskRequest, Oracle};
use crate::treasury::{Proposal, SentimentReading, Strategy, StrategyConfig, StrategyInput};
use jarvis_domain::sentiment::{token_day_id, SentimentEvent, TokenSentiment};

/// The one portfolio.
pub const PORTFOLIO: &str = "main";
/// The one paper venue.
pub const PAPER_VENUE: &str = "paper";

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
    /// Whether approved orders go to the paper venue. Off when another venue's execution agent (Jupiter)
    /// takes the approved orders: the pipeline then stops at `TradeApproved`.
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

/// The pipeline, as a consumer of `CandleClosed` events, on a [`Ledger`]: the event store when live
/// (the default), memory in a backtest.
pub struct TradingPipeline<L = EventStore> {
    ledger: L,
    settings: TradingSettings,
    strategy: Box<dyn Strategy>,
    set_up: AtomicBool,
    reviewer: Option<Arc<dyn Oracle>>,
}

impl<L: Ledger> TradingPipeline<L> {
    /// A pipeline on `ledger` with the strategy of `settings.strategy` (the rebalancer).
    pub fn new(ledger: L, settings: TradingSettings) -> Self {
        let strategy = settings.strategy.build();
        Self::with_strategy(ledger, settings, strategy)
    }

    /// A pipeline with a strategy of your own: implement [`Strategy`], nothing else changes.
    pub fn with_strategy(
        ledger: L,
        settings: TradingSettings,
        strategy: Box<dyn Strategy>,
    ) -> Self {
        Self {
            ledger,
            settings,
            strategy,
            set_up: AtomicBool::new(false),
            reviewer: None,
        }
    }

    /// Asks `reviewer` about every proposal when `treasury.llm_review` is on: the live LLM router, or in a
    /// backtest the answers recorded by prompt hash.
    pub fn with_reviewer(mut self, reviewer: Arc<dyn Oracle>) -> Self {
        self.reviewer = Some(reviewer);
        self
    }

    /// The ledger it trades on.
    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// Its settings.
    pub fn settings(&self) -> &TradingSettings {
        &self.settings
    }

    async fn run<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        snapshot: bool,
    ) -> Result<(), HandlerError>
    where
        A: LedgerAggregate,
    {
        self.ledger
            .execute::<A>(id, command, metadata, snapshot)
            .await
    }

    async fn load<A>(&self, id: &str, snapshot: bool) -> Result<A, HandlerError>
    where
        A: LedgerAggregate,
    {
        self.ledger.load::<A>(id, snapshot).await
    }

    /// The event of `order` that `pick` accepts (`what` names it in the error), just written or written
    /// before.
    async fn order_event(
        &self,
        order: OrderId,
        what: &str,
        pick: impl Fn(&OrderEvent) -> bool + Send,
    ) -> Result<EventRef, HandlerError> {
        self.ledger
            .find_event_ref::<Order, _>(&order.to_string(), pick)
            .await?
            .ok_or_else(|| HandlerError::Transient(format!("order {order} has no {what} yet")))
    }

    /// Opens the portfolio, sets the risk limits and configures the venue, once per process (each is a
    /// no-op when already done), at the event time of the first candle.
    async fn set_up(
        &self,
        env: &EventRef,
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
    pub async fn on_candle(&self, env: &EventRef, candle: Candle) -> Result<(), HandlerError> {
        self.candle(env, candle, false).await
    }

    /// [`TradingPipeline::on_candle`] for a candle that may have been handled before (`redelivered`: the
    /// bus delivered it again). Its recorded decision then stands: see [`TradingPipeline::decide`].
    ///
    /// # Errors
    /// As [`TradingPipeline::on_candle`].
    pub async fn candle(
        &self,
        env: &EventRef,
        candle: Candle,
        redelivered: bool,
    ) -> Result<(), HandlerError> {
        let quote = candle.symbol.as_str().split('/').nth(1).unwrap_or_default();
        if quote != self.settings.quote_asset {
            tracing::debug!(symbol = %candle.symbol, quote, "not traded: another quote asset");
            return Ok(());
        }
        let gate = self.ledger.close_gate().await?;
        let done = self.steps(env, &candle, redelivered).await;
        self.ledger.open_gate(gate).await;
        done
    }

    async fn steps(
        &self,
        env: &EventRef,
        candle: &Candle,
        redelivered: bool,
    ) -> Result<(), HandlerError> {
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
        self.decide(env, candle, redelivered).await
    }

    /// Steps 1 and 2: the venue's fills at this candle, recorded on their orders and in the portfolio.
    async fn fill(&self, env: &EventRef, candle: &Candle) -> Result<(), HandlerError> {
        let matched = PaperCommand::Match {
            candle: candle.clone(),
        };
        self.run::<PaperVenue>(PAPER_VENUE, matched, &env.caused("execution"), true)
            .await?;
        let fills = self
            .ledger
            .read::<PaperVenue, _, _>(PAPER_VENUE, true, |venue| {
                venue
                    .fills_at(&candle.symbol, candle.open_time)
                    .into_iter()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .await?;
        for fill in fills {
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
                .order_event(fill.order_id, "OrderSubmitted", |e| {
                    matches!(e, OrderEvent::OrderSubmitted(_))
                })
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
            let metadata = submitted.caused("execution");
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
                .order_event(
                    fill.order_id,
                    "OrderFilled",
                    |e| matches!(e, OrderEvent::OrderFilled(f) if f.fill_id == fill.fill_id),
                )
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
            self.run::<Portfolio>(PORTFOLIO, apply, &filled.caused("settlement"), true)
                .await?;
        }
        Ok(())
    }

    /// Withdraws what is still open of a failed order from the venue, so it fills nothing more.
    async fn withdraw(
        &self,
        env: &EventRef,
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

    /// The candles of the symbol the strategy may look at, up to this one, oldest first: the last
    /// `history_len` of them (fewer at the start of the data, or across a gap longer than that).
    async fn history(&self, candle: &Candle) -> Result<Vec<Candle>, HandlerError> {
        let wanted = self.strategy.history_len().max(1);
        let interval = (candle.close_time - candle.open_time).num_seconds().max(1);
        let days = wanted as i64 * interval / 86_400 + 1;
        let mut history: Vec<Candle> = Vec::with_capacity(wanted);
        // Newest day first, each day's candles newest first; reversed at the end.
        for back in 0..=days {
            let id = MarketFeedId {
                symbol: candle.symbol.clone(),
                day: candle.open_time.date_naive() - Duration::days(back),
            };
            let need = wanted - history.len();
            let newest_first = &mut history;
            self.ledger
                .read::<MarketFeed, _, _>(&id.text(), false, |feed| {
                    newest_first.extend(
                        feed.candles()
                            .rev()
                            .filter(|c| c.open_time <= candle.open_time)
                            .take(need)
                            .cloned(),
                    );
                })
                .await?;
            if history.len() >= wanted {
                break;
            }
        }
        history.reverse();
        Ok(history)
    }

    /// The latest sentiment score of the symbol's base token at or before `now` (event time), from today or
    /// yesterday (older readings are stale): what the sentiment agent recorded as `SentimentScored`.
    async fn sentiment(
        &self,
        candle: &Candle,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<SentimentReading>, HandlerError> {
        let token = candle
            .symbol
            .as_str()
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        for back in 0..=1 {
            let id = token_day_id(&token, now.date_naive() - Duration::days(back));
            let found = self
                .ledger
                .find_event::<TokenSentiment, _>(&id, |e| {
                    let SentimentEvent::SentimentScored(s) = e;
                    s.at <= now
                })
                .await?;
            if let Some((at, SentimentEvent::SentimentScored(s))) = found {
                return Ok(Some(SentimentReading {
                    token,
                    score: s.score,
                    confidence: s.confidence,
                    at: s.at,
                    event_id: at.event_id,
                }));
            }
        }
        Ok(None)
    }

    /// The LLM review of a proposal (`treasury.llm_review`): `Some(reason)` when it vetoes. The answer is
    /// written into the rationale (`inputs.llm_review`), so the audit trail shows what the model said. A
    /// model that cannot be asked, or answers nonsense, vetoes: no trade without the review the owner asked
    /// for. Replaying, a call with no recorded answer stops the run.
    async fn review(
        &self,
        env: &EventRef,
        proposal: &str,
        rationale: &mut jarvis_domain::trading::Rationale,
    ) -> Result<Option<String>, HandlerError> {
        let Some(reviewer) = &self.reviewer else {
            return Ok(Some(
                "treasury.llm_review is on but no LLM is configured".into(),
            ));
        };
        let request = AskRequest {
            task: REVIEW_TASK.into(),
            system: Some(REVIEW_SYSTEM.into()),
            prompt: proposal.to_string(),
            correlation_id: Some(env.correlation_id),
            ..AskRequest::default()
        };
        // Once per proposal: a candle handled again (a crash, a retry) gets the answer already paid for.
        let (verdict, record) = match reviewer.ask_once(request).await {
            Ok(answer) => {
                let verdict = parse_review(&answer.answer);
                let record = serde_json::json!({
                    "call_id": answer.call_id,
                    "provider": answer.provider,
                    "model": answer.model,
                    "prompt_hash": answer.prompt_hash,
                    "answer": answer.answer,
                });
                (verdict, record)
            }
            Err(AskError::NotRecorded(hash)) => {
                return Err(HandlerError::Permanent(format!(
                    "the LLM review has no recorded answer for prompt hash {hash}"
                )))
            }
            Err(e) => (
                Err(format!("the LLM could not be asked: {e}")),
                serde_json::json!({"error": e.to_string()}),
            ),
        };
        if let serde_json::Value::Object(inputs) = rationale.inputs.make_mut() {
            inputs.insert("llm_review".into(), record);
        }
        Ok(match verdict {
            Ok((true, _)) => None,
            Ok((false, reason)) => Some(format!("vetoed by the LLM review: {reason}")),
            Err(reason) => Some(reason),
        })
    }

    /// The proposals recorded for this candle, if it was decided before (one order id per candle and
    /// symbol), with the time they were proposed at. Rejected orders need nothing more and are left out.
    async fn recorded_decision(
        &self,
        env: &EventRef,
        symbols: &BTreeSet<Symbol>,
    ) -> Result<Option<(chrono::DateTime<chrono::Utc>, Vec<Proposal>)>, HandlerError> {
        let mut at = None;
        let mut proposals = Vec::new();
        for symbol in symbols {
            let id = OrderId::of_candle(env.event_id, symbol).to_string();
            let recorded = self
                .ledger
                .read::<Order, _, _>(&id, false, |o| {
                    o.proposal().cloned().map(|p| (p, o.status()))
                })
                .await?;
            let Some((p, status)) = recorded else {
                continue;
            };
            at = Some(p.proposed_at);
            if status != OrderStatus::Rejected {
                proposals.push(Proposal {
                    symbol: p.symbol,
                    side: p.side,
                    quantity: p.quantity,
                    reference: p.reference,
                    rationale: p.rationale,
                });
            }
        }
        Ok(at.map(|at| (at, proposals)))
    }

    /// Steps 3 to 5: proposals, their risk verdicts, and the submission of approved orders.
    ///
    /// A `redelivered` candle may have been decided before, its acknowledgement lost (NATS or this process
    /// restarted), and it can come back after later candles moved the portfolio on: deciding again would
    /// propose something else under the same order ids. Its recorded proposals stand instead, and whatever
    /// steps they had not finished are finished, at the time they were proposed; the LLM is not asked again.
    async fn decide(
        &self,
        env: &EventRef,
        candle: &Candle,
        redelivered: bool,
    ) -> Result<(), HandlerError> {
        // What open orders at the venue have spoken for: risk counts their cash and exposure.
        let mut pending: Vec<PendingOrder> = self
            .ledger
            .read::<PaperVenue, _, _>(PAPER_VENUE, true, |venue| {
                venue
                    .open_orders()
                    .map(|o| PendingOrder {
                        symbol: o.symbol.clone(),
                        side: o.side,
                        quantity: o.remaining,
                    })
                    .collect()
            })
            .await?;
        if pending.iter().any(|o| o.symbol == candle.symbol) {
            return Ok(());
        }
        let mut view = self
            .ledger
            .read::<Portfolio, _, _>(PORTFOLIO, true, Portfolio::view)
            .await?;
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
        let sentiment = self.sentiment(candle, now).await?;
        // The symbols with candles so far, as the portfolio's marks recorded them: persisted and in event
        // order, so a restart decides exactly as an uninterrupted run would.
        let mut symbols: BTreeSet<Symbol> = view.prices.keys().cloned().collect();
        symbols.insert(candle.symbol.clone());
        let input = StrategyInput {
            candle,
            candle_event: env.event_id,
            history: &history,
            portfolio: &view,
            symbols: &symbols,
            sentiment: sentiment.as_ref(),
        };
        let recorded = match redelivered {
            true => self.recorded_decision(env, &symbols).await?,
            false => None,
        };
        let replaying = recorded.is_some();
        let (now, proposals) = match recorded {
            Some((at, proposals)) => (at, proposals),
            None => (now, self.strategy.decide(&input)),
        };
        let last = proposals.len().saturating_sub(1);
        for (i, proposal) in proposals.into_iter().enumerate() {
            // Look-ahead: a decision may rely only on what was known when the candle closed.
            if proposal.reference.at > candle.close_time {
                return Err(HandlerError::Permanent(format!(
                    "look-ahead: strategy {} relied on a {} price at {} after the candle closed at {}",
                    self.strategy.name(),
                    proposal.reference.symbol,
                    proposal.reference.at,
                    candle.close_time
                )));
            }
            let order_id = OrderId::of_candle(env.event_id, &proposal.symbol);
            let id = order_id.to_string();
            let mut rationale = proposal.rationale;
            let veto = match self.settings.strategy.llm_review && !replaying {
                true => {
                    self.review(
                        env,
                        &proposal_text(
                            &proposal.symbol,
                            proposal.side,
                            proposal.quantity,
                            &proposal.reference,
                            &rationale,
                        ),
                        &mut rationale,
                    )
                    .await?
                }
                false => None,
            };
            let propose = TradeProposal {
                order_id,
                symbol: proposal.symbol.clone(),
                side: proposal.side,
                quantity: proposal.quantity,
                reference: proposal.reference.clone(),
                proposed_at: now,
                rationale,
            };
            self.run::<Order>(
                &id,
                OrderCommand::Propose(propose),
                &env.caused("treasury"),
                false,
            )
            .await?;
            let proposed = self
                .order_event(order_id, "TradeProposed", |e| {
                    matches!(e, OrderEvent::TradeProposed(_))
                })
                .await?;
            if let Some(detail) = veto {
                let reject = OrderCommand::Reject {
                    reasons: vec![jarvis_domain::trading::RiskViolation {
                        rule: jarvis_domain::trading::RiskRule::LlmReview,
                        limit: None,
                        actual: None,
                        detail: detail.into(),
                    }],
                    decided_at: now,
                };
                self.run::<Order>(&id, reject, &proposed.caused("treasury"), false)
                    .await?;
                continue;
            }
            let assess = RiskCommand::Assess {
                proposal: ProposalToAssess {
                    order_id,
                    symbol: proposal.symbol.clone(),
                    side: proposal.side,
                    quantity: proposal.quantity,
                    reference: proposal.reference,
                    proposed_at: now,
                },
                // The last proposal takes the view's maps; any before it gets copies.
                view: if i == last {
                    RiskView {
                        cash: view.cash,
                        positions: std::mem::take(&mut view.positions),
                        prices: std::mem::take(&mut view.prices),
                        equity: view.equity,
                        high_water_mark: view.high_water_mark,
                        day_start_equity: view.day_start_equity,
                        pending: std::mem::take(&mut pending),
                    }
                } else {
                    RiskView {
                        cash: view.cash,
                        positions: view.positions.clone(),
                        prices: view.prices.clone(),
                        equity: view.equity,
                        high_water_mark: view.high_water_mark,
                        day_start_equity: view.day_start_equity,
                        pending: pending.clone(),
                    }
                },
                // The paper venue's quote: its slippage, and as the price impact the order's share of the
                // candle's volume in basis points (what the venue's volume cap prices in).
                quote: Some(QuoteCheck {
                    slippage_bps: self.settings.paper.slippage_bps,
                    fee_bps: self.settings.paper.fee_bps,
                    price_impact_bps: proposal
                        .quantity
                        .checked_div(candle.volume)
                        .and_then(|share| share.checked_mul(Decimal::from(10_000)))
                        .map_or(Decimal::MAX, |bps| bps.round_dp(4)),
                }),
            };
            let risk = proposed.caused("risk");
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
                            detail: format!("not assessable: {reason}").into(),
                        }],
                        decided_at: now,
                    };
                    self.run::<Order>(&id, reject, &risk, false).await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let verdict = self
                .ledger
                .find_caused::<RiskBook, _>(crate::risk::RISK_BOOK, proposed.event_id, |e| {
                    matches!(
                        e,
                        RiskEvent::OrderAdmitted { .. } | RiskEvent::OrderRefused { .. }
                    )
                })
                .await?;
            let Some((verdict, verdict_event)) = verdict else {
                continue;
            };
            let decided = verdict.caused("risk");
            if let RiskEvent::OrderRefused { reasons, .. } = verdict_event {
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
                .order_event(order_id, "TradeApproved", |e| {
                    matches!(e, OrderEvent::TradeApproved(_))
                })
                .await?;
            if !self.settings.submit_to_paper {
                // Another venue's execution agent takes it from here.
                continue;
            }
            // Still not halted? Inside the gate this is exact: a halt since the assessment (possible when
            // this candle is a redelivery) keeps the approved order from ever being submitted.
            let halt = self
                .ledger
                .read::<RiskBook, _, _>(crate::risk::RISK_BOOK, true, |book| book.halt().cloned())
                .await?;
            if let Some(halt) = halt {
                tracing::info!(order = %order_id, reason = %halt.reason, "approved before a halt: not submitted");
                continue;
            }
            let submit = OrderCommand::Submit {
                venue: PAPER_VENUE.into(),
                submitted_at: now,
            };
            let execution = approved.caused("execution");
            self.run::<Order>(&id, submit, &execution, false).await?;
            let submitted = self
                .order_event(order_id, "OrderSubmitted", |e| {
                    matches!(e, OrderEvent::OrderSubmitted(_))
                })
                .await?;
            let accept = PaperCommand::Accept {
                order_id,
                symbol: proposal.symbol,
                side: proposal.side,
                quantity: proposal.quantity,
                submitted_at: now,
            };
            self.run::<PaperVenue>(PAPER_VENUE, accept, &submitted.caused("execution"), true)
                .await?;
        }
        Ok(())
    }
}

/// The LLM task that reviews proposals (its route in `[llm.routes]`).
pub const REVIEW_TASK: &str = "trading";

const REVIEW_SYSTEM: &str = "You review trades proposed by a rule-based crypto trading strategy. \
Answer with one JSON object and nothing else: {\"decision\": \"approve\"|\"veto\", \"reason\": \"one sentence\"}.";

/// The proposal as the reviewer reads it: every number the strategy decided by, and nothing from the wall
/// clock, so the same proposal is the same prompt (and prompt hash) live and in a backtest.
fn proposal_text(
    symbol: &Symbol,
    side: Side,
    quantity: Decimal,
    reference: &PricePoint,
    rationale: &jarvis_domain::trading::Rationale,
) -> String {
    let side = match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    };
    format!(
        "Proposal: {side} {quantity} {symbol} at {price} (price of {at}).\n\
         Strategy: {strategy}, rule {rule}.\nWhy: {summary}\nInputs: {inputs}",
        price = reference.price,
        at = reference.at.to_rfc3339(),
        strategy = rationale.strategy,
        rule = rationale.rule,
        summary = rationale.summary,
        inputs = rationale.inputs,
    )
}

/// `(approved, reason)` from the reviewer's answer, or why the answer is unusable.
fn parse_review(answer: &str) -> Result<(bool, String), String> {
    #[derive(serde::Deserialize)]
    struct Review {
        decision: String,
        #[serde(default)]
        reason: String,
    }
    let clip: String = answer.chars().take(200).collect();
    let (Some(start), Some(end)) = (answer.find('{'), answer.rfind('}')) else {
        return Err(format!("the LLM review answered no JSON object: {clip:?}"));
    };
    let review: Review = serde_json::from_str(answer.get(start..=end).unwrap_or_default())
        .map_err(|e| format!("the LLM review answered {clip:?}: {e}"))?;
    match review.decision.trim().to_ascii_lowercase().as_str() {
        "approve" => Ok((true, review.reason)),
        "veto" => Ok((false, review.reason)),
        other => Err(format!(
            "the LLM review answered decision {other:?}; expected \"approve\" or \"veto\""
        )),
    }
}

impl<L: Ledger> Handler for TradingPipeline<L> {
    async fn handle(&self, envelope: &Envelope, event: AnyEvent) -> Result<(), HandlerError> {
        match event {
            AnyEvent::Market(MarketFeedEvent::CandleClosed(candle)) => {
                self.candle(&envelope.event_ref(), candle, envelope.delivered > 1)
                    .await
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_review;

    #[test]
    fn reviews_parse_strictly_and_anything_else_vetoes() {
        assert_eq!(
            parse_review("Sure: {\"decision\": \"Approve\", \"reason\": \"fine\"}"),
            Ok((true, "fine".into()))
        );
        assert_eq!(
            parse_review("{\"decision\":\"veto\",\"reason\":\"too late\"}"),
            Ok((false, "too late".into()))
        );
        let maybe = parse_review("{\"decision\":\"maybe\"}").unwrap_err();
        assert!(maybe.contains("\"maybe\""), "{maybe}");
        let prose = parse_review("I would buy").unwrap_err();
        assert!(prose.contains("no JSON object"), "{prose}");
    }
}
