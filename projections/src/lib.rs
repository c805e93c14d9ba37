//! Read models: checkpointed projectors over the store's global order, hot models held in memory, and the
//! queries the gateway serves.
//!
//! # API summary (for the gateway)
//! - [`ReadModels`] (Clone): `ReadModels::new(pool).with_hot(hot).with_health(health).with_jetstream(js)`.
//!   - hot, from memory (no query): [`ReadModels::trading`] (one snapshot of all four), `portfolio()`,
//!     `positions()`, `prices()`, `risk()`, `agents()`;
//!   - history, one `SELECT` each, paged with [`PageQuery`] (`limit`, `cursor`, `from`, `to`; newest first,
//!     [`Page`] has `next_cursor`): `orders`, `order(id)`, `trades`, `rejections`, `sentiment(token)`,
//!     `sentiment_tokens`, `conversations(chat_id)`, `backtests`, `backtest(id)`, `events(filter)`,
//!     `event(id)`; unpaged: `equity_curve` (oldest first), `recent_prices(symbol)`, `llm_usage`,
//!     `audit(correlation_id)`, `caused_by(event_id)`; plus `dlq()` and `status()` (checkpoint and lag of
//!     each projection).
//!   - every response type derives `Serialize` and `utoipa::ToSchema` (Decimal as a string).
//! - [`spawn`]: runs every projection (and, given a NATS client, the heartbeat listener) in this process
//!   and returns the [`ReadModels`] they feed. A process that does not run the projector keeps its hot
//!   models fresh with [`ReadModels::follow`].
//!
//! # Layout
//! - [`source`]: the gap-safe read of the store for projectors, decoding only what they need.
//! - [`projector`]: the [`Projection`] trait, the [`Projector`] (one transaction per step: rows and
//!   checkpoints), [`rebuild`] with the table swap, and [`projector::status`] (lag).
//! - [`trading`]: portfolio, equity curve, positions, prices, risk (also in memory: [`HotModels`]).
//! - [`orders`]: orders and fills. [`activity`]: sentiment, LLM usage, conversations, backtest runs.
//! - [`health`]: agent heartbeats (memory only) and DLQ counts. [`query`]: [`ReadModels`].
//!
//! Tables live in the Postgres schema `projections` (migration `store/migrations/*_projections.sql`); the
//! audit trail reads the `events` table through its correlation and causation indexes. See
//! `docs/projections.md`.

pub mod activity;
pub mod health;
pub mod orders;
pub mod projector;
pub mod query;
pub mod source;
pub mod synth;
pub mod trading;

use std::future::Future;

pub use activity::{
    BacktestRunView, BacktestsProjection, ChatMessage, ConversationsProjection, LlmProjection,
    LlmUsage, SentimentPoint, SentimentProjection,
};
pub use health::{AgentHealth, AgentStatus, DlqCounts, Heartbeat};
pub use orders::{FillView, OrderView, OrdersProjection};
pub use projector::{rebuild, Projection, Projector, ProjectorStatus, Rebuilt};
pub use query::{AuditEvent, EventFilter, Page, PageQuery, ReadModels, TokenSentiment};
pub use trading::{
    EquityPoint, HotModels, PortfolioView, PositionView, PriceView, Rejection, RiskView,
    TradingProjection, TradingSnapshot,
};

/// The projections, by name.
pub const NAMES: &[&str] = &[
    "backtests",
    "conversations",
    "llm",
    "orders",
    "sentiment",
    "trading",
];

/// A failure of a projector or a query.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Postgres refused or the connection failed (retry later).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored event does not decode; names its position.
    #[error("event at position {position} is unreadable: {reason}")]
    Corrupt {
        /// The event's global position.
        position: i64,
        /// What is wrong with it.
        reason: String,
    },
    /// No projection has this name.
    #[error("no projection named {0:?} (known: backtests, conversations, llm, orders, sentiment, trading)")]
    UnknownProjection(String),
    /// A query parameter is invalid (HTTP 400); names the parameter.
    #[error("bad query: {0}")]
    BadQuery(String),
    /// NATS or JetStream failed.
    #[error("bus error: {0}")]
    Bus(String),
}

impl From<jarvis_store::StoreError> for ProjectionError {
    fn from(e: jarvis_store::StoreError) -> Self {
        match e {
            jarvis_store::StoreError::Database(e) => Self::Database(e),
            jarvis_store::StoreError::Corrupt { position, reason } => {
                Self::Corrupt { position, reason }
            }
            other => Self::Database(sqlx::Error::Protocol(other.to_string())),
        }
    }
}

/// Fresh instances of the projections `names` (all when empty); `hot` receives the `trading` state.
///
/// # Errors
/// [`ProjectionError::UnknownProjection`].
pub fn projections(
    names: &[&str],
    hot: &HotModels,
) -> Result<Vec<Box<dyn Projection>>, ProjectionError> {
    let names: Vec<&str> = if names.is_empty() {
        NAMES.to_vec()
    } else {
        names.to_vec()
    };
    names
        .into_iter()
        .map(|name| -> Result<Box<dyn Projection>, ProjectionError> {
            Ok(match name {
                "trading" => Box::new(TradingProjection::new(hot.clone())),
                "orders" => Box::new(OrdersProjection),
                "sentiment" => Box::new(SentimentProjection),
                "llm" => Box::new(LlmProjection),
                "conversations" => Box::new(ConversationsProjection),
                "backtests" => Box::new(BacktestsProjection),
                other => return Err(ProjectionError::UnknownProjection(other.to_string())),
            })
        })
        .collect()
}

/// Starts every projection in this process (and the heartbeat listener when `nats` is given) until the
/// futures made by `shutdown` complete; returns the [`ReadModels`] they feed and the tasks to await.
///
/// # Errors
/// [`ProjectionError::Database`] when the projector cannot load its checkpoints and state.
pub async fn spawn<S>(
    pool: sqlx::PgPool,
    nats: Option<(async_nats::Client, async_nats::jetstream::Context)>,
    shutdown: impl Fn() -> S,
) -> Result<(ReadModels, Vec<tokio::task::JoinHandle<()>>), ProjectionError>
where
    S: Future<Output = ()> + Send + 'static,
{
    let hot = HotModels::default();
    let projector = Projector::open(pool.clone(), projections(&[], &hot)?).await?;
    let mut models = ReadModels::new(pool).with_hot(hot);
    let mut tasks = vec![tokio::spawn(projector.run(shutdown()))];
    if let Some((client, js)) = nats {
        let health = AgentHealth::default();
        models = models.with_health(health.clone()).with_jetstream(js);
        let stopped = shutdown();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = health.subscribe(&client, stopped).await {
                tracing::error!(cause = %e, "cannot subscribe to agent heartbeats");
            }
        }));
    }
    Ok((models, tasks))
}
