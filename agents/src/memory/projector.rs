//! The memory read model: a projector that reads the store's global order and keeps the `memories` table
//! (see `store/migrations/*_memory_read_model.sql`).
//!
//! Each batch of events is applied in one transaction together with the checkpoint `memory-projector`, so
//! each event has exactly one effect, whatever crashes: `MemoryStored` inserts a row, `MemoryForgotten`
//! deletes one row or all of a user's rows (and the cached vectors of their texts). Every step takes a
//! transaction-scoped advisory lock and re-reads the checkpoint inside its transaction: several projectors,
//! or a rebuild running beside one, never apply an event twice.
//!
//! [`MemoryProjector::rebuild`] empties the tables and replays every event from the start in one transaction:
//! readers keep seeing the old rows until it commits, and a forgotten memory is dropped again.
//!
//! Embeddings are filled in separately ([`MemoryProjector::embed_pending`]): a slow or absent provider never
//! holds up the projection, and recall ranks by text alone until a memory has its vector. Vectors are cached
//! by model and text, so a rebuild reuses them instead of asking the provider again.

use std::future::Future;
use std::time::Duration;

use jarvis_domain::memory::{StoredMemory, UserMemoryEvent};
use jarvis_domain::{AnyEvent, RecordedEvent};
use jarvis_store::reader::{load_checkpoint, save_checkpoint};
use jarvis_store::{Checkpoint, EventStore, StoreError};
use sqlx::PgConnection;
use uuid::Uuid;

use super::embed::{EmbedError, Embedder};

/// The projector's checkpoint name.
pub const CHECKPOINT: &str = "memory-projector";

/// Characters of a memory sent to the provider: the start of a long text stands for it (models have a
/// context length, e.g. 8,191 tokens).
pub const MAX_EMBED_CHARS: usize = 8_000;

/// Whether a status means the provider refuses these texts (not: the key is wrong, or it is busy).
fn refuses_text(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 401 | 403 | 404 | 408 | 429)
}

