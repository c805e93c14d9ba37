//! The outbox relay: publishes every stored event to `JARVIS_EVENTS`, in the store's gap-safe order, once.
//!
//! - **Leader election.** Several relays may run; the one holding the Postgres advisory lock publishes, the
//!   others wait. The lock lives on a dedicated connection, which also writes the checkpoint: if that
//!   connection dies, the lock is gone and so is the right to move the checkpoint.
//! - **Order.** Each message carries `Nats-Expected-Last-Sequence`: the server stores it only right after
//!   its predecessor. If a message is lost in flight (a reconnect), every later one in the window is
//!   refused instead of stored out of order, and the relay resynchronises.
//! - **Exactly once.** `Nats-Msg-Id` is the event id (the server drops a copy within its duplicate
//!   window), and on every (re)start the relay resumes after the later of its checkpoint and the last
//!   `ce-position` already in the stream, so a relay that was down longer than the window republishes
//!   nothing.
//! - **Checkpoint** after each batch's acks; a crash between publish and checkpoint is covered by the
//!   resume rule above.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use async_nats::jetstream::Context;
use bytes::Bytes;
use jarvis_bus::envelope::{headers, headers_for};
use jarvis_bus::{BusError, EVENTS_STREAM};
use jarvis_domain::RecordedEvent;
use jarvis_store::reader::save_checkpoint;
use jarvis_store::{Checkpoint, EventStore, EventTail, StoreError};
use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

/// Advisory lock key of the relay leader (any fixed number; `jarvis-relay` in ASCII).
const LEADER_LOCK: i64 = 0x6a61_7276_6973_7265;

/// Settings of the relay.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Name of its checkpoint.
    pub checkpoint: String,
    /// Events read from the store per batch.
    pub batch: i64,
    /// Publishes awaiting their ack at once.
    pub window: usize,
    /// How far back to look in the stream for the last relayed message (past foreign messages).
    pub scan_back: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            checkpoint: "relay".into(),
            batch: 1_000,
            window: 256,
            scan_back: 1_000,
        }
    }
}

/// Why the relay stopped a leadership term (it retries after a pause).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Postgres failed on the leader connection.
    #[error("leader connection: {0}")]
    Leader(#[from] sqlx::Error),
    /// NATS failed, or refused a publish.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The leader connection stopped answering.
    #[error("leader connection did not answer within {0:?}")]
    LeaderTimeout(Duration),
    /// The store reader task ended without an error (it panicked or was cancelled).
    #[error("the store reader stopped")]
    ReaderGone,
}

/// Most publishes awaiting their ack: async-nats allows 5,000 per context and blocks beyond that, which
/// would deadlock a relay that only frees slots by awaiting its own acks.
pub const MAX_WINDOW: usize = 4_000;

/// How long the leader connection may take to answer (a ping, a checkpoint save).
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A term that lasted this long was healthy: the next interruption starts the back-off afresh.
const HEALTHY_TERM: Duration = Duration::from_secs(30);

/// Runs the relay until `shutdown` completes: waits to become leader, publishes, and on any failure pauses
/// (with back-off up to 5 s) and starts over from the resume point. It never gives up by itself.
pub async fn run_relay(
    store: EventStore,
    js: Context,
    settings: RelaySettings,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut pause = Duration::from_millis(100);
    loop {
        let started = tokio::time::Instant::now();
        let term = lead(&store, &js, &settings);
        tokio::select! {
            _ = &mut shutdown => return,
            result = term => match result {
                Ok(()) => return,
                Err(e) => tracing::warn!(cause = %e, ?pause, "relay interrupted; resuming"),
            },
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(pause) => {},
        }
        pause = if started.elapsed() > HEALTHY_TERM {
            Duration::from_millis(100)
        } else {
            (pause * 2).min(Duration::from_secs(5))
        };
    }
}

