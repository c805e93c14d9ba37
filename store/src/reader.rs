//! The gap-safe global reader and named checkpoints.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jarvis_domain::event::unwrap_payload;
use jarvis_domain::{EventMetadata, RecordedEvent};
use serde_json::Value;
use sqlx::postgres::{PgListener, PgRow};
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::{EventStore, StoreError};

/// What [`EventStore::browse`] looks for.
#[derive(Debug, Clone, Default)]
pub struct Browse {
    /// Only positions below this.
    pub before: Option<i64>,
    /// Only this story.
    pub correlation_id: Option<Uuid>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
    /// At most this many.
    pub limit: i64,
}

/// A place in the global order: the last `(txid, position)` a reader has handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Checkpoint {
    /// Transaction id (`xid8`) of the last event handled.
    pub txid: u64,
    /// Global position of the last event handled.
    pub position: i64,
}

impl Checkpoint {
    /// The place just after `event`.
    pub fn after(event: &RecordedEvent) -> Self {
        Self {
            txid: event.txid,
            position: event.position,
        }
    }
}

macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT event_id, position, txid::text::bigint AS txid, aggregate_type, aggregate_id, sequence,
                    event_type, event_version, payload::text AS payload, metadata::text AS metadata, recorded_at
               FROM events ",
            $rest
        )
    };
}

const SELECT_AFTER: &str = select_events!(
    "WHERE (txid, position) > ($1::text::xid8, $2)
       AND txid < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY events.txid, events.position
     LIMIT $3"
);

fn decode_row(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.try_get("position")?;
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    let event_type: String = row.try_get("event_type")?;
    let payload: Value = serde_json::from_str(row.try_get::<&str, _>("payload")?)
        .map_err(|e| corrupt(format!("payload: {e}")))?;
    let metadata: Value = serde_json::from_str(row.try_get::<&str, _>("metadata")?)
        .map_err(|e| corrupt(format!("metadata: {e}")))?;
    Ok(RecordedEvent {
        event_id: row.try_get::<Uuid, _>("event_id")?,
        position,
        txid: row.try_get::<i64, _>("txid")? as u64,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        payload: unwrap_payload(&event_type, payload),
        event_type,
        event_version: row.try_get("event_version")?,
        metadata: EventMetadata::from_json(&metadata).map_err(corrupt)?,
        recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
    })
}

impl EventStore {
    /// Up to `limit` events after `after`, in gap-safe order. Only events whose writing transaction and every
    /// older one have finished are returned, so no later call can return an event that sorts before these.
    ///
    /// # Errors
    /// [`StoreError::Database`], or [`StoreError::Corrupt`] naming the position of an unreadable row.
    pub async fn read_after(
        &self,
        after: Checkpoint,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(SELECT_AFTER)
            .bind(after.txid.to_string())
            .bind(after.position)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_row).collect()
    }

    /// The checkpoint of the event at `position`, if the store has it.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn checkpoint_at(&self, position: i64) -> Result<Option<Checkpoint>, StoreError> {
        let txid: Option<i64> =
            sqlx::query_scalar("SELECT txid::text::bigint FROM events WHERE position = $1")
                .bind(position)
                .fetch_optional(&self.pool)
                .await?;
        Ok(txid.map(|txid| Checkpoint {
            txid: txid as u64,
            position,
        }))
    }

    /// The event with id `event_id`, if the store has it (any visibility).
    ///
    /// # Errors
    /// [`StoreError::Database`] or [`StoreError::Corrupt`].
    pub async fn event_by_id(&self, event_id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        let row = sqlx::query(select_events!("WHERE event_id = $1"))
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_row).transpose()
    }

    /// The event at global position `position`, if the store has it.
    ///
    /// # Errors
    /// [`StoreError::Database`] or [`StoreError::Corrupt`].
    pub async fn event_at(&self, position: i64) -> Result<Option<RecordedEvent>, StoreError> {
        let row = sqlx::query(select_events!("WHERE position = $1"))
            .bind(position)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_row).transpose()
    }

    /// Every event of one aggregate, in sequence order (any visibility: for looking up what a command just
    /// wrote).
    ///
    /// # Errors
    /// [`StoreError::Database`] or [`StoreError::Corrupt`].
    pub async fn events_of(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(select_events!(
            "WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
        ))
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_row).collect()
    }

    /// The events caused by the event `cause` (its direct effects), in global position order.
    ///
    /// # Errors
    /// [`StoreError::Database`] or [`StoreError::Corrupt`].
    pub async fn events_caused_by(&self, cause: Uuid) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(select_events!(
            "WHERE metadata ->> 'causation_id' = $1 ORDER BY position"
        ))
        .bind(cause.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_row).collect()
    }

    /// The causal chain that ends at `event`, oldest first: each event's `causation_id` names the event
    /// before it, back to a root whose cause is not an event (a command, an ingest run). Stops after 1,000
    /// steps or at a cycle, which the store should never hold.
    ///
    /// # Errors
    /// [`StoreError::Database`] or [`StoreError::Corrupt`].
    pub async fn causal_chain(
        &self,
        event: RecordedEvent,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut chain = vec![event];
        let mut seen = std::collections::HashSet::new();
        while chain.len() < 1_000 {
            let last = &chain[chain.len() - 1];
            let cause = last.metadata.causation_id;
            if cause == last.event_id || !seen.insert(cause) {
                break;
            }
            match self.event_by_id(cause).await? {
                Some(earlier) => chain.push(earlier),
                None => break,
            }
        }
        chain.reverse();
        Ok(chain)
    }

    /// Up to `limit` events newest first (by position), before position `before`, optionally of one story
    /// (`correlation_id`), one event type, and recorded in `[from, to)`. For browsing, not for processing:
    /// any visibility.
    ///
    /// # Errors
    /// [`StoreError::Database`] or [`StoreError::Corrupt`].
    pub async fn browse(&self, filter: &Browse) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(select_events!(
            "WHERE ($1::bigint IS NULL OR position < $1)
               AND ($2::text IS NULL OR metadata ->> 'correlation_id' = $2)
               AND ($3::text IS NULL OR event_type = $3)
               AND ($4::timestamptz IS NULL OR recorded_at >= $4)
               AND ($5::timestamptz IS NULL OR recorded_at < $5)
             ORDER BY position DESC
             LIMIT $6"
        ))
        .bind(filter.before)
        .bind(filter.correlation_id.map(|c| c.to_string()))
        .bind(filter.event_type.as_deref())
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_row).collect()
    }

    /// The named checkpoint, or the start of the store.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn load_checkpoint(&self, name: &str) -> Result<Checkpoint, StoreError> {
        load_checkpoint(&self.pool, name).await
    }

    /// Moves the named checkpoint to `at`.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn save_checkpoint(&self, name: &str, at: Checkpoint) -> Result<(), StoreError> {
        save_checkpoint(&self.pool, name, at).await
    }

    /// A tail of the global order after `after`, woken by `LISTEN/NOTIFY`.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the listener cannot connect.
    pub async fn tail(&self, after: Checkpoint) -> Result<EventTail, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen("jarvis_events").await?;
        Ok(EventTail {
            store: self.clone(),
            listener,
            after,
            poll: Duration::from_millis(250),
        })
    }
}

