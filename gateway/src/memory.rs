//! [`MemoryModels`]: read models held in memory as plain lists, for handler tests and the benchmark.

use std::sync::RwLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::models::*;

/// Everything the read models hold.
#[derive(Debug, Clone, Default)]
pub struct Data {
    /// The portfolio.
    pub portfolio: Portfolio,
    /// Equity curve.
    pub equity: Vec<EquityPoint>,
    /// Orders.
    pub orders: Vec<Order>,
    /// Fills.
    pub trades: Vec<Trade>,
    /// Risk book.
    pub risk: RiskState,
    /// Rejections.
    pub rejections: Vec<Rejection>,
    /// Price history (latest per symbol is derived).
    pub prices: Vec<Price>,
    /// Sentiment history.
    pub sentiment: Vec<SentimentPoint>,
    /// LLM usage.
    pub llm: LlmUsage,
    /// Agents.
    pub agents: Vec<AgentHealth>,
    /// Events.
    pub events: Vec<Event>,
    /// Conversations.
    pub conversations: Vec<Conversation>,
    /// Messages.
    pub messages: Vec<ChatMessage>,
    /// Backtests.
    pub backtests: Vec<BacktestRun>,
}

/// Read models in memory.
#[derive(Debug, Default)]
pub struct MemoryModels {
    data: RwLock<Data>,
}

impl Data {
    /// Sorts every list newest first.
    pub fn sorted(mut self) -> Self {
        sort_newest_first(&mut self.equity, |p| p.at);
        sort_newest_first(&mut self.orders, |o| o.proposed_at);
        sort_newest_first(&mut self.trades, |t| t.filled_at);
        sort_newest_first(&mut self.rejections, |r| r.decided_at);
        sort_newest_first(&mut self.prices, |p| p.at);
        sort_newest_first(&mut self.sentiment, |s| s.at);
        sort_newest_first(&mut self.events, |e| e.recorded_at);
        sort_newest_first(&mut self.conversations, |c| c.last_message_at);
        sort_newest_first(&mut self.messages, |m| m.at);
        sort_newest_first(&mut self.backtests, |r| r.started_at);
        self
    }
}

impl MemoryModels {
    /// Serves `data`.
    pub fn new(data: Data) -> Self {
        Self {
            data: RwLock::new(data.sorted()),
        }
    }

