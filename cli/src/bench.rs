//! `jarvis bench`: our rate beside a raw baseline measured in the same run, on the same servers.
//!
//! Benchmarks never touch the operator's data: the store benchmark writes into a scratch database on the
//! configured Postgres server (dropped afterwards); the relay benchmark uses a scratch database too, and a
//! private nats-server in a temporary directory, so it never publishes into a live `JARVIS_EVENTS`.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use clap::Subcommand;
use hdrhistogram::Histogram;
use jarvis_agents::relay::{run_relay, RelaySettings};
use jarvis_agents::trading::{TradingPipeline, TradingSettings};
use jarvis_bus::envelope::headers_for;
use jarvis_bus::server::NatsProcess;
use jarvis_bus::{ensure_streams, StreamSettings, EVENTS_STREAM};
use jarvis_bus::{run_consumer, ConsumerSettings};
use jarvis_domain::market::{MarketFeed, MarketFeedCommand, MarketFeedId};
use jarvis_domain::{Candle, EventMetadata, Symbol};
use jarvis_store::{execute_with_retry, Checkpoint, EventStore};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

use crate::config::Config;
use crate::stack::Endpoints;

/// `jarvis bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Gateway: requests/s and p50/p99 of /api/v1/portfolio and /api/v1/trades over 64 keep-alive
    /// connections on loopback (read models in memory), beside plain axum serving the same bytes.
    Gateway {
        /// Concurrent connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Store append: batched and single commands vs raw `INSERT ... SELECT unnest(...)` and single-row inserts.
    Store {
        /// Events appended by batched commands (one command per day of 24 hourly candles).
        #[arg(long, default_value_t = 48_000)]
        events: usize,
        /// Single-candle commands (latency p50/p99 measured over these).
        #[arg(long, default_value_t = 3_000)]
        singles: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// End to end on the paper venue: candle appended → `OrderFilled` stored (p50/p99), and the candles/s
    /// the live pipeline sustains, beside the raw store-insert + JetStream publish + consume hop.
    E2e {
        /// Candles appended one at a time at `--rate` for the latency run (about one trade each).
        #[arg(long, default_value_t = 2_200)]
        candles: usize,
        /// Candles per second appended in the latency run: below what the pipeline sustains (see the
        /// throughput run), or the latency measures a queue.
        #[arg(long, default_value_t = 20)]
        rate: u32,
        /// Candles appended at full speed for the throughput run.
        #[arg(long, default_value_t = 1_200)]
        burst: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Backtest: events/s of the in-process pipeline (the default strategy) over candle files, repeated
    /// until at least `--events` events, beside a raw loop over the same candles (an EMA cross, no ledger).
    Backtest {
        /// Candle files (default: the BTC, ETH and SOL hourly files in ./data).
        #[arg(long = "data", value_name = "FILE")]
        data: Vec<std::path::PathBuf>,
        /// Keep replaying until at least this many events.
        #[arg(long, default_value_t = 5_000_000)]
        events: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Sentiment: texts/s of the offline scorer on one core, beside tokenising the same texts.
    Sentiment {
        /// Labelled CSV whose texts are scored.
        #[arg(long, default_value = "data/financial_tweets_sentiment_train.csv")]
        file: std::path::PathBuf,
        /// Passes over the file's texts.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Soak: sustained load (default 80% of the capacity measured first) for `--duration`, sampling the
    /// process's memory, then checking that nothing was lost or duplicated.
    Soak(crate::soak::SoakArgs),
    /// Projections: rebuild of every read model from a synthetic history in a scratch store, beside the raw
    /// `SELECT` of the same events.
    Projections {
        /// Events in the history.
        #[arg(long, default_value_t = 300_000)]
        events: usize,
        /// Events per page.
        #[arg(long, default_value_t = 10_000)]
        batch: i64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Relay: stored events → JetStream, vs raw async-nats windowed publishing of the same messages.
    Relay {
        /// Events relayed.
        #[arg(long, default_value_t = 50_000)]
        events: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a benchmark.
///
/// # Errors
/// When the servers are unreachable or the scratch database cannot be created.
pub async fn run(config: &Config, data_dir: &Path, cmd: BenchCommand) -> anyhow::Result<()> {
    if let BenchCommand::Backtest { data, events, json } = &cmd {
        let report = crate::backtest::bench(config, data, *events).await?;
        print_report(&report, *json);
        return Ok(());
    }
    if let BenchCommand::Gateway {
        connections,
        secs,
        json,
    } = &cmd
    {
        // No server needed: the gateway and the baseline run in this process on loopback.
        let report = crate::gateway::bench(*connections, *secs).await?;
        print_report(&report, *json);
        return Ok(());
    }
    if let BenchCommand::Sentiment { file, rounds, json } = &cmd {
        // No server needed: the offline scorer is pure CPU.
        let report = crate::sentiment::bench(file, (*rounds).max(1))?;
        print_report(&report, *json);
        return Ok(());
    }
    let endpoints = Endpoints::resolve(config, data_dir);
    if let BenchCommand::Soak(args) = cmd {
        return crate::soak::run(&endpoints, args).await;
    }
    let scratch = ScratchDb::create(&endpoints.database_url).await?;
    let result = async {
        let store = EventStore::connect(&scratch.url, 8).await?;
        store.migrate().await?;
        match cmd {
            BenchCommand::Store {
                events,
                singles,
                json,
            } => {
                let report = bench_store(&store, events, singles).await?;
                print_report(&report, json);
            }
            BenchCommand::E2e {
                candles,
                rate,
                burst,
                json,
            } => {
                let report = bench_e2e(&store, candles, rate, burst).await?;
                print_report(&report, json);
            }
            BenchCommand::Relay { events, json } => {
                let report = bench_relay(&store, events).await?;
                print_report(&report, json);
            }
            BenchCommand::Projections {
                events,
                batch,
                json,
            } => {
                let report = crate::projections::bench(&store, events, batch.max(1)).await?;
                print_report(&report, json);
            }
            // Handled above, without a database.
            BenchCommand::Sentiment { .. }
            | BenchCommand::Backtest { .. }
            | BenchCommand::Soak(_)
            | BenchCommand::Gateway { .. } => {}
        }
        anyhow::Ok(())
    }
    .await;
    scratch.drop_now().await;
    result
}

pub(crate) fn print_report(report: &Value, json: bool) {
    if json {
        println!("{report}");
        return;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(report).unwrap_or_default()
    );
}

/// A throwaway database beside the configured one.
pub(crate) struct ScratchDb {
    pub(crate) url: String,
    admin_url: String,
    name: String,
}

impl ScratchDb {
    pub(crate) async fn create(base_url: &str) -> anyhow::Result<Self> {
        let mut admin = url::Url::parse(base_url).context("parsing the database url")?;
        admin.set_path("/postgres");
        let name = format!("jarvis_bench_{}", Uuid::now_v7().simple());
        let mut conn = PgConnection::connect(admin.as_str())
            .await
            .context("connecting to Postgres for a scratch database")?;
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await?;
        let mut url = admin.clone();
        url.set_path(&format!("/{name}"));
        Ok(Self {
            url: url.to_string(),
            admin_url: admin.to_string(),
            name,
        })
    }

    pub(crate) async fn drop_now(self) {
        if let Ok(mut conn) = PgConnection::connect(&self.admin_url).await {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
                .await;
        }
    }
}

fn bench_symbol() -> Symbol {
    Symbol::new_checked("BENCH/USDT").expect("valid symbol")
}

/// The `i`th hourly candle from 2020-01-01.
fn candle(i: usize) -> Candle {
    let start: DateTime<Utc> = Utc
        .with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
        .single()
        .expect("date");
    let price = Decimal::new(10_000 + (i % 997) as i64, 2);
    Candle {
        symbol: bench_symbol(),
        open_time: start + chrono::Duration::hours(i as i64),
        close_time: start + chrono::Duration::hours(i as i64 + 1),
        open: price,
        high: price + Decimal::ONE,
        low: price - Decimal::ONE,
        close: price,
        volume: Decimal::new(12_345, 3),
    }
}

fn rate(events: usize, elapsed: Duration) -> f64 {
    (events as f64 / elapsed.as_secs_f64()).round()
}

fn ratio(ours: f64, baseline: f64) -> f64 {
    ((ours / baseline) * 1000.0).round() / 1000.0
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    (h.value_at_quantile(q) as f64 / 1000.0 * 100.0).round() / 100.0
}

/// The rows our repository writes for some candles (one aggregate per day), as arrays for `unnest`.
#[derive(Default)]
struct RawRows {
    aggregate_ids: Vec<String>,
    sequences: Vec<i64>,
    payloads: Vec<String>,
    metadata: Vec<String>,
    event_ids: Vec<Uuid>,
}

impl RawRows {
    fn of(candles: &[Candle], metadata: &str) -> Self {
        let mut rows = Self::default();
        for c in candles {
            rows.aggregate_ids.push(MarketFeedId::of(c).to_string());
            rows.sequences
                .push(i64::from(chrono::Timelike::hour(&c.open_time)) + 1);
            rows.payloads.push(json!({ "CandleClosed": c }).to_string());
            rows.metadata.push(metadata.to_string());
            rows.event_ids.push(Uuid::now_v7());
        }
        rows
    }

    async fn insert(&self, pool: &sqlx::PgPool, table: &str) -> anyhow::Result<()> {
        sqlx::query(&RAW_BATCH_INSERT.replace("bench_raw", table))
            .bind(&self.aggregate_ids)
            .bind(&self.sequences)
            .bind(&self.payloads)
            .bind(&self.metadata)
            .bind(&self.event_ids)
            .execute(pool)
            .await?;
        Ok(())
    }
}

const RAW_BATCH_INSERT: &str = "
INSERT INTO bench_raw (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, event_id)
SELECT 'MarketFeed', u.aggregate_id, u.sequence, 'CandleClosed', '1', u.payload::json, u.metadata::json, u.event_id
  FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::uuid[])
       AS u(aggregate_id, sequence, payload, metadata, event_id)";

async fn bench_store(store: &EventStore, events: usize, singles: usize) -> anyhow::Result<Value> {
    let pool = store.pool();
    // The baseline table has the events table's columns, defaults and indexes (not its NOTIFY trigger).
    sqlx::query("CREATE TABLE bench_raw (LIKE events INCLUDING ALL)")
        .execute(pool)
        .await?;
    let metadata = EventMetadata::root("jarvis-bench");
    let metadata_json = serde_json::to_string(&metadata.to_map())?;
    let days = events.div_ceil(24);
    let all: Vec<Candle> = (0..days * 24).map(candle).collect();

    // Raw batched insert: one autocommit statement per day of 24 rows.
    let started = Instant::now();
    for day in all.chunks(24) {
        RawRows::of(day, &metadata_json)
            .insert(pool, "bench_raw")
            .await?;
    }
    let raw_batched = rate(all.len(), started.elapsed());

    // Ours: one RecordCandles command per day, through cqrs-es (load, decide, commit).
    let cqrs = store.cqrs::<MarketFeed>(());
    let started = Instant::now();
    for day in all.chunks(24) {
        let feed = MarketFeedId::of(&day[0]).to_string();
        let command = MarketFeedCommand::RecordCandles {
            feed: feed.clone(),
            candles: day.to_vec(),
        };
        execute_with_retry(&cqrs, &feed, command, &metadata, 3).await?;
    }
    let ours_batched = rate(all.len(), started.elapsed());

    // Singles, on fresh days after the batched ones: one candle per command.
    let singles_candles: Vec<Candle> = (all.len()..all.len() + singles).map(candle).collect();
    sqlx::query("TRUNCATE bench_raw").execute(pool).await?;
    let mut raw_hist = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    for (i, c) in singles_candles.iter().enumerate() {
        let t = Instant::now();
        sqlx::query(
            "INSERT INTO bench_raw (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, event_id)
             VALUES ('MarketFeed', $1, $2, 'CandleClosed', '1', $3::text::json, $4::text::json, $5)",
        )
        .bind(MarketFeedId::of(c).to_string())
        .bind(i as i64 + 1)
        .bind(json!({ "CandleClosed": c }).to_string())
        .bind(&metadata_json)
        .bind(Uuid::now_v7())
        .execute(pool)
        .await?;
        raw_hist.record(t.elapsed().as_micros() as u64)?;
    }
    let raw_single = rate(singles, started.elapsed());
    let mut hist = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    for c in &singles_candles {
        let feed = MarketFeedId::of(c).to_string();
        let t = Instant::now();
        let command = MarketFeedCommand::RecordCandle {
            feed: feed.clone(),
            candle: c.clone(),
        };
        execute_with_retry(&cqrs, &feed, command, &metadata, 3).await?;
        hist.record(t.elapsed().as_micros() as u64)?;
    }
    let ours_single = rate(singles, started.elapsed());
    Ok(json!({
        "benchmark": "store",
        "batched": {
            "events": all.len(),
            "events_per_command": 24,
            "events_per_sec": ours_batched,
            "baseline": "raw INSERT ... SELECT unnest(...) of 24 rows per autocommit statement, same table shape",
            "baseline_events_per_sec": raw_batched,
            "ratio": ratio(ours_batched, raw_batched),
        },
        "single": {
            "events": singles,
            "events_per_sec": ours_single,
            "p50_ms": ms(&hist, 0.5),
            "p99_ms": ms(&hist, 0.99),
            "baseline": "raw single-row autocommit INSERT, same table shape",
            "baseline_events_per_sec": raw_single,
            "baseline_p50_ms": ms(&raw_hist, 0.5),
            "baseline_p99_ms": ms(&raw_hist, 0.99),
            "ratio": ratio(ours_single, raw_single),
        },
    }))
}

async fn bench_relay(store: &EventStore, events: usize) -> anyhow::Result<Value> {
    // Fill the store with `events` candles quickly (one day per aggregate, 24 per day).
    let metadata = serde_json::to_string(&EventMetadata::root("jarvis-bench").to_map())?;
    let all: Vec<Candle> = (0..events).map(candle).collect();
    for chunk in all.chunks(5_000) {
        RawRows::of(chunk, &metadata)
            .insert(store.pool(), "events")
            .await?;
    }
    let recorded = store
        .read_after(Checkpoint::default(), events as i64)
        .await?;
    anyhow::ensure!(
        recorded.len() == events,
        "expected {events} stored events, read {}",
        recorded.len()
    );

    let dir = tempfile_dir()?;
    let nats = NatsProcess::start(&dir, None)?;
    let (_client, js) = jarvis_bus::connect(&nats.url(), "jarvis-bench").await?;
    ensure_streams(&js, &StreamSettings::default()).await?;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "BENCH_RAW".into(),
        subjects: vec!["bench.raw.>".into()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating BENCH_RAW: {e}"))?;

    // Baseline: the same messages (headers, body, ids), prepared in memory, published with a window of
    // 256 acks in flight: what async-nats can do with no store to read.
    let window = RelaySettings::default().window;
    let prepared: Vec<(String, PublishMessage)> = recorded
        .iter()
        .map(|e| {
            let subject = e.subject().replacen("jarvis.evt", "bench.raw", 1);
            let body = Bytes::from(serde_json::to_vec(&e.payload).unwrap_or_default());
            (
                subject,
                PublishMessage::build()
                    .headers(headers_for(e))
                    .payload(body),
            )
        })
        .collect();
    let started = Instant::now();
    let mut inflight: VecDeque<PublishAckFuture> = VecDeque::new();
    for (subject, message) in prepared {
        inflight.push_back(js.send_publish(subject, message).await?);
        if inflight.len() >= window {
            if let Some(ack) = inflight.pop_front() {
                ack.await?;
            }
        }
    }
    while let Some(ack) = inflight.pop_front() {
        ack.await?;
    }
    let baseline = rate(events, started.elapsed());

    // Ours: the real relay, from the store to JARVIS_EVENTS, until the stream holds every event.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let relay = tokio::spawn(run_relay(
        store.clone(),
        js.clone(),
        RelaySettings::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut stream = js.get_stream(EVENTS_STREAM).await?;
    loop {
        if stream.info().await?.state.messages as usize >= events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ours = rate(events, started.elapsed());
    let _ = stop.send(());
    let _ = relay.await;
    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "benchmark": "relay",
        "events": events,
        "events_per_sec": ours,
        "baseline": "raw async-nats publishing of the same messages from memory, 256 acks in flight",
        "baseline_events_per_sec": baseline,
        "ratio": ratio(ours, baseline),
        "nats": "private nats-server on 127.0.0.1, file storage",
    }))
}

pub(crate) fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("jarvis-bench-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A candle of `BENCH/USDT` at hour `i` that swings ±3 % around 100, so that a rebalancer trades on each.
pub(crate) fn swinging(i: usize) -> Candle {
    let mut c = candle(i);
    let price = if i % 2 == 0 {
        Decimal::new(103, 0)
    } else {
        Decimal::new(97, 0)
    };
    c.open = price;
    c.close = price;
    c.high = price + Decimal::ONE;
    c.low = price - Decimal::ONE;
    c.volume = Decimal::from(1_000_000);
    c
}

async fn bench_e2e(
    store: &EventStore,
    candles: usize,
    rate: u32,
    burst: usize,
) -> anyhow::Result<Value> {
    let dir = tempfile_dir()?;
    let nats = NatsProcess::start(&dir, None)?;
    let (_client, js) = jarvis_bus::connect(&nats.url(), "jarvis-bench").await?;
    ensure_streams(&js, &StreamSettings::default()).await?;

    // Baseline: the hop every trade step rides on, with nothing of ours: a single-row insert, a JetStream
    // publish awaiting its ack, and the pull of that message by a durable consumer.
    let hop = raw_hop(store, &js, 500).await?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let relay = tokio::spawn(run_relay(
        store.clone(),
        js.clone(),
        RelaySettings::default(),
        until(stopped.clone()),
    ));
    let trading = crate::bench::spawn_pipeline(store, &js, until(stopped.clone()));

    // Latency: one candle at a time at `rate`.
    let cqrs = store.cqrs::<MarketFeed>(());
    let metadata = EventMetadata::root("jarvis-bench");
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let started = tokio::time::Instant::now();
    for i in 0..candles {
        tokio::time::sleep_until(started + period * i as u32).await;
        let c = swinging(i);
        let feed = MarketFeedId::of(&c).to_string();
        execute_with_retry(
            &cqrs,
            &feed,
            MarketFeedCommand::RecordCandle {
                feed: feed.clone(),
                candle: c,
            },
            &metadata,
            3,
        )
        .await?;
    }
    wait_trading_idle(&js, candles).await?;
    let latency = fill_latencies(store).await?;

    // Throughput: a burst at full speed, one day per command, timed until the pipeline is idle again.
    let started = Instant::now();
    let mut days: std::collections::BTreeMap<String, Vec<Candle>> =
        std::collections::BTreeMap::new();
    for c in (candles..candles + burst).map(swinging) {
        days.entry(MarketFeedId::of(&c).to_string())
            .or_default()
            .push(c);
    }
    for (feed, batch) in days {
        let command = MarketFeedCommand::RecordCandles {
            feed: feed.clone(),
            candles: batch,
        };
        execute_with_retry(&cqrs, &feed, command, &metadata, 3).await?;
    }
    wait_trading_idle(&js, candles + burst).await?;
    let sustained = rate_of(burst, started.elapsed());
    let _ = stop.send(true);
    let _ = relay.await;
    let _ = trading.await;
    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "benchmark": "e2e",
        "trades": latency.len(),
        "latency": "candle appended (recorded_at) → OrderFilled stored (recorded_at), for the fills each candle prices",
        "p50_ms": quantile(&latency, 0.5),
        "p99_ms": quantile(&latency, 0.99),
        "candles_per_sec": sustained,
        "baseline": "raw single-row INSERT + JetStream publish (acked) + pull by a durable consumer",
        "baseline_hop_p50_ms": quantile(&hop, 0.5),
        "baseline_hop_p99_ms": quantile(&hop, 0.99),
        "baseline_hops_per_sec": rate_of(hop.len(), Duration::from_secs_f64(hop.iter().sum::<f64>() / 1000.0)),
        "rate": rate,
    }))
}

pub(crate) fn rate_of(n: usize, elapsed: Duration) -> f64 {
    (n as f64 / elapsed.as_secs_f64()).round()
}

fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    (sorted[i] * 100.0).round() / 100.0
}

/// Milliseconds from each pricing candle's append to each fill it priced, from the store's own clock.
async fn fill_latencies(store: &EventStore) -> anyhow::Result<Vec<f64>> {
    let candles: std::collections::HashMap<String, DateTime<Utc>> =
        sqlx::query_as::<_, (String, DateTime<Utc>)>(
            "SELECT payload -> 'CandleClosed' ->> 'open_time', recorded_at FROM events
          WHERE aggregate_type = 'MarketFeed' AND event_type = 'CandleClosed'",
        )
        .fetch_all(store.pool())
        .await?
        .into_iter()
        .collect();
    let fills: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT payload -> 'OrderFilled' ->> 'filled_at', recorded_at FROM events WHERE event_type = 'OrderFilled'",
    )
    .fetch_all(store.pool())
    .await?;
    Ok(fills
        .into_iter()
        .filter_map(|(at, filled)| {
            let appended = candles.get(&at)?;
            Some((filled - *appended).num_microseconds()? as f64 / 1000.0)
        })
        .collect())
}

pub(crate) async fn wait_trading_idle(
    js: &async_nats::jetstream::Context,
    candles: usize,
) -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::pull::Config as PullConfig;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the trading pipeline did not finish in 15 minutes"
        );
        if let Ok(stream) = js.get_stream(EVENTS_STREAM).await {
            if let Ok(mut consumer) = stream.get_consumer::<PullConfig>("trading").await {
                if let Ok(info) = consumer.info().await {
                    if info.delivered.consumer_sequence as usize >= candles
                        && info.num_pending == 0
                        && info.num_ack_pending == 0
                    {
                        return Ok(());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Round trips of the raw hop, in milliseconds.
async fn raw_hop(
    store: &EventStore,
    js: &async_nats::jetstream::Context,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    use async_nats::jetstream::consumer::pull::Config as PullConfig;
    use futures::StreamExt;
    sqlx::query("CREATE TABLE bench_hop (LIKE events INCLUDING ALL)")
        .execute(store.pool())
        .await?;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "BENCH_HOP".into(),
        subjects: vec!["bench.hop".into()],
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating BENCH_HOP: {e}"))?;
    let stream = js.get_stream("BENCH_HOP").await?;
    let consumer = stream
        .create_consumer(PullConfig {
            durable_name: Some("hop".into()),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the hop consumer: {e}"))?;
    let mut messages = consumer.messages().await?;
    let metadata = serde_json::to_string(&EventMetadata::root("jarvis-bench").to_map())?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        sqlx::query(
            "INSERT INTO bench_hop (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, event_id)
             VALUES ('Hop', 'hop', $1, 'Hop', '1', '{}'::json, $2::text::json, $3)",
        )
        .bind(i as i64 + 1)
        .bind(&metadata)
        .bind(Uuid::now_v7())
        .execute(store.pool())
        .await?;
        js.publish("bench.hop", Bytes::from(json!({ "i": i }).to_string()))
            .await?
            .await?;
        let message = messages.next().await.context("the hop consumer ended")??;
        message
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

/// The trading pipeline as `jarvis up` runs it (one ordered consumer of closed candles) on `store`, with limits
/// wide enough that every swinging candle trades, until `stopped`: what `bench e2e` and `bench soak` load.
pub(crate) fn spawn_pipeline(
    store: &EventStore,
    js: &async_nats::jetstream::Context,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let mut settings = TradingSettings {
        initial_cash: Decimal::from(1_000_000),
        ..TradingSettings::default()
    };
    settings.strategy.drift_band = Decimal::new(1, 3);
    settings.strategy.max_order_notional = Decimal::from(5_000);
    settings.limits.max_notional_per_order = Decimal::from(10_000);
    settings.limits.max_position_per_token = Decimal::from(1_000_000);
    settings.limits.max_gross_exposure = Decimal::from(2_000_000);
    settings.limits.daily_loss_limit = Decimal::from(1_000_000);
    settings.limits.max_drawdown = Decimal::ONE;
    settings.limits.cooldown_per_token_secs = 0;
    let pipeline = TradingPipeline::new(store.clone(), settings);
    let js = js.clone();
    tokio::spawn(async move {
        let mut s = ConsumerSettings::new("trading", "jarvis.evt.market.CandleClosed.>");
        s.max_ack_pending = 1;
        let _ = run_consumer(&js, &s, &pipeline, stopped).await;
    })
}
