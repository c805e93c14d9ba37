//! [`JupiterExecution`]: the execution agent for the Jupiter venue, a consumer of `TradeApproved`.
//!
//! For each approved order: inside the trading gate, unless the risk book is halted, `OrderSubmitted`
//! (venue `jupiter`); then quote and gate (`QuoteRejected` with the numbers), sign, record `OrderSent` with
//! the signature, send, confirm; then `OrderFilled` (with the swap's receipt) or `OrderFailed` (with the
//! reason and the signature); and the fill applied to the portfolio.
//!
//! Redelivery never sends twice. The order's status decides: approved → submit and execute; submitted with
//! no signature → nothing was sent, execute; submitted with a signature → look the transaction up once
//! (filled, failed on chain, or "outcome unknown after restart, signature ..."), never send again; filled or
//! failed → only make sure the portfolio has its fills. Two processes racing on one order cannot both
//! send: the order records at most one signature, and a transaction is sent only after its signature was
//! recorded.
//!
//! Times: `OrderSubmitted` carries the approval's event time. Outcomes carry the venue's clock in live
//! mode (a real swap happens now), and the approval's event time in a dry run, so a replayed history
//! dry-runs exactly as it would have live.

use cqrs_es::Aggregate;
use jarvis_bus::{Envelope, Handler, HandlerError};
use jarvis_domain::trading::order::{Order, OrderCommand, OrderEvent, OrderStatus, TradeApproved};
use jarvis_domain::trading::portfolio::{Portfolio, PortfolioCommand};
use jarvis_domain::trading::{OrderId, RiskBook};
use jarvis_domain::{AnyEvent, EventMetadata, RecordedEvent};
use jarvis_store::{execute_with_retry, EventStore, StoreError};
use rust_decimal::Decimal;

use super::jupiter::{FillPlan, Funds, JupiterVenue, Outcome, Prepared, SwapOrder, VENUE};
use crate::runtime::{handler_error, SNAPSHOT_EVERY};
use crate::trading::PORTFOLIO;

/// Retries after conflicts with another writer.
const RETRIES: u32 = 5;
/// The source of the events this agent writes.
const SOURCE: &str = "execution";

/// The Jupiter execution agent.
pub struct JupiterExecution {
    store: EventStore,
    venue: JupiterVenue,
}

impl std::fmt::Debug for JupiterExecution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JupiterExecution")
            .field("venue", &self.venue)
            .finish()
    }
}

fn transient(e: StoreError) -> HandlerError {
    HandlerError::Transient(e.to_string())
}

