//! The Postgres event store: the system of record.
//!
//! Aggregates are cqrs-es aggregates, persisted through [`JarvisEventRepository`], which reads with
//! postgres-es and writes each commit as one multi-row insert (postgres-es inserts row by row). The schema is
//! ours (`store/migrations/`): postgres-es's `events` table plus a global `position`, the writing `txid`,
//! `recorded_at` and an `event_id`.
//!
//! # Layout
//! - [`repository`]: the cqrs-es repository and [`EventStore::cqrs`], with bounded retry on conflicts.
//! - [`gate`]: the trading gate, an advisory lock that orders halts and trading decisions.
//! - [`reader`]: the gap-safe global reader ([`Checkpoint`], [`EventTail`]) woken by `LISTEN/NOTIFY`, and
//!   named checkpoints.
//!
//! # Gap-safe order
//! Positions are assigned at insert, not at commit, so a reader that tails by position alone can skip an
//! event whose transaction commits late. Readers only see rows whose `txid` is below the oldest transaction
//! still running (`pg_snapshot_xmin(pg_current_snapshot())`): that set never grows behind a reader.
//! They read in `(txid, position)` order, which is position order except where two writing transactions
//! interleaved; see `docs/adr/0001-gap-safe-order.md`.

pub mod gate;
pub mod reader;
pub mod repository;
pub mod server;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

pub use reader::{Browse, Checkpoint, EventTail};
pub use repository::{execute_with_retry, Cqrs, Executed, JarvisEventRepository};

/// A failure of the store itself (not a business rejection).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL does not parse.
    #[error("invalid database url: {0}")]
    BadUrl(String),
    /// Postgres refused or the connection failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row cannot be read back; names the position.
    #[error("event at position {position} is unreadable: {reason}")]
    Corrupt {
        /// The row's global position.
        position: i64,
        /// What is wrong with it.
        reason: String,
    },
}

/// A handle on the event store: a connection pool plus the operations Jarvis needs.
#[derive(Debug, Clone)]
pub struct EventStore {
    pool: PgPool,
}

impl EventStore {
    /// Connects a pool of `max_connections` to `url`.
    ///
    /// # Errors
    /// [`StoreError::BadUrl`] or [`StoreError::Database`] when Postgres is unreachable.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("{}: {e}", redact_url(url))))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the store's migrations; idempotent and safe to run from several processes at once.
    ///
    /// # Errors
    /// [`StoreError::Migrate`] when a migration fails or the database has a migration this build lacks.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations").run(&self.pool).await?;
        Ok(())
    }

    /// The highest position written (committed or not yet visible), 0 for an empty store.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn head_position(&self) -> Result<i64, StoreError> {
        let head: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(head.unwrap_or(0))
    }

    /// How many stored events sort after `checkpoint` (committed or not yet visible): a reader's lag.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn count_after(&self, checkpoint: Checkpoint) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE (txid, position) > ($1::text::xid8, $2)",
        )
        .bind(checkpoint.txid.to_string())
        .bind(checkpoint.position)
        .fetch_one(&self.pool)
        .await?)
    }

    /// How many events the store holds.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await?)
    }
}

/// A database URL with its password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparseable url>".to_string();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let secret =
                    k.eq_ignore_ascii_case("password") || k.to_ascii_lowercase().contains("key");
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_secrets() {
        let r =
            super::redact_url("postgres://u:hunter2@h:5432/db?password=hunter3&sslmode=disable");
        assert!(!r.contains("hunter"), "{r}");
        assert!(
            r.contains("sslmode=disable") && r.contains("u:***@h"),
            "{r}"
        );
    }
}
