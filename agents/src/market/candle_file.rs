//! Reads candle CSV files as real downloads deliver them, quirks included.
//!
//! The format is detected from the header:
//! - **Binance** (`unix,date,time,symbol,open,high,low,close,Volume <BASE>,Volume <QUOTE>,tradecount`),
//!   newest row first. Two export formats are glued together in one file. Newer rows have an integer
//!   `tradecount` and a `unix` column in lossy scientific notation (`1.63875E+12`), so their time is
//!   `date` (`dd-mm-yy`) plus `time` (`HH:MM:SS`, 24-hour, UTC). Older rows have `tradecount` `NULL`, exact
//!   integer `unix` seconds and a 12-hour `time` without AM/PM; their time is the `unix` seconds (the
//!   date/time columns are only cross-checked, and disagreements are logged, not fatal: in the real files
//!   91 rows of 2017-09-22..26 are labelled in UTC-4, and one BTC row reads `20-08-15, 09:00`). Volume is the
//!   base-asset column (9th); the symbol is the `symbol` column unless the caller overrides it.
//! - **Yahoo** (`Date,Open,High,Low,Close,Adj Close,Volume`), oldest first, one candle per ISO date at
//!   00:00 UTC. There is no symbol column: the symbol is the caller's, else read from a file name such as
//!   `yahoo_sol_usd_1d.csv` or `SOL-USD.csv`. `Adj Close` is ignored; `Volume` is taken as is, although
//!   Yahoo quotes crypto volume in the quote currency (USD), not in the base asset.
//!
//! Binance files are read as hourly candles, Yahoo files as daily ones.
//!
//! Rows that fail to parse or break [`Candle::validate`] are collected in [`CandleFile::bad_rows`]; the
//! caller decides whether that is fatal. Prices are parsed as exact decimals, never through `f64`.
//!
//! **Duplicate rule**: when two rows have the same open time, the row from the newer export format
//! (integer `tradecount`, not `NULL`) is kept; between rows of the same format, the first in file order is
//! kept. Every dropped row is reported in [`CandleFile::duplicates`] with both line numbers.
//!
//! Candles are then sorted oldest first; nothing is invented. Consecutive candles more than one interval
//! apart are reported as [`Gap`]s, never filled.

use std::collections::hash_map::{Entry, HashMap};
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Timelike, Utc};
use csv::StringRecord;
use jarvis_domain::{Candle, Symbol};
use rust_decimal::Decimal;

/// The layout of a candle file, detected from its header row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandleFormat {
    /// Binance hourly export (CryptoDataDownload style), newest row first, two export formats mixed.
    Binance,
    /// Yahoo Finance history download, oldest row first, no symbol column.
    Yahoo,
}

impl CandleFormat {
    fn detect(header: &StringRecord) -> Option<Self> {
        let names: Vec<String> = header
            .iter()
            .map(|f| f.trim().to_ascii_lowercase())
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        match names.as_slice() {
            ["unix", "date", "time", "symbol", "open", "high", "low", "close", base, quote, "tradecount"]
                if base.starts_with("volume ") && quote.starts_with("volume ") =>
            {
                Some(Self::Binance)
            }
            ["date", "open", "high", "low", "close", "adj close", "volume"] => Some(Self::Yahoo),
            _ => None,
        }
    }
}

/// The span of one candle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

impl Interval {
    /// The length of one candle.
    pub fn duration(&self) -> Duration {
        match self {
            Self::Hour => Duration::hours(1),
            Self::Day => Duration::days(1),
        }
    }
}

/// A valid candle and the file line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCandle {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    /// The candle.
    pub candle: Candle,
}

/// A row dropped by the duplicate rule (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateDropped {
    /// The open time both rows claim.
    pub open_time: DateTime<Utc>,
    /// Line of the row that was kept.
    pub kept_line: u64,
    /// Line of the row that was dropped.
    pub dropped_line: u64,
}

/// Missing candles between two present ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// Open time of the last candle before the hole.
    pub after: DateTime<Utc>,
    /// How many intervals are absent after `after`.
    pub missing: u32,
}

