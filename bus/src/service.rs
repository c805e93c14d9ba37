//! NATS micro services: how agents take commands (`jarvis.cmd.<agent>.<verb>`), so that `nats micro ls`
//! lists them and `nats req jarvis.cmd.risk.halt '{"reason":"manual"}'` works from a shell.
//!
//! Requests and replies are JSON. A refused request gets a service error (the `Nats-Service-Error` and
//! `Nats-Service-Error-Code` headers, as the micro protocol defines) with a message that says what was wrong:
//! 400 for a bad request, 409 for a refusal by the domain, 500 for a failure of ours.

use std::future::Future;

use async_nats::service::{self, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

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
    let name = format!("jarvis-{agent}");
    let service = client
        .service_builder()
        .description(description)
        .start(&name, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| BusError::js(format!("starting service {name}"), e))?;
    let group = service.group(format!("jarvis.cmd.{agent}"));
    let mut endpoints = Vec::new();
    for verb in verbs {
        let endpoint = group
            .endpoint(*verb)
            .await
            .map_err(|e| BusError::js(format!("adding endpoint {verb} to {name}"), e))?;
        let verb = verb.to_string();
        endpoints.push(endpoint.map(move |request| (verb.clone(), request)).boxed());
    }
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
        let reply = match handle(verb.clone(), request.message.payload.clone()).await {
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
