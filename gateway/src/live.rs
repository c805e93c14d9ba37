//! The read models a running gateway serves: hot ones from the projections in memory, history from
//! Postgres, and events from the store.

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use jarvis_store::{Browse, Checkpoint, EventStore};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::error::ApiError;
use crate::models::*;

/// Events straight from the store: the explorer's list, one event, and causal chains.
#[derive(Debug, Clone)]
pub struct StoreEvents {
    store: EventStore,
}

fn position_cursor(position: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("p:{position}"))
}

fn parse_position_cursor(cursor: &str) -> Result<i64, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("p:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "cursor = {cursor:?} is not one this list made; pass next_cursor unchanged"
            ))
        })
}

impl StoreEvents {
    /// Over `store`.
    pub fn new(store: EventStore) -> Self {
        Self { store }
    }

    /// A page of events, newest first.
    ///
    /// # Errors
    /// A bad cursor, or the store.
    pub async fn events(
        &self,
        page: &PageQuery,
        correlation_id: Option<Uuid>,
        event_type: Option<&str>,
    ) -> ReadResult<Page<Event>> {
        let before = page
            .cursor
            .as_deref()
            .map(parse_position_cursor)
            .transpose()?;
        let mut events = self
            .store
            .browse(&Browse {
                before,
                correlation_id,
                event_type: event_type.map(str::to_string),
                from: page.from,
                to: page.to,
                limit: page.limit as i64 + 1,
            })
            .await?;
        let more = events.len() > page.limit as usize;
        events.truncate(page.limit as usize);
        let next_cursor = more
            .then(|| events.last().map(|e| position_cursor(e.position)))
            .flatten();
        Ok(Page {
            items: events.into_iter().map(Event::from).collect(),
            next_cursor,
        })
    }

    /// One event.
    ///
    /// # Errors
    /// The store.
    pub async fn event(&self, id: Uuid) -> ReadResult<Option<Event>> {
        Ok(self.store.event_by_id(id).await?.map(Event::from))
    }

    /// The causes of an event, root first.
    ///
    /// # Errors
    /// The store.
    pub async fn causal_chain(&self, id: Uuid) -> ReadResult<Option<Vec<Event>>> {
        let Some(event) = self.store.event_by_id(id).await? else {
            return Ok(None);
        };
        let chain = self.store.causal_chain(event).await?;
        Ok(Some(chain.into_iter().map(Event::from).collect()))
    }

    /// Events stored but not yet published by the relay.
    pub async fn relay_lag(&self) -> Option<i64> {
        let checkpoint: Checkpoint = self.store.load_checkpoint("relay").await.ok()?;
        self.store.count_after(checkpoint).await.ok()
    }
}

/// What a running gateway serves: the projections' read models (hot trading state from memory, history
/// from their tables) and events from the store. (The gateway keeps the newest page of trades, serialised,
/// for [`crate::HOT_PAGE_TTL`]: see [`crate::HotPage`].)
#[derive(Debug, Clone)]
pub struct LiveModels {
    events: StoreEvents,
    read: jarvis_projections::ReadModels,
}

impl LiveModels {
    /// Over the store and the projections' read models.
    pub fn new(store: EventStore, read: jarvis_projections::ReadModels) -> Self {
        Self {
            events: StoreEvents::new(store),
            read,
        }
    }
}

fn projection_error(e: jarvis_projections::ProjectionError) -> ReadError {
    match e {
        jarvis_projections::ProjectionError::BadQuery(m) => ReadError::Api(ApiError::Validation(m)),
        other => ReadError::Internal(format!("projections: {other}")),
    }
}

/// The projections' query for a page: the cursor is a global position (`p:<n>`).
fn their_query(page: &PageQuery) -> ReadResult<jarvis_projections::query::PageQuery> {
    Ok(jarvis_projections::query::PageQuery {
        limit: Some(page.limit),
        cursor: page
            .cursor
            .as_deref()
            .map(parse_position_cursor)
            .transpose()?,
        from: page.from,
        to: page.to,
    })
}

