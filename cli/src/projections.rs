//! `jarvis projections run|rebuild|status`, the projector in `jarvis up`, and `jarvis bench projections`.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use clap::Subcommand;
use jarvis_projections::{projections, source, synth, HotModels, ProjectionError, Projector};
use jarvis_store::{Checkpoint, EventStore};
use serde_json::json;

use crate::config::Config;
use crate::stack::Endpoints;
use crate::Exit;

/// `jarvis projections ...`
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Run every projector until SIGINT/SIGTERM (`jarvis up` runs them too).
    Run {
        /// Events per step (one transaction each).
        #[arg(long, default_value_t = 2_000)]
        batch: i64,
    },
    /// Rebuild projections from the start of the store into fresh tables and swap them in atomically,
    /// while readers and a running projector go on.
    Rebuild {
        /// The projections (default: all): backtests, conversations, llm, orders, sentiment, trading.
        names: Vec<String>,
        /// Events read per page.
        #[arg(long, default_value_t = 10_000)]
        batch: i64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Checkpoint and lag of every projection.
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn unknown(e: ProjectionError) -> anyhow::Error {
    match e {
        ProjectionError::UnknownProjection(_) => Exit {
            code: 2,
            message: e.to_string(),
        }
        .into(),
        e => e.into(),
    }
}

/// Runs `jarvis projections ...`.
///
/// # Errors
/// [`Exit`] with code 2 for an unknown projection; store failures.
pub async fn run(config: &Config, data_dir: &Path, cmd: ProjectionsCommand) -> anyhow::Result<()> {
    let store = Endpoints::resolve(config, data_dir).store(config).await?;
    store.migrate().await.context("migrating the store")?;
    let pool = store.pool().clone();
    match cmd {
        ProjectionsCommand::Run { batch } => {
            let projector = Projector::open(pool, projections(&[], &HotModels::default())?)
                .await?
                .with_batch(batch);
            projector.run(crate::shutdown_signal()).await;
        }
        ProjectionsCommand::Rebuild { names, batch, json } => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let fresh = projections(&names, &HotModels::default()).map_err(unknown)?;
            let rebuilt = jarvis_projections::rebuild(&pool, fresh, batch.max(1)).await?;
            if json {
                println!("{}", serde_json::to_string(&rebuilt)?);
            } else {
                println!(
                    "rebuilt {}: {} events in {:.2} s ({:.0} events/s), checkpoint at position {}",
                    rebuilt.projections.join(", "),
                    rebuilt.events,
                    rebuilt.seconds,
                    rebuilt.events_per_sec,
                    rebuilt.checkpoint.position
                );
            }
        }
        ProjectionsCommand::Status { json } => {
            let status =
                jarvis_projections::projector::status(&pool, jarvis_projections::NAMES).await?;
            if json {
                println!("{}", json!({ "projections": status }));
            } else {
                for s in status {
                    println!(
                        "{:<14} position {:>10}  head {:>10}  lag {:>8} events",
                        s.name, s.position, s.head_position, s.lag_events
                    );
                }
            }
        }
    }
    Ok(())
}

/// `jarvis bench projections`: a synthetic history of `events` events in a scratch store; the raw read of
/// those events (every column as text, pages of `batch`) beside a rebuild of every projection from them.
///
/// # Errors
/// When the scratch store fails.
pub async fn bench(
    store: &EventStore,
    events: usize,
    batch: i64,
) -> anyhow::Result<serde_json::Value> {
    let pool = store.pool();
    let history = synth::history(events);
    synth::insert(pool, &history).await?;
    sqlx::query("VACUUM ANALYZE events").execute(pool).await?;
    let stored = store.count().await?;
    // The raw read, twice (the first warms the cache; the second is reported).
    let mut baseline_seconds = 0.0;
    for _ in 0..2 {
        let started = Instant::now();
        let mut from = Checkpoint::default();
        let mut read = 0;
        loop {
            let (n, last) = source::read_raw_after(pool, from, batch).await?;
            let Some(last) = last else { break };
            read += n;
            from = last;
        }
        baseline_seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            read as i64 == stored,
            "raw read saw {read} of {stored} events"
        );
    }
    let rebuilt =
        jarvis_projections::rebuild(pool, projections(&[], &HotModels::default())?, batch).await?;
    anyhow::ensure!(
        rebuilt.events as i64 == stored,
        "rebuild read {} of {stored} events",
        rebuilt.events
    );
    let baseline = stored as f64 / baseline_seconds.max(1e-9);
    Ok(json!({
        "benchmark": "projections",
        "events": stored,
        "batch": batch,
        "projections": rebuilt.projections,
        "seconds": rebuilt.seconds,
        "events_per_sec": rebuilt.events_per_sec.round(),
        "baseline": "SELECT of the same events in the same pages, every column as text, nothing decoded",
        "baseline_seconds": baseline_seconds,
        "baseline_events_per_sec": baseline.round(),
        "ratio": (rebuilt.events_per_sec / baseline * 1000.0).round() / 1000.0,
        "target_events_per_sec": 100_000,
        "phases_seconds": rebuilt.phases,
    }))
}
