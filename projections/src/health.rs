//! Agent health, in memory only: the latest heartbeat of every agent instance, read from core NATS
//! (`jarvis.health.<agent>`, JSON as documented in `bus/src/health.rs`), and down detection: an instance
//! is down when no heartbeat came for 3 × its `interval_ms`. Plus DLQ counts per subject from the
//! `JARVIS_DLQ` stream.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The subject heartbeats are published on (core NATS).
pub const HEALTH_SUBJECTS: &str = "jarvis.health.>";
/// The dead-letter stream.
pub const DLQ_STREAM: &str = "JARVIS_DLQ";

/// A consumer's backlog as an agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConsumerHealth {
    /// The durable consumer.
    pub name: String,
    /// Messages not yet delivered.
    #[serde(default)]
    pub num_pending: u64,
    /// Delivered, not yet acknowledged.
    #[serde(default)]
    pub num_ack_pending: u64,
    /// Redelivered so far.
    #[serde(default)]
    pub num_redelivered: u64,
}

/// A heartbeat, as published on `jarvis.health.<agent>` (the ops contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Heartbeat {
    /// The agent, e.g. `risk`.
    pub agent: String,
    /// The process instance.
    pub instance: String,
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// Interval between heartbeats, ms.
    pub interval_ms: u64,
    /// `ok`, `degraded` or `halted`.
    pub status: String,
    /// Its consumers' backlogs.
    #[serde(default)]
    pub consumers: Vec<ConsumerHealth>,
    /// Messages it has dead-lettered.
    #[serde(default)]
    pub dlq_messages: u64,
}

/// An agent instance's health.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AgentStatus {
    /// The agent.
    pub agent: String,
    /// The instance.
    pub instance: String,
    /// `ok`, `degraded`, `halted` as reported, or `down` when silent for 3 × its interval.
    pub status: String,
    /// Whether it is down.
    pub down: bool,
    /// When its last heartbeat arrived (this process's clock).
    pub last_seen: DateTime<Utc>,
    /// The last heartbeat.
    pub heartbeat: Heartbeat,
}

#[derive(Debug, Clone)]
struct Seen {
    heartbeat: Heartbeat,
    received: DateTime<Utc>,
}

/// The latest heartbeats, shared; fed by [`AgentHealth::record`] (or [`AgentHealth::subscribe`]).
#[derive(Debug, Clone, Default)]
pub struct AgentHealth {
    seen: Arc<RwLock<BTreeMap<(String, String), Seen>>>,
}

impl AgentHealth {
    /// Records a heartbeat received at `received`.
    pub fn record(&self, heartbeat: Heartbeat, received: DateTime<Utc>) {
        let key = (heartbeat.agent.clone(), heartbeat.instance.clone());
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        seen.insert(
            key,
            Seen {
                heartbeat,
                received,
            },
        );
    }

    /// Every instance seen, with its status as of `now`.
    pub fn agents_at(&self, now: DateTime<Utc>) -> Vec<AgentStatus> {
        let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
        seen.values()
            .map(|s| {
                let silence = now - s.received;
                let limit = chrono::Duration::milliseconds(
                    (s.heartbeat.interval_ms.max(1) as i64).saturating_mul(3),
                );
                let down = silence > limit;
                AgentStatus {
                    agent: s.heartbeat.agent.clone(),
                    instance: s.heartbeat.instance.clone(),
                    status: if down {
                        "down".into()
                    } else {
                        s.heartbeat.status.clone()
                    },
                    down,
                    last_seen: s.received,
                    heartbeat: s.heartbeat.clone(),
                }
            })
            .collect()
    }

    /// Every instance seen, with its status now.
    pub fn agents(&self) -> Vec<AgentStatus> {
        self.agents_at(Utc::now())
    }

    /// Subscribes to [`HEALTH_SUBJECTS`] on core NATS and records heartbeats until the connection closes
    /// or `shutdown` completes. Undecodable heartbeats are logged and skipped.
    ///
    /// # Errors
    /// When the subscription cannot be made.
    pub async fn subscribe(
        &self,
        client: &async_nats::Client,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), async_nats::SubscribeError> {
        let mut sub = client.subscribe(HEALTH_SUBJECTS).await?;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                msg = sub.next() => {
                    let Some(msg) = msg else { return Ok(()) };
                    match serde_json::from_slice::<Heartbeat>(&msg.payload) {
                        Ok(hb) => self.record(hb, Utc::now()),
                        Err(e) => tracing::warn!(subject = %msg.subject, cause = %e, "undecodable heartbeat skipped"),
                    }
                }
            }
        }
    }
}

/// Dead-lettered messages per DLQ subject.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct DlqCounts {
    /// Messages in the stream.
    pub total: u64,
    /// Per subject (`jarvis.dlq.<consumer>`).
    pub subjects: BTreeMap<String, u64>,
}

/// Counts of the `JARVIS_DLQ` stream per subject (zero when the stream does not exist).
///
/// # Errors
/// When JetStream does not answer within 5 s.
pub async fn dlq_counts(
    js: &async_nats::jetstream::Context,
) -> Result<DlqCounts, crate::ProjectionError> {
    let fetch = async {
        let Ok(mut stream) = js.get_stream(DLQ_STREAM).await else {
            return Ok(DlqCounts::default());
        };
        let total = stream
            .info()
            .await
            .map_err(|e| crate::ProjectionError::Bus(e.to_string()))?
            .state
            .messages;
        let mut subjects = BTreeMap::new();
        let mut listed = stream
            .info_with_subjects("jarvis.dlq.>")
            .await
            .map_err(|e| crate::ProjectionError::Bus(e.to_string()))?;
        while let Some(entry) = listed.next().await {
            let (subject, count) = entry.map_err(|e| crate::ProjectionError::Bus(e.to_string()))?;
            subjects.insert(subject, count as u64);
        }
        Ok(DlqCounts { total, subjects })
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| crate::ProjectionError::Bus("JetStream did not answer within 5 s".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_instances_go_down_after_three_intervals() {
        let health = AgentHealth::default();
        let t0: DateTime<Utc> = "2026-11-21T10:00:00Z".parse().unwrap();
        let hb: Heartbeat = serde_json::from_str(
            r#"{"agent":"risk","instance":"a1","at":"2026-11-21T10:00:00Z","interval_ms":5000,"status":"ok",
                "consumers":[{"name":"risk","num_pending":3,"num_ack_pending":1,"num_redelivered":0}],"dlq_messages":2}"#,
        )
        .unwrap();
        health.record(hb, t0);
        let at = |s: i64| health.agents_at(t0 + chrono::Duration::seconds(s));
        assert_eq!(at(14)[0].status, "ok");
        assert!(!at(15)[0].down);
        assert!(at(16)[0].down);
        assert_eq!(at(16)[0].status, "down");
        assert_eq!(at(16)[0].heartbeat.consumers[0].num_pending, 3);
    }
}
