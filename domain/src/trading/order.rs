//! The `Order` aggregate: one per order, `Proposed → Approved | Rejected`, then
//! `Approved → Submitted → PartiallyFilled* → Filled | Failed`. See `docs/adr/0002-trading-domain.md`.
//!
//! A command that repeats what is recorded emits nothing; a command that contradicts it is refused with an
//! error naming what is recorded and what was offered. No rule reads the clock: every time comes in a command.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::swap::{describe, GateFailure, OrderSent, QuoteRejected, SwapFill};
use super::values::{
    mul, non_negative, positive, AmountError, OrderId, PricePoint, Rationale, RiskViolation, Side,
};
use crate::event::JarvisAggregate;
use crate::values::Symbol;

/// A strategy's proposal: what to trade, the price it relied on, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TradeProposal {
    /// The order (and aggregate) id, derived from the proposal's cause.
    pub order_id: OrderId,
    /// The pair.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// How much, in base units; greater than zero.
    pub quantity: Decimal,
    /// The price the proposal relies on; greater than zero.
    pub reference: PricePoint,
    /// When it was proposed (event time).
    pub proposed_at: DateTime<Utc>,
    /// Why.
    pub rationale: Rationale,
}

/// One fill of an order, as recorded (keyed by the venue's `fill_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Fill {
    /// Base units filled.
    pub quantity: Decimal,
    /// Price, in the quote asset.
    pub price: Decimal,
    /// Fee, in the quote asset.
    pub fee: Decimal,
    /// When the venue filled it.
    pub filled_at: DateTime<Utc>,
}

/// Commands an order accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum OrderCommand {
    /// Propose the trade (the first command of every order).
    Propose(TradeProposal),
    /// The risk check admitted it.
    Approve {
        /// When the verdict was reached.
        decided_at: DateTime<Utc>,
    },
    /// The risk check refused it, for at least one reason.
    Reject {
        /// Every broken rule.
        reasons: Vec<RiskViolation>,
        /// When the verdict was reached.
        decided_at: DateTime<Utc>,
    },
    /// Sent to a venue.
    Submit {
        /// The venue, e.g. `paper`.
        venue: String,
        /// When it was sent.
        submitted_at: DateTime<Utc>,
    },
    /// The venue filled part or all of it.
    Fill {
        /// The venue's id of this fill.
        fill_id: String,
        /// Base units filled; greater than zero.
        quantity: Decimal,
        /// Price; greater than zero.
        price: Decimal,
        /// Fee; zero or more.
        fee: Decimal,
        /// When the venue filled it.
        filled_at: DateTime<Utc>,
    },
    /// The venue gave up on it (fills so far stay recorded).
    Fail {
        /// Why.
        reason: String,
        /// When.
        failed_at: DateTime<Utc>,
    },
    /// The venue's quote broke the pre-sign gate: nothing is sent and the order ends as failed.
    RejectQuote {
        /// The venue that quoted.
        venue: String,
        /// Every broken check (at least one).
        checks: Vec<GateFailure>,
        /// When the gate decided.
        rejected_at: DateTime<Utc>,
    },
    /// Record the signature of the transaction about to be sent (at most one per order).
    RecordSent {
        /// The transaction's signature.
        signature: String,
        /// The last block height at which it can land.
        last_valid_block_height: u64,
        /// When.
        sent_at: DateTime<Utc>,
    },
    /// An on-chain venue filled it: like `Fill`, with the swap's receipt.
    FillSwap {
        /// The venue's id of this fill (the signature, or `simulated-<order>`).
        fill_id: String,
        /// Base units filled; greater than zero.
        quantity: Decimal,
        /// Price; greater than zero.
        price: Decimal,
        /// Fee, in the quote asset; zero or more.
        fee: Decimal,
        /// When.
        filled_at: DateTime<Utc>,
        /// The swap's receipt.
        swap: SwapFill,
    },
}

impl OrderCommand {
    fn action(&self) -> &'static str {
        match self {
            Self::Propose(_) => "propose",
            Self::Approve { .. } => "approve",
            Self::Reject { .. } => "reject",
            Self::Submit { .. } => "submit",
            Self::Fill { .. } => "fill",
            Self::Fail { .. } => "fail",
            Self::RejectQuote { .. } => "reject quote",
            Self::RecordSent { .. } => "record sent",
            Self::FillSwap { .. } => "fill",
        }
    }
}

/// Payload of `TradeApproved`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TradeApproved {
    /// The order.
    pub order_id: OrderId,
    /// The pair.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Base units approved (the proposed quantity).
    pub quantity: Decimal,
    /// When the verdict was reached.
    pub decided_at: DateTime<Utc>,
}

/// Payload of `TradeRejected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TradeRejected {
    /// The order.
    pub order_id: OrderId,
    /// The pair.
    pub symbol: Symbol,
    /// Every broken rule (at least one).
    pub reasons: Vec<RiskViolation>,
    /// When the verdict was reached.
    pub decided_at: DateTime<Utc>,
}

/// Payload of `OrderSubmitted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderSubmitted {
    /// The order.
    pub order_id: OrderId,
    /// The venue.
    pub venue: String,
    /// When it was sent.
    pub submitted_at: DateTime<Utc>,
}