fn our_page<T, U>(page: jarvis_projections::query::Page<T>, map: impl Fn(T) -> U) -> Page<U> {
    Page {
        next_cursor: page.next_cursor.map(position_cursor),
        items: page.items.into_iter().map(map).collect(),
    }
}

fn order(o: jarvis_projections::orders::OrderView) -> Order {
    Order {
        order_id: o.order_id,
        symbol: o.symbol,
        side: o.side,
        quantity: o.quantity,
        status: o.status,
        filled_quantity: o.filled_quantity,
        avg_fill_price: o.avg_fill_price,
        venue: o.venue,
        reasons: o.reason.into_iter().collect(),
        proposed_at: o.proposed_at,
        updated_at: o.updated_at,
        correlation_id: Some(o.correlation_id),
    }
}

fn trade(f: jarvis_projections::orders::FillView) -> Trade {
    Trade {
        fill_id: f.fill_id,
        order_id: f.order_id,
        symbol: f.symbol,
        side: f.side,
        quantity: f.quantity,
        price: f.price,
        fee: f.fee,
        filled_at: f.filled_at,
    }
}

fn rejection(r: jarvis_projections::trading::Rejection) -> Rejection {
    Rejection {
        order_id: r.order_id,
        symbol: r.symbol,
        reasons: r.rules,
        decided_at: r.at,
    }
}

fn price(p: jarvis_projections::trading::PriceView) -> Price {
    Price {
        symbol: p.symbol,
        price: p.price,
        at: p.at,
        source: p.source,
    }
}

fn sentiment(s: jarvis_projections::activity::SentimentPoint) -> SentimentPoint {
    use rust_decimal::prelude::ToPrimitive;
    SentimentPoint {
        token: s.token,
        score: s.score.to_f64().unwrap_or_default(),
        confidence: s.confidence.to_f64().unwrap_or_default(),
        model: s.model,
        at: s.at,
    }
}

fn position(p: &jarvis_projections::trading::PositionView) -> Position {
    let mark = p.last_price.unwrap_or(p.avg_cost);
    Position {
        symbol: p.symbol.clone(),
        quantity: p.quantity,
        avg_cost: p.avg_cost,
        price: p.last_price,
        market_value: p.quantity * mark,
        unrealized_pnl: (mark - p.avg_cost) * p.quantity,
        realized_pnl: p.realized_pnl,
    }
}

fn message(m: jarvis_projections::activity::ChatMessage) -> ChatMessage {
    ChatMessage {
        message_id: m
            .message_id
            .map_or_else(|| format!("p{}", m.position), |id| id.to_string()),
        chat_id: m.chat_id.to_string(),
        role: if m.direction == "in" || m.direction == "inbound" || m.direction == "received" {
            "user".into()
        } else {
            "assistant".into()
        },
        text: m.text,
        at: m.at,
    }
}

fn backtest(r: jarvis_projections::activity::BacktestRunView, with_curve: bool) -> BacktestRun {
    let curve = with_curve.then(|| {
        r.report
            .get("equity_curve")
            .and_then(|c| serde_json::from_value::<Vec<EquityPoint>>(c.clone()).ok())
            .unwrap_or_default()
    });
    BacktestRun {
        run_id: r.run_id,
        started_at: r.at,
        finished_at: Some(r.at),
        status: "finished".into(),
        config: serde_json::json!({ "strategy": r.strategy, "parameters": r.parameters }),
        metrics: serde_json::json!({
            "total_return": r.total_return,
            "sharpe": r.sharpe,
            "max_drawdown": r.max_drawdown,
            "trades": r.trades,
            "final_equity": r.final_equity,
        }),
        equity_curve: curve,
    }
}

fn bucket(map: std::collections::BTreeMap<String, (Decimal, u64)>) -> Vec<UsageBucket> {
    map.into_iter()
        .map(|(key, (cost_usd, calls))| UsageBucket {
            key,
            cost_usd,
            calls,
        })
        .collect()
}

