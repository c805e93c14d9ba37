//! Projections of what happened around the trading: `sentiment` (scores per token), `llm` (usage and
//! cost per day, provider, model and task), `conversations` (chat messages and replies) and `backtests`
//! (finished runs with their reports). Each is append-mostly and written with one multi-row statement per
//! step.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use jarvis_domain::backtest::BacktestEvent;
use jarvis_domain::chat::ConversationEvent;
use jarvis_domain::llm::LlmEvent;
use jarvis_domain::sentiment::SentimentEvent;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::projector::Projection;
use crate::source::{Body, Event};
use crate::ProjectionError;

/// One sentiment score of a token.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct SentimentPoint {
    /// Global position of the `SentimentScored` event (the paging cursor).
    pub position: i64,
    /// The token, e.g. `SOL`.
    pub token: String,
    /// Score in [-1, 1].
    pub score: Decimal,
    /// `positive`, `neutral` or `negative`.
    pub label: String,
    /// Confidence in [0, 1].
    pub confidence: Decimal,
    /// The scoring model.
    pub model: String,
    /// The scored text's event type (e.g. `TweetReceived`).
    pub source_type: String,
    /// The scored text's event.
    pub source_event: Uuid,
    /// Event time of the text.
    pub at: DateTime<Utc>,
}

/// LLM usage of one UTC day, provider, model and task.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct LlmUsage {
    /// UTC day.
    pub day: NaiveDate,
    /// The provider that answered (empty for calls that failed on every provider).
    pub provider: String,
    /// The model that answered (empty for failed calls).
    pub model: String,
    /// The task type, e.g. `chat`.
    pub task: String,
    /// Calls answered.
    pub calls: i64,
    /// Calls that failed on every provider.
    pub failures: i64,
    /// Input tokens.
    pub tokens_in: i64,
    /// Output tokens.
    pub tokens_out: i64,
    /// Cost, USD.
    pub cost_usd: Decimal,
    /// Σ latency of the answering requests, ms (÷ `calls` for the mean).
    pub latency_ms_total: i64,
}

/// A chat message: received (`in`) or sent by Jarvis (`out`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct ChatMessage {
    /// Global position (the paging cursor).
    pub position: i64,
    /// The chat.
    pub chat_id: i64,
    /// `in` or `out`.
    pub direction: String,
    /// The message's id in the chat (received), or the id replied to (sent).
    pub message_id: Option<i64>,
    /// The sender (received messages).
    pub user_id: Option<i64>,
    /// The sender's username, if any.
    pub username: Option<String>,
    /// `owner`, `allowlisted` or `public` (received messages).
    pub trust: Option<String>,
    /// The text.
    pub text: String,
    /// Event time.
    pub at: DateTime<Utc>,
}

/// A finished backtest run.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct BacktestRunView {
    /// The run's id.
    pub run_id: String,
    /// The strategy.
    pub strategy: String,
    /// Total return (fraction).
    pub total_return: f64,
    /// Sharpe ratio.
    pub sharpe: f64,
    /// Maximum drawdown (fraction).
    pub max_drawdown: f64,
    /// Trades.
    pub trades: i64,
    /// Final equity.
    pub final_equity: Decimal,
    /// The whole report (`BacktestReport`).
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
    /// What the run was asked.
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
    /// When it finished.
    pub at: DateTime<Utc>,
    /// Global position (the paging cursor).
    pub position: i64,
}

/// The `sentiment` projection.
#[derive(Debug, Default)]
pub struct SentimentProjection;

