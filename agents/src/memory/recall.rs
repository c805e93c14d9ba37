//! Recall and forget, as the NATS micro service `jarvis-memory`.
//!
//! - `jarvis.cmd.memory.recall` `{"user_id": 7, "query": "what do I hold?", "limit": 5, "for_action": false}`
//!   answers the user's memories ranked for the query (see [`recall`] for the ranking), each with its text,
//!   score, trust, source event and time. With `for_action: true` only trusted memories (owner,
//!   allowlisted) are considered: what a public user said never informs an action.
//! - `jarvis.cmd.memory.forget` `{"user_id": 7, "memory_id": "...", "reason": "..."}` appends
//!   `MemoryForgotten` for that memory, or without `memory_id` for every memory of the user; the read model
//!   drops them as soon as the projector has applied the event.
//!
//! Bad requests (invalid JSON, unknown fields, a blank or too long query, an unknown user or memory, a
//! limit out of range) get a 400 that says what was wrong; nothing is written for them.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use jarvis_bus::service::{parse, serve_with_health, Health, ServiceError};
use jarvis_bus::BusError;
use jarvis_domain::memory::{user_memory_id, MemoryError, UserMemory, UserMemoryCommand};
use jarvis_domain::EventMetadata;
use jarvis_store::{execute_with_retry, EventStore};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Row;
use uuid::Uuid;

use super::embed::Embedder;
use crate::runtime::SNAPSHOT_EVERY;

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 4_096;
/// Most memories one recall answers.
pub const MAX_LIMIT: u32 = 50;
/// Weight of the text score in the hybrid score; the cosine similarity has the rest.
pub const TEXT_WEIGHT: f64 = 0.5;
/// Least cosine similarity for a memory that matches no query word to be recalled by meaning alone.
pub const MIN_COSINE: f64 = 0.3;

/// A recall request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecallRequest {
    /// Whose memories.
    pub user_id: i64,
    /// What to look for: words, `"quoted phrases"`, `or`, `-excluded` (web search syntax).
    pub query: String,
    /// Most memories to answer, 1 to [`MAX_LIMIT`]; default 5.
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Only trusted memories (owner, allowlisted), for a decision that acts.
    #[serde(default)]
    pub for_action: bool,
}

fn default_limit() -> u32 {
    5
}

/// A forget request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgetRequest {
    user_id: i64,
    #[serde(default)]
    memory_id: Option<Uuid>,
    #[serde(default)]
    reason: Option<String>,
}

/// One recalled memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recalled {
    /// The memory.
    pub memory_id: Uuid,
    /// Its text.
    pub text: String,
    /// Its score in [0, 1]: higher is more relevant.
    pub score: f64,
    /// `owner`, `allowlisted` or `public`.
    pub trust: String,
    /// The event it was taken from.
    pub source_event: Uuid,
    /// That event's type.
    pub source_type: String,
    /// The source's event time.
    pub at: DateTime<Utc>,
}

/// The answer to a recall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallReply {
    /// Whose memories.
    pub user_id: i64,
    /// `text` (full-text search only) or `hybrid` (text and embeddings).
    pub ranking: String,
    /// Best first.
    pub memories: Vec<Recalled>,
}

/// Checks a request's shape before anything is read.
fn validate(r: &RecallRequest) -> Result<(), ServiceError> {
    if r.query.trim().is_empty() {
        return Err(ServiceError::bad_request("query must not be empty"));
    }
    if r.query.len() > MAX_QUERY_BYTES {
        return Err(ServiceError::bad_request(format!(
            "query is {} bytes; at most {MAX_QUERY_BYTES} are accepted",
            r.query.len()
        )));
    }
    if !(1..=MAX_LIMIT).contains(&r.limit) {
        return Err(ServiceError::bad_request(format!(
            "limit = {}: must be 1 to {MAX_LIMIT}",
            r.limit
        )));
    }
    Ok(())
}

/// The web-search query for `query`: a query without operators (a plain question) matches memories that share
/// any word with it, so its words are joined with `or`; one with operators (`"phrase"`, `-word`, `or`) is
/// taken as written.
pub fn search_terms(query: &str) -> String {
    let words: Vec<&str> = query.split_whitespace().collect();
    let has_operators = query.contains('"')
        || words
            .iter()
            .any(|w| w.starts_with('-') || w.eq_ignore_ascii_case("or"));
    if has_operators {
        query.to_string()
    } else {
        words.join(" or ")
    }
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::internal(e.to_string())
}

