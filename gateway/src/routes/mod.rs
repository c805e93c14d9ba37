//! The handlers, one file per area, and the OpenAPI document built from their annotations.

pub mod admin;
pub mod auth;
pub mod commands;
pub mod events;
pub mod ops;
pub mod read;
pub mod stream;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Problem;
use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Jarvis gateway",
        description = "Read models, live events and commands of Jarvis. Errors are RFC 9457 problems \
                       (application/problem+json). Log in at /api/v1/auth/login and send \
                       `Authorization: Bearer <access_token>`, or send `X-API-Key`.",
        license(name = "Apache-2.0")
    ),
    components(schemas(Problem)),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Log in, refresh, who am I"),
        (name = "trading", description = "Portfolio, positions, orders, trades, risk"),
        (name = "market", description = "Prices and sentiment"),
        (name = "ops", description = "LLM usage, agents, events, conversations, backtests"),
        (name = "stream", description = "Live events (server-sent events)"),
        (name = "commands", description = "Halt, resume, orders (operator)"),
        (name = "admin", description = "API keys (admin with TOTP)"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

/// The error responses every authenticated route may give.
pub struct AuthErrors;

impl utoipa::IntoResponses for AuthErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        BTreeMap::from([
            (
                "400".into(),
                problem("Bad request (e.g. a malformed parameter)"),
            ),
            (
                "401".into(),
                problem("No credentials, or bad or expired ones"),
            ),
            (
                "403".into(),
                problem("The role or scope does not allow this"),
            ),
            (
                "422".into(),
                problem("A parameter has a value that is not allowed"),
            ),
            ("429".into(), problem("Too many requests; see Retry-After")),
            (
                "500".into(),
                problem("Our failure (generic detail; logged)"),
            ),
        ])
    }
}

/// The responses a command may add: the bus service missing or slow, or refusing.
pub struct CommandErrors;

impl utoipa::IntoResponses for CommandErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        BTreeMap::from([
            ("409".into(), problem("The service refused the command")),
            ("503".into(), problem("The bus service is not running")),
            (
                "504".into(),
                problem("The bus service did not answer in time"),
            ),
        ])
    }
}

/// The API routes and their OpenAPI document.
pub fn api(state: &AppState) -> (Router<AppState>, Document) {
    let config = &state.config;
    let rest = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::me))
        .routes(routes!(read::portfolio))
        .routes(routes!(read::equity))
        .routes(routes!(read::positions))
        .routes(routes!(read::orders))
        .routes(routes!(read::order))
        .routes(routes!(read::trades))
        .routes(routes!(read::risk))
        .routes(routes!(read::rejections))
        .routes(routes!(read::prices))
        .routes(routes!(read::price_history))
        .routes(routes!(read::sentiment))
        .routes(routes!(read::sentiment_history))
        .routes(routes!(read::llm_usage))
        .routes(routes!(read::agents))
        .routes(routes!(read::conversations))
        .routes(routes!(read::messages))
        .routes(routes!(read::backtests))
        .routes(routes!(read::backtest))
        .routes(routes!(events::list))
        .routes(routes!(events::one))
        .routes(routes!(events::chain))
        .routes(routes!(commands::halt))
        .routes(routes!(commands::resume))
        .routes(routes!(commands::propose))
        .routes(routes!(commands::confirm))
        .routes(routes!(commands::x_drafts))
        .routes(routes!(commands::x_approve))
        .routes(routes!(commands::x_reject))
        .routes(routes!(admin::list_keys, admin::create_key))
        .routes(routes!(admin::delete_key))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(config.request_timeout_ms),
        ))
        .layer(RequestBodyLimitLayer::new(config.body_limit_bytes))
        .layer(DefaultBodyLimit::disable());
    let stream = OpenApiRouter::new().routes(routes!(stream::stream));
    rest.merge(stream).split_for_parts()
}
