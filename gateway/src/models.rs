//! What the REST API serves: the JSON shapes of the read models, the list query (pagination and time range),
//! and [`ReadModels`], the trait the handlers read through (filled from the `projections` crate, and from
//! the store for events; [`crate::memory::MemoryModels`] holds them in memory for tests and the benchmark).

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::ApiError;

/// Largest page.
pub const MAX_LIMIT: u32 = 1_000;
/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;

/// A page of a list, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A list that is not paged.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Items<T> {
    /// The items.
    pub items: Vec<T>,
}

/// A validated list query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageQuery {
    /// 1 to [`MAX_LIMIT`].
    pub limit: u32,
    /// Opaque position from the previous page.
    pub cursor: Option<String>,
    /// Inclusive lower bound of the item's time.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound of the item's time.
    pub to: Option<DateTime<Utc>>,
}

macro_rules! list_query {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, Deserialize, IntoParams)]
        #[into_params(parameter_in = Query)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Items per page, 1 to 1000 (default 100).
            pub limit: Option<u32>,
            /// `next_cursor` of the previous page.
            pub cursor: Option<String>,
            /// Only items at or after this time (RFC 3339).
            pub from: Option<DateTime<Utc>>,
            /// Only items before this time (RFC 3339).
            pub to: Option<DateTime<Utc>>,
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl $name {
            /// The validated page query.
            ///
            /// # Errors
            /// [`ApiError::Validation`] naming the field and value.
            pub fn page(&self) -> Result<PageQuery, ApiError> {
                page_query(self.limit, self.cursor.clone(), self.from, self.to)
            }
        }
    };
}

list_query!(
    /// `limit`, `cursor`, `from`, `to`.
    ListQuery {}
);
list_query!(
    /// A list of orders.
    OrdersQuery {
        /// Only orders in this status (e.g. `filled`).
        status: Option<String>,
        /// Only orders of this symbol (e.g. `SOL/USDT`).
        symbol: Option<String>
    }
);
list_query!(
    /// A list of trades.
    TradesQuery {
        /// Only trades of this symbol.
        symbol: Option<String>
    }
);
list_query!(
    /// A list of events.
    EventsQuery {
        /// Only events of this story.
        correlation_id: Option<Uuid>,
        /// Only events of this type, e.g. `OrderFilled`.
        #[serde(rename = "type")]
        #[param(rename = "type")]
        event_type: Option<String>
    }
);

/// A time range.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// From this time (RFC 3339; default: 30 days ago).
    pub from: Option<DateTime<Utc>>,
    /// Until this time (RFC 3339; default: now).
    pub to: Option<DateTime<Utc>>,
}

/// Checks a list query.
///
/// # Errors
/// [`ApiError::Validation`] naming the field and value.
pub fn page_query(
    limit: Option<u32>,
    cursor: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<PageQuery, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::Validation(format!(
            "limit = {limit}: must be 1 to {MAX_LIMIT}"
        )));
    }
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(ApiError::Validation(format!(
                "from = {f} is not before to = {t}"
            )));
        }
    }
    if let Some(c) = &cursor {
        if c.is_empty() || c.len() > 200 {
            return Err(ApiError::Validation(
                "cursor: pass next_cursor of the previous page unchanged".into(),
            ));
        }
    }
    Ok(PageQuery {
        limit,
        cursor,
        from,
        to,
    })
}

/// A cursor that is an offset into a list (opaque to clients).
pub fn offset_cursor(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("o:{offset}"))
}

/// Reads an [`offset_cursor`].
///
/// # Errors
/// [`ApiError::BadRequest`] for a cursor this gateway did not make.
pub fn parse_offset_cursor(cursor: &str) -> Result<usize, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("o:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "cursor = {cursor:?} is not one this list made; pass next_cursor unchanged"
            ))
        })
}

