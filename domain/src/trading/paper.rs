//! The `PaperVenue` aggregate (context `execution`, one instance with id [`PAPER_VENUE`], snapshotted): the
//! paper exchange the execution agent sends approved orders to. See `docs/adr/0002-trading-domain.md`.
//!
//! Paper results must be no rosier than live ones, so a paper order fills:
//!
//! - at the **next observed price** after it was submitted: the open of the first candle of its symbol that
//!   opens at or after `submitted_at`. A candle that opened before the order was submitted never fills it (no
//!   look-ahead);
//! - with **slippage against the trader**: `open × (1 + slippage_bps / 10,000)` for a buy,
//!   `open × (1 − slippage_bps / 10,000)` for a sell, then clamped into the candle's `[low, high]`;
//! - with a **fee** of `quantity × price × fee_bps / 10,000`, in the quote asset;
//! - for **at most a fraction of the candle's volume**: `max_volume_fraction × volume`, rounded down to 8
//!   decimal places, is the candle's budget, shared by the orders it fills in acceptance order. Whatever the
//!   budget leaves waits for the next candles (partial fills). A zero-volume candle fills nothing.
//!
//! Prices and fees are rounded to 8 decimal places with [`Decimal::round_dp`] (banker's rounding); the fee is
//! computed from the rounded price. Quantities are not rounded, except the volume budget (rounded down, and a
//! budget that rounds to zero fills nothing).
//!
//! Matching is idempotent: the venue remembers, per symbol, the open time of the last candle that filled
//! something ([`PaperVenue::last_matched`]); a candle that does not open after it fills nothing. Fill ids are
//! `"{order_id}-{n}"`, `n` counting the order's fills from 1, so a retried match never invents a new fill.
//!
//! The state stays bounded: an order leaves the open set when it is filled, and the venue keeps the fills of
//! the open orders and of the last [`FILL_MEMORY`] completed orders (the execution agent re-issues them after
//! a crash). An `Accept` of an order that is no longer remembered, submitted no later than the latest
//! forgotten order, is refused ([`PaperError::Forgotten`]): the venue can no longer tell a redelivery from a new
//! order, and filling it twice would be worse than refusing it.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::{Decimal, RoundingStrategy};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{mul, positive, AmountError, OrderId, Side};
use crate::event::JarvisAggregate;
use crate::values::{Candle, DomainError, Symbol};

/// The id of the one `PaperVenue` aggregate instance.
pub const PAPER_VENUE: &str = "paper";

/// How many completed orders the venue remembers (with their fills) after they are filled.
pub const FILL_MEMORY: usize = 64;

/// Decimal places of fill prices and fees, and of the volume budget (rounded down).
const DP: u32 = 8;

/// How the paper venue fills: fee, slippage, and the share of a candle's volume it may take. As
/// configuration (`[paper]` in `jarvis.toml`), a missing key takes its default and an unknown key is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PaperConfig {
    /// Fee per fill, in basis points of the notional (quantity × price), in [0, 10,000). Default 10 (0.1 %).
    pub fee_bps: Decimal,
    /// Slippage against the trader, in basis points of the candle's open, in [0, 10,000). Default 5.
    pub slippage_bps: Decimal,
    /// Largest share of a candle's volume the venue fills (all orders of that candle together), in (0, 1].
    /// Default 0.1.
    pub max_volume_fraction: Decimal,
}

impl Default for PaperConfig {
    /// A 10 bps fee, 5 bps slippage, and at most 10 % of a candle's volume.
    fn default() -> Self {
        Self {
            fee_bps: Decimal::from(10),
            slippage_bps: Decimal::from(5),
            max_volume_fraction: Decimal::new(1, 1),
        }
    }
}

impl PaperConfig {
    /// Refuses an impossible configuration: a fee or a slippage below 0 or at 10,000 bps or more, a volume
    /// fraction outside (0, 1].
    ///
    /// # Errors
    /// [`PaperError::InvalidConfig`] naming the field and the value.
    pub fn validate(&self) -> Result<(), PaperError> {
        let bad = |field, value: Decimal, reason| {
            Err(PaperError::InvalidConfig(AmountError {
                field,
                value: value.to_string(),
                reason,
            }))
        };
        for (field, bps) in [
            ("fee_bps", self.fee_bps),
            ("slippage_bps", self.slippage_bps),
        ] {
            if bps < Decimal::ZERO || bps >= bps_scale() {
                return bad(field, bps, "must be in [0, 10000) basis points");
            }
        }
        let f = self.max_volume_fraction;
        if f <= Decimal::ZERO || f > Decimal::ONE {
            return bad("max_volume_fraction", f, "must be a fraction in (0, 1]");
        }
        Ok(())
    }
}

