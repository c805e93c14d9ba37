//! What every stored event carries, how event types are named on the bus, and the registry that decodes them.
//!
//! The CloudEvents type of an event is `jarvis.<context>.<EventType>.v<N>`; its NATS subject is
//! `jarvis.evt.<context>.<EventType>.<aggregate-id>`. The payload on the bus is the event's own JSON object
//! (cqrs-es stores it wrapped as `{"<EventType>": {...}}`; [`unwrap_payload`] removes that wrapper).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::Value;
use uuid::Uuid;

use crate::backtest::{BacktestEvent, BacktestRun};
use crate::chat::{Conversation, ConversationEvent};
use crate::llm::{LlmEvent, LlmLedger};
use crate::market::{MarketFeed, MarketFeedEvent, PriceFeed, PriceFeedEvent};
use crate::memory::{UserMemory, UserMemoryEvent};
use crate::sentiment::{SentimentEvent, TokenSentiment};
use crate::social::{XFeed, XFeedEvent};
use crate::telegram::{TelegramBot, TelegramEvent};
use crate::trading::order::{Order, OrderEvent};
use crate::trading::paper::{PaperEvent, PaperVenue};
use crate::trading::portfolio::{Portfolio, PortfolioEvent};
use crate::trading::risk::{RiskBook, RiskEvent};
use crate::x_account::{XAccount, XAccountEvent};

/// An aggregate that belongs to a bounded context, which names its events on the bus.
pub trait JarvisAggregate: Aggregate {
    /// The context token in subjects and CloudEvents types, e.g. `market` or `trade`.
    const CONTEXT: &'static str;
}

/// The event enum of an aggregate, with every event type it has and its current version.
pub trait EventTypes: DomainEvent {
    /// `(event type, current version)` of every variant.
    const TYPES: &'static [(&'static str, u32)];

    /// The current version of an event type, if this enum has it.
    fn version_of(event_type: &str) -> Option<u32> {
        Self::TYPES
            .iter()
            .find(|(t, _)| *t == event_type)
            .map(|(_, v)| *v)
    }
}

macro_rules! event_types {
    ($($enum:ty),*) => {
        $(impl EventTypes for $enum {
            const TYPES: &'static [(&'static str, u32)] = <$enum>::TYPES;
        })*
    };
}
event_types!(
    MarketFeedEvent,
    PriceFeedEvent,
    OrderEvent,
    PortfolioEvent,
    RiskEvent,
    PaperEvent,
    BacktestEvent,
    ConversationEvent,
    UserMemoryEvent,
    LlmEvent,
    XFeedEvent,
    SentimentEvent,
    XAccountEvent,
    TelegramEvent
);

/// The bounded context of a stored aggregate type, if Jarvis knows it.
pub fn context_of(aggregate_type: &str) -> Option<&'static str> {
    match aggregate_type {
        MarketFeed::TYPE => Some(MarketFeed::CONTEXT),
        PriceFeed::TYPE => Some(PriceFeed::CONTEXT),
        Order::TYPE => Some(Order::CONTEXT),
        Portfolio::TYPE => Some(Portfolio::CONTEXT),
        RiskBook::TYPE => Some(RiskBook::CONTEXT),
        PaperVenue::TYPE => Some(PaperVenue::CONTEXT),
        BacktestRun::TYPE => Some(BacktestRun::CONTEXT),
        Conversation::TYPE => Some(Conversation::CONTEXT),
        UserMemory::TYPE => Some(UserMemory::CONTEXT),
        LlmLedger::TYPE => Some(LlmLedger::CONTEXT),
        XFeed::TYPE => Some(XFeed::CONTEXT),
        TokenSentiment::TYPE => Some(TokenSentiment::CONTEXT),
        XAccount::TYPE => Some(XAccount::CONTEXT),
        TelegramBot::TYPE => Some(TelegramBot::CONTEXT),
        _ => None,
    }
}

