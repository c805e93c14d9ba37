//! The in-memory ledger a backtest trades on: the same aggregates and commands as the event store, held
//! as live values, with no serialisation and no I/O.
//!
//! Memory stays flat however long the history: the ledger keeps each aggregate's current state and only
//! its last few events (what the pipeline looks up to cause the next event), and hands every event to an
//! observer as it is written instead of keeping a log. The backtest evicts aggregates it is done with
//! (closed orders, old market days) through [`MemoryLedger::retain`].
//!
//! Event ids are deterministic (the run's seed and a counter), so the same inputs give the same order ids
//! and the same report, byte for byte.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use foldhash::fast::FixedState;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use jarvis_agents::ledger::{Ledger, LedgerAggregate};
use jarvis_bus::HandlerError;
use jarvis_domain::{EventMetadata, EventRef};
use uuid::Uuid;

/// Events kept per aggregate for lookups: the pipeline only looks up events it has just written, or the
/// submission of an order it is filling.
const RECENT: usize = 16;

/// What the observer is told of each event: its aggregate type and id, its identity, and the event (a
/// `&A::Event`, to downcast).
pub type Observer = Box<dyn FnMut(&'static str, &str, EventRef, &dyn Any) + Send>;

struct Recent<E> {
    at: EventRef,
    causation: Uuid,
    event: E,
}

struct Slot<A: Aggregate> {
    state: A,
    recent: VecDeque<Recent<A::Event>>,
}

/// A map with a fast, fixed hash: ids are the ledger's own, not an attacker's.
type Fast<K, V> = HashMap<K, V, FixedState>;

/// A `Box<Slot<A>>`; `None` while a command runs on it (taken out, so the state never moves).
type Held = Option<Box<dyn Any + Send>>;

#[derive(Default)]
struct Inner {
    /// Aggregate type → id → `Slot<A>`.
    slots: Fast<&'static str, Fast<String, Held>>,
    next: u64,
    events: u64,
}

/// Aggregates in memory, for backtests.
pub struct MemoryLedger {
    seed: u64,
    inner: Mutex<Inner>,
    observer: Mutex<Option<Observer>>,
}

impl MemoryLedger {
    /// An empty ledger whose event ids derive from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            inner: Mutex::new(Inner::default()),
            observer: Mutex::new(None),
        }
    }

    /// Calls `observer` with every event written from now on.
    pub fn observe(&self, observer: Observer) {
        *self.observer.lock().expect("observer lock") = Some(observer);
    }

    /// Stops calling the observer (and drops it).
    pub fn stop_observing(&self) {
        *self.observer.lock().expect("observer lock") = None;
    }

    /// How many events were written.
    pub fn events_written(&self) -> u64 {
        self.inner.lock().expect("ledger lock").events
    }

    /// A new event identity in the story `correlation` (or its own story when `None`): deterministic.
    pub fn next_ref(&self, correlation: Option<Uuid>) -> EventRef {
        let mut inner = self.inner.lock().expect("ledger lock");
        let event_id = self.id(&mut inner);
        EventRef {
            event_id,
            correlation_id: correlation.unwrap_or(event_id),
        }
    }

    fn id(&self, inner: &mut Inner) -> Uuid {
        inner.next += 1;
        // Version 8 ("custom") UUIDs: the seed, then the counter.
        let raw = (u128::from(self.seed) << 64) | u128::from(inner.next);
        uuid::Builder::from_custom_bytes(raw.to_be_bytes()).into_uuid()
    }

    /// Keeps only the aggregates of type `A` that `keep` accepts.
    pub fn retain<A: Aggregate + 'static>(&self, mut keep: impl FnMut(&str, &A) -> bool) {
        let mut inner = self.inner.lock().expect("ledger lock");
        if let Some(slots) = inner.slots.get_mut(A::TYPE) {
            slots.retain(|id, slot| {
                slot.as_ref()
                    .and_then(|slot| slot.downcast_ref::<Slot<A>>())
                    .is_none_or(|slot| keep(id, &slot.state))
            });
        }
    }

    /// How many aggregates of type `A` it holds.
    pub fn count<A: Aggregate>(&self) -> usize {
        let inner = self.inner.lock().expect("ledger lock");
        inner.slots.get(A::TYPE).map_or(0, HashMap::len)
    }

    /// Reads aggregate `id` of type `A` without copying it.
    pub fn with<A: Aggregate + 'static, R>(
        &self,
        id: &str,
        read: impl FnOnce(Option<&A>) -> R,
    ) -> R {
        let inner = self.inner.lock().expect("ledger lock");
        let state = inner
            .slots
            .get(A::TYPE)
            .and_then(|slots| slots.get(id))
            .and_then(|slot| slot.as_ref()?.downcast_ref::<Slot<A>>())
            .map(|slot| &slot.state);
        read(state)
    }

    /// Takes aggregate `id` out of its slot for a command: the box moves, not the state (the hot path of
    /// a backtest). A new aggregate gets a fresh box, put in its slot by [`MemoryLedger::put`].
    fn take<A: Aggregate + 'static>(&self, id: &str) -> Box<Slot<A>> {
        let mut inner = self.inner.lock().expect("ledger lock");
        inner
            .slots
            .get_mut(A::TYPE)
            .and_then(|slots| slots.get_mut(id))
            .and_then(Option::take)
            .and_then(|slot| slot.downcast::<Slot<A>>().ok())
            .unwrap_or_else(|| {
                Box::new(Slot {
                    state: A::default(),
                    recent: VecDeque::new(),
                })
            })
    }

    fn put<A: Aggregate + 'static>(&self, id: &str, slot: Box<Slot<A>>)
    where
        A::Event: Send,
    {
        let mut inner = self.inner.lock().expect("ledger lock");
        let slots = inner.slots.entry(A::TYPE).or_default();
        match slots.get_mut(id) {
            Some(held) => *held = Some(slot),
            None => {
                slots.insert(id.to_string(), Some(slot));
            }
        }
    }

    /// What `take` makes of the latest recent event of aggregate `id` that `pick` accepts.
    fn find<A, F, R>(
        &self,
        id: &str,
        pick: F,
        take: impl FnOnce(&Recent<A::Event>) -> R,
    ) -> Option<R>
    where
        A: Aggregate + 'static,
        F: Fn(&Recent<A::Event>) -> bool,
    {
        let inner = self.inner.lock().expect("ledger lock");
        let slot = inner
            .slots
            .get(A::TYPE)?
            .get(id)?
            .as_ref()?
            .downcast_ref::<Slot<A>>()?;
        slot.recent.iter().rev().find(|r| pick(r)).map(take)
    }
}