/// Pages a list held in memory, **sorted newest first**: keeps items whose time is in the range. Costs
/// the offset plus the page, not the list.
///
/// # Errors
/// A bad cursor.
pub fn page_of<T: Clone>(
    items: &[T],
    time: impl Fn(&T) -> DateTime<Utc>,
    query: &PageQuery,
) -> Result<Page<T>, ApiError> {
    let offset = query
        .cursor
        .as_deref()
        .map(parse_offset_cursor)
        .transpose()?
        .unwrap_or(0);
    let limit = query.limit as usize;
    // Newest first: skip what is at or after `to`, stop before `from`.
    let start = match query.to {
        Some(to) => items.partition_point(|i| time(i) >= to),
        None => 0,
    };
    let end = match query.from {
        Some(from) => items.partition_point(|i| time(i) >= from),
        None => items.len(),
    };
    let in_range = items.get(start..end.max(start)).unwrap_or_default();
    let first = offset.min(in_range.len());
    let last = (first + limit).min(in_range.len());
    Ok(Page {
        items: in_range[first..last].to_vec(),
        next_cursor: (last < in_range.len()).then(|| offset_cursor(last)),
    })
}

/// Sorts a list newest first, as [`page_of`] wants it.
pub fn sort_newest_first<T>(items: &mut [T], time: impl Fn(&T) -> DateTime<Utc>) {
    items.sort_by_key(|i| std::cmp::Reverse(time(i)));
}

/// Why a read model could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The caller's input is wrong (e.g. a bad cursor).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The read model is still being built or rebuilt.
    #[error("the {0} read model is not ready yet; retry shortly")]
    NotReady(&'static str),
    /// A failure of ours (database, ...); logged, never sent.
    #[error("{0}")]
    Internal(String),
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Api(e) => e,
            ReadError::NotReady(_) => ApiError::Unavailable(e.to_string()),
            ReadError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<jarvis_store::StoreError> for ReadError {
    fn from(e: jarvis_store::StoreError) -> Self {
        Self::Internal(format!("store: {e}"))
    }
}

impl From<sqlx::Error> for ReadError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(format!("database: {e}"))
    }
}

/// A read model answer.
pub type ReadResult<T> = Result<T, ReadError>;

/// The portfolio now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Portfolio {
    /// The quote asset, e.g. `USDT`.
    pub quote_asset: String,
    /// Cash in the quote asset.
    pub cash: Decimal,
    /// Cash plus positions at their last price.
    pub equity: Decimal,
    /// Highest equity seen.
    pub high_water_mark: Decimal,
    /// Equity at the start of the (UTC) day.
    pub day_start_equity: Decimal,
    /// Realized profit and loss.
    pub realized_pnl: Decimal,
    /// Unrealized profit and loss.
    pub unrealized_pnl: Decimal,
    /// Open positions.
    pub positions: Vec<Position>,
    /// Time of the last event applied.
    pub as_of: Option<DateTime<Utc>>,
    /// Whether trading is halted.
    pub halted: bool,
}

/// A position in one symbol.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Position {
    /// e.g. `SOL/USDT`.
    pub symbol: String,
    /// Quantity held.
    pub quantity: Decimal,
    /// Average cost.
    pub avg_cost: Decimal,
    /// Last price.
    pub price: Option<Decimal>,
    /// Quantity × price.
    pub market_value: Decimal,
    /// Unrealized profit and loss.
    pub unrealized_pnl: Decimal,
    /// Realized profit and loss.
    pub realized_pnl: Decimal,
}

/// A point of an equity curve.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EquityPoint {
    /// When.
    pub at: DateTime<Utc>,
    /// Equity.
    pub equity: Decimal,
    /// Cash.
    pub cash: Decimal,
}

/// An order and where it is in its life.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Order {
    /// Id.
    pub order_id: Uuid,
    /// Symbol.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Quantity proposed.
    pub quantity: Decimal,
    /// proposed, approved, rejected, submitted, partially_filled, filled, failed.
    pub status: String,
    /// Quantity filled so far.
    pub filled_quantity: Decimal,
    /// Average fill price.
    pub avg_fill_price: Option<Decimal>,
    /// Where it was sent.
    pub venue: Option<String>,
    /// Risk rejection reasons or failure reason.
    pub reasons: Vec<String>,
    /// When proposed.
    pub proposed_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The story it belongs to.
    pub correlation_id: Option<Uuid>,
}

