//! What each command answers: reads of the store (portfolio, fills, prices, sentiment, LLM spend) and
//! requests to the other agents' services.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use jarvis_domain::event::unwrap_payload;
use jarvis_domain::llm::{ledger_id, LlmLedger};
use jarvis_domain::trading::Portfolio;
use jarvis_domain::{EventRef, Symbol};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::Row;
use teloxide_core::types::{InlineKeyboardButton, InlineKeyboardMarkup};

use super::bot::{Reply, TelegramAgent};
use super::commands::{help, Command, Role, Window};
use crate::ledger::Ledger;
use crate::trading::PORTFOLIO;

/// Why a request to another agent's service gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Nobody serves the subject: the agent is not running.
    Absent,
    /// The service refused or failed, with its code and message.
    Refused {
        /// 400, 409, 500, 503...
        code: u16,
        /// What it said.
        message: String,
    },
    /// The request itself failed (timeout, connection).
    Failed(String),
}

fn money(d: Decimal) -> String {
    d.round_dp(2).normalize().to_string()
}

fn amount(d: Decimal) -> String {
    d.round_dp(8).normalize().to_string()
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

impl TelegramAgent {
    /// Requests `jarvis.cmd.<subject>` with a JSON body and returns the JSON answer.
    ///
    /// # Errors
    /// [`CallError`]: absent service, a service error (micro protocol headers), or a failed request.
    pub async fn call(&self, subject: &str, body: Value) -> Result<Value, CallError> {
        let request = async_nats::Request::new()
            .payload(body.to_string().into())
            .timeout(Some(self.settings.request_timeout));
        let message = self
            .client
            .send_request(format!("jarvis.cmd.{subject}"), request)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => CallError::Absent,
                _ => CallError::Failed(e.to_string()),
            })?;
        if let Some(headers) = &message.headers {
            if let Some(code) = headers.get("Nats-Service-Error-Code") {
                let message = headers
                    .get("Nats-Service-Error")
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                return Err(CallError::Refused {
                    code: code.as_str().parse().unwrap_or(500),
                    message,
                });
            }
        }
        serde_json::from_slice(&message.payload).map_err(|e| {
            CallError::Failed(format!(
                "{subject} answered something that is not JSON: {e}"
            ))
        })
    }

    fn explain(&self, service: &str, what: &str, e: CallError) -> Reply {
        Reply::text(match e {
            CallError::Absent => {
                format!("{what} is not available: the {service} service is not running.")
            }
            CallError::Refused { message, .. } => format!("{what}: {message}"),
            CallError::Failed(m) => format!("{what} failed: {m}"),
        })
    }

    /// The reply to `command` from a user of `role`; `cause` is the message's `ChatMessageReceived`.
    pub(crate) async fn reply(
        &self,
        command: &Command,
        role: Role,
        user_id: i64,
        cause: &EventRef,
    ) -> Reply {
        let result = match command {
            Command::Start => Ok(Reply::text(format!(
                "Hello, I am Jarvis. Your role: {role}. /help lists what you can ask."
            ))),
            Command::Help => Ok(Reply::text(help(role))),
            Command::Status => self.status().await,
            Command::Balance => self.balance().await,
            Command::Positions => self.positions().await,
            Command::Trades(n) => self.trades(*n).await,
            Command::Pnl(w) => self.pnl(*w).await,
            Command::Price(t) => self.price(t).await,
            Command::Sentiment(t) => self.sentiment(t).await,
            Command::Order {
                buy,
                token,
                amount,
                notional,
            } => Ok(self
                .order(*buy, token, *amount, *notional, user_id, cause)
                .await),
            Command::Halt(reason) => {
                let reason = reason
                    .clone()
                    .unwrap_or_else(|| format!("halted from Telegram by {user_id}"));
                Ok(
                    match self.call("risk.halt", json!({"reason": reason})).await {
                        Ok(_) => {
                            Reply::text(format!("Trading is halted: {reason}. /resume to resume."))
                        }
                        Err(e) => self.explain("jarvis-risk", "Halting", e),
                    },
                )
            }
            Command::Resume => {
                let reason = format!("resumed from Telegram by {user_id}");
                Ok(
                    match self.call("risk.resume", json!({"reason": reason})).await {
                        Ok(_) => Reply::text("Trading is resumed."),
                        Err(e) => self.explain("jarvis-risk", "Resuming", e),
                    },
                )
            }
            Command::Budget => self.budget().await,
            Command::Ask(q) => Ok(self.ask(q, user_id, cause).await),
            Command::Forget => Ok(
                match self
                    .call(
                        "memory.forget",
                        json!({"user_id": user_id, "reason": "/forget from Telegram"}),
                    )
                    .await
                {
                    Ok(_) => Reply::text("Done: I have forgotten what I remembered of you."),
                    Err(CallError::Refused { code: 400, .. }) => {
                        Reply::text("I remember nothing of you, so there is nothing to forget.")
                    }
                    Err(e) => self.explain("jarvis-memory", "Forgetting", e),
                },
            ),
            Command::Drafts => Ok(match self.call("x.drafts", json!({})).await {
                Ok(v) => Reply::text(render_drafts(&v)),
                Err(e) => self.explain("jarvis-x", "Drafts", e),
            }),
            Command::Approve(id) => Ok(
                match self
                    .call(
                        "x.approve",
                        json!({"draft_id": id, "approved_by": format!("telegram:{user_id}")}),
                    )
                    .await
                {
                    Ok(_) => Reply::text(format!("Draft {id} is approved for posting.")),
                    Err(e) => self.explain("jarvis-x", "Approving", e),
                },
            ),
        };
        result.unwrap_or_else(|e| {
            tracing::warn!(command = command.name(), cause = %e, "a command failed");
            Reply::text(format!(
                "{} failed: {e}. Try again shortly.",
                command.name()
            ))
        })
    }

    async fn portfolio(&self) -> Result<Portfolio, String> {
        Ledger::load::<Portfolio>(&self.store, PORTFOLIO, true)
            .await
            .map_err(|e| e.to_string())
    }

    async fn status(&self) -> Result<Reply, String> {
        let mut out = String::from("Status\n");
        let now = self.clock.now();
        let agents = self.health.snapshot();
        if agents.is_empty() {
            out.push_str("Agents: no heartbeat seen yet\n");
        } else {
            out.push_str("Agents:\n");
            for beat in agents {
                let alive = beat.is_alive(now);
                let _ = writeln!(
                    out,
                    "- {} ({}): {}",
                    beat.agent,
                    beat.instance,
                    if alive { beat.status.as_str() } else { "down" }
                );
            }
        }
        match self.call("risk.status", json!({})).await {
            Ok(v) if v["halted"].as_bool() == Some(true) => {
                let reason = v["halt"]["reason"].as_str().unwrap_or("no reason given");
                let _ = writeln!(out, "Trading: HALTED ({reason})");
            }
            Ok(_) => out.push_str("Trading: running\n"),
            Err(CallError::Absent) => {
                out.push_str("Trading: unknown (jarvis-risk is not running)\n")
            }
            Err(e) => {
                let _ = writeln!(out, "Trading: unknown ({e:?})");
            }
        }
        let portfolio = self.portfolio().await?;
        let last = portfolio.view().prices.values().map(|p| p.at).max();
        match last {
            Some(t) => {
                let _ = writeln!(out, "Last price: {}", time(t));
            }
            None => out.push_str("Last price: none yet\n"),
        }
        Ok(Reply::text(out.trim_end()))
    }

    async fn balance(&self) -> Result<Reply, String> {
        let p = self.portfolio().await?;
        let Some(quote) = p.quote_asset() else {
            return Ok(Reply::text(
                "The portfolio is not open yet: no candle has been traded.",
            ));
        };
        Ok(Reply::text(format!(
            "Balance ({quote})\nCash: {}\nEquity: {}\nUnrealised P&L: {}\nRealised P&L: {}\nFees paid: {}\nHigh-water mark: {}",
            money(p.cash()),
            money(p.equity()),
            money(p.unrealized_pnl()),
            money(p.realized_pnl()),
            money(p.fees_paid()),
            money(p.high_water_mark())
        )))
    }

    async fn positions(&self) -> Result<Reply, String> {
        let p = self.portfolio().await?;
        let open: Vec<_> = p
            .positions()
            .iter()
            .filter(|(_, pos)| !pos.quantity.is_zero())
            .collect();
        if open.is_empty() {
            return Ok(Reply::text("No open positions."));
        }
        let mut out = String::from("Positions\n");
        for (symbol, pos) in open {
            let price = p.last_price(symbol).map(|pp| pp.price);
            let value = price.map_or(String::from("?"), |pr| money(pos.quantity * pr));
            let _ = writeln!(
                out,
                "{symbol}: {} at avg {} (last {}, value {value})",
                amount(pos.quantity),
                money(pos.avg_cost),
                price.map_or("?".into(), money)
            );
        }
        Ok(Reply::text(out.trim_end()))
    }

    /// Payloads of the latest `n` events of type `event_type` of the portfolio, newest first.
    async fn portfolio_events(
        &self,
        event_type: &str,
        since: Option<DateTime<Utc>>,
        n: i64,
    ) -> Result<Vec<Value>, String> {
        let rows = sqlx::query(
            "SELECT payload::text AS payload FROM events \
             WHERE aggregate_type = 'Portfolio' AND aggregate_id = $1 AND event_type = $2 \
               AND ($3::timestamptz IS NULL OR (payload -> $2 ->> 'at')::timestamptz >= $3) \
             ORDER BY sequence DESC LIMIT $4",
        )
        .bind(PORTFOLIO)
        .bind(event_type)
        .bind(since)
        .bind(n)
        .fetch_all(self.store.pool())
        .await
        .map_err(|e| e.to_string())?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("payload").map_err(|e| e.to_string())?;
                let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                Ok(unwrap_payload(event_type, v))
            })
            .collect()
    }

    async fn trades(&self, n: usize) -> Result<Reply, String> {
        let fills = self
            .portfolio_events("PositionChanged", None, n as i64)
            .await?;
        if fills.is_empty() {
            return Ok(Reply::text("No trades yet."));
        }
        let mut out = format!("Last {} trade(s)\n", fills.len());
        for f in fills {
            let at = f["at"].as_str().unwrap_or("?");
            let _ = writeln!(
                out,
                "{at} {} {} {} at {} (fee {})",
                f["side"].as_str().unwrap_or("?"),
                f["quantity"].as_str().unwrap_or("?"),
                f["symbol"].as_str().unwrap_or("?"),
                f["price"].as_str().unwrap_or("?"),
                f["fee"].as_str().unwrap_or("?")
            );
        }
        Ok(Reply::text(out.trim_end()))
    }

    async fn pnl(&self, window: Window) -> Result<Reply, String> {
        let now = self.clock.now();
        let since = match window {
            Window::Day => now
                .date_naive()
                .and_hms_opt(0, 0, 0)
                .map_or(now, |t| t.and_utc()),
            w => now - w.duration(),
        };
        let sum = |events: &[Value], field: &str| -> Decimal {
            events
                .iter()
                .filter_map(|e| e[field].as_str()?.parse::<Decimal>().ok())
                .sum()
        };
        let realised = self
            .portfolio_events("PnlRealized", Some(since), i64::MAX)
            .await?;
        let fills = self
            .portfolio_events("PositionChanged", Some(since), i64::MAX)
            .await?;
        let gross = sum(&realised, "pnl");
        let fees = sum(&fills, "fee");
        let p = self.portfolio().await?;
        Ok(Reply::text(format!(
            "P&L over the {} (since {})\nRealised: {} (net of fees {})\nFees: {}\nTrades: {}\nUnrealised now: {}",
            window.as_str(),
            time(since),
            money(gross),
            money(gross - fees),
            money(fees),
            fills.len(),
            money(p.unrealized_pnl())
        )))
    }

    fn symbol_of(&self, token: &str) -> Result<Symbol, String> {
        crate::orders::parse_symbol(token, &self.settings.quote_asset).map_err(|e| e.message)
    }

    async fn price(&self, token: &str) -> Result<Reply, String> {
        let Ok(symbol) = self.symbol_of(token) else {
            return Ok(Reply::text(format!(
                "{token} is not a token I know how to price."
            )));
        };
        let p = self.portfolio().await?;
        let mark = p.last_price(&symbol).cloned();
        let live = sqlx::query(
            "SELECT payload::text AS payload FROM events \
             WHERE aggregate_type = 'PriceFeed' AND aggregate_id LIKE $1 AND event_type = 'PriceObserved' \
             ORDER BY position DESC LIMIT 1",
        )
        .bind(format!("{}/%", symbol.as_str().split('/').next().unwrap_or_default()))
        .fetch_optional(self.store.pool())
        .await
        .map_err(|e| e.to_string())?;
        let mut out = String::new();
        if let Some(m) = mark {
            let _ = writeln!(
                out,
                "{symbol}: {} (candle close {})",
                money(m.price),
                time(m.at)
            );
        }
        if let Some(row) = live {
            let text: String = row.try_get("payload").map_err(|e| e.to_string())?;
            let v = unwrap_payload(
                "PriceObserved",
                serde_json::from_str(&text).map_err(|e| e.to_string())?,
            );
            let _ = writeln!(
                out,
                "{}: {} (live, {} at {})",
                v["symbol"].as_str().unwrap_or("?"),
                v["price"].as_str().unwrap_or("?"),
                v["source"].as_str().unwrap_or("?"),
                v["observed_at"].as_str().unwrap_or("?")
            );
        }
        if out.is_empty() {
            out = format!("No price for {symbol} yet.");
        }
        Ok(Reply::text(out.trim_end()))
    }

    async fn sentiment(&self, token: &str) -> Result<Reply, String> {
        let row = sqlx::query(
            "SELECT payload::text AS payload FROM events \
             WHERE aggregate_type = 'TokenSentiment' AND aggregate_id LIKE $1 AND event_type = 'SentimentScored' \
             ORDER BY (payload -> 'SentimentScored' ->> 'at')::timestamptz DESC, position DESC LIMIT 1",
        )
        .bind(format!("{token}@%"))
        .fetch_optional(self.store.pool())
        .await
        .map_err(|e| e.to_string())?;
        let Some(row) = row else {
            return Ok(Reply::text(format!("No sentiment score for {token} yet.")));
        };
        let text: String = row.try_get("payload").map_err(|e| e.to_string())?;
        let v = unwrap_payload(
            "SentimentScored",
            serde_json::from_str(&text).map_err(|e| e.to_string())?,
        );
        Ok(Reply::text(format!(
            "{token} sentiment: {} (score {}, confidence {}) by {} from a {} at {}",
            v["label"].as_str().unwrap_or("?"),
            v["score"].as_str().unwrap_or("?"),
            v["confidence"].as_str().unwrap_or("?"),
            v["model"].as_str().unwrap_or("?"),
            v["source_type"].as_str().unwrap_or("?"),
            v["at"].as_str().unwrap_or("?")
        )))
    }

    async fn budget(&self) -> Result<Reply, String> {
        let day = self.clock.now().date_naive();
        let ledger: LlmLedger = Ledger::load(&self.store, &ledger_id(day), false)
            .await
            .map_err(|e| e.to_string())?;
        let t = ledger.total();
        let mut out = format!(
            "LLM spend on {day}: {} USD in {} call(s), {} tokens in, {} out, {} failed",
            t.cost.round_dp(4).normalize(),
            t.calls,
            t.tokens_in,
            t.tokens_out,
            ledger.failed()
        );
        if let Some(cap) = self.settings.llm_daily_usd {
            let _ = write!(
                out,
                "\nDaily budget: {} USD ({} left)",
                cap.normalize(),
                (cap - t.cost).max(Decimal::ZERO).round_dp(4).normalize()
            );
        }
        for (task, totals) in ledger.by_task() {
            let _ = write!(
                out,
                "\n- {task}: {} USD, {} call(s)",
                totals.cost.round_dp(4).normalize(),
                totals.calls
            );
        }
        Ok(Reply::text(out))
    }

    async fn order(
        &self,
        buy: bool,
        token: &str,
        amount: Decimal,
        notional: bool,
        user_id: i64,
        cause: &EventRef,
    ) -> Reply {
        let mut body = json!({
            "symbol": token,
            "side": if buy { "buy" } else { "sell" },
            "requested_by": format!("telegram:{user_id}"),
            "causation_id": cause.event_id,
            "correlation_id": cause.correlation_id,
        });
        body[if notional { "notional" } else { "quantity" }] = json!(amount.to_string());
        let v = match self.call("trading.propose", body).await {
            Ok(v) => v,
            Err(e) => return self.explain("jarvis-trading", "The order", e),
        };
        let id = v["proposal_id"].as_str().unwrap_or_default().to_string();
        let head = format!(
            "{} {} {} at {} = {} {}",
            if buy { "Buy" } else { "Sell" },
            v["quantity"].as_str().unwrap_or("?"),
            v["symbol"].as_str().unwrap_or("?"),
            v["price"].as_str().unwrap_or("?"),
            v["notional"].as_str().unwrap_or("?"),
            self.settings.quote_asset
        );
        if v["verdict"] == "approved" {
            let expires = v["expires_at"].as_str().unwrap_or("?");
            Reply {
                text: format!(
                    "{head}\nRisk: approved.\nPress Confirm before {expires} to send it; it fills at the next candle's open.\nProposal {id}"
                ),
                keyboard: Some(InlineKeyboardMarkup::new([[
                    InlineKeyboardButton::callback("Confirm", format!("confirm:{id}")),
                    InlineKeyboardButton::callback("Cancel", format!("cancel:{id}")),
                ]])),
            }
        } else {
            let reasons: Vec<String> = v["reasons"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let rules: Vec<String> = v["rules"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            Reply::text(format!(
                "{head}\nRisk: REJECTED ({})\n{}\nProposal {id}",
                rules.join(", "),
                reasons
                    .iter()
                    .map(|r| format!("- {r}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
        }
    }

    /// The reply to a Confirm button press of `user_id`.
    pub(crate) async fn confirm(&self, proposal_id: &str, user_id: i64) -> Reply {
        let body =
            json!({"proposal_id": proposal_id, "confirmed_by": format!("telegram:{user_id}")});
        match self.call("trading.confirm", body).await {
            Ok(v) => Reply::text(format!(
                "Confirmed: order {} is {}. I will tell you when it fills.",
                v["order_id"].as_str().unwrap_or(proposal_id),
                v["status"].as_str().unwrap_or("submitted")
            )),
            Err(CallError::Refused { message, .. }) => {
                Reply::text(format!("Not confirmed: {message}"))
            }
            Err(e) => self.explain("jarvis-trading", "Confirming", e),
        }
    }

    async fn ask(&self, question: &str, user_id: i64, cause: &EventRef) -> Reply {
        let memories = match self
            .call(
                "memory.recall",
                json!({"user_id": user_id, "query": question, "limit": 5}),
            )
            .await
        {
            Ok(v) => v["memories"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m["text"].as_str().map(|t| format!("- {t}")))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
            Err(_) => vec![],
        };
        let mut prompt = String::from(
            "You are Jarvis, the owner's crypto-trading assistant. Answer the user's message briefly.",
        );
        if !memories.is_empty() {
            prompt.push_str("\nWhat you remember of this user:\n");
            prompt.push_str(&memories.join("\n"));
        }
        let body = json!({
            "task": "chat",
            "prompt": prompt,
            "user_text": question,
            "correlation_id": cause.correlation_id,
        });
        match self.call("llm.ask", body).await {
            Ok(v) => Reply::text(v["answer"].as_str().unwrap_or("(no answer)")),
            Err(CallError::Absent) => Reply::text(
                "Sorry, no language model is configured, so I cannot answer free text. /help lists the commands I do answer.",
            ),
            Err(CallError::Refused { message, .. }) => {
                Reply::text(format!("I cannot answer that right now: {message}"))
            }
            Err(CallError::Failed(m)) => Reply::text(format!("I cannot answer that right now: {m}")),
        }
    }
}

/// The drafts list of `jarvis.cmd.x.drafts`: an array, or an object with a `drafts` array.
fn render_drafts(v: &Value) -> String {
    let drafts = v
        .as_array()
        .or_else(|| v["drafts"].as_array())
        .cloned()
        .unwrap_or_default();
    if drafts.is_empty() {
        return "No drafts await approval.".into();
    }
    let mut out = format!("{} draft(s) await approval:\n", drafts.len());
    for d in drafts {
        let id = d["draft_id"]
            .as_str()
            .or_else(|| d["id"].as_str())
            .unwrap_or("?");
        let text = d["text"].as_str().unwrap_or("");
        let _ = writeln!(out, "{id}: {text}");
    }
    out.push_str("/approve <id> to post one.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_render_in_either_shape() {
        assert_eq!(render_drafts(&json!([])), "No drafts await approval.");
        let v = json!({"drafts": [{"draft_id": "d1", "text": "gm $SOL"}]});
        let text = render_drafts(&v);
        assert!(
            text.contains("d1: gm $SOL") && text.contains("/approve"),
            "{text}"
        );
        assert_eq!(money(Decimal::new(123456, 3)), "123.46");
        assert!(time(DateTime::<Utc>::UNIX_EPOCH).contains("1970-01-01"));
    }
}
