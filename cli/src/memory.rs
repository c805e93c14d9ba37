//! `jarvis memory ...`: recall, forget and rebuild the memory read model from a shell, straight on the store
//! (no running `jarvis up` needed). The same operations are NATS requests on `jarvis-memory` while it runs.

use std::path::Path;

use anyhow::Context as _;
use clap::Subcommand;
use jarvis_agents::memory::{self, MemoryProjector, RecallRequest};
use uuid::Uuid;

use crate::config::Config;
use crate::stack::Endpoints;
use crate::Exit;

/// `jarvis memory ...`
#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// A user's memories ranked for a query (text, and embeddings when `[memory.embeddings]` is set).
    Recall {
        /// The user.
        #[arg(long)]
        user: i64,
        /// What to look for.
        query: String,
        /// Most memories shown, 1 to 50.
        #[arg(long, default_value_t = 5)]
        limit: u32,
        /// Only trusted memories (owner, allowlisted).
        #[arg(long)]
        for_action: bool,
        /// Print the reply as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget one memory of a user (`--memory ID`), or all of them: appends `MemoryForgotten`.
    Forget {
        /// The user.
        #[arg(long)]
        user: i64,
        /// The memory; without it, every memory of the user.
        #[arg(long)]
        memory: Option<Uuid>,
        /// Why.
        #[arg(long, default_value = "forgotten by the operator")]
        reason: String,
    },
    /// Empty the memory read model and replay every event into it, in one transaction.
    Rebuild {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn bad(e: jarvis_bus::service::ServiceError) -> anyhow::Error {
    if e.code == 400 {
        Exit {
            code: 2,
            message: e.message,
        }
        .into()
    } else {
        anyhow::anyhow!(e.message)
    }
}

/// Runs `jarvis memory ...`.
///
/// # Errors
/// [`Exit`] with code 2 for a bad request (unknown user, empty query, ...); store failures.
pub async fn run(config: &Config, data_dir: &Path, cmd: MemoryCommand) -> anyhow::Result<()> {
    let store = Endpoints::resolve(config, data_dir).store(config).await?;
    store.migrate().await.context("migrating the store")?;
    match cmd {
        MemoryCommand::Recall {
            user,
            query,
            limit,
            for_action,
            json,
        } => {
            let embedder = config.memory.embedder()?;
            let request = RecallRequest {
                user_id: user,
                query,
                limit,
                for_action,
            };
            let reply = memory::recall(&store, embedder.as_deref(), &request)
                .await
                .map_err(bad)?;
            if json {
                println!("{}", serde_json::to_string(&reply)?);
            } else {
                for m in &reply.memories {
                    println!("{:.3} {:<11} {} {}", m.score, m.trust, m.memory_id, m.text);
                }
            }
        }
        MemoryCommand::Forget {
            user,
            memory,
            reason,
        } => {
            let reply = memory::forget(
                &store,
                user,
                memory,
                reason,
                "operator:jarvis-memory-forget",
            )
            .await
            .map_err(bad)?;
            println!("{reply}");
        }
        MemoryCommand::Rebuild { json } => {
            let model = config.memory.embeddings.as_ref().map(|e| e.model.clone());
            let rebuilt = MemoryProjector::new(store, model).rebuild().await?;
            if json {
                println!("{}", serde_json::to_string(&rebuilt)?);
            } else {
                println!(
                    "rebuilt the memory read model: {} events replayed, {} memories",
                    rebuilt.events, rebuilt.memories
                );
            }
        }
    }
    Ok(())
}
