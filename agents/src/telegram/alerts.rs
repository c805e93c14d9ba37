//! Alerts pushed to the owner's chats: fills, failures, rejections with their reasons, halts and resumes,
//! LLM budget alerts (durable consumers of the events: nothing is lost across restarts, and a redelivered
//! event finds its alert already recorded as `ChatReplySent` and is not sent twice), and agents that stop
//! sending heartbeats (`jarvis.health.>`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use jarvis_bus::{run_consumer, ConsumerSettings, Envelope, Handler, HandlerError};
use jarvis_domain::llm::LlmEvent;
use jarvis_domain::trading::order::OrderEvent;
use jarvis_domain::trading::RiskEvent;
use jarvis_domain::AnyEvent;
use serde::Deserialize;

use super::bot::{Reply, TelegramAgent};

/// The alert consumers: durable name and subject filter (nats-server 2.9: one filter each).
pub const SOURCES: &[(&str, &str)] = &[
    ("telegram-alerts-trade", "jarvis.evt.trade.>"),
    ("telegram-alerts-risk", "jarvis.evt.risk.>"),
    ("telegram-alerts-llm", "jarvis.evt.llm.>"),
];

/// The subject heartbeats are published on.
pub const HEALTH_SUBJECTS: &str = "jarvis.health.>";

/// The last heartbeat of one agent instance (the fields of the shared heartbeat this agent reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Beat {
    /// The agent.
    pub agent: String,
    /// Its process.
    pub instance: String,
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// How often it is sent.
    pub interval_ms: u64,
    /// `ok`, `degraded` or `halted`.
    pub status: String,
}

impl Beat {
    /// Alive at `now`: a heartbeat within three intervals.
    pub fn is_alive(&self, now: DateTime<Utc>) -> bool {
        let allowance = chrono::Duration::milliseconds((self.interval_ms.max(1) * 3) as i64);
        now - self.at <= allowance
    }
}

/// The latest heartbeat of every agent instance seen.
#[derive(Debug, Default, Clone)]
pub struct HealthBoard(Arc<Mutex<HashMap<(String, String), Beat>>>);

impl HealthBoard {
    /// Records a heartbeat.
    pub fn record(&self, beat: Beat) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert((beat.agent.clone(), beat.instance.clone()), beat);
    }

    /// Every instance's latest heartbeat, by agent and instance.
    pub fn snapshot(&self) -> Vec<Beat> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut beats: Vec<Beat> = map.values().cloned().collect();
        beats.sort_by(|a, b| (&a.agent, &a.instance).cmp(&(&b.agent, &b.instance)));
        beats
    }
}

/// The text of the alert for an event, if it is one the owner wants to hear of.
pub fn alert_text(event: &AnyEvent) -> Option<String> {
    Some(match event {
        AnyEvent::Trade(OrderEvent::OrderFilled(f)) => format!(
            "Filled: {} {} {} at {} (fee {}){}.\nOrder {}",
            f.side,
            f.quantity.normalize(),
            f.symbol,
            f.price.normalize(),
            f.fee.normalize(),
            if f.complete { "" } else { ", partly" },
            f.order_id
        ),
        AnyEvent::Trade(OrderEvent::OrderFailed(f)) => {
            format!("Order {} failed: {}", f.order_id, f.reason)
        }
        AnyEvent::Trade(OrderEvent::TradeRejected(r)) => {
            let reasons: Vec<String> = r
                .reasons
                .iter()
                .map(|v| format!("- {:?}: {}", v.rule, v.detail))
                .collect();
            format!(
                "Rejected by risk: order {} of {}\n{}",
                r.order_id,
                r.symbol,
                reasons.join("\n")
            )
        }
        AnyEvent::Risk(RiskEvent::TradingHalted { rule, reason, at }) => {
            format!("Trading HALTED ({rule:?}) at {at}: {reason}\n/resume to resume.")
        }
        AnyEvent::Risk(RiskEvent::TradingResumed { reason, at, .. }) => {
            format!("Trading resumed at {at}: {reason}")
        }
        AnyEvent::Llm(LlmEvent::BudgetAlert {
            scope, spent, cap, ..
        }) => format!(
            "LLM budget alert: {scope} has spent {} of {} USD.",
            spent.round_dp(4).normalize(),
            cap.normalize()
        ),
        AnyEvent::Llm(LlmEvent::BudgetExceeded {
            scope,
            cap,
            action,
            task,
            ..
        }) => format!(
            "LLM budget reached: {scope} cap {} USD; a {task} call was {action}.",
            cap.normalize()
        ),
        _ => return None,
    })
}