/// A fill.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Trade {
    /// Fill id.
    pub fill_id: String,
    /// Order.
    pub order_id: Uuid,
    /// Symbol.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Quantity.
    pub quantity: Decimal,
    /// Price.
    pub price: Decimal,
    /// Fee in the quote asset.
    pub fee: Decimal,
    /// When.
    pub filled_at: DateTime<Utc>,
}

/// A risk rejection.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Rejection {
    /// Order.
    pub order_id: Uuid,
    /// Symbol.
    pub symbol: String,
    /// Rules broken.
    pub reasons: Vec<String>,
    /// When.
    pub decided_at: DateTime<Utc>,
}

/// The risk book now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RiskState {
    /// Whether trading is halted.
    pub halted: bool,
    /// Why.
    pub halt_reason: Option<String>,
    /// Since when.
    pub halted_at: Option<DateTime<Utc>>,
    /// Rejections today (UTC).
    pub rejections_today: u64,
    /// The latest rejections.
    pub last_rejections: Vec<Rejection>,
}

/// A price.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Price {
    /// Symbol.
    pub symbol: String,
    /// Price.
    pub price: Decimal,
    /// When (event time).
    pub at: DateTime<Utc>,
    /// Candle, Jupiter, ...
    pub source: String,
}

/// A sentiment score.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SentimentPoint {
    /// Token, e.g. `SOL`.
    pub token: String,
    /// -1 to 1.
    pub score: f64,
    /// 0 to 1.
    pub confidence: f64,
    /// Model.
    pub model: String,
    /// When (event time).
    pub at: DateTime<Utc>,
}

/// Cost and calls in one bucket.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageBucket {
    /// The day (`2026-11-21`), provider or task.
    pub key: String,
    /// Cost in USD.
    pub cost_usd: Decimal,
    /// Calls.
    pub calls: u64,
}

/// LLM usage over a time range.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct LlmUsage {
    /// From.
    pub from: Option<DateTime<Utc>>,
    /// To.
    pub to: Option<DateTime<Utc>>,
    /// Total cost in USD.
    pub total_cost_usd: Decimal,
    /// Completed calls.
    pub calls: u64,
    /// Failed calls.
    pub failures: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Per UTC day.
    pub by_day: Vec<UsageBucket>,
    /// Per provider.
    pub by_provider: Vec<UsageBucket>,
    /// Per task.
    pub by_task: Vec<UsageBucket>,
}

/// Lag of one consumer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsumerLag {
    /// Durable name.
    pub name: String,
    /// Messages not yet delivered.
    pub num_pending: u64,
    /// Delivered, not yet acked.
    pub num_ack_pending: u64,
    /// Redelivered.
    pub num_redelivered: u64,
}

/// An agent's health, from its heartbeats.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentHealth {
    /// Agent.
    pub agent: String,
    /// Process instance.
    pub instance: String,
    /// ok, degraded, halted or down (no heartbeat for 3 intervals).
    pub status: String,
    /// Last heartbeat.
    pub last_seen: DateTime<Utc>,
    /// Heartbeat interval.
    pub interval_ms: u64,
    /// Its consumers.
    pub consumers: Vec<ConsumerLag>,
    /// Messages in its dead-letter subject.
    pub dlq_messages: u64,
}

/// A stored event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Id.
    pub event_id: Uuid,
    /// Global position.
    pub position: i64,
    /// e.g. `OrderFilled`.
    pub event_type: String,
    /// e.g. `Order`.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Sequence in the aggregate.
    pub sequence: i64,
    /// When stored.
    pub recorded_at: DateTime<Utc>,
    /// The story.
    pub correlation_id: Uuid,
    /// The cause.
    pub causation_id: Uuid,
    /// The writer.
    pub source: String,
    /// The event's JSON.
    pub payload: Value,
}

impl From<jarvis_domain::RecordedEvent> for Event {
    fn from(e: jarvis_domain::RecordedEvent) -> Self {
        Self {
            event_id: e.event_id,
            position: e.position,
            event_type: e.event_type,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            recorded_at: e.recorded_at,
            correlation_id: e.metadata.correlation_id,
            causation_id: e.metadata.causation_id,
            source: e.metadata.source,
            payload: e.payload,
        }
    }
}