    /// Replaces what is served.
    pub fn set(&self, data: Data) {
        *self.data.write().unwrap_or_else(|e| e.into_inner()) = data.sorted();
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Data> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn latest<T: Clone, K: Ord>(
    items: &[T],
    key: impl Fn(&T) -> K,
    at: impl Fn(&T) -> DateTime<Utc>,
) -> Vec<T> {
    let mut best: std::collections::BTreeMap<K, &T> = std::collections::BTreeMap::new();
    for item in items {
        let k = key(item);
        match best.get(&k) {
            Some(b) if at(b) >= at(item) => {}
            _ => {
                best.insert(k, item);
            }
        }
    }
    best.into_values().cloned().collect()
}

#[async_trait]
impl ReadModels for MemoryModels {
    async fn portfolio(&self) -> ReadResult<Portfolio> {
        Ok(self.read().portfolio.clone())
    }

    async fn equity(&self, page: &PageQuery) -> ReadResult<Page<EquityPoint>> {
        Ok(page_of(&self.read().equity, |p| p.at, page)?)
    }

    async fn positions(&self) -> ReadResult<Vec<Position>> {
        Ok(self.read().portfolio.positions.clone())
    }

    async fn orders(
        &self,
        page: &PageQuery,
        status: Option<&str>,
        symbol: Option<&str>,
    ) -> ReadResult<Page<Order>> {
        let data = self.read();
        let orders: Vec<Order> = data
            .orders
            .iter()
            .filter(|o| status.is_none_or(|s| o.status == s))
            .filter(|o| symbol.is_none_or(|s| o.symbol.eq_ignore_ascii_case(s)))
            .cloned()
            .collect();
        Ok(page_of(&orders, |o| o.proposed_at, page)?)
    }

    async fn order(&self, id: Uuid) -> ReadResult<Option<Order>> {
        Ok(self
            .read()
            .orders
            .iter()
            .find(|o| o.order_id == id)
            .cloned())
    }

    async fn trades(&self, page: &PageQuery, symbol: Option<&str>) -> ReadResult<Page<Trade>> {
        let data = self.read();
        if symbol.is_none() {
            return Ok(page_of(&data.trades, |t| t.filled_at, page)?);
        }
        let trades: Vec<Trade> = data
            .trades
            .iter()
            .filter(|t| symbol.is_none_or(|s| t.symbol.eq_ignore_ascii_case(s)))
            .cloned()
            .collect();
        Ok(page_of(&trades, |t| t.filled_at, page)?)
    }

    async fn risk(&self) -> ReadResult<RiskState> {
        Ok(self.read().risk.clone())
    }

    async fn rejections(&self, page: &PageQuery) -> ReadResult<Page<Rejection>> {
        Ok(page_of(&self.read().rejections, |r| r.decided_at, page)?)
    }

    async fn prices(&self) -> ReadResult<Vec<Price>> {
        Ok(latest(&self.read().prices, |p| p.symbol.clone(), |p| p.at))
    }

    async fn price_history(&self, symbol: &str, page: &PageQuery) -> ReadResult<Page<Price>> {
        let prices: Vec<Price> = self
            .read()
            .prices
            .iter()
            .filter(|p| p.symbol.eq_ignore_ascii_case(symbol))
            .cloned()
            .collect();
        Ok(page_of(&prices, |p| p.at, page)?)
    }

    async fn sentiment(&self) -> ReadResult<Vec<SentimentPoint>> {
        Ok(latest(
            &self.read().sentiment,
            |s| s.token.clone(),
            |s| s.at,
        ))
    }

    async fn sentiment_history(
        &self,
        token: &str,
        page: &PageQuery,
    ) -> ReadResult<Page<SentimentPoint>> {
        let points: Vec<SentimentPoint> = self
            .read()
            .sentiment
            .iter()
            .filter(|s| s.token.eq_ignore_ascii_case(token))
            .cloned()
            .collect();
        Ok(page_of(&points, |s| s.at, page)?)
    }

    async fn llm_usage(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> ReadResult<LlmUsage> {
        Ok(LlmUsage {
            from,
            to,
            ..self.read().llm.clone()
        })
    }

    async fn agents(&self) -> ReadResult<Vec<AgentHealth>> {
        Ok(self.read().agents.clone())
    }

    async fn events(
        &self,
        page: &PageQuery,
        correlation_id: Option<Uuid>,
        event_type: Option<&str>,
    ) -> ReadResult<Page<Event>> {
        let events: Vec<Event> = self
            .read()
            .events
            .iter()
            .filter(|e| correlation_id.is_none_or(|c| e.correlation_id == c))
            .filter(|e| event_type.is_none_or(|t| e.event_type == t))
            .cloned()
            .collect();
        Ok(page_of(&events, |e| e.recorded_at, page)?)
    }

    async fn event(&self, id: Uuid) -> ReadResult<Option<Event>> {
        Ok(self
            .read()
            .events
            .iter()
            .find(|e| e.event_id == id)
            .cloned())
    }

    async fn causal_chain(&self, id: Uuid) -> ReadResult<Option<Vec<Event>>> {
        let data = self.read();
        let find = |id: Uuid| data.events.iter().find(|e| e.event_id == id).cloned();
        let Some(mut event) = find(id) else {
            return Ok(None);
        };
        let mut chain = vec![event.clone()];
        while event.causation_id != event.event_id && chain.len() < 1_000 {
            match find(event.causation_id) {
                Some(cause) => {
                    chain.push(cause.clone());
                    event = cause;
                }
                None => break,
            }
        }
        chain.reverse();
        Ok(Some(chain))
    }

    async fn conversations(&self, page: &PageQuery) -> ReadResult<Page<Conversation>> {
        Ok(page_of(
            &self.read().conversations,
            |c| c.last_message_at,
            page,
        )?)
    }

    async fn messages(&self, chat_id: &str, page: &PageQuery) -> ReadResult<Page<ChatMessage>> {
        let messages: Vec<ChatMessage> = self
            .read()
            .messages
            .iter()
            .filter(|m| m.chat_id == chat_id)
            .cloned()
            .collect();
        Ok(page_of(&messages, |m| m.at, page)?)
    }

    async fn backtests(&self, page: &PageQuery) -> ReadResult<Page<BacktestRun>> {
        let runs: Vec<BacktestRun> = self
            .read()
            .backtests
            .iter()
            .map(|r| BacktestRun {
                equity_curve: None,
                ..r.clone()
            })
            .collect();
        Ok(page_of(&runs, |r| r.started_at, page)?)
    }

    async fn backtest(&self, id: &str) -> ReadResult<Option<BacktestRun>> {
        Ok(self
            .read()
            .backtests
            .iter()
            .find(|r| r.run_id == id)
            .cloned())
    }

    async fn gauges(&self) -> Gauges {
        let data = self.read();
        Gauges {
            trades_total: Some(data.trades.len() as u64),
            llm_cost_usd: rust_decimal::prelude::ToPrimitive::to_f64(&data.llm.total_cost_usd),
            ..Gauges::default()
        }
    }
}