/// Commands the paper venue accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum PaperCommand {
    /// Replace the configuration (validated; the same configuration again is a no-op).
    Configure {
        /// The new configuration.
        config: PaperConfig,
        /// When (event time).
        at: DateTime<Utc>,
    },
    /// Take an approved order (the same order again is a no-op; the same id with other terms is refused).
    Accept {
        /// The order.
        order_id: OrderId,
        /// The pair.
        symbol: Symbol,
        /// Buy or sell.
        side: Side,
        /// Base units; greater than zero.
        quantity: Decimal,
        /// When it was submitted (event time): only candles opening at or after it fill it.
        submitted_at: DateTime<Utc>,
    },
    /// Fill the open orders of the candle's symbol against it (a closed candle, validated).
    Match {
        /// The candle.
        candle: Candle,
    },
    /// Withdraw what is still open of an order (the trader failed it); a closed or unknown order: no-op.
    Cancel {
        /// The order.
        order_id: OrderId,
        /// Why, e.g. `insufficient cash at fill ...`.
        reason: String,
        /// When (event time).
        at: DateTime<Utc>,
    },
}

/// One fill of a paper order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaperFill {
    /// The order.
    pub order_id: OrderId,
    /// `"{order_id}-{n}"`, `n` the order's fill number from 1.
    pub fill_id: String,
    /// The pair.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Base units of this fill.
    pub quantity: Decimal,
    /// Price, in the quote asset: the candle's open with slippage, clamped into low..high, 8 decimal places.
    pub price: Decimal,
    /// Fee, in the quote asset, 8 decimal places.
    pub fee: Decimal,
    /// The open time of the candle that filled it.
    pub filled_at: DateTime<Utc>,
    /// Base units of the order still open after this fill.
    pub remaining: Decimal,
}

/// Events of the paper venue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum PaperEvent {
    /// A new configuration.
    PaperConfigured {
        /// The configuration.
        config: PaperConfig,
        /// When.
        at: DateTime<Utc>,
    },
    /// An order was taken and is open.
    PaperOrderAccepted {
        /// The order.
        order_id: OrderId,
        /// The pair.
        symbol: Symbol,
        /// Buy or sell.
        side: Side,
        /// Base units.
        quantity: Decimal,
        /// When it was submitted.
        submitted_at: DateTime<Utc>,
    },
    /// A candle filled part or all of an order.
    PaperOrderMatched(PaperFill),
    /// What was still open of an order was withdrawn.
    PaperOrderCancelled {
        /// The order.
        order_id: OrderId,
        /// Base units withdrawn.
        remaining: Decimal,
        /// Why.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl PaperEvent {
    /// Every event type of this enum with its current version.
    pub const TYPES: &'static [(&'static str, u32)] = &[
        ("PaperConfigured", 1),
        ("PaperOrderAccepted", 1),
        ("PaperOrderMatched", 1),
        ("PaperOrderCancelled", 1),
    ];
}

impl DomainEvent for PaperEvent {
    fn event_type(&self) -> String {
        match self {
            Self::PaperConfigured { .. } => "PaperConfigured",
            Self::PaperOrderAccepted { .. } => "PaperOrderAccepted",
            Self::PaperOrderMatched(_) => "PaperOrderMatched",
            Self::PaperOrderCancelled { .. } => "PaperOrderCancelled",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why the paper venue refused a command. Nothing is recorded when a command is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PaperError {
    /// An impossible configuration, naming the field and the value.
    #[error("invalid paper config: {0}")]
    InvalidConfig(AmountError),
    /// An invalid amount (zero, negative, an overflow), naming the field and the value.
    #[error(transparent)]
    Amount(#[from] AmountError),
    /// A candle that fails [`Candle::validate`].
    #[error(transparent)]
    InvalidCandle(#[from] DomainError),
    /// An order id already accepted with other terms.
    #[error("paper order {order_id}: already accepted differently: {differences}")]
    ConflictingOrder {
        /// The order.
        order_id: OrderId,
        /// Each differing field, recorded and offered.
        differences: String,
    },
    /// An order the venue no longer remembers, submitted no later than an order it has forgotten: it cannot
    /// tell a redelivery (already filled) from a new order.
    #[error(
        "paper order {order_id} submitted at {submitted_at} is not remembered, and orders submitted up to \
         {forgotten_through} were forgotten: cannot tell a redelivery from a new order"
    )]
    Forgotten {
        /// The order.
        order_id: OrderId,
        /// Its offered submission time.
        submitted_at: DateTime<Utc>,
        /// The latest submission time of a forgotten order.
        forgotten_through: DateTime<Utc>,
    },
}

/// An order the venue took, as it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenOrder {
    /// The order.
    pub order_id: OrderId,
    /// The pair.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Base units ordered.
    pub quantity: Decimal,
    /// Base units not yet filled.
    pub remaining: Decimal,
    /// When it was submitted.
    pub submitted_at: DateTime<Utc>,
    /// How many fills it has had.
    pub fills: u32,
}

/// An order and its fills.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tracked {
    order: OpenOrder,
    fills: Vec<PaperFill>,
}

/// The paper venue's state: the configuration, the open orders (in acceptance order), the recently completed
/// orders with their fills, and the last matched candle per symbol.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaperVenue {
    config: PaperConfig,
    open: Vec<Tracked>,
    completed: VecDeque<Tracked>,
    last_matched: BTreeMap<Symbol, DateTime<Utc>>,
    forgotten_through: Option<DateTime<Utc>>,
}

