//! The CloudEvents 1.0 NATS binding, binary mode: attributes as `ce-*` headers, the JSON payload as body.
//!
//! An operator running `nats sub 'jarvis.evt.>'` (which prints headers) reads every attribute without our code.

use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use jarvis_domain::RecordedEvent;
use serde_json::{json, Value};
use uuid::Uuid;

/// Header names of the envelope.
pub mod headers {
    /// CloudEvents spec version, always `1.0`.
    pub const SPECVERSION: &str = "ce-specversion";
    /// Event id (UUIDv7), equal to `Nats-Msg-Id`.
    pub const ID: &str = "ce-id";
    /// `jarvis.<context>.<EventType>.v<N>`.
    pub const TYPE: &str = "ce-type";
    /// The agent or tool that wrote the event.
    pub const SOURCE: &str = "ce-source";
    /// When the store recorded the event (RFC 3339, UTC).
    pub const TIME: &str = "ce-time";
    /// The aggregate id.
    pub const SUBJECT: &str = "ce-subject";
    /// Extension: the story the event belongs to.
    pub const CORRELATION_ID: &str = "ce-correlationid";
    /// Extension: the event that caused it.
    pub const CAUSATION_ID: &str = "ce-causationid";
    /// Extension: global position in the store.
    pub const POSITION: &str = "ce-position";
    /// Extension: sequence within the aggregate.
    pub const SEQUENCE: &str = "ce-sequence";
    /// Always `application/json`.
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// JetStream de-duplication id.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// JetStream optimistic check: the stream's last sequence must be this for the message to be stored.
    pub const EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Sequence";
}

/// The headers of a stored event on the bus, `Nats-Msg-Id` included.
pub fn headers_for(event: &RecordedEvent) -> HeaderMap {
    let mut h = HeaderMap::new();
    let id = event.event_id.to_string();
    h.insert(headers::SPECVERSION, "1.0");
    h.insert(headers::ID, id.as_str());
    h.insert(headers::MSG_ID, id.as_str());
    h.insert(headers::TYPE, event.ce_type().as_str());
    h.insert(headers::SOURCE, event.metadata.source.as_str());
    h.insert(
        headers::TIME,
        event
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::Micros, true)
            .as_str(),
    );
    h.insert(headers::SUBJECT, event.aggregate_id.as_str());
    h.insert(
        headers::CORRELATION_ID,
        event.metadata.correlation_id.to_string().as_str(),
    );
    h.insert(
        headers::CAUSATION_ID,
        event.metadata.causation_id.to_string().as_str(),
    );
    h.insert(headers::POSITION, event.position.to_string().as_str());
    h.insert(headers::SEQUENCE, event.sequence.to_string().as_str());
    h.insert(headers::CONTENT_TYPE, "application/json");
    h
}

/// An envelope whose headers are missing or malformed. Permanent: the message goes to the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// A required header is absent.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// A header's value does not parse.
    #[error("header {name} = {value:?}: {reason}")]
    Invalid {
        /// The header.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
}

/// A bus message read back as a Jarvis event envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The NATS subject it arrived on.
    pub nats_subject: String,
    /// `ce-id`.
    pub id: Uuid,
    /// `ce-type`.
    pub ce_type: String,
    /// `ce-source`.
    pub source: String,
    /// `ce-time`.
    pub time: DateTime<Utc>,
    /// `ce-subject`: the aggregate id.
    pub subject: String,
    /// `ce-correlationid`.
    pub correlation_id: Uuid,
    /// `ce-causationid`.
    pub causation_id: Uuid,
    /// `ce-position`.
    pub position: i64,
    /// `ce-sequence`.
    pub sequence: i64,
    /// The JSON body.
    pub data: Bytes,
    /// How many times JetStream has delivered this message, this delivery included (1 when it was not
    /// read from a consumer). Above 1, a handler may have seen it before: its effects may be recorded.
    pub delivered: i64,
}

fn get<'a>(h: &'a HeaderMap, name: &'static str) -> Result<&'a str, EnvelopeError> {
    h.get(name)
        .map(|v| v.as_str())
        .ok_or(EnvelopeError::Missing(name))
}

