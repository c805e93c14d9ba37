//! The `MarketFeed` aggregate: the closed candles of one symbol on one UTC day.
//!
//! One aggregate per symbol and day keeps every aggregate small: cqrs-es reloads an aggregate's events on
//! every command, so one aggregate holding years of candles would make ingest quadratic. A day of hourly
//! candles is 24 events; of minute candles, 1,440.
//!
//! Recording a candle is idempotent: the same candle again is a no-op; a different candle for an hour
//! already recorded is refused with an error that names both.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::JarvisAggregate;
use crate::values::{Candle, DomainError, Symbol};

pub mod price;
pub use price::{PriceFeed, PriceFeedCommand, PriceFeedEvent, PriceFeedId, PriceObserved};

/// The id of a market feed: `<SYMBOL>@<YYYY-MM-DD>`, e.g. `BTC/USDT@2021-12-06`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MarketFeedId {
    /// The pair.
    pub symbol: Symbol,
    /// The UTC day.
    pub day: NaiveDate,
}

impl MarketFeedId {
    /// The feed a candle belongs to: its symbol and the UTC day of its open time.
    pub fn of(candle: &Candle) -> Self {
        Self {
            symbol: candle.symbol.clone(),
            day: candle.open_time.date_naive(),
        }
    }
}

impl MarketFeedId {
    /// The id as text, as `to_string` writes it, in one allocation of the right size (every candle names
    /// its feed).
    pub fn text(&self) -> String {
        let mut id = String::with_capacity(self.symbol.as_str().len() + 11);
        fmt::write(&mut id, format_args!("{self}")).expect("writing to a String cannot fail");
        id
    }
}

impl fmt::Display for MarketFeedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand: chrono's `format` parses its pattern on every call, and every candle names its feed.
        use chrono::Datelike;
        match crate::values::day_text(self.day) {
            Some(day) => {
                f.write_str(self.symbol.as_str())?;
                f.write_str("@")?;
                f.write_str(std::str::from_utf8(&day).map_err(|_| fmt::Error)?)
            }
            None => write!(
                f,
                "{}@{:04}-{:02}-{:02}",
                self.symbol,
                self.day.year(),
                self.day.month(),
                self.day.day()
            ),
        }
    }
}

/// `YYYY-MM-DD`, strictly.
fn parse_day(day: &str) -> Option<NaiveDate> {
    let b = day.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        b.get(r.clone())?
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| day[r].parse().ok())?
    };
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    NaiveDate::from_ymd_opt(digits(0..4)? as i32, digits(5..7)?, digits(8..10)?)
}

/// Whether `feed` is exactly the id of `candle`'s feed, as [`MarketFeedId`] writes it.
fn names(feed: &str, candle: &Candle) -> bool {
    feed.split_once('@').is_some_and(|(symbol, day)| {
        symbol == candle.symbol.as_str()
            && crate::values::day_text(candle.open_time.date_naive())
                .is_some_and(|text| text == day.as_bytes())
    })
}

impl std::str::FromStr for MarketFeedId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (symbol, day) = s
            .split_once('@')
            .ok_or_else(|| format!("market feed id {s:?} is not SYMBOL@YYYY-MM-DD"))?;
        Ok(Self {
            symbol: Symbol::new_checked(symbol).map_err(|e| e.to_string())?,
            day: parse_day(day).ok_or_else(|| {
                format!("market feed id {s:?}: day {day:?} is not a YYYY-MM-DD date")
            })?,
        })
    }
}

/// Commands a market feed accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum MarketFeedCommand {
    /// Record one closed candle.
    RecordCandle {
        /// The feed the candle belongs to (checked against the candle).
        feed: String,
        /// The candle.
        candle: Candle,
    },
    /// Record a batch of closed candles of the same feed in one commit (all or nothing).
    RecordCandles {
        /// The feed the candles belong to (checked against each candle).
        feed: String,
        /// The candles, any order.
        candles: Vec<Candle>,
    },
}

/// Events of a market feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MarketFeedEvent {
    /// A candle closed: its OHLCV, once per symbol and open time.
    CandleClosed(Candle),
}

impl MarketFeedEvent {
    /// Every event type of this enum with its current version.
    pub const TYPES: &'static [(&'static str, u32)] = &[("CandleClosed", 1)];
}

