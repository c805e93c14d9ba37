//! Which agents a process runs: `jarvis up` runs the relay and all of them, `jarvis agent <name>...` only
//! those named (to scale one out, or to split a deployment into relay, agents and gateway processes).
//!
//! Every agent is a NATS micro service `jarvis-<agent>` with at least a `status` endpoint, and publishes its
//! heartbeat on `jarvis.health.<agent>` ([`jarvis_bus::health`]). Several processes may run the same agent:
//! they share its durable consumers, so JetStream splits the work between them.

use std::future::Future;

use jarvis_bus::service::{serve_status, Health};
use jarvis_bus::{run_consumer, ConsumerSettings};
use jarvis_store::EventStore;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::Exit;

/// An agent `jarvis agent` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Agent {
    /// The trading pipeline (strategy, treasury, risk gate, paper venue): consumer `trading`.
    Trading,
    /// `jarvis-risk`: halt, resume, status.
    Risk,
    /// The sentiment scorer: consumers `sentiment`, `sentiment-chat` (when `[sentiment] enabled`).
    Sentiment,
    /// The memory agent and `jarvis-memory` (when `[memory] enabled`).
    Memory,
    /// `jarvis-llm`, the LLM router (when `[llm]` has providers).
    Llm,
    /// The Jupiter execution agent: consumer `execution-jupiter` (when `venue.kind = "jupiter"`).
    Execution,
    /// The live price poller (when `[market] poll_prices`).
    Poller,
    /// The X agent: mentions and searches in, drafts and posts out, `jarvis-x` (when `[x] bearer_token`).
    X,
    /// The Telegram agent (when `[telegram] token`).
    Telegram,
}

impl Agent {
    /// Every agent, in the order `jarvis up` starts them.
    pub const ALL: [Agent; 9] = [
        Agent::Trading,
        Agent::Risk,
        Agent::Sentiment,
        Agent::Memory,
        Agent::Llm,
        Agent::Execution,
        Agent::Poller,
        Agent::X,
        Agent::Telegram,
    ];

    /// Its name on the command line, in `jarvis-<name>` and `jarvis.health.<name>`.
    pub fn name(self) -> &'static str {
        match self {
            Agent::Trading => "trading",
            Agent::Risk => "risk",
            Agent::Sentiment => "sentiment",
            Agent::Memory => "memory",
            Agent::Llm => "llm",
            Agent::Execution => "execution",
            Agent::Poller => "poller",
            Agent::X => "x",
            Agent::Telegram => "telegram",
        }
    }
}

/// The trading pipeline's durable consumer.
pub const TRADING_CONSUMER: &str = "trading";
/// The Jupiter execution agent's durable consumer.
pub const EXECUTION_CONSUMER: &str = "execution-jupiter";

/// Where the agents run: the store, the bus, and how they learn to stop.
pub struct Wiring<'a, U> {
    /// The configuration.
    pub config: &'a Config,
    /// The event store.
    pub store: &'a EventStore,
    /// The NATS client.
    pub client: &'a async_nats::Client,
    /// Its JetStream context.
    pub js: &'a async_nats::jetstream::Context,
    /// A new future completing when the process stops, for each task.
    pub until: U,
}

