//! Projection `orders`: every order's life (`orders`) and its fills, the trades (`fills`).

use std::collections::{BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jarvis_domain::trading::order::OrderEvent;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::projector::Projection;
use crate::source::{Body, Event};
use crate::ProjectionError;

/// An order and where it is in its life.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct OrderView {
    /// The order.
    pub order_id: Uuid,
    /// The pair.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Base units proposed.
    pub quantity: Decimal,
    /// `proposed`, `approved`, `rejected`, `submitted`, `partially_filled`, `filled` or `failed`.
    pub status: String,
    /// The price the proposal relied on.
    pub reference_price: Decimal,
    /// The strategy that proposed it.
    pub strategy: String,
    /// The proposal's one-line rationale.
    pub summary: String,
    /// The venue it was sent to.
    pub venue: Option<String>,
    /// Base units filled.
    pub filled_quantity: Decimal,
    /// Average fill price.
    pub avg_fill_price: Option<Decimal>,
    /// Fees paid.
    pub fees: Decimal,
    /// Why it was rejected or failed.
    pub reason: Option<String>,
    /// When it was proposed (event time).
    pub proposed_at: DateTime<Utc>,
    /// Event time of its last change.
    pub updated_at: DateTime<Utc>,
    /// The story it belongs to (see the audit trail).
    pub correlation_id: Uuid,
    /// Global position of its proposal (the paging cursor).
    pub position: i64,
    /// Global position of its last event.
    pub last_position: i64,
}

/// One fill: a trade.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct FillView {
    /// Global position of the `OrderFilled` event (the paging cursor).
    pub position: i64,
    /// The venue's id of the fill.
    pub fill_id: String,
    /// The order.
    pub order_id: Uuid,
    /// The pair.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Base units.
    pub quantity: Decimal,
    /// Price.
    pub price: Decimal,
    /// Fee, in the quote asset.
    pub fee: Decimal,
    /// The venue.
    pub venue: Option<String>,
    /// When the venue filled it.
    pub filled_at: DateTime<Utc>,
}

const ORDER_COLUMNS: &str = "order_id, symbol, side, quantity, status, reference_price, strategy, summary, venue, \
     filled_quantity, avg_fill_price, fees, reason, proposed_at, updated_at, correlation_id, position, last_position";

/// The `orders` projection.
#[derive(Debug, Default)]
pub struct OrdersProjection;

fn order_id(event: &OrderEvent) -> Uuid {
    match event {
        OrderEvent::TradeProposed(p) => p.order_id.0,
        OrderEvent::TradeApproved(e) => e.order_id.0,
        OrderEvent::TradeRejected(e) => e.order_id.0,
        OrderEvent::OrderSubmitted(e) => e.order_id.0,
        OrderEvent::OrderFilled(e) => e.order_id.0,
        OrderEvent::OrderFailed(e) => e.order_id.0,
        OrderEvent::QuoteRejected(e) => e.order_id.0,
        OrderEvent::OrderSent(e) => e.order_id.0,
    }
}

