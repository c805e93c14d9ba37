//! `jarvis backtest`: the trading pipeline of `jarvis up` replayed in memory over candle files or over
//! candles recorded in the store, and `--sweep` grids of it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use jarvis_agents::llm::{Fallback, RecordedOracle};
use jarvis_backtest::sweep::{self, Grid, Metric, SweepParam};
use jarvis_backtest::{read_files, Backtest, Data, Range, Sinks};
use jarvis_domain::backtest::{BacktestCommand, BacktestReport, BacktestRun, DataSummary};
use jarvis_domain::market::MarketFeedEvent;
use jarvis_domain::sentiment::SentimentEvent;
use jarvis_domain::{Candle, EventMetadata};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use crate::config::Config;
use crate::stack::Endpoints;
use crate::Exit;

/// `jarvis backtest` options.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// A candle file (Binance hourly or Yahoo daily export); repeat for several symbols, merged by time.
    #[arg(long = "data", value_name = "FILE")]
    pub data: Vec<PathBuf>,
    /// Replay the candles recorded in the event store instead of files.
    #[arg(long, conflicts_with = "data")]
    pub from_store: bool,
    /// First candle open time to replay (RFC 3339 or YYYY-MM-DD, UTC), inclusive.
    #[arg(long, value_parser = parse_time)]
    pub start: Option<DateTime<Utc>>,
    /// Replay candles opening before this time (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long, value_parser = parse_time)]
    pub end: Option<DateTime<Utc>>,
    /// Starting capital (overrides portfolio.initial_cash).
    #[arg(long)]
    pub capital: Option<Decimal>,
    /// Fee in basis points (overrides paper.fee_bps).
    #[arg(long)]
    pub fee_bps: Option<Decimal>,
    /// Slippage in basis points (overrides paper.slippage_bps).
    #[arg(long)]
    pub slippage_bps: Option<Decimal>,
    /// Seed of the run: the same data, configuration and seed give the same report, byte for byte.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replay the good rows of files with unparseable rows (default: refuse, exit 2).
    #[arg(long)]
    pub skip_bad: bool,
    /// With `treasury.llm_review`: what an LLM call with no recorded answer gets (`approve` or `veto`).
    /// Default: none, and such a call stops the run naming its prompt hash. Replays never call a live model.
    #[arg(long, value_enum)]
    pub llm_fallback: Option<LlmFallback>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write the equity curve here as CSV.
    #[arg(long, value_name = "FILE")]
    pub equity_csv: Option<PathBuf>,
    /// Write the trades (fills) here as CSV.
    #[arg(long, value_name = "FILE")]
    pub trades_csv: Option<PathBuf>,
    /// Sweep a configuration key over a range, e.g. `treasury.drift_band=0.02..0.1:0.02`; repeat for a grid.
    #[arg(long = "sweep", value_name = "KEY=FROM..TO:STEP")]
    pub sweep: Vec<SweepParam>,
    /// The metric a sweep ranks by: sharpe, total_return, sortino or max_drawdown.
    #[arg(long, default_value = "sharpe")]
    pub rank_by: Metric,
    /// How many of a sweep's best points to print.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Worker threads of a sweep (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Do not record the run in the event store.
    #[arg(long)]
    pub no_record: bool,
}

/// Parses `2021-06-01` or an RFC 3339 time.
///
/// # Errors
/// A message naming the value.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{text:?} is neither YYYY-MM-DD nor an RFC 3339 time"))
}

fn bad_input(e: impl std::fmt::Display) -> anyhow::Error {
    Exit {
        code: 2,
        message: e.to_string(),
    }
    .into()
}

/// The overrides of the command line, as configuration keys.
fn overrides(args: &BacktestArgs) -> Vec<(String, figment::value::Value)> {
    [
        ("portfolio.initial_cash", args.capital),
        ("paper.fee_bps", args.fee_bps),
        ("paper.slippage_bps", args.slippage_bps),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k.to_string(), number(v))))
    .collect()
}

/// A decimal as TOML would give it: an integer when whole, else a float.
fn number(v: Decimal) -> figment::value::Value {
    if v.fract().is_zero() {
        if let Some(i) = v.to_i64() {
            return figment::value::Value::from(i);
        }
    }
    figment::value::Value::from(v.to_f64().unwrap_or(f64::NAN))
}

/// The answer an unrecorded LLM review gets in a backtest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LlmFallback {
    /// The review approves.
    Approve,
    /// The review vetoes.
    Veto,
}

