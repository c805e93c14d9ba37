//! The projector framework: [`Projection`]s fed in the store's global order by a [`Projector`], which moves
//! each projection's rows and its checkpoint (`projection:<name>` in `checkpoints`) in one transaction.
//!
//! - **Exactly-once effect.** A step takes each projection's advisory lock, re-reads its checkpoint inside
//!   the transaction, applies only the events after it, saves the new checkpoint and commits. A crash
//!   (SIGKILL) anywhere loses the whole step or none of it; the next run reads from the committed checkpoint.
//! - **Several projections, one read.** The projector reads a page of events once and hands each projection
//!   the suffix after its own checkpoint (pages are in `(txid, position)` order, checkpoints are such pairs).
//! - **Rebuild and swap.** [`rebuild`] fills twin tables in the schema `projections_rebuild` from the start
//!   of the store, then, holding the projection's lock, catches up to the head and swaps each table in with
//!   `DROP TABLE` + `ALTER TABLE ... SET SCHEMA projections` and moves the checkpoint, in one transaction.
//!   Readers keep reading the old tables until the commit, then read the new ones (a query waiting on the
//!   lock resolves the table name again). A running projector sees its checkpoint moved at its next step and
//!   reloads what it keeps in memory from the new tables.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use jarvis_store::reader::{load_checkpoint, save_checkpoint};
use jarvis_store::Checkpoint;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};

use crate::source::{read_after, Event};
use crate::ProjectionError;

/// The schema of the live read models.
pub const SCHEMA: &str = "projections";
/// The schema where a rebuild fills its fresh tables before swapping them in.
pub const REBUILD_SCHEMA: &str = "projections_rebuild";

/// The checkpoint name of the projection `name`.
pub fn checkpoint_name(name: &str) -> String {
    format!("projection:{name}")
}

/// A read model: the tables it owns and how events change them.
///
/// `apply` writes into the tables of `schema` (live or rebuild) through `db`, which is inside the step's
/// transaction. A projection that keeps state in memory applies to a pending copy and makes it visible in
/// [`Projection::committed`] (or drops it in [`Projection::rolled_back`]), so memory never runs ahead of
/// what was committed.
#[async_trait]
pub trait Projection: Send + Sync {
    /// The projection's name (`jarvis projections rebuild <name>`).
    fn name(&self) -> &'static str;
    /// The tables it owns, unqualified (they live in [`SCHEMA`]).
    fn tables(&self) -> &'static [&'static str];
    /// The aggregate types whose events it reads (see [`crate::source::DECODED_TYPES`]).
    fn aggregate_types(&self) -> &'static [&'static str];
    /// Loads whatever it keeps in memory from the tables of `schema` (at start, and after a rebuild moved
    /// its checkpoint).
    ///
    /// # Errors
    /// [`ProjectionError::Database`].
    async fn load(&mut self, _db: &mut PgConnection, _schema: &str) -> Result<(), ProjectionError> {
        Ok(())
    }
    /// Applies `events` (all after its checkpoint, in order) to the tables of `schema`.
    ///
    /// # Errors
    /// [`ProjectionError`]; the step's transaction is rolled back.
    async fn apply(
        &mut self,
        db: &mut PgConnection,
        schema: &str,
        events: &[Event],
    ) -> Result<(), ProjectionError>;
    /// A rebuild's bulk phase starts (`true`) or ends (`false`). In between, `apply` may keep in memory the
    /// rows whose last value is all a rebuild needs (one-row summaries, bounded recent lists) and write them
    /// in [`Projection::flush`] instead of on every page. Nothing live reads the rebuild tables meanwhile.
    fn bulk(&mut self, _on: bool) {}
    /// Writes what the bulk phase kept in memory into the tables of `schema` (called once, after it).
    ///
    /// # Errors
    /// [`ProjectionError`]; the rebuild fails.
    async fn flush(
        &mut self,
        _db: &mut PgConnection,
        _schema: &str,
    ) -> Result<(), ProjectionError> {
        Ok(())
    }
    /// The step's transaction committed.
    fn committed(&mut self) {}
    /// The step's transaction failed: forget pending changes.
    fn rolled_back(&mut self) {}
}

