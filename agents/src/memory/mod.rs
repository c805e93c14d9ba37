//! The memory agent: per-user conversation memory, built from chat events, recalled by full-text search and
//! (when an embedding provider is configured) by meaning. See `docs/memory.md`.
//!
//! # Layout
//! - [`agent`]: the consumer that turns `ChatMessageReceived` and `ChatReplySent` into `MemoryStored`
//!   ([`agent::memory_of`] is where new sources are added).
//! - [`projector`]: the `memories` read model, checkpointed in the same transaction as its rows, with
//!   `rebuild` and the filling in of embeddings.
//! - [`recall`]: the micro service `jarvis-memory`: `jarvis.cmd.memory.recall` and `jarvis.cmd.memory.forget`.
//! - [`embed`]: the [`embed::Embedder`] trait and the OpenAI-compatible `/embeddings` client.
//!
//! [`run`] runs all of it (what `jarvis up` does).

pub mod agent;
pub mod embed;
pub mod projector;
pub mod recall;

use std::future::Future;
use std::sync::Arc;

use jarvis_bus::{run_consumer, ConsumerSettings};
use jarvis_store::EventStore;
use serde::Deserialize;

pub use agent::{memory_of, MemoryAgent, NewMemory};
pub use embed::{EmbedError, Embedder, EmbeddingConfig, OpenAiEmbedder};
pub use projector::MemoryProjector;
pub use recall::{forget, recall, RecallReply, RecallRequest, Recalled};

/// `[memory]` in `jarvis.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Run the memory agent, its projector and its service in `jarvis up`. Default true.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// `[memory.embeddings]`: the embedding provider; none by default (recall by text alone).
    #[serde(default)]
    pub embeddings: Option<EmbeddingConfig>,
}

fn enabled() -> bool {
    true
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            embeddings: None,
        }
    }
}

impl MemoryConfig {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// The key, its value and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        self.embeddings
            .as_ref()
            .map_or(Ok(()), EmbeddingConfig::validate)
    }

    /// The embedder configured, if any.
    ///
    /// # Errors
    /// [`EmbedError`] when its HTTP client cannot be built.
    pub fn embedder(&self) -> Result<Option<Arc<dyn Embedder>>, EmbedError> {
        self.embeddings
            .as_ref()
            .map(|c| OpenAiEmbedder::new(c).map(|e| Arc::new(e) as Arc<dyn Embedder>))
            .transpose()
    }
}

/// Runs the memory agent's consumers, the projector, the filling in of embeddings (with an embedder) and
/// the `jarvis-memory` service until `shutdown` completes.
///
/// # Errors
/// [`EmbedError`] when the configured embedder cannot be built. Failures of the parts are logged; each part
/// retries by itself.
pub async fn run(
    store: EventStore,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    config: &MemoryConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EmbedError> {
    let embedder = config.embedder()?;
    let batch = config.embeddings.as_ref().map_or(32, |c| c.batch);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (durable, subject) in agent::SOURCES {
        let (js, agent, stopped) = (js.clone(), MemoryAgent::new(store.clone()), until());
        let settings = ConsumerSettings::new(*durable, *subject);
        tasks.spawn(async move {
            if let Err(e) = run_consumer(&js, &settings, &agent, stopped).await {
                tracing::error!(cause = %e, consumer = %settings.durable, "the memory agent failed to start");
            }
        });
    }
    let projector =
        MemoryProjector::new(store.clone(), embedder.as_ref().map(|e| e.model().into()));
    {
        let (projector, stopped) = (projector.clone(), until());
        tasks.spawn(async move { projector.run(stopped).await });
    }
    if let Some(embedder) = embedder.clone() {
        let stopped = until();
        tasks.spawn(async move {
            projector
                .run_embeddings(embedder.as_ref(), batch, stopped)
                .await
        });
    }
    {
        let stopped = until();
        tasks.spawn(async move {
            if let Err(e) = recall::serve_commands(store, client, embedder, stopped).await {
                tracing::error!(cause = %e, "the memory service failed; recall and forget are unavailable");
            }
        });
    }
    shutdown.await;
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}