/// Embeds texts one at a time, so that one text the provider refuses does not hold up the others.
async fn one_by_one(
    embedder: &dyn Embedder,
    texts: &[String],
) -> Result<Vec<Option<Vec<f32>>>, EmbedError> {
    let mut out = Vec::with_capacity(texts.len());
    for text in texts {
        match embedder.embed(std::slice::from_ref(text)).await {
            Ok(mut v) => out.push(v.pop()),
            Err(EmbedError::Status { status, message }) if refuses_text(status) => {
                tracing::warn!(status, %message, "the provider refuses to embed a memory; it is recalled by text only");
                out.push(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Key of the advisory lock that serialises the projector's steps and rebuilds ("jarvmemo").
const LOCK: i64 = 0x6a61_7276_6d65_6d6f;

/// A failure of the projector (it retries after a pause).
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// The store or the read model failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The embedding provider failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

impl From<sqlx::Error> for ProjectorError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(e))
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Rebuilt {
    /// Events read from the store.
    pub events: u64,
    /// Memories in the table afterwards.
    pub memories: i64,
    /// Where the checkpoint stands afterwards.
    pub checkpoint: Checkpoint,
}

/// How a batch went.
enum Step {
    Applied(Checkpoint),
    /// The checkpoint was not where the batch was read from (a rebuild or another projector moved it).
    Moved(Checkpoint),
}

/// The memory projector.
#[derive(Debug, Clone)]
pub struct MemoryProjector {
    store: EventStore,
    model: Option<String>,
    batch: i64,
}

fn memory_event(event: &RecordedEvent) -> Result<Option<UserMemoryEvent>, StoreError> {
    if event.context() != "memory" {
        return Ok(None);
    }
    match AnyEvent::decode(&event.ce_type(), event.payload.to_string().as_bytes()) {
        Ok(AnyEvent::Memory(e)) => Ok(Some(e)),
        Ok(_) => Ok(None),
        Err(e) => Err(StoreError::Corrupt {
            position: event.position,
            reason: e.to_string(),
        }),
    }
}

/// Applies `events` in order: runs of `MemoryStored` go in as one multi-row insert each.
async fn apply(
    db: &mut PgConnection,
    events: &[RecordedEvent],
    model: Option<&str>,
) -> Result<(), StoreError> {
    let mut stored: Vec<(StoredMemory, i64)> = Vec::new();
    for event in events {
        match memory_event(event)? {
            Some(UserMemoryEvent::MemoryStored(m)) => stored.push((m, event.position)),
            Some(UserMemoryEvent::MemoryForgotten {
                user_id, memory_id, ..
            }) => {
                insert(db, &std::mem::take(&mut stored), model).await?;
                forget(db, user_id, memory_id).await?;
            }
            None => {}
        }
    }
    insert(db, &stored, model).await
}

async fn insert(
    db: &mut PgConnection,
    memories: &[(StoredMemory, i64)],
    model: Option<&str>,
) -> Result<(), StoreError> {
    if memories.is_empty() {
        return Ok(());
    }
    let n = memories.len();
    let (mut ids, mut users, mut texts, mut sources, mut types, mut trusts, mut ats, mut positions) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (m, position) in memories {
        ids.push(m.memory_id);
        users.push(m.user_id);
        texts.push(m.text.as_str());
        sources.push(m.source_event);
        types.push(m.source_type.as_str());
        trusts.push(m.trust.as_str());
        ats.push(m.at);
        positions.push(*position);
    }
    sqlx::query(
        "INSERT INTO memories (memory_id, user_id, text, source_event, source_type, trust, at, position,
                               embedding, embedding_model)
         SELECT u.memory_id, u.user_id, u.text, u.source_event, u.source_type, u.trust, u.at, u.position,
                e.embedding, e.model
           FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::uuid[], $5::text[], $6::text[],
                       $7::timestamptz[], $8::bigint[])
                AS u(memory_id, user_id, text, source_event, source_type, trust, at, position)
           LEFT JOIN memory_embeddings e ON e.model = $9 AND e.text_hash = md5(u.text)
         ON CONFLICT (memory_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&users)
    .bind(&texts)
    .bind(&sources)
    .bind(&types)
    .bind(&trusts)
    .bind(&ats)
    .bind(&positions)
    .bind(model)
    .execute(&mut *db)
    .await?;
    sqlx::query(
        "INSERT INTO memory_users (user_id, first_position)
         SELECT user_id, min(position) FROM unnest($1::bigint[], $2::bigint[]) AS u(user_id, position)
          GROUP BY user_id
         ON CONFLICT DO NOTHING",
    )
    .bind(&users)
    .bind(&positions)
    .execute(&mut *db)
    .await?;
    Ok(())
}

async fn forget(
    db: &mut PgConnection,
    user_id: i64,
    memory_id: Option<Uuid>,
) -> Result<(), StoreError> {
    // The cached vectors of forgotten texts go too, unless another live memory has the same text.
    sqlx::query(
        "WITH gone AS (
            DELETE FROM memories WHERE user_id = $1 AND ($2::uuid IS NULL OR memory_id = $2)
            RETURNING md5(text) AS text_hash)
         DELETE FROM memory_embeddings e USING gone
          WHERE e.text_hash = gone.text_hash
            AND NOT EXISTS (SELECT 1 FROM memories m WHERE md5(m.text) = gone.text_hash
                             AND (m.user_id <> $1 OR ($2::uuid IS NOT NULL AND m.memory_id <> $2)))",
    )
    .bind(user_id)
    .bind(memory_id)
    .execute(&mut *db)
    .await?;
    Ok(())
}

impl MemoryProjector {
    /// A projector on `store`. With `model`, rows take cached vectors of that model when inserted.
    pub fn new(store: EventStore, model: Option<String>) -> Self {
        Self {
            store,
            model,
            batch: 1_000,
        }
    }

    /// The checkpoint as committed.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        self.store.load_checkpoint(CHECKPOINT).await
    }

    /// Applies `batch`, read after `from`, with the checkpoint, in one transaction.
    async fn step(&self, from: Checkpoint, batch: &[RecordedEvent]) -> Result<Step, StoreError> {
        let Some(last) = batch.last() else {
            return Ok(Step::Applied(from));
        };
        let mut tx = self.store.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK)
            .execute(&mut *tx)
            .await?;
        let at = load_checkpoint(&mut *tx, CHECKPOINT).await?;
        if at != from {
            tx.rollback().await?;
            return Ok(Step::Moved(at));
        }
        apply(&mut tx, batch, self.model.as_deref()).await?;
        let to = Checkpoint::after(last);
        save_checkpoint(&mut *tx, CHECKPOINT, to).await?;
        tx.commit().await?;
        Ok(Step::Applied(to))
    }

    /// Applies every event readable now, and returns where the checkpoint stands.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails or a memory event does not decode.
    pub async fn catch_up(&self) -> Result<Checkpoint, StoreError> {
        let mut from = self.checkpoint().await?;
        loop {
            let batch = self.store.read_after(from, self.batch).await?;
            if batch.is_empty() {
                return Ok(from);
            }
            from = match self.step(from, &batch).await? {
                Step::Applied(to) | Step::Moved(to) => to,
            };
        }
    }

    /// Follows the store until `shutdown` completes; on a failure, logs it, pauses (up to 5 s) and resumes
    /// from the committed checkpoint.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut pause = Duration::from_millis(100);
        loop {
            let term = async {
                let mut from = self.checkpoint().await?;
                let mut tail = self.store.tail(from).await?;
                loop {
                    let batch = tail.next_batch(self.batch).await?;
                    match self.step(from, &batch).await? {
                        Step::Applied(to) => from = to,
                        Step::Moved(to) => {
                            from = to;
                            tail = self.store.tail(from).await?;
                        }
                    }
                }
                #[allow(unreachable_code)]
                Ok::<(), StoreError>(())
            };
            tokio::select! {
                _ = &mut shutdown => return,
                result = term => if let Err(e) = result {
                    tracing::error!(cause = %e, ?pause, "memory projector failed; resuming from its checkpoint");
                },
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Empties the read model and replays every event from the start, in one transaction.
    ///
    /// # Errors
    /// [`StoreError`]; nothing changes when it fails.
    pub async fn rebuild(&self) -> Result<Rebuilt, StoreError> {
        let mut tx = self.store.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK)
            .execute(&mut *tx)
            .await?;
        // DELETE rather than TRUNCATE: readers keep the old rows, not a lock wait, until the commit.
        sqlx::query("DELETE FROM memories")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM memory_users")
            .execute(&mut *tx)
            .await?;
        let mut from = Checkpoint::default();
        let mut events = 0;
        loop {
            let batch = self.store.read_after(from, self.batch).await?;
            let Some(last) = batch.last() else { break };
            apply(&mut tx, &batch, self.model.as_deref()).await?;
            events += batch.len() as u64;
            from = Checkpoint::after(last);
        }
        save_checkpoint(&mut *tx, CHECKPOINT, from).await?;
        let memories: i64 = sqlx::query_scalar("SELECT count(*) FROM memories")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Rebuilt {
            events,
            memories,
            checkpoint: from,
        })
    }

    /// How many memories have no vector of `model` yet.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn pending_embeddings(&self, model: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM memories WHERE embedding_model IS DISTINCT FROM $1",
        )
        .bind(model)
        .fetch_one(self.store.pool())
        .await?)
    }

    /// Embeds up to `limit` memories that have no vector of the embedder's model, caching the vectors;
    /// returns how many were embedded.
    ///
    /// # Errors
    /// [`ProjectorError`] when the provider or the database fails; nothing is half-written.
    pub async fn embed_pending(
        &self,
        embedder: &dyn Embedder,
        limit: i64,
    ) -> Result<usize, ProjectorError> {
        let model = embedder.model();
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT memory_id, text FROM memories WHERE embedding_model IS DISTINCT FROM $1
              ORDER BY position LIMIT $2",
        )
        .bind(model)
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let texts: Vec<String> = rows
            .iter()
            .map(|(_, t)| t.chars().take(MAX_EMBED_CHARS).collect())
            .collect();
        let vectors = match embedder.embed(&texts).await {
            Ok(v) => v.into_iter().map(Some).collect(),
            Err(EmbedError::Status { status, .. }) if refuses_text(status) && texts.len() > 1 => {
                one_by_one(embedder, &texts).await?
            }
            Err(EmbedError::Status { status, message }) if refuses_text(status) => {
                tracing::warn!(status, %message, "the provider refuses to embed a memory; it is recalled by text only");
                vec![None]
            }
            Err(e) => return Err(e.into()),
        };
        let mut tx = self.store.pool().begin().await?;
        for ((memory_id, text), vector) in rows.iter().zip(&vectors) {
            // A memory forgotten meanwhile is gone: neither its row nor its vector is written. A text the
            // provider refused is marked with the model and no vector, so it is not asked for again.
            let updated = sqlx::query(
                "UPDATE memories SET embedding = $2, embedding_model = $3 WHERE memory_id = $1",
            )
            .bind(memory_id)
            .bind(vector)
            .bind(model)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 1 {
                sqlx::query(
                    "INSERT INTO memory_embeddings (model, text_hash, embedding) VALUES ($1, md5($2), $3)
                     ON CONFLICT DO NOTHING",
                )
                .bind(model)
                .bind(text)
                .bind(vector)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(rows.len())
    }

    /// Keeps embedding new memories until `shutdown` completes: polls every 500 ms when idle, backs off up
    /// to 30 s while the provider fails (recall ranks those memories by text meanwhile).
    pub async fn run_embeddings(
        &self,
        embedder: &dyn Embedder,
        batch: usize,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let idle = Duration::from_millis(500);
        let mut pause = idle;
        loop {
            let wait = match self.embed_pending(embedder, batch as i64).await {
                Ok(0) => {
                    pause = idle;
                    idle
                }
                Ok(_) => Duration::ZERO,
                Err(e) => {
                    tracing::warn!(cause = %e, ?pause, "embedding memories failed; retrying");
                    pause = (pause * 2).min(Duration::from_secs(30));
                    pause
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
