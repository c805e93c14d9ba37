//! NATS micro services: how agents take commands (`jarvis.cmd.<agent>.<verb>`), so that `nats micro ls`
//! lists them and `nats req jarvis.cmd.risk.halt '{"reason":"manual"}'` works from a shell.
//!
//! Requests and replies are JSON. A refused request gets a service error (the `Nats-Service-Error` and
//! `Nats-Service-Error-Code` headers, as the micro protocol defines) with a message that says what was wrong:
//! 400 for a bad request, 409 for a refusal by the domain, 500 for a failure of ours.

use std::future::Future;
use std::sync::Arc;

use async_nats::service::{self, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

use crate::health::{HealthStatus, HeartbeatSettings};
use crate::BusError;

/// Why a request was not carried out; becomes the micro protocol's error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    /// 400 bad request, 409 refused, 500 our failure.
    pub code: usize,
    /// What was wrong.
    pub message: String,
}

impl ServiceError {
    /// A malformed request (400).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            message: message.into(),
        }
    }

    /// A request the domain refused (409).
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            code: 409,
            message: message.into(),
        }
    }

    /// A failure of ours (500).
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            code: 500,
            message: message.into(),
        }
    }
}

/// Parses a JSON request body, or explains why it is not one.
///
/// # Errors
/// [`ServiceError::bad_request`] with serde's message (field, line, column).
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ServiceError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ServiceError::bad_request(format!("invalid request: {e}")))
}

/// An agent's health for [`serve_with_health`]: what its heartbeat reports and how it is doing.
#[derive(Clone)]
pub struct Health {
    /// The agent, its instance, interval and consumers.
    pub settings: HeartbeatSettings,
    /// How it is doing at each beat.
    pub status: Arc<dyn Fn() -> HealthStatus + Send + Sync>,
}

impl Health {
    /// The health of `agent` reading `consumers`, always `ok` unless a consumer is missing.
    pub fn new(agent: &str, consumers: &[&str]) -> Self {
        Self {
            settings: HeartbeatSettings::new(agent, consumers),
            status: Arc::new(|| HealthStatus::Ok),
        }
    }

    /// The same, reporting `status()` at each beat (e.g. `halted` while trading is halted).
    pub fn with_status(
        mut self,
        status: impl Fn() -> HealthStatus + Send + Sync + 'static,
    ) -> Self {
        self.status = Arc::new(status);
        self
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Serves `jarvis-<agent>` with endpoints `jarvis.cmd.<agent>.<verb>` until `shutdown` completes. Each request
/// is handled in turn by `handle(verb, body)`.
///
/// # Errors
/// [`BusError::JetStream`] when the service cannot be registered.
pub async fn serve<H, F>(
    client: &async_nats::Client,
    agent: &str,
    description: &str,
    verbs: &[&str],
    handle: H,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError>
where
    H: Fn(String, Bytes) -> F,
    F: Future<Output = Result<Value, ServiceError>>,
{
    serve_inner(client, agent, description, verbs, handle, None, shutdown).await
}

/// Like [`serve`], and also publishes the agent's heartbeat on `jarvis.health.<agent>` (see
/// [`crate::health`]) and answers `jarvis.cmd.<agent>.status` with it: when `verbs` has its own `status`,
/// its JSON object gains a `health` key holding the heartbeat; otherwise the reply is the heartbeat. An agent
/// without commands passes no verbs and still gets `status`, so `nats micro ls` lists every agent.
///
/// # Errors
/// [`BusError::JetStream`] when the service cannot be registered.
pub async fn serve_with_health<H, F>(
    client: &async_nats::Client,
    agent: &str,
    description: &str,
    verbs: &[&str],
    handle: H,
    health: Health,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError>
where
    H: Fn(String, Bytes) -> F,
    F: Future<Output = Result<Value, ServiceError>>,
{
    serve_inner(
        client,
        agent,
        description,
        verbs,
        handle,
        Some(health),
        shutdown,
    )
    .await
}

/// Serves only `jarvis.cmd.<agent>.status` (the heartbeat) and publishes the heartbeat: for agents that
/// take no commands.
///
/// # Errors
/// [`BusError::JetStream`] when the service cannot be registered.
pub async fn serve_status(
    client: &async_nats::Client,
    agent: &str,
    description: &str,
    health: Health,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError> {
    serve_with_health(
        client,
        agent,
        description,
        &[],
        |verb: String, _body: Bytes| async move {
            Err(ServiceError::bad_request(format!("unknown verb {verb}")))
        },
        health,
        shutdown,
    )
    .await
}

async fn serve_inner<H, F>(
    client: &async_nats::Client,
    agent: &str,
    description: &str,
    verbs: &[&str],
    handle: H,
    health: Option<Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError>
where
    H: Fn(String, Bytes) -> F,
    F: Future<Output = Result<Value, ServiceError>>,
{
    let name = format!("jarvis-{agent}");
    let service = client
        .service_builder()
        .description(description)
        .start(&name, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| BusError::js(format!("starting service {name}"), e))?;
    let group = service.group(format!("jarvis.cmd.{agent}"));
    let own_status = verbs.contains(&"status");
    let mut all_verbs: Vec<&str> = verbs.to_vec();
    if health.is_some() && !own_status {
        all_verbs.push("status");
    }
    let mut endpoints = Vec::new();
    for verb in all_verbs {
        let endpoint = group
            .endpoint(verb)
            .await
            .map_err(|e| BusError::js(format!("adding endpoint {verb} to {name}"), e))?;
        let verb = verb.to_string();
        endpoints.push(endpoint.map(move |request| (verb.clone(), request)).boxed());
    }
    // Stops beating when this future ends or is dropped.
    let _beating = health.as_ref().map(|h| {
        let status = h.status.clone();
        AbortOnDrop(crate::health::spawn_heartbeat(
            client.clone(),
            h.settings.clone(),
            move || status(),
        ))
    });
    let js = async_nats::jetstream::new(client.clone());
    let mut requests = futures::stream::select_all(endpoints);
    tokio::pin!(shutdown);
    loop {
        let (verb, request) = tokio::select! {
            _ = &mut shutdown => break,
            next = requests.next() => match next {
                Some(next) => next,
                None => break,
            },
        };
        let payload = request.message.payload.clone();
        let result = match (&health, verb.as_str()) {
            (Some(h), "status") => {
                let beat = crate::health::current(&js, &h.settings, (h.status)()).await;
                let beat = serde_json::to_value(beat).unwrap_or(Value::Null);
                if own_status {
                    handle(verb.clone(), payload).await.map(|mut v| {
                        if let Some(object) = v.as_object_mut() {
                            object.insert("health".into(), beat);
                        }
                        v
                    })
                } else {
                    Ok(beat)
                }
            }
            _ => handle(verb.clone(), payload).await,
        };
        let reply = match result {
            Ok(value) => Ok(Bytes::from(value.to_string())),
            Err(e) => {
                tracing::info!(service = %name, %verb, code = e.code, message = %e.message, "request refused");
                Err(service::error::Error {
                    status: e.message,
                    code: e.code,
                })
            }
        };
        if let Err(e) = request.respond(reply).await {
            tracing::warn!(service = %name, %verb, cause = %e, "reply failed");
        }
    }
    let _ = service.stop().await;
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
