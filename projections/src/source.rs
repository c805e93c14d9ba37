//! Reading the store's global order for projectors: the same gap-safe `(txid, position)` order as
//! [`jarvis_store::EventStore::read_after`], but lighter. Only the payloads of the aggregate types some
//! projection wants are fetched, and they are decoded straight from the stored JSON text into the domain
//! enums (no intermediate `serde_json::Value`).

use chrono::{DateTime, Utc};
use jarvis_domain::backtest::BacktestEvent;
use jarvis_domain::chat::ConversationEvent;
use jarvis_domain::llm::LlmEvent;
use jarvis_domain::market::{MarketFeedEvent, PriceFeedEvent};
use jarvis_domain::sentiment::SentimentEvent;
use jarvis_domain::trading::order::OrderEvent;
use jarvis_domain::trading::portfolio::PortfolioEvent;
use jarvis_domain::trading::risk::RiskEvent;
use jarvis_store::Checkpoint;
use sqlx::PgPool;
use uuid::Uuid;

use crate::ProjectionError;

/// One event as projectors see it: its place in the global order and its decoded body.
#[derive(Debug, Clone)]
pub struct Event {
    /// Global position.
    pub position: i64,
    /// The writing transaction (`xid8`).
    pub txid: u64,
    /// The aggregate's id (e.g. a backtest run's id).
    pub aggregate_id: String,
    /// The story it belongs to.
    pub correlation_id: Option<Uuid>,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// The decoded event, or [`Body::Other`] when no projection wants its aggregate type.
    pub body: Body,
}

impl Event {
    /// The checkpoint just after this event.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            txid: self.txid,
            position: self.position,
        }
    }
}

/// A decoded event, by aggregate type.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub enum Body {
    Market(MarketFeedEvent),
    Price(PriceFeedEvent),
    Order(OrderEvent),
    Portfolio(PortfolioEvent),
    Risk(RiskEvent),
    Sentiment(SentimentEvent),
    Llm(LlmEvent),
    Chat(ConversationEvent),
    Backtest(Box<BacktestEvent>),
    /// An event no projection of this run reads.
    Other,
}

/// The aggregate types projectors can decode.
pub const DECODED_TYPES: &[&str] = &[
    "MarketFeed",
    "PriceFeed",
    "Order",
    "Portfolio",
    "RiskBook",
    "TokenSentiment",
    "LlmLedger",
    "Conversation",
    "BacktestRun",
];

fn decode(aggregate_type: &str, payload: &str) -> Result<Body, serde_json::Error> {
    Ok(match aggregate_type {
        "MarketFeed" => Body::Market(serde_json::from_str(payload)?),
        "PriceFeed" => Body::Price(serde_json::from_str(payload)?),
        "Order" => Body::Order(serde_json::from_str(payload)?),
        "Portfolio" => Body::Portfolio(serde_json::from_str(payload)?),
        "RiskBook" => Body::Risk(serde_json::from_str(payload)?),
        "TokenSentiment" => Body::Sentiment(serde_json::from_str(payload)?),
        "LlmLedger" => Body::Llm(serde_json::from_str(payload)?),
        "Conversation" => Body::Chat(serde_json::from_str(payload)?),
        "BacktestRun" => Body::Backtest(Box::new(serde_json::from_str(payload)?)),
        _ => Body::Other,
    })
}

type Row = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
);

// `ORDER BY events.txid`, qualified: unqualified, `txid` names the output column `txid::text::bigint`, and
// Postgres then sorts every remaining row instead of walking the `(txid, position)` index (20× slower).

/// Up to `limit` events after `after` in gap-safe order; payloads are fetched and decoded only for
/// `aggregate_types` (the others come as [`Body::Other`], still moving the checkpoint).
///
/// # Errors
/// [`ProjectionError::Database`], or [`ProjectionError::Corrupt`] naming the position of a payload that
/// does not decode.
pub async fn read_after(
    pool: &PgPool,
    after: Checkpoint,
    limit: i64,
    aggregate_types: &[&str],
) -> Result<Vec<Event>, ProjectionError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT position, txid::text::bigint, aggregate_type, aggregate_id,
                CASE WHEN aggregate_type = ANY($4) THEN payload::text END,
                metadata ->> 'correlation_id', recorded_at
           FROM events
          WHERE (txid, position) > ($1::text::xid8, $2)
            AND txid < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY events.txid, events.position
          LIMIT $3",
    )
    .bind(after.txid.to_string())
    .bind(after.position)
    .bind(limit)
    .bind(aggregate_types)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(
            |(position, txid, aggregate_type, aggregate_id, payload, correlation, recorded_at)| {
                let body = match payload {
                    Some(p) => {
                        decode(&aggregate_type, &p).map_err(|e| ProjectionError::Corrupt {
                            position,
                            reason: format!("{aggregate_type} payload: {e}"),
                        })?
                    }
                    None => Body::Other,
                };
                Ok(Event {
                    position,
                    txid: txid as u64,
                    aggregate_id,
                    correlation_id: correlation.and_then(|c| Uuid::parse_str(&c).ok()),
                    recorded_at,
                    body,
                })
            },
        )
        .collect()
}

/// The raw read the benchmark compares with: the same events, every column as text, nothing decoded.
/// Returns how many rows were read and the last checkpoint.
///
/// # Errors
/// [`ProjectionError::Database`].
pub async fn read_raw_after(
    pool: &PgPool,
    after: Checkpoint,
    limit: i64,
) -> Result<(usize, Option<Checkpoint>), ProjectionError> {
    #[allow(clippy::type_complexity)]
    let rows: Vec<(i64, i64, String, String, String, String, String)> = sqlx::query_as(
        "SELECT position, txid::text::bigint, aggregate_type, aggregate_id, event_type,
                payload::text, metadata::text
           FROM events
          WHERE (txid, position) > ($1::text::xid8, $2)
            AND txid < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY events.txid, events.position
          LIMIT $3",
    )
    .bind(after.txid.to_string())
    .bind(after.position)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let last = rows.last().map(|r| Checkpoint {
        txid: r.1 as u64,
        position: r.0,
    });
    Ok((rows.len(), last))
}
