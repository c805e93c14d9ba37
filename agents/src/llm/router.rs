//! The router: one `ask` = prompt guard → budget admission (the day's `LlmLedger`) → the route's providers
//! in order, each behind its circuit breaker, with timeout and retries → the answer and its cost recorded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use jarvis_domain::llm::{
    ledger_id, Budget, Downgrade, LlmCommand, LlmEvent, LlmLedger, LlmLedgerError,
};
use jarvis_domain::EventMetadata;
use jarvis_store::{execute_with_retry, Cqrs, EventStore};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::config::{LlmConfig, ProviderKind, Target};
use super::guard::{allowed_tool_calls, quote_user_text, screen};
use super::provider::{
    ChatProvider, ChatRequest, ChatResponse, Message, OllamaClient, OpenAiClient, ProviderError,
    ToolCall, ToolSpec,
};
use super::redact::Redactor;
use super::resilience::{backoff, BreakerState, CircuitBreaker};
use crate::runtime::SNAPSHOT_EVERY;

/// Retries of a ledger command after conflicts with other callers (every call of a day shares a ledger).
const LEDGER_RETRIES: u32 = 200;
/// Longest excerpt of flagged text kept in `PromptFlagged`.
const EXCERPT_CHARS: usize = 500;
/// Longest answer kept in `LlmCallCompleted` (events must stay under the store's 900 KiB limit).
const MAX_RECORDED_ANSWER_BYTES: usize = 256 * 1024;

/// `text` cut to at most `max` bytes, on a character boundary, marked when cut.
fn truncate(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [truncated {} bytes]", &text[..end], text.len() - end)
}

/// A question for a model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// The task type, which picks the route (e.g. `chat`, `trading`).
    pub task: String,
    /// The prompt (trusted: written by Jarvis or its owner).
    pub prompt: String,
    /// Untrusted text to include (a tweet, a Telegram message): screened by the prompt guard first.
    #[serde(default)]
    pub user_text: Option<String>,
    /// A system message.
    #[serde(default)]
    pub system: Option<String>,
    /// Tools to offer; only those on the task's allowlist are sent.
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    /// The story this call belongs to (default: a new one).
    #[serde(default)]
    pub correlation_id: Option<Uuid>,
}

/// A model's answer, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The call's id.
    pub call_id: Uuid,
    /// The answer (secrets redacted).
    pub answer: String,
    /// The provider that answered.
    pub provider: String,
    /// The model that answered.
    pub model: String,
    /// Input tokens.
    pub tokens_in: u64,
    /// Output tokens.
    pub tokens_out: u64,
    /// Whether the token counts are estimated.
    pub estimated: bool,
    /// Cost, USD.
    pub cost: Decimal,
    /// Latency of the answering request, ms.
    pub latency_ms: u64,
    /// Whether a budget cap sent the call to the downgrade route.
    pub downgraded: bool,
    /// The model's tool calls that the task's allowlist permits.
    pub tool_calls: Vec<ToolCall>,
    /// SHA-256 (hex) of the model input.
    pub prompt_hash: String,
}

/// Why `ask` gave no answer. Each case is recorded as an event where there is something to record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// The request is malformed: unknown task, empty or oversized text (nothing is recorded).
    #[error("{0}")]
    BadRequest(String),
    /// A budget cap or the prompt guard refused the call (recorded as `BudgetExceeded` or `PromptFlagged`).
    #[error("refused: {0}")]
    Refused(String),
    /// Every provider of the route failed (recorded as `LlmCallFailed`).
    #[error("every provider failed: {0}")]
    Failed(String),
    /// The event store failed; the caller may retry.
    #[error("event store: {0}")]
    Store(String),
    /// Replaying: no answer was recorded for this prompt hash, and no fallback is configured.
    #[error("no recorded LLM answer for prompt hash {0} (replays never call a live provider; configure a fallback to go on without one)")]
    NotRecorded(String),
}

fn store_error(e: AggregateError<LlmLedgerError>) -> AskError {
    AskError::Store(e.to_string())
}

/// SHA-256 (hex) of a conversation: the key recorded answers are replayed by.
pub fn prompt_hash(messages: &[Message]) -> String {
    let canonical = serde_json::to_string(messages).unwrap_or_default();
    format!("{:x}", Sha256::digest(canonical.as_bytes()))
}