impl Ledger for MemoryLedger {
    type Gate = ();

    async fn close_gate(&self) -> Result<(), HandlerError> {
        Ok(())
    }

    async fn open_gate(&self, _gate: ()) {}

    async fn execute<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        _snapshot: bool,
    ) -> Result<(), HandlerError>
    where
        A: LedgerAggregate,
    {
        let mut slot = self.take::<A>(id);
        let sink = EventSink::default();
        // Jarvis's aggregates decide before they write: a refused command has applied nothing.
        let handled = slot
            .state
            .handle(command, &A::Services::default(), &sink)
            .await;
        let events = sink.collect().await;
        if let Err(e) = handled {
            self.put(id, slot);
            return Err(HandlerError::Permanent(format!("refused: {e}")));
        }
        let mut observer = self.observer.lock().expect("observer lock");
        for event in events {
            let at = {
                let mut inner = self.inner.lock().expect("ledger lock");
                inner.events += 1;
                EventRef {
                    event_id: self.id(&mut inner),
                    correlation_id: metadata.correlation_id,
                }
            };
            if let Some(observe) = observer.as_mut() {
                observe(A::TYPE, id, at, &event);
            }
            if slot.recent.len() == RECENT {
                slot.recent.pop_front();
            }
            slot.recent.push_back(Recent {
                at,
                causation: metadata.causation_id,
                event,
            });
        }
        drop(observer);
        self.put(id, slot);
        Ok(())
    }

    async fn load<A>(&self, id: &str, _snapshot: bool) -> Result<A, HandlerError>
    where
        A: LedgerAggregate,
    {
        Ok(self.with::<A, _>(id, |state| state.cloned().unwrap_or_default()))
    }

    async fn read<A, R, F>(&self, id: &str, _snapshot: bool, read: F) -> Result<R, HandlerError>
    where
        A: LedgerAggregate,
        R: Send,
        F: FnOnce(&A) -> R + Send,
    {
        Ok(self.with::<A, _>(id, |state| match state {
            Some(state) => read(state),
            None => read(&A::default()),
        }))
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
        Ok(self.find::<A, _, _>(id, |r| pick(&r.event), |r| (r.at, r.event.clone())))
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
        Ok(self.find::<A, _, _>(
            id,
            |r| r.causation == cause && pick(&r.event),
            |r| (r.at, r.event.clone()),
        ))
    }

    async fn find_event_ref<A, F>(
        &self,
        id: &str,
        pick: F,
    ) -> Result<Option<EventRef>, HandlerError>
    where
        A: LedgerAggregate,
        F: Fn(&A::Event) -> bool + Send,
    {
        Ok(self.find::<A, _, _>(id, |r| pick(&r.event), |r| r.at))
    }
}