/// Starts `agents` (each once, in [`Agent::ALL`] order) and returns their tasks. An agent that is not
/// configured is skipped with a log line under `jarvis up` (`explicit = false`) and refused with exit code
/// 2 under `jarvis agent` (`explicit = true`). `execution` is the checked Jupiter venue, if any.
///
/// # Errors
/// [`Exit`] (2) for an agent named but not configured; a bad `[sentiment]` or `[market]` section.
pub fn spawn<U, Fut>(
    wiring: &Wiring<'_, U>,
    agents: &[Agent],
    execution: Option<crate::venue::Execution>,
    explicit: bool,
) -> anyhow::Result<Vec<JoinHandle<()>>>
where
    U: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Wiring {
        config,
        store,
        client,
        js,
        until,
    } = wiring;
    let wants = |a: Agent| agents.contains(&a);
    let not_configured = |a: Agent, why: &str| -> anyhow::Result<()> {
        if explicit {
            Err(Exit {
                code: 2,
                message: format!("agent {}: {why}", a.name()),
            }
            .into())
        } else {
            tracing::info!(agent = a.name(), "not started: {why}");
            Ok(())
        }
    };
    let mut tasks = Vec::new();
    if wants(Agent::Trading) {
        // One ordered consumer of closed candles (max one unacked message, so a retried candle is never
        // overtaken by the next one, even with several processes sharing the consumer).
        let mut pipeline = jarvis_agents::trading::TradingPipeline::new(
            (*store).clone(),
            config.trading_settings(),
        );
        if let Some(router) = crate::llm::router(config, store) {
            pipeline = pipeline.with_reviewer(router);
        }
        let (js, stopped) = ((*js).clone(), until());
        tasks.push(tokio::spawn(async move {
            let mut settings =
                ConsumerSettings::new(TRADING_CONSUMER, "jarvis.evt.market.CandleClosed.>");
            settings.max_ack_pending = 1;
            settings.max_deliver = 20;
            if let Err(e) = run_consumer(&js, &settings, &pipeline, stopped).await {
                tracing::error!(cause = %e, "the trading pipeline failed to start");
            }
        }));
        // `jarvis-trading`: manual orders (propose, confirm) and the pipeline's status and heartbeat, which
        // says `halted` while the risk book is halted.
        let (halt, watching) =
            jarvis_agents::risk::HaltWatch::spawn((*store).clone(), (*client).clone(), until());
        tasks.push(watching);
        tasks.push(crate::telegram::spawn_trading_desk(
            config,
            store,
            client,
            Health::new(Agent::Trading.name(), &[TRADING_CONSUMER])
                .with_status(move || halt.status()),
            until(),
        ));
    }
    if wants(Agent::Risk) {
        let (store, client, stopped) = ((*store).clone(), (*client).clone(), until());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = jarvis_agents::risk::serve_commands(store, client, stopped).await {
                tracing::error!(cause = %e, "the risk service failed; halt and resume are unavailable");
            }
        }));
    }
    if wants(Agent::Sentiment) {
        if config.sentiment.enabled {
            let agent = jarvis_agents::sentiment::SentimentAgent::new(
                (*store).clone(),
                std::sync::Arc::new(jarvis_agents::sentiment::OfflineScorer::default()),
                &config.sentiment.settings(),
            )
            .map_err(|e| Exit {
                code: 2,
                message: e.to_string(),
            })?;
            let (js, stopped) = ((*js).clone(), until());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = jarvis_agents::sentiment::agent::run(&agent, &js, stopped).await {
                    tracing::error!(cause = %e, "the sentiment agent failed to start");
                }
            }));
            let consumers: Vec<&str> = jarvis_agents::sentiment::agent::SOURCES
                .iter()
                .map(|(name, _)| *name)
                .collect();
            tasks.push(status_service(
                client,
                Agent::Sentiment,
                "Jarvis sentiment: scores tweets and chat messages",
                &consumers,
                until(),
            ));
        } else {
            not_configured(Agent::Sentiment, "[sentiment] enabled = false")?;
        }
    }
    if wants(Agent::Memory) {
        if config.memory.enabled {
            let (store, client, js) = ((*store).clone(), (*client).clone(), (*js).clone());
            let (memory, stopped) = (config.memory.clone(), until());
            tasks.push(tokio::spawn(async move {
                if let Err(e) =
                    jarvis_agents::memory::run(store, client, js, &memory, stopped).await
                {
                    tracing::error!(cause = %e, "the memory agent failed to start");
                }
            }));
        } else {
            not_configured(Agent::Memory, "[memory] enabled = false")?;
        }
    }
    if wants(Agent::Llm) {
        match crate::llm::spawn_service(crate::llm::router(config, store), client, until()) {
            Some(task) => tasks.push(task),
            None => not_configured(Agent::Llm, "[llm] has no provider")?,
        }
    }
    let execution = if wants(Agent::Execution) {
        if execution.is_none() {
            not_configured(
                Agent::Execution,
                "venue.kind = \"paper\" fills inside the trading pipeline",
            )?;
        }
        execution
    } else {
        None
    };
    let poll = wants(Agent::Poller);
    if poll && !config.market.poll_prices {
        not_configured(Agent::Poller, "[market] poll_prices = false")?;
    }
    let has_execution = execution.is_some();
    let (execution, poller) = crate::venue::spawn(config, execution, poll, store, js, until)?;
    tasks.extend(execution.into_iter().chain(poller));
    if has_execution {
        tasks.push(status_service(
            client,
            Agent::Execution,
            "Jarvis execution on Jupiter",
            &[EXECUTION_CONSUMER],
            until(),
        ));
    }
    if poll && config.market.poll_prices {
        tasks.push(status_service(
            client,
            Agent::Poller,
            "Jarvis live price poller",
            &[],
            until(),
        ));
    }
    if wants(Agent::X) {
        if config.x.enabled() {
            tasks.extend(crate::x::spawn(config, store, client, js, until)?);
        } else {
            not_configured(Agent::X, "[x] has no bearer_token")?;
        }
    }
    if wants(Agent::Telegram) {
        match crate::telegram::spawn_agent(config, store, client, js, until())? {
            Some(task) => {
                tasks.push(task);
                // `jarvis-telegram`: its status and heartbeat (with its alert consumers' lag).
                let consumers: Vec<&str> = if config.telegram.alerts {
                    jarvis_agents::telegram::alerts::SOURCES
                        .iter()
                        .map(|(durable, _)| *durable)
                        .collect()
                } else {
                    vec![]
                };
                tasks.push(status_service(
                    client,
                    Agent::Telegram,
                    "Jarvis Telegram bot: the owner's console and alerts",
                    &consumers,
                    until(),
                ));
            }
            None => not_configured(Agent::Telegram, "[telegram] has no token")?,
        }
    }
    Ok(tasks)
}

/// `jarvis-<agent>` with only `status`, and its heartbeat, until `stopped`.
pub fn status_service(
    client: &async_nats::Client,
    agent: Agent,
    description: &'static str,
    consumers: &[&str],
    stopped: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    status_service_named(client, agent.name(), description, consumers, stopped)
}

/// [`status_service`] for a component that is not an [`Agent`] (the relay).
pub fn status_service_named(
    client: &async_nats::Client,
    name: &'static str,
    description: &'static str,
    consumers: &[&str],
    stopped: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let client = client.clone();
    let health = Health::new(name, consumers);
    tokio::spawn(async move {
        if let Err(e) = serve_status(&client, name, description, health, stopped).await {
            tracing::warn!(agent = name, cause = %e, "the status service failed to start");
        }
    })
}