/// Metadata keys under which [`EventMetadata`] travels in cqrs-es's metadata map.
pub mod metadata_keys {
    /// The story this event belongs to.
    pub const CORRELATION_ID: &str = "correlation_id";
    /// The event (or command) that caused this one.
    pub const CAUSATION_ID: &str = "causation_id";
    /// The agent or tool that wrote it.
    pub const SOURCE: &str = "source";
}

/// Who wrote an event and why: carried by every event, stored in the event's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    /// The whole story (e.g. one ingest run, or the candle a trade started from).
    pub correlation_id: Uuid,
    /// The event or command that caused this event.
    pub causation_id: Uuid,
    /// The agent or tool that wrote it, e.g. `jarvis-ingest` or `risk`.
    pub source: String,
}

/// The identity of an event that causes others: its id and the story it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventRef {
    /// The event's id.
    pub event_id: Uuid,
    /// Its correlation id (the whole story).
    pub correlation_id: Uuid,
}

impl EventRef {
    /// Metadata for an event this one causes, written by `source`.
    pub fn caused(&self, source: impl Into<String>) -> EventMetadata {
        EventMetadata {
            correlation_id: self.correlation_id,
            causation_id: self.event_id,
            source: source.into(),
        }
    }
}

impl From<&RecordedEvent> for EventRef {
    fn from(e: &RecordedEvent) -> Self {
        Self {
            event_id: e.event_id,
            correlation_id: e.metadata.correlation_id,
        }
    }
}

impl EventMetadata {
    /// Metadata for a new story started by `source`: correlation and causation are one fresh id.
    pub fn root(source: impl Into<String>) -> Self {
        let id = Uuid::now_v7();
        Self {
            correlation_id: id,
            causation_id: id,
            source: source.into(),
        }
    }

    /// Metadata for an event caused by `cause` (same story, causation = the cause's event id).
    pub fn caused_by(cause: &RecordedEvent, source: impl Into<String>) -> Self {
        Self {
            correlation_id: cause.metadata.correlation_id,
            causation_id: cause.event_id,
            source: source.into(),
        }
    }

    /// The map that cqrs-es stores with each event.
    pub fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            (
                metadata_keys::CORRELATION_ID.to_string(),
                self.correlation_id.to_string(),
            ),
            (
                metadata_keys::CAUSATION_ID.to_string(),
                self.causation_id.to_string(),
            ),
            (metadata_keys::SOURCE.to_string(), self.source.clone()),
        ])
    }

    /// Reads metadata back from a stored JSON object.
    ///
    /// # Errors
    /// A message naming the missing or malformed key.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let get = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("metadata has no string {key:?}"))
        };
        let uuid = |key: &str| {
            get(key).and_then(|s| {
                Uuid::parse_str(s).map_err(|e| format!("metadata {key:?} = {s:?}: {e}"))
            })
        };
        Ok(Self {
            correlation_id: uuid(metadata_keys::CORRELATION_ID)?,
            causation_id: uuid(metadata_keys::CAUSATION_ID)?,
            source: get(metadata_keys::SOURCE)?.to_string(),
        })
    }
}

/// An event as the store recorded it, with its place in the global order.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Unique event id (UUIDv7); also the bus's `Nats-Msg-Id` and `ce-id`.
    pub event_id: Uuid,
    /// Global position in the store (gap-safe order together with `txid`).
    pub position: i64,
    /// The writing transaction's id (`xid8`).
    pub txid: u64,
    /// cqrs-es aggregate type, e.g. `MarketFeed`.
    pub aggregate_type: String,
    /// Aggregate id, e.g. `BTC/USDT@2021-12-06`.
    pub aggregate_id: String,
    /// Sequence within the aggregate, from 1.
    pub sequence: i64,
    /// Event type, e.g. `CandleClosed`.
    pub event_type: String,
    /// Event version, e.g. `1`.
    pub event_version: String,
    /// The event's own JSON object (unwrapped, see [`unwrap_payload`]).
    pub payload: Value,
    /// Correlation, causation and source.
    pub metadata: EventMetadata,
    /// When the store recorded it (wall clock; never used for decisions).
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// The bounded context (`market`, ...); `unknown` for aggregate types Jarvis does not know.
    pub fn context(&self) -> &'static str {
        context_of(&self.aggregate_type).unwrap_or("unknown")
    }

    /// The CloudEvents type, `jarvis.<context>.<EventType>.v<N>`.
    pub fn ce_type(&self) -> String {
        ce_type(self.context(), &self.event_type, &self.event_version)
    }

    /// The NATS subject, `jarvis.evt.<context>.<EventType>.<aggregate-id>`.
    pub fn subject(&self) -> String {
        format!(
            "jarvis.evt.{}.{}.{}",
            self.context(),
            self.event_type,
            subject_token(&self.aggregate_id)
        )
    }
}