fn bps_scale() -> Decimal {
    Decimal::from(10_000)
}

fn overflow(field: &'static str, a: Decimal, op: &str, b: Decimal) -> AmountError {
    AmountError {
        field,
        value: format!("{a} {op} {b}"),
        reason: "overflows",
    }
}

fn add(field: &'static str, a: Decimal, b: Decimal) -> Result<Decimal, AmountError> {
    a.checked_add(b).ok_or_else(|| overflow(field, a, "+", b))
}

fn sub(field: &'static str, a: Decimal, b: Decimal) -> Result<Decimal, AmountError> {
    a.checked_sub(b).ok_or_else(|| overflow(field, a, "-", b))
}

fn div(field: &'static str, a: Decimal, b: Decimal) -> Result<Decimal, AmountError> {
    a.checked_div(b).ok_or_else(|| overflow(field, a, "/", b))
}

fn differences(recorded: &OpenOrder, offered: &OpenOrder) -> String {
    let (r, o) = (recorded, offered);
    let mut out = Vec::new();
    let mut diff = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name} recorded {a}, offered {b}"));
        }
    };
    diff("symbol", r.symbol.to_string(), o.symbol.to_string());
    diff("side", r.side.to_string(), o.side.to_string());
    if r.quantity != o.quantity {
        diff("quantity", r.quantity.to_string(), o.quantity.to_string());
    }
    diff(
        "submitted_at",
        r.submitted_at.to_string(),
        o.submitted_at.to_string(),
    );
    out.join("; ")
}

impl PaperVenue {
    /// The configuration in force ([`PaperConfig::default`] until configured).
    pub fn config(&self) -> &PaperConfig {
        &self.config
    }

    /// The open orders (not completely filled), in acceptance order.
    pub fn open_orders(&self) -> impl Iterator<Item = &OpenOrder> {
        self.open.iter().map(|t| &t.order)
    }

    /// The fills of an open order or of one of the last [`FILL_MEMORY`] completed orders, oldest first; empty
    /// for an order the venue does not know (or no longer remembers).
    pub fn fills_of(&self, order_id: &OrderId) -> &[PaperFill] {
        self.tracked(order_id).map_or(&[], |t| t.fills.as_slice())
    }

    /// The fills priced from the candle of `symbol` that opened at `open_time`, of every order the venue
    /// still remembers, in acceptance order: what the execution agent records on the orders (again, after a
    /// crash).
    pub fn fills_at(&self, symbol: &Symbol, open_time: DateTime<Utc>) -> Vec<&PaperFill> {
        self.completed
            .iter()
            .chain(self.open.iter())
            .flat_map(|t| t.fills.iter())
            .filter(|f| &f.symbol == symbol && f.filled_at == open_time)
            .collect()
    }

    /// The open time of the last candle of `symbol` that filled something, if any.
    pub fn last_matched(&self, symbol: &Symbol) -> Option<DateTime<Utc>> {
        self.last_matched.get(symbol).copied()
    }

    fn tracked(&self, order_id: &OrderId) -> Option<&Tracked> {
        self.open
            .iter()
            .chain(self.completed.iter().rev())
            .find(|t| t.order.order_id == *order_id)
    }

    /// Decides what `command` records. Pure: returns the events (none for a repeat), or the refusal.
    ///
    /// # Errors
    /// [`PaperError`] for an invalid configuration, amount or candle, an overflow, a contradicting or a
    /// forgotten order.
    pub fn decide(&self, command: PaperCommand) -> Result<Vec<PaperEvent>, PaperError> {
        match command {
            PaperCommand::Configure { config, at } => {
                config.validate()?;
                if config == self.config {
                    return Ok(vec![]);
                }
                Ok(vec![PaperEvent::PaperConfigured { config, at }])
            }
            PaperCommand::Accept {
                order_id,
                symbol,
                side,
                quantity,
                submitted_at,
            } => {
                let offered = OpenOrder {
                    order_id,
                    symbol,
                    side,
                    quantity,
                    remaining: quantity,
                    submitted_at,
                    fills: 0,
                };
                if let Some(t) = self.tracked(&order_id) {
                    let differences = differences(&t.order, &offered);
                    return if differences.is_empty() {
                        Ok(vec![])
                    } else {
                        Err(PaperError::ConflictingOrder {
                            order_id,
                            differences,
                        })
                    };
                }
                positive("quantity", quantity)?;
                if let Some(forgotten_through) = self.forgotten_through {
                    if submitted_at <= forgotten_through {
                        return Err(PaperError::Forgotten {
                            order_id,
                            submitted_at,
                            forgotten_through,
                        });
                    }
                }
                Ok(vec![PaperEvent::PaperOrderAccepted {
                    order_id,
                    symbol: offered.symbol,
                    side,
                    quantity,
                    submitted_at,
                }])
            }
            PaperCommand::Match { candle } => self.match_candle(&candle),
            PaperCommand::Cancel {
                order_id,
                reason,
                at,
            } => Ok(self
                .open
                .iter()
                .find(|t| t.order.order_id == order_id)
                .map(|t| PaperEvent::PaperOrderCancelled {
                    order_id,
                    remaining: t.order.remaining,
                    reason,
                    at,
                })
                .into_iter()
                .collect()),
        }
    }

