//! Where the trading agents' aggregates live: the Postgres event store when trading live, memory in a
//! backtest. The pipeline is written once against [`Ledger`], so a backtest runs the very code `jarvis up`
//! runs, not a second implementation of it.

use std::future::Future;

use cqrs_es::Aggregate;
use jarvis_bus::HandlerError;
use jarvis_domain::{EventMetadata, EventRef};
use jarvis_store::{execute_with_retry, EventStore, StoreError};
use serde_json::Value;
use uuid::Uuid;

use crate::runtime::{handler_error, SNAPSHOT_EVERY};

/// Retries after conflicts with another writer.
const RETRIES: u32 = 5;

/// An aggregate the ledger can hold: any cqrs-es aggregate whose commands can be retried.
pub trait LedgerAggregate:
    Aggregate<
        Command: Clone + Send,
        Event: Clone + Send + Sync,
        Error: Send + Sync,
        Services: Default,
    > + Clone
    + 'static
{
}

impl<A> LedgerAggregate for A where
    A: Aggregate<
            Command: Clone + Send,
            Event: Clone + Send + Sync,
            Error: Send + Sync,
            Services: Default,
        > + Clone
        + 'static
{
}

/// The store the trading agents command their aggregates in.
pub trait Ledger: Send + Sync {
    /// Held while a candle's decisions run (see `jarvis_store::gate`).
    type Gate: Send;

    /// Closes the trading gate: halts wait until it opens again.
    fn close_gate(&self) -> impl Future<Output = Result<Self::Gate, HandlerError>> + Send;

    /// Opens it again.
    fn open_gate(&self, gate: Self::Gate) -> impl Future<Output = ()> + Send;

    /// Runs `command` on aggregate `id`, its events carrying `metadata`. `snapshot` marks aggregates that
    /// grow (the store snapshots them).
    fn execute<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        snapshot: bool,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send
    where
        A: LedgerAggregate;

    /// The current state of aggregate `id` (the default state when it has no events).
    fn load<A>(
        &self,
        id: &str,
        snapshot: bool,
    ) -> impl Future<Output = Result<A, HandlerError>> + Send
    where
        A: LedgerAggregate;

    /// What `read` makes of aggregate `id` (the default state when it has no events), without copying the
    /// aggregate where the ledger can avoid it.
    fn read<A, R, F>(
        &self,
        id: &str,
        snapshot: bool,
        read: F,
    ) -> impl Future<Output = Result<R, HandlerError>> + Send
    where
        A: LedgerAggregate,
        R: Send,
        F: FnOnce(&A) -> R + Send;

    /// The latest event of aggregate `id` that `pick` accepts, with its identity.
    fn find_event<A, F>(
        &self,
        id: &str,
        pick: F,
    ) -> impl Future<Output = Result<Option<(EventRef, A::Event)>, HandlerError>> + Send
    where
        A: LedgerAggregate,
        F: Fn(&A::Event) -> bool + Send;

    /// The event of aggregate `id` caused by the event `cause` that `pick` accepts.
    fn find_caused<A, F>(
        &self,
        id: &str,
        cause: Uuid,
        pick: F,
    ) -> impl Future<Output = Result<Option<(EventRef, A::Event)>, HandlerError>> + Send
    where
        A: LedgerAggregate,
        F: Fn(&A::Event) -> bool + Send;

    /// The identity of the latest event of aggregate `id` that `pick` accepts: [`Ledger::find_event`]
    /// without the event, for a caller that only causes the next event (a ledger holding its events in
    /// memory then copies nothing).
    fn find_event_ref<A, F>(
        &self,
        id: &str,
        pick: F,
    ) -> impl Future<Output = Result<Option<EventRef>, HandlerError>> + Send
    where
        A: LedgerAggregate,
        F: Fn(&A::Event) -> bool + Send,
    {
        async move { Ok(self.find_event::<A, F>(id, pick).await?.map(|(at, _)| at)) }
    }
}

/// A borrowed ledger is a ledger: a backtest can inspect the one its pipeline ran on.
impl<T: Ledger> Ledger for &T {
    type Gate = T::Gate;

    fn close_gate(&self) -> impl Future<Output = Result<Self::Gate, HandlerError>> + Send {
        (**self).close_gate()
    }

    fn open_gate(&self, gate: Self::Gate) -> impl Future<Output = ()> + Send {
        (**self).open_gate(gate)
    }

    fn execute<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        snapshot: bool,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send
    where
        A: LedgerAggregate,
    {
        (**self).execute::<A>(id, command, metadata, snapshot)
    }

    fn load<A>(
        &self,
        id: &str,
        snapshot: bool,
    ) -> impl Future<Output = Result<A, HandlerError>> + Send
    where
        A: LedgerAggregate,
    {
        (**self).load::<A>(id, snapshot)
    }

