//! Log in (password, optional TOTP), refresh, and who am I.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::{Principal, TokenPair, Viewer};
use crate::error::{ApiError, ApiResult, Problem};
use crate::routes::AuthErrors;
use crate::AppState;

/// `POST /api/v1/auth/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Current TOTP code (6 digits), for a token that may use admin routes.
    #[serde(default)]
    pub totp: Option<String>,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshRequest { .. }")
    }
}

/// `POST /api/v1/auth/refresh`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from login or the last refresh.
    pub refresh_token: String,
}

/// Exchanges a user name and password (and a TOTP code) for an access and a refresh token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, description = "Tokens", body = TokenPair),
        (status = 401, description = "Wrong credentials", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = Problem, content_type = "application/problem+json")))]
pub async fn login(
    State(s): State<AppState>,
    Json(body): Json<LoginRequest>,
) -> ApiResult<Json<TokenPair>> {
    if body.username.len() > 200 || body.password.len() > 1_000 {
        return Err(ApiError::Validation(
            "username (≤ 200 bytes) or password (≤ 1000 bytes) too long".into(),
        ));
    }
    let state = s.clone();
    // argon2 is slow on purpose: keep it off the async threads.
    let result = tokio::task::spawn_blocking(move || {
        state
            .auth
            .login(&body.username, &body.password, body.totp.as_deref())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("login task: {e}")))?;
    if result.is_err() {
        tracing::warn!(target: "jarvis::access", "login refused");
    }
    result.map(Json)
}

/// Exchanges a refresh token for a new pair.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, description = "Tokens", body = TokenPair),
        (status = 401, description = "Invalid or expired refresh token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Malformed body", body = Problem, content_type = "application/problem+json")))]
pub async fn refresh(
    State(s): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> ApiResult<Json<TokenPair>> {
    s.auth.refresh(&body.refresh_token).map(Json)
}

/// Who the credentials belong to.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The caller", body = Principal), AuthErrors))]
pub async fn me(Viewer(p): Viewer) -> Json<Principal> {
    Json(p)
}
