//! Commands: halt, resume, and manual orders, sent as NATS requests to the same bus services Telegram uses
//! (`jarvis-risk`, `jarvis-trading`). Operator role, `commands` scope.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Operator;
use crate::error::{ApiError, ApiResult};
use crate::routes::{AuthErrors, CommandErrors};
use crate::AppState;

/// `POST /api/v1/commands/halt`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HaltRequest {
    /// Why (recorded in `TradingHalted`).
    pub reason: String,
}

/// `POST /api/v1/commands/resume`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    /// Why (recorded in `TradingResumed`).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/v1/commands/orders`: give `quantity` or `notional`, not both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// e.g. `SOLUSDT` or `SOL/USDT`.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Base quantity, e.g. `"1.5"`.
    #[serde(default)]
    pub quantity: Option<Decimal>,
    /// Quote amount, e.g. `"100"`.
    #[serde(default)]
    pub notional: Option<Decimal>,
}

/// The trading service's answer to a proposal.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Proposal {
    /// Confirm with this id.
    pub proposal_id: Uuid,
    /// `approved` or `rejected`.
    pub verdict: String,
    /// The risk rules' reasons.
    pub rules: Vec<Value>,
    /// Reference price.
    pub price: Decimal,
    /// Quantity.
    pub quantity: Decimal,
    /// Confirm before this.
    pub expires_at: DateTime<Utc>,
}

/// The trading service's answer to a confirmation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Confirmation {
    /// The order placed.
    pub order_id: Uuid,
    /// `submitted`.
    pub status: String,
}

/// Sends `body` to `subject` and returns the service's JSON reply, with micro-protocol errors and a missing
/// or silent service mapped to problems.
///
/// # Errors
/// 503 no service, 504 no answer in time, 422 the service refused the request's shape, 409 refused.
pub async fn request(state: &AppState, subject: &str, body: Value) -> ApiResult<Value> {
    let outcome = request_inner(state, subject, body).await;
    let label = match &outcome {
        Ok(_) => "ok",
        Err(ApiError::Unavailable(_)) => "unavailable",
        Err(ApiError::Timeout(_)) => "timeout",
        Err(_) => "refused",
    };
    state
        .metrics
        .commands
        .with_label_values(&[subject, label])
        .inc();
    outcome
}

async fn request_inner(state: &AppState, subject: &str, body: Value) -> ApiResult<Value> {
    let service = subject.split('.').nth(2).unwrap_or("?");
    let Some(bus) = &state.bus else {
        return Err(ApiError::Unavailable(
            "the gateway has no bus connection; commands are unavailable".into(),
        ));
    };
    let payload = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let request = async_nats::Request::new()
        .payload(payload)
        .timeout(Some(Duration::from_millis(state.config.command_timeout_ms)));
    let reply = bus
        .client
        .send_request(subject.to_string(), request)
        .await
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => ApiError::Unavailable(format!(
                "the jarvis-{service} service is not running ({subject} has no responders); \
                 start it (jarvis up) and retry"
            )),
            async_nats::RequestErrorKind::TimedOut => ApiError::Timeout(format!(
                "the jarvis-{service} service did not answer {subject} within {} ms",
                state.config.command_timeout_ms
            )),
            _ => ApiError::Unavailable(format!("the bus is unavailable: {e}")),
        })?;
    if let Some(headers) = &reply.headers {
        if let Some(code) = headers.get("Nats-Service-Error-Code") {
            let message = headers
                .get("Nats-Service-Error")
                .map(|m| m.as_str().to_string())
                .unwrap_or_default();
            return Err(match code.as_str() {
                "400" => ApiError::Validation(format!("jarvis-{service}: {message}")),
                "404" => ApiError::NotFound(format!("jarvis-{service}: {message}")),
                "409" => ApiError::Conflict(format!("jarvis-{service}: {message}")),
                other => ApiError::Internal(format!(
                    "jarvis-{service} answered {subject} with error {other}: {message}"
                )),
            });
        }
    }
    serde_json::from_slice(&reply.payload).map_err(|e| {
        ApiError::Internal(format!(
            "jarvis-{service} answered {subject} with non-JSON: {e}"
        ))
    })
}

fn check_reason(reason: &str) -> ApiResult<()> {
    if reason.trim().is_empty() || reason.len() > 500 {
        return Err(ApiError::Validation(format!(
            "reason = {reason:?}: must be 1 to 500 characters"
        )));
    }
    Ok(())
}

/// Halts trading (the kill switch): every proposal is refused until resumed.
#[utoipa::path(post, path = "/api/v1/commands/halt", tag = "commands", request_body = HaltRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The risk book's status after the halt", body = Object),
        AuthErrors, CommandErrors))]
pub async fn halt(
    Operator(p): Operator,
    State(s): State<AppState>,
    Json(body): Json<HaltRequest>,
) -> ApiResult<Json<Value>> {
    check_reason(&body.reason)?;
    tracing::info!(by = %p.subject, "halt requested");
    let reason = format!("{} [{}]", body.reason.trim(), p.requester());
    Ok(Json(
        request(&s, "jarvis.cmd.risk.halt", json!({ "reason": reason })).await?,
    ))
}

/// Resumes trading after a halt.
#[utoipa::path(post, path = "/api/v1/commands/resume", tag = "commands", request_body = ResumeRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The risk book's status after the resume", body = Object),
        AuthErrors, CommandErrors))]
