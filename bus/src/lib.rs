//! The bus: NATS JetStream streams, the CloudEvents envelope, and the durable consumer runner.
//!
//! # Layout
//! - [`envelope`]: CloudEvents 1.0 NATS binding (binary mode): the JSON payload is the body, the attributes
//!   are `ce-*` headers. [`envelope::headers_for`] builds them from a stored event; [`Envelope`] reads them back.
//! - [`provision`]: idempotent creation and update of the `JARVIS_EVENTS` and `JARVIS_DLQ` streams.
//! - [`dlq`]: the dead letters from the operator's side: list, replay, purge.
//! - [`health`]: heartbeats on `jarvis.health.<agent>` with consumer lag and dead letters.
//! - [`consumer`]: a durable pull consumer with explicit acks, nak-with-delay back-off, max deliveries, and
//!   dead-lettering of poison messages to `jarvis.dlq.<consumer>`.
//!
//! Everything here works with nats-server 2.9 (no multi-filter consumers, no per-message TTL).

pub mod consumer;
pub mod dlq;
pub mod envelope;
pub mod health;
pub mod provision;
pub mod server;
pub mod service;

pub use consumer::{run_consumer, ConsumerSettings, Handler, HandlerError};
pub use envelope::{Envelope, EnvelopeError};
pub use provision::{ensure_streams, StreamSettings};

/// The stream of every event: subjects `jarvis.evt.>`.
pub const EVENTS_STREAM: &str = "JARVIS_EVENTS";
/// The dead-letter stream: subjects `jarvis.dlq.>`.
pub const DLQ_STREAM: &str = "JARVIS_DLQ";
/// Subjects of the events stream.
pub const EVENTS_SUBJECTS: &str = "jarvis.evt.>";
/// Subjects of the dead-letter stream.
pub const DLQ_SUBJECTS: &str = "jarvis.dlq.>";

/// The dead-letter subject of a consumer: `jarvis.dlq.<consumer>`.
pub fn dlq_subject(consumer: &str) -> String {
    format!(
        "jarvis.dlq.{}",
        jarvis_domain::event::subject_token(consumer)
    )
}

/// A failure talking to NATS.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The server could not be reached.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The URL tried (credentials removed).
        url: String,
        /// The client's error.
        source: async_nats::ConnectError,
    },
    /// A JetStream API call failed; names the operation.
    #[error("{operation}: {message}")]
    JetStream {
        /// What was being done, e.g. `creating stream JARVIS_EVENTS`.
        operation: String,
        /// The server's or client's message.
        message: String,
    },
}

impl BusError {
    /// Wraps any error from a JetStream call, naming the operation.
    pub fn js(operation: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Self::JetStream {
            operation: operation.into(),
            message: err.to_string(),
        }
    }
}

/// Connects to NATS with reconnection forever (with back-off) and a client name, and returns the client and
/// its JetStream context. `url` may list several servers, comma-separated (the nodes of a cluster): the
/// client connects to any and fails over to the others.
///
/// # Errors
/// [`BusError::Connect`] when the first connection fails.
pub async fn connect(
    url: &str,
    name: &str,
) -> Result<(async_nats::Client, async_nats::jetstream::Context), BusError> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(
            url.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect::<Vec<_>>(),
        )
        .await
        .map_err(|source| BusError::Connect {
            url: redact_url(url),
            source,
        })?;
    let js = async_nats::jetstream::new(client.clone());
    Ok((client, js))
}

/// A NATS URL (or comma-separated list) without credentials: `nats://user:pass@h` and `nats://token@h`
/// become `nats://***@h`.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| match one.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => one.to_string(),
            },
            None => match one.rsplit_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => one.to_string(),
            },
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn nats_urls_lose_their_credentials() {
        assert_eq!(super::redact_url("nats://u:p@h:4222"), "nats://***@h:4222");
        assert_eq!(
            super::redact_url("nats://tok@h:1,nats://h2:2"),
            "nats://***@h:1,nats://h2:2"
        );
        assert_eq!(
            super::redact_url("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
    }
}