fn parse<T: std::str::FromStr>(h: &HeaderMap, name: &'static str) -> Result<T, EnvelopeError>
where
    T::Err: std::fmt::Display,
{
    let value = get(h, name)?;
    value.parse().map_err(|e: T::Err| EnvelopeError::Invalid {
        name,
        value: value.to_string(),
        reason: e.to_string(),
    })
}

impl Envelope {
    /// Reads the envelope of a message.
    ///
    /// # Errors
    /// [`EnvelopeError`] naming the first missing or malformed header.
    pub fn from_parts(
        nats_subject: &str,
        headers: Option<&HeaderMap>,
        data: Bytes,
    ) -> Result<Self, EnvelopeError> {
        let empty = HeaderMap::new();
        let h = headers.unwrap_or(&empty);
        let spec = get(h, headers::SPECVERSION)?;
        if spec != "1.0" {
            return Err(EnvelopeError::Invalid {
                name: headers::SPECVERSION,
                value: spec.to_string(),
                reason: "only CloudEvents 1.0 is supported".into(),
            });
        }
        Ok(Self {
            nats_subject: nats_subject.to_string(),
            id: parse(h, headers::ID)?,
            ce_type: get(h, headers::TYPE)?.to_string(),
            source: get(h, headers::SOURCE)?.to_string(),
            time: parse(h, headers::TIME)?,
            subject: get(h, headers::SUBJECT)?.to_string(),
            correlation_id: parse(h, headers::CORRELATION_ID)?,
            causation_id: parse(h, headers::CAUSATION_ID)?,
            position: parse(h, headers::POSITION)?,
            sequence: parse(h, headers::SEQUENCE)?,
            data,
            delivered: 1,
        })
    }

    /// This event's identity, to cause others with.
    pub fn event_ref(&self) -> jarvis_domain::EventRef {
        jarvis_domain::EventRef {
            event_id: self.id,
            correlation_id: self.correlation_id,
        }
    }

    /// Metadata for an event this one causes, written by `source`.
    pub fn caused(&self, source: impl Into<String>) -> jarvis_domain::EventMetadata {
        jarvis_domain::EventMetadata {
            correlation_id: self.correlation_id,
            causation_id: self.id,
            source: source.into(),
        }
    }

    /// One JSON object with the attributes (snake_case) and the payload, as `jarvis events tail` prints it.
    pub fn to_json(&self) -> Value {
        let data: Value = serde_json::from_slice(&self.data)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.data).into_owned()));
        json!({
            "nats_subject": self.nats_subject,
            "id": self.id,
            "type": self.ce_type,
            "source": self.source,
            "time": self.time.to_rfc3339_opts(SecondsFormat::Micros, true),
            "subject": self.subject,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "position": self.position,
            "sequence": self.sequence,
            "data": data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jarvis_domain::EventMetadata;

    fn recorded() -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::now_v7(),
            position: 42,
            txid: 7,
            aggregate_type: "MarketFeed".into(),
            aggregate_id: "SOL/USDT@2021-12-06".into(),
            sequence: 3,
            event_type: "CandleClosed".into(),
            event_version: "1".into(),
            payload: json!({"close": "1.5"}),
            metadata: EventMetadata::root("test"),
            recorded_at: "2026-11-21T06:00:00.123456Z".parse().unwrap(),
        }
    }

    #[test]
    fn headers_round_trip() {
        let event = recorded();
        let h = headers_for(&event);
        assert_eq!(
            h.get("Nats-Msg-Id").unwrap().as_str(),
            event.event_id.to_string()
        );
        assert_eq!(
            event.subject(),
            "jarvis.evt.market.CandleClosed.SOL/USDT_2021-12-06"
        );
        let env = Envelope::from_parts(&event.subject(), Some(&h), Bytes::from("{}")).unwrap();
        assert_eq!(env.id, event.event_id);
        assert_eq!(env.ce_type, "jarvis.market.CandleClosed.v1");
        assert_eq!(env.position, 42);
        assert_eq!(env.sequence, 3);
        assert_eq!(env.time, event.recorded_at);
        assert_eq!(env.correlation_id, event.metadata.correlation_id);
        assert_eq!(env.to_json()["subject"], "SOL/USDT@2021-12-06");
    }

    #[test]
    fn missing_or_bad_headers_are_named() {
        let err = Envelope::from_parts("x", None, Bytes::new()).unwrap_err();
        assert_eq!(err, EnvelopeError::Missing("ce-specversion"));
        let mut h = headers_for(&recorded());
        h.insert(headers::POSITION, "forty");
        let err = Envelope::from_parts("x", Some(&h), Bytes::new()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("header ce-position = \"forty\""),
            "{err}"
        );
    }
}
