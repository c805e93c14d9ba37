//! The risk agent: the `RiskBook`'s commands as the NATS micro service `jarvis-risk`.
//!
//! - `jarvis.cmd.risk.halt` `{"reason": "..."}` appends `TradingHalted` (the kill switch); while halted,
//!   every proposal is refused with rule `halted`.
//! - `jarvis.cmd.risk.resume` `{"reason": "..."}` appends `TradingResumed`.
//! - `jarvis.cmd.risk.status` `{}` answers the halt and the limits.
//!
//! `nats req jarvis.cmd.risk.halt '{"reason":"manual"}'` works from a shell. Halting twice, or resuming a book
//! that is not halted, changes nothing and says so. An operator's halt is stamped with the wall clock: it is
//! an outside event that happens now, not a decision taken from market data.
//!
//! While the book is halted (by an operator, the daily loss or the drawdown), the heartbeats of `jarvis-risk`
//! and of the trading agent say `halted` ([`HaltWatch`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use cqrs_es::AggregateError;
use futures::StreamExt;
use jarvis_bus::health::HealthStatus;
use jarvis_bus::service::{parse, serve_with_health, Health, ServiceError};
use jarvis_bus::BusError;
use jarvis_domain::trading::risk::DrawdownBase;
use jarvis_domain::trading::{Portfolio, RiskBook, RiskCommand};
use jarvis_domain::EventMetadata;
use jarvis_store::{execute_with_retry, EventStore};
use rust_decimal::Decimal;

use crate::runtime::SNAPSHOT_EVERY;
use serde::Deserialize;
use serde_json::{json, Value};

/// The id of the one risk book.
pub const RISK_BOOK: &str = "main";
/// Retries after conflicts with another writer.
const RETRIES: u32 = 5;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn store_failure<E: std::error::Error>(e: AggregateError<E>) -> ServiceError {
    match e {
        AggregateError::UserError(e) => ServiceError::refused(e.to_string()),
        other => ServiceError::internal(other.to_string()),
    }
}

/// Subjects of the events that halt and resume trading.
const HALT_SUBJECTS: [&str; 2] = [
    "jarvis.evt.risk.TradingHalted.>",
    "jarvis.evt.risk.TradingResumed.>",
];

/// Whether trading is halted, as the risk book says, for heartbeats: `halted` while it is. Kept up to date by
/// the task of [`HaltWatch::spawn`], which reads the book at start, again whenever `TradingHalted` or
/// `TradingResumed` passes on the bus, and every heartbeat interval in case one was missed.
#[derive(Debug, Clone, Default)]
pub struct HaltWatch(Arc<AtomicBool>);

impl HaltWatch {
    /// Whether trading was halted at the last reading.
    pub fn is_halted(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `halted` or `ok`, for a heartbeat.
    pub fn status(&self) -> HealthStatus {
        if self.is_halted() {
            HealthStatus::Halted
        } else {
            HealthStatus::Ok
        }
    }

    fn set(&self, halted: bool) {
        self.0.store(halted, Ordering::Relaxed);
    }

    /// Reads the risk book now.
    ///
    /// # Errors
    /// The store's error; the last reading stays.
    pub async fn refresh(&self, store: &EventStore) -> Result<bool, String> {
        let book: RiskBook = store
            .load(RISK_BOOK, Some(SNAPSHOT_EVERY))
            .await
            .map_err(|e| e.to_string())?;
        let halted = book.halt().is_some();
        self.set(halted);
        Ok(halted)
    }

    /// A watch and the task keeping it up to date until `shutdown` completes. Until the first reading it
    /// says not halted.
    pub fn spawn(
        store: EventStore,
        client: async_nats::Client,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let watch = Self::default();
        let task = tokio::spawn(watch.clone().run(store, client, shutdown));
        (watch, task)
    }

    async fn run(
        self,
        store: EventStore,
        client: async_nats::Client,
        shutdown: impl Future<Output = ()>,
    ) {
        // Subscribed before the first reading, so no change between the two is missed.
        let mut changes = futures::stream::SelectAll::new();
        for subject in HALT_SUBJECTS {
            match client.subscribe(subject).await {
                Ok(sub) => changes.push(sub),
                Err(e) => {
                    tracing::warn!(subject, cause = %e, "cannot follow halts; reading the risk book every interval")
                }
            }
        }
        let mut changes = changes.boxed();
        let every = jarvis_bus::health::process_interval();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
                change = changes.next() => {
                    if change.is_none() {
                        // The client is closing: go on reading every interval.
                        changes = futures::stream::pending().boxed();
                        continue;
                    }
                }
            }
            if let Err(e) = self.refresh(&store).await {
                tracing::debug!(cause = %e, "the risk book could not be read for the heartbeat");
            }
        }
    }
}

