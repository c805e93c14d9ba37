//! The `llm` agent as the NATS micro service `jarvis-llm`.
//!
//! - `jarvis.cmd.llm.ask` `{"task": "chat", "prompt": "...", "user_text": "..."}` answers
//!   `{"answer", "provider", "model", "cost", "tokens_in", "tokens_out", "estimated", "latency_ms", ...}`.
//!   A bad request is a 400, a refusal (budget cap, prompt guard) a 409, every provider failing a 503.
//! - `jarvis.cmd.llm.usage` `{}` answers the totals per day, provider and task.
//!
//! `nats req jarvis.cmd.llm.ask '{"task":"chat","prompt":"hello"}'` works from a shell.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use jarvis_bus::service::{parse, serve_with_health, Health, ServiceError};
use jarvis_bus::BusError;
use serde::Deserialize;
use serde_json::{json, Value};

use super::router::{AskError, AskRequest, LlmRouter};
use super::usage::usage;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// The service error of an [`AskError`].
pub fn service_error(e: AskError) -> ServiceError {
    match e {
        AskError::BadRequest(m) => ServiceError::bad_request(m),
        AskError::Refused(_) => ServiceError::refused(e.to_string()),
        AskError::Failed(_) => ServiceError {
            code: 503,
            message: e.to_string(),
        },
        AskError::Store(_) | AskError::NotRecorded(_) => ServiceError::internal(e.to_string()),
    }
}

async fn handle(router: &LlmRouter, verb: &str, body: &[u8]) -> Result<Value, ServiceError> {
    match verb {
        "ask" => {
            let request: AskRequest = parse(body)?;
            let answer = router.ask(request).await.map_err(service_error)?;
            serde_json::to_value(answer).map_err(|e| ServiceError::internal(e.to_string()))
        }
        "usage" => {
            let Empty {} = parse(body)?;
            let usage = usage(router.store())
                .await
                .map_err(|e| ServiceError::internal(e.to_string()))?;
            Ok(json!({"usage": usage, "breakers": router.breakers()}))
        }
        other => Err(ServiceError::bad_request(format!("unknown verb {other:?}"))),
    }
}

/// Serves `jarvis-llm` until `shutdown` completes.
///
/// # Errors
/// [`BusError`] when the service cannot be registered with NATS.
pub async fn serve_commands(
    router: Arc<LlmRouter>,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError> {
    serve_with_health(
        &client,
        "llm",
        "Jarvis LLM router: ask (routed, budgeted, recorded), usage",
        &["ask", "usage"],
        |verb: String, body: Bytes| {
            let router = router.clone();
            async move { handle(&router, &verb, &body).await }
        },
        Health::new("llm", &[]),
        shutdown,
    )
    .await
}