#[async_trait]
impl ReadModels for LiveModels {
    async fn portfolio(&self) -> ReadResult<Portfolio> {
        let snapshot = self.read.trading();
        // Before the pipeline opens the portfolio (no candle yet): an empty one, `as_of` null.
        let Some(p) = &snapshot.portfolio else {
            return Ok(Portfolio {
                positions: snapshot.positions.iter().map(position).collect(),
                halted: snapshot.risk.halted,
                ..Portfolio::default()
            });
        };
        Ok(Portfolio {
            quote_asset: p.quote_asset.clone(),
            cash: p.cash,
            equity: p.equity,
            high_water_mark: p.high_water_mark,
            day_start_equity: p.day_start_equity,
            realized_pnl: p.realized_pnl,
            unrealized_pnl: p.unrealized_pnl,
            positions: snapshot.positions.iter().map(position).collect(),
            as_of: p.updated_at,
            halted: snapshot.risk.halted,
        })
    }

    async fn equity(&self, page: &PageQuery) -> ReadResult<Page<EquityPoint>> {
        // The projections page the curve by time: the cursor is the oldest time of the previous page.
        let to = match page.cursor.as_deref() {
            Some(c) => Some(parse_time_cursor(c)?),
            None => page.to,
        };
        let mut points = self
            .read
            .equity_curve(&jarvis_projections::query::PageQuery {
                limit: Some(page.limit),
                cursor: None,
                from: page.from,
                to,
            })
            .await
            .map_err(projection_error)?;
        points.sort_by_key(|p| std::cmp::Reverse(p.at));
        let next_cursor = (points.len() == page.limit as usize)
            .then(|| points.last().map(|p| time_cursor(p.at)))
            .flatten();
        Ok(Page {
            items: points
                .into_iter()
                .map(|p| EquityPoint {
                    at: p.at,
                    equity: p.equity,
                    cash: p.cash,
                })
                .collect(),
            next_cursor,
        })
    }

    async fn positions(&self) -> ReadResult<Vec<Position>> {
        Ok(self.read.positions().iter().map(position).collect())
    }

    async fn orders(
        &self,
        page: &PageQuery,
        status: Option<&str>,
        symbol: Option<&str>,
    ) -> ReadResult<Page<Order>> {
        Ok(our_page(
            self.read
                .orders(&their_query(page)?, status, symbol)
                .await
                .map_err(projection_error)?,
            order,
        ))
    }

    async fn order(&self, id: Uuid) -> ReadResult<Option<Order>> {
        Ok(self
            .read
            .order(id)
            .await
            .map_err(projection_error)?
            .map(order))
    }

    async fn trades(&self, page: &PageQuery, symbol: Option<&str>) -> ReadResult<Page<Trade>> {
        Ok(our_page(
            self.read
                .trades(&their_query(page)?, symbol)
                .await
                .map_err(projection_error)?,
            trade,
        ))
    }

    async fn risk(&self) -> ReadResult<RiskState> {
        let risk = self.read.risk();
        let last = self
            .read
            .rejections(&jarvis_projections::query::PageQuery {
                limit: Some(10),
                ..Default::default()
            })
            .await
            .map_err(projection_error)?;
        let today = Utc::now().date_naive();
        let last_rejections: Vec<Rejection> = last.items.into_iter().map(rejection).collect();
        Ok(RiskState {
            halted: risk.halted,
            halt_reason: risk.halt_reason.or(risk.halt_rule),
            halted_at: if risk.halted { risk.changed_at } else { None },
            rejections_today: last_rejections
                .iter()
                .filter(|r| r.decided_at.date_naive() == today)
                .count() as u64,
            last_rejections,
        })
    }

