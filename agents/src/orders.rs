//! The manual order desk: orders an operator places by hand (Telegram `/buy`, the gateway's
//! `POST /api/v1/commands/orders`), as the NATS micro service `jarvis-trading`.
//!
//! - `jarvis.cmd.trading.propose` `{"symbol": "SOLUSDT", "side": "buy", "quantity": "1.5" | "notional": "100",
//!   "requested_by": "telegram:123"}` proposes the order and has the risk book assess it at once, exactly as
//!   the pipeline's own proposals are assessed (same `RiskBook`, same view of the portfolio and of the open
//!   orders, same paper quote). It answers `{"proposal_id", "verdict": "approved" | "rejected", "rules",
//!   "reasons", "price", "quantity", "notional", "expires_at"}`. Optional `causation_id` and `correlation_id`
//!   tie the order to what asked for it (the `ChatMessageReceived` of a Telegram command); the order id is
//!   then derived from the cause, so a repeated request answers the same proposal.
//! - `jarvis.cmd.trading.confirm` `{"proposal_id": "...", "confirmed_by": "telegram:123"}` approves and submits
//!   an admitted proposal, through the trading gate and only if trading is not halted, and answers
//!   `{"order_id", "status": "submitted"}` (`"approved"` when another venue's execution agent takes approved
//!   orders). A proposal confirmed by someone else than its requester, after `expires_at`, rejected by risk,
//!   or while halted gets a 409 that says which.
//!
//! The causal chain is the pipeline's: `TradeProposed` (caused by the request's cause) → `OrderAdmitted` /
//! `OrderRefused` → `TradeRejected`, or on confirmation `TradeApproved` → `OrderSubmitted` →
//! `PaperOrderAccepted`; the paper venue fills it at the open of the next candle of the symbol (the trading
//! pipeline records `OrderFilled`). An admitted proposal stays `TradeProposed` until it is confirmed: the
//! approval is the operator's, so an execution agent that takes `TradeApproved` never sees an unconfirmed
//! order. Times come from an injected [`Clock`]: the proposal's time, its expiry and the submission.

use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use jarvis_bus::service::{parse, ServiceError};
use jarvis_bus::{BusError, HandlerError};
use jarvis_domain::market::{MarketFeed, MarketFeedId};
use jarvis_domain::trading::order::{Order, OrderCommand, OrderEvent, OrderStatus, TradeProposal};
use jarvis_domain::trading::paper::{PaperCommand, PaperVenue};
use jarvis_domain::trading::risk::{
    PendingOrder, ProposalToAssess, QuoteCheck, RiskBook, RiskCommand, RiskEvent, RiskView,
};
use jarvis_domain::trading::{OrderId, Portfolio, Rationale, RiskRule, RiskViolation, Side};
use jarvis_domain::{EventMetadata, EventRef, Symbol};
use jarvis_store::EventStore;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::execution::Clock;
use crate::ledger::Ledger;
use crate::risk::RISK_BOOK;
use crate::trading::{TradingSettings, PAPER_VENUE, PORTFOLIO};

/// The rationale's `strategy` of a manual order.
pub const MANUAL: &str = "manual";
/// How long a proposal waits for its confirmation by default.
pub const DEFAULT_TTL: Duration = Duration::minutes(2);

/// A request to propose an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposeRequest {
    /// `SOL/USDT`, `SOLUSDT`, or the base token alone (`SOL`, quoted in the portfolio's quote asset).
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Base units; give this or `notional`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<Decimal>,
    /// Quote units to spend or receive at the last price; give this or `quantity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notional: Option<Decimal>,
    /// Who asks, e.g. `telegram:123`; only they may confirm.
    pub requested_by: String,
    /// The event that asked for it (e.g. a `ChatMessageReceived`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The story it belongs to (default: the cause, or a new story).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
}

/// The answer to a proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposeReply {
    /// The order's id, to confirm with.
    pub proposal_id: OrderId,
    /// `approved` (admitted by risk, awaiting confirmation) or `rejected`.
    pub verdict: String,
    /// The broken rules (empty when approved).
    pub rules: Vec<RiskRule>,
    /// One sentence per broken rule.
    pub reasons: Vec<String>,
    /// The pair.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// The reference price (the last observed one).
    pub price: Decimal,
    /// Base units.
    pub quantity: Decimal,
    /// Quantity × price.
    pub notional: Decimal,
    /// When the price was observed.
    pub price_at: DateTime<Utc>,
    /// Confirm before this.
    pub expires_at: DateTime<Utc>,
}