impl DomainEvent for MarketFeedEvent {
    fn event_type(&self) -> String {
        match self {
            Self::CandleClosed(_) => "CandleClosed".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a market feed refused a command. Nothing is recorded when a command is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MarketFeedError {
    /// The candle breaks a value invariant.
    #[error(transparent)]
    Invalid(#[from] DomainError),
    /// The command's feed id is malformed.
    #[error("{0}")]
    BadFeedId(String),
    /// The candle belongs to another symbol or day.
    #[error("candle {symbol} at {open_time} does not belong to feed {feed}")]
    WrongFeed {
        /// The feed the command was sent to.
        feed: String,
        /// The candle's symbol.
        symbol: Symbol,
        /// The candle's open time.
        open_time: DateTime<Utc>,
    },
    /// A different candle is already recorded for that symbol and open time.
    #[error(
        "conflicting candle for {} at {}: recorded O={} H={} L={} C={} V={}, offered O={} H={} L={} C={} V={}",
        recorded.symbol, recorded.open_time, recorded.open, recorded.high, recorded.low, recorded.close,
        recorded.volume, offered.open, offered.high, offered.low, offered.close, offered.volume
    )]
    ConflictingCandle {
        /// What the store holds.
        recorded: Box<Candle>,
        /// What the command offered.
        offered: Box<Candle>,
    },
}

/// The state of one feed: the candles recorded so far, by open time.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketFeed {
    candles: BTreeMap<DateTime<Utc>, Candle>,
}

impl MarketFeed {
    /// How many candles the feed holds.
    pub fn len(&self) -> usize {
        self.candles.len()
    }

    /// The candles recorded, oldest first.
    pub fn candles(&self) -> impl DoubleEndedIterator<Item = &Candle> {
        self.candles.values()
    }

    /// Whether the feed holds no candle.
    pub fn is_empty(&self) -> bool {
        self.candles.is_empty()
    }

    /// Decides which of `candles` are new. Pure: returns the events, or the first refusal.
    ///
    /// # Errors
    /// [`MarketFeedError`] for an invalid candle, a candle of another feed, or a conflicting candle.
    pub fn decide(
        &self,
        feed: &str,
        candles: Vec<Candle>,
    ) -> Result<Vec<MarketFeedEvent>, MarketFeedError> {
        // The feed id as `MarketFeedId`'s own text of every candle is right without parsing it (every
        // candle comes with its feed's id); anything else is parsed, and refused if bad or another feed's.
        let id: Option<MarketFeedId> =
            match !candles.is_empty() && candles.iter().all(|c| names(feed, c)) {
                true => None,
                false => Some(feed.parse().map_err(MarketFeedError::BadFeedId)?),
            };
        let mut new: BTreeMap<DateTime<Utc>, Candle> = BTreeMap::new();
        for candle in candles {
            candle.validate()?;
            if id
                .as_ref()
                .is_some_and(|id| MarketFeedId::of(&candle) != *id)
            {
                return Err(MarketFeedError::WrongFeed {
                    feed: feed.to_string(),
                    symbol: candle.symbol,
                    open_time: candle.open_time,
                });
            }
            let known = self
                .candles
                .get(&candle.open_time)
                .or(new.get(&candle.open_time));
            match known {
                Some(recorded) if *recorded == candle => {}
                Some(recorded) => {
                    return Err(MarketFeedError::ConflictingCandle {
                        recorded: Box::new(recorded.clone()),
                        offered: Box::new(candle),
                    })
                }
                None => {
                    new.insert(candle.open_time, candle);
                }
            }
        }
        Ok(new
            .into_values()
            .map(MarketFeedEvent::CandleClosed)
            .collect())
    }
}

impl Aggregate for MarketFeed {
    const TYPE: &'static str = "MarketFeed";
    type Command = MarketFeedCommand;
    type Event = MarketFeedEvent;
    type Error = MarketFeedError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = match command {
            MarketFeedCommand::RecordCandle { feed, candle } => self.decide(&feed, vec![candle])?,
            MarketFeedCommand::RecordCandles { feed, candles } => self.decide(&feed, candles)?,
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            MarketFeedEvent::CandleClosed(candle) => {
                self.candles.insert(candle.open_time, candle);
            }
        }
    }
}