impl LlmFallback {
    fn fallback(self) -> Fallback {
        let decision = match self {
            Self::Approve => "approve",
            Self::Veto => "veto",
        };
        Fallback::Answer(format!(
            "{{\"decision\": \"{decision}\", \"reason\": \"backtest fallback: no recorded answer\"}}"
        ))
    }
}

/// `jarvis backtest`.
///
/// # Errors
/// [`Exit`] with code 2 for bad input (files, range, configuration); 1 when the run stops.
pub async fn run(
    config_path: Option<&Path>,
    config: &Config,
    data_dir: &Path,
    args: BacktestArgs,
) -> anyhow::Result<()> {
    let range = Range {
        start: args.start,
        end: args.end,
    };
    let fallback = args
        .llm_fallback
        .map_or(Fallback::Error, LlmFallback::fallback);
    let (data, llm) = if args.from_store {
        let endpoints = Endpoints::resolve(config, data_dir);
        let store = endpoints.store(config).await?;
        store.migrate().await.context("migrating the store")?;
        let llm = RecordedOracle::from_store(&store, fallback)
            .await
            .context("reading the recorded LLM answers")?;
        (candles_from_store(&store, range).await?, llm)
    } else {
        let data = read_files(&args.data, range, args.skip_bad).map_err(bad_input)?;
        (data, RecordedOracle::new([], fallback))
    };
    let llm = Some(Arc::new(llm));
    let base = overrides(&args);
    let configure = |point: &[(String, Decimal)]| -> anyhow::Result<Backtest> {
        let mut all = base.clone();
        all.extend(point.iter().map(|(k, v)| (k.clone(), number(*v))));
        let config = Config::load_with(config_path, &all)?;
        Ok(Backtest {
            settings: config.trading_settings(),
            seed: args.seed,
            llm: llm.clone(),
        })
    };
    if !args.sweep.is_empty() {
        return run_sweep(&data, &args, |p| configure(p).map_err(|e| format!("{e:#}")));
    }
    let backtest = configure(&[]).map_err(|e| bad_input(format!("{e:#}")))?;
    let sinks = Sinks {
        equity: csv_sink(args.equity_csv.as_deref())?,
        trades: csv_sink(args.trades_csv.as_deref())?,
    };
    let started = Instant::now();
    let outcome = backtest.run(&data, sinks).await?;
    let elapsed = started.elapsed();
    let report = outcome.report;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    eprintln!(
        "{} events in {:.3} s ({:.0} events/s)",
        report.events,
        elapsed.as_secs_f64(),
        report.events as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    if !args.no_record {
        record(config, data_dir, &backtest, &args, report).await;
    }
    Ok(())
}

fn csv_sink(path: Option<&Path>) -> anyhow::Result<Option<Box<dyn std::io::Write + Send>>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let file = std::fs::File::create(path)
        .map_err(|e| bad_input(format!("{}: cannot create: {e}", path.display())))?;
    Ok(Some(Box::new(std::io::BufWriter::new(file))))
}

