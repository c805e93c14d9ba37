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

use std::future::Future;

use bytes::Bytes;
use cqrs_es::AggregateError;
use jarvis_bus::service::{parse, serve, ServiceError};
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

async fn book_status(store: &EventStore) -> Result<Value, ServiceError> {
    let book: RiskBook = store
        .load(RISK_BOOK, Some(SNAPSHOT_EVERY))
        .await
        .map_err(store_failure)?;
    Ok(json!({
        "halted": book.halt().is_some(),
        "halt": book.halt(),
        "limits": book.limits(),
    }))
}

async fn handle(store: &EventStore, verb: &str, body: &[u8]) -> Result<Value, ServiceError> {
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
            return book_status(store).await;
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
    book_status(store).await
}

/// Serves `jarvis-risk` until `shutdown` completes.
///
/// # Errors
/// [`BusError`] when the service cannot be registered with NATS.
pub async fn serve_commands(
    store: EventStore,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError> {
    serve(
        &client,
        "risk",
        "Jarvis risk book: halt (kill switch), resume, status",
        &["halt", "resume", "status"],
        |verb: String, body: Bytes| {
            let store = store.clone();
            async move { handle(&store, &verb, &body).await }
        },
        shutdown,
    )
    .await
}