/// Payload of `OrderFilled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderFilled {
    /// The order.
    pub order_id: OrderId,
    /// The venue's id of this fill.
    pub fill_id: String,
    /// The pair.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Base units of this fill.
    pub quantity: Decimal,
    /// Price of this fill.
    pub price: Decimal,
    /// Fee of this fill, in the quote asset.
    pub fee: Decimal,
    /// When the venue filled it.
    pub filled_at: DateTime<Utc>,
    /// Base units filled so far, this fill included.
    pub filled_total: Decimal,
    /// Whether `filled_total` equals the proposed quantity.
    pub complete: bool,
    /// The on-chain receipt, when an on-chain venue filled it (absent for the paper venue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<SwapFill>,
}

/// Payload of `OrderFailed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderFailed {
    /// The order.
    pub order_id: OrderId,
    /// Why.
    pub reason: String,
    /// Base units filled before it failed (they stay filled).
    pub filled_total: Decimal,
    /// When.
    pub failed_at: DateTime<Utc>,
}

/// Events of an order. Each variant's payload is its own type, whose JSON is the payload on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum OrderEvent {
    /// A trade was proposed.
    TradeProposed(TradeProposal),
    /// The risk check admitted it.
    TradeApproved(TradeApproved),
    /// The risk check refused it.
    TradeRejected(TradeRejected),
    /// It was sent to a venue.
    OrderSubmitted(OrderSubmitted),
    /// The venue filled part or all of it.
    OrderFilled(OrderFilled),
    /// The venue gave up on it.
    OrderFailed(OrderFailed),
    /// The venue's quote broke the pre-sign gate (the order ends as failed).
    QuoteRejected(QuoteRejected),
    /// The signed transaction's signature, recorded before sending.
    OrderSent(OrderSent),
}

impl OrderEvent {
    /// Every event type of this enum with its current version.
    pub const TYPES: &'static [(&'static str, u32)] = &[
        ("TradeProposed", 1),
        ("TradeApproved", 1),
        ("TradeRejected", 1),
        ("OrderSubmitted", 1),
        ("OrderFilled", 1),
        ("OrderFailed", 1),
        ("QuoteRejected", 1),
        ("OrderSent", 1),
    ];
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::TradeProposed(_) => "TradeProposed",
            Self::TradeApproved(_) => "TradeApproved",
            Self::TradeRejected(_) => "TradeRejected",
            Self::OrderSubmitted(_) => "OrderSubmitted",
            Self::OrderFilled(_) => "OrderFilled",
            Self::OrderFailed(_) => "OrderFailed",
            Self::QuoteRejected(_) => "QuoteRejected",
            Self::OrderSent(_) => "OrderSent",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Where an order is in its life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Nothing recorded yet.
    #[default]
    New,
    /// Proposed, awaiting the risk verdict.
    Proposed,
    /// Admitted by the risk check.
    Approved,
    /// Refused by the risk check (final).
    Rejected,
    /// Sent to a venue.
    Submitted,
    /// Filled in part.
    PartiallyFilled,
    /// Filled completely (final).
    Filled,
    /// Given up by the venue, fills so far kept (final).
    Failed,
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::New => "new",
            Self::Proposed => "proposed",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Submitted => "submitted",
            Self::PartiallyFilled => "partially_filled",
            Self::Filled => "filled",
            Self::Failed => "failed",
        })
    }
}