fn run_sweep(
    data: &Data,
    args: &BacktestArgs,
    configure: impl Fn(&[(String, Decimal)]) -> Result<Backtest, String> + Sync,
) -> anyhow::Result<()> {
    let grid = Grid::new(args.sweep.clone()).map_err(bad_input)?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let started = Instant::now();
    let outcome = sweep::run(data, grid, threads, args.top, args.rank_by, configure);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        println!(
            "{} points, {} completed, {} failed, ranked by {} ({threads} threads, {:.1} s)",
            outcome.points,
            outcome.completed,
            outcome.failed,
            outcome.metric,
            started.elapsed().as_secs_f64()
        );
        println!(
            "{:>4}  {:>10} {:>8} {:>8} {:>7}  parameters",
            "rank", "return", "sharpe", "max_dd", "trades"
        );
        for (rank, r) in outcome.top.iter().enumerate() {
            let params: Vec<String> = r
                .parameters
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!(
                "{:>4}  {:>9.2}% {:>8.3} {:>7.2}% {:>7}  {}",
                rank + 1,
                r.total_return * 100.0,
                r.sharpe,
                r.max_drawdown * 100.0,
                r.trades,
                params.join(" ")
            );
        }
        for f in &outcome.failures {
            println!("failed: point {f}");
        }
    }
    if outcome.completed == 0 && outcome.failed > 0 {
        return Err(bad_input(format!(
            "every point of the sweep failed; first: {}",
            outcome.failures.first().cloned().unwrap_or_default()
        )));
    }
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn print_report(r: &BacktestReport) {
    let mut out = std::io::stdout().lock();
    let time = |t: Option<DateTime<Utc>>| t.map_or_else(|| "-".into(), |t| t.to_rfc3339());
    let rows: Vec<(&str, String)> = vec![
        ("strategy", r.strategy.clone()),
        ("seed", r.seed.to_string()),
        ("period", format!("{} .. {}", time(r.start), time(r.end))),
        ("candles", r.candles.to_string()),
        (
            "sentiment",
            format!("{} recorded scores replayed", r.sentiment_scores),
        ),
        (
            "llm review",
            format!(
                "{} recorded answers replayed, {} fallbacks",
                r.llm_answers_replayed, r.llm_fallbacks
            ),
        ),
        ("events", r.events.to_string()),
        ("initial capital", r.initial_capital.to_string()),
        ("final equity", r.final_equity.round_dp(2).to_string()),
        ("total return", pct(r.total_return)),
        ("CAGR", pct(r.cagr)),
        ("Sharpe", format!("{:.3}", r.sharpe)),
        ("Sortino", format!("{:.3}", r.sortino)),
        (
            "max drawdown",
            format!(
                "{} ({} .. {})",
                pct(r.max_drawdown),
                time(r.max_drawdown_peak_at),
                time(r.max_drawdown_trough_at)
            ),
        ),
        ("win rate", pct(r.win_rate)),
        (
            "profit factor",
            r.profit_factor
                .map_or_else(|| "- (no losing sell)".into(), |p| format!("{p:.3}")),
        ),
        ("realized P&L", r.realized_pnl.round_dp(2).to_string()),
        ("trades (fills)", r.trades.to_string()),
        ("fees", r.fees.round_dp(2).to_string()),
        ("exposure time", pct(r.exposure_time)),
        ("buy and hold", pct(r.buy_and_hold_return)),
        (
            "orders",
            format!(
                "{} proposed, {} approved, {} rejected, {} submitted, {} failed",
                r.orders.proposed,
                r.orders.approved,
                r.orders.rejected,
                r.orders.submitted,
                r.orders.failed
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<16} {v}");
    }
    for (rule, n) in &r.rejections_by_rule {
        let _ = writeln!(out, "{:<16} {rule}: {n}", "rejected by");
    }
    for d in &r.data {
        let _ = writeln!(
            out,
            "data             {} {}: {} candles, {} duplicates dropped, {} bad rows skipped, {} gaps ({} candles missing)",
            d.source, d.symbol, d.candles, d.duplicates_dropped, d.bad_rows_skipped, d.gaps, d.missing_candles
        );
    }
}

/// The candles recorded in the store, in `range`, per symbol.
async fn candles_from_store(
    store: &jarvis_store::EventStore,
    range: Range,
) -> anyhow::Result<Data> {
    let rows: Vec<(serde_json::Value,)> = sqlx::query_as(
        "SELECT payload FROM events WHERE aggregate_type = 'MarketFeed' AND event_type = 'CandleClosed' ORDER BY position",
    )
    .fetch_all(store.pool())
    .await
    .context("reading candles from the store")?;
    let mut per_symbol: BTreeMap<String, Vec<Candle>> = BTreeMap::new();
    for (payload,) in rows {
        let MarketFeedEvent::CandleClosed(candle) = serde_json::from_value(payload)
            .context("a stored CandleClosed does not deserialize")?;
        if range.contains(candle.open_time) {
            per_symbol
                .entry(candle.symbol.to_string())
                .or_default()
                .push(candle);
        }
    }
    if per_symbol.is_empty() {
        return Err(bad_input(
            "the store holds no candles in that range (ingest some with `jarvis ingest candles`)",
        ));
    }
    // The sentiment the agent recorded in the same range: replayed at its event time.
    let scored: Vec<(serde_json::Value,)> = sqlx::query_as(
        "SELECT payload FROM events WHERE aggregate_type = 'TokenSentiment' AND event_type = 'SentimentScored' ORDER BY position",
    )
    .fetch_all(store.pool())
    .await
    .context("reading sentiment from the store")?;
    let mut sentiment = Vec::new();
    for (payload,) in scored {
        let SentimentEvent::SentimentScored(score) = serde_json::from_value(payload)
            .context("a stored SentimentScored does not deserialize")?;
        if range.contains(score.at) {
            sentiment.push(score);
        }
    }
    sentiment.sort_by_key(|s| s.at);
    let inputs = per_symbol
        .into_iter()
        .map(|(symbol, mut candles)| {
            candles.sort_by_key(|c| c.open_time);
            let summary = DataSummary {
                source: "store".into(),
                symbol,
                candles: candles.len() as u64,
                duplicates_dropped: 0,
                bad_rows_skipped: 0,
                gaps: 0,
                missing_candles: 0,
                first: candles.first().map(|c| c.open_time),
                last: candles.last().map(|c| c.open_time),
            };
            (summary, candles)
        })
        .collect();
    let mut data = Data::merge(inputs);
    data.sentiment = sentiment;
    Ok(data)
}

/// Records the run as `BacktestCompleted`, so the dashboard lists it. The run id derives from the
/// inputs, so the same run recorded twice is one run. Not recording is a warning, not a failure: the
/// report is already printed.
async fn record(
    config: &Config,
    data_dir: &Path,
    backtest: &Backtest,
    args: &BacktestArgs,
    report: BacktestReport,
) {
    let parameters: BTreeMap<String, String> = [
        ("settings", format!("{:?}", backtest.settings)),
        ("seed", backtest.seed.to_string()),
        ("from_store", args.from_store.to_string()),
        (
            "data",
            args.data
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let identity = format!(
        "{parameters:?}{}",
        serde_json::to_string(&report.data).unwrap_or_default()
    );
    let run_id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, identity.as_bytes());
    let endpoints = Endpoints::resolve(config, data_dir);
    let recorded = async {
        let store = endpoints.store(config).await?;
        store.migrate().await.context("migrating the store")?;
        let cqrs = store.cqrs::<BacktestRun>(());
        let command = BacktestCommand::Complete {
            report: Box::new(report),
            parameters,
            at: Utc::now(),
        };
        jarvis_store::execute_with_retry(
            &cqrs,
            &run_id.to_string(),
            command,
            &EventMetadata::root("backtest"),
            3,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::Ok(())
    };
    match recorded.await {
        Ok(()) => eprintln!("recorded as backtest run {run_id}"),
        Err(e) => eprintln!(
            "warning: the run was not recorded in the store ({e:#}); pass --no-record to skip"
        ),
    }
}

/// The files `jarvis bench backtest` replays by default.
const BENCH_FILES: [&str; 3] = [
    "data/binance_btcusdt_1h.csv",
    "data/binance_ethusdt_1h.csv",
    "data/binance_solusdt_1h.csv",
];

/// `jarvis bench backtest`: the pipeline in memory, repeated over the data until `min_events`, beside a
/// raw loop over the same candles (two EMAs and a cross signal per candle, nothing stored).
///
/// # Errors
/// Unreadable files; a run that stops.
pub async fn bench(
    config: &Config,
    files: &[PathBuf],
    min_events: u64,
) -> anyhow::Result<serde_json::Value> {
    let files: Vec<PathBuf> = if files.is_empty() {
        BENCH_FILES.iter().map(PathBuf::from).collect()
    } else {
        files.to_vec()
    };
    let data = read_files(&files, Range::default(), false).map_err(bad_input)?;
    let backtest = Backtest {
        settings: config.trading_settings(),
        seed: 0,
        llm: None,
    };
    // Raw baseline: the cheapest event loop over the same candles.
    let started = Instant::now();
    let mut raw_events = 0u64;
    let mut crosses = 0u64;
    while raw_events < min_events {
        let mut emas: BTreeMap<&str, (f64, f64, bool)> = BTreeMap::new();
        for c in &data.candles {
            let close = c.close.to_f64().unwrap_or(0.0);
            let e = emas
                .entry(c.symbol.as_str())
                .or_insert((close, close, false));
            e.0 += (close - e.0) * 2.0 / 13.0;
            e.1 += (close - e.1) * 2.0 / 27.0;
            let above = e.0 > e.1;
            if above != e.2 {
                crosses += 1;
            }
            e.2 = above;
            raw_events += 1;
        }
    }
    let raw_secs = started.elapsed().as_secs_f64();
    std::hint::black_box(crosses);
    let started = Instant::now();
    let mut events = 0u64;
    let mut runs = 0u64;
    let mut trades = 0;
    while events < min_events {
        let outcome = backtest.run(&data, Sinks::default()).await?;
        events += outcome.report.events;
        trades = outcome.report.trades;
        runs += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let per_sec = events as f64 / secs;
    let baseline = raw_events as f64 / raw_secs;
    Ok(serde_json::json!({
        "bench": "backtest",
        "candles": data.candles.len(),
        "runs": runs,
        "events": events,
        "trades_per_run": trades,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "events_per_sec": per_sec.round(),
        "candles_per_sec": (data.candles.len() as f64 * runs as f64 / secs).round(),
        "baseline_events_per_sec": baseline.round(),
        "ratio": ((per_sec / baseline) * 10_000.0).round() / 10_000.0,
        "baseline": "raw loop over the same candles: two EMAs and a cross signal each, nothing stored",
    }))
}
