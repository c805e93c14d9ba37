//! The operator commands.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use clap::Subcommand;
use futures::StreamExt;
use jarvis_agents::market::candle_file::read_candle_file;
use jarvis_agents::market::ingest::{ingest_file, replay_files};
use jarvis_agents::relay::run_relay;
use jarvis_bus::{ensure_streams, Envelope, DLQ_STREAM, EVENTS_STREAM};
use jarvis_domain::{EventMetadata, Symbol};
use jarvis_store::EventStore;
use serde_json::json;

use crate::config::Config;
use crate::stack::{Endpoints, LocalStack};
use crate::{shutdown_signal, Exit};

/// `jarvis ingest ...`
#[derive(Debug, Subcommand)]
pub enum IngestCommand {
    /// Append candles from CSV files (Binance hourly or Yahoo daily exports) as `CandleClosed` events.
    Candles {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The symbol, e.g. SOL/USDT (default: the file's symbol column, or its name).
        #[arg(long)]
        symbol: Option<Symbol>,
        /// Ingest the good rows of a file that has unparseable rows (default: refuse the file, exit 2).
        #[arg(long)]
        skip_bad: bool,
        /// Days written at once. Above 1, days may land in the store out of time order.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Feed the candles as if live, one at a time: this much wall time per candle interval
        /// (e.g. `10ms` for one hour of market per 10 ms). Without it, candles are appended at full speed.
        #[arg(long, value_parser = parse_duration)]
        replay_speed: Option<std::time::Duration>,
        /// Merge the files by time and append one candle at a time, as a live feed of these symbols would
        /// deliver them (implied by --replay-speed). Without it, files are appended one after another in
        /// day batches: fast for loading history, but `jarvis up` then sees a later file's older candles
        /// as stale (its clock is the latest close it has seen) and does not trade them.
        #[arg(long)]
        interleave: bool,
        /// Print one JSON object per file.
        #[arg(long)]
        json: bool,
    },
}

/// Parses `250us`, `10ms`, `2s` or `1m`.
///
/// # Errors
/// A message naming the value and the accepted units.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit, e.g. 10ms"))?;
    let seconds = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{text:?}: unit must be us, ms, s or m")),
    };
    std::time::Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// `jarvis events ...`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print the causal chain of an event, oldest first: what caused it, back to its root (a candle, a
    /// message), with the evidence each decision cites.
    Trace {
        /// An event id (UUID) or a global position.
        event: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print events from JetStream, one per line, oldest first.
    Tail {
        /// Subject filter, e.g. `jarvis.evt.market.>`.
        #[arg(long, default_value = "jarvis.evt.>")]
        subject: String,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<usize>,
        /// Only events published from now on.
        #[arg(long)]
        new: bool,
        /// Keep waiting for new events at the end of the stream.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line, with the envelope attributes and the payload.
        #[arg(long)]
        json: bool,
    },
}

/// Connects to the store and the bus, and migrates both.
async fn connect_and_migrate(
    config: &Config,
    endpoints: &Endpoints,
    name: &str,
) -> anyhow::Result<(
    EventStore,
    async_nats::Client,
    async_nats::jetstream::Context,
)> {
    let store = endpoints.store(config).await?;
    store.migrate().await.context("migrating the store")?;
    let (client, js) = endpoints.bus(name).await?;
    ensure_streams(&js, &config.stream_settings()).await?;
    Ok((store, client, js))
}

/// `jarvis migrate`.
///
/// # Errors
/// When the store or the bus is unreachable or refuses.
pub async fn migrate(config: &Config, data_dir: &Path) -> anyhow::Result<()> {
    let endpoints = Endpoints::resolve(config, data_dir);
    connect_and_migrate(config, &endpoints, "jarvis-migrate").await?;
    println!(
        "migrated: store at {} and streams {EVENTS_STREAM}, {DLQ_STREAM} at {}",
        jarvis_store::redact_url(&endpoints.database_url),
        jarvis_bus::redact_url(&endpoints.nats_url)
    );
    Ok(())
}

