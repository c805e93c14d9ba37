//! The sentiment agent as a durable consumer: each `TweetReceived` is scored once, and every token it
//! mentions gets a `SentimentScored` in its `TokenSentiment` aggregate (`<TOKEN>@<day of the tweet>`),
//! caused by the tweet's event.
//!
//! - A text mentioning no token is acknowledged and scores nothing.
//! - Redelivery is harmless: the aggregate records each (source event, model) once, so a tweet redelivered
//!   after a crash between two tokens completes the missing ones and repeats none.
//! - Bad input never stops the agent: an empty or over-long text is a permanent error (dead-lettered with
//!   the reason); a payload that is not UTF-8 or not a valid event never reaches the handler, the consumer
//!   runner dead-letters it; an LLM scorer that is down is a transient error (retried with back-off).
//!
//! Chat messages (`ChatMessageReceived`) are scored the same way, by a second durable consumer on
//! `jarvis.evt.chat.>` (nats-server 2.9 has no multi-filter consumers; 2.10 could use one consumer with
//! two filters). A chat message without text (a photo) scores nothing. Another text event (news) is one
//! more arm in [`Handler::handle`] and one more entry in [`SOURCES`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use jarvis_bus::{run_consumer, BusError, ConsumerSettings, Envelope, Handler, HandlerError};
use jarvis_domain::chat::ConversationEvent;
use jarvis_domain::sentiment::{SentimentCommand, SentimentScore, TokenSentiment};
use jarvis_domain::social::XFeedEvent;
use jarvis_domain::AnyEvent;
use jarvis_store::{execute_with_retry, EventStore};
use rust_decimal::prelude::FromPrimitive;
use rust_decimal::Decimal;

use super::tokens::{AliasError, TokenMap};
use super::{check_text, ScoreError, SentimentScorer};
use crate::runtime::handler_error;

/// The durable consumer's name (tweets).
pub const CONSUMER: &str = "sentiment";
/// What the consumer reads.
pub const FILTER: &str = "jarvis.evt.social.>";
/// Every durable consumer of the agent and its filter: tweets, chat messages.
pub const SOURCES: &[(&str, &str)] = &[(CONSUMER, FILTER), ("sentiment-chat", "jarvis.evt.chat.>")];
/// Who writes the scores.
const SOURCE: &str = "sentiment";
/// Retries after conflicts with another writer.
const RETRIES: u32 = 5;

/// The agent's configuration (`[sentiment]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentimentSettings {
    /// Extra names and mints per token, beside the built-in ones.
    pub aliases: BTreeMap<String, Vec<String>>,
}

/// The agent.
pub struct SentimentAgent {
    store: EventStore,
    scorer: Arc<dyn SentimentScorer>,
    tokens: TokenMap,
}

impl SentimentAgent {
    /// An agent writing to `store`, scoring with `scorer`.
    ///
    /// # Errors
    /// [`AliasError`] for a malformed alias in `settings`.
    pub fn new(
        store: EventStore,
        scorer: Arc<dyn SentimentScorer>,
        settings: &SentimentSettings,
    ) -> Result<Self, AliasError> {
        Ok(Self {
            store,
            scorer,
            tokens: TokenMap::with_aliases(&settings.aliases)?,
        })
    }

    /// Scores `text` of the event in `env` (of type `source_type`, at event time `at`) for every token it
    /// mentions.
    ///
    /// # Errors
    /// Permanent for bad text or a model answering nonsense; transient for store failures and an
    /// unavailable model.
    pub async fn on_text(
        &self,
        env: &Envelope,
        text: &str,
        at: DateTime<Utc>,
        source_type: &str,
    ) -> Result<(), HandlerError> {
        let refuse = |e: ScoreError| {
            let what = format!("{source_type} {} ({}): {e}", env.id, env.subject);
            if e.is_transient() {
                HandlerError::Transient(what)
            } else {
                HandlerError::Permanent(what)
            }
        };
        check_text(text).map_err(refuse)?;
        let tokens = self.tokens.extract(text);
        if tokens.is_empty() {
            tracing::debug!(event = %env.id, "no token mentioned; nothing to score");
            return Ok(());
        }
        let score = self.scorer.score(text).await.map_err(refuse)?;
        let decimal = |x: f64, lo: Decimal| {
            Decimal::from_f64(x)
                .unwrap_or_default()
                .round_dp(4)
                .clamp(lo, Decimal::ONE)
        };
        let cqrs = self.store.cqrs::<TokenSentiment>(());
        let metadata = env.caused(SOURCE);
        for token in tokens {
            let record = SentimentScore {
                token,
                score: decimal(score.score, -Decimal::ONE),
                label: score.label,
                confidence: decimal(score.confidence, Decimal::ZERO),
                model: score.model.clone(),
                source_event: env.id,
                source_type: source_type.to_string(),
                at,
            };
            let id = record.aggregate_id();
            execute_with_retry(
                &cqrs,
                &id,
                SentimentCommand::Record(record),
                &metadata,
                RETRIES,
            )
            .await
            .map_err(handler_error)?;
        }
        Ok(())
    }
}

impl Handler for SentimentAgent {
    async fn handle(&self, envelope: &Envelope, event: AnyEvent) -> Result<(), HandlerError> {
        match event {
            AnyEvent::Social(XFeedEvent::TweetReceived(tweet)) => {
                self.on_text(envelope, &tweet.text, tweet.created_at, "TweetReceived")
                    .await
            }
            AnyEvent::Chat(ConversationEvent::ChatMessageReceived(m))
                if !m.text.trim().is_empty() =>
            {
                self.on_text(envelope, &m.text, m.received_at, "ChatMessageReceived")
                    .await
            }
            _ => Ok(()),
        }
    }
}

/// The consumer settings of the agent.
pub fn consumer_settings() -> ConsumerSettings {
    ConsumerSettings::new(CONSUMER, FILTER)
}

/// Runs the agent's consumer until `shutdown`.
///
/// # Errors
/// [`BusError`] when the consumer cannot be created.
pub async fn run(
    agent: &SentimentAgent,
    js: &async_nats::jetstream::Context,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError> {
    use futures::FutureExt;
    let shutdown = shutdown.shared();
    let runs = SOURCES.iter().map(|(name, filter)| {
        let settings = ConsumerSettings::new(*name, *filter);
        let shutdown = shutdown.clone();
        async move { run_consumer(js, &settings, agent, shutdown).await }
    });
    futures::future::try_join_all(runs).await.map(|_| ())
}