const TEXT_ONLY: &str = "
SELECT memory_id, text, trust, source_event, source_type, at,
       (ts_rank(tsv, q, 32) / max(ts_rank(tsv, q, 32)) OVER ())::float8 AS score
  FROM memories, websearch_to_tsquery('english', $2) AS q
 WHERE user_id = $1 AND tsv @@ q AND (NOT $4 OR trust IN ('owner', 'allowlisted'))
 ORDER BY score DESC, at DESC, memory_id
 LIMIT $3";

const HYBRID: &str = "
WITH scored AS (
    SELECT m.memory_id, m.text, m.trust, m.source_event, m.source_type, m.at,
           CASE WHEN m.tsv @@ q THEN ts_rank(m.tsv, q, 32) ELSE 0 END AS text_rank,
           CASE WHEN m.embedding_model = $6 AND cardinality(m.embedding) = cardinality($5::real[])
                THEN (SELECT sum(a::float8 * b::float8) FROM unnest(m.embedding, $5::real[]) AS t(a, b))
           END AS cosine
      FROM memories m, websearch_to_tsquery('english', $2) AS q
     WHERE m.user_id = $1 AND (NOT $4 OR m.trust IN ('owner', 'allowlisted'))
), candidates AS (
    SELECT *, coalesce(text_rank / nullif(max(text_rank) OVER (), 0), 0) AS text_score
      FROM scored
     WHERE text_rank > 0 OR cosine >= $8
)
SELECT memory_id, text, trust, source_event, source_type, at,
       ($7 * text_score + (1 - $7) * greatest(coalesce(cosine, 0), 0))::float8 AS score
  FROM candidates
 ORDER BY score DESC, at DESC, memory_id
 LIMIT $3";