/// A request to confirm a proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// The proposal.
    pub proposal_id: OrderId,
    /// Who confirms; must be who asked.
    pub confirmed_by: String,
}

/// A clock an operator or a test sets by hand.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock showing `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    /// Sets it to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    /// Moves it by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The manual order desk on the event store.
#[derive(Clone)]
pub struct OrderDesk {
    store: EventStore,
    settings: TradingSettings,
    clock: Arc<dyn Clock>,
    ttl: Duration,
}

impl std::fmt::Debug for OrderDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderDesk").field("ttl", &self.ttl).finish()
    }
}

fn service_error(e: HandlerError) -> ServiceError {
    match e {
        HandlerError::Transient(m) => ServiceError::internal(m),
        HandlerError::Permanent(m) => ServiceError::refused(m),
    }
}

/// The symbol of `text` in `quote`: `SOL/USDT`, `SOLUSDT` or `SOL`.
///
/// # Errors
/// A 400 naming the text when it is no symbol.
pub fn parse_symbol(text: &str, quote: &str) -> Result<Symbol, ServiceError> {
    let upper = text.trim().to_ascii_uppercase();
    let candidate = if upper.contains('/') {
        upper
    } else if let Some(base) = upper.strip_suffix(quote).filter(|b| !b.is_empty()) {
        format!("{base}/{quote}")
    } else {
        format!("{upper}/{quote}")
    };
    Symbol::new_checked(&candidate)
        .map_err(|e| ServiceError::bad_request(format!("symbol {text:?}: {e}")))
}

fn manual_inputs(proposal: &TradeProposal) -> Option<(String, DateTime<Utc>)> {
    if proposal.rationale.strategy != MANUAL {
        return None;
    }
    let inputs = &proposal.rationale.inputs;
    let by = inputs.get("requested_by")?.as_str()?.to_string();
    let expires = inputs.get("expires_at")?.as_str()?.parse().ok()?;
    Some((by, expires))
}

impl OrderDesk {
    /// A desk trading with `settings` (the pipeline's), proposals valid for `ttl`, times from `clock`.
    pub fn new(
        store: EventStore,
        settings: TradingSettings,
        clock: Arc<dyn Clock>,
        ttl: Duration,
    ) -> Self {
        Self {
            store,
            settings,
            clock,
            ttl,
        }
    }

    /// Proposes an order and has risk assess it.
    ///
    /// # Errors
    /// 400 for a malformed request; 409 when there is no price or the store refuses; 500 for store failures.
    pub async fn propose(&self, r: ProposeRequest) -> Result<ProposeReply, ServiceError> {
        let quote = self.settings.quote_asset.clone();
        let symbol = parse_symbol(&r.symbol, &quote)?;
        if r.requested_by.trim().is_empty() {
            return Err(ServiceError::bad_request("requested_by must not be blank"));
        }
        let order_id = r.causation_id.map_or_else(
            || OrderId(Uuid::now_v7()),
            |c| OrderId::derived(&format!("manual/{c}")),
        );
        // A repeated request (a redelivered command) answers the proposal it made.
        let existing: Order = Ledger::load(&self.store, &order_id.to_string(), false)
            .await
            .map_err(service_error)?;
        if let Some(p) = existing.proposal() {
            return self.reply_for(&existing, p).await;
        }
        let portfolio: Portfolio = Ledger::load(&self.store, PORTFOLIO, true)
            .await
            .map_err(service_error)?;
        if portfolio.quote_asset().is_none() {
            return Err(ServiceError::refused(
                "the portfolio is not open yet: no candle has been traded",
            ));
        }
        let reference = portfolio.last_price(&symbol).cloned().ok_or_else(|| {
            ServiceError::refused(format!("no price for {symbol} yet: it has no candle"))
        })?;
        let price = reference.price;
        let quantity = match (r.quantity, r.notional) {
            (Some(q), None) => q,
            (None, Some(n)) if price > Decimal::ZERO => (n / price).round_dp(8),
            (None, Some(_)) => {
                return Err(ServiceError::refused(format!(
                    "{symbol} has no positive price"
                )))
            }
            _ => {
                return Err(ServiceError::bad_request(
                    "give exactly one of quantity and notional",
                ))
            }
        };
        if quantity <= Decimal::ZERO {
            return Err(ServiceError::bad_request(format!(
                "quantity = {quantity}: must be greater than zero"
            )));
        }
        let now = self.clock.now();
        let expires_at = now + self.ttl;
        let metadata = match r.causation_id {
            Some(cause) => EventMetadata {
                correlation_id: r.correlation_id.unwrap_or(cause),
                causation_id: cause,
                source: "trading".into(),
            },
            None => EventMetadata::root("trading"),
        };
        let proposal = TradeProposal {
            order_id,
            symbol: symbol.clone(),
            side: r.side,
            quantity,
            reference: reference.clone(),
            proposed_at: now,
            rationale: Rationale {
                strategy: MANUAL.into(),
                rule: "operator_order".into(),
                inputs: json!({
                    "requested_by": r.requested_by,
                    "expires_at": expires_at.to_rfc3339(),
                    "quantity": r.quantity,
                    "notional": r.notional,
                })
                .into(),
                evidence: r.causation_id.into_iter().collect(),
                summary: format!(
                    "manual {} of {quantity} {symbol} requested by {}",
                    r.side, r.requested_by
                )
                .into(),
            },
        };
        // Inside the gate, like a candle's decisions: the view and the open orders risk sees are current.
        let gate = Ledger::close_gate(&self.store)
            .await
            .map_err(service_error)?;
        let done = self.assess(&metadata, proposal.clone()).await;
        Ledger::open_gate(&self.store, gate).await;
        done.map_err(service_error)?;
        let order: Order = Ledger::load(&self.store, &order_id.to_string(), false)
            .await
            .map_err(service_error)?;
        self.reply_for(&order, &proposal).await
    }