/// `jarvis.<context>.<EventType>.v<N>`.
pub fn ce_type(context: &str, event_type: &str, version: &str) -> String {
    format!("jarvis.{context}.{event_type}.v{version}")
}

/// Makes text safe as one NATS subject token: `.`, `*`, `>`, `@` and white space become `_`.
///
/// `@` too: a clustered nats-server (2.9) forwards a JetStream message between servers with its subject
/// appended to the reply after an `@`, and splits them at the first `@` of the subject; a subject holding one
/// reached the client with a corrupt ack subject, and its acks were lost (found by `tests/cluster.rs`).
pub fn subject_token(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '.' | '*' | '>' | '@' => '_',
            c if c.is_whitespace() => '_',
            c => c,
        })
        .collect()
}

/// cqrs-es stores an enum event as `{"<EventType>": {...}}`; the bus carries only the inner object.
pub fn unwrap_payload(event_type: &str, payload: Value) -> Value {
    match payload {
        Value::Object(mut map) if map.len() == 1 && map.contains_key(event_type) => {
            map.remove(event_type).unwrap_or(Value::Null)
        }
        other => other,
    }
}

/// Why a message could not be decoded into a known event. All of these are permanent: retrying won't help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The type is not of the form `jarvis.<context>.<EventType>.v<N>`.
    #[error("malformed ce-type {0:?}: expected jarvis.<context>.<EventType>.v<N>")]
    MalformedType(String),
    /// A well-formed type that no aggregate emits.
    #[error("unknown ce-type {0:?}")]
    UnknownType(String),
    /// A newer version than this build understands.
    #[error("unsupported version in ce-type {ce_type:?}: this build reads up to v{supported}")]
    UnsupportedVersion {
        /// The type received.
        ce_type: String,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The payload is not valid JSON for that type.
    #[error("payload of {ce_type} does not match its schema: {error}")]
    InvalidPayload {
        /// The type received.
        ce_type: String,
        /// serde's message, with the field and position.
        error: String,
    },
}

/// Any event Jarvis knows, decoded from the bus by its CloudEvents type.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyEvent {
    /// An event of a `MarketFeed` (context `market`).
    Market(MarketFeedEvent),
    /// An event of a `PriceFeed` (context `market` too: live prices beside candles).
    Price(PriceFeedEvent),
    /// An event of an `Order` (context `trade`).
    Trade(OrderEvent),
    /// An event of the `Portfolio` (context `portfolio`).
    Portfolio(PortfolioEvent),
    /// An event of the `RiskBook` (context `risk`).
    Risk(RiskEvent),
    /// An event of the `PaperVenue` (context `execution`).
    Execution(PaperEvent),
    /// An event of a `BacktestRun` (context `backtest`).
    Backtest(BacktestEvent),
    /// An event of a `Conversation` (context `chat`).
    Chat(ConversationEvent),
    /// An event of a `UserMemory` (context `memory`).
    Memory(UserMemoryEvent),
    /// An event of an `LlmLedger` (context `llm`).
    Llm(LlmEvent),
    /// An event of an `XFeed` (context `social`).
    Social(XFeedEvent),
    /// An event of a `TokenSentiment` (context `sentiment`).
    Sentiment(SentimentEvent),
    /// An event of the `XAccount` (context `x`).
    X(XAccountEvent),
    /// An event of the `TelegramBot` (context `telegram`).
    Telegram(TelegramEvent),
}

