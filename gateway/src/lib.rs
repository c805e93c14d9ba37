//! The thin axum gateway: REST over the read models, SSE of live events, commands turned into bus requests,
//! OpenAPI, metrics, and the dashboard's embedded assets.
//!
//! # Layout
//! - [`config`]: `[gateway]` and its checks (a weak JWT secret is refused off loopback).
//! - [`auth`]: users (argon2, JWT access + refresh), API keys (SHA-256, scoped), roles, the extractors that
//!   enforce them per route; [`totp`]: the second factor of admin routes.
//! - [`models`]: the JSON shapes, pagination, and [`models::ReadModels`], which handlers read through;
//!   [`memory`] holds them in memory; [`live`] serves them from the projections and the store.
//! - [`routes`]: the handlers, one file per area, each annotated for the OpenAPI document.
//! - [`error`]: RFC 9457 problems; [`middleware`]: rate limits, problem bodies, access logs and metrics,
//!   security headers; [`ratelimit`]: token buckets; [`metrics`]: Prometheus text.
//! - [`bench`]: the load generator of `jarvis bench gateway`.
//! - [`dashboard`]: the web page's embedded assets at `/` and `/assets/*`, merged in by the CLI.
//!
//! [`app`] builds the router for a state, so tests drive it in memory (`app(state).oneshot(request)`);
//! [`serve`] runs it on a listener until shutdown.

pub mod auth;
pub mod bench;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod live;
pub mod memory;
pub mod metrics;
pub mod middleware;
pub mod models;
pub mod ratelimit;
pub mod routes;
pub mod totp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, Method, StatusCode};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;

pub use config::GatewayConfig;
pub use error::{ApiError, Problem};
pub use models::ReadModels;

/// The bus, for commands and the event stream.
#[derive(Clone, Debug)]
pub struct Bus {
    /// Core NATS (requests to services).
    pub client: async_nats::Client,
    /// JetStream (the event stream).
    pub js: async_nats::jetstream::Context,
}

/// What handlers share.
pub struct Shared {
    /// `[gateway]`.
    pub config: GatewayConfig,
    /// Users, tokens, API keys.
    pub auth: auth::Auth,
    /// The read models.
    pub models: Arc<dyn ReadModels>,
    /// The bus (absent in some tests: commands and the stream answer 503).
    pub bus: Option<Bus>,
    /// The store's pool (readiness, minted API keys; absent in some tests).
    pub pool: Option<sqlx::PgPool>,
    /// Buckets per client IP.
    pub ip_limiter: ratelimit::RateLimiter,
    /// Buckets per credential.
    pub key_limiter: ratelimit::RateLimiter,
    /// Prometheus metrics.
    pub metrics: metrics::Metrics,
    /// Set when the server shuts down: event streams end, so graceful shutdown does not wait for them.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// The newest page of trades, serialised: the busiest history route.
    pub hot_trades: HotPage,
}

/// How long the newest page of a hot list is served as it was serialised.
pub const HOT_PAGE_TTL: Duration = Duration::from_millis(250);

/// The newest page of a list (no cursor, range or filter), serialised once and served as bytes for
/// [`HOT_PAGE_TTL`]: neither a query nor a serialisation per request, at the price of being at most that
/// much behind.
#[derive(Debug, Default)]
pub struct HotPage(std::sync::Mutex<Option<(std::time::Instant, u32, bytes::Bytes)>>);

impl HotPage {
    /// The page of `limit` items, when one younger than [`HOT_PAGE_TTL`] is kept.
    pub fn get(&self, limit: u32) -> Option<bytes::Bytes> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*kept {
            Some((at, l, body)) if *l == limit && at.elapsed() < HOT_PAGE_TTL => Some(body.clone()),
            _ => None,
        }
    }

    /// Keeps `body`, the page of `limit` items just read.
    pub fn put(&self, limit: u32, body: bytes::Bytes) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), limit, body));
    }
}

/// The state of the router.
#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// A state over `models`, with the bus and the pool when there are.
    pub fn new(
        config: GatewayConfig,
        models: Arc<dyn ReadModels>,
        bus: Option<Bus>,
        pool: Option<sqlx::PgPool>,
    ) -> Self {
        Self(Arc::new(Shared {
            auth: auth::Auth::new(&config),
            ip_limiter: ratelimit::RateLimiter::new(
                config.rate_limit_per_ip_per_sec,
                config.rate_limit_burst,
            ),
            key_limiter: ratelimit::RateLimiter::new(
                config.rate_limit_per_key_per_sec,
                config.rate_limit_burst,
            ),
            metrics: metrics::Metrics::new(),
            closing: tokio::sync::watch::channel(false).0,
            hot_trades: HotPage::default(),
            config,
            models,
            bus,
            pool,
        }))
    }
}

fn cors(config: &GatewayConfig) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderName::from_static("x-api-key"),
            axum::http::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            axum::http::HeaderName::from_static("x-request-id"),
            axum::http::header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600));
    if config.cors_origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        let origins: Vec<HeaderValue> = config
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        layer.allow_origin(AllowOrigin::list(origins))
    }
}

/// The whole router, with `extra` (e.g. the dashboard's routes) merged in, and its OpenAPI document.
pub fn app_with(state: AppState, extra: Router<AppState>) -> Router {
    let (api, openapi) = routes::api(&state);
    let openapi = Arc::new(openapi);
    let config = &state.config;
    let mut router = api
        .merge(routes::ops::router(openapi))
        .merge(extra)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::rate_limit,
        ))
        .layer(cors(config));
    for (name, value) in middleware::security_headers() {
        router = router.layer(SetResponseHeaderLayer::if_not_present(name, value));
    }
    router
        .layer(axum::middleware::from_fn(middleware::problems))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The whole router.
pub fn app(state: AppState) -> Router {
    app_with(state, Router::new())
}

/// The status a request that exceeded `request_timeout_ms` gets.
pub const TIMEOUT_STATUS: StatusCode = StatusCode::REQUEST_TIMEOUT;

/// Serves the gateway (with `extra` routes merged in) on `listener` until `shutdown` completes: event streams
/// end, then in-flight requests finish.
///
/// # Errors
/// When the listener fails.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    extra: Router<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = state.closing.clone();
    let router = app_with(state, extra);
    serve(listener, router, async move {
        shutdown.await;
        let _ = closing.send(true);
    })
    .await
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes in-flight requests.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