/// Reads a named checkpoint with any executor (a pool, a connection, a transaction).
///
/// # Errors
/// [`StoreError::Database`].
pub async fn load_checkpoint<'e>(
    db: impl PgExecutor<'e>,
    name: &str,
) -> Result<Checkpoint, StoreError> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT txid::text::bigint, position FROM checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(db)
            .await?;
    Ok(
        row.map_or_else(Checkpoint::default, |(txid, position)| Checkpoint {
            txid: txid as u64,
            position,
        }),
    )
}

/// Writes a named checkpoint with any executor; in a transaction, it moves with the reader's effects.
///
/// # Errors
/// [`StoreError::Database`].
pub async fn save_checkpoint<'e>(
    db: impl PgExecutor<'e>,
    name: &str,
    at: Checkpoint,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO checkpoints (name, txid, position, updated_at) VALUES ($1, $2::text::xid8, $3, now())
         ON CONFLICT (name) DO UPDATE SET txid = excluded.txid, position = excluded.position, updated_at = now()",
    )
    .bind(name)
    .bind(at.txid.to_string())
    .bind(at.position)
    .execute(db)
    .await?;
    Ok(())
}

/// A reader that follows the store's global order as it grows.
pub struct EventTail {
    store: EventStore,
    listener: PgListener,
    after: Checkpoint,
    poll: Duration,
}

impl EventTail {
    /// Where the tail is: the last event it returned.
    pub fn position(&self) -> Checkpoint {
        self.after
    }

    /// The next batch of at most `limit` events, waiting until there is at least one.
    ///
    /// It wakes on `NOTIFY` (sent at each commit) and also polls every 250 ms, because an event held back by
    /// an older running transaction becomes readable when that transaction ends, which sends no notification.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the store cannot be read; the caller may retry.
    pub async fn next_batch(&mut self, limit: i64) -> Result<Vec<RecordedEvent>, StoreError> {
        loop {
            let batch = self.store.read_after(self.after, limit).await?;
            if let Some(last) = batch.last() {
                self.after = Checkpoint::after(last);
                return Ok(batch);
            }
            // Either a notification or the poll interval; a lost listener connection reconnects on the next
            // recv, and the poll covers anything missed meanwhile.
            if let Ok(Err(e)) = tokio::time::timeout(self.poll, self.listener.recv()).await {
                tracing::warn!(cause = %e, "event listener failed; polling until it reconnects");
                tokio::time::sleep(self.poll).await;
            }
        }
    }
}