/// Decodes the body of `event_type` at `version` as an event of the enum `E`.
fn decode_as<E: EventTypes>(
    ce_type: &str,
    event_type: &str,
    version: u32,
    data: &[u8],
) -> Result<E, DecodeError> {
    let supported =
        E::version_of(event_type).ok_or_else(|| DecodeError::UnknownType(ce_type.to_string()))?;
    if version > supported || version == 0 {
        return Err(DecodeError::UnsupportedVersion {
            ce_type: ce_type.to_string(),
            supported,
        });
    }
    let invalid = |e: serde_json::Error| DecodeError::InvalidPayload {
        ce_type: ce_type.to_string(),
        error: e.to_string(),
    };
    let body: Value = serde_json::from_slice(data).map_err(invalid)?;
    let wrapped = Value::Object([(event_type.to_string(), body)].into_iter().collect());
    serde_json::from_value(wrapped).map_err(invalid)
}

impl AnyEvent {
    /// Decodes a payload by its `ce-type`, upcasting older versions.
    ///
    /// # Errors
    /// [`DecodeError`] naming the type and, for bad payloads, serde's message.
    pub fn decode(ce_type: &str, data: &[u8]) -> Result<Self, DecodeError> {
        let malformed = || DecodeError::MalformedType(ce_type.to_string());
        let mut parts = ce_type.split('.');
        let (Some("jarvis"), Some(context), Some(event_type), Some(version), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(malformed());
        };
        let version: u32 = version
            .strip_prefix('v')
            .and_then(|v| v.parse().ok())
            .ok_or_else(malformed)?;
        match context {
            PriceFeed::CONTEXT if PriceFeedEvent::version_of(event_type).is_some() => {
                decode_as(ce_type, event_type, version, data).map(Self::Price)
            }
            MarketFeed::CONTEXT => decode_as(ce_type, event_type, version, data).map(Self::Market),
            Order::CONTEXT => decode_as(ce_type, event_type, version, data).map(Self::Trade),
            Portfolio::CONTEXT => {
                decode_as(ce_type, event_type, version, data).map(Self::Portfolio)
            }
            RiskBook::CONTEXT => decode_as(ce_type, event_type, version, data).map(Self::Risk),
            PaperVenue::CONTEXT => {
                decode_as(ce_type, event_type, version, data).map(Self::Execution)
            }
            BacktestRun::CONTEXT => {
                decode_as(ce_type, event_type, version, data).map(Self::Backtest)
            }
            Conversation::CONTEXT => decode_as(ce_type, event_type, version, data).map(Self::Chat),
            UserMemory::CONTEXT => decode_as(ce_type, event_type, version, data).map(Self::Memory),
            LlmLedger::CONTEXT => decode_as(ce_type, event_type, version, data).map(Self::Llm),
            XFeed::CONTEXT => decode_as(ce_type, event_type, version, data).map(Self::Social),
            TokenSentiment::CONTEXT => {
                decode_as(ce_type, event_type, version, data).map(Self::Sentiment)
            }
            XAccount::CONTEXT => decode_as(ce_type, event_type, version, data).map(Self::X),
            TelegramBot::CONTEXT => {
                decode_as(ce_type, event_type, version, data).map(Self::Telegram)
            }
            _ => Err(DecodeError::UnknownType(ce_type.to_string())),
        }
    }

