//! A durable pull consumer with explicit acks, back-off, max deliveries and a dead-letter stream.
//!
//! Outcome of each message:
//! - handled → ack;
//! - transient error → nak with the back-off delay for its delivery count; on the last allowed delivery,
//!   dead-letter instead (JetStream would otherwise stop redelivering and leave it pending forever);
//! - permanent error (undecodable envelope, unknown `ce-type`, payload not matching its type, the handler's
//!   permanent error) → copy to `jarvis.dlq.<consumer>` with the error and the original headers, then term.
//!
//! A poison message never stops the consumer: the runner moves on to the next message.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{Context, Message};
use async_nats::HeaderMap;
use std::panic::AssertUnwindSafe;

use futures::{FutureExt, StreamExt};
use jarvis_domain::AnyEvent;

use crate::envelope::{headers, Envelope};
use crate::{dlq_subject, BusError, EVENTS_STREAM};

/// Headers added to a dead-lettered message, beside its original headers.
pub mod dlq_headers {
    /// Why the message was dead-lettered.
    pub const ERROR: &str = "jarvis-dlq-error";
    /// The consumer that gave up on it.
    pub const CONSUMER: &str = "jarvis-dlq-consumer";
    /// The subject it was published on.
    pub const SUBJECT: &str = "jarvis-dlq-subject";
    /// Its sequence in the events stream.
    pub const STREAM_SEQUENCE: &str = "jarvis-dlq-stream-sequence";
    /// How many times it was delivered.
    pub const DELIVERIES: &str = "jarvis-dlq-deliveries";
    /// Present when the dead letter holds only the start of the payload: the original size in bytes.
    pub const TRUNCATED: &str = "jarvis-dlq-truncated";
}

/// Settings of one durable consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The durable name, shared by every process running this consumer.
    pub durable: String,
    /// Subjects it reads, e.g. `jarvis.evt.market.>`.
    pub filter_subject: String,
    /// Most messages delivered and not yet acked.
    pub max_ack_pending: i64,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Most deliveries of one message; the last one dead-letters on a transient error.
    pub max_deliver: i64,
    /// Nak delays by delivery count (the last repeats).
    pub backoff: Vec<Duration>,
}

impl ConsumerSettings {
    /// Defaults for a consumer named `durable` reading `filter_subject`.
    pub fn new(durable: impl Into<String>, filter_subject: impl Into<String>) -> Self {
        Self {
            durable: durable.into(),
            filter_subject: filter_subject.into(),
            max_ack_pending: 1_000,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            backoff: vec![
                Duration::from_millis(500),
                Duration::from_secs(2),
                Duration::from_secs(10),
                Duration::from_secs(30),
            ],
        }
    }

