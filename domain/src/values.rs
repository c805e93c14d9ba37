//! Value types with checked constructors, so bad input is refused at the edge.

use chrono::{DateTime, Timelike, Utc};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A value that broke a domain invariant. The message names the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A symbol that is not `BASE/QUOTE` in upper-case letters and digits.
    #[error("invalid symbol {value:?}: {reason}")]
    InvalidSymbol {
        /// The rejected text.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A candle whose fields are inconsistent (non-positive price, low above high, ...).
    #[error("invalid candle {symbol} at {open_time}: {reason}")]
    InvalidCandle {
        /// The candle's symbol.
        symbol: String,
        /// The candle's open time.
        open_time: DateTime<Utc>,
        /// What is wrong, with the numbers.
        reason: String,
    },
}

/// A trading pair such as `SOL/USDT`: upper-case ASCII letters and digits, one `/`.
///
/// The text is safe as a NATS subject token (no `.`, `*`, `>` or white space). Shared, not copied: every
/// candle, price and order carries one, and a clone is a reference count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Symbol(std::sync::Arc<str>);

impl JsonSchema for Symbol {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Symbol".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A trading pair, BASE/QUOTE in upper-case letters and digits, e.g. SOL/USDT.",
            "pattern": "^[A-Z0-9]{1,16}/[A-Z0-9]{1,16}$"
        })
    }
}

impl Symbol {
    /// Checks and builds a symbol; lower case is folded to upper case.
    ///
    /// # Errors
    /// [`DomainError::InvalidSymbol`] when the text is not `BASE/QUOTE` of 1 to 16 letters or digits each.
    pub fn new_checked(text: &str) -> Result<Self, DomainError> {
        let upper = text.trim().to_ascii_uppercase();
        let bad = |reason| DomainError::InvalidSymbol {
            value: text.to_string(),
            reason,
        };
        let (base, quote) = upper
            .split_once('/')
            .ok_or_else(|| bad("expected BASE/QUOTE, e.g. SOL/USDT"))?;
        for part in [base, quote] {
            if part.is_empty() || part.len() > 16 {
                return Err(bad("each side must have 1 to 16 characters"));
            }
            if !part.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(bad("only letters and digits are allowed on each side"));
            }
        }
        Ok(Self(upper.into()))
    }

    /// The symbol as text, e.g. `SOL/USDT`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Symbol {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new_checked(&value)
    }
}

impl From<Symbol> for String {
    fn from(value: Symbol) -> Self {
        value.0.to_string()
    }
}

impl std::str::FromStr for Symbol {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new_checked(s)
    }
}

/// One closed OHLCV candle. Prices and volume are exact decimals; `open_time` is UTC, on a whole minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Candle {
    /// The pair, e.g. `BTC/USDT`.
    pub symbol: Symbol,
    /// Start of the candle's interval, UTC.
    pub open_time: DateTime<Utc>,
    /// End of the candle's interval, UTC: when it closed, the event time of everything decided from it.
    pub close_time: DateTime<Utc>,
    /// First traded price.
    pub open: Decimal,
    /// Highest traded price.
    pub high: Decimal,
    /// Lowest traded price.
    pub low: Decimal,
    /// Last traded price.
    pub close: Decimal,
    /// Traded quantity, in the base asset.
    pub volume: Decimal,
}

