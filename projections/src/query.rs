//! [`ReadModels`]: what the gateway (and the CLI) read. Hot models come from memory; history is one
//! `SELECT` per call, paged newest first by global position (`cursor`), optionally bounded by event time.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::activity::{BacktestRunView, ChatMessage, LlmUsage, SentimentPoint};
use crate::health::{dlq_counts, AgentHealth, AgentStatus, DlqCounts};
use crate::orders::{FillView, OrderView};
use crate::projector::{status, ProjectorStatus, SCHEMA};
use crate::trading::{
    load_snapshot, EquityPoint, HotModels, PortfolioView, PositionView, PriceView, Rejection,
    RiskView, TradingSnapshot,
};
use crate::{ProjectionError, NAMES};

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page size.
pub const MAX_LIMIT: u32 = 1_000;

/// Paging and a time range: newest first; `cursor` is the `next_cursor` of the previous page.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page (default 100, at most 1,000).
    pub limit: Option<u32>,
    /// Only items before this cursor (a global position, from `next_cursor`).
    pub cursor: Option<i64>,
    /// Only items at or after this event time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only items before this event time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
}

impl PageQuery {
    fn limit(&self) -> i64 {
        i64::from(self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT))
    }
    fn cursor(&self) -> i64 {
        self.cursor.unwrap_or(i64::MAX)
    }
    // Bounds Postgres's timestamptz can hold (chrono's MIN_UTC/MAX_UTC are out of its range).
    fn from(&self) -> DateTime<Utc> {
        self.from.unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }
    fn to(&self) -> DateTime<Utc> {
        self.to.unwrap_or_else(|| {
            NaiveDate::from_ymd_opt(9999, 12, 31)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(DateTime::<Utc>::UNIX_EPOCH, |d| d.and_utc())
        })
    }
    /// Checks the range.
    ///
    /// # Errors
    /// [`ProjectionError::BadQuery`] naming the parameter.
    pub fn validate(&self) -> Result<(), ProjectionError> {
        if let (Some(from), Some(to)) = (self.from, self.to) {
            if from > to {
                return Err(ProjectionError::BadQuery(format!(
                    "from ({from}) is after to ({to})"
                )));
            }
        }
        if self.limit == Some(0) {
            return Err(ProjectionError::BadQuery("limit must be at least 1".into()));
        }
        Ok(())
    }
}

/// A page of items, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<i64>,
}

fn page<T>(items: Vec<T>, limit: i64, position: impl Fn(&T) -> i64) -> Page<T> {
    let next_cursor = if items.len() as i64 == limit {
        items.last().map(&position)
    } else {
        None
    };
    Page { items, next_cursor }
}

/// A stored event, for the event explorer and the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditEvent {
    /// Global position.
    pub position: i64,
    /// The event's id.
    pub event_id: Uuid,
    /// e.g. `TradeProposed`.
    pub event_type: String,
    /// e.g. `Order`.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// Sequence within the aggregate.
    pub sequence: i64,
    /// The story.
    pub correlation_id: Option<String>,
    /// What caused it.
    pub causation_id: Option<String>,
    /// Who wrote it.
    pub source: Option<String>,
    /// The payload (as stored).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
}

/// Filters of the event explorer.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    /// Only this event type (e.g. `OrderFilled`).
    pub event_type: Option<String>,
    /// Only this aggregate type (e.g. `Order`).
    pub aggregate_type: Option<String>,
    /// Only this aggregate id.
    pub aggregate_id: Option<String>,
}

/// The read side: hot models from memory, history from Postgres. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReadModels {
    pool: PgPool,
    hot: HotModels,
    health: AgentHealth,
    js: Option<async_nats::jetstream::Context>,
}

const AUDIT_COLUMNS: &str =
    "position, event_id, event_type, aggregate_type, aggregate_id, sequence,
    metadata ->> 'correlation_id' AS correlation_id, metadata ->> 'causation_id' AS causation_id,
    metadata ->> 'source' AS source, payload::jsonb AS payload, recorded_at";