    async fn assess(&self, metadata: &EventMetadata, p: TradeProposal) -> Result<(), HandlerError> {
        let store = &self.store;
        let id = p.order_id.to_string();
        let pending: Vec<PendingOrder> = store
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
        let view = store
            .read::<Portfolio, _, _>(PORTFOLIO, true, Portfolio::view)
            .await?;
        store
            .execute::<Order>(&id, OrderCommand::Propose(p.clone()), metadata, false)
            .await?;
        let proposed = order_event(store, p.order_id, "TradeProposed", |e| {
            matches!(e, OrderEvent::TradeProposed(_))
        })
        .await?;
        let quote = self.quote(&p).await?;
        let assess = RiskCommand::Assess {
            proposal: ProposalToAssess {
                order_id: p.order_id,
                symbol: p.symbol.clone(),
                side: p.side,
                quantity: p.quantity,
                reference: p.reference.clone(),
                proposed_at: p.proposed_at,
            },
            view: RiskView {
                cash: view.cash,
                positions: view.positions,
                prices: view.prices,
                equity: view.equity,
                high_water_mark: view.high_water_mark,
                day_start_equity: view.day_start_equity,
                pending,
            },
            quote,
        };
        let risk = proposed.caused("risk");
        match store
            .execute::<RiskBook>(RISK_BOOK, assess, &risk, true)
            .await
        {
            Ok(()) => {}
            Err(HandlerError::Permanent(reason)) => {
                let reject = OrderCommand::Reject {
                    reasons: vec![RiskViolation {
                        rule: RiskRule::Unassessable,
                        limit: None,
                        actual: None,
                        detail: format!("not assessable: {reason}").into(),
                    }],
                    decided_at: p.proposed_at,
                };
                return store.execute::<Order>(&id, reject, &risk, false).await;
            }
            Err(e) => return Err(e),
        }
        let verdict = store
            .find_caused::<RiskBook, _>(RISK_BOOK, proposed.event_id, |e| {
                matches!(
                    e,
                    RiskEvent::OrderRefused { .. } | RiskEvent::OrderAdmitted { .. }
                )
            })
            .await?;
        if let Some((at, RiskEvent::OrderRefused { reasons, .. })) = verdict {
            let reject = OrderCommand::Reject {
                reasons,
                decided_at: p.proposed_at,
            };
            store
                .execute::<Order>(&id, reject, &at.caused("risk"), false)
                .await?;
        }
        Ok(())
    }

    /// The paper venue's quote, as the pipeline prices it: its slippage and fee, and the order's share of the
    /// volume of the candle the price comes from. `None` when that candle is not found.
    async fn quote(&self, p: &TradeProposal) -> Result<Option<QuoteCheck>, HandlerError> {
        let at = p.reference.at;
        let id = MarketFeedId {
            symbol: p.symbol.clone(),
            day: (at - Duration::seconds(1)).date_naive(),
        };
        let volume = self
            .store
            .read::<MarketFeed, _, _>(&id.to_string(), false, |feed| {
                feed.candles()
                    .rev()
                    .find(|c| c.close_time == at)
                    .map(|c| c.volume)
            })
            .await?;
        Ok(volume.map(|volume| QuoteCheck {
            slippage_bps: self.settings.paper.slippage_bps,
            fee_bps: self.settings.paper.fee_bps,
            price_impact_bps: p
                .quantity
                .checked_div(volume)
                .and_then(|share| share.checked_mul(Decimal::from(10_000)))
                .map_or(Decimal::MAX, |bps| bps.round_dp(4)),
        }))
    }