    async fn rejections(&self, page: &PageQuery) -> ReadResult<Page<Rejection>> {
        Ok(our_page(
            self.read
                .rejections(&their_query(page)?)
                .await
                .map_err(projection_error)?,
            rejection,
        ))
    }

    async fn prices(&self) -> ReadResult<Vec<Price>> {
        Ok(self.read.prices().into_iter().map(price).collect())
    }

    async fn price_history(&self, symbol: &str, page: &PageQuery) -> ReadResult<Page<Price>> {
        let to = match page.cursor.as_deref() {
            Some(c) => Some(parse_time_cursor(c)?),
            None => page.to,
        };
        let prices = self
            .read
            .recent_prices(
                symbol,
                &jarvis_projections::query::PageQuery {
                    limit: Some(page.limit),
                    cursor: None,
                    from: page.from,
                    to,
                },
            )
            .await
            .map_err(projection_error)?;
        let next_cursor = (prices.len() == page.limit as usize)
            .then(|| prices.last().map(|p| time_cursor(p.at)))
            .flatten();
        Ok(Page {
            items: prices.into_iter().map(price).collect(),
            next_cursor,
        })
    }

    async fn sentiment(&self) -> ReadResult<Vec<SentimentPoint>> {
        let tokens = self
            .read
            .sentiment_tokens()
            .await
            .map_err(projection_error)?;
        let mut latest = Vec::new();
        for token in tokens {
            let page = self
                .read
                .sentiment(
                    Some(&token.token),
                    &jarvis_projections::query::PageQuery {
                        limit: Some(1),
                        ..Default::default()
                    },
                )
                .await
                .map_err(projection_error)?;
            latest.extend(page.items.into_iter().map(sentiment));
        }
        Ok(latest)
    }

    async fn sentiment_history(
        &self,
        token: &str,
        page: &PageQuery,
    ) -> ReadResult<Page<SentimentPoint>> {
        Ok(our_page(
            self.read
                .sentiment(Some(token), &their_query(page)?)
                .await
                .map_err(projection_error)?,
            sentiment,
        ))
    }