    fn match_candle(&self, candle: &Candle) -> Result<Vec<PaperEvent>, PaperError> {
        candle.validate()?;
        if self
            .last_matched(&candle.symbol)
            .is_some_and(|last| candle.open_time <= last)
        {
            return Ok(vec![]);
        }
        let mut eligible = self
            .open
            .iter()
            .map(|t| &t.order)
            .filter(|o| o.symbol == candle.symbol && o.submitted_at <= candle.open_time)
            .peekable();
        // Nothing to fill: the budget and rates below cannot fail (the volume fraction is at most 1), so
        // skipping them changes nothing.
        if eligible.peek().is_none() {
            return Ok(vec![]);
        }
        let c = &self.config;
        let cap = mul("volume_cap", c.max_volume_fraction, candle.volume)?;
        let mut budget = cap.round_dp_with_strategy(DP, RoundingStrategy::ToZero);
        let fee_rate = div("fee", c.fee_bps, bps_scale())?;
        let slip = div("price", c.slippage_bps, bps_scale())?;
        let mut events = Vec::new();
        for o in eligible {
            if budget <= Decimal::ZERO {
                break;
            }
            let quantity = o.remaining.min(budget);
            budget = sub("volume_cap", budget, quantity)?;
            let remaining = sub("remaining", o.remaining, quantity)?;
            let factor = match o.side {
                Side::Buy => add("price", Decimal::ONE, slip)?,
                Side::Sell => sub("price", Decimal::ONE, slip)?,
            };
            let price = mul("price", candle.open, factor)?
                .clamp(candle.low, candle.high)
                .round_dp(DP);
            positive("price", price)?;
            let notional = mul("notional", quantity, price)?;
            let fee = mul("fee", notional, fee_rate)?.round_dp(DP);
            let n = o.fills.checked_add(1).ok_or_else(|| AmountError {
                field: "fills",
                value: o.fills.to_string(),
                reason: "overflows",
            })?;
            events.push(PaperEvent::PaperOrderMatched(PaperFill {
                order_id: o.order_id,
                fill_id: format!("{}-{n}", o.order_id),
                symbol: o.symbol.clone(),
                side: o.side,
                quantity,
                price,
                fee,
                filled_at: candle.open_time,
                remaining,
            }));
        }
        Ok(events)
    }

    fn record_fill(&mut self, fill: PaperFill) {
        let last = self
            .last_matched
            .entry(fill.symbol.clone())
            .or_insert(fill.filled_at);
        *last = (*last).max(fill.filled_at);
        let Some(i) = self
            .open
            .iter()
            .position(|t| t.order.order_id == fill.order_id)
        else {
            return;
        };
        let t = &mut self.open[i];
        t.order.remaining = fill.remaining;
        t.order.fills = t.order.fills.saturating_add(1);
        t.fills.push(fill);
        if t.order.remaining <= Decimal::ZERO {
            let done = self.open.remove(i);
            self.completed.push_back(done);
            self.prune();
        }
    }

    /// Forgets the oldest completed orders beyond [`FILL_MEMORY`], remembering the latest submission time
    /// among them.
    fn prune(&mut self) {
        while self.completed.len() > FILL_MEMORY {
            let Some(old) = self.completed.pop_front() else {
                break;
            };
            let at = old.order.submitted_at;
            self.forgotten_through = Some(self.forgotten_through.map_or(at, |f| f.max(at)));
        }
    }
}

impl Aggregate for PaperVenue {
    const TYPE: &'static str = "PaperVenue";
    type Command = PaperCommand;
    type Event = PaperEvent;
    type Error = PaperError;
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
            PaperEvent::PaperConfigured { config, .. } => self.config = config,
            PaperEvent::PaperOrderAccepted {
                order_id,
                symbol,
                side,
                quantity,
                submitted_at,
            } => {
                if self.tracked(&order_id).is_none() {
                    self.open.push(Tracked {
                        order: OpenOrder {
                            order_id,
                            symbol,
                            side,
                            quantity,
                            remaining: quantity,
                            submitted_at,
                            fills: 0,
                        },
                        fills: Vec::new(),
                    });
                }
            }
            PaperEvent::PaperOrderMatched(fill) => self.record_fill(fill),
            PaperEvent::PaperOrderCancelled { order_id, .. } => {
                if let Some(i) = self.open.iter().position(|t| t.order.order_id == order_id) {
                    let done = self.open.remove(i);
                    self.completed.push_back(done);
                    self.prune();
                }
            }
        }
    }
}

impl JarvisAggregate for PaperVenue {
    const CONTEXT: &'static str = "execution";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTypes as _;
    use chrono::TimeDelta;
    use cqrs_es::test::TestFramework;
    use PaperCommand as C;
    use PaperEvent as E;

