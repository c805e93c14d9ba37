//! A backtest's input: candle files read by the same rules as `jarvis ingest` (duplicate rule, gaps
//! reported and never filled, bad rows refused unless skipped), merged by time across symbols.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use jarvis_agents::market::candle_file::{read_candle_file, CandleFileError};
use jarvis_domain::backtest::DataSummary;
use jarvis_domain::sentiment::SentimentScore;
use jarvis_domain::{Candle, Symbol};

/// Rows listed in an error before "and N more".
const SHOWN: usize = 10;

/// Why the input cannot be backtested. Each names the file, line or symbol.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read at all.
    #[error(transparent)]
    File(#[from] CandleFileError),
    /// The file has bad rows and `--skip-bad` was not given.
    #[error("{file}: {count} bad rows, nothing replayed (pass --skip-bad to replay without them):\n{rows}")]
    BadRows {
        /// The file.
        file: String,
        /// How many.
        count: usize,
        /// The first of them, `file:line: reason`.
        rows: String,
    },
    /// The file holds no candle.
    #[error("{}: no candles (empty file, or every row bad)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A symbol has no candle in the requested range.
    #[error(
        "{symbol} ({file}): no candles between {start} and {end}; the file spans {first} .. {last}"
    )]
    NoDataInRange {
        /// The pair.
        symbol: Symbol,
        /// Its file.
        file: String,
        /// Range asked.
        start: String,
        /// Range asked.
        end: String,
        /// What the file has.
        first: DateTime<Utc>,
        /// What the file has.
        last: DateTime<Utc>,
    },
    /// No input at all.
    #[error("no input: pass --data FILE (repeatable) or --from-store")]
    NoInput,
    /// `--start` is not before `--end`.
    #[error("--start {start} is not before --end {end}")]
    EmptyRange {
        /// Start asked.
        start: DateTime<Utc>,
        /// End asked.
        end: DateTime<Utc>,
    },
}

/// Candles of every input, merged by time, with what was read from each input.
#[derive(Debug, Clone, Default)]
pub struct Data {
    /// Every candle, ordered by close time, then symbol (the order a live feed of several symbols closes
    /// them in).
    pub candles: Vec<Candle>,
    /// Per input.
    pub summaries: Vec<DataSummary>,
    /// Sentiment scores to replay (recorded ones, from the store), ordered by their event time: each is
    /// recorded before the first candle closing at or after it, as the sentiment agent would have.
    pub sentiment: Vec<SentimentScore>,
}

impl Data {
    /// The longest candle interval of the inputs, in seconds.
    pub fn longest_interval(&self) -> i64 {
        self.candles
            .iter()
            .map(|c| (c.close_time - c.open_time).num_seconds() + 1)
            .max()
            .unwrap_or(3600)
    }

    /// Merges candles from several sources by close time, then symbol. A symbol's candle at an open time
    /// already taken (the same symbol in two files) is dropped and counted as a duplicate of the first.
    pub fn merge(mut inputs: Vec<(DataSummary, Vec<Candle>)>) -> Self {
        let mut seen: BTreeMap<(Symbol, DateTime<Utc>), ()> = BTreeMap::new();
        let mut candles = Vec::new();
        let mut summaries = Vec::new();
        for (summary, input) in inputs.iter_mut() {
            let mut kept = 0;
            for c in input.drain(..) {
                if seen.insert((c.symbol.clone(), c.open_time), ()).is_some() {
                    summary.duplicates_dropped += 1;
                    continue;
                }
                kept += 1;
                candles.push(c);
            }
            summary.candles = kept;
            summaries.push(summary.clone());
        }
        candles.sort_by(|a, b| {
            (a.close_time, a.symbol.as_str()).cmp(&(b.close_time, b.symbol.as_str()))
        });
        Self {
            candles,
            summaries,
            sentiment: Vec::new(),
        }
    }
}

/// The time range to replay: candles whose open time is in `[start, end)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    /// Inclusive.
    pub start: Option<DateTime<Utc>>,
    /// Exclusive.
    pub end: Option<DateTime<Utc>>,
}

impl Range {
    /// Whether `t` is in it.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start.is_none_or(|s| t >= s) && self.end.is_none_or(|e| t < e)
    }

    fn check(&self) -> Result<(), DataError> {
        match (self.start, self.end) {
            (Some(start), Some(end)) if start >= end => Err(DataError::EmptyRange { start, end }),
            _ => Ok(()),
        }
    }

    fn show(t: Option<DateTime<Utc>>) -> String {
        t.map_or_else(|| "the beginning".to_string(), |t| t.to_rfc3339())
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Reads candle files, keeps the candles in `range`, and merges them by time.
///
/// # Errors
/// [`DataError`]: unreadable file, bad rows without `skip_bad`, an empty file, a symbol with nothing in
/// the range.
pub fn read_files(paths: &[PathBuf], range: Range, skip_bad: bool) -> Result<Data, DataError> {
    if paths.is_empty() {
        return Err(DataError::NoInput);
    }
    range.check()?;
    let mut inputs = Vec::new();
    for path in paths {
        let file = read_candle_file(path, None)?;
        if !file.bad_rows.is_empty() && !skip_bad {
            let mut rows: Vec<String> = file
                .bad_rows
                .iter()
                .take(SHOWN)
                .map(|b| format!("  {}", file.bad_row_message(b)))
                .collect();
            if file.bad_rows.len() > SHOWN {
                rows.push(format!("  ... and {} more", file.bad_rows.len() - SHOWN));
            }
            return Err(DataError::BadRows {
                file: file_name(path),
                count: file.bad_rows.len(),
                rows: rows.join("\n"),
            });
        }
        let (Some(first), Some(last)) = (file.candles.first(), file.candles.last()) else {
            return Err(DataError::Empty { path: path.clone() });
        };
        let (first, last) = (first.candle.open_time, last.candle.open_time);
        let candles: Vec<Candle> = file
            .candles
            .into_iter()
            .map(|p| p.candle)
            .filter(|c| range.contains(c.open_time))
            .collect();
        if candles.is_empty() {
            return Err(DataError::NoDataInRange {
                symbol: file.symbol,
                file: file_name(path),
                start: Range::show(range.start),
                end: Range::show(range.end),
                first,
                last,
            });
        }
        let in_range = |t: DateTime<Utc>| range.contains(t);
        let gaps: Vec<_> = file.gaps.iter().filter(|g| in_range(g.after)).collect();
        let summary = DataSummary {
            source: file_name(path),
            symbol: file.symbol.to_string(),
            candles: candles.len() as u64,
            duplicates_dropped: file.duplicates.len() as u64,
            bad_rows_skipped: file.bad_rows.len() as u64,
            gaps: gaps.len() as u64,
            missing_candles: gaps.iter().map(|g| u64::from(g.missing)).sum(),
            first: candles.first().map(|c| c.open_time),
            last: candles.last().map(|c| c.open_time),
        };
        inputs.push((summary, candles));
    }
    Ok(Data::merge(inputs))
}