#[async_trait]
impl Projection for SentimentProjection {
    fn name(&self) -> &'static str {
        "sentiment"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["sentiment"]
    }
    fn aggregate_types(&self) -> &'static [&'static str] {
        &["TokenSentiment"]
    }
    async fn apply(
        &mut self,
        db: &mut PgConnection,
        schema: &str,
        events: &[Event],
    ) -> Result<(), ProjectionError> {
        let rows: Vec<SentimentPoint> = events
            .iter()
            .filter_map(|e| match &e.body {
                Body::Sentiment(SentimentEvent::SentimentScored(s)) => Some(SentimentPoint {
                    position: e.position,
                    token: s.token.clone(),
                    score: s.score,
                    label: s.label.as_str().to_string(),
                    confidence: s.confidence,
                    model: s.model.clone(),
                    source_type: s.source_type.clone(),
                    source_event: s.source_event,
                    at: s.at,
                }),
                _ => None,
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "INSERT INTO {schema}.sentiment (position, token, score, label, confidence, model, source_type, source_event, at)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::numeric[], $4::text[], $5::numeric[], $6::text[],
                                  $7::text[], $8::uuid[], $9::timestamptz[])
             ON CONFLICT (position) DO NOTHING"
        ))
        .bind(rows.iter().map(|r| r.position).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.token.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.score).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.label.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.confidence).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.model.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.source_type.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.source_event).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.at).collect::<Vec<_>>())
        .execute(db)
        .await?;
        Ok(())
    }
}

/// The `llm` projection.
#[derive(Debug, Default)]
pub struct LlmProjection;

#[async_trait]
impl Projection for LlmProjection {
    fn name(&self) -> &'static str {
        "llm"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["llm_usage"]
    }
    fn aggregate_types(&self) -> &'static [&'static str] {
        &["LlmLedger"]
    }
    async fn apply(
        &mut self,
        db: &mut PgConnection,
        schema: &str,
        events: &[Event],
    ) -> Result<(), ProjectionError> {
        let mut sums: BTreeMap<(NaiveDate, String, String, String), LlmUsage> = BTreeMap::new();
        for e in events {
            let Body::Llm(event) = &e.body else { continue };
            match event {
                LlmEvent::LlmCallCompleted {
                    task,
                    provider,
                    model,
                    tokens_in,
                    tokens_out,
                    cost,
                    latency_ms,
                    at,
                    ..
                } => {
                    let u = usage(&mut sums, at.date_naive(), provider, model, task);
                    u.calls += 1;
                    u.tokens_in += *tokens_in as i64;
                    u.tokens_out += *tokens_out as i64;
                    u.cost_usd += *cost;
                    u.latency_ms_total += *latency_ms as i64;
                }
                LlmEvent::LlmCallFailed { task, at, .. } => {
                    usage(&mut sums, at.date_naive(), "", "", task).failures += 1;
                }
                _ => {}
            }
        }
        if sums.is_empty() {
            return Ok(());
        }
        let rows: Vec<&LlmUsage> = sums.values().collect();
        sqlx::query(&format!(
            "INSERT INTO {schema}.llm_usage AS t (day, provider, model, task, calls, failures, tokens_in, tokens_out,
                                                  cost_usd, latency_ms_total)
             SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                                  $7::bigint[], $8::bigint[], $9::numeric[], $10::bigint[])
             ON CONFLICT (day, provider, model, task) DO UPDATE SET calls = t.calls + excluded.calls,
                failures = t.failures + excluded.failures, tokens_in = t.tokens_in + excluded.tokens_in,
                tokens_out = t.tokens_out + excluded.tokens_out, cost_usd = t.cost_usd + excluded.cost_usd,
                latency_ms_total = t.latency_ms_total + excluded.latency_ms_total"
        ))
        .bind(rows.iter().map(|r| r.day).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.provider.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.model.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.task.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.calls).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.failures).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.tokens_in).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.tokens_out).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.cost_usd).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.latency_ms_total).collect::<Vec<_>>())
        .execute(db)
        .await?;
        Ok(())
    }
}

fn usage<'a>(
    sums: &'a mut BTreeMap<(NaiveDate, String, String, String), LlmUsage>,
    day: NaiveDate,
    provider: &str,
    model: &str,
    task: &str,
) -> &'a mut LlmUsage {
    sums.entry((day, provider.into(), model.into(), task.into()))
        .or_insert_with(|| LlmUsage {
            day,
            provider: provider.into(),
            model: model.into(),
            task: task.into(),
            calls: 0,
            failures: 0,
            tokens_in: 0,
            tokens_out: 0,
            cost_usd: Decimal::ZERO,
            latency_ms_total: 0,
        })
}