/// The conversation a request becomes: the system message, if any, then the prompt with the untrusted user
/// text quoted after it. Its [`prompt_hash`] is what recorded answers are replayed by.
pub fn conversation(request: &AskRequest) -> Vec<Message> {
    let mut user = request.prompt.clone();
    if let Some(text) = &request.user_text {
        user = format!("{user}\n\n{}", quote_user_text(text));
    }
    let mut messages = Vec::new();
    if let Some(system) = &request.system {
        messages.push(Message::new("system", system.clone()));
    }
    messages.push(Message::new("user", user));
    messages
}

/// Token count estimated from text length (about four bytes a token), for providers that send no usage.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// Checks a request's shape against the configuration (known task, text neither empty nor too large);
/// returns the task's route. Nothing is recorded for a request that fails this.
///
/// # Errors
/// [`AskError::BadRequest`] naming what is wrong.
pub fn check_request(config: &LlmConfig, request: &AskRequest) -> Result<Vec<Target>, AskError> {
    let route = config.route(&request.task).ok_or_else(|| {
        AskError::BadRequest(format!(
            "unknown task {:?}: configured tasks are {}",
            request.task,
            config
                .routes
                .keys()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    if request.prompt.trim().is_empty() {
        return Err(AskError::BadRequest("the prompt is empty".into()));
    }
    if request
        .user_text
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        return Err(AskError::BadRequest("user_text is empty".into()));
    }
    let size = request.prompt.len()
        + request.user_text.as_ref().map_or(0, String::len)
        + request.system.as_ref().map_or(0, String::len);
    if size > config.max_prompt_bytes {
        return Err(AskError::BadRequest(format!(
            "the prompt is {size} bytes; at most {} are accepted (llm.max_prompt_bytes)",
            config.max_prompt_bytes
        )));
    }
    Ok(route)
}

/// The LLM router. Cheap to share (`Arc`); every method takes `&self`.
pub struct LlmRouter {
    config: LlmConfig,
    store: EventStore,
    cqrs: Cqrs<LlmLedger>,
    providers: BTreeMap<String, Arc<dyn ChatProvider>>,
    breakers: BTreeMap<String, CircuitBreaker>,
    redactor: Redactor,
}

impl std::fmt::Debug for LlmRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmRouter")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl LlmRouter {
    /// A router over the configured providers, recording in `store`.
    pub fn new(config: LlmConfig, store: EventStore) -> Self {
        let providers = config
            .providers
            .iter()
            .map(|(name, p)| {
                let client: Arc<dyn ChatProvider> = match p.kind {
                    ProviderKind::Openai => {
                        Arc::new(OpenAiClient::new(&p.base_url, p.api_key.clone()))
                    }
                    ProviderKind::Ollama => Arc::new(OllamaClient::new(&p.base_url)),
                };
                (name.clone(), client)
            })
            .collect();
        let breakers = config
            .providers
            .keys()
            .map(|name| {
                (
                    name.clone(),
                    CircuitBreaker::new(
                        config.breaker_failures,
                        Duration::from_millis(config.breaker_cooldown_ms),
                    ),
                )
            })
            .collect();
        let redactor =
            Redactor::with_secrets(config.providers.values().filter_map(|p| p.api_key.clone()));
        Self {
            cqrs: store.snapshot_cqrs::<LlmLedger>(SNAPSHOT_EVERY, ()),
            store,
            config,
            providers,
            breakers,
            redactor,
        }
    }

    /// The event store it records in.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// Each provider's breaker state.
    pub fn breakers(&self) -> BTreeMap<String, BreakerState> {
        self.breakers
            .iter()
            .map(|(n, b)| (n.clone(), b.state()))
            .collect()
    }

    fn budget(&self, task: &str) -> Budget {
        Budget {
            daily_usd: self.config.budget.daily_usd,
            task_usd: self.config.budget.tasks.get(task).copied(),
            alert_fraction: self.config.budget.alert_fraction,
            on_cap: self.config.budget.on_cap,
        }
    }

    fn worst_case(&self, route: &[Target], tokens_in: u64) -> Decimal {
        route
            .iter()
            .map(|t| self.config.price(t).cost(tokens_in, self.config.max_tokens))
            .max()
            .unwrap_or(Decimal::ZERO)
    }

    async fn execute(
        &self,
        ledger: &str,
        command: LlmCommand,
        metadata: &EventMetadata,
    ) -> Result<(), AskError> {
        execute_with_retry(&self.cqrs, ledger, command, metadata, LEDGER_RETRIES)
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    /// Asks the task's route. Records `LlmCallRequested` and `LlmCallCompleted`/`LlmCallFailed`, plus
    /// `BudgetAlert`, `BudgetExceeded` and `PromptFlagged` where they apply.
    ///
    /// # Errors
    /// [`AskError`]: a bad request, a refusal (budget, prompt guard), every provider failing, or the store.
    pub async fn ask(&self, request: AskRequest) -> Result<Answer, AskError> {
        let route = check_request(&self.config, &request)?;
        let call_id = Uuid::now_v7();
        let now = Utc::now();
        let ledger = ledger_id(now.date_naive());
        let metadata = EventMetadata {
            correlation_id: request.correlation_id.unwrap_or(call_id),
            causation_id: call_id,
            source: "llm".into(),
        };
        let allowlist = self.config.tools_of(&request.task).to_vec();
        if let Some(text) = &request.user_text {
            let hits = screen(text);
            let can_act = !allowlist.is_empty();
            if !hits.is_empty() {
                let action = if can_act { "refused" } else { "quoted" };
                let text_hash = format!("{:x}", Sha256::digest(text.as_bytes()));
                let excerpt: String = self
                    .redactor
                    .redact(text)
                    .chars()
                    .take(EXCERPT_CHARS)
                    .collect();
                self.execute(
                    &ledger,
                    LlmCommand::FlagPrompt {
                        call_id,
                        task: request.task.clone(),
                        prompt_hash: text_hash,
                        patterns: hits.iter().map(|h| h.to_string()).collect(),
                        excerpt,
                        action: action.into(),
                        at: now,
                    },
                    &metadata,
                )
                .await?;
                tracing::warn!(task = %request.task, patterns = ?hits, action, "prompt guard flagged user text");
                if can_act {
                    return Err(AskError::Refused(format!(
                        "the prompt guard flagged the user text ({}); task {:?} can act, so it was not sent",
                        hits.join(", "),
                        request.task
                    )));
                }
            }
        }
        let messages = conversation(&request);
        let hash = prompt_hash(&messages);
        let input_bytes: usize = messages.iter().map(|m| m.content.len() + 16).sum();
        let downgrade_route = self.config.downgrade_route(&request.task);
        let downgrade = (!downgrade_route.is_empty()).then(|| Downgrade {
            worst_case_usd: self.worst_case(&downgrade_route, input_bytes as u64),
            route: downgrade_route.iter().map(Target::to_string).collect(),
        });
        let route_names: Vec<String> = route.iter().map(Target::to_string).collect();
        let redacted_prompt = self
            .redactor
            .redact(&serde_json::to_string(&messages).unwrap_or_default());
        // Tokens never outnumber bytes: the byte count bounds the input side from above.
        let worst_case_usd = self.worst_case(&route, input_bytes as u64);
        // While only calls in flight stand in the way of the budget, wait for them (at most one timeout).
        let deadline = Instant::now() + Duration::from_millis(self.config.timeout_ms);
        let mut waits = 0;
        let admitted = loop {
            let wait_if_busy = Instant::now() < deadline;
            self.execute(
                &ledger,
                LlmCommand::RequestCall {
                    call_id,
                    task: request.task.clone(),
                    route: route_names.clone(),
                    prompt_hash: hash.clone(),
                    prompt: redacted_prompt.clone(),
                    worst_case_usd,
                    budget: self.budget(&request.task),
                    downgrade: downgrade.clone(),
                    wait_if_busy,
                    at: now,
                },
                &metadata,
            )
            .await?;
            let state: LlmLedger = self
                .store
                .load(&ledger, Some(SNAPSHOT_EVERY))
                .await
                .map_err(store_error)?;
            if let Some(admitted) = state.in_flight(call_id) {
                break admitted.clone();
            }
            let refused = self
                .store
                .events_caused_by(call_id)
                .await
                .map_err(|e| AskError::Store(e.to_string()))?
                .iter()
                .any(|e| e.event_type == "BudgetExceeded");
            if refused || !wait_if_busy {
                return Err(AskError::Refused(format!(
                    "LLM budget cap: spent {} USD today and {} USD reserved by calls in flight; daily cap {}, task {:?} cap {}; on_cap = {}",
                    state.total().cost,
                    state.reserved_usd(now),
                    self.config.budget.daily_usd.map_or("none".into(), |d| d.to_string()),
                    request.task,
                    self.config.budget.tasks.get(&request.task).map_or("none".into(), |d| d.to_string()),
                    self.config.budget.on_cap,
                )));
            }
            waits += 1;
            tokio::time::sleep(backoff(Duration::from_millis(20), waits.min(3))).await;
        };
        let tools: Vec<ToolSpec> = request
            .tools
            .iter()
            .filter(|t| allowlist.contains(&t.name))
            .cloned()
            .collect();
        let mut failures = Vec::new();
        for step in &admitted.route {
            let Ok(target) = Target::parse(step) else {
                continue;
            };
            let chat = ChatRequest {
                model: target.model.clone(),
                messages: messages.clone(),
                max_tokens: self.config.max_tokens,
                tools: tools.clone(),
            };
            match self.try_provider(&target, &chat).await {
                Ok((response, latency_ms)) => {
                    return self
                        .complete(
                            &ledger,
                            &metadata,
                            call_id,
                            &request.task,
                            &target,
                            &messages,
                            response,
                            latency_ms,
                            admitted.downgraded,
                            hash,
                            &allowlist,
                        )
                        .await;
                }
                Err(reason) => failures.push(format!("{target}: {reason}")),
            }
        }
        let reason = self.redactor.redact(&failures.join("; "));
        self.execute(
            &ledger,
            LlmCommand::FailCall {
                call_id,
                reason: reason.clone(),
                at: Utc::now(),
            },
            &metadata,
        )
        .await?;
        Err(AskError::Failed(reason))
    }

    /// One provider: breaker, timeout, retries on 429 (after `Retry-After`) and 5xx (jittered back-off).
    async fn try_provider(
        &self,
        target: &Target,
        chat: &ChatRequest,
    ) -> Result<(ChatResponse, u64), String> {
        let (Some(provider), Some(breaker)) = (
            self.providers.get(&target.provider),
            self.breakers.get(&target.provider),
        ) else {
            return Err("no such provider".into());
        };
        if !breaker.try_acquire() {
            return Err("circuit breaker open".into());
        }
        let timeout = Duration::from_millis(
            self.config
                .providers
                .get(&target.provider)
                .and_then(|p| p.timeout_ms)
                .unwrap_or(self.config.timeout_ms),
        );
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let error = match provider.chat(chat, timeout).await {
                Ok(response) => {
                    breaker.record_success();
                    return Ok((response, started.elapsed().as_millis() as u64));
                }
                Err(e) => e,
            };
            attempt += 1;
            tracing::info!(provider = %target.provider, model = %target.model, attempt, cause = %error, "LLM request failed");
            let wait = match &error {
                _ if !error.retryable() || attempt > self.config.retries => None,
                ProviderError::RateLimited {
                    retry_after: Some(d),
                } => (d.as_millis() as u64 <= self.config.max_retry_after_ms).then_some(*d),
                _ => Some(backoff(
                    Duration::from_millis(self.config.backoff_ms),
                    attempt,
                )),
            };
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => {
                    breaker.record_failure();
                    return Err(error.to_string());
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn complete(
        &self,
        ledger: &str,
        metadata: &EventMetadata,
        call_id: Uuid,
        task: &str,
        target: &Target,
        messages: &[Message],
        response: ChatResponse,
        latency_ms: u64,
        downgraded: bool,
        prompt_hash: String,
        allowlist: &[String],
    ) -> Result<Answer, AskError> {
        let (tokens_in, tokens_out, estimated) = match (response.tokens_in, response.tokens_out) {
            (Some(i), Some(o)) => (i, o, false),
            (i, o) => (
                i.unwrap_or_else(|| {
                    messages
                        .iter()
                        .map(|m| estimate_tokens(&m.content) + 4)
                        .sum()
                }),
                o.unwrap_or_else(|| estimate_tokens(&response.text)),
                true,
            ),
        };
        let cost = self.config.price(target).cost(tokens_in, tokens_out);
        let text = truncate(
            self.redactor.redact(&response.text),
            MAX_RECORDED_ANSWER_BYTES,
        );
        let (tool_calls, refused) = allowed_tool_calls(response.tool_calls, allowlist);
        let at = Utc::now();
        self.execute(
            ledger,
            LlmCommand::CompleteCall {
                call_id,
                provider: target.provider.clone(),
                model: target.model.clone(),
                tokens_in,
                tokens_out,
                estimated,
                cost,
                latency_ms,
                response: text.clone(),
                budget: self.budget(task),
                at,
            },
            metadata,
        )
        .await?;
        if !refused.is_empty() {
            let names: Vec<String> = refused
                .iter()
                .map(|c| format!("tool_not_allowed:{}", c.name))
                .collect();
            tracing::warn!(task, tools = ?names, "model called tools outside the task's allowlist; dropped");
            self.execute(
                ledger,
                LlmCommand::FlagPrompt {
                    call_id,
                    task: task.to_string(),
                    prompt_hash: prompt_hash.clone(),
                    patterns: names,
                    excerpt: self
                        .redactor
                        .redact(&serde_json::to_string(&refused).unwrap_or_default())
                        .chars()
                        .take(EXCERPT_CHARS)
                        .collect(),
                    action: "dropped".into(),
                    at,
                },
                metadata,
            )
            .await?;
        }
        Ok(Answer {
            call_id,
            answer: text,
            provider: target.provider.clone(),
            model: target.model.clone(),
            tokens_in,
            tokens_out,
            estimated,
            cost,
            latency_ms,
            downgraded,
            tool_calls,
            prompt_hash,
        })
    }

    /// The answer recorded for the conversation `prompt_hash` in the story `correlation_id` (the first, if
    /// several), as [`Oracle::ask_once`](super::Oracle::ask_once) returns it instead of asking again.
    ///
    /// # Errors
    /// [`AskError::Store`]: the store cannot be read, or the recorded event does not decode.
    pub async fn answered(
        &self,
        correlation_id: Uuid,
        prompt_hash: &str,
    ) -> Result<Option<Answer>, AskError> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT payload::text FROM events
              WHERE event_type = 'LlmCallCompleted'
                AND payload -> 'LlmCallCompleted' ->> 'prompt_hash' = $1
                AND metadata ->> 'correlation_id' = $2
              ORDER BY position LIMIT 1",
        )
        .bind(prompt_hash)
        .bind(correlation_id.to_string())
        .fetch_optional(self.store.pool())
        .await
        .map_err(|e| AskError::Store(e.to_string()))?;
        let Some((payload,)) = row else {
            return Ok(None);
        };
        match serde_json::from_str::<LlmEvent>(&payload) {
            Ok(LlmEvent::LlmCallCompleted {
                call_id,
                prompt_hash,
                provider,
                model,
                tokens_in,
                tokens_out,
                estimated,
                cost,
                latency_ms,
                response,
                ..
            }) => Ok(Some(Answer {
                call_id,
                answer: response,
                provider,
                model,
                tokens_in,
                tokens_out,
                estimated,
                cost,
                latency_ms,
                downgraded: false,
                tool_calls: Vec::new(),
                prompt_hash,
            })),
            Ok(_) => Ok(None),
            Err(e) => Err(AskError::Store(format!(
                "a recorded LlmCallCompleted does not decode: {e}"
            ))),
        }
    }

    /// The ledger of the UTC day of `at`.
    ///
    /// # Errors
    /// [`AskError::Store`].
    pub async fn ledger(&self, at: DateTime<Utc>) -> Result<LlmLedger, AskError> {
        self.store
            .load(&ledger_id(at.date_naive()), Some(SNAPSHOT_EVERY))
            .await
            .map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_estimates_round_up() {
        let m = vec![Message::new("user", "hello")];
        assert_eq!(prompt_hash(&m), prompt_hash(&m.clone()));
        assert_ne!(
            prompt_hash(&m),
            prompt_hash(&[Message::new("user", "hello!")])
        );
        assert_eq!(prompt_hash(&m).len(), 64);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(truncate("héllo".into(), 2), "h… [truncated 5 bytes]");
        assert_eq!(truncate("hello".into(), 5), "hello");
    }
}
