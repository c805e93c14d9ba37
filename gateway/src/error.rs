//! Errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Handlers return [`ApiError`]; it becomes a response carrying a [`Problem`] in its extensions, and the
//! problem middleware ([`crate::middleware::problems`]) writes the body with the request's path and id.
//! The same middleware turns axum's own rejections (bad JSON, bad query, unknown route, body too large) into
//! problems. A 5xx never carries internals: its detail is generic and the cause is logged once.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Base of the `type` URIs.
pub const PROBLEM_BASE: &str = "https://jarvis.dev/problems/";

/// An RFC 9457 problem.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `https://jarvis.dev/problems/validation`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request, and what to do.
    pub detail: String,
    /// The request's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The request's `x-request-id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Problem {
    /// A problem of `kind` (a suffix of [`PROBLEM_BASE`]).
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("{PROBLEM_BASE}{kind}"),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
            request_id: None,
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no credentials, or bad ones.
    #[error("{0}")]
    Unauthorized(String),
    /// 401: the access token expired; refresh it.
    #[error("the access token has expired: POST /api/v1/auth/refresh")]
    TokenExpired,
    /// 403: authenticated, but the role or scope does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 403: an admin route needs a token minted with a TOTP code.
    #[error("this route needs a second factor: log in again with a TOTP code")]
    MfaRequired,
    /// 400: the request does not make sense.
    #[error("{0}")]
    BadRequest(String),
    /// 422: a field has a value that is not allowed.
    #[error("{0}")]
    Validation(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: refused by the domain (e.g. an expired proposal).
    #[error("{0}")]
    Conflict(String),
    /// 429: slow down.
    #[error("too many requests: retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request would be admitted.
        retry_after_secs: u64,
    },
    /// 503: a dependency (bus service, database) is not there.
    #[error("{0}")]
    Unavailable(String),
    /// 504: a dependency did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// 500: our failure. The cause is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The status, `type` suffix and title.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::TokenExpired => (StatusCode::UNAUTHORIZED, "token-expired", "Token expired"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::MfaRequired => (
                StatusCode::FORBIDDEN,
                "mfa-required",
                "Second factor required",
            ),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            Self::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request",
            ),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Self::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service-unavailable",
                "Service unavailable",
            ),
            Self::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout", "Timed out"),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    /// The problem this error becomes.
    pub fn problem(&self) -> Problem {
        let (status, kind, title) = self.parts();
        let detail = match self {
            Self::Internal(_) => {
                "the gateway failed to answer this request; it has been logged with this request id"
                    .to_string()
            }
            other => other.to_string(),
        };
        Problem::new(status, kind, title, detail)
    }
}

impl From<jarvis_store::StoreError> for ApiError {
    fn from(e: jarvis_store::StoreError) -> Self {
        Self::Internal(format!("store: {e}"))
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(format!("database: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        if let Self::Internal(cause) = &self {
            tracing::error!(cause = %cause, "request failed");
        }
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = status.into_response();
        if let Self::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, retry_after_secs.into());
        }
        response.extensions_mut().insert(problem);
        response
    }
}

/// What a handler returns.
pub type ApiResult<T> = Result<T, ApiError>;