    async fn reply_for(
        &self,
        order: &Order,
        p: &TradeProposal,
    ) -> Result<ProposeReply, ServiceError> {
        let expires_at = manual_inputs(p).map_or(p.proposed_at, |(_, e)| e);
        let (rules, reasons) = if order.status() == OrderStatus::Rejected {
            let rejected = self
                .store
                .find_event::<Order, _>(&p.order_id.to_string(), |e| {
                    matches!(e, OrderEvent::TradeRejected(_))
                })
                .await
                .map_err(service_error)?;
            match rejected {
                Some((_, OrderEvent::TradeRejected(r))) => (
                    r.reasons.iter().map(|v| v.rule).collect(),
                    r.reasons.into_iter().map(|v| v.detail.into()).collect(),
                ),
                _ => (vec![], vec![]),
            }
        } else {
            (vec![], vec![])
        };
        Ok(ProposeReply {
            proposal_id: p.order_id,
            verdict: if order.status() == OrderStatus::Rejected {
                "rejected"
            } else {
                "approved"
            }
            .into(),
            rules,
            reasons,
            symbol: p.symbol.clone(),
            side: p.side,
            price: p.reference.price,
            quantity: p.quantity,
            notional: (p.quantity * p.reference.price).round_dp(8),
            price_at: p.reference.at,
            expires_at,
        })
    }

    /// Confirms a proposal: approves and submits it.
    ///
    /// # Errors
    /// 409 for an unknown, foreign, expired or rejected proposal, or while trading is halted; 500 for store
    /// failures.
    pub async fn confirm(&self, r: ConfirmRequest) -> Result<Value, ServiceError> {
        let store = &self.store;
        let id = r.proposal_id.to_string();
        let order: Order = Ledger::load(store, &id, false)
            .await
            .map_err(service_error)?;
        let Some(p) = order.proposal().cloned() else {
            return Err(ServiceError::refused(format!("unknown proposal {id}")));
        };
        let Some((requested_by, expires_at)) = manual_inputs(&p) else {
            return Err(ServiceError::refused(format!(
                "order {id} is not a manual proposal: it needs no confirmation"
            )));
        };
        if r.confirmed_by != requested_by {
            return Err(ServiceError::refused(format!(
                "proposal {id} was requested by {requested_by}: only they may confirm it"
            )));
        }
        let done = |status: &str| json!({"order_id": p.order_id, "status": status});
        match order.status() {
            OrderStatus::Proposed => {}
            OrderStatus::Rejected => {
                return Err(ServiceError::refused(format!(
                    "proposal {id} was rejected by risk"
                )))
            }
            OrderStatus::Approved if !self.settings.submit_to_paper => return Ok(done("approved")),
            OrderStatus::Approved => {
                // Approved but not submitted: halted in between, or a crash. Submitted below.
            }
            other => return Ok(done(&other.to_string())),
        }
        let now = self.clock.now();
        if order.status() == OrderStatus::Proposed && now > expires_at {
            return Err(ServiceError::refused(format!(
                "proposal {id} expired at {expires_at} (now {now}): propose again"
            )));
        }
        let proposed = order_event(store, p.order_id, "TradeProposed", |e| {
            matches!(e, OrderEvent::TradeProposed(_))
        })
        .await
        .map_err(service_error)?;
        let verdict = store
            .find_caused::<RiskBook, _>(RISK_BOOK, proposed.event_id, |e| {
                matches!(e, RiskEvent::OrderAdmitted { .. })
            })
            .await
            .map_err(service_error)?;
        let Some((admitted, _)) = verdict else {
            return Err(ServiceError::refused(format!(
                "proposal {id} has no admission by risk"
            )));
        };
        let gate = Ledger::close_gate(store).await.map_err(service_error)?;
        let submitted = self.submit(&p, admitted, now).await;
        Ledger::open_gate(store, gate).await;
        let status = submitted.map_err(|e| match e {
            Submit::Halted(m) => ServiceError::refused(m),
            Submit::Failed(e) => service_error(e),
        })?;
        Ok(done(status))
    }