/// Why an order refused a command. Nothing is recorded when a command is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrderError {
    /// A command other than `Propose` on an order with no proposal.
    #[error("unknown order: cannot {action}: no proposal recorded")]
    UnknownOrder {
        /// The refused command, e.g. `approve`.
        action: &'static str,
    },
    /// The command does not fit the order's status (e.g. submit before approval, approve after rejection).
    #[error("order {order_id}: cannot {action}: status is {status} (needs {needs})")]
    WrongStatus {
        /// The order.
        order_id: OrderId,
        /// The refused command.
        action: &'static str,
        /// The recorded status.
        status: OrderStatus,
        /// The status(es) the command needs.
        needs: &'static str,
    },
    /// An invalid amount (zero, negative, an overflow), naming the field and the value.
    #[error(transparent)]
    Amount(#[from] AmountError),
    /// A different proposal for an order already proposed.
    #[error("order {order_id}: already proposed differently: {differences}")]
    ConflictingProposal {
        /// The order.
        order_id: OrderId,
        /// Each differing field, recorded and offered.
        differences: String,
    },
    /// A rejection without any reason.
    #[error("order {order_id}: cannot reject without a reason")]
    NoReasons {
        /// The order.
        order_id: OrderId,
    },
    /// A rejection with other reasons than the recorded one.
    #[error("order {order_id}: already rejected for [{recorded}], offered [{offered}]")]
    ConflictingRejection {
        /// The order.
        order_id: OrderId,
        /// The recorded rules.
        recorded: String,
        /// The offered rules.
        offered: String,
    },
    /// A submission to another venue than the recorded one.
    #[error(
        "order {order_id}: already submitted to venue {recorded:?}, offered venue {offered:?}"
    )]
    ConflictingVenue {
        /// The order.
        order_id: OrderId,
        /// The recorded venue.
        recorded: String,
        /// The offered venue.
        offered: String,
    },
    /// A fill id already recorded with other numbers.
    #[error(
        "fill {fill_id} of order {order_id}: already recorded with quantity {} at {} (fee {}), offered quantity {} at {} (fee {})",
        recorded.quantity, recorded.price, recorded.fee, offered.quantity, offered.price, offered.fee
    )]
    ConflictingFill {
        /// The order.
        order_id: OrderId,
        /// The venue's fill id.
        fill_id: String,
        /// What is recorded.
        recorded: Box<Fill>,
        /// What was offered.
        offered: Box<Fill>,
    },
    /// A fill that would fill more than the proposed quantity.
    #[error("fill {fill_id} of order {order_id}: quantity {quantity} would fill {filled_total} of {ordered}")]
    Overfill {
        /// The order.
        order_id: OrderId,
        /// The venue's fill id.
        fill_id: String,
        /// The offered quantity.
        quantity: Decimal,
        /// The total it would reach.
        filled_total: Decimal,
        /// The proposed quantity.
        ordered: Decimal,
    },
    /// A gate rejection without any broken check.
    #[error("order {order_id}: cannot reject a quote without a broken check")]
    NoChecks {
        /// The order.
        order_id: OrderId,
    },
    /// A second, different transaction for an order that already has one.
    #[error("order {order_id}: already sent as transaction {recorded}, offered {offered}: an order is sent at most once")]
    AlreadySent {
        /// The order.
        order_id: OrderId,
        /// The recorded signature.
        recorded: String,
        /// The offered signature.
        offered: String,
    },
    /// A quote rejection for an order whose transaction was already sent.
    #[error("order {order_id}: cannot reject the quote: transaction {signature} was already sent")]
    SentBeforeRejection {
        /// The order.
        order_id: OrderId,
        /// The recorded signature.
        signature: String,
    },
    /// A failure with another reason than the recorded one.
    #[error("order {order_id}: already failed with reason {recorded:?}, offered {offered:?}")]
    ConflictingFailure {
        /// The order.
        order_id: OrderId,
        /// The recorded reason.
        recorded: String,
        /// The offered reason.
        offered: String,
    },
}

/// The state of one order.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    status: OrderStatus,
    proposal: Option<TradeProposal>,
    reasons: Vec<RiskViolation>,
    venue: Option<String>,
    fills: BTreeMap<String, Fill>,
    filled_quantity: Decimal,
    notional: Decimal,
    fees: Decimal,
    failure: Option<String>,
    #[serde(default)]
    sent: Option<OrderSent>,
}

fn add(field: &'static str, a: Decimal, b: Decimal) -> Result<Decimal, AmountError> {
    a.checked_add(b).ok_or_else(|| AmountError {
        field,
        value: format!("{a} + {b}"),
        reason: "overflows",
    })
}

fn rules(reasons: &[RiskViolation]) -> String {
    let names: Vec<String> = reasons
        .iter()
        .map(|r| format!("{:?}: {}", r.rule, r.detail))
        .collect();
    names.join("; ")
}

fn differences(recorded: &TradeProposal, offered: &TradeProposal) -> String {
    let (r, o) = (recorded, offered);
    let mut out = Vec::new();
    let mut diff = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name} recorded {a}, offered {b}"));
        }
    };
    diff("order_id", r.order_id.to_string(), o.order_id.to_string());
    diff("symbol", r.symbol.to_string(), o.symbol.to_string());
    diff("side", r.side.to_string(), o.side.to_string());
    diff("quantity", r.quantity.to_string(), o.quantity.to_string());
    let point = |p: &PricePoint| format!("{} {} at {}", p.symbol, p.price, p.at);
    diff("reference", point(&r.reference), point(&o.reference));
    diff(
        "proposed_at",
        r.proposed_at.to_string(),
        o.proposed_at.to_string(),
    );
    if out.is_empty() && r.rationale != o.rationale {
        out.push(format!(
            "rationale recorded {}/{}, offered {}/{}",
            r.rationale.strategy, r.rationale.rule, o.rationale.strategy, o.rationale.rule
        ));
    }
    out.join("; ")
}

impl Order {
    /// Where the order is in its life.
    pub fn status(&self) -> OrderStatus {
        self.status
    }

    /// The recorded proposal, if any.
    pub fn proposal(&self) -> Option<&TradeProposal> {
        self.proposal.as_ref()
    }

    /// Base units filled so far.
    pub fn filled_quantity(&self) -> Decimal {
        self.filled_quantity
    }

    /// The recorded fills, by the venue's `fill_id`.
    pub fn fills(&self) -> &BTreeMap<String, Fill> {
        &self.fills
    }

    /// The quantity-weighted average price of the fills; `None` before the first fill.
    pub fn average_fill_price(&self) -> Option<Decimal> {
        if self.filled_quantity.is_zero() {
            return None;
        }
        self.notional.checked_div(self.filled_quantity)
    }

    /// Fees paid on the fills so far, in the quote asset.
    pub fn fees(&self) -> Decimal {
        self.fees
    }

    /// The venue it was submitted to, once submitted.
    pub fn venue(&self) -> Option<&str> {
        self.venue.as_deref()
    }

    /// The transaction recorded as sent, if any (on-chain venues).
    pub fn sent(&self) -> Option<&OrderSent> {
        self.sent.as_ref()
    }