    /// The event's type name, e.g. `CandleClosed`.
    pub fn event_type(&self) -> String {
        match self {
            Self::Market(e) => e.event_type(),
            Self::Price(e) => e.event_type(),
            Self::Trade(e) => e.event_type(),
            Self::Portfolio(e) => e.event_type(),
            Self::Risk(e) => e.event_type(),
            Self::Execution(e) => e.event_type(),
            Self::Backtest(e) => e.event_type(),
            Self::Chat(e) => e.event_type(),
            Self::Memory(e) => e.event_type(),
            Self::Llm(e) => e.event_type(),
            Self::Social(e) => e.event_type(),
            Self::Sentiment(e) => e.event_type(),
            Self::X(e) => e.event_type(),
            Self::Telegram(e) => e.event_type(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANDLE: &str = r#"{"symbol":"SOL/USDT","open_time":"2021-12-06T00:00:00Z","close_time":"2021-12-06T01:00:00Z","open":"196.49","high":"197.08","low":"191.83","close":"192.33","volume":"21138.82"}"#;

    #[test]
    fn decodes_known_type() {
        let e = AnyEvent::decode("jarvis.market.CandleClosed.v1", CANDLE.as_bytes()).unwrap();
        assert_eq!(e.event_type(), "CandleClosed");
    }

    #[test]
    fn refuses_unknown_malformed_and_future_types() {
        let d = |t: &str, body: &str| AnyEvent::decode(t, body.as_bytes()).unwrap_err();
        assert!(matches!(
            d("jarvis.market.Nope.v1", CANDLE),
            DecodeError::UnknownType(_)
        ));
        assert!(matches!(
            d("jarvis.trade.X.v1", CANDLE),
            DecodeError::UnknownType(_)
        ));
        assert!(matches!(
            d("jarvis.nope.X.v1", CANDLE),
            DecodeError::UnknownType(_)
        ));
        assert!(matches!(
            d("market.CandleClosed", CANDLE),
            DecodeError::MalformedType(_)
        ));
        assert!(matches!(
            d("jarvis.market.CandleClosed.vX", CANDLE),
            DecodeError::MalformedType(_)
        ));
        assert!(matches!(
            d("jarvis.market.CandleClosed.v9", CANDLE),
            DecodeError::UnsupportedVersion { supported: 1, .. }
        ));
        let err = d("jarvis.market.CandleClosed.v1", r#"{"symbol":"SOL/USDT"}"#);
        assert!(err.to_string().contains("missing field"), "{err}");
        let err = d("jarvis.market.CandleClosed.v1", "not json");
        assert!(matches!(err, DecodeError::InvalidPayload { .. }));
    }

    #[test]
    fn every_context_decodes_what_it_stores() {
        use crate::trading::risk::RiskEvent;
        let event = RiskEvent::TradingResumed {
            reason: "manual".into(),
            at: "2021-12-06T00:00:00Z".parse().unwrap(),
            drawdown_base: None,
        };
        let stored = serde_json::to_value(&event).unwrap();
        let body = unwrap_payload(&event.event_type(), stored);
        let decoded = AnyEvent::decode(
            &ce_type(
                RiskBook::CONTEXT,
                &event.event_type(),
                &event.event_version(),
            ),
            body.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(decoded, AnyEvent::Risk(event));
        for (aggregate, context) in [
            ("Order", "trade"),
            ("Portfolio", "portfolio"),
            ("RiskBook", "risk"),
            ("PaperVenue", "execution"),
            ("Conversation", "chat"),
            ("UserMemory", "memory"),
            ("LlmLedger", "llm"),
            ("XFeed", "social"),
            ("TokenSentiment", "sentiment"),
            ("XAccount", "x"),
        ] {
            assert_eq!(context_of(aggregate), Some(context));
        }
    }

    #[test]
    fn metadata_round_trip() {
        let m = EventMetadata::root("test");
        let json = serde_json::to_value(m.to_map()).unwrap();
        assert_eq!(EventMetadata::from_json(&json).unwrap(), m);
        let err = EventMetadata::from_json(&serde_json::json!({"source": "x"})).unwrap_err();
        assert!(err.contains("correlation_id"), "{err}");
    }

    #[test]
    fn payload_unwrapping_and_subject_tokens() {
        let wrapped = serde_json::json!({"CandleClosed": {"a": 1}});
        assert_eq!(
            unwrap_payload("CandleClosed", wrapped),
            serde_json::json!({"a": 1})
        );
        assert_eq!(subject_token("BTC/USDT@2021-12-06"), "BTC/USDT_2021-12-06");
        assert_eq!(subject_token("a.b c>*"), "a_b_c__");
    }
}
