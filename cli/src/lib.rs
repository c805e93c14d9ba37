//! `jarvis`: the composition root. Reads the configuration, wires the store, the bus and the agents, and
//! offers every operator command.
//!
//! # Layout
//! - [`config`]: `jarvis.toml` + `JARVIS_*` environment.
//! - [`stack`]: where the store and the bus are, and `jarvis up`'s private nats-server and Postgres.
//! - [`commands`]: `migrate`, `ingest`, `relay`, `up` (relay, trading pipeline, `jarvis-risk`), `events tail`,
//!   `events trace`, `status`.
//! - [`agents`]: which agents a process runs (`jarvis up`: all; `jarvis agent <name>...`: some).
//! - [`dlq`]: `jarvis dlq list|replay|purge`, the dead-letter stream from the shell.
//! - [`backtest`]: `jarvis backtest`, the pipeline replayed in memory, and sweeps of it.
//! - [`bench`]: `jarvis bench store|relay|e2e|backtest`, our figures beside a raw baseline measured in the same run.
//! - [`soak`]: `jarvis bench soak`, sustained load with memory sampled and losses counted.
//! - [`memory`]: `jarvis memory recall|forget|rebuild`.
//! - [`llm`]: `jarvis llm ask|usage`, and `jarvis-llm` in `jarvis up`.
//! - [`venue`]: `up`'s Jupiter execution agent and price poller, and the `--live` checks.
//! - [`telegram`]: `jarvis up`'s manual order desk (`jarvis-trading`) and Telegram agent.
//! - [`sentiment`]: `sentiment train|eval`, the offline classifier from the shell.
//! - [`x`]: `up`'s X agent (poller and `jarvis-x`), when `[x] bearer_token` is set.
//! - [`gateway`]: `jarvis gateway` (HTTP API), its helpers, its place in `jarvis up`, `bench gateway`.
//! - [`projections`]: `projections run|rebuild|status`, the projector in `jarvis up`, `bench projections`.

pub mod agents;
pub mod backtest;
pub mod bench;
pub mod commands;
pub mod config;
pub mod dlq;
pub mod gateway;
pub mod llm;
pub mod memory;
pub mod projections;
pub mod sentiment;
pub mod soak;
pub mod stack;
pub mod telegram;
pub mod venue;
pub mod x;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Jarvis: an event-sourced swarm of agents that trades crypto for its owner.
#[derive(Debug, Parser)]
#[command(name = "jarvis", version, about)]
pub struct Cli {
    /// Configuration file (default: ./jarvis.toml when present).
    #[arg(long, global = true, env = "JARVIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of `jarvis up`'s private servers and state.
    #[arg(
        long,
        global = true,
        env = "JARVIS_DATA_DIR",
        default_value = ".jarvis"
    )]
    pub data_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply Postgres migrations and provision the JetStream streams (idempotent).
    Migrate,
    /// Append recorded data to the store.
    #[command(subcommand)]
    Ingest(commands::IngestCommand),
    /// Run the outbox relay alone (store → JetStream).
    Relay,
    /// Run the relay and every agent; with no database or NATS URL configured, start private servers too.
    Up {
        /// Trade live on Solana: also needs `venue.kind = "jupiter"`, `venue.live = true` and a readable
        /// `venue.keypair_path`; without it the Jupiter venue dry-runs on real quotes.
        #[arg(long)]
        live: bool,
    },
    /// Run only these agents (no relay, no private servers): to scale one out or split a deployment.
    Agent {
        /// The agents.
        #[arg(required = true, value_enum)]
        agents: Vec<agents::Agent>,
        /// With `execution`: trade live on Solana (as `jarvis up --live`).
        #[arg(long)]
        live: bool,
    },
    /// The dead-letter stream: list, replay after a fix, purge.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Read events: tail them from the bus, or trace one's causes in the store.
    #[command(subcommand)]
    Events(commands::EventsCommand),
    /// Store head, relay checkpoint and lag, stream and consumer statistics.
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks: our rate beside a raw baseline, measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Replay history through the trading pipeline in memory and report how it would have done.
    Backtest(Box<backtest::BacktestArgs>),
    /// Users' memories: recall, forget, rebuild the read model.
    #[command(subcommand)]
    Memory(memory::MemoryCommand),
    /// The LLM router: ask a model (routed, budgeted, recorded), or show spend.
    #[command(subcommand)]
    Llm(llm::LlmCommand),
    /// The offline sentiment classifier: train it, evaluate it beside a lexicon baseline.
    #[command(subcommand)]
    Sentiment(sentiment::SentimentCommand),
    /// The HTTP gateway (REST, live events, commands, OpenAPI at /api/docs); or one of its helpers.
    Gateway {
        /// A helper; without one, serve.
        #[command(subcommand)]
        cmd: Option<gateway::GatewayCommand>,
    },
    /// Read models: run the projectors, rebuild and swap their tables, show checkpoints and lag.
    #[command(subcommand)]
    Projections(projections::ProjectionsCommand),
}

/// An error that maps to a specific exit code (2: bad input).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    /// The process exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

/// Parses the command line, runs the command, and maps errors to exit codes (1, or an [`Exit`]'s code).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JARVIS_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,async_nats=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<Exit>() {
                Some(exit) => ExitCode::from(exit.code),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// Runs one parsed command line.
///
/// # Errors
/// Whatever the command reports; [`Exit`] for a specific exit code.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = config::Config::load(cli.config.as_deref()).map_err(|e| Exit {
        code: 2,
        message: format!("{e:#}"),
    })?;
    // Every heartbeat this process publishes beats at `health.interval_ms`.
    jarvis_bus::health::set_process_interval(config.health.interval());
    match cli.command {
        Command::Migrate => commands::migrate(&config, &cli.data_dir).await,
        Command::Ingest(cmd) => commands::ingest(&config, &cli.data_dir, cmd).await,
        Command::Relay => commands::relay(&config, &cli.data_dir).await,
        Command::Up { live } => commands::up(&config, &cli.data_dir, live).await,
        Command::Agent { agents, live } => {
            commands::agent(&config, &cli.data_dir, &agents, live).await
        }
        Command::Dlq(cmd) => dlq::run(&config, &cli.data_dir, cmd).await,
        Command::Events(cmd) => commands::events(&config, &cli.data_dir, cmd).await,
        Command::Status { json } => commands::status(&config, &cli.data_dir, json).await,
        Command::Bench(cmd) => bench::run(&config, &cli.data_dir, cmd).await,
        Command::Backtest(args) => {
            backtest::run(cli.config.as_deref(), &config, &cli.data_dir, *args).await
        }
        Command::Memory(cmd) => memory::run(&config, &cli.data_dir, cmd).await,
        Command::Llm(cmd) => llm::run(&config, &cli.data_dir, cmd).await,
        Command::Sentiment(cmd) => sentiment::run(cmd),
        Command::Gateway { cmd } => gateway::run(&config, &cli.data_dir, cmd).await,
        Command::Projections(cmd) => projections::run(&config, &cli.data_dir, cmd).await,
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
