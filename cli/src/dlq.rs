//! `jarvis dlq list|replay|purge`: the dead-letter stream `JARVIS_DLQ` from the shell (see
//! [`jarvis_bus::dlq`] for what a replay does and why it is safe to repeat).

use std::path::Path;

use clap::Subcommand;
use serde_json::json;

use crate::config::Config;
use crate::stack::Endpoints;
use crate::Exit;

/// `jarvis dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first: id (its sequence in JARVIS_DLQ), consumer, subject, error,
    /// deliveries, time, ce-type.
    List {
        /// Only this consumer's dead letters.
        #[arg(long)]
        consumer: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Republish dead letters to their original subject (after fixing what made them fail), then delete them.
    Replay {
        /// The dead letter's id, from `jarvis dlq list`.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u64>,
        /// Every dead letter (of `--consumer`, when given).
        #[arg(long)]
        all: bool,
        /// Only this consumer's dead letters.
        #[arg(long)]
        consumer: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Delete dead letters without replaying them.
    Purge {
        /// Only this consumer's dead letters.
        #[arg(long)]
        consumer: Option<String>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `jarvis dlq` command.
///
/// # Errors
/// When NATS is unreachable or `JARVIS_DLQ` is missing; [`Exit`] (2) for an unknown dead letter or one of
/// another consumer.
pub async fn run(config: &Config, data_dir: &Path, cmd: DlqCommand) -> anyhow::Result<()> {
    let endpoints = Endpoints::resolve(config, data_dir);
    let (_, js) = endpoints.bus("jarvis-dlq").await?;
    match cmd {
        DlqCommand::List { consumer, json } => {
            let letters = jarvis_bus::dlq::list(&js, consumer.as_deref()).await?;
            for l in &letters {
                if json {
                    println!("{}", serde_json::to_string(l)?);
                } else {
                    println!(
                        "{:>6} {} {} {} deliveries {} {} {}{}: {}",
                        l.id,
                        l.time.format("%Y-%m-%dT%H:%M:%SZ"),
                        l.consumer,
                        l.subject,
                        l.deliveries,
                        l.ce_type.as_deref().unwrap_or("-"),
                        l.size,
                        if l.truncated {
                            " bytes (truncated)"
                        } else {
                            " bytes"
                        },
                        l.error
                    );
                }
            }
            if !json && letters.is_empty() {
                println!("no dead letters");
            }
        }
        DlqCommand::Replay {
            id,
            all,
            consumer,
            json,
        } => {
            let ids: Vec<u64> = match (id, all) {
                (Some(id), _) => vec![id],
                _ => jarvis_bus::dlq::list(&js, consumer.as_deref())
                    .await?
                    .iter()
                    .map(|l| l.id)
                    .collect(),
            };
            for id in ids {
                let done = jarvis_bus::dlq::replay(&js, id, consumer.as_deref())
                    .await
                    .map_err(|e| Exit {
                        code: 2,
                        message: e.to_string(),
                    })?;
                if json {
                    println!("{}", serde_json::to_string(&done)?);
                } else {
                    println!(
                        "replayed {} to {} (JARVIS_EVENTS sequence {}{})",
                        done.id,
                        done.subject,
                        done.new_sequence,
                        if done.duplicate {
                            ", already replayed before"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        DlqCommand::Purge { consumer, json } => {
            let purged = jarvis_bus::dlq::purge(&js, consumer.as_deref()).await?;
            if json {
                println!("{}", json!({"purged": purged, "consumer": consumer}));
            } else {
                println!("purged {purged} dead letter(s)");
            }
        }
    }
    Ok(())
}
