//! `GET /api/v1/stream`: live events as server-sent events, from an ephemeral ordered JetStream consumer
//! that delivers only new events, filtered by subject. Viewer role, `stream` scope.

use std::convert::Infallible;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Streamer;
use crate::error::{ApiError, ApiResult};
use crate::routes::AuthErrors;
use crate::AppState;

/// The stream's query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// NATS subject filter under `jarvis.evt.`, e.g. `jarvis.evt.trade.>` (default `jarvis.evt.>`).
    pub subject: Option<String>,
    /// The access token, for clients that cannot set headers (EventSource).
    pub access_token: Option<String>,
}

/// Checks a subject filter.
///
/// # Errors
/// [`ApiError::Validation`] saying what is wrong.
pub fn check_subject(subject: &str) -> ApiResult<()> {
    let tokens: Vec<&str> = subject.split('.').collect();
    let bad = |why: &str| {
        Err(ApiError::Validation(format!(
            "subject = {subject:?}: {why}; e.g. jarvis.evt.trade.>"
        )))
    };
    if subject.len() > 256 || tokens.len() < 3 || tokens[0] != "jarvis" || tokens[1] != "evt" {
        return bad("must start with jarvis.evt.");
    }
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("has an empty token or white space");
        }
        if t.contains('>') && (*t != ">" || i != tokens.len() - 1) {
            return bad("> may only be the last token");
        }
        if t.contains('*') && *t != "*" {
            return bad("* must be a whole token");
        }
    }
    Ok(())
}

/// Decrements the client gauge when the stream ends.
struct ClientGuard(prometheus::IntGauge);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Live events. Each SSE event is named after the event type, has the event id as `id`, and carries one JSON
/// object (`nats_subject`, `id`, `type`, `source`, `time`, `subject`, `correlation_id`, `causation_id`,
/// `position`, `sequence`, `data`). A `: keep-alive` comment is sent when idle.
#[utoipa::path(get, path = "/api/v1/stream", tag = "stream", params(StreamQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 503, description = "No bus", body = crate::error::Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn stream(
    _: Streamer,
    State(s): State<AppState>,
    Query(q): Query<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let subject = q
        .subject
        .unwrap_or_else(|| jarvis_bus::EVENTS_SUBJECTS.into());
    check_subject(&subject)?;
    let bus = s.bus.as_ref().ok_or_else(|| {
        ApiError::Unavailable("the gateway has no bus connection; the stream is unavailable".into())
    })?;
    let unavailable = |e: &dyn std::fmt::Display| {
        ApiError::Unavailable(format!(
            "the event stream {} is unavailable: {e}",
            jarvis_bus::EVENTS_STREAM
        ))
    };
    let stream = bus
        .js
        .get_stream(jarvis_bus::EVENTS_STREAM)
        .await
        .map_err(|e| unavailable(&e))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject,
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
    let messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
    s.metrics.sse_clients.inc();
    let guard = ClientGuard(s.metrics.sse_clients.clone());
    let mut closing = s.closing.subscribe();
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    let events = messages
        .filter_map(move |message| {
            let _ = &guard;
            async move {
                let message = message.ok()?;
                let envelope = jarvis_bus::Envelope::from_parts(
                    message.subject.as_str(),
                    message.headers.as_ref(),
                    message.payload.clone(),
                )
                .ok()?;
                let name = envelope
                    .ce_type
                    .split('.')
                    .nth(2)
                    .unwrap_or("event")
                    .to_string();
                let data = serde_json::to_string(&envelope.to_json()).ok()?;
                Some(Ok(Event::default()
                    .event(name)
                    .id(envelope.id.to_string())
                    .data(data)))
            }
        })
        .take_until(Box::pin(closed));
    Ok(Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(s.config.sse_keep_alive_secs))
            .text("keep-alive"),
    ))
}
