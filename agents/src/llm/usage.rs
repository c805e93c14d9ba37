//! Reading the LLM events back: spend and token totals per day, provider and task, and recorded answers by
//! prompt hash (what backtests replay instead of calling a model).

use std::collections::BTreeMap;

use jarvis_domain::llm::{LlmEvent, LlmLedger};
use jarvis_store::{EventStore, StoreError};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use cqrs_es::Aggregate as _;

/// Totals of completed calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageTotals {
    /// Completed calls.
    pub calls: u64,
    /// Of which with estimated token counts.
    pub estimated_calls: u64,
    /// Cost, USD.
    pub cost_usd: Decimal,
    /// Input tokens.
    pub tokens_in: u64,
    /// Output tokens.
    pub tokens_out: u64,
}

impl UsageTotals {
    fn add(&mut self, cost: Decimal, tokens_in: u64, tokens_out: u64, estimated: bool) {
        self.calls += 1;
        self.estimated_calls += u64::from(estimated);
        self.cost_usd += cost;
        self.tokens_in += tokens_in;
        self.tokens_out += tokens_out;
    }
}

/// One UTC day's usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DayUsage {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Completed calls.
    #[serde(flatten)]
    pub total: UsageTotals,
    /// Calls on which every provider failed.
    pub failed_calls: u64,
    /// Calls refused at a budget cap.
    pub refused_calls: u64,
    /// Calls downgraded at a budget cap.
    pub downgraded_calls: u64,
    /// Inputs or tool calls the prompt guard flagged.
    pub flagged: u64,
    /// Budget alerts raised.
    pub alerts: u64,
    /// Per provider.
    pub by_provider: BTreeMap<String, UsageTotals>,
    /// Per task.
    pub by_task: BTreeMap<String, UsageTotals>,
}

/// Usage over every recorded day.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Oldest day first.
    pub days: Vec<DayUsage>,
    /// Sum over the days.
    pub total: UsageTotals,
}

/// Spend and tokens per day, provider and task, from the `LlmLedger` events.
///
/// # Errors
/// [`StoreError`] when the store cannot be read or holds an unreadable LLM event.
pub async fn usage(store: &EventStore) -> Result<Usage, StoreError> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT position, aggregate_id, payload::text FROM events
          WHERE aggregate_type = $1 ORDER BY position",
    )
    .bind(LlmLedger::TYPE)
    .fetch_all(store.pool())
    .await?;
    let mut days: BTreeMap<String, DayUsage> = BTreeMap::new();
    let mut total = UsageTotals::default();
    for (position, ledger, payload) in rows {
        let event: LlmEvent = serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
            position,
            reason: e.to_string(),
        })?;
        let day_name = ledger.strip_prefix("llm@").unwrap_or(&ledger).to_string();
        let day = days.entry(day_name.clone()).or_insert_with(|| DayUsage {
            day: day_name,
            ..Default::default()
        });
        match event {
            LlmEvent::LlmCallCompleted {
                task,
                provider,
                tokens_in,
                tokens_out,
                estimated,
                cost,
                ..
            } => {
                for t in [
                    &mut day.total,
                    &mut total,
                    day.by_provider.entry(provider).or_default(),
                    day.by_task.entry(task).or_default(),
                ] {
                    t.add(cost, tokens_in, tokens_out, estimated);
                }
            }
            LlmEvent::LlmCallFailed { .. } => day.failed_calls += 1,
            LlmEvent::BudgetExceeded { action, .. } if action == "refused" => {
                day.refused_calls += 1
            }
            LlmEvent::BudgetExceeded { .. } => day.downgraded_calls += 1,
            LlmEvent::PromptFlagged { .. } => day.flagged += 1,
            LlmEvent::BudgetAlert { .. } => day.alerts += 1,
            LlmEvent::LlmCallRequested { .. } => {}
        }
    }
    Ok(Usage {
        days: days.into_values().collect(),
        total,
    })
}

/// An answer recorded for a prompt hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedAnswer {
    /// The call that produced it.
    pub call_id: Uuid,
    /// The answer (secrets redacted).
    pub response: String,
    /// The provider.
    pub provider: String,
    /// The model.
    pub model: String,
    /// Input tokens.
    pub tokens_in: u64,
    /// Output tokens.
    pub tokens_out: u64,
    /// Cost, USD.
    pub cost: Decimal,
}

/// The most recent recorded answer to the conversation whose hash is `prompt_hash` (see
/// [`super::router::prompt_hash`]): how a backtest replays an LLM-driven decision without calling a model.
///
/// # Errors
/// [`StoreError`].
pub async fn recorded_answer(
    store: &EventStore,
    prompt_hash: &str,
) -> Result<Option<RecordedAnswer>, StoreError> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT position, payload::text FROM events
          WHERE event_type = 'LlmCallCompleted'
            AND (payload -> 'LlmCallCompleted' ->> 'prompt_hash') = $1
          ORDER BY position DESC LIMIT 1",
    )
    .bind(prompt_hash)
    .fetch_optional(store.pool())
    .await?;
    let Some((position, payload)) = row else {
        return Ok(None);
    };
    match serde_json::from_str(&payload) {
        Ok(LlmEvent::LlmCallCompleted {
            call_id,
            response,
            provider,
            model,
            tokens_in,
            tokens_out,
            cost,
            ..
        }) => Ok(Some(RecordedAnswer {
            call_id,
            response,
            provider,
            model,
            tokens_in,
            tokens_out,
            cost,
        })),
        Ok(_) => Ok(None),
        Err(e) => Err(StoreError::Corrupt {
            position,
            reason: e.to_string(),
        }),
    }
}
