//! Where an agent gets a model's answer: the seam between live calls and replayed ones.
//!
//! Live, an [`Oracle`] is the [`LlmRouter`] (routed, budgeted, every call recorded as events). In a
//! backtest it is a [`RecordedOracle`]: the answers recorded as `LlmCallCompleted`, looked up by the hash
//! of the conversation the router would have sent ([`conversation`], [`prompt_hash`]). A backtest never
//! reaches a live provider; a call with no record is an error ([`AskError::NotRecorded`]) unless a fallback
//! answer is configured.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use jarvis_domain::llm::LlmEvent;
use jarvis_store::{EventStore, StoreError};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::provider::Message;
use super::router::{conversation, prompt_hash, Answer, AskError, AskRequest, LlmRouter};

/// Answers [`AskRequest`]s.
#[async_trait]
pub trait Oracle: Send + Sync {
    /// The answer to `request`.
    ///
    /// # Errors
    /// [`AskError`]: refused, every provider failed, or (replaying) no recorded answer.
    async fn ask(&self, request: AskRequest) -> Result<Answer, AskError>;

    /// Like [`Oracle::ask`], but pays for a question once per story: when the same conversation (prompt
    /// hash) was already answered in the same story (`correlation_id`), that recorded answer comes back and
    /// no provider is called. For handlers that run again after a crash or a retry (a redelivered candle
    /// reviews the same proposal again). Without a correlation id it is `ask`.
    ///
    /// # Errors
    /// As [`Oracle::ask`].
    async fn ask_once(&self, request: AskRequest) -> Result<Answer, AskError> {
        self.ask(request).await
    }
}

#[async_trait]
impl Oracle for LlmRouter {
    async fn ask(&self, request: AskRequest) -> Result<Answer, AskError> {
        LlmRouter::ask(self, request).await
    }

    async fn ask_once(&self, request: AskRequest) -> Result<Answer, AskError> {
        if let Some(correlation_id) = request.correlation_id {
            let hash = prompt_hash(&conversation(&request));
            if let Some(answer) = self.answered(correlation_id, &hash).await? {
                return Ok(answer);
            }
        }
        LlmRouter::ask(self, request).await
    }
}

/// What a replay answers when a call has no record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// Stop: the call is an error naming its prompt hash (the default).
    Error,
    /// Answer this text instead (it is reported as a fallback, never as a recorded answer).
    Answer(String),
}

/// Recorded answers by prompt hash, for replay. [`RecordedOracle::fork`] shares the answers with counters of
/// its own (one per backtest of a sweep).
pub struct RecordedOracle {
    answers: Arc<HashMap<String, Answer>>,
    fallback: Fallback,
    replayed: AtomicU64,
    fell_back: AtomicU64,
}

impl RecordedOracle {
    /// An oracle with these answers (keyed by their `prompt_hash`).
    pub fn new(answers: impl IntoIterator<Item = Answer>, fallback: Fallback) -> Self {
        Self {
            answers: Arc::new(
                answers
                    .into_iter()
                    .map(|a| (a.prompt_hash.clone(), a))
                    .collect(),
            ),
            fallback,
            replayed: AtomicU64::new(0),
            fell_back: AtomicU64::new(0),
        }
    }