/// Takes the transaction-scoped advisory lock of projection `name` (`'jp'` + a hash of the name).
async fn lock(db: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(27248, hashtext($1))")
        .bind(name)
        .execute(db)
        .await
        .map(|_| ())
}

/// The events of `batch` after `at` (a suffix: the batch is in checkpoint order).
fn after(batch: &[Event], at: Checkpoint) -> &[Event] {
    let start = batch.partition_point(|e| e.checkpoint() <= at);
    &batch[start..]
}

struct Slot {
    projection: Box<dyn Projection>,
    at: Checkpoint,
}

/// Runs projections over the store: catch-up and live tail, each step one transaction.
pub struct Projector {
    pool: PgPool,
    slots: Vec<Slot>,
    types: Vec<&'static str>,
    batch: i64,
}

/// Result of one step.
enum Step {
    /// Applied; read on after this checkpoint.
    Applied(Checkpoint),
    /// Some checkpoint moved back behind where the batch was read from: read again from there.
    Reread(Checkpoint),
}

impl Projector {
    /// A projector of `projections`, with their checkpoints and memory loaded from the live tables.
    ///
    /// # Errors
    /// [`ProjectionError::Database`].
    pub async fn open(
        pool: PgPool,
        projections: Vec<Box<dyn Projection>>,
    ) -> Result<Self, ProjectionError> {
        let mut slots: Vec<Slot> = projections
            .into_iter()
            .map(|projection| Slot {
                projection,
                at: Checkpoint::default(),
            })
            .collect();
        // A fixed lock order: two projectors (or a projector and a rebuild) never deadlock.
        slots.sort_by_key(|s| s.projection.name());
        let types: BTreeSet<&'static str> = slots
            .iter()
            .flat_map(|s| s.projection.aggregate_types().iter().copied())
            .collect();
        let mut tx = pool.begin().await?;
        for slot in &mut slots {
            lock(&mut tx, slot.projection.name()).await?;
            slot.at = load_checkpoint(&mut *tx, &checkpoint_name(slot.projection.name())).await?;
            slot.projection.load(&mut tx, SCHEMA).await?;
        }
        tx.commit().await?;
        Ok(Self {
            pool,
            slots,
            types: types.into_iter().collect(),
            batch: 2_000,
        })
    }

    /// Events per step (default 2,000).
    pub fn with_batch(mut self, batch: i64) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Where the projection furthest behind stands.
    pub fn checkpoint(&self) -> Checkpoint {
        self.slots.iter().map(|s| s.at).min().unwrap_or_default()
    }

    /// Applies `batch` (read after `from`) to every projection that has not seen it, in one transaction.
    async fn step(&mut self, from: Checkpoint, batch: &[Event]) -> Result<Step, ProjectionError> {
        let Some(last) = batch.last().map(Event::checkpoint) else {
            return Ok(Step::Applied(from));
        };
        let mut tx = self.pool.begin().await?;
        let result = async {
            let mut moved_back = None;
            for slot in &mut self.slots {
                let name = slot.projection.name();
                lock(&mut tx, name).await?;
                let at = load_checkpoint(&mut *tx, &checkpoint_name(name)).await?;
                if at != slot.at {
                    // A rebuild (or another projector) moved it: our memory is stale.
                    tracing::info!(
                        projection = name,
                        from = slot.at.position,
                        to = at.position,
                        "checkpoint moved; reloading"
                    );
                    slot.projection.load(&mut tx, SCHEMA).await?;
                    slot.at = at;
                }
                if at < from {
                    moved_back = Some(moved_back.map_or(at, |m: Checkpoint| m.min(at)));
                }
            }
            if let Some(at) = moved_back {
                return Ok(Step::Reread(at));
            }
            for slot in &mut self.slots {
                let events = after(batch, slot.at);
                if events.is_empty() {
                    continue;
                }
                slot.projection.apply(&mut tx, SCHEMA, events).await?;
                save_checkpoint(&mut *tx, &checkpoint_name(slot.projection.name()), last).await?;
            }
            Ok::<_, ProjectionError>(Step::Applied(last))
        }
        .await;
        match result {
            Ok(Step::Applied(to)) => {
                tx.commit().await.inspect_err(|_| self.rolled_back())?;
                for slot in &mut self.slots {
                    if slot.at < to {
                        slot.at = to;
                        slot.projection.committed();
                    }
                }
                Ok(Step::Applied(to))
            }
            Ok(reread) => {
                drop(tx);
                Ok(reread)
            }
            Err(e) => {
                drop(tx);
                self.rolled_back();
                Err(e)
            }
        }
    }

