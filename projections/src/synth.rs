//! A synthetic but realistic history for `jarvis bench projections` and the tests: hourly candles of three
//! pairs, portfolio marks, a paper trade every few hours (proposal → verdict → submit → fill → position
//! change → realised P&L), risk refusals, a halt and resume, sentiment scores, LLM calls, chat messages and
//! a backtest run. The payloads are the domain's own events serialised as cqrs-es stores them; they are
//! inserted with one multi-row statement per page, as the store's repository writes.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use jarvis_domain::chat::{ConversationEvent, ReceivedMessage, SentReply, Trust};
use jarvis_domain::llm::LlmEvent;
use jarvis_domain::market::MarketFeedEvent;
use jarvis_domain::sentiment::{SentimentEvent, SentimentLabel, SentimentScore};
use jarvis_domain::trading::order::{
    OrderEvent, OrderFilled, OrderSubmitted, TradeApproved, TradeProposal,
};
use jarvis_domain::trading::portfolio::PortfolioEvent;
use jarvis_domain::trading::risk::RiskEvent;
use jarvis_domain::trading::values::{
    OrderId, PricePoint, Rationale, RiskRule, RiskViolation, Side,
};
use jarvis_domain::{Candle, Symbol};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// One event to insert.
#[derive(Debug, Clone)]
pub struct SynthEvent {
    /// Aggregate type.
    pub aggregate_type: &'static str,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Event type.
    pub event_type: String,
    /// The wrapped payload, as cqrs-es stores it.
    pub payload: String,
    /// Correlation id.
    pub correlation_id: Uuid,
}

struct Gen {
    out: Vec<SynthEvent>,
}

impl Gen {
    fn push<E: Serialize>(
        &mut self,
        aggregate_type: &'static str,
        aggregate_id: String,
        event: &E,
        corr: Uuid,
    ) {
        let payload = serde_json::to_string(event).unwrap_or_default();
        let event_type = payload.split('"').nth(1).unwrap_or("Unknown").to_string();
        self.out.push(SynthEvent {
            aggregate_type,
            aggregate_id,
            event_type,
            payload,
            correlation_id: corr,
        });
    }
}

fn d(n: i64, scale: u32) -> Decimal {
    Decimal::new(n, scale)
}

/// At least `n` events (a whole hour is generated at a time), deterministic.
pub fn history(n: usize) -> Vec<SynthEvent> {
    history_at(0, n)
}