async fn book_status(store: &EventStore, watch: &HaltWatch) -> Result<Value, ServiceError> {
    let book: RiskBook = store
        .load(RISK_BOOK, Some(SNAPSHOT_EVERY))
        .await
        .map_err(store_failure)?;
    watch.set(book.halt().is_some());
    Ok(json!({
        "halted": book.halt().is_some(),
        "halt": book.halt(),
        "limits": book.limits(),
    }))
}

async fn handle(
    store: &EventStore,
    watch: &HaltWatch,
    verb: &str,
    body: &[u8],
) -> Result<Value, ServiceError> {
    let cqrs = store.snapshot_cqrs::<RiskBook>(SNAPSHOT_EVERY, ());
    let at = chrono::Utc::now();
    let command = match verb {
        "halt" => {
            let Reason { reason } = parse(body)?;
            RiskCommand::Halt { reason, at }
        }
        "resume" => {
            let Reason { reason } = parse(body)?;
            // The portfolio now: resuming a drawdown halt measures the drawdown from here.
            let portfolio: Portfolio = store
                .load(crate::trading::PORTFOLIO, Some(SNAPSHOT_EVERY))
                .await
                .map_err(store_failure)?;
            let view = portfolio.view();
            let drawdown_base = (view.equity > Decimal::ZERO).then_some(DrawdownBase {
                equity: view.equity,
                high_water_mark: view.high_water_mark.max(view.equity),
            });
            RiskCommand::Resume {
                reason,
                at,
                drawdown_base,
            }
        }
        "status" => {
            let Empty {} = parse(body)?;
            return book_status(store, watch).await;
        }
        other => return Err(ServiceError::bad_request(format!("unknown verb {other:?}"))),
    };
    let metadata = EventMetadata::root(format!("operator:{verb}"));
    // Through the trading gate: the halt lands between two candles' decisions, never inside one.
    let gate = store
        .close_gate()
        .await
        .map_err(|e| ServiceError::internal(e.to_string()))?;
    let done = execute_with_retry(&cqrs, RISK_BOOK, command, &metadata, RETRIES).await;
    gate.open()
        .await
        .map_err(|e| ServiceError::internal(e.to_string()))?;
    done.map_err(store_failure)?;
    book_status(store, watch).await
}

/// Serves `jarvis-risk` until `shutdown` completes. Its heartbeat says `halted` while trading is halted.
///
/// # Errors
/// [`BusError`] when the service cannot be registered with NATS.
pub async fn serve_commands(
    store: EventStore,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError> {
    let (watch, watching) =
        HaltWatch::spawn(store.clone(), client.clone(), futures::future::pending());
    // Stops watching when this future ends or is dropped.
    let _watching = AbortOnDrop(watching);
    let health = {
        let watch = watch.clone();
        Health::new("risk", &[]).with_status(move || watch.status())
    };
    serve_with_health(
        &client,
        "risk",
        "Jarvis risk book: halt (kill switch), resume, status",
        &["halt", "resume", "status"],
        |verb: String, body: Bytes| {
            let (store, watch) = (store.clone(), watch.clone());
            async move { handle(&store, &watch, &verb, &body).await }
        },
        health,
        shutdown,
    )
    .await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