/// The alert consumer.
#[derive(Debug)]
pub struct Alerts(pub Arc<TelegramAgent>);

impl Handler for Alerts {
    async fn handle(&self, envelope: &Envelope, event: AnyEvent) -> Result<(), HandlerError> {
        let Some(text) = alert_text(&event) else {
            return Ok(());
        };
        let agent = &self.0;
        let cause = envelope.event_ref();
        // The chats this event's alert already went to (a redelivery after a crash).
        let done: HashSet<i64> = agent
            .store
            .events_caused_by(cause.event_id)
            .await
            .map_err(|e| HandlerError::Transient(e.to_string()))?
            .iter()
            .filter(|e| e.event_type == "ChatReplySent")
            .filter_map(|e| e.payload["chat_id"].as_i64())
            .collect();
        let mut failed = Vec::new();
        for chat in agent.settings.alert_chats() {
            if done.contains(&chat) {
                continue;
            }
            if !agent
                .send(chat, None, &Reply::text(text.clone()), Some(cause))
                .await
            {
                failed.push(chat);
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(HandlerError::Transient(format!(
                "alert not delivered to chat(s) {failed:?}"
            )))
        }
    }
}

/// Starts the alert consumers and the heartbeat watcher on `tasks`.
pub(crate) fn spawn<F, Fut>(
    agent: &Arc<TelegramAgent>,
    tasks: &mut tokio::task::JoinSet<()>,
    until: &F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    for (durable, subject) in SOURCES {
        let (js, handler, stopped) = (agent.js.clone(), Alerts(agent.clone()), until());
        let mut settings = ConsumerSettings::new(*durable, *subject);
        settings.max_ack_pending = 1;
        tasks.spawn(async move {
            if let Err(e) = run_consumer(&js, &settings, &handler, stopped).await {
                tracing::error!(cause = %e, consumer = %settings.durable, "telegram alerts failed to start");
            }
        });
    }
    let (agent, stopped) = (agent.clone(), until());
    tasks.spawn(async move { watch_health(agent, stopped).await });
}

/// Keeps the health board and alerts when an agent that was alive stops sending heartbeats (and when it
/// comes back).
async fn watch_health(agent: Arc<TelegramAgent>, shutdown: impl std::future::Future<Output = ()>) {
    let mut beats = match agent.client.subscribe(HEALTH_SUBJECTS).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(cause = %e, "cannot watch heartbeats");
            return;
        }
    };
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(StdDuration::from_secs(1));
    let mut down: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            Some(message) = beats.next() => {
                if let Ok(beat) = serde_json::from_slice::<Beat>(&message.payload) {
                    agent.health.record(beat);
                }
            }
            _ = tick.tick() => {
                let now = agent.clock.now();
                // An agent is down when none of its instances is alive.
                let mut alive: HashMap<String, bool> = HashMap::new();
                for beat in agent.health.snapshot() {
                    *alive.entry(beat.agent.clone()).or_default() |= beat.is_alive(now);
                }
                for (name, is_alive) in alive {
                    let text = match (is_alive, down.contains(&name)) {
                        (false, false) => {
                            down.insert(name.clone());
                            format!("Agent {name} is DOWN: no heartbeat for three intervals.")
                        }
                        (true, true) => {
                            down.remove(&name);
                            format!("Agent {name} is back.")
                        }
                        _ => continue,
                    };
                    for chat in agent.settings.alert_chats() {
                        agent.send(chat, None, &Reply::text(text.clone()), None).await;
                    }
                }
            }
        }
    }
}