    fn rolled_back(&mut self) {
        for slot in &mut self.slots {
            slot.projection.rolled_back();
        }
    }

    /// Applies every event readable now; returns how many events were read.
    ///
    /// # Errors
    /// [`ProjectionError`] when the store fails or an event does not decode; what was committed stays.
    pub async fn catch_up(&mut self) -> Result<u64, ProjectionError> {
        let mut from = self.checkpoint();
        let mut read = 0;
        loop {
            let batch = read_after(&self.pool, from, self.batch, &self.types).await?;
            if batch.is_empty() {
                return Ok(read);
            }
            read += batch.len() as u64;
            from = match self.step(from, &batch).await? {
                Step::Applied(to) | Step::Reread(to) => to,
            };
        }
    }

    /// Follows the store until `shutdown` completes, woken by `NOTIFY jarvis_events` and polling every
    /// 250 ms (an event held back by an older open transaction becomes readable without a notification).
    /// On a failure it logs, pauses (up to 5 s) and resumes from the committed checkpoints.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut pause = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            let term = async {
                let mut listener = PgListener::connect_with(&self.pool).await?;
                listener.listen("jarvis_events").await?;
                loop {
                    if self.catch_up().await? == 0 {
                        let _ =
                            tokio::time::timeout(Duration::from_millis(250), listener.recv()).await;
                    }
                }
                #[allow(unreachable_code)]
                Ok::<(), ProjectionError>(())
            };
            tokio::select! {
                _ = &mut shutdown => return,
                result = term => if let Err(e) = result {
                    tracing::error!(cause = %e, ?pause, "projector failed; resuming from its checkpoints");
                },
            }
            if started.elapsed() > Duration::from_secs(30) {
                pause = Duration::from_millis(100);
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
            // Memory may hold a step that failed half-way through: reload everything.
            if let Err(e) = self.reload().await {
                tracing::error!(cause = %e, "projector cannot reload its state");
            }
        }
    }

    async fn reload(&mut self) -> Result<(), ProjectionError> {
        let mut tx = self.pool.begin().await?;
        for slot in &mut self.slots {
            lock(&mut tx, slot.projection.name()).await?;
            slot.at = load_checkpoint(&mut *tx, &checkpoint_name(slot.projection.name())).await?;
            slot.projection.load(&mut tx, SCHEMA).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rebuilt {
    /// The projections rebuilt.
    pub projections: Vec<String>,
    /// Events read from the store.
    pub events: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// `events / seconds`.
    pub events_per_sec: f64,
    /// Where their checkpoints stand afterwards.
    pub checkpoint: Checkpoint,
    /// Where the wall time went, seconds: `read_wait` (waiting for the next page), each projection's
    /// `apply` by name, `commit` (the bulk phase's page commits), `flush` (what the projections kept in
    /// memory during the bulk phase), `logged` (secondary indexes and `SET LOGGED`), and `final` (the rest
    /// of the events under the locks, and the swap).
    pub phases: BTreeMap<String, f64>,
}

/// Rebuilds `projections` (fresh instances) from the start of the store into [`REBUILD_SCHEMA`], then swaps
/// their tables in and moves their checkpoints, atomically, while readers and a running projector go on.
///
/// # Errors
/// [`ProjectionError`]; the live tables are untouched unless the final transaction commits.
pub async fn rebuild(
    pool: &PgPool,
    mut projections: Vec<Box<dyn Projection>>,
    batch: i64,
) -> Result<Rebuilt, ProjectionError> {
    let started = Instant::now();
    projections.sort_by_key(|p| p.name());
    let types: Vec<&'static str> = projections
        .iter()
        .flat_map(|p| p.aggregate_types().iter().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut db = pool.acquire().await?;
    let mut deferred: Vec<(&'static str, String)> = Vec::new();
    for p in &projections {
        for table in p.tables() {
            sqlx::raw_sql(&format!(
                "DROP TABLE IF EXISTS {REBUILD_SCHEMA}.{table};
                 CREATE UNLOGGED TABLE {REBUILD_SCHEMA}.{table} (LIKE {SCHEMA}.{table} INCLUDING ALL)"
            ))
            .execute(&mut *db)
            .await?;
            // Indexes that back no constraint (primary keys and unique constraints serve the upserts):
            // dropped now, built again after the bulk phase.
            let secondary: Vec<(String, String)> = sqlx::query_as(
                "SELECT i.indexname::text, i.indexdef
                   FROM pg_indexes i
                  WHERE i.schemaname = $1 AND i.tablename = $2
                    AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                                     WHERE c.conindid = format('%I.%I', i.schemaname, i.indexname)::regclass)",
            )
            .bind(REBUILD_SCHEMA)
            .bind(table)
            .fetch_all(&mut *db)
            .await?;
            for (name, definition) in secondary {
                sqlx::raw_sql(&format!("DROP INDEX {REBUILD_SCHEMA}.\"{name}\""))
                    .execute(&mut *db)
                    .await?;
                deferred.push((table, definition));
            }
        }
    }
    let mut from = Checkpoint::default();
    let mut events = 0u64;
    // Bulk phase, without locks: one transaction per page (cheaper commits; nothing here is live). A
    // reader task reads and decodes the next pages while this one writes the current one.
    // No connection is held between pages: the pool also serves readers (and, in `jarvis up`, the gateway).
    drop(db);
    let mut phases: BTreeMap<String, f64> = BTreeMap::new();
    for p in &mut projections {
        p.bulk(true);
    }
    let mut pages = read_ahead(pool.clone(), types.clone(), batch);
    loop {
        let waited = Instant::now();
        let Some(page) = pages.recv().await else {
            break;
        };
        *phases.entry("read_wait".into()).or_default() += waited.elapsed().as_secs_f64();
        let page = page?;
        let Some(last) = page.last().map(Event::checkpoint) else {
            break;
        };
        apply_page(pool, &mut projections, &page, &mut phases).await?;
        events += page.len() as u64;
        from = last;
    }
    drop(pages);
    let started_flush = Instant::now();
    let mut tx = pool.begin().await?;
    for p in &mut projections {
        p.flush(&mut tx, REBUILD_SCHEMA).await?;
        p.bulk(false);
    }
    tx.commit().await?;
    phases.insert("flush".into(), started_flush.elapsed().as_secs_f64());
    // Each table, two at a time (on connections of their own, taken one by one from the pool): the
    // indexes no upsert needed, left out of the bulk phase (one sorted build is cheaper than maintaining
    // them row by row), then `SET LOGGED`. The bulk phase wrote no WAL (the tables are unlogged: a crash
    // loses only a rebuild, which starts over); from here on they are ordinary tables, written once to the
    // WAL, before the locks are taken.
    let started_logged = Instant::now();
    let tables: Vec<&'static str> = projections
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect();
    futures::stream::iter(tables.into_iter().map(|table| {
        let indexes: Vec<&String> = deferred
            .iter()
            .filter(|(t, _)| *t == table)
            .map(|(_, definition)| definition)
            .collect();
        async move {
            let mut db = pool.acquire().await?;
            for index in indexes {
                sqlx::raw_sql(index).execute(&mut *db).await?;
            }
            sqlx::raw_sql(&format!("ALTER TABLE {REBUILD_SCHEMA}.{table} SET LOGGED"))
                .execute(&mut *db)
                .await?;
            Ok::<_, ProjectionError>(())
        }
    }))
    .buffer_unordered(2)
    .try_collect::<Vec<()>>()
    .await?;
    phases.insert("logged".into(), started_logged.elapsed().as_secs_f64());
    let final_phase = Instant::now();
    // Final phase under the projections' locks: the rest, then the swap, in one transaction.
    let mut tx = pool.begin().await?;
    for p in &projections {
        lock(&mut tx, p.name()).await?;
    }
    loop {
        let page = read_after(pool, from, batch, &types).await?;
        let Some(last) = page.last().map(Event::checkpoint) else {
            break;
        };
        for p in &mut projections {
            p.apply(&mut tx, REBUILD_SCHEMA, &page).await?;
            p.committed();
        }
        events += page.len() as u64;
        from = last;
    }
    for p in &projections {
        for table in p.tables() {
            sqlx::raw_sql(&format!(
                "DROP TABLE {SCHEMA}.{table}; ALTER TABLE {REBUILD_SCHEMA}.{table} SET SCHEMA {SCHEMA}"
            ))
            .execute(&mut *tx)
            .await?;
        }
        let live = load_checkpoint(&mut *tx, &checkpoint_name(p.name())).await?;
        save_checkpoint(&mut *tx, &checkpoint_name(p.name()), from.max(live)).await?;
    }
    tx.commit().await?;
    phases.insert("final".into(), final_phase.elapsed().as_secs_f64());
    let seconds = started.elapsed().as_secs_f64();
    Ok(Rebuilt {
        projections: projections.iter().map(|p| p.name().to_string()).collect(),
        events,
        seconds,
        events_per_sec: events as f64 / seconds.max(1e-9),
        checkpoint: from,
        phases,
    })
}

/// Pages of the store from its start, read (and decoded) by a task of their own, two pages ahead of the
/// receiver. The task ends after the first empty page or error, or when the receiver is dropped.
fn read_ahead(
    pool: PgPool,
    types: Vec<&'static str>,
    batch: i64,
) -> tokio::sync::mpsc::Receiver<Result<Vec<Event>, ProjectionError>> {
    let (pages, received) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut from = Checkpoint::default();
        loop {
            let page = read_after(&pool, from, batch, &types).await;
            let next = match &page {
                Ok(p) => p.last().map(Event::checkpoint),
                Err(_) => None,
            };
            if pages.send(page).await.is_err() {
                return;
            }
            match next {
                Some(last) => from = last,
                None => return,
            }
        }
    });
    received
}

async fn apply_page(
    pool: &PgPool,
    projections: &mut [Box<dyn Projection>],
    page: &[Event],
    phases: &mut BTreeMap<String, f64>,
) -> Result<(), ProjectionError> {
    let mut tx = pool.begin().await?;
    // Nothing live depends on these commits: no need to wait for the disk.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    for p in projections.iter_mut() {
        let started = Instant::now();
        p.apply(&mut tx, REBUILD_SCHEMA, page).await?;
        *phases.entry(p.name().to_string()).or_default() += started.elapsed().as_secs_f64();
    }
    let started = Instant::now();
    tx.commit().await?;
    *phases.entry("commit".into()).or_default() += started.elapsed().as_secs_f64();
    for p in projections.iter_mut() {
        p.committed();
    }
    Ok(())
}

