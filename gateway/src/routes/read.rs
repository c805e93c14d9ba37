//! GET the read models: portfolio, positions, orders, trades, risk, prices, sentiment, LLM usage, agents,
//! conversations, backtests. Viewer role, `read` scope.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use uuid::Uuid;

use crate::auth::Viewer;
use crate::error::{ApiError, ApiResult, Problem};
use crate::models::*;
use crate::routes::AuthErrors;
use crate::AppState;

/// `SOL-USDT` or `SOL_USDT` in a path means `SOL/USDT`.
pub fn symbol_from_path(text: &str) -> String {
    text.replace(['-', '_'], "/").to_ascii_uppercase()
}

/// The portfolio now: cash, equity, positions, P&L.
#[utoipa::path(get, path = "/api/v1/portfolio", tag = "trading",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The portfolio", body = Portfolio), AuthErrors))]
pub async fn portfolio(_: Viewer, State(s): State<AppState>) -> ApiResult<Json<Portfolio>> {
    Ok(Json(s.models.portfolio().await?))
}

/// The equity curve, newest first.
#[utoipa::path(get, path = "/api/v1/portfolio/equity", tag = "trading", params(ListQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Equity points", body = Page<EquityPoint>), AuthErrors))]
pub async fn equity(
    _: Viewer,
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<EquityPoint>>> {
    Ok(Json(s.models.equity(&q.page()?).await?))
}

/// Open positions.
#[utoipa::path(get, path = "/api/v1/positions", tag = "trading",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Positions", body = Items<Position>), AuthErrors))]
pub async fn positions(_: Viewer, State(s): State<AppState>) -> ApiResult<Json<Items<Position>>> {
    Ok(Json(Items {
        items: s.models.positions().await?,
    }))
}

/// Orders, newest first.
#[utoipa::path(get, path = "/api/v1/orders", tag = "trading", params(OrdersQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Orders", body = Page<Order>), AuthErrors))]
pub async fn orders(
    _: Viewer,
    State(s): State<AppState>,
    Query(q): Query<OrdersQuery>,
) -> ApiResult<Json<Page<Order>>> {
    const STATUSES: &[&str] = &[
        "proposed",
        "approved",
        "rejected",
        "submitted",
        "partially_filled",
        "filled",
        "failed",
    ];
    if let Some(status) = &q.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(ApiError::Validation(format!(
                "status = {status:?}: must be one of {}",
                STATUSES.join(", ")
            )));
        }
    }
    let symbol = q.symbol.as_deref().map(symbol_from_path);
    Ok(Json(
        s.models
            .orders(&q.page()?, q.status.as_deref(), symbol.as_deref())
            .await?,
    ))
}

