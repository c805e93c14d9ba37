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
use async_nats::jetstream::stream::Stream;
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
}

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
        pause = (pause * 2).min(Duration::from_secs(5));
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
    let reader = AbortOnDrop(tokio::spawn(read_ahead(tail, settings.batch, batches)));
    // Publishes awaiting their ack; the last of each batch carries the checkpoint to save once acked.
    let mut inflight: VecDeque<(PublishAckFuture, Option<Checkpoint>)> =
        VecDeque::with_capacity(settings.window);
    loop {
        let batch = match ready.try_recv() {
            Ok(batch) => batch,
            Err(TryRecvError::Empty) => {
                // Nothing new yet: settle what is in flight (moving the checkpoint), then wait.
                while let Some(pending) = inflight.pop_front() {
                    settle(pending, &mut leader, settings).await?;
                }
                match ready.recv().await {
                    Some(batch) => batch,
                    None => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        }?;
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
            if inflight.len() >= settings.window {
                if let Some(pending) = inflight.pop_front() {
                    settle(pending, &mut leader, settings).await?;
                }
            }
        }
    }
    drop(reader);
    Ok(())
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
        save_checkpoint(&mut *leader, &settings.checkpoint, at).await?;
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
    let mut in_stream = None;
    let mut seq = last;
    while seq >= first.max(1) && last - seq < settings.scan_back {
        // A message may be gone (deleted, or expired by max_age): keep looking further back.
        if let Ok(message) = stream.get_raw_message(seq).await {
            let position = message
                .headers
                .get(headers::POSITION)
                .and_then(|v| v.as_str().parse::<i64>().ok());
            if let Some(position) = position {
                in_stream = Some(position);
                break;
            }
        }
        seq -= 1;
    }
    let from_stream = match in_stream {
        Some(position) => match store.checkpoint_at(position).await? {
            Some(cp) => cp,
            None => {
                tracing::warn!(
                    position,
                    "the stream holds a position the store does not have; using the checkpoint"
                );
                Checkpoint::default()
            }
        },
        None => Checkpoint::default(),
    };
    Ok((saved.max(from_stream), last))
}