/// At least `n` events from hour `first_hour` on (the portfolio is opened at hour 0 only); histories of
/// disjoint hour ranges never share an order id.
pub fn history_at(first_hour: i64, n: usize) -> Vec<SynthEvent> {
    let mut g = Gen {
        out: Vec::with_capacity(n + 16),
    };
    let start: DateTime<Utc> = Utc
        .with_ymd_and_hms(2021, 12, 6, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let symbols: Vec<(Symbol, &str, i64)> = [
        ("SOL/USDT", "SOL", 19_000),
        ("BTC/USDT", "BTC", 4_900_000),
        ("ETH/USDT", "ETH", 410_000),
    ]
    .iter()
    .filter_map(|(s, t, p)| Symbol::new_checked(s).ok().map(|sym| (sym, *t, *p)))
    .collect();
    let root = Uuid::from_u128(1);
    if first_hour == 0 {
        g.push(
            "Portfolio",
            "main".into(),
            &PortfolioEvent::PortfolioOpened {
                quote_asset: "USDT".into(),
                initial_cash: d(10_000, 0),
                at: start,
            },
            root,
        );
    }
    let mut cash = d(10_000, 0);
    let mut held: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
    let mut hwm = cash;
    let mut hour: i64 = first_hour;
    while g.out.len() < n {
        let open = start + Duration::hours(hour);
        let close = open + Duration::hours(1);
        let day = open.format("%Y-%m-%d").to_string();
        let corr = Uuid::from_u128(0x1000_0000 + hour as u128);
        let mut prices = Vec::new();
        for (i, (symbol, _, base)) in symbols.iter().enumerate() {
            // A wave, so that trades win and lose.
            let wave = ((hour + i as i64 * 7) % 48 - 24).abs();
            let close_price = d(base + base * wave / 200, 2);
            let candle = Candle {
                symbol: symbol.clone(),
                open_time: open,
                close_time: close,
                open: close_price,
                high: close_price + d(1, 2),
                low: close_price - d(1, 2),
                close: close_price,
                volume: d(1000, 0),
            };
            g.push(
                "MarketFeed",
                format!("{symbol}@{day}"),
                &MarketFeedEvent::CandleClosed(candle),
                corr,
            );
            prices.push(PricePoint {
                symbol: symbol.clone(),
                price: close_price,
                at: close,
            });
        }
        if hour % 6 == 3 {
            // A paper trade of the first symbol every six hours.
            let (symbol, _, _) = &symbols[0];
            let price = prices[0].price;
            // Buy when flat, sell what is held otherwise: the position never goes short.
            let buy = held.get(symbol.as_str()).is_none_or(|(q, _)| q.is_zero());
            let order_id = OrderId(Uuid::from_u128(0x2000_0000 + hour as u128));
            let quantity = d(5, 0);
            let side = if buy { Side::Buy } else { Side::Sell };
            let fee = (price * quantity * d(1, 3)).round_dp(8);
            let oid = order_id.0.to_string();
            g.push(
                "Order",
                oid.clone(),
                &OrderEvent::TradeProposed(TradeProposal {
                    order_id,
                    symbol: symbol.clone(),
                    side,
                    quantity,
                    reference: prices[0].clone(),
                    proposed_at: close,
                    rationale: Rationale {
                        strategy: "ema_cross".into(),
                        rule: if buy { "cross_up" } else { "cross_down" }.into(),
                        inputs: serde_json::json!({"fast": 12, "slow": 26}).into(),
                        evidence: vec![],
                        summary: format!("{side} {quantity} {symbol} on the EMA cross").into(),
                    },
                }),
                corr,
            );
            if hour % 60 == 57 {
                // A refusal.
                let reasons = vec![RiskViolation {
                    rule: RiskRule::MaxNotionalPerOrder,
                    limit: Some(d(500, 0)),
                    actual: Some(price * quantity),
                    detail: "notional above the limit".into(),
                }];
                g.push(
                    "RiskBook",
                    "main".into(),
                    &RiskEvent::OrderRefused {
                        order_id,
                        symbol: symbol.clone(),
                        reasons: reasons.clone(),
                        at: close,
                    },
                    corr,
                );
                g.push(
                    "Order",
                    oid,
                    &OrderEvent::TradeRejected(jarvis_domain::trading::order::TradeRejected {
                        order_id,
                        symbol: symbol.clone(),
                        reasons,
                        decided_at: close,
                    }),
                    corr,
                );
            } else {
                g.push(
                    "RiskBook",
                    "main".into(),
                    &RiskEvent::OrderAdmitted {
                        order_id,
                        symbol: symbol.clone(),
                        side,
                        notional: price * quantity,
                        at: close,
                    },
                    corr,
                );
                g.push(
                    "Order",
                    oid.clone(),
                    &OrderEvent::TradeApproved(TradeApproved {
                        order_id,
                        symbol: symbol.clone(),
                        side,
                        quantity,
                        decided_at: close,
                    }),
                    corr,
                );
                g.push(
                    "Order",
                    oid.clone(),
                    &OrderEvent::OrderSubmitted(OrderSubmitted {
                        order_id,
                        venue: "paper".into(),
                        submitted_at: close,
                    }),
                    corr,
                );
                let fill_at = close + Duration::minutes(1);
                g.push(
                    "Order",
                    oid.clone(),
                    &OrderEvent::OrderFilled(OrderFilled {
                        order_id,
                        fill_id: format!("paper-{oid}-1"),
                        symbol: symbol.clone(),
                        side,
                        quantity,
                        price,
                        fee,
                        filled_at: fill_at,
                        filled_total: quantity,
                        complete: true,
                        swap: None,
                    }),
                    corr,
                );
                let (qty, cost) = held.get(symbol.as_str()).copied().unwrap_or_default();
                let (qty_after, cost_after) = if buy {
                    cash -= price * quantity + fee;
                    let q = qty + quantity;
                    (q, ((cost * qty + price * quantity) / q).round_dp(8))
                } else {
                    cash += price * quantity - fee;
                    (
                        qty - quantity,
                        if qty - quantity > Decimal::ZERO {
                            cost
                        } else {
                            Decimal::ZERO
                        },
                    )
                };
                held.insert(symbol.as_str().to_string(), (qty_after, cost_after));
                g.push(
                    "Portfolio",
                    "main".into(),
                    &PortfolioEvent::PositionChanged {
                        order_id,
                        fill_id: format!("paper-{oid}-1"),
                        symbol: symbol.clone(),
                        side,
                        quantity,
                        price,
                        fee,
                        position_after: qty_after,
                        avg_cost_after: cost_after,
                        cash_after: cash,
                        at: fill_at,
                    },
                    corr,
                );
                if !buy {
                    g.push(
                        "Portfolio",
                        "main".into(),
                        &PortfolioEvent::PnlRealized {
                            order_id,
                            fill_id: format!("paper-{oid}-1"),
                            symbol: symbol.clone(),
                            quantity,
                            pnl: (price - cost) * quantity,
                            fee,
                            at: fill_at,
                        },
                        corr,
                    );
                }
            }
        }
        let equity = cash
            + held
                .iter()
                .map(|(s, (q, _))| {
                    *q * prices
                        .iter()
                        .find(|p| p.symbol.as_str() == s)
                        .map_or(Decimal::ZERO, |p| p.price)
                })
                .sum::<Decimal>();
        hwm = hwm.max(equity);
        g.push(
            "Portfolio",
            "main".into(),
            &PortfolioEvent::PortfolioMarked {
                at: close,
                prices: prices.clone(),
                equity,
                unrealized_pnl: Decimal::ZERO,
                high_water_mark: hwm,
                day_start_equity: d(10_000, 0),
            },
            corr,
        );
        if hour % 3 == 0 {
            let (_, token, _) = symbols[(hour as usize / 3) % symbols.len()];
            let score = d(((hour * 37) % 200) - 100, 2);
            g.push(
                "TokenSentiment",
                format!("{token}@{day}"),
                &SentimentEvent::SentimentScored(SentimentScore {
                    token: token.into(),
                    score,
                    label: if score > d(2, 1) {
                        SentimentLabel::Bullish
                    } else if score < d(-2, 1) {
                        SentimentLabel::Bearish
                    } else {
                        SentimentLabel::Neutral
                    },
                    confidence: d(8, 1),
                    model: "lexicon".into(),
                    source_event: Uuid::from_u128(0x3000_0000 + hour as u128),
                    source_type: "TweetReceived".into(),
                    at: open,
                }),
                corr,
            );
        }
        if hour % 8 == 5 {
            let call_id = Uuid::from_u128(0x4000_0000 + hour as u128);
            let event = if hour % 40 == 5 {
                LlmEvent::LlmCallFailed {
                    call_id,
                    task: "chat".into(),
                    reason: "local: connection refused".into(),
                    at: close,
                }
            } else {
                LlmEvent::LlmCallCompleted {
                    call_id,
                    task: if hour % 16 == 5 { "chat" } else { "trading" }.into(),
                    prompt_hash: format!("{hour:064x}"),
                    provider: "groq".into(),
                    model: "llama-3.3-70b-versatile".into(),
                    tokens_in: 420,
                    tokens_out: 96,
                    estimated: false,
                    cost: d(31, 5),
                    latency_ms: 800 + (hour as u64 % 7) * 10,
                    response: "Holding: the trend is flat.".into(),
                    at: close,
                }
            };
            g.push("LlmLedger", day.clone(), &event, corr);
            let chat = 1000 + hour % 2;
            g.push(
                "Conversation",
                chat.to_string(),
                &ConversationEvent::ChatMessageReceived(ReceivedMessage {
                    chat_id: chat,
                    message_id: hour,
                    user_id: 42,
                    username: Some("owner".into()),
                    text: format!("how is SOL doing at hour {hour}?"),
                    trust: Trust::Owner,
                    received_at: close,
                }),
                corr,
            );
            g.push(
                "Conversation",
                chat.to_string(),
                &ConversationEvent::ChatReplySent(SentReply {
                    chat_id: chat,
                    reply_to: Some(hour),
                    text: "Flat; holding.".into(),
                    sent_at: close + Duration::seconds(2),
                }),
                corr,
            );
        }
        if hour % 500 == 250 {
            g.push(
                "RiskBook",
                "main".into(),
                &RiskEvent::TradingHalted {
                    rule: RiskRule::Halted,
                    reason: "manual".into(),
                    at: close,
                },
                corr,
            );
        }
        if hour % 500 == 260 {
            g.push(
                "RiskBook",
                "main".into(),
                &RiskEvent::TradingResumed {
                    reason: "manual".into(),
                    at: close,
                    drawdown_base: None,
                },
                corr,
            );
        }
        hour += 1;
    }
    g.out
}

/// Inserts `events` in pages of 5,000 rows, one multi-row statement and transaction each, with sequence
/// numbers following what each aggregate already holds.
///
/// # Errors
/// [`sqlx::Error`].
pub async fn insert(pool: &PgPool, events: &[SynthEvent]) -> Result<(), sqlx::Error> {
    let mut sequences: HashMap<(&str, &str), i64> = HashMap::new();
    let existing: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, max(sequence) FROM events GROUP BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    for page in events.chunks(5_000) {
        let mut seqs = Vec::with_capacity(page.len());
        for e in page {
            let next = match sequences.get_mut(&(e.aggregate_type, e.aggregate_id.as_str())) {
                Some(s) => {
                    *s += 1;
                    *s
                }
                None => {
                    let before = existing
                        .iter()
                        .find(|(t, i, _)| t == e.aggregate_type && *i == e.aggregate_id)
                        .map_or(0, |x| x.2);
                    sequences.insert((e.aggregate_type, e.aggregate_id.as_str()), before + 1);
                    before + 1
                }
            };
            seqs.push(next);
        }
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, event_id)
             SELECT t, i, s, et, '1', p::json,
                    json_build_object('correlation_id', c::text, 'causation_id', c::text, 'source', 'synth'),
                    gen_random_uuid()
               FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::uuid[])
                    AS u(t, i, s, et, p, c)",
        )
        .bind(page.iter().map(|e| e.aggregate_type).collect::<Vec<_>>())
        .bind(page.iter().map(|e| e.aggregate_id.as_str()).collect::<Vec<_>>())
        .bind(&seqs)
        .bind(page.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
        .bind(page.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>())
        .bind(page.iter().map(|e| e.correlation_id).collect::<Vec<_>>())
        .execute(pool)
        .await?;
    }
    Ok(())
}