impl JupiterExecution {
    /// The agent on `store`, executing on `venue`.
    pub fn new(store: EventStore, venue: JupiterVenue) -> Self {
        Self { store, venue }
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

    /// The latest event of `order` of type `event_type` satisfying `pick`.
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

    async fn order_command(
        &self,
        order_id: OrderId,
        command: OrderCommand,
        cause: &RecordedEvent,
    ) -> Result<(), HandlerError> {
        self.run::<Order>(
            &order_id.to_string(),
            command,
            &EventMetadata::caused_by(cause, SOURCE),
            false,
        )
        .await
    }

    /// Submits the approved order inside the trading gate, unless the risk book is halted. Returns whether
    /// it was submitted.
    async fn submit(&self, env: &Envelope, approved: &TradeApproved) -> Result<bool, HandlerError> {
        let gate = self.store.close_gate().await.map_err(transient)?;
        let done = async {
            let book: RiskBook = self.load(crate::risk::RISK_BOOK, true).await?;
            if let Some(halt) = book.halt() {
                tracing::info!(order = %approved.order_id, reason = %halt.reason, "approved before a halt: not submitted");
                return Ok(false);
            }
            let submit = OrderCommand::Submit {
                venue: VENUE.into(),
                submitted_at: approved.decided_at,
            };
            self.run::<Order>(
                &approved.order_id.to_string(),
                submit,
                &env.caused(SOURCE),
                false,
            )
            .await?;
            Ok(true)
        }
        .await;
        if let Err(e) = gate.open().await {
            tracing::warn!(cause = %e, "releasing the trading gate failed");
        }
        done
    }

    /// Drives one approved order to its end. See the module documentation.
    ///
    /// # Errors
    /// [`HandlerError`]: transient for store failures, permanent for a refusal by an aggregate.
    pub async fn on_approved(
        &self,
        env: &Envelope,
        approved: TradeApproved,
    ) -> Result<(), HandlerError> {
        let order_id = approved.order_id;
        let id = order_id.to_string();
        let order: Order = self.load(&id, false).await?;
        match order.status() {
            OrderStatus::Approved => {
                if !self.submit(env, &approved).await? {
                    return Ok(());
                }
            }
            OrderStatus::Submitted if order.venue() == Some(VENUE) => {}
            OrderStatus::Submitted | OrderStatus::PartiallyFilled
                if order.venue() != Some(VENUE) =>
            {
                tracing::debug!(order = %order_id, venue = ?order.venue(), "another venue's order");
                return Ok(());
            }
            _ => return self.apply_fills(order_id).await,
        }
        let order: Order = self.load(&id, false).await?;
        let Some(proposal) = order.proposal() else {
            return Err(HandlerError::Permanent(format!(
                "order {order_id} approved but has no proposal"
            )));
        };
        let swap_order = SwapOrder {
            order_id,
            symbol: proposal.symbol.clone(),
            side: proposal.side,
            quantity: proposal.quantity,
        };
        let submitted = self
            .order_event(order_id, "OrderSubmitted", |_| true)
            .await?;
        let at = |venue: &JupiterVenue| {
            if venue.live() {
                venue.now()
            } else {
                approved.decided_at
            }
        };
        if let Some(sent) = order.sent() {
            // Sent before a restart (or by a process that crashed): never send again, look it up.
            let signature = sent.signature.clone();
            tracing::warn!(order = %order_id, %signature, "order was sent before; looking its transaction up instead of sending");
            let outcome = self.venue.recover(&swap_order, &signature).await;
            let cause = self.order_event(order_id, "OrderSent", |_| true).await?;
            self.record(&swap_order, outcome, &cause, at(&self.venue))
                .await?;
            return self.apply_fills(order_id).await;
        }
        let portfolio: Portfolio = self.load(PORTFOLIO, true).await?;
        let funds = Funds {
            cash: portfolio.cash(),
            held: portfolio
                .position(&swap_order.symbol)
                .map_or(Decimal::ZERO, |p| p.quantity),
        };
        match self.venue.prepare(&swap_order, funds).await {
            Prepared::Rejected(checks) => {
                tracing::info!(order = %order_id, checks = checks.len(), "quote rejected by the pre-sign gate");
                let reject = OrderCommand::RejectQuote {
                    venue: VENUE.into(),
                    checks,
                    rejected_at: at(&self.venue),
                };
                self.order_command(order_id, reject, &submitted).await?;
            }
            Prepared::Failed(reason) => {
                tracing::warn!(order = %order_id, %reason, "not sent");
                let fail = OrderCommand::Fail {
                    reason,
                    failed_at: at(&self.venue),
                };
                self.order_command(order_id, fail, &submitted).await?;
            }
            Prepared::Simulated(fill) => {
                self.record(
                    &swap_order,
                    Outcome::Filled(fill),
                    &submitted,
                    approved.decided_at,
                )
                .await?;
            }
            Prepared::Ready(ready) => {
                let record = OrderCommand::RecordSent {
                    signature: ready.signature.clone(),
                    last_valid_block_height: ready.last_valid_block_height,
                    sent_at: self.venue.now(),
                };
                // Recorded first: if this fails (another process recorded another signature), nothing is sent.
                self.order_command(order_id, record, &submitted).await?;
                let sent = self.order_event(order_id, "OrderSent", |_| true).await?;
                tracing::info!(order = %order_id, signature = %ready.signature, "sending");
                let outcome = self.venue.send_and_confirm(&swap_order, &ready).await;
                self.record(&swap_order, outcome, &sent, self.venue.now())
                    .await?;
            }
        }
        self.apply_fills(order_id).await
    }

    /// Records a venue outcome on the order.
    async fn record(
        &self,
        order: &SwapOrder,
        outcome: Outcome,
        cause: &RecordedEvent,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), HandlerError> {
        match outcome {
            Outcome::Failed(reason) => {
                tracing::warn!(order = %order.order_id, %reason, "order failed");
                let fail = OrderCommand::Fail {
                    reason,
                    failed_at: at,
                };
                self.order_command(order.order_id, fail, cause).await
            }
            Outcome::Filled(fill) => {
                let FillPlan {
                    fill_id,
                    quantity,
                    price,
                    fee,
                    swap,
                } = *fill;
                tracing::info!(order = %order.order_id, %fill_id, %quantity, %price, simulated = swap.simulated, "filled");
                let fill = OrderCommand::FillSwap {
                    fill_id: fill_id.clone(),
                    quantity,
                    price,
                    fee,
                    filled_at: at,
                    swap,
                };
                self.order_command(order.order_id, fill, cause).await?;
                if quantity < order.quantity {
                    let filled = self
                        .order_event(order.order_id, "OrderFilled", |e| {
                            e.payload.get("fill_id").and_then(|v| v.as_str()) == Some(&fill_id)
                        })
                        .await?;
                    let rest = OrderCommand::Fail {
                        reason: format!(
                            "filled {quantity} of {}: the rest is below one smallest unit of the token",
                            order.quantity
                        ),
                        failed_at: at,
                    };
                    self.order_command(order.order_id, rest, &filled).await?;
                }
                Ok(())
            }
        }
    }

    /// Applies every fill of the order to the portfolio (each once: the portfolio skips fills it has).
    async fn apply_fills(&self, order_id: OrderId) -> Result<(), HandlerError> {
        let events = self
            .store
            .events_of(Order::TYPE, &order_id.to_string())
            .await
            .map_err(transient)?;
        for event in events.iter().filter(|e| e.event_type == "OrderFilled") {
            let wrapped = serde_json::json!({ "OrderFilled": event.payload });
            let Ok(OrderEvent::OrderFilled(fill)) = serde_json::from_value::<OrderEvent>(wrapped)
            else {
                return Err(HandlerError::Permanent(format!(
                    "OrderFilled {} does not decode",
                    event.event_id
                )));
            };
            let apply = PortfolioCommand::ApplyFill {
                order_id,
                fill_id: fill.fill_id,
                symbol: fill.symbol,
                side: fill.side,
                quantity: fill.quantity,
                price: fill.price,
                fee: fill.fee,
                filled_at: fill.filled_at,
            };
            self.run::<Portfolio>(
                PORTFOLIO,
                apply,
                &EventMetadata::caused_by(event, "settlement"),
                true,
            )
            .await?;
        }
        Ok(())
    }
}

impl Handler for JupiterExecution {
    async fn handle(&self, envelope: &Envelope, event: AnyEvent) -> Result<(), HandlerError> {
        match event {
            AnyEvent::Trade(OrderEvent::TradeApproved(approved)) => {
                self.on_approved(envelope, approved).await
            }
            _ => Ok(()),
        }
    }
}