/// `jarvis ingest candles`.
///
/// # Errors
/// [`Exit`] with code 2 when a file has bad rows (without `--skip-bad`), or refused candles; store errors.
pub async fn ingest(config: &Config, data_dir: &Path, cmd: IngestCommand) -> anyhow::Result<()> {
    let IngestCommand::Candles {
        files,
        symbol,
        skip_bad,
        concurrency,
        replay_speed,
        interleave,
        json,
    } = cmd;
    // Read every file first: a bad file stops the command before anything is written.
    let mut parsed = Vec::new();
    for path in &files {
        let file = read_candle_file(path, symbol.as_ref()).map_err(|e| Exit {
            code: 2,
            message: e.to_string(),
        })?;
        if !file.bad_rows.is_empty() && !skip_bad {
            let mut message = format!(
                "{}: {} unparseable row(s); nothing was written (use --skip-bad to ingest the rest):",
                path.display(),
                file.bad_rows.len()
            );
            for bad in file.bad_rows.iter().take(20) {
                message.push_str(&format!("\n  {}", file.bad_row_message(bad)));
            }
            if file.bad_rows.len() > 20 {
                message.push_str(&format!("\n  ... and {} more", file.bad_rows.len() - 20));
            }
            return Err(Exit { code: 2, message }.into());
        }
        parsed.push(file);
    }
    let endpoints = Endpoints::resolve(config, data_dir);
    let store = endpoints.store(config).await?;
    store.migrate().await.context("migrating the store")?;
    let metadata = EventMetadata::root("jarvis-ingest");
    let mut refused = 0;
    // Day batches, file after file; or merged by time, one candle at a time (paced or not), as a live
    // feed of those symbols would deliver them.
    let reports = if replay_speed.is_some() || interleave {
        replay_files(&store, &parsed, &metadata, replay_speed).await?
    } else {
        let mut reports = Vec::new();
        for file in &parsed {
            reports.push(ingest_file(&store, file, &metadata, concurrency).await?);
        }
        reports
    };
    for report in reports {
        refused += report.rejected.len();
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!(
                "{} ({}): read {}, appended {}, already present {}, duplicates dropped {}, gaps {} ({} missing), bad rows skipped {}, rejected {}",
                report.file,
                report.symbol,
                report.rows_read,
                report.appended,
                report.already_present,
                report.duplicates_dropped,
                report.gaps,
                report.missing_intervals,
                report.bad_rows.len(),
                report.rejected.len()
            );
            for line in report.bad_rows.iter().chain(&report.rejected) {
                println!("  {line}");
            }
        }
    }
    if refused > 0 {
        return Err(Exit {
            code: 2,
            message: format!("{refused} candle(s) refused by the store (listed above)"),
        }
        .into());
    }
    Ok(())
}

/// `jarvis relay`: the relay alone (with `jarvis-relay`'s status and heartbeat), until SIGINT/SIGTERM.
///
/// # Errors
/// When the store or the bus cannot be reached at start.
pub async fn relay(config: &Config, data_dir: &Path) -> anyhow::Result<()> {
    let endpoints = Endpoints::resolve(config, data_dir);
    let (store, client, js) = connect_and_migrate(config, &endpoints, "jarvis-relay").await?;
    let shutdown = futures::FutureExt::shared(shutdown_signal());
    let status = crate::agents::status_service_named(
        &client,
        "relay",
        "Jarvis outbox relay: store to JetStream",
        &[],
        shutdown.clone(),
    );
    run_relay(store, js, config.relay_settings(), shutdown).await;
    let _ = status.await;
    tracing::info!("relay stopped");
    Ok(())
}

/// `jarvis up`: private servers where none is configured, then the relay and every agent, until
/// SIGINT/SIGTERM.
///
/// # Errors
/// [`Exit`] with code 2 when `--live` is asked without everything live trading needs; when a server
/// cannot be started or reached.
pub async fn up(config: &Config, data_dir: &Path, live: bool) -> anyhow::Result<()> {
    // Live trading is checked before anything starts: a refusal leaves nothing running.
    let execution =
        crate::venue::execution(config, live).map_err(|message| Exit { code: 2, message })?;
    if config.treasury.llm_review && !config.llm.enabled() {
        return Err(Exit {
            code: 2,
            message: "treasury.llm_review = true needs an LLM: configure [llm.providers] and a \"trading\" route".into(),
        }
        .into());
    }
    let stack = LocalStack::start(config, data_dir)?;
    let endpoints = stack.endpoints.clone();
    let (store, client, js) = connect_and_migrate(config, &endpoints, "jarvis-up").await?;
    println!(
        "jarvis is up: store {} · bus {} · press Ctrl-C to stop",
        jarvis_store::redact_url(&endpoints.database_url),
        jarvis_bus::redact_url(&endpoints.nats_url)
    );
    run_agents(
        config,
        &store,
        &client,
        &js,
        &crate::agents::Agent::ALL,
        execution,
        true,
    )
    .await?;
    drop(stack);
    Ok(())
}