    async fn llm_usage(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> ReadResult<LlmUsage> {
        let rows = self
            .read
            .llm_usage(&jarvis_projections::query::PageQuery {
                limit: Some(1_000),
                cursor: None,
                from,
                to,
            })
            .await
            .map_err(projection_error)?;
        let mut usage = LlmUsage {
            from,
            to,
            ..LlmUsage::default()
        };
        let (mut days, mut providers, mut tasks) = Default::default();
        let add = |map: &mut std::collections::BTreeMap<String, (Decimal, u64)>,
                   key: String,
                   cost,
                   calls| {
            let entry = map.entry(key).or_insert((Decimal::ZERO, 0));
            entry.0 += cost;
            entry.1 += calls;
        };
        for row in rows {
            let calls = row.calls.max(0) as u64;
            usage.total_cost_usd += row.cost_usd;
            usage.calls += calls;
            usage.failures += row.failures.max(0) as u64;
            usage.prompt_tokens += row.tokens_in.max(0) as u64;
            usage.completion_tokens += row.tokens_out.max(0) as u64;
            add(&mut days, row.day.to_string(), row.cost_usd, calls);
            add(&mut providers, row.provider, row.cost_usd, calls);
            add(&mut tasks, row.task, row.cost_usd, calls);
        }
        usage.by_day = bucket(days);
        usage.by_provider = bucket(providers);
        usage.by_task = bucket(tasks);
        Ok(usage)
    }

    async fn agents(&self) -> ReadResult<Vec<AgentHealth>> {
        Ok(self
            .read
            .agents()
            .into_iter()
            .map(|a| AgentHealth {
                agent: a.agent,
                instance: a.instance,
                status: if a.down { "down".into() } else { a.status },
                last_seen: a.last_seen,
                interval_ms: a.heartbeat.interval_ms,
                consumers: a
                    .heartbeat
                    .consumers
                    .into_iter()
                    .map(|c| ConsumerLag {
                        name: c.name,
                        num_pending: c.num_pending,
                        num_ack_pending: c.num_ack_pending,
                        num_redelivered: c.num_redelivered,
                    })
                    .collect(),
                dlq_messages: a.heartbeat.dlq_messages,
            })
            .collect())
    }

    async fn events(
        &self,
        page: &PageQuery,
        correlation_id: Option<Uuid>,
        event_type: Option<&str>,
    ) -> ReadResult<Page<Event>> {
        self.events.events(page, correlation_id, event_type).await
    }

    async fn event(&self, id: Uuid) -> ReadResult<Option<Event>> {
        self.events.event(id).await
    }

    async fn causal_chain(&self, id: Uuid) -> ReadResult<Option<Vec<Event>>> {
        self.events.causal_chain(id).await
    }

    async fn conversations(&self, page: &PageQuery) -> ReadResult<Page<Conversation>> {
        // The latest messages, grouped by chat.
        let messages = self
            .read
            .conversations(
                None,
                &jarvis_projections::query::PageQuery {
                    limit: Some(1_000),
                    cursor: None,
                    from: page.from,
                    to: page.to,
                },
            )
            .await
            .map_err(projection_error)?;
        let mut chats: std::collections::BTreeMap<i64, Conversation> = Default::default();
        for m in messages.items {
            let chat = chats.entry(m.chat_id).or_insert(Conversation {
                chat_id: m.chat_id.to_string(),
                last_message_at: m.at,
                messages: 0,
            });
            chat.messages += 1;
            chat.last_message_at = chat.last_message_at.max(m.at);
        }
        let mut list: Vec<Conversation> = chats.into_values().collect();
        sort_newest_first(&mut list, |c| c.last_message_at);
        Ok(page_of(
            &list,
            |c| c.last_message_at,
            &PageQuery {
                from: None,
                to: None,
                ..page.clone()
            },
        )?)
    }

    async fn messages(&self, chat_id: &str, page: &PageQuery) -> ReadResult<Page<ChatMessage>> {
        let chat: i64 = chat_id.parse().map_err(|_| {
            ApiError::Validation(format!("chat_id = {chat_id:?}: a chat id is an integer"))
        })?;
        Ok(our_page(
            self.read
                .conversations(Some(chat), &their_query(page)?)
                .await
                .map_err(projection_error)?,
            message,
        ))
    }

    async fn backtests(&self, page: &PageQuery) -> ReadResult<Page<BacktestRun>> {
        Ok(our_page(
            self.read
                .backtests(&their_query(page)?)
                .await
                .map_err(projection_error)?,
            |r| backtest(r, false),
        ))
    }

    async fn backtest(&self, id: &str) -> ReadResult<Option<BacktestRun>> {
        Ok(self
            .read
            .backtest(id)
            .await
            .map_err(projection_error)?
            .map(|r| backtest(r, true)))
    }

    async fn gauges(&self) -> Gauges {
        use rust_decimal::prelude::ToPrimitive;
        let projector_lag = match self.read.status().await {
            Ok(list) => list
                .into_iter()
                .map(|s| (s.name.clone(), s.lag_events))
                .collect(),
            Err(_) => Vec::new(),
        };
        let llm_cost_usd = self
            .llm_usage(None, None)
            .await
            .ok()
            .and_then(|u| u.total_cost_usd.to_f64());
        Gauges {
            relay_lag: self.events.relay_lag().await,
            projector_lag,
            trades_total: self
                .read
                .trading()
                .portfolio
                .as_ref()
                .map(|p| p.trades.max(0) as u64),
            llm_cost_usd,
        }
    }
}

fn time_cursor(at: DateTime<Utc>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("t:{}", at.to_rfc3339()))
}

fn parse_time_cursor(cursor: &str) -> Result<DateTime<Utc>, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.strip_prefix("t:")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        })
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "cursor = {cursor:?} is not one this list made; pass next_cursor unchanged"
            ))
        })
}
