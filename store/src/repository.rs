//! The cqrs-es repository: postgres-es for reads and snapshots, one multi-row insert per commit.

use std::time::Duration;

use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use cqrs_es::{Aggregate, AggregateError, CqrsFramework};
use jarvis_domain::EventMetadata;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::EventStore;

/// A cqrs-es framework persisted in the Jarvis event store.
pub type Cqrs<A> = CqrsFramework<A, PersistedEventStore<JarvisEventRepository, A>>;

const INSERT_EVENTS: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, event_id)
SELECT $1, $2, u.sequence, u.event_type, u.event_version, u.payload::json, u.metadata::json, u.event_id
  FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::uuid[])
       AS u(sequence, event_type, event_version, payload, metadata, event_id)";

const INSERT_SNAPSHOT: &str = "
INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
VALUES ($1, $2, $3, $4, $5::text::json)";

const UPDATE_SNAPSHOT: &str = "
UPDATE snapshots SET last_sequence = $3, payload = $6::text::json, current_snapshot = $4
 WHERE aggregate_type = $1 AND aggregate_id = $2 AND current_snapshot = $5";

/// cqrs-es repository over the Jarvis schema.
///
/// Reads (events, snapshots, replay streams) are postgres-es's. Writes differ in two ways: each event gets a
/// UUIDv7 `event_id`, and a commit's events go in as one `INSERT ... SELECT unnest(...)` instead of one
/// insert per event. A duplicate `(aggregate_type, aggregate_id, sequence)` means another writer committed
/// first: it is reported as cqrs-es's optimistic-lock error, which becomes `AggregateConflict`.
///
/// Snapshots are computed here, not taken from cqrs-es: in cqrs-es 0.5 the aggregate it hands over for a
/// snapshot has had the new events applied twice (once by `EventSink::write`, once more before
/// serialising), which double-counts anything additive (fees, P&L, admissions). The repository rebuilds the
/// state from the previous snapshot, the events since, and the events being committed, and records the true
/// last sequence it covers.
pub struct JarvisEventRepository {
    pool: PgPool,
    reads: PostgresEventRepository,
}

/// Largest event payload accepted: NATS's default `max_payload` is 1 MiB, and the headers need room too.
pub const MAX_EVENT_BYTES: usize = 900 * 1024;

impl JarvisEventRepository {
    /// A repository on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            reads: PostgresEventRepository::new(pool.clone()),
            pool,
        }
    }

    /// The aggregate's state once `new_events` are applied: the last snapshot, then every event after it.
    async fn state_after<A: Aggregate>(
        &self,
        aggregate_id: &str,
        new_events: &[SerializedEvent],
    ) -> Result<Value, PersistenceError> {
        let corrupt = |e: serde_json::Error| PersistenceError::DeserializationError(Box::new(e));
        let (mut state, from) = match self.reads.get_snapshot::<A>(aggregate_id).await? {
            Some(s) => (
                serde_json::from_value::<A>(s.aggregate).map_err(corrupt)?,
                s.current_sequence,
            ),
            None => (A::default(), 0),
        };
        let earlier = self.reads.get_last_events::<A>(aggregate_id, from).await?;
        for e in earlier
            .iter()
            .chain(new_events)
            .filter(|e| e.sequence > from)
        {
            state.apply(serde_json::from_value::<A::Event>(e.payload.clone()).map_err(corrupt)?);
        }
        serde_json::to_value(&state).map_err(corrupt)
    }

    /// Refuses, before anything is written, what the relay could never publish or readers never decode.
    fn check(events: &[SerializedEvent]) -> Result<(), PersistenceError> {
        let refuse = |e: &SerializedEvent, why: String| {
            PersistenceError::UnknownError(
                format!(
                    "refusing event {} #{} of {}: {why}",
                    e.event_type, e.sequence, e.aggregate_id
                )
                .into(),
            )
        };
        for e in events {
            if e.aggregate_id.is_empty() {
                return Err(refuse(e, "empty aggregate id".into()));
            }
            if let Err(why) = EventMetadata::from_json(&e.metadata) {
                return Err(refuse(
                    e,
                    format!("{why}; run commands with execute_with_retry and an EventMetadata"),
                ));
            }
            let size = e.payload.to_string().len();
            if size > MAX_EVENT_BYTES {
                return Err(refuse(
                    e,
                    format!("payload of {size} bytes exceeds {MAX_EVENT_BYTES}"),
                ));
            }
        }
        Ok(())
    }

    async fn insert<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot: Option<(String, Value, usize)>,
    ) -> Result<(), sqlx::Error> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let n = events.len();
        let (mut seq, mut typ, mut ver, mut pay, mut meta, mut ids) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for e in events {
            seq.push(e.sequence as i64);
            typ.push(e.event_type.as_str());
            ver.push(e.event_version.as_str());
            pay.push(e.payload.to_string());
            meta.push(e.metadata.to_string());
            ids.push(Uuid::now_v7());
        }
        let insert = sqlx::query(INSERT_EVENTS)
            .bind(A::TYPE)
            .bind(&first.aggregate_id)
            .bind(&seq)
            .bind(&typ)
            .bind(&ver)
            .bind(&pay)
            .bind(&meta)
            .bind(&ids);
        let Some((aggregate_id, aggregate, current_snapshot)) = snapshot else {
            // One statement is atomic by itself: no BEGIN/COMMIT round trips.
            insert.execute(&self.pool).await?;
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        insert.execute(&mut *tx).await?;
        // The snapshot holds the state through the last event committed here (see `state_after`).
        let last_sequence = events.last().map_or(0, |e| e.sequence) as i64;
        let payload = aggregate.to_string();
        let done = if current_snapshot == 1 {
            sqlx::query(INSERT_SNAPSHOT)
                .bind(A::TYPE)
                .bind(&aggregate_id)
                .bind(last_sequence)
                .bind(current_snapshot as i64)
                .bind(&payload)
                .execute(&mut *tx)
                .await?
        } else {
            sqlx::query(UPDATE_SNAPSHOT)
                .bind(A::TYPE)
                .bind(&aggregate_id)
                .bind(last_sequence)
                .bind(current_snapshot as i64)
                .bind(current_snapshot as i64 - 1)
                .bind(&payload)
                .execute(&mut *tx)
                .await?
        };
        if done.rows_affected() != 1 {
            return Err(sqlx::Error::RowNotFound);
        }
        tx.commit().await
    }
}

