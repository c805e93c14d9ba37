//! Heartbeats: every running agent says it is alive on core NATS (not JetStream) subject
//! `jarvis.health.<agent>`, every `interval_ms`, with its consumers' lag and its dead letters.
//!
//! An instance is down when no heartbeat came for [`DOWN_AFTER_INTERVALS`] × its interval. Readers (`jarvis
//! status`, the gateway, the projections, Telegram) subscribe to [`HEALTH_SUBJECTS`], or ask every instance
//! at once with a request on [`HEALTH_PING_SUBJECT`] (each replies with its current heartbeat), which is what
//! `jarvis status` does so it need not wait a whole interval.
//!
//! ```text
//! nats sub 'jarvis.health.>'
//! nats req jarvis.ping.health '' --replies 0 --timeout 1s
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::{dlq_subject, DLQ_STREAM, EVENTS_STREAM};

/// Subjects of every heartbeat: `jarvis.health.>`.
pub const HEALTH_SUBJECTS: &str = "jarvis.health.>";
/// A request here is answered by every running instance with its heartbeat (many replies).
pub const HEALTH_PING_SUBJECT: &str = "jarvis.ping.health";
/// The default heartbeat interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(5_000);
/// The shortest heartbeat interval accepted (`health.interval_ms`).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The longest heartbeat interval accepted (`health.interval_ms`).
pub const MAX_INTERVAL: Duration = Duration::from_millis(60_000);

/// The interval [`HeartbeatSettings::new`] uses in this process, in ms: [`DEFAULT_INTERVAL`] until
/// [`set_process_interval`] (the CLI sets `health.interval_ms` once at start).
static PROCESS_INTERVAL_MS: AtomicU64 = AtomicU64::new(DEFAULT_INTERVAL.as_millis() as u64);

/// Sets the heartbeat interval of every heartbeat set up afterwards in this process ([`HeartbeatSettings::new`]),
/// clamped to [`MIN_INTERVAL`]..=[`MAX_INTERVAL`]. Configuration validates `health.interval_ms` first, with
/// an error naming it.
pub fn set_process_interval(interval: Duration) {
    let ms = interval.clamp(MIN_INTERVAL, MAX_INTERVAL).as_millis() as u64;
    PROCESS_INTERVAL_MS.store(ms, Ordering::Relaxed);
}

/// The heartbeat interval of this process (see [`set_process_interval`]).
pub fn process_interval() -> Duration {
    Duration::from_millis(PROCESS_INTERVAL_MS.load(Ordering::Relaxed))
}
/// An instance is down after this many intervals without a heartbeat.
pub const DOWN_AFTER_INTERVALS: u32 = 3;

/// The heartbeat subject of an agent: `jarvis.health.<agent>`.
pub fn health_subject(agent: &str) -> String {
    format!(
        "jarvis.health.{}",
        jarvis_domain::event::subject_token(agent)
    )
}

/// How an instance says it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Working.
    #[default]
    Ok,
    /// Running but impaired (e.g. a consumer it should read is missing, a dependency is failing).
    Degraded,
    /// Deliberately not acting (e.g. trading halted by risk).
    Halted,
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Halted => "halted",
        })
    }
}

/// The state of one durable consumer of `JARVIS_EVENTS`, as JetStream reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerHealth {
    /// The durable name.
    pub name: String,
    /// Messages not yet delivered: the lag.
    pub num_pending: u64,
    /// Messages delivered and not yet acked.
    pub num_ack_pending: u64,
    /// Messages delivered more than once.
    pub num_redelivered: u64,
}

/// What an instance publishes on `jarvis.health.<agent>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The agent, e.g. `trading`.
    pub agent: String,
    /// Which process runs it (`<host>:<pid>` by default): several may run the same agent.
    pub instance: String,
    /// When it was sent (wall clock: liveness is about now, not event time).
    pub at: DateTime<Utc>,
    /// How often it is sent.
    pub interval_ms: u64,
    /// How it is doing.
    pub status: HealthStatus,
    /// Its durable consumers.
    pub consumers: Vec<ConsumerHealth>,
    /// Dead letters waiting in `jarvis.dlq.<consumer>` of its consumers.
    pub dlq_messages: u64,
}

