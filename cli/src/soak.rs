//! `jarvis bench soak`: the relay and the trading pipeline under sustained load, in this process, against a
//! scratch database and a private nats-server. First the capacity is measured (a burst of candles at full
//! speed, candles/s until the pipeline is idle again); then candles are appended one at a time at
//! `--rate` (default 80% of that capacity) for `--duration`, while the process's resident memory (`VmRSS` of
//! `/proc/self/status`) is sampled every second. At the end: every stored event is in `JARVIS_EVENTS` exactly
//! once, every candle was handled, no dead letter, one proposal per candle at most.

use std::time::{Duration, Instant};

use clap::Args;
use jarvis_agents::relay::{run_relay, RelaySettings};
use jarvis_bus::server::NatsProcess;
use jarvis_bus::{ensure_streams, StreamSettings, EVENTS_STREAM};
use jarvis_domain::market::{MarketFeed, MarketFeedCommand, MarketFeedId};
use jarvis_domain::EventMetadata;
use jarvis_store::{execute_with_retry, EventStore};
use serde_json::json;

use crate::bench::{print_report, rate_of, swinging, tempfile_dir, wait_trading_idle, ScratchDb};
use crate::stack::Endpoints;

/// `jarvis bench soak` arguments.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// How long the sustained load lasts (e.g. `5m`, `30s`).
    #[arg(long, default_value = "5m", value_parser = crate::commands::parse_duration)]
    pub duration: Duration,
    /// Candles per second (default: 80% of the capacity measured first).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Candles of the capacity burst.
    #[arg(long, default_value_t = 600)]
    pub burst: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// This process's resident memory in MiB (`VmRSS` of `/proc/self/status`); 0 where there is none.
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
}

/// Runs the soak and prints its report.
///
/// # Errors
/// When the servers cannot be started or reached, or the pipeline stalls.
pub async fn run(endpoints: &Endpoints, args: SoakArgs) -> anyhow::Result<()> {
    let scratch = ScratchDb::create(&endpoints.database_url).await?;
    let result = async {
        let store = EventStore::connect(&scratch.url, 8).await?;
        store.migrate().await?;
        soak(&store, &args).await
    }
    .await;
    scratch.drop_now().await;
    print_report(&result?, args.json);
    Ok(())
}

async fn soak(store: &EventStore, args: &SoakArgs) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile_dir()?;
    let nats = NatsProcess::start(&dir, None)?;
    let (_client, js) = jarvis_bus::connect(&nats.url(), "jarvis-bench-soak").await?;
    ensure_streams(&js, &StreamSettings::default()).await?;
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
    let cqrs = store.cqrs::<MarketFeed>(());
    let metadata = EventMetadata::root("jarvis-bench-soak");
    let append = |i: usize| {
        let c = swinging(i);
        let feed = MarketFeedId::of(&c).to_string();
        let cqrs = &cqrs;
        let metadata = &metadata;
        async move {
            execute_with_retry(
                cqrs,
                &feed,
                MarketFeedCommand::RecordCandle {
                    feed: feed.clone(),
                    candle: c,
                },
                metadata,
                3,
            )
            .await
        }
    };

    // Capacity: a burst appended at full speed, until the pipeline is idle again.
    let started = Instant::now();
    for i in 0..args.burst {
        append(i).await?;
    }
    wait_trading_idle(&js, args.burst).await?;
    let capacity = rate_of(args.burst, started.elapsed()).max(1.0);
    let rate = args.rate.unwrap_or(capacity * 0.8).max(0.1);

    // Sustained load at `rate`, memory sampled every second.
    let rss_start = rss_mib();
    let mut samples = vec![rss_start];
    let period = Duration::from_secs_f64(1.0 / rate);
    let began = tokio::time::Instant::now();
    let mut next_sample = began + Duration::from_secs(1);
    let mut appended = 0usize;
    while began.elapsed() < args.duration {
        tokio::time::sleep_until(began + period * appended as u32).await;
        append(args.burst + appended).await?;
        appended += 1;
        if tokio::time::Instant::now() >= next_sample {
            samples.push(rss_mib());
            next_sample += Duration::from_secs(1);
        }
    }
    let load_secs = began.elapsed().as_secs_f64();
    let total = args.burst + appended;
    wait_trading_idle(&js, total).await?;
    let rss_end = rss_mib();
    samples.push(rss_end);

    // Nothing lost, nothing twice.
    let stored = store.count().await? as u64;
    let stream_messages = wait_stream(&js, stored).await?;
    let dlq = js
        .get_stream(jarvis_bus::DLQ_STREAM)
        .await?
        .info()
        .await?
        .state
        .messages;
    let (proposals, causes): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT metadata->>'causation_id') FROM events WHERE event_type = 'TradeProposed'",
    )
    .fetch_one(store.pool())
    .await?;
    let candles_stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'CandleClosed'")
            .fetch_one(store.pool())
            .await?;
    let _ = stop.send(true);
    let _ = relay.await;
    let _ = trading.await;
    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
    let rss_max = samples.iter().copied().fold(0.0, f64::max);
    // Coarse samples for the report: at most 30.
    let step = samples.len().div_ceil(30).max(1);
    let coarse: Vec<f64> = samples.iter().step_by(step).copied().collect();
    Ok(json!({
        "benchmark": "soak",
        "duration_secs": (load_secs * 10.0).round() / 10.0,
        "candles": total,
        "candles_per_sec": rate_of(appended, Duration::from_secs_f64(load_secs)),
        "target_candles_per_sec": (rate * 10.0).round() / 10.0,
        "baseline_capacity_candles_per_sec": capacity,
        "ratio": ((rate_of(appended, Duration::from_secs_f64(load_secs)) / capacity) * 1000.0).round() / 1000.0,
        "events": stored,
        "stream_messages": stream_messages,
        "lost_events": stored.saturating_sub(stream_messages),
        "duplicate_events": stream_messages.saturating_sub(stored),
        "unhandled_candles": (candles_stored as u64).saturating_sub(total as u64),
        "duplicate_proposals": proposals - causes,
        "dead_letters": dlq,
        "trades": proposals,
        "rss_mib_start": rss_start,
        "rss_mib_end": rss_end,
        "rss_mib_max": rss_max,
        "rss_growth_mib": ((rss_end - rss_start) * 10.0).round() / 10.0,
        "rss_mib_samples": coarse,
    }))
}

/// Waits (up to a minute) until `JARVIS_EVENTS` holds `n` messages; returns how many it holds.
async fn wait_stream(js: &async_nats::jetstream::Context, n: u64) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let have = js
            .get_stream(EVENTS_STREAM)
            .await?
            .info()
            .await?
            .state
            .messages;
        if have >= n || Instant::now() > deadline {
            return Ok(have);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