    type Given = TestFramework<PaperVenue>;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str_exact(text).unwrap()
    }

    fn base() -> DateTime<Utc> {
        "2021-12-06T10:00:00Z".parse().unwrap()
    }

    fn at(minute: i64) -> DateTime<Utc> {
        base() + TimeDelta::minutes(minute)
    }

    fn at_s(minute: i64, second: i64) -> DateTime<Utc> {
        at(minute) + TimeDelta::seconds(second)
    }

    fn sym(text: &str) -> Symbol {
        Symbol::new_checked(text).unwrap()
    }

    fn btc() -> Symbol {
        sym("BTC/USDT")
    }

    fn id(n: u32) -> OrderId {
        OrderId::derived(&format!("candle-{n}/BTC/USDT"))
    }

    fn candle(minute: i64, open: &str, high: &str, low: &str, volume: &str) -> Candle {
        Candle {
            symbol: btc(),
            open_time: at(minute),
            close_time: at(minute + 1),
            open: dec(open),
            high: dec(high),
            low: dec(low),
            close: dec(open),
            volume: dec(volume),
        }
    }

    fn wide(minute: i64, volume: &str) -> Candle {
        candle(minute, "100", "110", "90", volume)
    }

    fn accept(n: u32, side: Side, quantity: &str, submitted_at: DateTime<Utc>) -> PaperCommand {
        C::Accept {
            order_id: id(n),
            symbol: btc(),
            side,
            quantity: dec(quantity),
            submitted_at,
        }
    }

    fn accepted(n: u32, side: Side, quantity: &str, submitted_at: DateTime<Utc>) -> PaperEvent {
        E::PaperOrderAccepted {
            order_id: id(n),
            symbol: btc(),
            side,
            quantity: dec(quantity),
            submitted_at,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn matched(
        n: u32,
        k: u32,
        side: Side,
        quantity: &str,
        price: &str,
        fee: &str,
        minute: i64,
        remaining: &str,
    ) -> PaperEvent {
        E::PaperOrderMatched(PaperFill {
            order_id: id(n),
            fill_id: format!("{}-{k}", id(n)),
            symbol: btc(),
            side,
            quantity: dec(quantity),
            price: dec(price),
            fee: dec(fee),
            filled_at: at(minute),
            remaining: dec(remaining),
        })
    }

    fn match_(c: Candle) -> PaperCommand {
        C::Match { candle: c }
    }

    fn expect(given: Vec<PaperEvent>, command: PaperCommand, events: Vec<PaperEvent>) {
        Given::with(())
            .given(given)
            .when(command)
            .then_expect_events(events);
    }

    fn error(given: Vec<PaperEvent>, command: PaperCommand) -> String {
        let result = Given::with(()).given(given).when(command).inspect_result();
        result.unwrap_err().to_string()
    }

    fn venue(events: Vec<PaperEvent>) -> PaperVenue {
        let mut v = PaperVenue::default();
        events.into_iter().for_each(|e| v.apply(e));
        v
    }

    /// Decides and applies, returning the events.
    fn run(v: &mut PaperVenue, command: PaperCommand) -> Vec<PaperEvent> {
        let events = v.decide(command).unwrap();
        events.iter().cloned().for_each(|e| v.apply(e));
        events
    }

    #[test]
    fn default_config_is_documented_and_valid() {
        let c = PaperConfig::default();
        assert_eq!(c.fee_bps, dec("10"));
        assert_eq!(c.slippage_bps, dec("5"));
        assert_eq!(c.max_volume_fraction, dec("0.1"));
        assert!(c.validate().is_ok());
        assert_eq!(PaperVenue::default().config(), &c);
    }

    #[test]
    fn accept_opens_the_order() {
        let when = accept(1, Side::Buy, "2", at_s(0, 30));
        expect(vec![], when, vec![accepted(1, Side::Buy, "2", at_s(0, 30))]);
        let v = venue(vec![accepted(1, Side::Buy, "2", at_s(0, 30))]);
        let open: Vec<&OpenOrder> = v.open_orders().collect();
        assert_eq!(
            open,
            vec![&OpenOrder {
                order_id: id(1),
                symbol: btc(),
                side: Side::Buy,
                quantity: dec("2"),
                remaining: dec("2"),
                submitted_at: at_s(0, 30),
                fills: 0,
            }]
        );
        assert!(v.fills_of(&id(1)).is_empty());
    }

    #[test]
    fn a_buy_fills_at_the_next_candles_open_plus_slippage_with_the_exact_fee() {
        let given = vec![accepted(1, Side::Buy, "2", at_s(0, 30))];
        // The candle that opened before the submission does not fill it: no look-ahead.
        expect(given.clone(), match_(wide(0, "1000")), vec![]);
        // 100 × 1.0005 = 100.05; fee 2 × 100.05 × 0.001 = 0.2001.
        let fill = matched(1, 1, Side::Buy, "2", "100.05", "0.2001", 1, "0");
        expect(given.clone(), match_(wide(1, "1000")), vec![fill.clone()]);
        let v = venue(vec![given[0].clone(), fill.clone()]);
        assert_eq!(v.open_orders().count(), 0);
        assert_eq!(v.last_matched(&btc()), Some(at(1)));
        let E::PaperOrderMatched(f) = fill else {
            unreachable!()
        };
        assert_eq!(v.fills_of(&id(1)), &[f]);
    }

    #[test]
    fn an_order_submitted_exactly_at_the_open_fills_at_that_open() {
        let given = vec![accepted(1, Side::Buy, "2", at(1))];
        let fill = matched(1, 1, Side::Buy, "2", "100.05", "0.2001", 1, "0");
        expect(given, match_(wide(1, "1000")), vec![fill]);
    }

    #[test]
    fn a_sell_gets_the_open_minus_slippage() {
        let given = vec![accepted(1, Side::Sell, "2", at_s(0, 30))];
        // 100 × 0.9995 = 99.95; fee 2 × 99.95 × 0.001 = 0.1999.
        let fill = matched(1, 1, Side::Sell, "2", "99.95", "0.1999", 1, "0");
        expect(given, match_(wide(1, "1000")), vec![fill]);
    }

    #[test]
    fn the_price_is_clamped_into_low_high() {
        let buy = vec![accepted(1, Side::Buy, "1", at(0))];
        let fill = matched(1, 1, Side::Buy, "1", "100.02", "0.10002", 1, "0");
        expect(
            buy,
            match_(candle(1, "100", "100.02", "99", "1000")),
            vec![fill],
        );
        let sell = vec![accepted(1, Side::Sell, "1", at(0))];
        let fill = matched(1, 1, Side::Sell, "1", "99.99", "0.09999", 1, "0");
        expect(
            sell,
            match_(candle(1, "100", "101", "99.99", "1000")),
            vec![fill],
        );
    }

    #[test]
    fn price_and_fee_are_rounded_to_8_places() {
        let given = vec![accepted(1, Side::Buy, "3", at(0))];
        // 123.456789 × 1.0005 = 123.5185173945 → 123.51851739; fee 3 × that × 0.001 = 0.37055555217 → 0.37055555.
        let fill = matched(1, 1, Side::Buy, "3", "123.51851739", "0.37055555", 1, "0");
        expect(
            given,
            match_(candle(1, "123.456789", "130", "120", "1000")),
            vec![fill],
        );
    }

    #[test]
    fn the_volume_cap_gives_partial_fills_over_three_candles() {
        let mut history = vec![accepted(1, Side::Buy, "3", at(0))];
        // 0.1 × 10 = 1 per candle.
        let fills = [
            matched(1, 1, Side::Buy, "1", "100.05", "0.10005", 1, "2"),
            matched(1, 2, Side::Buy, "1", "100.05", "0.10005", 2, "1"),
            matched(1, 3, Side::Buy, "1", "100.05", "0.10005", 3, "0"),
        ];
        for (minute, fill) in (1..).zip(fills.iter()) {
            expect(
                history.clone(),
                match_(wide(minute, "10")),
                vec![fill.clone()],
            );
            let v = venue(history.clone());
            assert_eq!(v.open_orders().count(), 1);
            history.push(fill.clone());
        }
        let v = venue(history);
        assert_eq!(v.open_orders().count(), 0);
        let ids: Vec<&str> = v
            .fills_of(&id(1))
            .iter()
            .map(|f| f.fill_id.as_str())
            .collect();
        let want: Vec<String> = (1..=3).map(|k| format!("{}-{k}", id(1))).collect();
        assert_eq!(ids, want);
        assert_eq!(v.fills_of(&id(1))[2].remaining, dec("0"));
    }

    #[test]
    fn the_volume_budget_is_shared_in_acceptance_order() {
        let given = vec![
            accepted(1, Side::Buy, "1", at(0)),
            accepted(2, Side::Sell, "1", at(0)),
            accepted(3, Side::Buy, "1", at(0)),
        ];
        // Budget 0.1 × 15 = 1.5: the first order fills, the second half, the third waits.
        let events = vec![
            matched(1, 1, Side::Buy, "1", "100.05", "0.10005", 1, "0"),
            matched(2, 1, Side::Sell, "0.5", "99.95", "0.049975", 1, "0.5"),
        ];
        expect(given.clone(), match_(wide(1, "15")), events.clone());
        let mut history = given;
        history.extend(events);
        let v = venue(history);
        let open: Vec<(OrderId, Decimal, u32)> = v
            .open_orders()
            .map(|o| (o.order_id, o.remaining, o.fills))
            .collect();
        assert_eq!(open, vec![(id(2), dec("0.5"), 1), (id(3), dec("1"), 0)]);
    }

    #[test]
    fn a_budget_that_rounds_to_zero_fills_nothing() {
        let given = vec![accepted(1, Side::Buy, "1", at(0))];
        // 0.1 × 0.00000009 = 0.000000009 → rounded down to 8 places: 0.
        expect(given.clone(), match_(wide(1, "0.00000009")), vec![]);
        // 0.1 × 0.00000019 = 0.000000019 → 0.00000001.
        let fill = matched(
            1,
            1,
            Side::Buy,
            "0.00000001",
            "100.05",
            "0",
            1,
            "0.99999999",
        );
        expect(given, match_(wide(1, "0.00000019")), vec![fill]);
    }

    #[test]
    fn an_order_submitted_after_the_candles_open_waits_for_the_next() {
        let given = vec![
            accepted(1, Side::Buy, "1", at(0)),
            accepted(2, Side::Buy, "1", at_s(1, 1)),
        ];
        let fill = matched(1, 1, Side::Buy, "1", "100.05", "0.10005", 1, "0");
        expect(given.clone(), match_(wide(1, "1000")), vec![fill.clone()]);
        let mut history = given;
        history.push(fill);
        let fill = matched(2, 1, Side::Buy, "1", "100.05", "0.10005", 2, "0");
        expect(history, match_(wide(2, "1000")), vec![fill]);
    }

    #[test]
    fn re_matching_the_same_or_an_older_candle_emits_nothing() {
        let history = vec![
            accepted(1, Side::Buy, "3", at(0)),
            matched(1, 1, Side::Buy, "1", "100.05", "0.10005", 2, "2"),
        ];
        expect(history.clone(), match_(wide(2, "10")), vec![]);
        expect(history.clone(), match_(wide(1, "10")), vec![]);
        let next = matched(1, 2, Side::Buy, "1", "100.05", "0.10005", 3, "1");
        expect(history, match_(wide(3, "10")), vec![next]);
    }

    #[test]
    fn a_zero_volume_candle_fills_nothing() {
        let given = vec![accepted(1, Side::Buy, "1", at(0))];
        expect(given.clone(), match_(wide(1, "0")), vec![]);
        let v = venue(given);
        assert_eq!(v.open_orders().count(), 1);
        assert_eq!(v.last_matched(&btc()), None);
    }

    #[test]
    fn a_candle_of_another_symbol_fills_nothing() {
        let given = vec![accepted(1, Side::Buy, "1", at(0))];
        let mut eth = wide(1, "1000");
        eth.symbol = sym("ETH/USDT");
        expect(given, match_(eth), vec![]);
    }

    #[test]
    fn an_invalid_candle_is_refused() {
        let given = vec![accepted(1, Side::Buy, "1", at(0))];
        let bad = candle(1, "100", "99", "101", "10");
        let err = error(given, match_(bad));
        assert!(err.contains("low 101 is above high 99"), "{err}");
    }

    #[test]
    fn accept_twice_identical_is_a_no_op_different_names_both() {
        let given = vec![accepted(1, Side::Buy, "2", at(0))];
        expect(given.clone(), accept(1, Side::Buy, "2.0", at(0)), vec![]);
        let err = error(given.clone(), accept(1, Side::Sell, "3", at(0)));
        assert_eq!(
            err,
            format!(
                "paper order {}: already accepted differently: side recorded buy, offered sell; \
                 quantity recorded 2, offered 3",
                id(1)
            )
        );
        // Still recognised once completely filled.
        let mut history = given;
        history.push(matched(1, 1, Side::Buy, "2", "100.05", "0.2001", 1, "0"));
        expect(history.clone(), accept(1, Side::Buy, "2", at(0)), vec![]);
        let err = error(history, accept(1, Side::Buy, "2", at(1)));
        assert!(
            err.ends_with(
                "submitted_at recorded 2021-12-06 10:00:00 UTC, offered 2021-12-06 10:01:00 UTC"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_quantity_of_zero_or_less_is_refused() {
        let err = error(vec![], accept(1, Side::Buy, "0", at(0)));
        assert_eq!(err, "quantity = 0: must be greater than zero");
        let err = error(vec![], accept(1, Side::Buy, "-1", at(0)));
        assert_eq!(err, "quantity = -1: must be greater than zero");
    }

    #[test]
    fn configure_validates_and_a_repeat_is_a_no_op() {
        let config = PaperConfig {
            fee_bps: dec("0"),
            slippage_bps: dec("20"),
            max_volume_fraction: dec("1"),
        };
        let configured = E::PaperConfigured {
            config: config.clone(),
            at: at(0),
        };
        let when = C::Configure {
            config: config.clone(),
            at: at(0),
        };
        expect(vec![], when.clone(), vec![configured.clone()]);
        expect(vec![configured.clone()], when, vec![]);
        let default_again = C::Configure {
            config: PaperConfig::default(),
            at: at(1),
        };
        expect(vec![], default_again, vec![]);
        // The new configuration applies: 100 × 1.002 = 100.2, no fee, the whole volume.
        let given = vec![configured, accepted(1, Side::Buy, "10", at(0))];
        let fill = matched(1, 1, Side::Buy, "10", "100.2", "0", 1, "0");
        expect(given, match_(wide(1, "10")), vec![fill]);
    }

    #[test]
    fn an_invalid_config_is_refused_naming_field_and_value() {
        let cases = [
            (
                PaperConfig {
                    fee_bps: dec("-1"),
                    ..PaperConfig::default()
                },
                "invalid paper config: fee_bps = -1: must be in [0, 10000) basis points",
            ),
            (
                PaperConfig {
                    slippage_bps: dec("10000"),
                    ..PaperConfig::default()
                },
                "invalid paper config: slippage_bps = 10000: must be in [0, 10000) basis points",
            ),
            (
                PaperConfig {
                    max_volume_fraction: dec("0"),
                    ..PaperConfig::default()
                },
                "invalid paper config: max_volume_fraction = 0: must be a fraction in (0, 1]",
            ),
            (
                PaperConfig {
                    max_volume_fraction: dec("1.5"),
                    ..PaperConfig::default()
                },
                "invalid paper config: max_volume_fraction = 1.5: must be a fraction in (0, 1]",
            ),
        ];
        for (config, want) in cases {
            assert_eq!(config.validate().unwrap_err().to_string(), want);
            let err = error(vec![], C::Configure { config, at: at(0) });
            assert_eq!(err, want);
        }
    }

    #[test]
    fn an_overflow_is_refused_naming_the_field() {
        let given = vec![accepted(1, Side::Buy, "1", at(0))];
        let max = Decimal::MAX.to_string();
        let err = error(given, match_(candle(1, &max, &max, "1", "1000")));
        assert!(
            err.starts_with("price = ") && err.ends_with(": overflows"),
            "{err}"
        );
    }

    #[test]
    fn a_cancelled_order_is_withdrawn_and_never_filled() {
        let mut v = PaperVenue::default();
        run(&mut v, accept(1, Side::Buy, "2", at(0)));
        let cancel = PaperCommand::Cancel {
            order_id: id(1),
            reason: "insufficient cash".into(),
            at: at(0),
        };
        let events = run(&mut v, cancel.clone());
        assert!(
            matches!(&events[..], [PaperEvent::PaperOrderCancelled { .. }]),
            "{events:?}"
        );
        assert_eq!(v.open_orders().count(), 0);
        assert!(
            run(&mut v, match_(wide(1, "100"))).is_empty(),
            "a cancelled order fills nothing"
        );
        assert!(
            run(&mut v, cancel).is_empty(),
            "cancelling again changes nothing"
        );
    }

    #[test]
    fn completed_orders_are_pruned_beyond_the_memory() {
        let mut v = PaperVenue::default();
        let total = 1_030u32;
        for n in 0..total {
            let minute = i64::from(n);
            run(&mut v, accept(n, Side::Buy, "0.001", at(minute)));
            let events = run(&mut v, match_(wide(minute, "1")));
            assert_eq!(events.len(), 1, "order {n}");
        }
        assert_eq!(v.open_orders().count(), 0);
        assert_eq!(v.completed.len(), FILL_MEMORY);
        let forgotten = total - u32::try_from(FILL_MEMORY).unwrap();
        for n in 0..forgotten {
            assert!(v.fills_of(&id(n)).is_empty(), "order {n}");
        }
        for n in forgotten..total {
            assert_eq!(v.fills_of(&id(n)).len(), 1, "order {n}");
        }
        assert_eq!(v.last_matched(&btc()), Some(at(i64::from(total - 1))));
        // A redelivery of a forgotten order is refused rather than filled twice.
        let err = v
            .decide(accept(0, Side::Buy, "0.001", at(0)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot tell a redelivery from a new order"),
            "{err}"
        );
        // A remembered one is still a no-op, and a new one is accepted.
        let last = total - 1;
        let again = accept(last, Side::Buy, "0.001", at(i64::from(last)));
        assert_eq!(v.decide(again).unwrap(), vec![]);
        let new = v
            .decide(accept(total, Side::Buy, "1", at(i64::from(total))))
            .unwrap();
        assert_eq!(new.len(), 1);
    }

    #[test]
    fn serde_round_trip_of_the_state_and_every_event() {
        let events = vec![
            E::PaperConfigured {
                config: PaperConfig::default(),
                at: at(0),
            },
            accepted(1, Side::Buy, "3", at(0)),
            accepted(2, Side::Sell, "1", at(0)),
            matched(1, 1, Side::Buy, "1", "100.05", "0.10005", 1, "2"),
            matched(2, 1, Side::Sell, "1", "99.95", "0.09995", 1, "0"),
            E::PaperOrderCancelled {
                order_id: id(1),
                remaining: Decimal::from(2),
                reason: "insufficient cash".into(),
                at: at(2),
            },
        ];
        let types: std::collections::BTreeSet<String> =
            events.iter().map(DomainEvent::event_type).collect();
        assert_eq!(types.len(), PaperEvent::TYPES.len());
        for e in &events {
            let back: PaperEvent =
                serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap();
            assert_eq!(&back, e);
            assert_eq!(PaperEvent::version_of(&e.event_type()), Some(1));
            assert_eq!(e.event_version(), "1");
        }
        assert_eq!(PaperEvent::version_of("Nope"), None);
        let state = venue(events);
        assert_eq!(
            state.open_orders().count(),
            0,
            "order 1 was cancelled, order 2 filled"
        );
        assert_eq!(state.fills_of(&id(2)).len(), 1);
        assert_eq!(state.fills_of(&id(1)).len(), 1);
        let back: PaperVenue =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn aggregate_identity() {
        assert_eq!(PaperVenue::TYPE, "PaperVenue");
        assert_eq!(<PaperVenue as JarvisAggregate>::CONTEXT, "execution");
        assert_eq!(PAPER_VENUE, "paper");
    }
}
