//! API keys: list, mint (shown once, stored as SHA-256 in `gateway_api_keys`), revoke. Admin role with a
//! second factor.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{hash_key, new_api_key, Admin, ApiKeyInfo, Role, Scope};
use crate::error::{ApiError, ApiResult, Problem};
use crate::models::Items;
use crate::routes::AuthErrors;
use crate::AppState;

/// `POST /api/v1/admin/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// A unique name, e.g. `grafana`.
    pub name: String,
    /// viewer or operator.
    pub role: Role,
    /// read, stream, commands.
    pub scopes: Vec<Scope>,
}

/// A minted key: the only time the key is shown.
#[derive(Serialize, ToSchema)]
pub struct MintedApiKey {
    /// Id (revoke with it).
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// The key: send as `X-API-Key`. Not stored; shown once.
    pub key: String,
}

fn scope_name(s: Scope) -> &'static str {
    match s {
        Scope::Read => "read",
        Scope::Stream => "stream",
        Scope::Commands => "commands",
    }
}

fn pool(state: &AppState) -> ApiResult<&sqlx::PgPool> {
    state
        .pool
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("the gateway has no database connection".into()))
}

/// Loads the minted keys from the database into the gateway's key table.
///
/// # Errors
/// A database failure.
pub async fn reload_keys(state: &AppState) -> Result<(), sqlx::Error> {
    let Some(pool) = &state.pool else {
        return Ok(());
    };
    let rows = sqlx::query("SELECT id, name, key_sha256, role, scopes FROM gateway_api_keys")
        .fetch_all(pool)
        .await?;
    let mut minted = Vec::new();
    for row in rows {
        let hash: String = row.try_get("key_sha256")?;
        let role: String = row.try_get("role")?;
        let scopes: Vec<String> = row.try_get("scopes")?;
        let info = ApiKeyInfo {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            role: if role == "operator" {
                Role::Operator
            } else {
                Role::Viewer
            },
            scopes: scopes
                .iter()
                .filter_map(|s| match s.as_str() {
                    "read" => Some(Scope::Read),
                    "stream" => Some(Scope::Stream),
                    "commands" => Some(Scope::Commands),
                    _ => None,
                })
                .collect(),
            origin: "database".into(),
            hash_prefix: hash.chars().take(8).collect(),
        };
        minted.push((hash, info));
    }
    state.auth.set_minted_keys(minted);
    Ok(())
}

/// The Postgres channel a gateway notifies when it mints or revokes a key: every gateway over the same
/// database listens on it and reloads its key table.
pub const KEYS_CHANNEL: &str = "jarvis_gateway_api_keys";

async fn announce_keys_changed(state: &AppState) -> Result<(), sqlx::Error> {
    if let Some(pool) = &state.pool {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(KEYS_CHANNEL)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Keeps the key table of `state` in step with the database until `shutdown`: reloads it whenever any
/// gateway announces a change on [`KEYS_CHANNEL`], and every `every` anyway (a notification sent while
/// the listener was reconnecting is not lost for longer than that). Errors are logged and retried.
pub async fn watch_keys(
    state: AppState,
    every: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let Some(pool) = state.pool.clone() else {
        return;
    };
    tokio::pin!(shutdown);
    let mut listener: Option<sqlx::postgres::PgListener> = None;
    loop {
        if listener.is_none() {
            match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(mut l) => match l.listen(KEYS_CHANNEL).await {
                    Ok(()) => listener = Some(l),
                    Err(e) => tracing::warn!(cause = %e, "cannot listen for API key changes"),
                },
                Err(e) => tracing::warn!(cause = %e, "cannot listen for API key changes"),
            }
            // Whatever changed while not listening.
            if let Err(e) = reload_keys(&state).await {
                tracing::warn!(cause = %e, "reloading the API keys failed");
            }
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => return,
            r = notified => {
                if let Err(e) = r {
                    tracing::warn!(cause = %e, "the API key listener failed; reconnecting");
                    listener = None;
                    continue;
                }
            }
            _ = tokio::time::sleep(every) => {
                // Listening failed: try again now.
                if listener.is_none() {
                    continue;
                }
            }
        }
        if let Err(e) = reload_keys(&state).await {
            tracing::warn!(cause = %e, "reloading the API keys failed");
        }
    }
}

/// Every API key (never the keys themselves).
#[utoipa::path(get, path = "/api/v1/admin/api-keys", tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, description = "Keys", body = Items<ApiKeyInfo>), AuthErrors))]
pub async fn list_keys(_: Admin, State(s): State<AppState>) -> ApiResult<Json<Items<ApiKeyInfo>>> {
    Ok(Json(Items {
        items: s.auth.keys(),
    }))
}

/// Mints an API key. The answer is the only time the key is shown.
#[utoipa::path(post, path = "/api/v1/admin/api-keys", tag = "admin", request_body = NewApiKey,
    security(("bearer" = [])),
    responses((status = 201, description = "The key", body = MintedApiKey),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No database", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn create_key(
    Admin(p): Admin,
    State(s): State<AppState>,
    Json(body): Json<NewApiKey>,
) -> ApiResult<(StatusCode, Json<MintedApiKey>)> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::Validation(format!(
            "name = {:?}: must be 1 to 100 characters",
            body.name
        )));
    }
    if body.role == Role::Admin {
        return Err(ApiError::Validation(
            "role = \"admin\": API keys may be viewer or operator".into(),
        ));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::Validation("scopes: give at least one".into()));
    }
    if s.auth.keys().iter().any(|k| k.name == name) {
        return Err(ApiError::Conflict(format!(
            "an API key named {name:?} exists"
        )));
    }
    let key = new_api_key();
    let id = Uuid::now_v7();
    let scopes: Vec<&str> = body.scopes.iter().map(|s| scope_name(*s)).collect();
    let role = if body.role == Role::Operator {
        "operator"
    } else {
        "viewer"
    };
    let inserted = sqlx::query(
        "INSERT INTO gateway_api_keys (id, name, key_sha256, role, scopes, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(name)
    .bind(hash_key(&key))
    .bind(role)
    .bind(&scopes)
    .bind(&p.subject)
    .execute(pool(&s)?)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiError::Conflict(format!(
            "an API key named {name:?} exists"
        )));
    }
    reload_keys(&s).await?;
    announce_keys_changed(&s).await?;
    tracing::info!(by = %p.subject, key = %name, "API key minted");
    Ok((
        StatusCode::CREATED,
        Json(MintedApiKey {
            id,
            name: name.to_string(),
            key,
        }),
    ))
}

/// Revokes a minted API key (keys from the configuration are removed from the configuration).
#[utoipa::path(delete, path = "/api/v1/admin/api-keys/{id}", tag = "admin",
    params(("id" = Uuid, Path, description = "The key's id")),
    security(("bearer" = [])),
    responses((status = 204, description = "Revoked"),
        (status = 404, description = "No such minted key", body = Problem, content_type = "application/problem+json"),
        AuthErrors))]
pub async fn delete_key(
    Admin(p): Admin,
    State(s): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let deleted = sqlx::query("DELETE FROM gateway_api_keys WHERE id = $1")
        .bind(id)
        .execute(pool(&s)?)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!("no minted API key {id}")));
    }
    reload_keys(&s).await?;
    announce_keys_changed(&s).await?;
    tracing::info!(by = %p.subject, key = %id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