/// A data row that failed to parse or validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// 1-based line number in the file.
    pub line: u64,
    /// What is wrong, naming the field and the value, e.g. `field close: "abc" is not a decimal`.
    pub reason: String,
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Everything read from one candle file.
#[derive(Debug, Clone)]
pub struct CandleFile {
    /// The file read.
    pub path: PathBuf,
    /// Its detected format.
    pub format: CandleFormat,
    /// Its candle interval.
    pub interval: Interval,
    /// The symbol of every candle.
    pub symbol: Symbol,
    /// Data records read (the header excluded).
    pub rows_read: usize,
    /// Valid, de-duplicated candles, oldest first.
    pub candles: Vec<ParsedCandle>,
    /// Rows the duplicate rule dropped.
    pub duplicates: Vec<DuplicateDropped>,
    /// Holes in the series: reported, never filled.
    pub gaps: Vec<Gap>,
    /// Rows that failed to parse or validate.
    pub bad_rows: Vec<BadRow>,
}

impl CandleFile {
    /// A bad row as a user-facing message: `binance_btcusdt_1h.csv:1234: field close: "abc" is not a decimal`.
    pub fn bad_row_message(&self, bad: &BadRow) -> String {
        format!("{}:{}: {}", file_name(&self.path), bad.line, bad.reason)
    }
}

/// Why a candle file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum CandleFileError {
    /// The file could not be opened.
    #[error("{}: cannot open: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The header is neither the Binance nor the Yahoo layout.
    #[error(
        "{}: unknown candle file header {header:?}; expected Binance \
         (unix,date,time,symbol,open,high,low,close,Volume <BASE>,Volume <QUOTE>,tradecount) \
         or Yahoo (Date,Open,High,Low,Close,Adj Close,Volume)",
        path.display()
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// The header row as found.
        header: String,
    },
    /// No symbol was given and none could be found in the file or its name.
    #[error(
        "{}: cannot tell the symbol (no usable symbol column, and the file name does not name one \
         like yahoo_sol_usd_1d.csv); pass --symbol BASE/QUOTE",
        path.display()
    )]
    NoSymbol {
        /// The file.
        path: PathBuf,
    },
    /// The CSV itself is broken (bad UTF-8, read error).
    #[error("{}:{line}: unreadable CSV: {source}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The line where reading failed.
        line: u64,
        /// The underlying error.
        source: csv::Error,
    },
}

/// A parsed row before de-duplication.
struct Row {
    line: u64,
    candle: Candle,
    newer_export: bool,
}

