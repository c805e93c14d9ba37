//! The dead-letter stream from the operator's side: list the dead letters, replay them after a fix, purge them.
//!
//! A dead letter is identified by its sequence in `JARVIS_DLQ`. Replaying one republishes its original
//! payload and CloudEvents headers to its original subject in `JARVIS_EVENTS` (so every consumer of that
//! subject sees it again: consumers are idempotent, so those that had handled it do nothing), then deletes
//! it from the dead-letter stream. The replay carries a `Nats-Msg-Id` of its own, `replay:<dlq sequence>`:
//! the original's id would be dropped as a duplicate within the duplicate window, and a replay interrupted
//! between publish and delete, run again, is dropped by JetStream instead of delivered twice.

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use crate::consumer::dlq_headers;
use crate::envelope::headers;
use crate::{dlq_subject, BusError, DLQ_STREAM, DLQ_SUBJECTS, EVENTS_STREAM};

/// One dead letter, as `jarvis dlq list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Its sequence in `JARVIS_DLQ`: what `jarvis dlq replay` takes.
    pub id: u64,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// The subject it was published on.
    pub subject: String,
    /// Why.
    pub error: String,
    /// How many times it was delivered.
    pub deliveries: u64,
    /// When it was dead-lettered.
    pub time: DateTime<Utc>,
    /// Its `ce-type` header, if it had one.
    pub ce_type: Option<String>,
    /// Its sequence in `JARVIS_EVENTS`.
    pub stream_sequence: u64,
    /// Its payload size in bytes (the original's, when the dead letter holds a truncated copy).
    pub size: u64,
    /// Whether the dead letter holds only the start of the payload (it was too large to store with the
    /// dead-letter headers); a replay then takes the original from `JARVIS_EVENTS`.
    pub truncated: bool,
}

fn header(h: Option<&HeaderMap>, name: &str) -> Option<String> {
    h.and_then(|h| h.get(name)).map(|v| v.as_str().to_string())
}

