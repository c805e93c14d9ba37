//! Ingestion of a candle file into `MarketFeed` aggregates: one batched command per symbol and UTC day.
//!
//! Re-ingesting a file appends nothing (recording a known candle is a no-op). A candle that differs from the
//! one recorded for its hour is refused by the aggregate; the day's batch is then retried candle by candle
//! so that every refusal is reported with its file and line, and the other candles of that day still land.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cqrs_es::{AggregateError, EventEnvelope, Query};
use futures::{stream, StreamExt, TryStreamExt};
use jarvis_domain::market::{MarketFeed, MarketFeedCommand, MarketFeedError, MarketFeedId};
use jarvis_domain::EventMetadata;
use jarvis_store::{execute_with_retry, EventStore};
use serde::Serialize;

use super::candle_file::{CandleFile, ParsedCandle};

/// How many times a command is retried after a conflict with another writer.
const MAX_RETRIES: u32 = 5;

/// What one ingest did, as `jarvis ingest candles` prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    /// The file.
    pub file: String,
    /// Its symbol.
    pub symbol: String,
    /// Data rows read.
    pub rows_read: usize,
    /// `CandleClosed` events appended.
    pub appended: usize,
    /// Candles the store already held (identical).
    pub already_present: usize,
    /// Rows dropped by the duplicate rule.
    pub duplicates_dropped: usize,
    /// Gaps in the series, and the intervals missing in them.
    pub gaps: usize,
    /// Intervals missing in the gaps.
    pub missing_intervals: u64,
    /// Rows that did not parse (`file:line: reason`); skipped only with `--skip-bad`.
    pub bad_rows: Vec<String>,
    /// Candles the store refused (`file:line: reason`), e.g. a different candle for a recorded hour.
    pub rejected: Vec<String>,
}