    fn read<A, R, F>(
        &self,
        id: &str,
        snapshot: bool,
        read: F,
    ) -> impl Future<Output = Result<R, HandlerError>> + Send
    where
        A: LedgerAggregate,
        R: Send,
        F: FnOnce(&A) -> R + Send,
    {
        (**self).read::<A, R, F>(id, snapshot, read)
    }

    fn find_event<A, F>(
        &self,
        id: &str,
        pick: F,
    ) -> impl Future<Output = Result<Option<(EventRef, A::Event)>, HandlerError>> + Send
    where
        A: LedgerAggregate,
        F: Fn(&A::Event) -> bool + Send,
    {
        (**self).find_event::<A, F>(id, pick)
    }

    fn find_caused<A, F>(
        &self,
        id: &str,
        cause: Uuid,
        pick: F,
    ) -> impl Future<Output = Result<Option<(EventRef, A::Event)>, HandlerError>> + Send
    where
        A: LedgerAggregate,
        F: Fn(&A::Event) -> bool + Send,
    {
        (**self).find_caused::<A, F>(id, cause, pick)
    }

    fn find_event_ref<A, F>(
        &self,
        id: &str,
        pick: F,
    ) -> impl Future<Output = Result<Option<EventRef>, HandlerError>> + Send
    where
        A: LedgerAggregate,
        F: Fn(&A::Event) -> bool + Send,
    {
        (**self).find_event_ref::<A, F>(id, pick)
    }
}

fn transient(e: StoreError) -> HandlerError {
    HandlerError::Transient(e.to_string())
}

/// A stored payload as cqrs-es wrote it: `{"<EventType>": {...}}` (the reader hands it over unwrapped).
fn typed<E: serde::de::DeserializeOwned>(
    event_type: &str,
    payload: &Value,
) -> Result<E, HandlerError> {
    let wrapped = serde_json::json!({ event_type: payload });
    serde_json::from_value(wrapped).map_err(|e| {
        HandlerError::Permanent(format!("stored {event_type} does not deserialize: {e}"))
    })
}

/// Live: the Postgres event store, through cqrs-es with conflict retries.
impl Ledger for EventStore {
    type Gate = jarvis_store::gate::Gate;

    async fn close_gate(&self) -> Result<Self::Gate, HandlerError> {
        EventStore::close_gate(self).await.map_err(transient)
    }

    async fn open_gate(&self, gate: Self::Gate) {
        if let Err(e) = gate.open().await {
            tracing::warn!(cause = %e, "releasing the trading gate failed");
        }
    }

    async fn execute<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        snapshot: bool,
    ) -> Result<(), HandlerError>
    where
        A: LedgerAggregate,
    {
        let cqrs = if snapshot {
            self.snapshot_cqrs::<A>(SNAPSHOT_EVERY, A::Services::default())
        } else {
            self.cqrs::<A>(A::Services::default())
        };
        execute_with_retry(&cqrs, id, command, metadata, RETRIES)
            .await
            .map(|_| ())
            .map_err(handler_error)
    }

    async fn load<A>(&self, id: &str, snapshot: bool) -> Result<A, HandlerError>
    where
        A: LedgerAggregate,
    {
        EventStore::load::<A>(self, id, snapshot.then_some(SNAPSHOT_EVERY))
            .await
            .map_err(handler_error)
    }

    async fn read<A, R, F>(&self, id: &str, snapshot: bool, read: F) -> Result<R, HandlerError>
    where
        A: LedgerAggregate,
        R: Send,
        F: FnOnce(&A) -> R + Send,
    {
        let state: A = Ledger::load(self, id, snapshot).await?;
        Ok(read(&state))
    }

    async fn find_event<A, F>(
        &self,
        id: &str,
        pick: F,
    ) -> Result<Option<(EventRef, A::Event)>, HandlerError>
    where
        A: LedgerAggregate,
        F: Fn(&A::Event) -> bool + Send,
    {
        let events = self.events_of(A::TYPE, id).await.map_err(transient)?;
        for e in events.iter().rev() {
            let event: A::Event = typed(&e.event_type, &e.payload)?;
            if pick(&event) {
                return Ok(Some((EventRef::from(e), event)));
            }
        }
        Ok(None)
    }

    async fn find_caused<A, F>(
        &self,
        id: &str,
        cause: Uuid,
        pick: F,
    ) -> Result<Option<(EventRef, A::Event)>, HandlerError>
    where
        A: LedgerAggregate,
        F: Fn(&A::Event) -> bool + Send,
    {
        let aggregate_type = A::TYPE;
        let events = self.events_caused_by(cause).await.map_err(transient)?;
        for e in events
            .iter()
            .filter(|e| e.aggregate_type == aggregate_type && e.aggregate_id == id)
        {
            let event: A::Event = typed(&e.event_type, &e.payload)?;
            if pick(&event) {
                return Ok(Some((EventRef::from(e), event)));
            }
        }
        Ok(None)
    }
}