/// Recalls `request.user_id`'s memories for `request.query`.
///
/// Ranking: full-text search (`websearch_to_tsquery('english', search_terms(query))` against the memory's
/// generated `tsvector`, see [`search_terms`]), scored by `ts_rank` divided by the best rank among the
/// matches, so that the best text match scores one. With an embedder, the query is embedded too and each
/// memory with a vector of the same model gets its cosine similarity; the score is
/// `TEXT_WEIGHT × text + (1 − TEXT_WEIGHT) × max(cosine, 0)`, and a memory that matches no word is still
/// recalled when its cosine is at least [`MIN_COSINE`]. When the provider fails, recall falls back to text
/// alone (and says so: `ranking = "text"`).
///
/// # Errors
/// [`ServiceError`] 400 for a bad request or an unknown user, 500 when the database fails.
pub async fn recall(
    store: &EventStore,
    embedder: Option<&dyn Embedder>,
    request: &RecallRequest,
) -> Result<RecallReply, ServiceError> {
    validate(request)?;
    let known: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM memory_users WHERE user_id = $1)")
            .bind(request.user_id)
            .fetch_one(store.pool())
            .await
            .map_err(internal)?;
    if !known {
        return Err(ServiceError::bad_request(format!(
            "unknown user {}: no memory was ever stored for them",
            request.user_id
        )));
    }
    let query_vector = match embedder {
        Some(e) => match e.embed(std::slice::from_ref(&request.query)).await {
            Ok(mut v) => v.pop().map(|v| (e.model().to_string(), v)),
            Err(err) => {
                tracing::warn!(cause = %err, "embedding the query failed; recalling by text alone");
                None
            }
        },
        None => None,
    };
    let terms = search_terms(&request.query);
    let rows = match &query_vector {
        None => {
            sqlx::query(TEXT_ONLY)
                .bind(request.user_id)
                .bind(&terms)
                .bind(i64::from(request.limit))
                .bind(request.for_action)
                .fetch_all(store.pool())
                .await
        }
        Some((model, vector)) => {
            sqlx::query(HYBRID)
                .bind(request.user_id)
                .bind(&terms)
                .bind(i64::from(request.limit))
                .bind(request.for_action)
                .bind(vector)
                .bind(model)
                .bind(TEXT_WEIGHT)
                .bind(MIN_COSINE)
                .fetch_all(store.pool())
                .await
        }
    }
    .map_err(internal)?;
    let memories = rows
        .iter()
        .map(|r| {
            Ok(Recalled {
                memory_id: r.try_get("memory_id")?,
                text: r.try_get("text")?,
                score: r.try_get("score")?,
                trust: r.try_get("trust")?,
                source_event: r.try_get("source_event")?,
                source_type: r.try_get("source_type")?,
                at: r.try_get("at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(internal)?;
    Ok(RecallReply {
        user_id: request.user_id,
        ranking: if query_vector.is_some() {
            "hybrid"
        } else {
            "text"
        }
        .into(),
        memories,
    })
}

fn refusal(e: AggregateError<MemoryError>) -> ServiceError {
    match e {
        AggregateError::UserError(e) => ServiceError::bad_request(e.to_string()),
        other => internal(other),
    }
}

/// Forgets one memory of `user_id`, or all of them, by appending `MemoryForgotten` (`source` names who asked,
/// e.g. `operator:memory.forget`). Answers how many live memories it removed and how many remain.
///
/// # Errors
/// [`ServiceError`] 400 for an unknown user or memory, or a blank reason; 500 when the store fails.
pub async fn forget(
    store: &EventStore,
    user_id: i64,
    memory_id: Option<Uuid>,
    reason: String,
    source: &str,
) -> Result<Value, ServiceError> {
    let id = user_memory_id(user_id);
    let before: UserMemory = store
        .load(&id, Some(SNAPSHOT_EVERY))
        .await
        .map_err(refusal)?;
    let cqrs = store.snapshot_cqrs::<UserMemory>(SNAPSHOT_EVERY, ());
    let command = UserMemoryCommand::Forget {
        user_id,
        memory_id,
        reason,
        at: Utc::now(),
    };
    execute_with_retry(&cqrs, &id, command, &EventMetadata::root(source), 5)
        .await
        .map_err(refusal)?;
    let after: UserMemory = store
        .load(&id, Some(SNAPSHOT_EVERY))
        .await
        .map_err(refusal)?;
    Ok(json!({
        "user_id": user_id,
        "memory_id": memory_id,
        "forgotten": before.live().saturating_sub(after.live()),
        "remaining": after.live(),
    }))
}

async fn handle(
    store: &EventStore,
    embedder: Option<&dyn Embedder>,
    verb: &str,
    body: &[u8],
) -> Result<Value, ServiceError> {
    match verb {
        "recall" => {
            let request: RecallRequest = parse(body)?;
            let reply = recall(store, embedder, &request).await?;
            serde_json::to_value(reply).map_err(internal)
        }
        "forget" => {
            let ForgetRequest {
                user_id,
                memory_id,
                reason,
            } = parse(body)?;
            let reason = reason.unwrap_or_else(|| "forget requested".into());
            forget(store, user_id, memory_id, reason, "operator:memory.forget").await
        }
        other => Err(ServiceError::bad_request(format!("unknown verb {other:?}"))),
    }
}

/// Serves `jarvis-memory` until `shutdown` completes.
///
/// # Errors
/// [`BusError`] when the service cannot be registered with NATS.
pub async fn serve_commands(
    store: EventStore,
    client: async_nats::Client,
    embedder: Option<Arc<dyn Embedder>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError> {
    serve_with_health(
        &client,
        "memory",
        "Jarvis memory: recall a user's memories (full-text and embeddings), forget them",
        &["recall", "forget"],
        |verb: String, body: Bytes| {
            let store = store.clone();
            let embedder = embedder.clone();
            async move { handle(&store, embedder.as_deref(), &verb, &body).await }
        },
        Health::new(
            "memory",
            &super::agent::SOURCES
                .iter()
                .map(|(d, _)| *d)
                .collect::<Vec<_>>(),
        ),
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str, limit: u32) -> RecallRequest {
        RecallRequest {
            user_id: 1,
            query: query.into(),
            limit,
            for_action: false,
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let msg = |r: &RecallRequest| validate(r).unwrap_err().message;
        assert_eq!(msg(&request("  ", 5)), "query must not be empty");
        assert_eq!(
            msg(&request(&"a".repeat(1_000_000), 5)),
            "query is 1000000 bytes; at most 4096 are accepted"
        );
        assert_eq!(msg(&request("sol", 0)), "limit = 0: must be 1 to 50");
        assert!(validate(&request("sol", 5)).is_ok());
        assert_eq!(search_terms("how much  SOL?"), "how or much or SOL?");
        assert_eq!(search_terms("SOL -ETH"), "SOL -ETH");
        assert_eq!(search_terms("\"cold wallet\" SOL"), "\"cold wallet\" SOL");
        assert_eq!(search_terms("dog OR cat"), "dog OR cat");
        let err =
            parse::<RecallRequest>(br#"{"user_id": 1, "query": "x", "limt": 3}"#).unwrap_err();
        assert!(
            err.message.contains("unknown field `limt`"),
            "{}",
            err.message
        );
        assert_eq!(err.code, 400);
        let err = parse::<RecallRequest>(b"{\"user_id\": 1, \"query\": \"\xff\"}").unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.contains("invalid unicode") || err.message.contains("UTF-8"),
            "{}",
            err.message
        );
        let err = parse::<RecallRequest>(b"not json").unwrap_err();
        assert!(
            err.message.starts_with("invalid request"),
            "{}",
            err.message
        );
    }
}
