//! Idempotent provisioning of Jarvis's streams.

use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;

use crate::{BusError, DLQ_STREAM, DLQ_SUBJECTS, EVENTS_STREAM, EVENTS_SUBJECTS};

/// Settings of the streams; the defaults suit one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// How long events stay in `JARVIS_EVENTS` (zero: forever). The store keeps them regardless.
    pub max_age: Duration,
    /// Window in which a repeated `Nats-Msg-Id` is dropped. At least two minutes.
    pub duplicate_window: Duration,
    /// Replicas (1 on one server; 3 on a cluster).
    pub replicas: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            max_age: Duration::ZERO,
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
        }
    }
}

fn stream_config(
    name: &str,
    subject: &str,
    settings: &StreamSettings,
    max_age: Duration,
) -> Config {
    Config {
        name: name.to_string(),
        subjects: vec![subject.to_string()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        discard: DiscardPolicy::Old,
        max_age,
        duplicate_window: settings.duplicate_window,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// Creates `JARVIS_EVENTS` and `JARVIS_DLQ`, or updates them to these settings. Running it again changes
/// nothing.
///
/// # Errors
/// [`BusError::JetStream`] naming the stream, e.g. when JetStream is not enabled on the server.
pub async fn ensure_streams(js: &Context, settings: &StreamSettings) -> Result<(), BusError> {
    let events = stream_config(EVENTS_STREAM, EVENTS_SUBJECTS, settings, settings.max_age);
    // Dead letters wait for a human: they never expire.
    let dlq = stream_config(DLQ_STREAM, DLQ_SUBJECTS, settings, Duration::ZERO);
    for config in [events, dlq] {
        let name = config.name.clone();
        js.create_or_update_stream(config)
            .await
            .map_err(|e| BusError::js(format!("provisioning stream {name}"), e))?;
    }
    Ok(())
}