    /// Why it failed, once failed.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Decides what `command` records. Pure: returns the events (none for a repeat), or the refusal.
    ///
    /// # Errors
    /// [`OrderError`] for an unknown order, a wrong status, an invalid amount or a contradiction.
    pub fn decide(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        let Some(p) = &self.proposal else {
            return match command {
                OrderCommand::Propose(p) => {
                    positive("quantity", p.quantity)?;
                    positive("reference.price", p.reference.price)?;
                    Ok(vec![OrderEvent::TradeProposed(p)])
                }
                other => Err(OrderError::UnknownOrder {
                    action: other.action(),
                }),
            };
        };
        let order_id = p.order_id;
        let status = self.status;
        let wrong = |action, needs| {
            Err(OrderError::WrongStatus {
                order_id,
                action,
                status,
                needs,
            })
        };
        use OrderStatus::*;
        match command {
            OrderCommand::Propose(offered) if offered == *p => Ok(vec![]),
            OrderCommand::Propose(offered) => Err(OrderError::ConflictingProposal {
                order_id,
                differences: differences(p, &offered),
            }),
            OrderCommand::Approve { decided_at } => match status {
                Proposed => Ok(vec![OrderEvent::TradeApproved(TradeApproved {
                    order_id,
                    symbol: p.symbol.clone(),
                    side: p.side,
                    quantity: p.quantity,
                    decided_at,
                })]),
                New | Rejected => wrong("approve", "proposed"),
                Approved | Submitted | PartiallyFilled | Filled | Failed => Ok(vec![]),
            },
            OrderCommand::Reject { reasons, .. } if reasons.is_empty() => {
                Err(OrderError::NoReasons { order_id })
            }
            OrderCommand::Reject {
                reasons,
                decided_at,
            } => match status {
                Proposed => Ok(vec![OrderEvent::TradeRejected(TradeRejected {
                    order_id,
                    symbol: p.symbol.clone(),
                    reasons,
                    decided_at,
                })]),
                Rejected if reasons == self.reasons => Ok(vec![]),
                Rejected => Err(OrderError::ConflictingRejection {
                    order_id,
                    recorded: rules(&self.reasons),
                    offered: rules(&reasons),
                }),
                _ => wrong("reject", "proposed"),
            },
            OrderCommand::Submit {
                venue,
                submitted_at,
            } => match (status, &self.venue) {
                (Approved, _) => Ok(vec![OrderEvent::OrderSubmitted(OrderSubmitted {
                    order_id,
                    venue,
                    submitted_at,
                })]),
                (_, Some(recorded)) if *recorded == venue => Ok(vec![]),
                (_, Some(recorded)) => Err(OrderError::ConflictingVenue {
                    order_id,
                    recorded: recorded.clone(),
                    offered: venue,
                }),
                _ => wrong("submit", "approved"),
            },
            OrderCommand::Fill {
                fill_id,
                quantity,
                price,
                fee,
                filled_at,
            } => self.decide_fill(fill_id, quantity, price, fee, filled_at, None),
            OrderCommand::FillSwap {
                fill_id,
                quantity,
                price,
                fee,
                filled_at,
                swap,
            } => self.decide_fill(fill_id, quantity, price, fee, filled_at, Some(swap)),
            OrderCommand::RejectQuote { checks, .. } if checks.is_empty() => {
                Err(OrderError::NoChecks { order_id })
            }
            OrderCommand::RejectQuote {
                venue,
                checks,
                rejected_at,
            } => match (status, &self.sent, &self.failure) {
                (Submitted, Some(sent), _) => Err(OrderError::SentBeforeRejection {
                    order_id,
                    signature: sent.signature.clone(),
                }),
                (Submitted, None, _) => Ok(vec![OrderEvent::QuoteRejected(QuoteRejected {
                    order_id,
                    venue,
                    checks,
                    rejected_at,
                })]),
                (Failed, _, Some(recorded)) if *recorded == describe(&checks) => Ok(vec![]),
                (Failed, _, Some(recorded)) => Err(OrderError::ConflictingFailure {
                    order_id,
                    recorded: recorded.clone(),
                    offered: describe(&checks),
                }),
                _ => wrong("reject quote", "submitted"),
            },
            OrderCommand::RecordSent {
                signature,
                last_valid_block_height,
                sent_at,
            } => match (status, &self.sent) {
                (_, Some(sent)) if sent.signature == signature => Ok(vec![]),
                (_, Some(sent)) => Err(OrderError::AlreadySent {
                    order_id,
                    recorded: sent.signature.clone(),
                    offered: signature,
                }),
                (Submitted, None) => Ok(vec![OrderEvent::OrderSent(OrderSent {
                    order_id,
                    signature,
                    last_valid_block_height,
                    sent_at,
                })]),
                _ => wrong("record sent", "submitted"),
            },
            OrderCommand::Fail { reason, failed_at } => match (status, &self.failure) {
                (Submitted | PartiallyFilled, _) => {
                    Ok(vec![OrderEvent::OrderFailed(OrderFailed {
                        order_id,
                        reason,
                        filled_total: self.filled_quantity,
                        failed_at,
                    })])
                }
                (Failed, Some(recorded)) if *recorded == reason => Ok(vec![]),
                (Failed, Some(recorded)) => Err(OrderError::ConflictingFailure {
                    order_id,
                    recorded: recorded.clone(),
                    offered: reason,
                }),
                _ => wrong("fail", "submitted or partially_filled"),
            },
        }
    }