/// The `conversations` projection.
#[derive(Debug, Default)]
pub struct ConversationsProjection;

#[async_trait]
impl Projection for ConversationsProjection {
    fn name(&self) -> &'static str {
        "conversations"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["chat_messages"]
    }
    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Conversation"]
    }
    async fn apply(
        &mut self,
        db: &mut PgConnection,
        schema: &str,
        events: &[Event],
    ) -> Result<(), ProjectionError> {
        let rows: Vec<ChatMessage> = events
            .iter()
            .filter_map(|e| match &e.body {
                Body::Chat(ConversationEvent::ChatMessageReceived(m)) => Some(ChatMessage {
                    position: e.position,
                    chat_id: m.chat_id,
                    direction: "in".into(),
                    message_id: Some(m.message_id),
                    user_id: Some(m.user_id),
                    username: m.username.clone(),
                    trust: Some(crate::trading::name_of(&m.trust)),
                    text: m.text.clone(),
                    at: m.received_at,
                }),
                Body::Chat(ConversationEvent::ChatReplySent(r)) => Some(ChatMessage {
                    position: e.position,
                    chat_id: r.chat_id,
                    direction: "out".into(),
                    message_id: r.reply_to,
                    user_id: None,
                    username: None,
                    trust: None,
                    text: r.text.clone(),
                    at: r.sent_at,
                }),
                _ => None,
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "INSERT INTO {schema}.chat_messages (position, chat_id, direction, message_id, user_id, username, trust, text, at)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::text[],
                                  $7::text[], $8::text[], $9::timestamptz[])
             ON CONFLICT (position) DO NOTHING"
        ))
        .bind(rows.iter().map(|r| r.position).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.chat_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.direction.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.message_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.user_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.username.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.trust.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.text.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.at).collect::<Vec<_>>())
        .execute(db)
        .await?;
        Ok(())
    }
}

/// The `backtests` projection.
#[derive(Debug, Default)]
pub struct BacktestsProjection;

#[async_trait]
impl Projection for BacktestsProjection {
    fn name(&self) -> &'static str {
        "backtests"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["backtest_runs"]
    }
    fn aggregate_types(&self) -> &'static [&'static str] {
        &["BacktestRun"]
    }
    async fn apply(
        &mut self,
        db: &mut PgConnection,
        schema: &str,
        events: &[Event],
    ) -> Result<(), ProjectionError> {
        for e in events {
            let Body::Backtest(b) = &e.body else { continue };
            let BacktestEvent::BacktestCompleted {
                report,
                parameters,
                at,
            } = b.as_ref();
            sqlx::query(&format!(
                "INSERT INTO {schema}.backtest_runs (run_id, strategy, total_return, sharpe, max_drawdown, trades,
                        final_equity, report, parameters, at, position)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (run_id) DO UPDATE SET strategy = excluded.strategy, total_return = excluded.total_return,
                    sharpe = excluded.sharpe, max_drawdown = excluded.max_drawdown, trades = excluded.trades,
                    final_equity = excluded.final_equity, report = excluded.report,
                    parameters = excluded.parameters, at = excluded.at, position = excluded.position"
            ))
            .bind(&e.aggregate_id)
            .bind(&report.strategy)
            .bind(finite(report.total_return))
            .bind(finite(report.sharpe))
            .bind(finite(report.max_drawdown))
            .bind(report.trades as i64)
            .bind(report.final_equity)
            .bind(serde_json::to_value(report).unwrap_or_default())
            .bind(serde_json::to_value(parameters).unwrap_or_default())
            .bind(at)
            .bind(e.position)
            .execute(&mut *db)
            .await?;
        }
        Ok(())
    }
}

/// JSON has no NaN or infinity: they are stored as 0.
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}