/// Reads a candle file: detects its format, parses every row, applies the duplicate rule, sorts oldest
/// first and reports gaps. `symbol` overrides the file's own symbol.
///
/// Duplicate rule: of two rows with the same open time, the one from the newer export format (integer
/// `tradecount`, not `NULL`) is kept; between rows of the same format, the first in file order. Every
/// dropped row is listed in [`CandleFile::duplicates`].
///
/// # Errors
/// [`CandleFileError`] when the file cannot be opened or read as CSV, its header is unknown, or no symbol
/// can be determined. Bad rows are not errors: they are returned in [`CandleFile::bad_rows`].
pub fn read_candle_file(
    path: &Path,
    symbol: Option<&Symbol>,
) -> Result<CandleFile, CandleFileError> {
    let file = File::open(path).map_err(|source| CandleFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(BufReader::new(file));
    let csv_error = |source: csv::Error, line: u64| CandleFileError::Csv {
        path: path.to_path_buf(),
        line: source.position().map_or(line, |p| p.line()),
        source,
    };
    let header = reader.headers().map_err(|e| csv_error(e, 1))?.clone();
    let format = CandleFormat::detect(&header).ok_or_else(|| CandleFileError::UnknownFormat {
        path: path.to_path_buf(),
        header: header.iter().collect::<Vec<_>>().join(","),
    })?;
    let mut records = Vec::new();
    for result in reader.records() {
        let last = records.last().map_or(1, |(line, _)| *line);
        let record = result.map_err(|e| csv_error(e, last + 1))?;
        records.push((record.position().map_or(last + 1, |p| p.line()), record));
    }

    let column_symbol = match format {
        CandleFormat::Binance => records
            .iter()
            .find_map(|(_, r)| Symbol::new_checked(r.get(3)?).ok()),
        CandleFormat::Yahoo => None,
    };
    let symbol = symbol
        .cloned()
        .or_else(|| column_symbol.clone())
        .or_else(|| symbol_from_name(path))
        .ok_or_else(|| CandleFileError::NoSymbol {
            path: path.to_path_buf(),
        })?;
    let interval = match format {
        CandleFormat::Binance => Interval::Hour,
        CandleFormat::Yahoo => Interval::Day,
    };

    let mut rows = Vec::with_capacity(records.len());
    let mut bad_rows = Vec::new();
    let mut clock_mismatches = Vec::new();
    for (line, record) in &records {
        let parsed = match format {
            CandleFormat::Binance => parse_binance(
                record,
                &header,
                &symbol,
                column_symbol.as_ref(),
                &mut clock_mismatches,
                *line,
            ),
            CandleFormat::Yahoo => parse_yahoo(record, &header, &symbol),
        };
        let validated = parsed.and_then(|(candle, newer)| {
            candle.validate().map_err(|e| e.to_string())?;
            Ok((candle, newer))
        });
        match validated {
            Ok((candle, newer_export)) => rows.push(Row {
                line: *line,
                candle,
                newer_export,
            }),
            Err(reason) => bad_rows.push(BadRow {
                line: *line,
                reason,
            }),
        }
    }
    if let Some(first_line) = clock_mismatches.first() {
        tracing::warn!(
            file = %path.display(),
            rows = clock_mismatches.len(),
            first_line,
            "old-format rows whose date/time columns disagree with their unix seconds; used the unix seconds"
        );
    }

    let (mut kept, duplicates) = deduplicate(rows);
    kept.sort_by_key(|row| row.candle.open_time);
    let candles: Vec<ParsedCandle> = kept
        .into_iter()
        .map(|row| ParsedCandle {
            line: row.line,
            candle: row.candle,
        })
        .collect();
    let gaps = find_gaps(&candles, interval);
    Ok(CandleFile {
        path: path.to_path_buf(),
        format,
        interval,
        symbol,
        rows_read: records.len(),
        candles,
        duplicates,
        gaps,
        bad_rows,
    })
}

/// Applies the duplicate rule (see [`read_candle_file`]); keeps the surviving rows in first-seen order.
fn deduplicate(rows: Vec<Row>) -> (Vec<Row>, Vec<DuplicateDropped>) {
    let mut kept: Vec<Row> = Vec::with_capacity(rows.len());
    let mut index: HashMap<DateTime<Utc>, usize> = HashMap::with_capacity(rows.len());
    let mut duplicates = Vec::new();
    for row in rows {
        let open_time = row.candle.open_time;
        match index.entry(open_time) {
            Entry::Vacant(slot) => {
                slot.insert(kept.len());
                kept.push(row);
            }
            Entry::Occupied(slot) => {
                let old = &mut kept[*slot.get()];
                let (kept_line, dropped_line) = if row.newer_export && !old.newer_export {
                    (row.line, std::mem::replace(old, row).line)
                } else {
                    (old.line, row.line)
                };
                duplicates.push(DuplicateDropped {
                    open_time,
                    kept_line,
                    dropped_line,
                });
            }
        }
    }
    (kept, duplicates)
}

fn find_gaps(candles: &[ParsedCandle], interval: Interval) -> Vec<Gap> {
    let step = interval.duration().num_seconds();
    candles
        .windows(2)
        .filter_map(|pair| {
            let diff = (pair[1].candle.open_time - pair[0].candle.open_time).num_seconds();
            (diff > step).then(|| Gap {
                after: pair[0].candle.open_time,
                missing: u32::try_from((diff - 1) / step).unwrap_or(u32::MAX),
            })
        })
        .collect()
}

fn parse_binance(
    rec: &StringRecord,
    header: &StringRecord,
    symbol: &Symbol,
    column_symbol: Option<&Symbol>,
    clock_mismatches: &mut Vec<u64>,
    line: u64,
) -> Result<(Candle, bool), String> {
    check_width(rec, header)?;
    let row_symbol =
        Symbol::new_checked(field(rec, 3)).map_err(|e| format!("field symbol: {e}"))?;
    if let Some(expected) = column_symbol.filter(|s| **s != row_symbol) {
        return Err(format!(
            "field symbol: {:?} differs from the file's {expected}",
            field(rec, 3)
        ));
    }
    let (unix, date, time, tradecount) =
        (field(rec, 0), field(rec, 1), field(rec, 2), field(rec, 10));
    let newer_export = !tradecount.eq_ignore_ascii_case("NULL");
    let open_time = if newer_export {
        tradecount
            .parse::<u64>()
            .map_err(|_| format!("field tradecount: {tradecount:?} is not an integer or NULL"))?;
        let day = NaiveDate::parse_from_str(date, "%d-%m-%y")
            .map_err(|_| format!("field date: {date:?} is not dd-mm-yy"))?;
        day.and_time(
            parse_time(time).ok_or_else(|| format!("field time: {time:?} is not HH:MM:SS"))?,
        )
        .and_utc()
    } else {
        let seconds = unix
            .parse::<i64>()
            .map_err(|_| format!("field unix: {unix:?} is not integer seconds"))?;
        let at = DateTime::from_timestamp(seconds, 0)
            .ok_or_else(|| format!("field unix: {unix:?} is out of range"))?;
        let label_day = NaiveDate::parse_from_str(date, "%d-%m-%y").ok();
        let label_time = parse_time(time);
        // 12-hour clock without AM/PM: only the hour modulo 12 can be compared.
        let agrees = label_day == Some(at.date_naive())
            && label_time
                .is_some_and(|t| t.hour() % 12 == at.hour() % 12 && t.minute() == at.minute());
        if !agrees {
            clock_mismatches.push(line);
        }
        at
    };
    let candle = ohlcv(
        rec,
        header,
        [4, 5, 6, 7, 8],
        symbol,
        open_time,
        Interval::Hour,
    )?;
    Ok((candle, newer_export))
}

fn parse_yahoo(
    rec: &StringRecord,
    header: &StringRecord,
    symbol: &Symbol,
) -> Result<(Candle, bool), String> {
    check_width(rec, header)?;
    let date = field(rec, 0);
    let day = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| format!("field Date: {date:?} is not YYYY-MM-DD"))?;
    let open_time = day.and_time(NaiveTime::MIN).and_utc();
    Ok((
        ohlcv(
            rec,
            header,
            [1, 2, 3, 4, 6],
            symbol,
            open_time,
            Interval::Day,
        )?,
        false,
    ))
}