impl Heartbeat {
    /// Whether the instance still counts as alive at `now`: a heartbeat within
    /// [`DOWN_AFTER_INTERVALS`] × its interval.
    pub fn is_alive(&self, now: DateTime<Utc>) -> bool {
        let allowance = chrono::Duration::milliseconds(
            (self.interval_ms.max(1) * u64::from(DOWN_AFTER_INTERVALS)) as i64,
        );
        now - self.at <= allowance
    }

    /// Total lag of its consumers.
    pub fn num_pending(&self) -> u64 {
        self.consumers.iter().map(|c| c.num_pending).sum()
    }
}

/// `<host>:<pid>`: names this process among several running the same agent.
pub fn default_instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Reads the state of `consumers` (durables of `JARVIS_EVENTS`) and counts their dead letters. A consumer
/// that does not exist (yet) is reported with zeros; the second value says whether all were found.
pub async fn consumer_health(
    js: &Context,
    consumers: &[String],
) -> (Vec<ConsumerHealth>, u64, bool) {
    let mut out = Vec::with_capacity(consumers.len());
    let mut all_found = true;
    let events = js.get_stream_no_info(EVENTS_STREAM).await.ok();
    for name in consumers {
        let info = match &events {
            Some(stream) => stream.consumer_info(name).await.ok(),
            None => None,
        };
        all_found &= info.is_some();
        out.push(match info {
            Some(info) => ConsumerHealth {
                name: name.clone(),
                num_pending: info.num_pending,
                num_ack_pending: info.num_ack_pending as u64,
                num_redelivered: info.num_redelivered as u64,
            },
            None => ConsumerHealth {
                name: name.clone(),
                num_pending: 0,
                num_ack_pending: 0,
                num_redelivered: 0,
            },
        });
    }
    let mut dlq = 0;
    if let Ok(stream) = js.get_stream_no_info(DLQ_STREAM).await {
        for name in consumers {
            dlq += dlq_count(&stream, &dlq_subject(name)).await;
        }
    }
    (out, dlq, all_found)
}

async fn dlq_count<I>(stream: &async_nats::jetstream::stream::Stream<I>, subject: &str) -> u64 {
    let Ok(subjects) = stream.info_with_subjects(subject).await else {
        return 0;
    };
    subjects
        .try_collect::<Vec<(String, usize)>>()
        .await
        .map(|all| all.iter().map(|(_, n)| *n as u64).sum())
        .unwrap_or(0)
}

/// What a heartbeat publisher reports about.
#[derive(Debug, Clone)]
pub struct HeartbeatSettings {
    /// The agent, e.g. `trading`.
    pub agent: String,
    /// This process among several running the agent; [`default_instance`] by default.
    pub instance: String,
    /// How often to publish.
    pub interval: Duration,
    /// Its durable consumers of `JARVIS_EVENTS`.
    pub consumers: Vec<String>,
}

impl HeartbeatSettings {
    /// Settings for `agent` with its `consumers`, this process as the instance, and the process's interval
    /// ([`process_interval`]: `health.interval_ms`, 5 s by default).
    pub fn new(agent: impl Into<String>, consumers: &[&str]) -> Self {
        Self {
            agent: agent.into(),
            instance: default_instance(),
            interval: process_interval(),
            consumers: consumers.iter().map(|c| c.to_string()).collect(),
        }
    }
}

/// Builds the current heartbeat of an agent: its consumers' state from JetStream, and `status`. A missing
/// consumer turns `ok` and `halted` into `degraded`: something needs fixing, which matters more than a halt
/// (a halt is also visible in `jarvis.cmd.risk.status` and in the risk agent's own heartbeat).
pub async fn current(
    js: &Context,
    settings: &HeartbeatSettings,
    status: HealthStatus,
) -> Heartbeat {
    let (consumers, dlq_messages, all_found) = consumer_health(js, &settings.consumers).await;
    let status = if all_found {
        status
    } else {
        HealthStatus::Degraded
    };
    Heartbeat {
        agent: settings.agent.clone(),
        instance: settings.instance.clone(),
        at: Utc::now(),
        interval_ms: settings.interval.as_millis() as u64,
        status,
        consumers,
        dlq_messages,
    }
}