impl JarvisAggregate for MarketFeed {
    const CONTEXT: &'static str = "market";
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use rust_decimal::Decimal;

    type Given = TestFramework<MarketFeed>;

    fn candle(hour: u32, close: &str) -> Candle {
        let close = Decimal::from_str_exact(close).unwrap();
        Candle {
            symbol: Symbol::new_checked("BTC/USDT").unwrap(),
            open_time: format!("2021-12-06T{hour:02}:00:00Z").parse().unwrap(),
            close_time: format!("2021-12-06T{hour:02}:59:59Z").parse().unwrap(),
            open: close,
            high: close,
            low: close,
            close,
            volume: Decimal::ONE,
        }
    }

    const FEED: &str = "BTC/USDT@2021-12-06";

    fn record(c: Candle) -> MarketFeedCommand {
        MarketFeedCommand::RecordCandle {
            feed: FEED.into(),
            candle: c,
        }
    }

    #[test]
    fn first_candle_closes() {
        Given::with(())
            .given_no_previous_events()
            .when(record(candle(1, "100")))
            .then_expect_events(vec![MarketFeedEvent::CandleClosed(candle(1, "100"))]);
    }

    #[test]
    fn same_candle_again_is_a_no_op() {
        Given::with(())
            .given(vec![MarketFeedEvent::CandleClosed(candle(1, "100"))])
            .when(record(candle(1, "100")))
            .then_expect_events(vec![]);
    }

    #[test]
    fn different_candle_for_a_recorded_hour_names_both() {
        let err = Given::with(())
            .given(vec![MarketFeedEvent::CandleClosed(candle(1, "100"))])
            .when(record(candle(1, "101")))
            .inspect_result()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("recorded O=100") && text.contains("offered O=101"),
            "{text}"
        );
    }

    #[test]
    fn batch_records_only_new_candles_in_time_order() {
        Given::with(())
            .given(vec![MarketFeedEvent::CandleClosed(candle(1, "100"))])
            .when(MarketFeedCommand::RecordCandles {
                feed: FEED.into(),
                candles: vec![
                    candle(3, "103"),
                    candle(1, "100"),
                    candle(2, "102"),
                    candle(2, "102"),
                ],
            })
            .then_expect_events(vec![
                MarketFeedEvent::CandleClosed(candle(2, "102")),
                MarketFeedEvent::CandleClosed(candle(3, "103")),
            ]);
    }

    #[test]
    fn batch_with_a_conflict_inside_records_nothing() {
        let result = Given::with(())
            .given_no_previous_events()
            .when(MarketFeedCommand::RecordCandles {
                feed: FEED.into(),
                candles: vec![candle(2, "102"), candle(2, "999")],
            })
            .inspect_result();
        assert!(matches!(
            result,
            Err(MarketFeedError::ConflictingCandle { .. })
        ));
    }

    #[test]
    fn candle_of_another_day_or_invalid_is_refused() {
        let mut other_day = candle(1, "100");
        other_day.open_time = "2021-12-07T01:00:00Z".parse().unwrap();
        other_day.close_time = "2021-12-07T02:00:00Z".parse().unwrap();
        Given::with(())
            .given_no_previous_events()
            .when(record(other_day))
            .then_expect_error_message(
                "candle BTC/USDT at 2021-12-07 01:00:00 UTC does not belong to feed BTC/USDT@2021-12-06",
            );
        let mut bad = candle(1, "100");
        bad.low = Decimal::from(200);
        let result = Given::with(())
            .given_no_previous_events()
            .when(record(bad))
            .inspect_result();
        assert!(matches!(result, Err(MarketFeedError::Invalid(_))));
    }

    #[test]
    fn feed_id_round_trip() {
        let id: MarketFeedId = FEED.parse().unwrap();
        assert_eq!(id.text(), FEED);
        assert_eq!(id.text(), id.to_string());
        assert_eq!(id.to_string(), FEED);
        assert_eq!(MarketFeedId::of(&candle(5, "1")), id);
        assert!("BTC/USDT".parse::<MarketFeedId>().is_err());
        assert!("BTC/USDT@2021-13-01".parse::<MarketFeedId>().is_err());
    }
}