/// Builds a candle from the open, high, low, close and volume columns at `columns`.
fn ohlcv(
    rec: &StringRecord,
    header: &StringRecord,
    [open, high, low, close, volume]: [usize; 5],
    symbol: &Symbol,
    open_time: DateTime<Utc>,
    interval: Interval,
) -> Result<Candle, String> {
    Ok(Candle {
        symbol: symbol.clone(),
        open_time,
        close_time: open_time + interval.duration(),
        open: decimal(rec, header, open)?,
        high: decimal(rec, header, high)?,
        low: decimal(rec, header, low)?,
        close: decimal(rec, header, close)?,
        volume: decimal(rec, header, volume)?,
    })
}

fn check_width(rec: &StringRecord, header: &StringRecord) -> Result<(), String> {
    if rec.len() == header.len() {
        Ok(())
    } else {
        Err(format!(
            "expected {} fields, found {}",
            header.len(),
            rec.len()
        ))
    }
}

fn field(rec: &StringRecord, index: usize) -> &str {
    rec.get(index).unwrap_or("").trim()
}

fn parse_time(text: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(text, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M"))
        .ok()
}

/// An exact decimal; scientific notation (`1.5E+2`) is accepted, never rounded through `f64`.
fn decimal(rec: &StringRecord, header: &StringRecord, index: usize) -> Result<Decimal, String> {
    let text = field(rec, index);
    Decimal::from_str_exact(text)
        .or_else(|_| Decimal::from_scientific(text))
        .map_err(|_| {
            format!(
                "field {}: {text:?} is not a decimal",
                header.get(index).unwrap_or("?").trim()
            )
        })
}

/// `yahoo_sol_usd_1d.csv` → `SOL/USD`; `SOL-USD.csv` → `SOL/USD`.
fn symbol_from_name(path: &Path) -> Option<Symbol> {
    let stem = path.file_stem()?.to_str()?.to_ascii_lowercase();
    let mut parts: Vec<&str> = stem.split(['_', '-']).filter(|p| !p.is_empty()).collect();
    if parts.first() == Some(&"yahoo") || parts.first() == Some(&"binance") {
        parts.remove(0);
    }
    if parts.len() == 3 && ["1h", "1d"].contains(&parts[2]) {
        parts.pop();
    }
    match parts.as_slice() {
        [base, quote] => Symbol::new_checked(&format!("{base}/{quote}")).ok(),
        _ => None,
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BINANCE: &str =
        "unix,date,time,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount\n";
    const YAHOO: &str = "Date,Open,High,Low,Close,Adj Close,Volume\n";

    fn real(name: &str) -> CandleFile {
        let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../data")).join(name);
        read_candle_file(&path, None).unwrap()
    }

    /// Writes `body` to a unique temp file named `name`, reads it, removes it.
    fn inline(
        name: &str,
        body: &str,
        symbol: Option<&Symbol>,
    ) -> Result<CandleFile, CandleFileError> {
        let dir =
            std::env::temp_dir().join(format!("jarvis-candle-file-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), body).unwrap();
        let result = read_candle_file(&dir.join(name), symbol);
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    /// rows read, candles, duplicates, gaps, missing intervals, bad rows.
    fn counts(f: &CandleFile) -> [usize; 6] {
        let missing = f.gaps.iter().map(|g| g.missing as usize).sum();
        [
            f.rows_read,
            f.candles.len(),
            f.duplicates.len(),
            f.gaps.len(),
            missing,
            f.bad_rows.len(),
        ]
    }

    /// `line time open/high/low/close vVOLUME`.
    fn show(c: &ParsedCandle) -> String {
        let k = &c.candle;
        let time = k.open_time.format("%Y-%m-%d %H:%M");
        format!(
            "{} {time} {}/{}/{}/{} v{}",
            c.line, k.open, k.high, k.low, k.close, k.volume
        )
    }

    fn at<'a>(f: &'a CandleFile, time: &str) -> &'a ParsedCandle {
        let time: DateTime<Utc> = time.parse().unwrap();
        f.candles
            .iter()
            .find(|c| c.candle.open_time == time)
            .unwrap()
    }

    /// (open time, kept line) of the duplicate dropped at `dropped_line`.
    fn dropped(f: &CandleFile, dropped_line: u64) -> (String, u64) {
        let d = f.duplicates.iter().find(|d| d.dropped_line == dropped_line);
        d.map(|d| (d.open_time.to_string(), d.kept_line)).unwrap()
    }

    fn is_sorted(f: &CandleFile) -> bool {
        f.candles
            .windows(2)
            .all(|w| w[0].candle.open_time < w[1].candle.open_time)
    }

    #[test]
    fn sol_binance_file() {
        let f = real("binance_solusdt_1h.csv");
        assert_eq!(
            (f.format, f.interval, f.symbol.as_str()),
            (CandleFormat::Binance, Interval::Hour, "SOL/USDT")
        );
        assert_eq!(counts(&f), [5_363, 5_363, 0, 2, 6, 0]);
        let gaps: Vec<String> = f
            .gaps
            .iter()
            .map(|g| format!("{} +{}", g.after, g.missing))
            .collect();
        assert_eq!(
            gaps,
            ["2021-08-13 01:00:00 UTC +4", "2021-09-29 06:00:00 UTC +2"]
        );
        assert_eq!(
            show(&f.candles[0]),
            "5364 2021-04-26 08:00 47.8724/48.4592/47.165/47.4782 v600205"
        );
        assert_eq!(
            show(&f.candles[5_362]),
            "2 2021-12-06 00:00 196.49/197.08/191.83/192.33 v21138.82"
        );
        assert!(is_sorted(&f));
    }

    /// ETH and BTC: two exports glued, overlapping on 2,649 hours, newer row first in each pair.
    fn glued(name: &str, symbol: &str) -> CandleFile {
        let f = real(name);
        assert_eq!(f.symbol.as_str(), symbol);
        assert_eq!(counts(&f), [40_352, 37_703, 2_649, 10, 22, 0]);
        assert!(
            f.duplicates
                .iter()
                .all(|d| d.kept_line + 1 == d.dropped_line),
            "{:?}",
            f.duplicates[0]
        );
        assert!(is_sorted(&f));
        f
    }

    #[test]
    fn eth_binance_file() {
        let f = glued("binance_ethusdt_1h.csv", "ETH/USDT");
        // The first hour trades from 652 down to 298: real data, kept.
        assert_eq!(
            show(&f.candles[0]),
            "40353 2017-08-17 04:00 652.74/652.74/298/300.79 v122.52"
        );
        assert_eq!(
            dropped(&f, 9_136),
            ("2020-11-20 00:00:00 UTC".into(), 9_135)
        );
    }

    #[test]
    fn btc_binance_file() {
        let f = glued("binance_btcusdt_1h.csv", "BTC/USDT");
        assert_eq!(
            show(&f.candles[0]),
            "40353 2017-08-17 04:00 16199.91/16199.91/4261.32/4308.83 v44.51"
        );
        // Line 13774 is an old row labelled `20-08-15, 09:00` (garbled); its unix seconds say
        // 2020-08-15 09:00, and the newer export's row for that hour (line 13773) is kept.
        assert_eq!(
            dropped(&f, 13_774),
            ("2020-08-15 09:00:00 UTC".into(), 13_773)
        );
        assert_eq!(
            show(at(&f, "2020-08-15T09:00:00Z")),
            "13773 2020-08-15 09:00 11865.05/11915.85/11850/11896.07 v2228.634308"
        );
    }

    #[test]
    fn old_format_twelve_hour_clock_follows_unix_seconds() {
        // Lines 37073 and 37061 are both labelled `01-01-18,12:00:00`: unix 1514764800 is midnight, the other noon.
        let f = real("binance_ethusdt_1h.csv");
        let midnight = at(&f, "2018-01-01T00:00:00Z");
        assert_eq!(
            (midnight.line, midnight.candle.open_time.timestamp()),
            (37_073, 1_514_764_800)
        );
        assert_eq!(
            show(midnight),
            "37073 2018-01-01 00:00 733.98/734.52/720.03/727.62 v2064.62"
        );
        assert_eq!(
            show(at(&f, "2018-01-01T12:00:00Z")),
            "37061 2018-01-01 12:00 741.01/748.8/737.74/745 v2216.5"
        );
    }

    #[test]
    fn yahoo_file() {
        let f = real("yahoo_sol_usd_1d.csv");
        assert_eq!(
            (f.format, f.interval, f.symbol.as_str()),
            (CandleFormat::Yahoo, Interval::Day, "SOL/USD")
        );
        assert_eq!(counts(&f), [787, 787, 0, 0, 0, 0]);
        assert_eq!(
            show(&f.candles[0]),
            "2 2020-04-10 00:00 0.832005/1.313487/0.694187/0.951054 v87364276"
        );
        assert_eq!(
            show(&f.candles[786]),
            "788 2022-06-05 00:00 38.905087/39.839432/38.035351/39.195419 v1001293632"
        );
        assert!(is_sorted(&f));
    }

    #[test]
    fn unknown_header_names_file_and_header() {
        let err = inline("prices.csv", "time,price\n1,2\n", None).unwrap_err();
        assert!(matches!(err, CandleFileError::UnknownFormat { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("prices.csv: unknown candle file header \"time,price\""),
            "{msg}"
        );
    }

    #[test]
    fn bad_decimal_names_line_and_field() {
        let body = format!(
            "{BINANCE}1.6E+12,06-12-21,01:00:00,BTC/USDT,10,12,9,11,1.5E+2,1650,7\n\
             1.6E+12,06-12-21,00:00:00,BTC/USDT,10,12,9,abc,1,10,7\n"
        );
        let f = inline("binance_btcusdt_1h.csv", &body, None).unwrap();
        assert_eq!(counts(&f), [2, 1, 0, 0, 0, 1]);
        assert_eq!(show(&f.candles[0]), "2 2021-12-06 01:00 10/12/9/11 v150");
        let msg = f.bad_row_message(&f.bad_rows[0]);
        assert_eq!(
            msg,
            "binance_btcusdt_1h.csv:3: field close: \"abc\" is not a decimal"
        );
    }

    #[test]
    fn low_above_high_is_a_bad_row() {
        let body = format!(
            "{BINANCE}1502946000,17-08-17,05:00:00,BTC/USDT,10,12,13,11,1,10,NULL\n\
             1502942400,17-08-17,04:00:00,BTC/USDT,10,12,9,11,1,10,NULL\n"
        );
        let f = inline("low_high.csv", &body, None).unwrap();
        assert_eq!(counts(&f), [2, 1, 0, 0, 0, 1]);
        assert_eq!(f.bad_rows[0].line, 2);
        assert!(
            f.bad_rows[0].reason.contains("low 13 is above high 12"),
            "{}",
            f.bad_rows[0]
        );
    }

    #[test]
    fn symbol_override_wins() {
        let sym = Symbol::new_checked("XBT/EUR").unwrap();
        let body = format!("{BINANCE}1502942400,17-08-17,04:00:00,BTC/USDT,10,12,9,11,1,10,NULL\n");
        let f = inline("binance_override.csv", &body, Some(&sym)).unwrap();
        assert_eq!((&f.symbol, &f.candles[0].candle.symbol), (&sym, &sym));
        let f = inline(
            "yahoo_sol_usd_1d.csv",
            &format!("{YAHOO}2020-04-10,1,2,1,2,2,5\n"),
            Some(&sym),
        )
        .unwrap();
        assert_eq!((&f.symbol, &f.candles[0].candle.symbol), (&sym, &sym));
    }

    #[test]
    fn yahoo_symbol_from_file_name_or_error() {
        let body = format!("{YAHOO}\"2020-04-10\",\"1.5\",2,1,2,2,5\n");
        assert_eq!(
            inline("SOL-USD.csv", &body, None).unwrap().symbol.as_str(),
            "SOL/USD"
        );
        let err = inline("history.csv", &body, None).unwrap_err();
        assert!(matches!(err, CandleFileError::NoSymbol { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("history.csv") && msg.contains("pass --symbol"),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_rule_and_gaps() {
        // 03:00: an old row first, then two newer-export rows: the first newer one wins over both.
        // 05:00 and 06:00 are missing.
        let body = format!(
            "{BINANCE}1502938800,17-08-17,03:00:00,BTC/USDT,10,12,9,11,1,10,NULL\n\
             1.5E+12,17-08-17,03:00:00,BTC/USDT,10,13,9,11,1,10,5\n\
             1.5E+12,17-08-17,03:00:00,BTC/USDT,10,14,9,11,1,10,6\n\
             1.5E+12,17-08-17,07:00:00,BTC/USDT,10,12,9,11,1,10,6\n\
             1502942400,17-08-17,04:00:00,BTC/USDT,10,12,9,11,1,10,NULL\n"
        );
        let f = inline("dups.csv", &body, None).unwrap();
        let dropped: Vec<(u64, u64)> = f
            .duplicates
            .iter()
            .map(|d| (d.kept_line, d.dropped_line))
            .collect();
        assert_eq!(dropped, [(3, 2), (3, 4)]);
        let lines: Vec<u64> = f.candles.iter().map(|c| c.line).collect();
        assert_eq!(lines, [3, 6, 5]);
        assert_eq!(f.candles[0].candle.high, Decimal::from(13));
        assert_eq!(
            f.gaps,
            [Gap {
                after: f.candles[1].candle.open_time,
                missing: 2
            }]
        );
    }
}