/// `jarvis agent <name>...`: only these agents, against the configured (or running `jarvis up`'s) store and
/// bus, until SIGINT/SIGTERM. Several processes may run the same agent: they share its consumers.
///
/// # Errors
/// [`Exit`] with code 2 for an agent that is not configured or `--live` without what it needs; when the
/// store or the bus cannot be reached.
pub async fn agent(
    config: &Config,
    data_dir: &Path,
    agents: &[crate::agents::Agent],
    live: bool,
) -> anyhow::Result<()> {
    let execution = if agents.contains(&crate::agents::Agent::Execution) {
        crate::venue::execution(config, live).map_err(|message| Exit { code: 2, message })?
    } else {
        None
    };
    let endpoints = Endpoints::resolve(config, data_dir);
    let names: Vec<&str> = agents.iter().map(|a| a.name()).collect();
    let (store, client, js) = connect_and_migrate(
        config,
        &endpoints,
        &format!("jarvis-agent-{}", names.join("-")),
    )
    .await?;
    println!(
        "jarvis agents {} running: store {} · bus {}",
        names.join(", "),
        jarvis_store::redact_url(&endpoints.database_url),
        jarvis_bus::redact_url(&endpoints.nats_url)
    );
    run_agents(config, &store, &client, &js, agents, execution, false).await
}

/// Runs the relay (when `with_relay`) and `agents` until SIGINT/SIGTERM, then stops them all.
async fn run_agents(
    config: &Config,
    store: &EventStore,
    client: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    agents: &[crate::agents::Agent],
    execution: Option<crate::venue::Execution>,
    with_relay: bool,
) -> anyhow::Result<()> {
    let pool = store.pool().clone();
    // One signal stops every component.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut tasks = Vec::new();
    if with_relay {
        // `jarvis up`: the read side too. Every projector, the heartbeat listener, and the gateway serving
        // their read models (a failure to bind is logged, and the agents run on without it).
        let (read_models, projection_tasks) =
            jarvis_projections::spawn(pool.clone(), Some((client.clone(), js.clone())), &until)
                .await
                .context("starting the projectors")?;
        tasks.extend(projection_tasks);
        match crate::gateway::spawn(config, store, read_models, client, js, until()).await {
            Ok(Some((_, gateway))) => tasks.push(gateway),
            Ok(None) => {}
            Err(e) => tracing::error!(cause = %format!("{e:#}"), "the gateway failed to start"),
        }
        tasks.push(tokio::spawn(run_relay(
            store.clone(),
            js.clone(),
            config.relay_settings(),
            until(),
        )));
        tasks.push(crate::agents::status_service_named(
            client,
            "relay",
            "Jarvis outbox relay: store to JetStream",
            &[],
            until(),
        ));
    }
    let wiring = crate::agents::Wiring {
        config,
        store,
        client,
        js,
        until,
    };
    let started = crate::agents::spawn(&wiring, agents, execution, !with_relay);
    match started {
        Ok(more) => tasks.extend(more),
        Err(e) => {
            let _ = stop.send(true);
            for task in tasks {
                let _ = task.await;
            }
            return Err(e);
        }
    }
    shutdown_signal().await;
    tracing::info!("stopping");
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    // Close our connections before a private Postgres shuts down under them.
    pool.close().await;
    Ok(())
}

/// `jarvis events tail` and `jarvis events trace`.
///
/// # Errors
/// When the bus or the store is unreachable, the stream is missing, or the event is unknown.
pub async fn events(config: &Config, data_dir: &Path, cmd: EventsCommand) -> anyhow::Result<()> {
    let (subject, limit, new, follow, json) = match cmd {
        EventsCommand::Trace { event, json } => return trace(config, data_dir, &event, json).await,
        EventsCommand::Tail {
            subject,
            limit,
            new,
            follow,
            json,
        } => (subject, limit, new, follow, json),
    };
    let endpoints = Endpoints::resolve(config, data_dir);
    let (_, js) = endpoints.bus("jarvis-events-tail").await?;
    let stream = js
        .get_stream(EVENTS_STREAM)
        .await
        .with_context(|| format!("opening stream {EVENTS_STREAM} (run `jarvis migrate`)"))?;
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: if new {
                DeliverPolicy::New
            } else {
                DeliverPolicy::All
            },
            ..Default::default()
        })
        .await
        .context("creating an ordered consumer")?;
    let follow = follow || new;
    if !follow && consumer.info().await?.num_pending == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await.context("reading the stream")?;
    let mut printed = 0;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut out = std::io::stdout().lock();
    while limit.is_none_or(|l| printed < l) {
        let next = tokio::select! {
            next = messages.next() => next,
            _ = &mut shutdown => break,
        };
        let Some(message) = next else { break };
        let message = message.context("reading the stream")?;
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        let line = match Envelope::from_parts(
            message.subject.as_str(),
            message.headers.as_ref(),
            message.payload.clone(),
        ) {
            Ok(env) if json => env.to_json().to_string(),
            Ok(env) => format!(
                "{:>8} {} {} {}",
                env.position,
                env.ce_type,
                env.subject,
                String::from_utf8_lossy(&env.data)
            ),
            Err(e) if json => json!({
                "nats_subject": message.subject.as_str(),
                "error": e.to_string(),
                "data": String::from_utf8_lossy(&message.payload),
            })
            .to_string(),
            Err(e) => format!("{} (not a Jarvis event: {e})", message.subject),
        };
        // A closed pipe (`jarvis events tail | head`) ends the command quietly.
        if writeln!(out, "{line}").is_err() {
            break;
        }
        printed += 1;
        if pending == 0 && !follow {
            break;
        }
    }
    Ok(())
}