#[async_trait]
impl Projection for OrdersProjection {
    fn name(&self) -> &'static str {
        "orders"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["orders", "fills"]
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Order"]
    }

    async fn apply(
        &mut self,
        db: &mut PgConnection,
        schema: &str,
        events: &[Event],
    ) -> Result<(), ProjectionError> {
        let orders: Vec<(&Event, &OrderEvent)> = events
            .iter()
            .filter_map(|e| match &e.body {
                Body::Order(o) => Some((e, o)),
                _ => None,
            })
            .collect();
        if orders.is_empty() {
            return Ok(());
        }
        // Orders proposed before this page: their current rows, in one query (an order proposed on this
        // page has no row yet).
        let here: HashSet<Uuid> = orders
            .iter()
            .filter(|(_, o)| matches!(o, OrderEvent::TradeProposed(_)))
            .map(|(_, o)| order_id(o))
            .collect();
        let earlier: Vec<Uuid> = orders
            .iter()
            .map(|(_, o)| order_id(o))
            .filter(|id| !here.contains(id))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut rows: HashMap<Uuid, OrderView> = if earlier.is_empty() {
            HashMap::new()
        } else {
            sqlx::query_as::<_, OrderView>(&format!(
                "SELECT {ORDER_COLUMNS} FROM {schema}.orders WHERE order_id = ANY($1)"
            ))
            .bind(&earlier)
            .fetch_all(&mut *db)
            .await?
            .into_iter()
            .map(|o| (o.order_id, o))
            .collect()
        };
        let mut fills: Vec<FillView> = Vec::new();
        for (event, order) in orders {
            let id = order_id(order);
            if let OrderEvent::TradeProposed(p) = order {
                rows.entry(id).or_insert_with(|| OrderView {
                    order_id: id,
                    symbol: p.symbol.as_str().to_string(),
                    side: p.side.to_string(),
                    quantity: p.quantity,
                    status: "proposed".into(),
                    reference_price: p.reference.price,
                    strategy: p.rationale.strategy.to_string(),
                    summary: p.rationale.summary.to_string(),
                    venue: None,
                    filled_quantity: Decimal::ZERO,
                    avg_fill_price: None,
                    fees: Decimal::ZERO,
                    reason: None,
                    proposed_at: p.proposed_at,
                    updated_at: p.proposed_at,
                    correlation_id: event.correlation_id.unwrap_or_default(),
                    position: event.position,
                    last_position: event.position,
                });
                continue;
            }
            let Some(row) = rows.get_mut(&id) else {
                tracing::warn!(order_id = %id, position = event.position, "order event without a proposal; skipped");
                continue;
            };
            row.last_position = event.position;
            match order {
                OrderEvent::TradeProposed(_) => {}
                OrderEvent::TradeApproved(e) => {
                    row.status = "approved".into();
                    row.updated_at = e.decided_at;
                }
                OrderEvent::TradeRejected(e) => {
                    row.status = "rejected".into();
                    row.reason = Some(
                        e.reasons
                            .iter()
                            .map(|r| r.detail.as_str())
                            .collect::<Vec<_>>()
                            .join("; "),
                    );
                    row.updated_at = e.decided_at;
                }
                OrderEvent::OrderSubmitted(e) => {
                    row.status = "submitted".into();
                    row.venue = Some(e.venue.clone());
                    row.updated_at = e.submitted_at;
                }
                OrderEvent::OrderFilled(f) => {
                    let before = row.filled_quantity;
                    let total = before + f.quantity;
                    if !total.is_zero() {
                        let paid =
                            row.avg_fill_price.unwrap_or_default() * before + f.price * f.quantity;
                        row.avg_fill_price = Some((paid / total).round_dp(12).normalize());
                    }
                    row.filled_quantity = f.filled_total;
                    row.fees += f.fee;
                    row.status = if f.complete {
                        "filled"
                    } else {
                        "partially_filled"
                    }
                    .into();
                    row.updated_at = f.filled_at;
                    fills.push(FillView {
                        position: event.position,
                        fill_id: f.fill_id.clone(),
                        order_id: id,
                        symbol: f.symbol.as_str().to_string(),
                        side: f.side.to_string(),
                        quantity: f.quantity,
                        price: f.price,
                        fee: f.fee,
                        venue: f
                            .swap
                            .as_ref()
                            .map(|s| s.venue.clone())
                            .or_else(|| row.venue.clone()),
                        filled_at: f.filled_at,
                    });
                }
                OrderEvent::OrderFailed(e) => {
                    row.status = "failed".into();
                    row.reason = Some(e.reason.clone());
                    row.updated_at = e.failed_at;
                }
                OrderEvent::QuoteRejected(e) => {
                    row.status = "failed".into();
                    row.reason = Some(format!(
                        "quote rejected by the pre-sign gate: {}",
                        serde_json::to_string(&e.checks).unwrap_or_default()
                    ));
                    row.updated_at = e.rejected_at;
                }
                OrderEvent::OrderSent(e) => row.updated_at = e.sent_at,
            }
        }
        let rows: Vec<&OrderView> = rows.values().collect();
        sqlx::query(&format!(
            "INSERT INTO {schema}.orders ({ORDER_COLUMNS})
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::numeric[], $5::text[], $6::numeric[],
                                  $7::text[], $8::text[], $9::text[], $10::numeric[], $11::numeric[], $12::numeric[],
                                  $13::text[], $14::timestamptz[], $15::timestamptz[], $16::uuid[], $17::bigint[],
                                  $18::bigint[])
             ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, venue = excluded.venue,
                filled_quantity = excluded.filled_quantity, avg_fill_price = excluded.avg_fill_price,
                fees = excluded.fees, reason = excluded.reason, updated_at = excluded.updated_at,
                last_position = excluded.last_position"
        ))
        .bind(rows.iter().map(|r| r.order_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.symbol.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.side.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.quantity).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.reference_price).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.strategy.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.summary.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.venue.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.filled_quantity).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.avg_fill_price).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.fees).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.reason.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.proposed_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.correlation_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.position).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.last_position).collect::<Vec<_>>())
        .execute(&mut *db)
        .await?;
        if !fills.is_empty() {
            sqlx::query(&format!(
                "INSERT INTO {schema}.fills (position, fill_id, order_id, symbol, side, quantity, price, fee, venue, filled_at)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::numeric[],
                                      $7::numeric[], $8::numeric[], $9::text[], $10::timestamptz[])
                 ON CONFLICT (position) DO NOTHING"
            ))
            .bind(fills.iter().map(|f| f.position).collect::<Vec<_>>())
            .bind(fills.iter().map(|f| f.fill_id.as_str()).collect::<Vec<_>>())
            .bind(fills.iter().map(|f| f.order_id).collect::<Vec<_>>())
            .bind(fills.iter().map(|f| f.symbol.as_str()).collect::<Vec<_>>())
            .bind(fills.iter().map(|f| f.side.as_str()).collect::<Vec<_>>())
            .bind(fills.iter().map(|f| f.quantity).collect::<Vec<_>>())
            .bind(fills.iter().map(|f| f.price).collect::<Vec<_>>())
            .bind(fills.iter().map(|f| f.fee).collect::<Vec<_>>())
            .bind(fills.iter().map(|f| f.venue.as_deref()).collect::<Vec<_>>())
            .bind(fills.iter().map(|f| f.filled_at).collect::<Vec<_>>())
            .execute(&mut *db)
            .await?;
        }
        Ok(())
    }
}
