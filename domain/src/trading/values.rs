//! Values shared by the trading aggregates: order ids, sides, checked amounts, risk verdicts, rationales.

use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::Symbol;

/// Namespace of deterministic order ids (a fixed UUID): the same decision always names the same order.
const ORDER_NAMESPACE: Uuid = Uuid::from_u128(0x6a61_7276_6973_4f72_6465_7249_6473_0001);

/// The id of an order, and of its `Order` aggregate.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct OrderId(pub Uuid);

impl OrderId {
    /// A deterministic id from what caused the order (e.g. the candle event id and the symbol), so that a
    /// redelivered cause proposes the same order again, which the `Order` aggregate then ignores.
    pub fn derived(key: &str) -> Self {
        Self(Uuid::new_v5(&ORDER_NAMESPACE, key.as_bytes()))
    }

    /// The order a candle's decision proposes for `symbol`: derived from `<candle event id>/<symbol>`.
    pub fn of_candle(candle_event: Uuid, symbol: &crate::values::Symbol) -> Self {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let event = candle_event.hyphenated().encode_lower(&mut buf);
        let mut key = String::with_capacity(event.len() + 1 + symbol.as_str().len());
        key.push_str(event);
        key.push('/');
        key.push_str(symbol.as_str());
        Self::derived(&key)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for OrderId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Buy or sell the base asset of a symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Spend quote, receive base.
    Buy,
    /// Spend base, receive quote.
    Sell,
}

impl Side {
    /// +1 for a buy, -1 for a sell.
    pub fn sign(self) -> Decimal {
        match self {
            Self::Buy => Decimal::ONE,
            Self::Sell => Decimal::NEGATIVE_ONE,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
        })
    }
}

/// An amount that broke a rule: not positive, negative, or an overflow. Names the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value}: {reason}")]
pub struct AmountError {
    /// The field, e.g. `quantity`.
    pub field: &'static str,
    /// The offending value, as text.
    pub value: String,
    /// Why it is refused.
    pub reason: &'static str,
}

/// Checks that `value` is strictly positive.
///
/// # Errors
/// [`AmountError`] naming `field`.
pub fn positive(field: &'static str, value: Decimal) -> Result<Decimal, AmountError> {
    if value > Decimal::ZERO {
        Ok(value)
    } else {
        Err(AmountError {
            field,
            value: value.to_string(),
            reason: "must be greater than zero",
        })
    }
}

/// Checks that `value` is zero or more.
///
/// # Errors
/// [`AmountError`] naming `field`.
pub fn non_negative(field: &'static str, value: Decimal) -> Result<Decimal, AmountError> {
    if value >= Decimal::ZERO {
        Ok(value)
    } else {
        Err(AmountError {
            field,
            value: value.to_string(),
            reason: "must not be negative",
        })
    }
}

/// `a * b`, refusing an overflow instead of panicking.
///
/// # Errors
/// [`AmountError`] naming `field`.
pub fn mul(field: &'static str, a: Decimal, b: Decimal) -> Result<Decimal, AmountError> {
    a.checked_mul(b).ok_or_else(|| AmountError {
        field,
        value: format!("{a} * {b}"),
        reason: "overflows",
    })
}

/// Why a strategy proposed a trade, machine-readable: which rule, which inputs, which numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Rationale {
    /// The strategy, e.g. `rebalance`.
    pub strategy: crate::text::Text,
    /// The rule that fired, e.g. `drift_above_band`.
    pub rule: crate::text::Text,
    /// The numbers it used (weights, prices, scores), by name.
    pub inputs: crate::text::Json,
    /// The events it decided from (candle, sentiment) by event id.
    pub evidence: Vec<Uuid>,
    /// One human sentence.
    pub summary: crate::text::Text,
}

/// A risk rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RiskRule {
    /// Trading is halted (kill switch, daily loss, drawdown).
    Halted,
    /// Notional of one order above the limit.
    MaxNotionalPerOrder,
    /// Position in one token above the limit after the trade.
    MaxPositionPerToken,
    /// Sum of absolute position values above the limit after the trade.
    MaxGrossExposure,
    /// Cash after the trade below the reserve.
    MinCashReserve,
    /// Loss since the start of the UTC day beyond the limit (halts).
    DailyLossLimit,
    /// Drawdown from the equity high-water mark beyond the limit (halts).
    MaxDrawdown,
    /// Too many orders approved in the last minute.
    MaxOrdersPerMinute,
    /// Another order for the same token too recently.
    CooldownPerToken,
    /// The quote's slippage above the limit.
    MaxSlippage,
    /// The quote's price impact above the limit.
    MaxPriceImpact,
    /// The price the proposal relies on is too old.
    StalePrice,
    /// A sell of more than is held (spot only, no shorting).
    InsufficientPosition,
    /// A symbol the book does not trade.
    UnknownSymbol,
    /// The proposal could not be assessed at all (malformed numbers); the detail says why.
    Unassessable,
    /// The LLM reviewing proposals (`treasury.llm_review`) vetoed it, or could not be asked; the detail says why.
    LlmReview,
}

/// One broken rule, with its numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RiskViolation {
    /// The rule.
    pub rule: RiskRule,
    /// The limit, when the rule has one.
    pub limit: Option<Decimal>,
    /// The value that broke it.
    pub actual: Option<Decimal>,
    /// One human sentence with the numbers.
    pub detail: crate::text::Text,
}

/// A price and the event time it was observed at (a candle's close time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PricePoint {
    /// The symbol.
    pub symbol: Symbol,
    /// The price, in the quote asset.
    pub price: Decimal,
    /// When it was observed (event time).
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod order_id_tests {
    use super::OrderId;

    #[test]
    fn a_candles_order_id_is_derived_from_the_event_id_and_symbol_as_text() {
        let event = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let symbol = crate::values::Symbol::new_checked("SOL/USDT").unwrap();
        assert_eq!(
            OrderId::of_candle(event, &symbol),
            OrderId::derived(&format!("{event}/{symbol}"))
        );
    }
}