/// `jarvis status`.
///
/// # Errors
/// When the store or the bus is unreachable.
pub async fn status(config: &Config, data_dir: &Path, json_out: bool) -> anyhow::Result<()> {
    let endpoints = Endpoints::resolve(config, data_dir);
    let store = endpoints.store(config).await?;
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('events') IS NOT NULL")
        .fetch_one(store.pool())
        .await?;
    anyhow::ensure!(
        migrated,
        "the store at {} has no events table yet: run `jarvis migrate`",
        jarvis_store::redact_url(&endpoints.database_url)
    );
    let head = store.head_position().await?;
    let count = store.count().await?;
    let checkpoint = store
        .load_checkpoint(&config.relay_settings().checkpoint)
        .await?;
    let lag = store.count_after(checkpoint).await?;
    let (client, js) = endpoints.bus("jarvis-status").await?;
    // Who is alive: every running instance answers the health ping with its heartbeat.
    // Judged as of the ping: collecting replies takes a second, longer than 3 intervals of a short
    // `health.interval_ms`, and an instance that answered is alive.
    let now = chrono::Utc::now();
    let beats = jarvis_bus::health::ping_all(&client, std::time::Duration::from_secs(1)).await?;
    let agents: Vec<serde_json::Value> = beats
        .iter()
        .map(|b| {
            let mut v = serde_json::to_value(b).unwrap_or_default();
            v["alive"] = json!(b.is_alive(now));
            v
        })
        .collect();
    let mut dead_letters = serde_json::Map::new();
    for letter in jarvis_bus::dlq::list(&js, None).await.unwrap_or_default() {
        let n = dead_letters
            .entry(letter.consumer.clone())
            .or_insert(json!(0));
        *n = json!(n.as_u64().unwrap_or(0) + 1);
    }
    let mut streams = Vec::new();
    for name in [EVENTS_STREAM, DLQ_STREAM] {
        let value = match js.get_stream(name).await {
            Ok(mut stream) => {
                let info = stream.info().await?.clone();
                let mut consumers = Vec::new();
                let mut names = stream.consumer_names();
                while let Some(name) = names.next().await {
                    let Ok(consumer) = name else { break };
                    // Push or ephemeral consumers (an operator's `nats sub`, `events tail`) are not ours to list.
                    let Ok(mut c) = stream
                        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&consumer)
                        .await
                    else {
                        continue;
                    };
                    let Ok(ci) = c.info().await else { continue };
                    if ci.config.durable_name.is_some() {
                        consumers.push(json!({
                            "name": consumer,
                            "num_pending": ci.num_pending,
                            "num_ack_pending": ci.num_ack_pending,
                            "num_redelivered": ci.num_redelivered,
                            "delivered_stream_seq": ci.delivered.stream_sequence,
                        }));
                    }
                }
                json!({
                    "name": name,
                    "messages": info.state.messages,
                    "bytes": info.state.bytes,
                    "first_seq": info.state.first_sequence,
                    "last_seq": info.state.last_sequence,
                    "consumers": consumers,
                })
            }
            Err(e) => json!({"name": name, "error": e.to_string()}),
        };
        streams.push(value);
    }
    let report = json!({
        "database_url": jarvis_store::redact_url(&endpoints.database_url),
        "nats_url": jarvis_bus::redact_url(&endpoints.nats_url),
        "store": {"head_position": head, "events": count},
        "relay": {
            "checkpoint_position": checkpoint.position,
            "checkpoint_txid": checkpoint.txid,
            "lag_events": lag,
        },
        "streams": streams,
        "agents": agents,
        "dead_letters": dead_letters,
    });
    if json_out {
        println!("{report}");
        return Ok(());
    }
    println!(
        "store    {}  head position {head}, {count} events",
        report["database_url"].as_str().unwrap_or("")
    );
    println!(
        "relay    checkpoint position {}, lag {lag} events",
        checkpoint.position
    );
    for b in &beats {
        println!(
            "agent    {} {} {} ({}), lag {}, dead letters {}",
            b.agent,
            b.instance,
            if b.is_alive(now) { "alive" } else { "down" },
            b.status,
            b.num_pending(),
            b.dlq_messages
        );
    }
    if beats.is_empty() {
        println!(
            "agent    none answered the health ping (is `jarvis up` or `jarvis agent` running?)"
        );
    }
    for (consumer, n) in &dead_letters {
        println!(
            "dlq      {consumer}: {n} dead letter(s) (`jarvis dlq list --consumer {consumer}`)"
        );
    }
    for s in &streams {
        if let Some(err) = s.get("error") {
            println!("stream   {}: {err}", s["name"]);
            continue;
        }
        println!(
            "stream   {} {} messages, {} bytes, seq {}..{}",
            s["name"].as_str().unwrap_or(""),
            s["messages"],
            s["bytes"],
            s["first_seq"],
            s["last_seq"]
        );
        for c in s["consumers"].as_array().into_iter().flatten() {
            println!(
                "consumer {} pending {}, ack pending {}, redelivered {}",
                c["name"].as_str().unwrap_or(""),
                c["num_pending"],
                c["num_ack_pending"],
                c["num_redelivered"]
            );
        }
    }
    Ok(())
}

