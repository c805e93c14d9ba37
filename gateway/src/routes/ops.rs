//! Liveness, readiness, metrics, the OpenAPI document and the docs page.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

/// `/healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the process answers.
    pub status: String,
}

/// `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// `database` and `nats`: `ok` or what is wrong.
    pub checks: std::collections::BTreeMap<String, String>,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The database and NATS are reachable (503 when either is not).
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready", body = Readiness)))]
pub async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let database = match &s.pool {
        None => "not configured".to_string(),
        Some(pool) => {
            let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool);
            match tokio::time::timeout(Duration::from_secs(2), ping).await {
                Ok(Ok(_)) => "ok".into(),
                Ok(Err(_)) => "unreachable".into(),
                Err(_) => "timed out".into(),
            }
        }
    };
    let nats = match &s.bus {
        None => "not configured".to_string(),
        Some(bus) => match tokio::time::timeout(Duration::from_secs(2), bus.client.flush()).await {
            Ok(Ok(())) => "ok".into(),
            Ok(Err(_)) => "unreachable".into(),
            Err(_) => "timed out".into(),
        },
    };
    let ready = database == "ok" && nats == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if ready { "ready" } else { "not_ready" }.into(),
            checks: [("database".into(), database), ("nats".into(), nats)].into(),
        }),
    )
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String)))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    let gauges = s.models.gauges().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(&gauges),
    )
        .into_response()
}

const DOCS: &str = include_str!("docs.html");

/// `/api/openapi.json` and `/api/docs`.
pub fn router(openapi: Arc<utoipa::openapi::OpenApi>) -> Router<AppState> {
    let json = Arc::new(openapi.to_json().unwrap_or_else(|_| "{}".into()));
    Router::new()
        .route(
            "/api/openapi.json",
            get(move || {
                let json = json.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        (*json).clone(),
                    )
                }
            }),
        )
        .route("/api/docs", get(|| async { Html(DOCS) }))
}