fn dead_letter(
    id: u64,
    subject: &str,
    h: Option<&HeaderMap>,
    len: usize,
    time: DateTime<Utc>,
) -> DeadLetter {
    let number = |name: &str| {
        header(h, name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let truncated = header(h, dlq_headers::TRUNCATED).and_then(|v| v.parse::<u64>().ok());
    DeadLetter {
        id,
        consumer: header(h, dlq_headers::CONSUMER).unwrap_or_else(|| {
            subject
                .strip_prefix("jarvis.dlq.")
                .unwrap_or(subject)
                .to_string()
        }),
        subject: header(h, dlq_headers::SUBJECT).unwrap_or_default(),
        error: header(h, dlq_headers::ERROR).unwrap_or_default(),
        deliveries: number(dlq_headers::DELIVERIES),
        time,
        ce_type: header(h, headers::TYPE),
        stream_sequence: number(dlq_headers::STREAM_SEQUENCE),
        size: truncated.unwrap_or(len as u64),
        truncated: truncated.is_some(),
    }
}

/// Every dead letter (of `consumer` only, when given), oldest first.
///
/// # Errors
/// [`BusError::JetStream`] when `JARVIS_DLQ` is missing or cannot be read.
pub async fn list(js: &Context, consumer: Option<&str>) -> Result<Vec<DeadLetter>, BusError> {
    let filter = consumer.map_or(DLQ_SUBJECTS.to_string(), dlq_subject);
    let stream = js
        .get_stream(DLQ_STREAM)
        .await
        .map_err(|e| BusError::js(format!("opening stream {DLQ_STREAM}"), e))?;
    let mut reader = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter.clone(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::js(format!("reading {filter}"), e))?;
    let pending = reader
        .info()
        .await
        .map_err(|e| BusError::js(format!("reading {filter}"), e))?
        .num_pending;
    let mut out = Vec::new();
    if pending == 0 {
        return Ok(out);
    }
    let mut messages = reader
        .messages()
        .await
        .map_err(|e| BusError::js(format!("reading {filter}"), e))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| BusError::js(format!("reading {filter}"), e))?;
        let info = message
            .info()
            .map_err(|e| BusError::js(format!("reading {filter}"), e))?;
        let (id, left) = (info.stream_sequence, info.pending);
        let published = info.published;
        let time = DateTime::from_timestamp(published.unix_timestamp(), published.nanosecond())
            .unwrap_or_default();
        out.push(dead_letter(
            id,
            message.subject.as_str(),
            message.headers.as_ref(),
            message.payload.len(),
            time,
        ));
        if left == 0 {
            break;
        }
    }
    Ok(out)
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replayed {
    /// The dead letter's id (its sequence in `JARVIS_DLQ`), now deleted.
    pub id: u64,
    /// Where it was republished.
    pub subject: String,
    /// Its new sequence in `JARVIS_EVENTS`.
    pub new_sequence: u64,
    /// Whether JetStream dropped it as a duplicate (an earlier replay of it already published it).
    pub duplicate: bool,
}

/// Republishes dead letter `id` to its original subject with its original headers (see the module docs),
/// then deletes it. With `consumer`, refuses a dead letter of another consumer.
///
/// # Errors
/// [`BusError::JetStream`] when there is no such dead letter, it belongs to another consumer, its payload
/// was truncated and the original is gone from `JARVIS_EVENTS`, or a call fails.
pub async fn replay(js: &Context, id: u64, consumer: Option<&str>) -> Result<Replayed, BusError> {
    let op = || format!("replaying dead letter {id}");
    let dlq = js
        .get_stream_no_info(DLQ_STREAM)
        .await
        .map_err(|e| BusError::js(format!("opening stream {DLQ_STREAM}"), e))?;
    let message = dlq
        .get_raw_message(id)
        .await
        .map_err(|e| BusError::js(op(), format!("no dead letter {id} in {DLQ_STREAM}: {e}")))?;
    let letter = dead_letter(
        id,
        message.subject.as_str(),
        Some(&message.headers),
        message.payload.len(),
        DateTime::default(),
    );
    if let Some(c) = consumer {
        if letter.consumer != c {
            return Err(BusError::js(
                op(),
                format!("it belongs to consumer {}, not {c}", letter.consumer),
            ));
        }
    }
    if letter.subject.is_empty() {
        return Err(BusError::js(
            op(),
            format!(
                "it has no {} header: where it came from is unknown",
                dlq_headers::SUBJECT
            ),
        ));
    }
    let payload = if letter.truncated {
        let events = js
            .get_stream_no_info(EVENTS_STREAM)
            .await
            .map_err(|e| BusError::js(format!("opening stream {EVENTS_STREAM}"), e))?;
        let original = events.get_raw_message(letter.stream_sequence).await.map_err(|e| {
            BusError::js(
                op(),
                format!(
                    "its payload was truncated and the original (sequence {} of {EVENTS_STREAM}) is gone: {e}",
                    letter.stream_sequence
                ),
            )
        })?;
        original.payload
    } else {
        message.payload.clone()
    };
    let mut h = HeaderMap::new();
    for (name, values) in message.headers.iter() {
        let lower = AsRef::<str>::as_ref(name).to_ascii_lowercase();
        if lower.starts_with("jarvis-dlq-") || lower.starts_with("nats-") {
            continue;
        }
        for value in values {
            h.append(name.clone(), value.clone());
        }
    }
    h.insert(headers::MSG_ID, format!("replay:{id}").as_str());
    let ack = js
        .publish_with_headers(letter.subject.clone(), h, payload)
        .await
        .map_err(|e| BusError::js(format!("publishing to {}", letter.subject), e))?
        .await
        .map_err(|e| BusError::js(format!("awaiting ack from {}", letter.subject), e))?;
    dlq.delete_message(id)
        .await
        .map_err(|e| BusError::js(format!("deleting dead letter {id} after its replay"), e))?;
    Ok(Replayed {
        id,
        subject: letter.subject,
        new_sequence: ack.sequence,
        duplicate: ack.duplicate,
    })
}

/// Deletes every dead letter (of `consumer` only, when given) and says how many.
///
/// # Errors
/// [`BusError::JetStream`] when `JARVIS_DLQ` is missing or refuses.
pub async fn purge(js: &Context, consumer: Option<&str>) -> Result<u64, BusError> {
    let stream = js
        .get_stream_no_info(DLQ_STREAM)
        .await
        .map_err(|e| BusError::js(format!("opening stream {DLQ_STREAM}"), e))?;
    let response = match consumer {
        Some(c) => stream.purge().filter(dlq_subject(c)).await,
        None => stream.purge().await,
    }
    .map_err(|e| BusError::js(format!("purging {DLQ_STREAM}"), e))?;
    Ok(response.purged)
}
