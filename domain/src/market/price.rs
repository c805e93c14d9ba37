//! The `PriceFeed` aggregate: the live prices observed for one symbol in one UTC hour.
//!
//! A poller every few seconds writes thousands of observations a day; cqrs-es reloads an aggregate's events
//! on every command, so one aggregate per symbol and **hour** (at most 3,600 events at one a second) keeps
//! each command cheap where one per day would grow to tens of thousands.
//!
//! Recording is idempotent: the same observation again (same time, same price) is a no-op; another price
//! for a time already recorded is refused, naming both.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::JarvisAggregate;
use crate::values::Symbol;

/// One price seen at a source at a moment (the moment is the event time of the observation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PriceObserved {
    /// The pair; the price is in its quote asset.
    pub symbol: Symbol,
    /// The price of one base unit, in the quote asset; greater than zero.
    pub price: Decimal,
    /// When it was observed (UTC).
    pub observed_at: DateTime<Utc>,
    /// Where, e.g. `jupiter-price-v3`.
    pub source: String,
}

/// The id of a price feed: `<SYMBOL>@<YYYY-MM-DD>T<HH>`, e.g. `SOL/USDC@2026-11-21T10`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PriceFeedId {
    /// The pair.
    pub symbol: Symbol,
    /// The UTC hour (minutes and seconds zero).
    pub hour: NaiveDateTime,
}

impl PriceFeedId {
    /// The feed an observation belongs to.
    pub fn of(observation: &PriceObserved) -> Self {
        let t = observation.observed_at.naive_utc();
        Self {
            symbol: observation.symbol.clone(),
            hour: t
                .date()
                .and_hms_opt(t.hour(), 0, 0)
                .expect("an hour of a valid time is valid"),
        }
    }
}

impl fmt::Display for PriceFeedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.symbol, self.hour.format("%Y-%m-%dT%H"))
    }
}

/// Commands a price feed accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum PriceFeedCommand {
    /// Record one observation.
    Record(PriceObserved),
}

/// Events of a price feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PriceFeedEvent {
    /// A price was observed.
    PriceObserved(PriceObserved),
}

impl PriceFeedEvent {
    /// Every event type of this enum with its current version.
    pub const TYPES: &'static [(&'static str, u32)] = &[("PriceObserved", 1)];
}

impl DomainEvent for PriceFeedEvent {
    fn event_type(&self) -> String {
        match self {
            Self::PriceObserved(_) => "PriceObserved".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a price feed refused an observation. Nothing is recorded when one is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PriceFeedError {
    /// Zero or negative price.
    #[error("price of {symbol} at {observed_at} = {price}: must be greater than zero")]
    NotPositive {
        /// The pair.
        symbol: Symbol,
        /// The price offered.
        price: Decimal,
        /// When.
        observed_at: DateTime<Utc>,
    },
    /// An observation of another symbol or hour than the feed's.
    #[error("observation of {symbol} at {observed_at} does not belong to feed {feed}")]
    WrongFeed {
        /// The feed it was sent to.
        feed: String,
        /// Its symbol.
        symbol: Symbol,
        /// Its time.
        observed_at: DateTime<Utc>,
    },
    /// Another price is recorded for that moment.
    #[error("conflicting price of {symbol} at {observed_at}: recorded {recorded} ({recorded_source}), offered {offered} ({offered_source})")]
    Conflicting {
        /// The pair.
        symbol: Symbol,
        /// The moment.
        observed_at: DateTime<Utc>,
        /// The recorded price.
        recorded: Decimal,
        /// Its source.
        recorded_source: String,
        /// The offered price.
        offered: Decimal,
        /// Its source.
        offered_source: String,
    },
}

/// The observations of one feed, by time.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceFeed {
    id: Option<String>,
    observations: BTreeMap<DateTime<Utc>, PriceObserved>,
}

impl PriceFeed {
    /// The latest observation, if any.
    pub fn latest(&self) -> Option<&PriceObserved> {
        self.observations.values().next_back()
    }

    /// How many observations the feed holds.
    pub fn len(&self) -> usize {
        self.observations.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.observations.is_empty()
    }

    /// Decides whether `observation` is new, for the feed `feed`. Pure.
    ///
    /// # Errors
    /// [`PriceFeedError`] for a non-positive price, another feed's observation, or a conflicting price.
    pub fn decide(
        &self,
        feed: &str,
        observation: PriceObserved,
    ) -> Result<Vec<PriceFeedEvent>, PriceFeedError> {
        if observation.price <= Decimal::ZERO {
            return Err(PriceFeedError::NotPositive {
                symbol: observation.symbol,
                price: observation.price,
                observed_at: observation.observed_at,
            });
        }
        if PriceFeedId::of(&observation).to_string() != feed {
            return Err(PriceFeedError::WrongFeed {
                feed: feed.to_string(),
                symbol: observation.symbol,
                observed_at: observation.observed_at,
            });
        }
        match self.observations.get(&observation.observed_at) {
            Some(recorded) if recorded.price == observation.price => Ok(vec![]),
            Some(recorded) => Err(PriceFeedError::Conflicting {
                symbol: observation.symbol,
                observed_at: observation.observed_at,
                recorded: recorded.price,
                recorded_source: recorded.source.clone(),
                offered: observation.price,
                offered_source: observation.source,
            }),
            None => Ok(vec![PriceFeedEvent::PriceObserved(observation)]),
        }
    }
}

impl Aggregate for PriceFeed {
    const TYPE: &'static str = "PriceFeed";
    type Command = PriceFeedCommand;
    type Event = PriceFeedEvent;
    type Error = PriceFeedError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let PriceFeedCommand::Record(observation) = command;
        let feed = PriceFeedId::of(&observation).to_string();
        // The command carries no feed id of its own: cqrs-es hands the aggregate no id, so the agent sends
        // each observation to `PriceFeedId::of(observation)`, and a mismatch cannot arise here.
        for event in self.decide(self.id.as_deref().unwrap_or(&feed), observation)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PriceFeedEvent::PriceObserved(o) => {
                self.id
                    .get_or_insert_with(|| PriceFeedId::of(&o).to_string());
                self.observations.insert(o.observed_at, o);
            }
        }
    }
}