    fn decide_fill(
        &self,
        fill_id: String,
        quantity: Decimal,
        price: Decimal,
        fee: Decimal,
        filled_at: DateTime<Utc>,
        swap: Option<SwapFill>,
    ) -> Result<Vec<OrderEvent>, OrderError> {
        let Some(p) = &self.proposal else {
            return Err(OrderError::UnknownOrder { action: "fill" });
        };
        let order_id = p.order_id;
        let status = self.status;
        use OrderStatus::*;
        let offered = Fill {
            quantity,
            price,
            fee,
            filled_at,
        };
        if let Some(recorded) = self.fills.get(&fill_id) {
            let same =
                recorded.quantity == quantity && recorded.price == price && recorded.fee == fee;
            return if same {
                Ok(vec![])
            } else {
                Err(OrderError::ConflictingFill {
                    order_id,
                    fill_id,
                    recorded: Box::new(recorded.clone()),
                    offered: Box::new(offered),
                })
            };
        }
        if !matches!(status, Submitted | PartiallyFilled) {
            return Err(OrderError::WrongStatus {
                order_id,
                action: "fill",
                status,
                needs: "submitted or partially_filled",
            });
        }
        positive("quantity", quantity)?;
        positive("price", price)?;
        non_negative("fee", fee)?;
        let filled_total = add("filled_total", self.filled_quantity, quantity)?;
        if filled_total > p.quantity {
            return Err(OrderError::Overfill {
                order_id,
                fill_id,
                quantity,
                filled_total,
                ordered: p.quantity,
            });
        }
        add("fees", self.fees, fee)?;
        add("notional", self.notional, mul("notional", quantity, price)?)?;
        Ok(vec![OrderEvent::OrderFilled(OrderFilled {
            order_id,
            fill_id,
            symbol: p.symbol.clone(),
            side: p.side,
            quantity,
            price,
            fee,
            filled_at,
            filled_total,
            complete: filled_total == p.quantity,
            swap,
        })])
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
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
        match event {
            OrderEvent::TradeProposed(p) => {
                self.proposal = Some(p);
                self.status = OrderStatus::Proposed;
            }
            OrderEvent::TradeApproved(_) => self.status = OrderStatus::Approved,
            OrderEvent::TradeRejected(e) => {
                self.reasons = e.reasons;
                self.status = OrderStatus::Rejected;
            }
            OrderEvent::OrderSubmitted(e) => {
                self.venue = Some(e.venue);
                self.status = OrderStatus::Submitted;
            }
            OrderEvent::OrderFilled(e) => {
                // `decide` refused any overflow, so saturation never happens on events it produced.
                self.notional = self
                    .notional
                    .saturating_add(e.quantity.saturating_mul(e.price));
                self.fees = self.fees.saturating_add(e.fee);
                self.filled_quantity = e.filled_total;
                self.status = if e.complete {
                    OrderStatus::Filled
                } else {
                    OrderStatus::PartiallyFilled
                };
                let fill = Fill {
                    quantity: e.quantity,
                    price: e.price,
                    fee: e.fee,
                    filled_at: e.filled_at,
                };
                self.fills.insert(e.fill_id, fill);
            }
            OrderEvent::OrderFailed(e) => {
                self.failure = Some(e.reason);
                self.status = OrderStatus::Failed;
            }
            OrderEvent::QuoteRejected(e) => {
                self.failure = Some(describe(&e.checks));
                self.status = OrderStatus::Failed;
            }
            OrderEvent::OrderSent(e) => self.sent = Some(e),
        }
    }
}

impl JarvisAggregate for Order {
    const CONTEXT: &'static str = "trade";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTypes as _;
    use crate::trading::values::RiskRule;
    use cqrs_es::test::TestFramework;
    use OrderCommand as C;
    use OrderEvent as E;

