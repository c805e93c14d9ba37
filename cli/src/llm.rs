//! `jarvis llm ask` and `jarvis llm usage`: the LLM router from the shell, and `jarvis up`'s `jarvis-llm`.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;
use jarvis_agents::llm::router::check_request;
use jarvis_agents::llm::usage::{usage, Usage, UsageTotals};
use jarvis_agents::llm::{AskError, AskRequest, LlmRouter};
use jarvis_store::EventStore;

use crate::config::Config;
use crate::stack::Endpoints;
use crate::Exit;

/// `jarvis llm ...`
#[derive(Debug, Subcommand)]
pub enum LlmCommand {
    /// Ask a model through the router; the call, its cost and its answer are recorded as events.
    Ask {
        /// The prompt; `-` reads it from standard input.
        text: String,
        /// The task type, which picks the route (a key of `[llm.routes]`).
        #[arg(long, default_value = "chat")]
        task: String,
        /// Untrusted user-supplied text to include (screened by the prompt guard).
        #[arg(long)]
        user_text: Option<String>,
        /// Print the answer as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Spend and tokens per day, provider and task, from the recorded events.
    Usage {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn bad_input(message: impl Into<String>) -> anyhow::Error {
    Exit {
        code: 2,
        message: message.into(),
    }
    .into()
}

fn read_prompt(text: String, max: usize) -> anyhow::Result<String> {
    if text != "-" {
        return Ok(text);
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .context("reading the prompt from standard input")?;
    if bytes.len() > max {
        return Err(bad_input(format!(
            "the prompt on standard input is over {max} bytes (llm.max_prompt_bytes)"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        bad_input(format!(
            "the prompt on standard input is not UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// `jarvis llm ask` / `jarvis llm usage`.
///
/// # Errors
/// [`Exit`] 2 for bad input (unknown task, empty or oversized prompt, no providers configured); 1 for a
/// refusal or every provider failing; store errors.
pub async fn run(config: &Config, data_dir: &Path, cmd: LlmCommand) -> anyhow::Result<()> {
    match cmd {
        LlmCommand::Ask {
            text,
            task,
            user_text,
            json,
        } => {
            if !config.llm.enabled() {
                return Err(bad_input(
                    "no LLM provider is configured: add [llm.providers.<name>] and [llm.routes] to jarvis.toml",
                ));
            }
            let request = AskRequest {
                task,
                prompt: read_prompt(text, config.llm.max_prompt_bytes)?,
                user_text,
                ..Default::default()
            };
            // Refuse bad input before touching the store: nothing half-written.
            check_request(&config.llm, &request).map_err(|e| bad_input(e.to_string()))?;
            let store = connect(config, data_dir).await?;
            let router = LlmRouter::new(config.llm.clone(), store);
            let answer = match router.ask(request).await {
                Ok(a) => a,
                Err(AskError::BadRequest(m)) => return Err(bad_input(m)),
                Err(e) => anyhow::bail!("{e}"),
            };
            if json {
                println!("{}", serde_json::to_string(&answer)?);
            } else {
                println!("{}", answer.answer);
                for call in &answer.tool_calls {
                    println!("[tool call] {} {}", call.name, call.arguments);
                }
                eprintln!(
                    "-- {}/{}{} · {} in / {} out tokens{} · {} USD · {} ms",
                    answer.provider,
                    answer.model,
                    if answer.downgraded {
                        " (downgraded at the budget cap)"
                    } else {
                        ""
                    },
                    answer.tokens_in,
                    answer.tokens_out,
                    if answer.estimated { " (estimated)" } else { "" },
                    answer.cost,
                    answer.latency_ms
                );
            }
            Ok(())
        }
        LlmCommand::Usage { json } => {
            let store = connect(config, data_dir).await?;
            let report = usage(&store).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_usage(&report);
            }
            Ok(())
        }
    }
}

async fn connect(config: &Config, data_dir: &Path) -> anyhow::Result<EventStore> {
    let endpoints = Endpoints::resolve(config, data_dir);
    let store = endpoints.store(config).await?;
    store.migrate().await.context("migrating the store")?;
    Ok(store)
}

fn line(name: &str, t: &UsageTotals) -> String {
    format!(
        "{name:<28} {:>6} calls {:>14} USD {:>10} in {:>10} out{}",
        t.calls,
        t.cost_usd,
        t.tokens_in,
        t.tokens_out,
        if t.estimated_calls > 0 {
            format!(" ({} estimated)", t.estimated_calls)
        } else {
            String::new()
        }
    )
}

fn print_usage(report: &Usage) {
    if report.days.is_empty() {
        println!("no LLM calls recorded");
        return;
    }
    for day in &report.days {
        println!("{}", line(&day.day, &day.total));
        println!(
            "  failed {} · refused at cap {} · downgraded {} · flagged {} · alerts {}",
            day.failed_calls, day.refused_calls, day.downgraded_calls, day.flagged, day.alerts
        );
        for (name, t) in &day.by_provider {
            println!("  {}", line(&format!("provider {name}"), t));
        }
        for (name, t) in &day.by_task {
            println!("  {}", line(&format!("task {name}"), t));
        }
    }
    println!("{}", line("total", &report.total));
}

/// The LLM router of `[llm]`, when it has providers and routes.
pub fn router(config: &Config, store: &EventStore) -> Option<Arc<LlmRouter>> {
    config
        .llm
        .enabled()
        .then(|| Arc::new(LlmRouter::new(config.llm.clone(), store.clone())))
}

/// Starts `jarvis-llm` with `router` (from [`router`]); `None` when there is none.
pub fn spawn_service(
    router: Option<Arc<LlmRouter>>,
    client: &async_nats::Client,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let router = router?;
    let client = client.clone();
    Some(tokio::spawn(async move {
        if let Err(e) = jarvis_agents::llm::service::serve_commands(router, client, shutdown).await
        {
            tracing::error!(cause = %e, "the llm service failed; jarvis.cmd.llm.* is unavailable");
        }
    }))
}