/// Counts the events each successful command committed (cqrs-es reports them to queries after commit).
#[derive(Default, Clone)]
struct Committed(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl Query<MarketFeed> for Committed {
    async fn dispatch(&self, _aggregate_id: &str, events: &[EventEnvelope<MarketFeed>]) {
        self.0.fetch_add(events.len(), Ordering::Relaxed);
    }
}

/// A failure of the store while ingesting (not a refused candle, which is reported instead).
#[derive(Debug, thiserror::Error)]
#[error("storing candles of {feed}: {message}")]
pub struct IngestError {
    /// The feed being written.
    pub feed: String,
    /// What went wrong.
    pub message: String,
}

/// Appends the candles of `file` through the `MarketFeed` aggregates, `concurrency` days at a time.
///
/// # Errors
/// [`IngestError`] when the store fails; what was committed before stays committed, and a new run
/// appends only what is missing.
pub async fn ingest_file(
    store: &EventStore,
    file: &CandleFile,
    metadata: &EventMetadata,
    concurrency: usize,
) -> Result<IngestReport, IngestError> {
    let committed = Committed::default();
    let cqrs = store
        .cqrs::<MarketFeed>(())
        .append_query(Box::new(committed.clone()));
    let mut days: BTreeMap<MarketFeedId, Vec<&ParsedCandle>> = BTreeMap::new();
    for parsed in &file.candles {
        days.entry(MarketFeedId::of(&parsed.candle))
            .or_default()
            .push(parsed);
    }
    let name = file_name(file);
    let rejected: Vec<Vec<String>> = stream::iter(days)
        .map(|(feed, candles)| {
            let cqrs = &cqrs;
            let name = &name;
            async move {
                let feed = feed.to_string();
                let batch = MarketFeedCommand::RecordCandles {
                    feed: feed.clone(),
                    candles: candles.iter().map(|p| p.candle.clone()).collect(),
                };
                let store_error = |e: AggregateError<MarketFeedError>| IngestError {
                    feed: feed.clone(),
                    message: e.to_string(),
                };
                match execute_with_retry(cqrs, &feed, batch, metadata, MAX_RETRIES).await {
                    Ok(_) => return Ok(vec![]),
                    Err(AggregateError::UserError(_)) => {}
                    Err(e) => return Err(store_error(e)),
                }
                // Some candle of this day was refused: record them one by one to name each refusal.
                let mut refused = Vec::new();
                for parsed in candles {
                    let one = MarketFeedCommand::RecordCandle {
                        feed: feed.clone(),
                        candle: parsed.candle.clone(),
                    };
                    match execute_with_retry(cqrs, &feed, one, metadata, MAX_RETRIES).await {
                        Ok(_) => {}
                        Err(AggregateError::UserError(e)) => {
                            refused.push(format!("{name}:{}: {e}", parsed.line));
                        }
                        Err(e) => return Err(store_error(e)),
                    }
                }
                Ok(refused)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let rejected: Vec<String> = rejected.into_iter().flatten().collect();
    Ok(report(
        file,
        name,
        committed.0.load(Ordering::Relaxed),
        rejected,
    ))
}

/// Appends the candles of `file` one at a time, in time order, as if live: `per_interval` of wall time for
/// each interval of market time (e.g. 10 ms per hour), gaps included. The schedule does not drift: each
/// candle is due at its offset from the first, not after the previous one.
///
/// # Errors
/// [`IngestError`] when the store fails; what was appended stays, and a new run appends only the rest.
pub async fn replay_file(
    store: &EventStore,
    file: &CandleFile,
    metadata: &EventMetadata,
    per_interval: std::time::Duration,
) -> Result<IngestReport, IngestError> {
    let mut reports = replay_files(
        store,
        std::slice::from_ref(file),
        metadata,
        Some(per_interval),
    )
    .await?;
    Ok(reports.remove(0))
}

/// Appends the candles of several files merged by time (close time, then symbol), one at a time, the
/// order a live feed of those symbols delivers them in: the pipeline's clock is the latest close it has
/// seen, so appending one whole file after another would make the second file's history stale. With
/// `per_interval`, paced as [`replay_file`] (by the shortest interval of the files); without, at full
/// speed.
///
/// # Errors
/// [`IngestError`] when the store fails; what was appended stays, and a new run appends only the rest.
pub async fn replay_files(
    store: &EventStore,
    files: &[CandleFile],
    metadata: &EventMetadata,
    per_interval: Option<std::time::Duration>,
) -> Result<Vec<IngestReport>, IngestError> {
    let committed: Vec<Committed> = files.iter().map(|_| Committed::default()).collect();
    let cqrs: Vec<_> = committed
        .iter()
        .map(|c| {
            store
                .cqrs::<MarketFeed>(())
                .append_query(Box::new(c.clone()))
        })
        .collect();
    let names: Vec<String> = files.iter().map(file_name).collect();
    let mut merged: Vec<(usize, &ParsedCandle)> = files
        .iter()
        .enumerate()
        .flat_map(|(i, f)| f.candles.iter().map(move |p| (i, p)))
        .collect();
    merged.sort_by(|(_, a), (_, b)| {
        (a.candle.close_time, a.candle.symbol.as_str())
            .cmp(&(b.candle.close_time, b.candle.symbol.as_str()))
    });
    let interval = files
        .iter()
        .map(|f| f.interval.duration().num_seconds().max(1))
        .min()
        .unwrap_or(3600);
    let started = tokio::time::Instant::now();
    let first = merged.first().map(|(_, p)| p.candle.open_time);
    let mut rejected: Vec<Vec<String>> = files.iter().map(|_| Vec::new()).collect();
    for (i, parsed) in merged {
        if let (Some(first), Some(per_interval)) = (first, per_interval) {
            let intervals =
                (parsed.candle.open_time - first).num_seconds() as f64 / interval as f64;
            tokio::time::sleep_until(started + per_interval.mul_f64(intervals)).await;
        }
        let feed = MarketFeedId::of(&parsed.candle).text();
        let one = MarketFeedCommand::RecordCandle {
            feed: feed.clone(),
            candle: parsed.candle.clone(),
        };
        match execute_with_retry(&cqrs[i], &feed, one, metadata, MAX_RETRIES).await {
            Ok(_) => {}
            Err(AggregateError::UserError(e)) => {
                rejected[i].push(format!("{}:{}: {e}", names[i], parsed.line))
            }
            Err(e) => {
                return Err(IngestError {
                    feed,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(files
        .iter()
        .zip(names)
        .zip(rejected)
        .zip(&committed)
        .map(|(((file, name), rejected), committed)| {
            report(file, name, committed.0.load(Ordering::Relaxed), rejected)
        })
        .collect())
}

fn report(file: &CandleFile, name: String, appended: usize, rejected: Vec<String>) -> IngestReport {
    IngestReport {
        file: name,
        symbol: file.symbol.to_string(),
        rows_read: file.rows_read,
        appended,
        already_present: file.candles.len() - appended - rejected.len(),
        duplicates_dropped: file.duplicates.len(),
        gaps: file.gaps.len(),
        missing_intervals: file.gaps.iter().map(|g| u64::from(g.missing)).sum(),
        bad_rows: file
            .bad_rows
            .iter()
            .map(|b| file.bad_row_message(b))
            .collect(),
        rejected,
    }
}

fn file_name(file: &CandleFile) -> String {
    file.path.file_name().map_or_else(
        || file.path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