    type Given = TestFramework<Order>;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str_exact(text).unwrap()
    }

    fn at(minute: u32) -> DateTime<Utc> {
        format!("2021-12-06T10:{minute:02}:00Z").parse().unwrap()
    }

    fn id() -> OrderId {
        OrderId::derived("candle-1/BTC/USDT")
    }

    fn btc() -> Symbol {
        Symbol::new_checked("BTC/USDT").unwrap()
    }

    fn proposal(quantity: &str) -> TradeProposal {
        let reference = PricePoint {
            symbol: btc(),
            price: dec("100"),
            at: at(0),
        };
        let rationale = Rationale {
            strategy: "rebalance".into(),
            rule: "drift_above_band".into(),
            inputs: serde_json::json!({"drift": "0.07"}).into(),
            evidence: vec![],
            summary: "BTC is 7% under its target weight".into(),
        };
        TradeProposal {
            order_id: id(),
            symbol: btc(),
            side: Side::Buy,
            quantity: dec(quantity),
            reference,
            proposed_at: at(1),
            rationale,
        }
    }

    fn violations() -> Vec<RiskViolation> {
        vec![RiskViolation {
            rule: RiskRule::MaxNotionalPerOrder,
            limit: Some(dec("100")),
            actual: Some(dec("400")),
            detail: "notional 400 above 100".into(),
        }]
    }

    fn approve() -> OrderCommand {
        C::Approve { decided_at: at(2) }
    }

    fn reject(reasons: Vec<RiskViolation>) -> OrderCommand {
        C::Reject {
            reasons,
            decided_at: at(2),
        }
    }

    fn submit(venue: &str) -> OrderCommand {
        C::Submit {
            venue: venue.into(),
            submitted_at: at(3),
        }
    }

    fn fill(fill_id: &str, quantity: &str, price: &str, fee: &str) -> OrderCommand {
        C::Fill {
            fill_id: fill_id.into(),
            quantity: dec(quantity),
            price: dec(price),
            fee: dec(fee),
            filled_at: at(4),
        }
    }

    fn fail(reason: &str) -> OrderCommand {
        C::Fail {
            reason: reason.into(),
            failed_at: at(5),
        }
    }

    fn proposed() -> OrderEvent {
        E::TradeProposed(proposal("4"))
    }

    fn approved() -> OrderEvent {
        E::TradeApproved(TradeApproved {
            order_id: id(),
            symbol: btc(),
            side: Side::Buy,
            quantity: dec("4"),
            decided_at: at(2),
        })
    }

    fn rejected() -> OrderEvent {
        E::TradeRejected(TradeRejected {
            order_id: id(),
            symbol: btc(),
            reasons: violations(),
            decided_at: at(2),
        })
    }

    fn submitted() -> Vec<OrderEvent> {
        vec![
            proposed(),
            approved(),
            E::OrderSubmitted(OrderSubmitted {
                order_id: id(),
                venue: "paper".into(),
                submitted_at: at(3),
            }),
        ]
    }

    fn filled(fill_id: &str, quantity: &str, price: &str, total: &str) -> OrderEvent {
        E::OrderFilled(OrderFilled {
            order_id: id(),
            fill_id: fill_id.into(),
            symbol: btc(),
            side: Side::Buy,
            quantity: dec(quantity),
            price: dec(price),
            fee: dec("0.1"),
            filled_at: at(4),
            filled_total: dec(total),
            complete: dec(total) == dec("4"),
            swap: None,
        })
    }

    fn partially_filled() -> Vec<OrderEvent> {
        let mut events = submitted();
        events.push(filled("f-1", "1", "100", "1"));
        events
    }

    fn failed(reason: &str) -> OrderEvent {
        E::OrderFailed(OrderFailed {
            order_id: id(),
            reason: reason.into(),
            filled_total: dec("1"),
            failed_at: at(5),
        })
    }

    fn expect(given: Vec<OrderEvent>, command: OrderCommand, events: Vec<OrderEvent>) {
        Given::with(())
            .given(given)
            .when(command)
            .then_expect_events(events);
    }

    fn error(given: Vec<OrderEvent>, command: OrderCommand) -> String {
        let result = Given::with(()).given(given).when(command).inspect_result();
        result.unwrap_err().to_string()
    }

    fn order(events: Vec<OrderEvent>) -> Order {
        let mut order = Order::default();
        events.into_iter().for_each(|e| order.apply(e));
        order
    }

    #[test]
    fn happy_path_proposes_approves_submits_and_fills() {
        expect(vec![], C::Propose(proposal("4")), vec![proposed()]);
        expect(vec![proposed()], approve(), vec![approved()]);
        let history = submitted();
        expect(
            history[..2].to_vec(),
            submit("paper"),
            history[2..].to_vec(),
        );
        expect(
            submitted(),
            fill("f-1", "1", "100", "0.1"),
            partially_filled()[3..].to_vec(),
        );
        let last = filled("f-2", "3", "104", "4");
        assert!(matches!(&last, E::OrderFilled(e) if e.complete));
        expect(
            partially_filled(),
            fill("f-2", "3", "104", "0.1"),
            vec![last.clone()],
        );
        let mut history = partially_filled();
        history.push(last);
        let order = order(history);
        assert_eq!(order.status(), OrderStatus::Filled);
        assert_eq!(order.filled_quantity(), dec("4"));
        assert_eq!(order.fills().len(), 2);
        assert_eq!(order.average_fill_price(), Some(dec("103")));
        assert_eq!(order.fees(), dec("0.2"));
        assert_eq!(order.proposal(), Some(&proposal("4")));
    }

    #[test]
    fn reject_path_records_the_reasons() {
        expect(vec![proposed()], reject(violations()), vec![rejected()]);
        let order = order(vec![proposed(), rejected()]);
        assert_eq!(order.status(), OrderStatus::Rejected);
        assert_eq!(order.average_fill_price(), None);
    }

    #[test]
    fn commands_on_an_unknown_order_are_refused() {
        Given::with(())
            .given_no_previous_events()
            .when(approve())
            .then_expect_error_message("unknown order: cannot approve: no proposal recorded");
        let err = error(vec![], fill("f-1", "1", "100", "0"));
        assert_eq!(err, "unknown order: cannot fill: no proposal recorded");
    }

    #[test]
    fn submit_before_approval_is_refused() {
        let err = error(vec![proposed()], submit("paper"));
        assert_eq!(
            err,
            format!(
                "order {}: cannot submit: status is proposed (needs approved)",
                id()
            )
        );
    }

    #[test]
    fn approve_after_reject_is_refused_and_reject_after_approve_too() {
        let err = error(vec![proposed(), rejected()], approve());
        assert!(
            err.ends_with("cannot approve: status is rejected (needs proposed)"),
            "{err}"
        );
        let err = error(vec![proposed(), approved()], reject(violations()));
        assert!(
            err.ends_with("cannot reject: status is approved (needs proposed)"),
            "{err}"
        );
    }

    #[test]
    fn repeated_verdicts_and_submissions_are_no_ops_other_venue_is_refused() {
        expect(submitted(), approve(), vec![]);
        expect(submitted(), submit("paper"), vec![]);
        expect(vec![proposed(), rejected()], reject(violations()), vec![]);
        let mut halted = violations();
        halted[0].rule = RiskRule::Halted;
        let err = error(vec![proposed(), rejected()], reject(halted));
        let want = "already rejected for [MaxNotionalPerOrder: notional 400 above 100], \
                    offered [Halted: notional 400 above 100]";
        assert!(err.ends_with(want), "{err}");
        let err = error(submitted(), submit("binance"));
        assert!(err.ends_with(r#"already submitted to venue "paper", offered venue "binance""#));
    }

    #[test]
    fn reject_without_reasons_is_refused() {
        let err = error(vec![proposed()], reject(vec![]));
        assert_eq!(
            err,
            format!("order {}: cannot reject without a reason", id())
        );
    }

    #[test]
    fn overfill_is_refused() {
        let err = error(partially_filled(), fill("f-2", "4", "100", "0"));
        assert_eq!(
            err,
            format!("fill f-2 of order {}: quantity 4 would fill 5 of 4", id())
        );
    }

    #[test]
    fn zero_or_negative_amounts_are_refused() {
        let err = error(vec![], C::Propose(proposal("0")));
        assert_eq!(err, "quantity = 0: must be greater than zero");
        let mut bad = proposal("1");
        bad.reference.price = dec("-1");
        let err = error(vec![], C::Propose(bad));
        assert_eq!(err, "reference.price = -1: must be greater than zero");
        let err = error(submitted(), fill("f-1", "-1", "100", "0"));
        assert_eq!(err, "quantity = -1: must be greater than zero");
        let err = error(submitted(), fill("f-1", "1", "0", "0"));
        assert_eq!(err, "price = 0: must be greater than zero");
    }

    #[test]
    fn negative_fee_is_refused() {
        let err = error(submitted(), fill("f-1", "1", "100", "-0.1"));
        assert_eq!(err, "fee = -0.1: must not be negative");
    }

    #[test]
    fn overflow_is_refused() {
        let mut history = submitted();
        history[0] = E::TradeProposed(TradeProposal {
            quantity: Decimal::MAX,
            ..proposal("1")
        });
        let err = error(history, fill("f-1", &Decimal::MAX.to_string(), "2", "0"));
        assert!(
            err.starts_with("notional = ") && err.ends_with(": overflows"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_fill_with_identical_numbers_is_a_no_op() {
        expect(partially_filled(), fill("f-1", "1", "100.0", "0.1"), vec![]);
    }

    #[test]
    fn duplicate_fill_with_other_numbers_names_both() {
        let err = error(partially_filled(), fill("f-1", "2", "100", "0.1"));
        let recorded = "already recorded with quantity 1 at 100 (fee 0.1)";
        let offered = "offered quantity 2 at 100 (fee 0.1)";
        assert_eq!(
            err,
            format!("fill f-1 of order {}: {recorded}, {offered}", id())
        );
    }

    #[test]
    fn fail_keeps_partial_fills_and_repeats_are_no_ops() {
        expect(
            partially_filled(),
            fail("venue down"),
            vec![failed("venue down")],
        );
        let mut after = partially_filled();
        after.push(failed("venue down"));
        expect(after.clone(), fail("venue down"), vec![]);
        let err = error(after.clone(), fail("timeout"));
        assert!(err.ends_with(r#"already failed with reason "venue down", offered "timeout""#));
        let order = order(after);
        assert_eq!(order.status(), OrderStatus::Failed);
        assert_eq!(order.filled_quantity(), dec("1"));
    }

    #[test]
    fn fail_after_filled_is_refused() {
        let mut history = submitted();
        history.push(filled("f-1", "4", "100", "4"));
        let err = error(history, fail("late"));
        assert!(
            err.ends_with("cannot fail: status is filled (needs submitted or partially_filled)")
        );
    }

    #[test]
    fn repeated_proposal_identical_is_a_no_op_different_is_refused() {
        expect(vec![proposed()], C::Propose(proposal("4")), vec![]);
        let err = error(vec![proposed()], C::Propose(proposal("5")));
        let want = "already proposed differently: quantity recorded 4, offered 5";
        assert_eq!(err, format!("order {}: {want}", id()));
    }

    fn gate_failures() -> Vec<GateFailure> {
        vec![GateFailure {
            check: super::super::swap::GateCheck::PriceImpact,
            limit: Some(dec("100")),
            actual: Some(dec("250")),
            detail: "price impact 250 bps above 100 bps".into(),
        }]
    }

    fn reject_quote(checks: Vec<GateFailure>) -> OrderCommand {
        C::RejectQuote {
            venue: "jupiter".into(),
            checks,
            rejected_at: at(3),
        }
    }

    fn quote_rejected() -> OrderEvent {
        E::QuoteRejected(QuoteRejected {
            order_id: id(),
            venue: "jupiter".into(),
            checks: gate_failures(),
            rejected_at: at(3),
        })
    }

    fn record_sent(signature: &str) -> OrderCommand {
        C::RecordSent {
            signature: signature.into(),
            last_valid_block_height: 1_000,
            sent_at: at(3),
        }
    }

    fn sent(signature: &str) -> OrderEvent {
        E::OrderSent(OrderSent {
            order_id: id(),
            signature: signature.into(),
            last_valid_block_height: 1_000,
            sent_at: at(3),
        })
    }

    fn swap_receipt() -> SwapFill {
        SwapFill {
            venue: "jupiter".into(),
            signature: Some("sig-1".into()),
            simulated: false,
            input_mint: "USDC".into(),
            output_mint: "SOL".into(),
            in_amount: dec("400000000"),
            out_amount: dec("4000000000"),
            fee_lamports: dec("5000"),
            slot: Some(7),
            amounts_from: "token_balances".into(),
        }
    }

    #[test]
    fn a_rejected_quote_fails_the_order_with_its_numbers_and_repeats_are_no_ops() {
        expect(
            submitted(),
            reject_quote(gate_failures()),
            vec![quote_rejected()],
        );
        let mut after = submitted();
        after.push(quote_rejected());
        expect(after.clone(), reject_quote(gate_failures()), vec![]);
        let order = order(after.clone());
        assert_eq!(order.status(), OrderStatus::Failed);
        assert_eq!(
            order.failure(),
            Some("quote rejected by the pre-sign gate: price impact 250 bps above 100 bps")
        );
        let err = error(after, fill("f-1", "1", "100", "0"));
        assert!(
            err.ends_with("cannot fill: status is failed (needs submitted or partially_filled)"),
            "{err}"
        );
        let err = error(submitted(), reject_quote(vec![]));
        assert!(
            err.ends_with("cannot reject a quote without a broken check"),
            "{err}"
        );
        let err = error(vec![proposed(), approved()], reject_quote(gate_failures()));
        assert!(
            err.ends_with("cannot reject quote: status is approved (needs submitted)"),
            "{err}"
        );
    }

    #[test]
    fn an_order_is_sent_at_most_once() {
        expect(submitted(), record_sent("sig-1"), vec![sent("sig-1")]);
        let mut after = submitted();
        after.push(sent("sig-1"));
        expect(after.clone(), record_sent("sig-1"), vec![]);
        let err = error(after.clone(), record_sent("sig-2"));
        assert!(
            err.ends_with(
                "already sent as transaction sig-1, offered sig-2: an order is sent at most once"
            ),
            "{err}"
        );
        let err = error(after.clone(), reject_quote(gate_failures()));
        assert!(
            err.ends_with("cannot reject the quote: transaction sig-1 was already sent"),
            "{err}"
        );
        assert_eq!(
            order(after).sent().map(|s| s.signature.as_str()),
            Some("sig-1")
        );
        let err = error(vec![proposed(), approved()], record_sent("sig-1"));
        assert!(
            err.ends_with("cannot record sent: status is approved (needs submitted)"),
            "{err}"
        );
    }

    #[test]
    fn a_swap_fill_carries_its_receipt() {
        let mut history = submitted();
        history.push(sent("sig-1"));
        let command = C::FillSwap {
            fill_id: "sig-1".into(),
            quantity: dec("4"),
            price: dec("100"),
            fee: dec("0.75"),
            filled_at: at(4),
            swap: swap_receipt(),
        };
        let filled = E::OrderFilled(OrderFilled {
            order_id: id(),
            fill_id: "sig-1".into(),
            symbol: btc(),
            side: Side::Buy,
            quantity: dec("4"),
            price: dec("100"),
            fee: dec("0.75"),
            filled_at: at(4),
            filled_total: dec("4"),
            complete: true,
            swap: Some(swap_receipt()),
        });
        expect(history.clone(), command.clone(), vec![filled.clone()]);
        history.push(filled.clone());
        expect(history.clone(), command, vec![]);
        let order = order(history);
        assert_eq!(order.status(), OrderStatus::Filled);
        assert_eq!(order.venue(), Some("paper"));
        // The paper venue's fills keep their JSON: no `swap` key.
        let json = serde_json::to_value(filled_event_without_swap()).unwrap();
        assert!(json["OrderFilled"].get("swap").is_none(), "{json}");
    }

    fn filled_event_without_swap() -> OrderEvent {
        filled("f-1", "1", "100", "1")
    }

    #[test]
    fn every_event_round_trips_through_json() {
        let mut events = partially_filled();
        events.extend([
            rejected(),
            failed("venue down"),
            quote_rejected(),
            sent("sig-1"),
        ]);
        assert_eq!(events.len(), OrderEvent::TYPES.len());
        for event in events {
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(serde_json::from_str::<OrderEvent>(&json).unwrap(), event);
            assert_eq!(OrderEvent::version_of(&event.event_type()), Some(1));
            assert_eq!(event.event_version(), "1");
        }
        assert_eq!(OrderEvent::version_of("Nope"), None);
    }
}