/// A projection's checkpoint and lag.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ProjectorStatus {
    /// The projection.
    pub name: String,
    /// Global position of the last event applied (0: none yet).
    pub position: i64,
    /// The store's head position.
    pub head_position: i64,
    /// `head_position − position`: events written that it has not applied (an upper bound: positions of
    /// events of rolled-back transactions are never used).
    pub lag_events: i64,
    /// When its checkpoint last moved.
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Checkpoint and lag of each of `names`.
///
/// # Errors
/// [`ProjectionError::Database`].
pub async fn status(
    pool: &PgPool,
    names: &[&str],
) -> Result<Vec<ProjectorStatus>, ProjectionError> {
    let head: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(pool)
        .await?;
    let head = head.unwrap_or(0);
    let keys: Vec<String> = names.iter().map(|n| checkpoint_name(n)).collect();
    let rows: Vec<(String, i64, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT name, position, updated_at FROM checkpoints WHERE name = ANY($1)")
            .bind(&keys)
            .fetch_all(pool)
            .await?;
    Ok(names
        .iter()
        .zip(&keys)
        .map(|(name, key)| {
            let row = rows.iter().find(|r| &r.0 == key);
            let position = row.map_or(0, |r| r.1);
            ProjectorStatus {
                name: (*name).to_string(),
                position,
                head_position: head,
                lag_events: (head - position).max(0),
                updated_at: row.map(|r| r.2),
            }
        })
        .collect())
}