/// Publishes the heartbeat of `settings.agent` on `jarvis.health.<agent>` every interval (the first at
/// once), and answers requests on [`HEALTH_PING_SUBJECT`] with it, until the returned task is aborted.
/// `status` says how the agent is doing at each beat.
pub fn spawn_heartbeat<S>(
    client: async_nats::Client,
    settings: HeartbeatSettings,
    status: S,
) -> tokio::task::JoinHandle<()>
where
    S: Fn() -> HealthStatus + Send + Sync + 'static,
{
    let status = Arc::new(status);
    tokio::spawn(async move {
        let js = async_nats::jetstream::new(client.clone());
        let subject = health_subject(&settings.agent);
        let mut pings = match client.subscribe(HEALTH_PING_SUBJECT).await {
            Ok(s) => s.boxed(),
            Err(e) => {
                tracing::warn!(agent = %settings.agent, cause = %e, "cannot answer health pings");
                futures::stream::pending().boxed()
            }
        };
        let mut tick = tokio::time::interval(settings.interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let woken = tokio::select! {
                _ = tick.tick() => Some(None),
                ping = pings.next() => ping.map(|message| message.reply),
            };
            let reply_to = match woken {
                Some(reply_to) => reply_to,
                None => {
                    // The subscription ended (the client is closing): keep beating.
                    pings = futures::stream::pending().boxed();
                    continue;
                }
            };
            let beat = current(&js, &settings, status()).await;
            let Ok(body) = serde_json::to_vec(&beat) else {
                continue;
            };
            let target = reply_to.unwrap_or_else(|| subject.clone().into());
            if let Err(e) = client.publish(target, body.into()).await {
                tracing::debug!(agent = %settings.agent, cause = %e, "heartbeat not sent");
            }
        }
    })
}

/// Asks every running instance for its heartbeat and collects the replies that arrive within `wait`.
/// Sorted by agent, then instance.
///
/// # Errors
/// [`crate::BusError::JetStream`] when the request cannot be sent.
pub async fn ping_all(
    client: &async_nats::Client,
    wait: Duration,
) -> Result<Vec<Heartbeat>, crate::BusError> {
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| crate::BusError::js("subscribing to health replies", e))?;
    client
        .publish_with_reply(HEALTH_PING_SUBJECT, inbox, bytes::Bytes::new())
        .await
        .map_err(|e| crate::BusError::js(format!("publishing to {HEALTH_PING_SUBJECT}"), e))?;
    client
        .flush()
        .await
        .map_err(|e| crate::BusError::js("flushing the health ping", e))?;
    let mut beats = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
        if let Ok(beat) = serde_json::from_slice::<Heartbeat>(&message.payload) {
            beats.push(beat);
        }
    }
    beats.sort_by(|a, b| (&a.agent, &a.instance).cmp(&(&b.agent, &b.instance)));
    Ok(beats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_have_the_agreed_shape() {
        let beat = Heartbeat {
            agent: "trading".into(),
            instance: "h:1".into(),
            at: DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            interval_ms: 5000,
            status: HealthStatus::Halted,
            consumers: vec![ConsumerHealth {
                name: "trading".into(),
                num_pending: 3,
                num_ack_pending: 1,
                num_redelivered: 0,
            }],
            dlq_messages: 2,
        };
        let json = serde_json::to_value(&beat).unwrap();
        assert_eq!(json["status"], "halted");
        assert_eq!(json["at"], "2026-01-01T00:00:00Z");
        assert_eq!(json["consumers"][0]["num_pending"], 3);
        assert_eq!(health_subject("trading"), "jarvis.health.trading");
        assert!(beat.is_alive(beat.at + chrono::Duration::milliseconds(15_000)));
        assert!(!beat.is_alive(beat.at + chrono::Duration::milliseconds(15_001)));
    }
}