fn persistence_error(err: sqlx::Error) -> PersistenceError {
    match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            PersistenceError::OptimisticLockError
        }
        // A snapshot that moved under us is a conflict too.
        sqlx::Error::RowNotFound => PersistenceError::OptimisticLockError,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            PersistenceError::ConnectionError(Box::new(err))
        }
        _ => PersistenceError::UnknownError(Box::new(err)),
    }
}

impl PersistedEventRepository for JarvisEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.reads.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        Self::check(events)?;
        let snapshot_update = match snapshot_update {
            Some((id, _double_applied, current_snapshot)) => {
                let state = self.state_after::<A>(&id, events).await?;
                Some((id, state, current_snapshot))
            }
            None => None,
        };
        self.insert::<A>(events, snapshot_update)
            .await
            .map_err(persistence_error)
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_all_events::<A>().await
    }
}

impl EventStore {
    /// A cqrs-es framework for aggregate `A` on this store, with no in-process queries: readers consume
    /// the global order (the relay, projectors), never cqrs-es's post-commit dispatch.
    pub fn cqrs<A: Aggregate>(&self, services: A::Services) -> Cqrs<A> {
        let store =
            PersistedEventStore::new_event_store(JarvisEventRepository::new(self.pool.clone()));
        CqrsFramework::new(store, vec![], services)
    }

    /// Like [`EventStore::cqrs`], snapshotting every `snapshot_size` events, for aggregates that grow.
    pub fn snapshot_cqrs<A: Aggregate>(
        &self,
        snapshot_size: usize,
        services: A::Services,
    ) -> Cqrs<A> {
        let repo = JarvisEventRepository::new(self.pool.clone());
        let store = PersistedEventStore::new_snapshot_store(repo, snapshot_size);
        CqrsFramework::new(store, vec![], services)
    }
}

impl EventStore {
    /// The current state of aggregate `A` with id `id` (the default state when it has no events), reading
    /// its latest snapshot first when `snapshot_size` is given.
    ///
    /// # Errors
    /// The store's failures as cqrs-es reports them.
    pub async fn load<A: Aggregate>(
        &self,
        id: &str,
        snapshot_size: Option<usize>,
    ) -> Result<A, AggregateError<A::Error>> {
        use cqrs_es::{AggregateContext, EventStore as _};
        let mut context = match snapshot_size {
            Some(size) => {
                let repo = JarvisEventRepository::new(self.pool.clone());
                PersistedEventStore::<_, A>::new_snapshot_store(repo, size)
                    .load_aggregate(id)
                    .await?
            }
            None => {
                PersistedEventStore::<_, A>::new_event_store(JarvisEventRepository::new(
                    self.pool.clone(),
                ))
                .load_aggregate(id)
                .await?
            }
        };
        Ok(std::mem::take(context.aggregate()))
    }
}

/// How a command went through [`execute_with_retry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Executed {
    /// Conflicts met (and retried) before the command went through.
    pub conflicts: u32,
}

/// Runs a command, reloading and retrying up to `max_retries` times when another writer committed to the
/// same aggregate first (cqrs-es does not retry by itself).
///
/// # Errors
/// The command's rejection (`AggregateError::UserError`) at once; `AggregateConflict` when every retry
/// conflicted; store failures as cqrs-es reports them.
pub async fn execute_with_retry<A>(
    cqrs: &Cqrs<A>,
    aggregate_id: &str,
    command: A::Command,
    metadata: &EventMetadata,
    max_retries: u32,
) -> Result<Executed, AggregateError<A::Error>>
where
    A: Aggregate,
    A::Command: Clone,
{
    let mut conflicts = 0;
    loop {
        match cqrs
            .execute_with_metadata(aggregate_id, command.clone(), metadata.to_map())
            .await
        {
            Err(AggregateError::AggregateConflict) if conflicts < max_retries => {
                conflicts += 1;
                tracing::debug!(aggregate_id, conflicts, "aggregate conflict, retrying");
                // A little jitter so that two writers that collided do not collide again in lockstep.
                let jitter = Uuid::now_v7().as_u128() as u64 % 5;
                tokio::time::sleep(Duration::from_millis(conflicts as u64 + jitter)).await;
            }
            Err(e) => return Err(e),
            Ok(()) => return Ok(Executed { conflicts }),
        }
    }
}