impl Candle {
    /// Checks the candle's invariants: positive prices, `low <= open, close <= high`, volume not negative,
    /// `open_time` on a whole minute.
    ///
    /// # Errors
    /// [`DomainError::InvalidCandle`] naming the broken rule and its numbers.
    pub fn validate(&self) -> Result<(), DomainError> {
        let bad = |reason: String| DomainError::InvalidCandle {
            symbol: self.symbol.to_string(),
            open_time: self.open_time,
            reason,
        };
        for (name, v) in [
            ("open", self.open),
            ("high", self.high),
            ("low", self.low),
            ("close", self.close),
        ] {
            if v <= Decimal::ZERO {
                return Err(bad(format!("{name} must be positive, got {v}")));
            }
        }
        if self.volume < Decimal::ZERO {
            return Err(bad(format!(
                "volume must not be negative, got {}",
                self.volume
            )));
        }
        if self.low > self.high {
            return Err(bad(format!("low {} is above high {}", self.low, self.high)));
        }
        for (name, v) in [("open", self.open), ("close", self.close)] {
            if v < self.low || v > self.high {
                return Err(bad(format!(
                    "{name} {v} is outside low..high {}..{}",
                    self.low, self.high
                )));
            }
        }
        if self.close_time <= self.open_time {
            return Err(bad(format!(
                "close_time {} is not after open_time {}",
                self.close_time, self.open_time
            )));
        }
        if self.open_time.second() != 0 || self.open_time.nanosecond() != 0 {
            return Err(bad(format!(
                "open_time {} is not on a whole minute",
                self.open_time
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str_exact(text).unwrap()
    }

    fn candle() -> Candle {
        Candle {
            symbol: Symbol::new_checked("SOL/USDT").unwrap(),
            open_time: "2021-12-06T00:00:00Z".parse().unwrap(),
            close_time: "2021-12-06T01:00:00Z".parse().unwrap(),
            open: dec("196.49"),
            high: dec("197.08"),
            low: dec("191.83"),
            close: dec("192.33"),
            volume: dec("21138.82"),
        }
    }

    #[test]
    fn symbol_is_checked_and_folded() {
        assert_eq!(
            Symbol::new_checked("sol/usdt").unwrap().as_str(),
            "SOL/USDT"
        );
        for bad in [
            "SOLUSDT",
            "SOL/",
            "/USDT",
            "SOL.X/USDT",
            "SOL/US DT",
            "SOL/>",
        ] {
            let err = Symbol::new_checked(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn symbol_serde_refuses_bad_text() {
        let err = serde_json::from_str::<Symbol>("\"BTC.USDT\"").unwrap_err();
        assert!(err.to_string().contains("BTC.USDT"), "{err}");
    }

    #[test]
    fn nan_infinite_and_overflowing_numbers_are_refused_with_the_field() {
        let with = |close: &str| {
            format!(
                r#"{{"symbol":"SOL/USDT","open_time":"2021-12-06T00:00:00Z","close_time":"2021-12-06T01:00:00Z","open":"1","high":"2","low":"1","close":{close},"volume":"3"}}"#
            )
        };
        for bad in [
            r#""NaN""#,
            r#""inf""#,
            r#""-Infinity""#,
            r#""1e400""#,
            "1e400",
            r#""99999999999999999999999999999999""#,
        ] {
            let err = serde_json::from_str::<Candle>(&with(bad))
                .unwrap_err()
                .to_string();
            assert!(!err.is_empty(), "{bad} accepted");
        }
        assert!(serde_json::from_str::<Candle>(&with(r#""1.5""#)).is_ok());
    }

    #[test]
    fn candle_invariants() {
        assert!(candle().validate().is_ok());
        let mut c = candle();
        c.low = dec("200");
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("low 200 is above high 197.08"));
        let mut c = candle();
        c.close = dec("0");
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("close must be positive"));
        let mut c = candle();
        c.volume = dec("-1");
        assert!(c.validate().is_err());
        let mut c = candle();
        c.open = dec("198");
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("open 198 is outside"));
    }
}

/// `YYYY-MM-DD` of a day in the years 0 to 9999, written by hand (ids name a day on every candle, and the
/// formatting machinery costs more than the rest of the id); `None` for any other year.
pub(crate) fn day_text(day: chrono::NaiveDate) -> Option<[u8; 10]> {
    use chrono::Datelike;
    let year = u32::try_from(day.year()).ok().filter(|y| *y <= 9999)?;
    let digit = |n: u32| b'0' + (n % 10) as u8;
    let (month, d) = (day.month(), day.day());
    Some([
        digit(year / 1000),
        digit(year / 100),
        digit(year / 10),
        digit(year),
        b'-',
        digit(month / 10),
        digit(month),
        b'-',
        digit(d / 10),
        digit(d),
    ])
}

#[cfg(test)]
mod day_text_tests {
    use chrono::NaiveDate;

    #[test]
    fn day_text_is_chronos_text_in_its_years_and_nothing_outside() {
        for (y, m, d) in [
            (0, 1, 1),
            (7, 2, 3),
            (2021, 12, 6),
            (2024, 2, 29),
            (9999, 12, 31),
        ] {
            let day = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            let text = super::day_text(day).unwrap();
            assert_eq!(
                std::str::from_utf8(&text).unwrap(),
                day.format("%Y-%m-%d").to_string()
            );
        }
        for y in [-1, 10000] {
            assert!(super::day_text(NaiveDate::from_ymd_opt(y, 1, 1).unwrap()).is_none());
        }
    }
}