/// One order.
#[utoipa::path(get, path = "/api/v1/orders/{order_id}", tag = "trading",
    params(("order_id" = Uuid, Path, description = "The order's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The order", body = Order),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn order(
    _: Viewer,
    State(s): State<AppState>,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<Order>> {
    s.models
        .order(order_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no order {order_id}")))
}

/// Fills, newest first.
#[utoipa::path(get, path = "/api/v1/trades", tag = "trading", params(TradesQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Trades", body = Page<Trade>), AuthErrors))]
pub async fn trades(
    _: Viewer,
    State(s): State<AppState>,
    Query(q): Query<TradesQuery>,
) -> ApiResult<Response> {
    let symbol = q.symbol.as_deref().map(symbol_from_path);
    let page = q.page()?;
    let newest =
        page.cursor.is_none() && page.from.is_none() && page.to.is_none() && symbol.is_none();
    if newest {
        if let Some(body) = s.hot_trades.get(page.limit) {
            return Ok(json_bytes(body));
        }
    }
    let trades = s.models.trades(&page, symbol.as_deref()).await?;
    let body = bytes::Bytes::from(
        serde_json::to_vec(&trades).map_err(|e| ApiError::Internal(format!("trades: {e}")))?,
    );
    if newest {
        s.hot_trades.put(page.limit, body.clone());
    }
    Ok(json_bytes(body))
}

/// A JSON body already serialised.
fn json_bytes(body: bytes::Bytes) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The risk book: halted or not, recent rejections.
#[utoipa::path(get, path = "/api/v1/risk", tag = "trading",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Risk state", body = RiskState), AuthErrors))]
pub async fn risk(_: Viewer, State(s): State<AppState>) -> ApiResult<Json<RiskState>> {
    Ok(Json(s.models.risk().await?))
}

/// Risk rejections, newest first.
#[utoipa::path(get, path = "/api/v1/risk/rejections", tag = "trading", params(ListQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Rejections", body = Page<Rejection>), AuthErrors))]
pub async fn rejections(
    _: Viewer,
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Rejection>>> {
    Ok(Json(s.models.rejections(&q.page()?).await?))
}

/// The latest price of each symbol.
#[utoipa::path(get, path = "/api/v1/prices", tag = "market",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Prices", body = Items<Price>), AuthErrors))]
pub async fn prices(_: Viewer, State(s): State<AppState>) -> ApiResult<Json<Items<Price>>> {
    Ok(Json(Items {
        items: s.models.prices().await?,
    }))
}

/// Prices of one symbol, newest first.
#[utoipa::path(get, path = "/api/v1/prices/{symbol}", tag = "market",
    params(("symbol" = String, Path, description = "e.g. SOL-USDT (for SOL/USDT)"), ListQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Prices", body = Page<Price>), AuthErrors))]
pub async fn price_history(
    _: Viewer,
    State(s): State<AppState>,
    Path(symbol): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Price>>> {
    Ok(Json(
        s.models
            .price_history(&symbol_from_path(&symbol), &q.page()?)
            .await?,
    ))
}

/// The latest sentiment score of each token.
#[utoipa::path(get, path = "/api/v1/sentiment", tag = "market",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Scores", body = Items<SentimentPoint>), AuthErrors))]
pub async fn sentiment(
    _: Viewer,
    State(s): State<AppState>,
) -> ApiResult<Json<Items<SentimentPoint>>> {
    Ok(Json(Items {
        items: s.models.sentiment().await?,
    }))
}

/// Sentiment of one token over time, newest first.
#[utoipa::path(get, path = "/api/v1/sentiment/{token}", tag = "market",
    params(("token" = String, Path, description = "e.g. SOL"), ListQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Scores", body = Page<SentimentPoint>), AuthErrors))]
pub async fn sentiment_history(
    _: Viewer,
    State(s): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<SentimentPoint>>> {
    Ok(Json(
        s.models
            .sentiment_history(&token.to_ascii_uppercase(), &q.page()?)
            .await?,
    ))
}

/// LLM calls and cost in a time range, per day, provider and task.
#[utoipa::path(get, path = "/api/v1/llm/usage", tag = "ops", params(RangeQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Usage", body = LlmUsage), AuthErrors))]
pub async fn llm_usage(
    _: Viewer,
    State(s): State<AppState>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Json<LlmUsage>> {
    if let (Some(f), Some(t)) = (q.from, q.to) {
        if f >= t {
            return Err(ApiError::Validation(format!(
                "from = {f} is not before to = {t}"
            )));
        }
    }
    Ok(Json(s.models.llm_usage(q.from, q.to).await?))
}

/// Agents' health from their heartbeats: status, consumer lag, dead letters.
#[utoipa::path(get, path = "/api/v1/agents", tag = "ops",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Agents", body = Items<AgentHealth>), AuthErrors))]
pub async fn agents(_: Viewer, State(s): State<AppState>) -> ApiResult<Json<Items<AgentHealth>>> {
    Ok(Json(Items {
        items: s.models.agents().await?,
    }))
}

/// Conversations, most recent first.
#[utoipa::path(get, path = "/api/v1/conversations", tag = "ops", params(ListQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Conversations", body = Page<Conversation>), AuthErrors))]
pub async fn conversations(
    _: Viewer,
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Conversation>>> {
    Ok(Json(s.models.conversations(&q.page()?).await?))
}

/// Messages of one chat, newest first.
#[utoipa::path(get, path = "/api/v1/conversations/{chat_id}/messages", tag = "ops",
    params(("chat_id" = String, Path, description = "The chat"), ListQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Messages", body = Page<ChatMessage>), AuthErrors))]
pub async fn messages(
    _: Viewer,
    State(s): State<AppState>,
    Path(chat_id): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<ChatMessage>>> {
    Ok(Json(s.models.messages(&chat_id, &q.page()?).await?))
}

/// Backtest runs, newest first (without equity curves).
#[utoipa::path(get, path = "/api/v1/backtests", tag = "ops", params(ListQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Runs", body = Page<BacktestRun>), AuthErrors))]
pub async fn backtests(
    _: Viewer,
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<BacktestRun>>> {
    Ok(Json(s.models.backtests(&q.page()?).await?))
}

/// One backtest run with its equity curve.
#[utoipa::path(get, path = "/api/v1/backtests/{run_id}", tag = "ops",
    params(("run_id" = String, Path, description = "The run")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The run", body = BacktestRun),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn backtest(
    _: Viewer,
    State(s): State<AppState>,
    Path(run_id): Path<String>,
) -> ApiResult<Json<BacktestRun>> {
    s.models
        .backtest(&run_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no backtest run {run_id}")))
}
