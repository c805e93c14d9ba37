//! The event explorer: stored events by id, by correlation id, and an event's causal chain.

use axum::extract::{Path, Query, State};
use axum::Json;
use uuid::Uuid;

use crate::auth::Viewer;
use crate::error::{ApiError, ApiResult, Problem};
use crate::models::{EventsQuery, Items, Page};
use crate::routes::AuthErrors;
use crate::AppState;

/// Stored events, newest first; filter by `correlation_id` (one story) or `type`.
#[utoipa::path(get, path = "/api/v1/events", tag = "ops", params(EventsQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Events", body = Page<crate::models::Event>), AuthErrors))]
pub async fn list(
    _: Viewer,
    State(s): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Page<crate::models::Event>>> {
    if let Some(t) = &q.event_type {
        if t.is_empty() || t.len() > 100 || !t.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ApiError::Validation(format!(
                "type = {t:?}: an event type is letters and digits, e.g. OrderFilled"
            )));
        }
    }
    Ok(Json(
        s.models
            .events(&q.page()?, q.correlation_id, q.event_type.as_deref())
            .await?,
    ))
}

/// One event.
#[utoipa::path(get, path = "/api/v1/events/{event_id}", tag = "ops",
    params(("event_id" = Uuid, Path, description = "The event's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The event", body = crate::models::Event),
        (status = 404, description = "No such event", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn one(
    _: Viewer,
    State(s): State<AppState>,
    Path(event_id): Path<Uuid>,
) -> ApiResult<Json<crate::models::Event>> {
    s.models
        .event(event_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no event {event_id}")))
}

/// The causes of an event, root first, ending with the event.
#[utoipa::path(get, path = "/api/v1/events/{event_id}/chain", tag = "ops",
    params(("event_id" = Uuid, Path, description = "The event's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The chain", body = Items<crate::models::Event>),
        (status = 404, description = "No such event", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn chain(
    _: Viewer,
    State(s): State<AppState>,
    Path(event_id): Path<Uuid>,
) -> ApiResult<Json<Items<crate::models::Event>>> {
    s.models
        .causal_chain(event_id)
        .await?
        .map(|items| Json(Items { items }))
        .ok_or_else(|| ApiError::NotFound(format!("no event {event_id}")))
}