    async fn submit(
        &self,
        p: &TradeProposal,
        admitted: EventRef,
        now: DateTime<Utc>,
    ) -> Result<&'static str, Submit> {
        let store = &self.store;
        let id = p.order_id.to_string();
        // Inside the gate this is exact: no halt lands between this check and the submission.
        let halt = store
            .read::<RiskBook, _, _>(RISK_BOOK, true, |book| book.halt().cloned())
            .await
            .map_err(Submit::Failed)?;
        if let Some(h) = halt {
            return Err(Submit::Halted(format!(
                "trading is halted since {}: {}; /resume first",
                h.at, h.reason
            )));
        }
        store
            .execute::<Order>(
                &id,
                OrderCommand::Approve { decided_at: now },
                &admitted.caused("trading"),
                false,
            )
            .await
            .map_err(Submit::Failed)?;
        if !self.settings.submit_to_paper {
            return Ok("approved");
        }
        let approved = order_event(store, p.order_id, "TradeApproved", |e| {
            matches!(e, OrderEvent::TradeApproved(_))
        })
        .await
        .map_err(Submit::Failed)?;
        let submit = OrderCommand::Submit {
            venue: PAPER_VENUE.into(),
            submitted_at: now,
        };
        store
            .execute::<Order>(&id, submit, &approved.caused("execution"), false)
            .await
            .map_err(Submit::Failed)?;
        let submitted = order_event(store, p.order_id, "OrderSubmitted", |e| {
            matches!(e, OrderEvent::OrderSubmitted(_))
        })
        .await
        .map_err(Submit::Failed)?;
        let accept = PaperCommand::Accept {
            order_id: p.order_id,
            symbol: p.symbol.clone(),
            side: p.side,
            quantity: p.quantity,
            submitted_at: now,
        };
        store
            .execute::<PaperVenue>(PAPER_VENUE, accept, &submitted.caused("execution"), true)
            .await
            .map_err(Submit::Failed)?;
        Ok("submitted")
    }

    async fn handle(&self, verb: &str, body: &[u8]) -> Result<Value, ServiceError> {
        match verb {
            "propose" => {
                let reply = self.propose(parse(body)?).await?;
                serde_json::to_value(reply).map_err(|e| ServiceError::internal(e.to_string()))
            }
            "confirm" => self.confirm(parse(body)?).await,
            other => Err(ServiceError::bad_request(format!("unknown verb {other:?}"))),
        }
    }

    /// Serves `jarvis-trading` until `shutdown` completes.
    ///
    /// # Errors
    /// [`BusError`] when the service cannot be registered with NATS.
    pub async fn serve(
        self,
        client: async_nats::Client,
        health: jarvis_bus::service::Health,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), BusError> {
        let desk = Arc::new(self);
        jarvis_bus::service::serve_with_health(
            &client,
            "trading",
            "Jarvis trading: the pipeline's status; manual orders: propose (risk-checked), confirm (by the requester, before expiry)",
            &["propose", "confirm"],
            |verb: String, body: Bytes| {
                let desk = desk.clone();
                async move { desk.handle(&verb, &body).await }
            },
            health,
            shutdown,
        )
        .await
    }
}

enum Submit {
    Halted(String),
    Failed(HandlerError),
}

async fn order_event(
    store: &EventStore,
    order: OrderId,
    what: &str,
    pick: impl Fn(&OrderEvent) -> bool + Send,
) -> Result<EventRef, HandlerError> {
    store
        .find_event::<Order, _>(&order.to_string(), pick)
        .await?
        .map(|(at, _)| at)
        .ok_or_else(|| HandlerError::Transient(format!("order {order} has no {what} yet")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_parse_in_every_spelling() {
        for text in ["SOL/USDT", "solusdt", "SOL", " sol "] {
            assert_eq!(
                parse_symbol(text, "USDT").unwrap().as_str(),
                "SOL/USDT",
                "{text}"
            );
        }
        let err = parse_symbol("S-OL", "USDT").unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains("S-OL"), "{}", err.message);
    }

    #[test]
    fn requests_parse_with_the_agreed_shape() {
        let r: ProposeRequest = serde_json::from_str(
            r#"{"symbol":"SOLUSDT","side":"buy","notional":"100","requested_by":"telegram:1"}"#,
        )
        .unwrap();
        assert_eq!(r.notional, Some(Decimal::from(100)));
        assert_eq!(r.side, Side::Buy);
        let bad = serde_json::from_str::<ProposeRequest>(
            r#"{"symbol":"SOL","side":"buy","qty":"1","requested_by":"x"}"#,
        );
        assert!(bad.unwrap_err().to_string().contains("qty"));
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let t: DateTime<Utc> = "2026-11-21T08:00:00Z".parse().unwrap();
        let c = ManualClock::new(t);
        assert_eq!(c.now(), t);
        c.advance(Duration::minutes(3));
        assert_eq!(c.now(), t + Duration::minutes(3));
    }
}