/// One leadership term: acquire the lock, resume, publish until an error.
async fn lead(
    store: &EventStore,
    js: &Context,
    settings: &RelaySettings,
) -> Result<(), RelayError> {
    let mut leader = PgConnection::connect_with(&store.pool().connect_options()).await?;
    let mut waited = false;
    while !sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
        .bind(LEADER_LOCK)
        .fetch_one(&mut leader)
        .await?
    {
        if !waited {
            tracing::info!("another relay is leader; standing by");
            waited = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::info!("relay is leader");
    let mut stream = js.get_stream(EVENTS_STREAM).await.map_err(|e| {
        BusError::js(
            format!("opening stream {EVENTS_STREAM} (run `jarvis migrate`)"),
            e,
        )
    })?;
    let (resume, mut expected_seq) =
        resume_point(store, &mut leader, &mut stream, settings).await?;
    tracing::info!(
        txid = resume.txid,
        position = resume.position,
        "relay resuming"
    );
    let tail = store.tail(resume).await?;
    // Read the next batch from the store while this one is being published and acked.
    let (batches, mut ready) = mpsc::channel(2);
    let _reader = AbortOnDrop(tokio::spawn(read_ahead(tail, settings.batch, batches)));
    // Publishes awaiting their ack; the last of each batch carries the checkpoint to save once acked.
    let mut inflight: VecDeque<(PublishAckFuture, Option<Checkpoint>)> =
        VecDeque::with_capacity(settings.window);
    loop {
        let window = settings.window.clamp(1, MAX_WINDOW);
        let batch = match ready.try_recv() {
            Ok(batch) => batch,
            Err(TryRecvError::Empty) => {
                // Nothing new yet: settle what is in flight (moving the checkpoint), then wait.
                while let Some(pending) = inflight.pop_front() {
                    settle(pending, &mut leader, settings).await?;
                }
                match ready.recv().await {
                    Some(batch) => batch,
                    None => return Err(RelayError::ReaderGone),
                }
            }
            Err(TryRecvError::Disconnected) => return Err(RelayError::ReaderGone),
        }?;
        // Still leader? The lock lives as long as its connection: if that is gone, so is the lock, and a
        // standby may already be publishing.
        leader_call(sqlx::query("SELECT 1").execute(&mut leader)).await?;
        let last = batch.len().saturating_sub(1);
        for (i, event) in batch.iter().enumerate() {
            let mut h = headers_for(event);
            h.insert(
                headers::EXPECTED_LAST_SEQUENCE,
                expected_seq.to_string().as_str(),
            );
            expected_seq += 1;
            let body = Bytes::from(serde_json::to_vec(&event.payload).unwrap_or_default());
            let ack = js
                .send_publish(
                    event.subject(),
                    PublishMessage::build().headers(h).payload(body),
                )
                .await
                .map_err(|e| BusError::js(format!("publishing position {}", event.position), e))?;
            inflight.push_back((ack, (i == last).then(|| Checkpoint::after(event))));
            if inflight.len() >= window {
                if let Some(pending) = inflight.pop_front() {
                    settle(pending, &mut leader, settings).await?;
                }
            }
        }
    }
}

/// Bounds a call on the leader connection, so a half-open connection cannot hang the relay.
async fn leader_call<T>(
    call: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, RelayError> {
    match tokio::time::timeout(LEADER_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(RelayError::LeaderTimeout(LEADER_TIMEOUT)),
    }
}

/// Feeds batches of the store's tail to the publisher until it stops listening or the store fails.
async fn read_ahead(
    mut tail: EventTail,
    limit: i64,
    batches: mpsc::Sender<Result<Vec<RecordedEvent>, StoreError>>,
) {
    loop {
        let batch = tail.next_batch(limit).await;
        let failed = batch.is_err();
        if batches.send(batch).await.is_err() || failed {
            return;
        }
    }
}

/// Aborts a task when dropped (when a leadership term ends, its reader must not outlive it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Awaits one publish's ack; if it closes a batch, moves the checkpoint on the leader connection.
async fn settle(
    (ack, checkpoint): (PublishAckFuture, Option<Checkpoint>),
    leader: &mut PgConnection,
    settings: &RelaySettings,
) -> Result<(), RelayError> {
    await_ack(Some(ack)).await?;
    if let Some(at) = checkpoint {
        match tokio::time::timeout(
            LEADER_TIMEOUT,
            save_checkpoint(&mut *leader, &settings.checkpoint, at),
        )
        .await
        {
            Ok(saved) => saved?,
            Err(_) => return Err(RelayError::LeaderTimeout(LEADER_TIMEOUT)),
        }
        tracing::debug!(position = at.position, "relayed up to");
    }
    Ok(())
}

async fn await_ack(ack: Option<PublishAckFuture>) -> Result<(), BusError> {
    if let Some(ack) = ack {
        let ack = ack
            .await
            .map_err(|e| BusError::js("awaiting publish ack", e))?;
        if ack.duplicate {
            tracing::debug!(sequence = ack.sequence, "stream already had this event");
        }
    }
    Ok(())
}

/// Where to resume: after the later of the checkpoint and the last relayed event in the stream; and the
/// stream's last sequence, which the next publish must follow.
async fn resume_point(
    store: &EventStore,
    leader: &mut PgConnection,
    stream: &mut Stream,
    settings: &RelaySettings,
) -> Result<(Checkpoint, u64), RelayError> {
    let saved = jarvis_store::reader::load_checkpoint(&mut *leader, &settings.checkpoint).await?;
    let info = stream
        .info()
        .await
        .map_err(|e| BusError::js(format!("reading stream {EVENTS_STREAM} info"), e))?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    // The newest message that this relay published: its ce-id is the store's event at its ce-position.
    // Anything else (a foreign message, a copy made by hand, a stream older than a restored store) is
    // passed over.
    let mut from_stream = Checkpoint::default();
    let mut seq = last;
    while seq >= first.max(1) && last - seq < settings.scan_back {
        match stream.get_raw_message(seq).await {
            Ok(message) => {
                if let Some(at) = relayed_checkpoint(store, &message.headers).await? {
                    from_stream = at;
                    break;
                }
            }
            // Deleted, or expired by max_age: keep looking further back.
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {}
            Err(e) => {
                return Err(
                    BusError::js(format!("reading message {seq} of {EVENTS_STREAM}"), e).into(),
                )
            }
        }
        seq -= 1;
    }
    Ok((saved.max(from_stream), last))
}

/// The checkpoint of a stream message if the relay published it: its `ce-id` is the store's event at its
/// `ce-position`.
async fn relayed_checkpoint(
    store: &EventStore,
    headers: &async_nats::HeaderMap,
) -> Result<Option<Checkpoint>, RelayError> {
    let header = |name| headers.get(name).map(|v| v.as_str().to_string());
    let (Some(id), Some(position)) = (header(headers::ID), header(headers::POSITION)) else {
        return Ok(None);
    };
    let (Ok(id), Ok(position)) = (id.parse::<uuid::Uuid>(), position.parse::<i64>()) else {
        return Ok(None);
    };
    Ok(store
        .event_by_id(id)
        .await?
        .filter(|event| event.position == position)
        .map(|event| Checkpoint::after(&event)))
}