/// `jarvis events trace`.
async fn trace(config: &Config, data_dir: &Path, event: &str, json: bool) -> anyhow::Result<()> {
    let endpoints = Endpoints::resolve(config, data_dir);
    let store = endpoints.store(config).await?;
    let found = match (event.parse::<uuid::Uuid>(), event.parse::<i64>()) {
        (Ok(id), _) => store.event_by_id(id).await?,
        (_, Ok(position)) => store.event_at(position).await?,
        _ => {
            return Err(Exit {
                code: 2,
                message: format!("{event:?} is neither an event id (UUID) nor a global position"),
            }
            .into())
        }
    };
    let Some(found) = found else {
        return Err(Exit {
            code: 2,
            message: format!("no event {event} in the store"),
        }
        .into());
    };
    let chain = store.causal_chain(found).await?;
    // A closed pipe (`jarvis events trace ... | head`) ends the output quietly.
    match print_chain(&store, &chain, json).await {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

async fn print_chain(
    store: &EventStore,
    chain: &[jarvis_domain::RecordedEvent],
    json: bool,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for (depth, event) in chain.iter().enumerate() {
        let evidence = evidence_of(&event.payload);
        if json {
            writeln!(
                out,
                "{}",
                json!({
                    "depth": depth,
                    "id": event.event_id,
                    "position": event.position,
                    "type": event.ce_type(),
                    "subject": event.aggregate_id,
                    "sequence": event.sequence,
                    "source": event.metadata.source,
                    "correlation_id": event.metadata.correlation_id,
                    "causation_id": event.metadata.causation_id,
                    "recorded_at": event.recorded_at,
                    "evidence": evidence,
                    "data": event.payload,
                })
            )?;
        } else {
            writeln!(
                out,
                "{:>8} {} {} {} (by {}) {}",
                event.position,
                event.ce_type(),
                event.aggregate_id,
                event.recorded_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                event.metadata.source,
                event.payload
            )?;
            for id in &evidence {
                match store.event_by_id(*id).await? {
                    Some(e) => writeln!(
                        out,
                        "         evidence: {} {} {} {}",
                        e.position,
                        e.ce_type(),
                        e.aggregate_id,
                        e.payload
                    )?,
                    None => writeln!(out, "         evidence: {id} (not in the store)")?,
                }
            }
        }
    }
    Ok(())
}

/// Event ids a decision cites as evidence (`rationale.evidence` or `evidence` in its payload).
fn evidence_of(payload: &serde_json::Value) -> Vec<uuid::Uuid> {
    let list = payload
        .pointer("/rationale/evidence")
        .or_else(|| payload.get("evidence"))
        .and_then(|v| v.as_array());
    list.into_iter()
        .flatten()
        .filter_map(|v| v.as_str()?.parse().ok())
        .collect()
}