    /// Every `LlmCallCompleted` in the store (the latest answer for each prompt hash wins).
    ///
    /// # Errors
    /// [`StoreError`]: the store cannot be read, or a recorded event does not decode (its position named).
    pub async fn from_store(store: &EventStore, fallback: Fallback) -> Result<Self, StoreError> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT position, payload::text FROM events
              WHERE event_type = 'LlmCallCompleted' ORDER BY position",
        )
        .fetch_all(store.pool())
        .await?;
        let mut answers = Vec::with_capacity(rows.len());
        for (position, payload) in rows {
            let event: LlmEvent =
                serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
                    position,
                    reason: e.to_string(),
                })?;
            if let LlmEvent::LlmCallCompleted {
                call_id,
                prompt_hash,
                response,
                provider,
                model,
                tokens_in,
                tokens_out,
                cost,
                ..
            } = event
            {
                answers.push(Answer {
                    call_id,
                    answer: response,
                    provider,
                    model,
                    tokens_in,
                    tokens_out,
                    estimated: false,
                    cost,
                    latency_ms: 0,
                    downgraded: false,
                    tool_calls: Vec::new(),
                    prompt_hash,
                });
            }
        }
        Ok(Self::new(answers, fallback))
    }

    /// The same answers and fallback, with its counters at zero.
    pub fn fork(&self) -> Self {
        Self {
            answers: Arc::clone(&self.answers),
            fallback: self.fallback.clone(),
            replayed: AtomicU64::new(0),
            fell_back: AtomicU64::new(0),
        }
    }

    /// How many recorded answers it holds.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// How many calls were answered from records so far.
    pub fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::Relaxed)
    }

    /// How many calls had no record and got the fallback answer.
    pub fn fell_back(&self) -> u64 {
        self.fell_back.load(Ordering::Relaxed)
    }

    fn answer(&self, messages: &[Message]) -> Result<Answer, AskError> {
        let hash = prompt_hash(messages);
        if let Some(recorded) = self.answers.get(&hash) {
            self.replayed.fetch_add(1, Ordering::Relaxed);
            return Ok(recorded.clone());
        }
        match &self.fallback {
            Fallback::Error => Err(AskError::NotRecorded(hash)),
            Fallback::Answer(text) => {
                self.fell_back.fetch_add(1, Ordering::Relaxed);
                Ok(Answer {
                    // Deterministic: the same prompt falls back to the same call id.
                    call_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, hash.as_bytes()),
                    answer: text.clone(),
                    provider: "fallback".into(),
                    model: "fallback".into(),
                    tokens_in: 0,
                    tokens_out: 0,
                    estimated: true,
                    cost: Decimal::ZERO,
                    latency_ms: 0,
                    downgraded: false,
                    tool_calls: Vec::new(),
                    prompt_hash: hash,
                })
            }
        }
    }
}

impl std::fmt::Debug for RecordedOracle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordedOracle")
            .field("answers", &self.answers.len())
            .field("fallback", &self.fallback)
            .field("replayed", &self.replayed())
            .field("fell_back", &self.fell_back())
            .finish()
    }
}

#[async_trait]
impl Oracle for RecordedOracle {
    async fn ask(&self, request: AskRequest) -> Result<Answer, AskError> {
        self.answer(&conversation(&request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(prompt: &str) -> AskRequest {
        AskRequest {
            task: "trading".into(),
            prompt: prompt.into(),
            ..AskRequest::default()
        }
    }

    fn recorded(prompt: &str, answer: &str) -> Answer {
        Answer {
            call_id: Uuid::nil(),
            answer: answer.into(),
            provider: "groq".into(),
            model: "m".into(),
            tokens_in: 1,
            tokens_out: 1,
            estimated: false,
            cost: Decimal::ONE,
            latency_ms: 5,
            downgraded: false,
            tool_calls: Vec::new(),
            prompt_hash: prompt_hash(&conversation(&request(prompt))),
        }
    }

    #[tokio::test]
    async fn answers_by_prompt_hash_and_refuses_the_unrecorded() {
        let oracle = RecordedOracle::new([recorded("buy?", "yes")], Fallback::Error);
        assert_eq!(oracle.ask(request("buy?")).await.unwrap().answer, "yes");
        assert_eq!(oracle.replayed(), 1);
        let missing = oracle.ask(request("sell?")).await.unwrap_err();
        let hash = prompt_hash(&conversation(&request("sell?")));
        assert_eq!(missing, AskError::NotRecorded(hash.clone()));
        assert!(missing.to_string().contains(&hash), "{missing}");
    }

    #[tokio::test]
    async fn a_fallback_answers_the_unrecorded_and_is_counted() {
        let oracle = RecordedOracle::new([], Fallback::Answer("no".into()));
        let answer = oracle.ask(request("sell?")).await.unwrap();
        assert_eq!(
            (answer.answer.as_str(), answer.provider.as_str()),
            ("no", "fallback")
        );
        assert_eq!((oracle.replayed(), oracle.fell_back()), (0, 1));
        let again = oracle.ask(request("sell?")).await.unwrap();
        assert_eq!(again.call_id, answer.call_id);
    }
}