impl ReadModels {
    /// Read models on `pool`, with empty hot models and no health (see the `with_*` methods).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            hot: HotModels::default(),
            health: AgentHealth::default(),
            js: None,
        }
    }

    /// Hot models fed by a [`crate::TradingProjection`] in this process (see [`crate::spawn`]).
    pub fn with_hot(mut self, hot: HotModels) -> Self {
        self.hot = hot;
        self
    }

    /// Agent health fed by [`AgentHealth::subscribe`].
    pub fn with_health(mut self, health: AgentHealth) -> Self {
        self.health = health;
        self
    }

    /// JetStream, for DLQ counts.
    pub fn with_jetstream(mut self, js: async_nats::jetstream::Context) -> Self {
        self.js = Some(js);
        self
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The hot models handle.
    pub fn hot(&self) -> &HotModels {
        &self.hot
    }

    /// The agent health handle.
    pub fn health(&self) -> &AgentHealth {
        &self.health
    }

    // ---- hot: memory, no query ----

    /// Portfolio, positions, prices and risk, as last committed.
    pub fn trading(&self) -> Arc<TradingSnapshot> {
        self.hot.snapshot()
    }

    /// The portfolio, once opened.
    pub fn portfolio(&self) -> Option<PortfolioView> {
        self.hot.snapshot().portfolio.clone()
    }

    /// Positions by symbol.
    pub fn positions(&self) -> Vec<PositionView> {
        self.hot.snapshot().positions.clone()
    }

    /// Latest price per symbol.
    pub fn prices(&self) -> Vec<PriceView> {
        self.hot.snapshot().prices.clone()
    }

    /// Risk state.
    pub fn risk(&self) -> RiskView {
        self.hot.snapshot().risk.clone()
    }

    /// Agent instances and their health.
    pub fn agents(&self) -> Vec<AgentStatus> {
        self.health.agents()
    }

    /// Keeps the hot models of a process that does not run the `trading` projection up to date: reloads
    /// them from the tables whenever its checkpoint moves (checked every `every`), until `shutdown`.
    pub async fn follow(&self, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut seen: Option<i64> = None;
        loop {
            let at: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(
                "SELECT position FROM checkpoints WHERE name = 'projection:trading'",
            )
            .fetch_optional(&self.pool)
            .await;
            match at {
                Ok(at) if seen != Some(at.unwrap_or(0)) => {
                    let loaded = async {
                        let mut db = self.pool.acquire().await?;
                        load_snapshot(&mut db, SCHEMA).await
                    }
                    .await;
                    match loaded {
                        Ok(snapshot) => {
                            self.hot.publish(snapshot);
                            seen = Some(at.unwrap_or(0));
                        }
                        Err(e) => tracing::warn!(cause = %e, "cannot load the hot read models"),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(cause = %e, "cannot read the trading checkpoint"),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    // ---- history: one query each ----

    /// The equity curve within the range, oldest first, at most `limit` points (default 1,000, max 10,000):
    /// the newest `limit` points when there are more.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::BadQuery`].
    pub async fn equity_curve(&self, q: &PageQuery) -> Result<Vec<EquityPoint>, ProjectionError> {
        q.validate()?;
        let limit = i64::from(q.limit.unwrap_or(1_000).clamp(1, 10_000));
        let mut points: Vec<EquityPoint> = sqlx::query_as(&format!(
            "SELECT at, equity, cash, unrealized_pnl, high_water_mark FROM {SCHEMA}.equity_curve
              WHERE at >= $1 AND at < $2 AND position < $3 ORDER BY at DESC LIMIT $4"
        ))
        .bind(q.from())
        .bind(q.to())
        .bind(q.cursor())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        points.reverse();
        Ok(points)
    }

    /// The newest prices of `symbol` (at most 500 are kept), newest first, within the range.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::BadQuery`].
    pub async fn recent_prices(
        &self,
        symbol: &str,
        q: &PageQuery,
    ) -> Result<Vec<PriceView>, ProjectionError> {
        q.validate()?;
        Ok(sqlx::query_as(&format!(
            "SELECT symbol, price, at, source FROM {SCHEMA}.prices_recent
              WHERE symbol = $1 AND at >= $2 AND at < $3 ORDER BY at DESC LIMIT $4"
        ))
        .bind(symbol)
        .bind(q.from())
        .bind(q.to())
        .bind(q.limit())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Orders, newest proposal first, of one status and pair or all; the range bounds `proposed_at`.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::BadQuery`].
    pub async fn orders(
        &self,
        q: &PageQuery,
        status: Option<&str>,
        symbol: Option<&str>,
    ) -> Result<Page<OrderView>, ProjectionError> {
        q.validate()?;
        let items: Vec<OrderView> = sqlx::query_as(&format!(
            "SELECT order_id, symbol, side, quantity, status, reference_price, strategy, summary, venue,
                    filled_quantity, avg_fill_price, fees, reason, proposed_at, updated_at, correlation_id,
                    position, last_position
               FROM {SCHEMA}.orders
              WHERE position < $1 AND proposed_at >= $2 AND proposed_at < $3
                AND ($5::text IS NULL OR status = $5) AND ($6::text IS NULL OR symbol = $6)
              ORDER BY position DESC LIMIT $4"
        ))
        .bind(q.cursor())
        .bind(q.from())
        .bind(q.to())
        .bind(q.limit())
        .bind(status)
        .bind(symbol)
        .fetch_all(&self.pool)
        .await?;
        Ok(page(items, q.limit(), |o| o.position))
    }

    /// One order.
    ///
    /// # Errors
    /// [`ProjectionError::Database`].
    pub async fn order(&self, order_id: Uuid) -> Result<Option<OrderView>, ProjectionError> {
        Ok(sqlx::query_as(&format!(
            "SELECT order_id, symbol, side, quantity, status, reference_price, strategy, summary, venue,
                    filled_quantity, avg_fill_price, fees, reason, proposed_at, updated_at, correlation_id,
                    position, last_position
               FROM {SCHEMA}.orders WHERE order_id = $1"
        ))
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Fills (trades) of one pair or all, newest first; the range bounds `filled_at`.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::BadQuery`].
    pub async fn trades(
        &self,
        q: &PageQuery,
        symbol: Option<&str>,
    ) -> Result<Page<FillView>, ProjectionError> {
        q.validate()?;
        let items: Vec<FillView> = sqlx::query_as(&format!(
            "SELECT position, fill_id, order_id, symbol, side, quantity, price, fee, venue, filled_at
               FROM {SCHEMA}.fills
              WHERE position < $1 AND filled_at >= $2 AND filled_at < $3
                AND ($5::text IS NULL OR symbol = $5)
              ORDER BY position DESC LIMIT $4"
        ))
        .bind(q.cursor())
        .bind(q.from())
        .bind(q.to())
        .bind(q.limit())
        .bind(symbol)
        .fetch_all(&self.pool)
        .await?;
        Ok(page(items, q.limit(), |f| f.position))
    }

    /// Refused proposals, newest first.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::BadQuery`].
    pub async fn rejections(&self, q: &PageQuery) -> Result<Page<Rejection>, ProjectionError> {
        q.validate()?;
        let items: Vec<Rejection> = sqlx::query_as(&format!(
            "SELECT position, order_id, symbol, rules, reasons, at FROM {SCHEMA}.risk_rejections
              WHERE position < $1 AND at >= $2 AND at < $3 ORDER BY position DESC LIMIT $4"
        ))
        .bind(q.cursor())
        .bind(q.from())
        .bind(q.to())
        .bind(q.limit())
        .fetch_all(&self.pool)
        .await?;
        Ok(page(items, q.limit(), |r| r.position))
    }

    /// Sentiment scores, of one token or all, newest first.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::BadQuery`].
    pub async fn sentiment(
        &self,
        token: Option<&str>,
        q: &PageQuery,
    ) -> Result<Page<SentimentPoint>, ProjectionError> {
        q.validate()?;
        let items: Vec<SentimentPoint> = sqlx::query_as(&format!(
            "SELECT position, token, score, label, confidence, model, source_type, source_event, at
               FROM {SCHEMA}.sentiment
              WHERE position < $1 AND at >= $2 AND at < $3 AND ($5::text IS NULL OR token = upper($5))
              ORDER BY position DESC LIMIT $4"
        ))
        .bind(q.cursor())
        .bind(q.from())
        .bind(q.to())
        .bind(q.limit())
        .bind(token)
        .fetch_all(&self.pool)
        .await?;
        Ok(page(items, q.limit(), |s| s.position))
    }

    /// The tokens that have scores, with their count and mean score.
    ///
    /// # Errors
    /// [`ProjectionError::Database`].
    pub async fn sentiment_tokens(&self) -> Result<Vec<TokenSentiment>, ProjectionError> {
        Ok(sqlx::query_as(&format!(
            "SELECT token, count(*) AS scores, avg(score) AS mean_score, max(at) AS last_at
               FROM {SCHEMA}.sentiment GROUP BY token ORDER BY token"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// LLM usage per day, provider, model and task, days within `[from, to)` (UTC dates of the range).
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::BadQuery`].
    pub async fn llm_usage(&self, q: &PageQuery) -> Result<Vec<LlmUsage>, ProjectionError> {
        q.validate()?;
        let from: NaiveDate = q.from().date_naive();
        let to: NaiveDate = q.to().date_naive();
        Ok(sqlx::query_as(&format!(
            "SELECT day, provider, model, task, calls, failures, tokens_in, tokens_out, cost_usd, latency_ms_total
               FROM {SCHEMA}.llm_usage WHERE day >= $1 AND day <= $2
              ORDER BY day DESC, provider, model, task LIMIT $3"
        ))
        .bind(from)
        .bind(to)
        .bind(q.limit.map_or(10_000, i64::from))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Chat messages and replies, of one chat or all, newest first.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::BadQuery`].
    pub async fn conversations(
        &self,
        chat_id: Option<i64>,
        q: &PageQuery,
    ) -> Result<Page<ChatMessage>, ProjectionError> {
        q.validate()?;
        let items: Vec<ChatMessage> = sqlx::query_as(&format!(
            "SELECT position, chat_id, direction, message_id, user_id, username, trust, text, at
               FROM {SCHEMA}.chat_messages
              WHERE position < $1 AND at >= $2 AND at < $3 AND ($5::bigint IS NULL OR chat_id = $5)
              ORDER BY position DESC LIMIT $4"
        ))
        .bind(q.cursor())
        .bind(q.from())
        .bind(q.to())
        .bind(q.limit())
        .bind(chat_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(page(items, q.limit(), |m| m.position))
    }

    /// Backtest runs, newest first.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::BadQuery`].
    pub async fn backtests(&self, q: &PageQuery) -> Result<Page<BacktestRunView>, ProjectionError> {
        q.validate()?;
        let items: Vec<BacktestRunView> = sqlx::query_as(&format!(
            "SELECT run_id, strategy, total_return, sharpe, max_drawdown, trades, final_equity, report, parameters,
                    at, position
               FROM {SCHEMA}.backtest_runs
              WHERE position < $1 AND at >= $2 AND at < $3 ORDER BY position DESC LIMIT $4"
        ))
        .bind(q.cursor())
        .bind(q.from())
        .bind(q.to())
        .bind(q.limit())
        .fetch_all(&self.pool)
        .await?;
        Ok(page(items, q.limit(), |b| b.position))
    }

    /// One backtest run.
    ///
    /// # Errors
    /// [`ProjectionError::Database`].
    pub async fn backtest(&self, run_id: &str) -> Result<Option<BacktestRunView>, ProjectionError> {
        Ok(sqlx::query_as(&format!(
            "SELECT run_id, strategy, total_return, sharpe, max_drawdown, trades, final_equity, report, parameters,
                    at, position
               FROM {SCHEMA}.backtest_runs WHERE run_id = $1"
        ))
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Stored events, newest first (the event explorer); the range bounds `recorded_at`.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::BadQuery`].
    pub async fn events(
        &self,
        filter: &EventFilter,
        q: &PageQuery,
    ) -> Result<Page<AuditEvent>, ProjectionError> {
        q.validate()?;
        let items: Vec<AuditEvent> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM events
              WHERE position < $1 AND recorded_at >= $2 AND recorded_at < $3
                AND ($5::text IS NULL OR event_type = $5)
                AND ($6::text IS NULL OR aggregate_type = $6)
                AND ($7::text IS NULL OR aggregate_id = $7)
              ORDER BY position DESC LIMIT $4"
        ))
        .bind(q.cursor())
        .bind(q.from())
        .bind(q.to())
        .bind(q.limit())
        .bind(&filter.event_type)
        .bind(&filter.aggregate_type)
        .bind(&filter.aggregate_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(page(items, q.limit(), |e| e.position))
    }

    /// One event by id.
    ///
    /// # Errors
    /// [`ProjectionError::Database`].
    pub async fn event(&self, event_id: Uuid) -> Result<Option<AuditEvent>, ProjectionError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM events WHERE event_id = $1"
        ))
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The audit trail of a story: every event with this correlation id, in global order (at most 10,000).
    ///
    /// # Errors
    /// [`ProjectionError::Database`].
    pub async fn audit(&self, correlation_id: Uuid) -> Result<Vec<AuditEvent>, ProjectionError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM events WHERE metadata ->> 'correlation_id' = $1
              ORDER BY position LIMIT 10000"
        ))
        .bind(correlation_id.to_string())
        .fetch_all(&self.pool)
        .await?)
    }

    /// The direct effects of an event (events whose causation id is it), in global order.
    ///
    /// # Errors
    /// [`ProjectionError::Database`].
    pub async fn caused_by(&self, event_id: Uuid) -> Result<Vec<AuditEvent>, ProjectionError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM events WHERE metadata ->> 'causation_id' = $1
              ORDER BY position LIMIT 10000"
        ))
        .bind(event_id.to_string())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Dead-lettered messages per subject (empty without JetStream).
    ///
    /// # Errors
    /// [`ProjectionError::Bus`] when JetStream does not answer.
    pub async fn dlq(&self) -> Result<DlqCounts, ProjectionError> {
        match &self.js {
            Some(js) => dlq_counts(js).await,
            None => Ok(DlqCounts::default()),
        }
    }

    /// Checkpoint and lag of every projection.
    ///
    /// # Errors
    /// [`ProjectionError::Database`].
    pub async fn status(&self) -> Result<Vec<ProjectorStatus>, ProjectionError> {
        status(&self.pool, NAMES).await
    }
}

/// Sentiment of one token, summed up.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct TokenSentiment {
    /// The token.
    pub token: String,
    /// Scores recorded.
    pub scores: i64,
    /// Mean score.
    pub mean_score: Option<rust_decimal::Decimal>,
    /// Event time of the newest score.
    pub last_at: Option<DateTime<Utc>>,
}