impl JarvisAggregate for PriceFeed {
    const CONTEXT: &'static str = "market";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTypes as _;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<PriceFeed>;

    fn seen(second: u32, price: &str) -> PriceObserved {
        PriceObserved {
            symbol: Symbol::new_checked("SOL/USDC").unwrap(),
            price: Decimal::from_str_exact(price).unwrap(),
            observed_at: format!("2026-11-21T10:00:{second:02}Z").parse().unwrap(),
            source: "jupiter-price-v3".into(),
        }
    }

    #[test]
    fn an_observation_is_recorded_once() {
        Given::with(())
            .given_no_previous_events()
            .when(PriceFeedCommand::Record(seen(1, "147.48")))
            .then_expect_events(vec![PriceFeedEvent::PriceObserved(seen(1, "147.48"))]);
        Given::with(())
            .given(vec![PriceFeedEvent::PriceObserved(seen(1, "147.48"))])
            .when(PriceFeedCommand::Record(seen(1, "147.480")))
            .then_expect_events(vec![]);
        Given::with(())
            .given(vec![PriceFeedEvent::PriceObserved(seen(1, "147.48"))])
            .when(PriceFeedCommand::Record(seen(2, "147.50")))
            .then_expect_events(vec![PriceFeedEvent::PriceObserved(seen(2, "147.50"))]);
    }

    #[test]
    fn another_price_for_the_same_moment_names_both() {
        Given::with(())
            .given(vec![PriceFeedEvent::PriceObserved(seen(1, "147.48"))])
            .when(PriceFeedCommand::Record(seen(1, "150")))
            .then_expect_error_message(
                "conflicting price of SOL/USDC at 2026-11-21 10:00:01 UTC: recorded 147.48 (jupiter-price-v3), offered 150 (jupiter-price-v3)",
            );
    }

    #[test]
    fn zero_or_negative_prices_and_other_hours_are_refused() {
        Given::with(())
            .given_no_previous_events()
            .when(PriceFeedCommand::Record(seen(1, "0")))
            .then_expect_error_message(
                "price of SOL/USDC at 2026-11-21 10:00:01 UTC = 0: must be greater than zero",
            );
        let mut later = seen(1, "1");
        later.observed_at = "2026-11-21T11:00:00Z".parse().unwrap();
        Given::with(())
            .given(vec![PriceFeedEvent::PriceObserved(seen(1, "147.48"))])
            .when(PriceFeedCommand::Record(later))
            .then_expect_error_message(
                "observation of SOL/USDC at 2026-11-21 11:00:00 UTC does not belong to feed SOL/USDC@2026-11-21T10",
            );
    }

    #[test]
    fn ids_and_round_trip() {
        assert_eq!(
            PriceFeedId::of(&seen(59, "1")).to_string(),
            "SOL/USDC@2026-11-21T10"
        );
        let event = PriceFeedEvent::PriceObserved(seen(1, "147.48"));
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            serde_json::from_str::<PriceFeedEvent>(&json).unwrap(),
            event
        );
        assert_eq!(PriceFeedEvent::version_of("PriceObserved"), Some(1));
        let mut feed = PriceFeed::default();
        feed.apply(event);
        assert_eq!(feed.latest().unwrap().price, Decimal::new(14748, 2));
        assert_eq!(feed.len(), 1);
    }
}