/// A conversation with one chat.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Conversation {
    /// Chat id.
    pub chat_id: String,
    /// Last message.
    pub last_message_at: DateTime<Utc>,
    /// Messages.
    pub messages: u64,
}

/// A chat message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatMessage {
    /// Id.
    pub message_id: String,
    /// Chat.
    pub chat_id: String,
    /// `user` or `assistant`.
    pub role: String,
    /// Text.
    pub text: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A backtest run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BacktestRun {
    /// Id.
    pub run_id: String,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// running, finished, failed.
    pub status: String,
    /// Its configuration.
    pub config: Value,
    /// Its metrics (return, drawdown, Sharpe, ...).
    pub metrics: Value,
    /// Equity curve (only on `/backtests/{run_id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equity_curve: Option<Vec<EquityPoint>>,
}

/// Figures exported on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Events stored but not yet published by the relay.
    pub relay_lag: Option<i64>,
    /// Events behind, per projector.
    pub projector_lag: Vec<(String, i64)>,
    /// Fills so far.
    pub trades_total: Option<u64>,
    /// LLM cost so far, USD.
    pub llm_cost_usd: Option<f64>,
}

/// The read models, as the handlers see them.
#[async_trait]
pub trait ReadModels: Send + Sync + 'static {
    /// The portfolio now.
    async fn portfolio(&self) -> ReadResult<Portfolio>;
    /// The equity curve.
    async fn equity(&self, page: &PageQuery) -> ReadResult<Page<EquityPoint>>;
    /// Open positions.
    async fn positions(&self) -> ReadResult<Vec<Position>>;
    /// Orders.
    async fn orders(
        &self,
        page: &PageQuery,
        status: Option<&str>,
        symbol: Option<&str>,
    ) -> ReadResult<Page<Order>>;
    /// One order.
    async fn order(&self, id: Uuid) -> ReadResult<Option<Order>>;
    /// Fills.
    async fn trades(&self, page: &PageQuery, symbol: Option<&str>) -> ReadResult<Page<Trade>>;
    /// The risk book now.
    async fn risk(&self) -> ReadResult<RiskState>;
    /// Risk rejections.
    async fn rejections(&self, page: &PageQuery) -> ReadResult<Page<Rejection>>;
    /// The latest price of each symbol.
    async fn prices(&self) -> ReadResult<Vec<Price>>;
    /// Prices of one symbol.
    async fn price_history(&self, symbol: &str, page: &PageQuery) -> ReadResult<Page<Price>>;
    /// The latest score of each token.
    async fn sentiment(&self) -> ReadResult<Vec<SentimentPoint>>;
    /// Scores of one token.
    async fn sentiment_history(
        &self,
        token: &str,
        page: &PageQuery,
    ) -> ReadResult<Page<SentimentPoint>>;
    /// LLM usage in a range.
    async fn llm_usage(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> ReadResult<LlmUsage>;
    /// Agents' health.
    async fn agents(&self) -> ReadResult<Vec<AgentHealth>>;
    /// Stored events.
    async fn events(
        &self,
        page: &PageQuery,
        correlation_id: Option<Uuid>,
        event_type: Option<&str>,
    ) -> ReadResult<Page<Event>>;
    /// One event.
    async fn event(&self, id: Uuid) -> ReadResult<Option<Event>>;
    /// The causes of an event, root first, ending with it.
    async fn causal_chain(&self, id: Uuid) -> ReadResult<Option<Vec<Event>>>;
    /// Conversations.
    async fn conversations(&self, page: &PageQuery) -> ReadResult<Page<Conversation>>;
    /// Messages of one chat.
    async fn messages(&self, chat_id: &str, page: &PageQuery) -> ReadResult<Page<ChatMessage>>;
    /// Backtest runs.
    async fn backtests(&self, page: &PageQuery) -> ReadResult<Page<BacktestRun>>;
    /// One backtest run with its equity curve.
    async fn backtest(&self, id: &str) -> ReadResult<Option<BacktestRun>>;
    /// Figures for `/metrics`.
    async fn gauges(&self) -> Gauges {
        Gauges::default()
    }
}