    fn delay_for(&self, delivered: i64) -> Duration {
        let i = (delivered.max(1) - 1) as usize;
        self.backoff
            .get(i)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

/// A handler's failure: transient (retry later) or permanent (dead-letter now).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying: a database or network hiccup, a conflict.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying won't help: the event is invalid for this handler.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// What a consumer does with each event.
pub trait Handler: Send + Sync {
    /// Handles one decoded event. Must be idempotent: a message can be delivered more than once.
    fn handle(
        &self,
        envelope: &Envelope,
        event: AnyEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Runs a durable pull consumer on `JARVIS_EVENTS` until `shutdown` completes. Creates the consumer if it
/// does not exist. Errors of single messages never end it; only a failure to create the consumer does.
///
/// # Errors
/// [`BusError::JetStream`] when the stream is missing or the consumer cannot be created.
pub async fn run_consumer<H: Handler>(
    js: &Context,
    settings: &ConsumerSettings,
    handler: &H,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError> {
    let stream = js
        .get_stream(EVENTS_STREAM)
        .await
        .map_err(|e| BusError::js(format!("opening stream {EVENTS_STREAM}"), e))?;
    let consumer = stream
        .get_or_create_consumer(
            &settings.durable,
            PullConfig {
                durable_name: Some(settings.durable.clone()),
                filter_subject: settings.filter_subject.clone(),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: settings.ack_wait,
                max_deliver: settings.max_deliver,
                max_ack_pending: settings.max_ack_pending,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| BusError::js(format!("creating consumer {}", settings.durable), e))?;
    tokio::pin!(shutdown);
    loop {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(consumer = %settings.durable, cause = %e, "pull failed; retrying");
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => process(js, settings, handler, message).await,
                Some(Err(e)) => {
                    // Missed heartbeats or a reconnect: the stream recovers by itself.
                    tracing::debug!(consumer = %settings.durable, cause = %e, "pull stream hiccup");
                }
                None => break,
            }
        }
    }
}

async fn process<H: Handler>(
    js: &Context,
    settings: &ConsumerSettings,
    handler: &H,
    message: Message,
) {
    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
    let outcome = match Envelope::from_parts(
        message.subject.as_str(),
        message.headers.as_ref(),
        message.payload.clone(),
    )
    .map(|envelope| Envelope {
        delivered,
        ..envelope
    }) {
        Err(e) => Err(HandlerError::Permanent(format!("bad envelope: {e}"))),
        Ok(envelope) => match AnyEvent::decode(&envelope.ce_type, &envelope.data) {
            Err(e) => Err(HandlerError::Permanent(e.to_string())),
            // A handler that panics has a bug that this message triggers: dead-letter it, keep going.
            Ok(event) => AssertUnwindSafe(handler.handle(&envelope, event))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(HandlerError::Permanent(format!("handler panicked: {what}")))
                }),
        },
    };
    // max_deliver <= 0 is JetStream's "unlimited".
    let last_try = settings.max_deliver > 0 && delivered >= settings.max_deliver;
    let ack = match outcome {
        Ok(()) => {
            tracing::debug!(
                consumer = %settings.durable,
                stream_sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0),
                delivered,
                "handled"
            );
            message.ack().await
        }
        Err(HandlerError::Transient(reason)) if !last_try => {
            let delay = settings.delay_for(delivered);
            tracing::warn!(consumer = %settings.durable, delivered, ?delay, %reason, "transient failure; will retry");
            message.ack_with(AckKind::Nak(Some(delay))).await
        }
        Err(e) => {
            let reason = match e {
                HandlerError::Transient(r) => format!("gave up after {delivered} deliveries: {r}"),
                HandlerError::Permanent(r) => r,
            };
            // The message leaves the consumer only once the dead letter is stored: on the last delivery the
            // server would not redeliver it, so retry here, keeping it ours with progress acks.
            let mut pause = Duration::from_millis(200);
            while let Err(e) =
                dead_letter(js, &settings.durable, &message, delivered, &reason).await
            {
                tracing::error!(consumer = %settings.durable, cause = %e, ?pause, "dead-lettering failed; retrying");
                let _ = message.ack_with(AckKind::Progress).await;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            message.ack_with(AckKind::Term).await
        }
    };
    if let Err(e) = ack {
        tracing::warn!(consumer = %settings.durable, cause = %e, "ack failed; the message will be redelivered");
    }
}

/// Header values must be one line of visible text.
fn header_value(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1_000)
        .collect()
}

async fn dead_letter(
    js: &Context,
    consumer: &str,
    message: &Message,
    delivered: i64,
    reason: &str,
) -> Result<(), BusError> {
    let mut h = HeaderMap::new();
    if let Some(original) = &message.headers {
        for (name, values) in original.iter() {
            // Publish directives of the original (`Nats-Msg-Id`, `Nats-Expected-Last-Sequence`, ...) would
            // make JetStream refuse or de-duplicate the dead letter; the attributes are what matters.
            if AsRef::<str>::as_ref(name)
                .to_ascii_lowercase()
                .starts_with("nats-")
            {
                continue;
            }
            for value in values {
                h.append(name.clone(), value.clone());
            }
        }
    }
    let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    // One dead letter per consumer and stream message, however often it is retried.
    h.insert(headers::MSG_ID, format!("{consumer}:{seq}").as_str());
    h.insert(dlq_headers::ERROR, header_value(reason).as_str());
    h.insert(dlq_headers::CONSUMER, consumer);
    h.insert(dlq_headers::SUBJECT, message.subject.as_str());
    h.insert(dlq_headers::STREAM_SEQUENCE, seq.to_string().as_str());
    h.insert(dlq_headers::DELIVERIES, delivered.to_string().as_str());
    // The original fit the server's max_payload; with our headers it may not. Then keep its start (the
    // whole stays in JARVIS_EVENTS, where a replay takes it from).
    let max_payload = js.client().server_info().max_payload;
    let headers_len: usize = h
        .iter()
        .map(|(n, vs)| {
            vs.iter()
                .map(|v| AsRef::<str>::as_ref(n).len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum::<usize>()
        + 64;
    let room = max_payload.saturating_sub(headers_len + 64);
    let mut payload = message.payload.clone();
    if max_payload > 0 && payload.len() > room {
        h.insert(dlq_headers::TRUNCATED, payload.len().to_string().as_str());
        payload = payload.slice(..room.min(4_096));
    }
    tracing::warn!(consumer, stream_sequence = seq, %reason, "dead-lettering message");
    let subject = dlq_subject(consumer);
    js.publish_with_headers(subject.clone(), h, payload)
        .await
        .map_err(|e| BusError::js(format!("publishing to {subject}"), e))?
        .await
        .map_err(|e| BusError::js(format!("awaiting ack from {subject}"), e))?;
    Ok(())
}