pub async fn resume(
    Operator(p): Operator,
    State(s): State<AppState>,
    body: Option<Json<ResumeRequest>>,
) -> ApiResult<Json<Value>> {
    let body = body.map(|b| b.0).unwrap_or_default();
    let reason = body.reason.unwrap_or_else(|| "resumed".into());
    check_reason(&reason)?;
    tracing::info!(by = %p.subject, "resume requested");
    let reason = format!("{} [{}]", reason.trim(), p.requester());
    Ok(Json(
        request(&s, "jarvis.cmd.risk.resume", json!({ "reason": reason })).await?,
    ))
}

/// Proposes a manual order; the risk book judges it. Confirm an approved proposal to place it.
#[utoipa::path(post, path = "/api/v1/commands/orders", tag = "commands", request_body = OrderRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The proposal and its verdict", body = Proposal),
        AuthErrors, CommandErrors))]
pub async fn propose(
    Operator(p): Operator,
    State(s): State<AppState>,
    Json(body): Json<OrderRequest>,
) -> ApiResult<Json<Value>> {
    let symbol: String = body
        .symbol
        .chars()
        .filter(|c| *c != '/' && *c != '-')
        .collect::<String>()
        .to_ascii_uppercase();
    if symbol.len() < 3 || symbol.len() > 30 || !symbol.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::Validation(format!(
            "symbol = {:?}: expected e.g. SOLUSDT or SOL/USDT",
            body.symbol
        )));
    }
    let side = body.side.to_ascii_lowercase();
    if side != "buy" && side != "sell" {
        return Err(ApiError::Validation(format!(
            "side = {:?}: must be buy or sell",
            body.side
        )));
    }
    let mut request_body = json!({ "symbol": symbol, "side": side, "requested_by": p.requester() });
    match (body.quantity, body.notional) {
        (Some(q), None) if q > Decimal::ZERO => request_body["quantity"] = json!(q.to_string()),
        (None, Some(n)) if n > Decimal::ZERO => request_body["notional"] = json!(n.to_string()),
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::Validation(
                "give exactly one of quantity and notional".into(),
            ))
        }
        _ => {
            return Err(ApiError::Validation(
                "quantity or notional must be positive".into(),
            ))
        }
    }
    Ok(Json(
        request(&s, "jarvis.cmd.trading.propose", request_body).await?,
    ))
}

/// Confirms a proposal: the order is placed (409 when expired, rejected or proposed by someone else).
#[utoipa::path(post, path = "/api/v1/commands/orders/{proposal_id}/confirm", tag = "commands",
    params(("proposal_id" = Uuid, Path, description = "From the proposal")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The order placed", body = Confirmation),
        AuthErrors, CommandErrors))]
pub async fn confirm(
    Operator(p): Operator,
    State(s): State<AppState>,
    Path(proposal_id): Path<Uuid>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        request(
            &s,
            "jarvis.cmd.trading.confirm",
            json!({ "proposal_id": proposal_id, "confirmed_by": p.requester() }),
        )
        .await?,
    ))
}

/// `POST /api/v1/commands/x/drafts/{draft_id}/reject`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectDraftRequest {
    /// Why (recorded in `TweetRejected`).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The X drafts waiting for approval (from `jarvis-x`, as Telegram's `/drafts` lists them).
#[utoipa::path(get, path = "/api/v1/commands/x/drafts", tag = "commands",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "`{\"drafts\": [...]}`, oldest first", body = Object),
        AuthErrors, CommandErrors))]
pub async fn x_drafts(Operator(_): Operator, State(s): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(request(&s, "jarvis.cmd.x.drafts", json!({})).await?))
}

/// Approves an X draft: `jarvis-x` posts it (once, however often it is approved; within the daily cap;
/// not at all in dry-run mode).
#[utoipa::path(post, path = "/api/v1/commands/x/drafts/{draft_id}/approve", tag = "commands",
    params(("draft_id" = Uuid, Path, description = "From the drafts list")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The draft after the approval", body = Object),
        AuthErrors, CommandErrors))]
pub async fn x_approve(
    Operator(p): Operator,
    State(s): State<AppState>,
    Path(draft_id): Path<Uuid>,
) -> ApiResult<Json<Value>> {
    tracing::info!(by = %p.subject, draft = %draft_id, "X draft approval requested");
    Ok(Json(
        request(
            &s,
            "jarvis.cmd.x.approve",
            json!({ "draft_id": draft_id.to_string(), "approved_by": p.requester() }),
        )
        .await?,
    ))
}

/// Rejects an X draft: it is never posted.
#[utoipa::path(post, path = "/api/v1/commands/x/drafts/{draft_id}/reject", tag = "commands",
    params(("draft_id" = Uuid, Path, description = "From the drafts list")),
    request_body = RejectDraftRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The draft after the rejection", body = Object),
        AuthErrors, CommandErrors))]
pub async fn x_reject(
    Operator(p): Operator,
    State(s): State<AppState>,
    Path(draft_id): Path<Uuid>,
    body: Option<Json<RejectDraftRequest>>,
) -> ApiResult<Json<Value>> {
    let reason = body.and_then(|b| b.0.reason);
    if let Some(reason) = &reason {
        check_reason(reason)?;
    }
    Ok(Json(
        request(
            &s,
            "jarvis.cmd.x.reject",
            json!({ "draft_id": draft_id.to_string(), "rejected_by": p.requester(), "reason": reason }),
        )
        .await?,
    ))
}
