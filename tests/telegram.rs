//! The Telegram agent end to end: the real teloxide client against the fake Bot API, real NATS and Postgres,
//! with the relay, the trading pipeline (paper venue), `jarvis-risk` and `jarvis-trading` running.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Duration as Span, Utc};
use common::*;
use jarvis_agents::orders::{ManualClock, OrderDesk};
use jarvis_agents::telegram::{
    Role, TelegramAgent, TelegramConfig, TelegramMode, TelegramSettings, TelegramUser,
};
use jarvis_agents::trading::{TradingPipeline, TradingSettings};
use jarvis_agents::treasury::{Proposal, Strategy, StrategyInput};
use jarvis_bus::{run_consumer, ConsumerSettings, DLQ_STREAM};
use jarvis_domain::chat::ConversationId;
use jarvis_domain::market::{MarketFeed, MarketFeedCommand, MarketFeedId};
use jarvis_domain::sentiment::{SentimentCommand, SentimentLabel, SentimentScore, TokenSentiment};
use jarvis_domain::telegram::BOT_ID;
use jarvis_domain::trading::Portfolio;
use jarvis_domain::{Candle, EventMetadata, Symbol};
use jarvis_store::{execute_with_retry, EventStore};
use jarvis_testkit::eventually;
use jarvis_testkit::fakes::telegram::{FakeTelegram, SentMessage};
use rust_decimal::Decimal;
use serde_json::json;
use tokio::sync::watch;

const TOKEN: &str = "123456:test-token-hunter2";
const SECRET: &str = "hunter2";
const OP: i64 = 1001;
const OP2: i64 = 1002;
const VIEWER: i64 = 2001;
const STRANGER: i64 = 6666;
const WAIT: Duration = Duration::from_secs(60);
const HOOK_URL: &str = "https://jarvis.example.test:8443/telegram/hook";
const HOOK_SECRET: &str = "hook-Secret_42";

fn t0() -> DateTime<Utc> {
    "2026-03-02T00:00:00Z".parse().unwrap()
}

/// A strategy that never trades: only manual orders reach the venue.
struct Idle;

impl Strategy for Idle {
    fn name(&self) -> &str {
        "idle"
    }
    fn decide(&self, _: &StrategyInput<'_>) -> Vec<Proposal> {
        vec![]
    }
}

fn settings() -> TradingSettings {
    let mut s = TradingSettings::default();
    s.limits.cooldown_per_token_secs = 0;
    s
}

fn config(fake: &FakeTelegram) -> TelegramConfig {
    TelegramConfig {
        token: Some(TOKEN.into()),
        api_url: fake.url(),
        users: vec![
            TelegramUser {
                id: OP,
                role: Role::Operator,
            },
            TelegramUser {
                id: OP2,
                role: Role::Admin,
            },
            TelegramUser {
                id: VIEWER,
                role: Role::Viewer,
            },
        ],
        poll_timeout_secs: 1,
        rate_limit_per_minute: 20,
        ..Default::default()
    }
}

/// Webhook mode: Telegram posts to `HOOK_URL`, which the fake forwards to the agent's listener on a free
/// loopback port.
fn webhook_config(fake: &FakeTelegram) -> TelegramConfig {
    TelegramConfig {
        mode: TelegramMode::Webhook,
        webhook_url: Some(HOOK_URL.into()),
        webhook_listen: "127.0.0.1:0".into(),
        webhook_secret: Some(HOOK_SECRET.into()),
        ..config(fake)
    }
}

async fn until(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Everything running, stopped on drop.
struct World {
    env: Env,
    fake: FakeTelegram,
    clock: Arc<ManualClock>,
    stop: watch::Sender<bool>,
    bot: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    /// Webhook mode (else long polling).
    webhook: bool,
    agent: Option<Arc<TelegramAgent>>,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some((stop, _)) = &self.bot {
            let _ = stop.send(true);
        }
    }
}

impl World {
    async fn start() -> Self {
        Self::start_in(false).await
    }

    /// Everything running, the agent in webhook mode, its webhook registered with the fake and the fake
    /// delivering to its listener.
    async fn start_webhook() -> Self {
        let w = Self::start_in(true).await;
        w.webhook_ready().await;
        w
    }

    async fn webhook_ready(&self) {
        let agent = self.agent.clone().unwrap();
        let addr = eventually(WAIT, "the webhook listener bound", || async {
            agent.webhook_addr()
        })
        .await;
        self.fake.proxy_webhook_to(addr);
        eventually(WAIT, "setWebhook called", || async { self.fake.webhook() }).await;
    }

    async fn start_in(webhook: bool) -> Self {
        let env = Env::start().await;
        let fake = FakeTelegram::start(TOKEN).await;
        fake.set_date(t0().timestamp() + 3_900);
        let clock = Arc::new(ManualClock::new(t0() + Span::minutes(65)));
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(jarvis_agents::relay::run_relay(
            env.store.clone(),
            env.js.clone(),
            Default::default(),
            until(stopped.clone()),
        ));
        let pipeline =
            TradingPipeline::with_strategy(env.store.clone(), settings(), Box::new(Idle));
        let (js, s) = (env.js.clone(), until(stopped.clone()));
        tokio::spawn(async move {
            let mut c = ConsumerSettings::new("trading", "jarvis.evt.market.CandleClosed.>");
            c.max_ack_pending = 1;
            run_consumer(&js, &c, &pipeline, s).await.unwrap();
        });
        let (store, client, s) = (
            env.store.clone(),
            env.client.clone(),
            until(stopped.clone()),
        );
        tokio::spawn(async move {
            jarvis_agents::risk::serve_commands(store, client, s)
                .await
                .unwrap()
        });
        let desk = OrderDesk::new(
            env.store.clone(),
            settings(),
            clock.clone(),
            Span::minutes(2),
        );
        let (client, s) = (env.client.clone(), until(stopped.clone()));
        tokio::spawn(async move {
            desk.serve(
                client,
                jarvis_bus::service::Health::new("trading", &["trading"]),
                s,
            )
            .await
            .unwrap()
        });
        let mut w = Self {
            env,
            fake,
            clock,
            stop,
            bot: None,
            webhook,
            agent: None,
        };
        w.start_bot();
        w
    }

    fn agent(&self, config: &TelegramConfig) -> TelegramAgent {
        TelegramAgent::new(
            config,
            TelegramSettings::new(config, "USDT"),
            self.env.store.clone(),
            self.env.client.clone(),
            self.env.js.clone(),
            self.clock.clone(),
        )
        .unwrap()
    }

    fn start_bot(&mut self) {
        let config = if self.webhook {
            webhook_config(&self.fake)
        } else {
            config(&self.fake)
        };
        let agent = Arc::new(self.agent(&config));
        self.agent = Some(agent.clone());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(agent.run(until(stopped)));
        self.bot = Some((stop, task));
    }

    async fn stop_bot(&mut self) {
        if let Some((stop, task)) = self.bot.take() {
            let _ = stop.send(true);
            task.await.unwrap();
        }
    }

    /// `user` writes `text`; the bot's first reply to it.
    async fn say(&self, user: i64, text: &str) -> SentMessage {
        let id = self.fake.send_text(user, Some("someone"), text);
        self.reply_to(id, text).await
    }

    async fn reply_to(&self, message_id: i64, what: &str) -> SentMessage {
        eventually(WAIT, &format!("a reply to {what:?}"), || async {
            self.fake
                .sent()
                .into_iter()
                .find(|m| m.reply_to == Some(message_id))
        })
        .await
    }

    /// Waits for a message to `chat` containing `text`.
    async fn told(&self, chat: i64, text: &str) -> SentMessage {
        eventually(WAIT, &format!("{text:?} sent to {chat}"), || async {
            self.fake
                .sent_to(chat)
                .into_iter()
                .find(|m| m.text.contains(text))
        })
        .await
    }

    /// Records a closed hourly SOL/USDT candle opening at `open`, and waits until the pipeline marked it.
    async fn candle(&self, open: DateTime<Utc>, price: i64) {
        let p = Decimal::from(price);
        let candle = Candle {
            symbol: Symbol::new_checked("SOL/USDT").unwrap(),
            open_time: open,
            close_time: open + Span::hours(1),
            open: p,
            high: p + Decimal::ONE,
            low: p - Decimal::ONE,
            close: p,
            volume: Decimal::from(1_000),
        };
        let feed = MarketFeedId::of(&candle).to_string();
        execute_with_retry(
            &self.env.store.cqrs::<MarketFeed>(()),
            &feed,
            MarketFeedCommand::RecordCandles {
                feed: feed.clone(),
                candles: vec![candle.clone()],
            },
            &EventMetadata::root("test"),
            5,
        )
        .await
        .unwrap();
        let store = self.env.store.clone();
        eventually(WAIT, "the pipeline to mark the candle", || async {
            let p = portfolio(&store).await;
            let symbol = Symbol::new_checked("SOL/USDT").unwrap();
            (p.last_price(&symbol).map(|pp| pp.at) == Some(candle.close_time)).then_some(())
        })
        .await;
    }

    async fn events(&self, event_type: &str) -> Vec<jarvis_domain::RecordedEvent> {
        self.env
            .store
            .read_after(jarvis_store::Checkpoint::default(), 1_000_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event_type == event_type)
            .collect()
    }
}

async fn portfolio(store: &EventStore) -> Portfolio {
    store
        .load("main", Some(jarvis_agents::runtime::SNAPSHOT_EVERY))
        .await
        .unwrap()
}

/// A log sink.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_command_answers_strangers_and_viewers_are_refused_and_the_token_stays_secret() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let w = World::start().await;
    w.candle(t0(), 100).await;

    let start = w.say(OP, "/start").await.text;
    assert!(start.contains("Your role: operator."), "{start}");
    let help = w.say(OP, "/help").await.text;
    for command in [
        "/status",
        "/buy <token> <amount>",
        "/halt",
        "/drafts",
        "/forget",
    ] {
        assert!(help.contains(command), "{command} in {help}");
    }
    let status = w.say(OP, "/status").await.text;
    assert!(status.contains("Trading: running"), "{status}");
    assert!(
        status.contains("Last price: 2026-03-02 01:00 UTC"),
        "{status}"
    );
    let balance = w.say(OP, "/balance").await.text;
    assert!(
        balance.contains("Cash: 10000") && balance.contains("(USDT)"),
        "{balance}"
    );
    assert_eq!(w.say(OP, "/positions").await.text, "No open positions.");
    assert_eq!(w.say(OP, "/trades").await.text, "No trades yet.");
    let pnl = w.say(OP, "/pnl week").await.text;
    assert!(
        pnl.contains("P&L over the week") && pnl.contains("Realised: 0"),
        "{pnl}"
    );
    let price = w.say(OP, "/price sol").await.text;
    assert!(
        price.contains("SOL/USDT: 100 (candle close 2026-03-02 01:00 UTC)"),
        "{price}"
    );
    assert_eq!(
        w.say(OP, "/sentiment SOL").await.text,
        "No sentiment score for SOL yet."
    );
    let score = SentimentScore {
        token: "SOL".into(),
        score: Decimal::new(6, 1),
        label: SentimentLabel::Bullish,
        confidence: Decimal::new(9, 1),
        model: "nblr-test".into(),
        source_event: uuid::Uuid::now_v7(),
        source_type: "TweetReceived".into(),
        at: t0(),
    };
    execute_with_retry(
        &w.env.store.cqrs::<TokenSentiment>(()),
        &score.aggregate_id(),
        SentimentCommand::Record(score.clone()),
        &EventMetadata::root("test"),
        5,
    )
    .await
    .unwrap();
    let sentiment = w.say(OP, "/sentiment sol").await.text;
    assert!(
        sentiment.contains("SOL sentiment: bullish (score 0.6"),
        "{sentiment}"
    );
    assert!(w
        .say(OP, "/budget")
        .await
        .text
        .contains("LLM spend on 2026-03-02: 0 USD in 0 call(s)"));
    let ask = w.say(OP, "what do I hold?").await.text;
    assert!(ask.contains("no language model is configured"), "{ask}");
    let forget = w.say(OP, "/forget").await.text;
    assert!(
        forget.contains("the jarvis-memory service is not running"),
        "{forget}"
    );
    let drafts = w.say(OP, "/drafts").await.text;
    assert!(
        drafts.contains("the jarvis-x service is not running"),
        "{drafts}"
    );
    assert!(w
        .say(OP, "/buy SOL")
        .await
        .text
        .contains("/buy <token> <amount>"));
    assert!(w
        .say(OP, "/launch")
        .await
        .text
        .contains("unknown command /launch"));

    // A stranger is refused politely, and the attempt is recorded.
    let refused = w.say(STRANGER, "/balance").await.text;
    assert!(refused.contains("private assistant"), "{refused}");
    // A viewer reads but does not trade.
    assert!(w.say(VIEWER, "/balance").await.text.contains("Cash: 10000"));
    let no = w.say(VIEWER, "/buy SOL 1").await.text;
    assert_eq!(no, "/buy needs the operator role; you are a viewer.");
    // A flood is cut at the rate limit (20 a minute; the viewer sent 2 already).
    for _ in 0..18 {
        w.say(VIEWER, "/start").await;
    }
    let limited = w.say(VIEWER, "/start").await.text;
    assert!(limited.contains("faster than 20 a minute"), "{limited}");
    let denied = eventually(WAIT, "three refusals recorded", || async {
        let d = w.events("TelegramAccessDenied").await;
        (d.len() >= 3).then_some(d)
    })
    .await;
    let reasons: Vec<&str> = denied
        .iter()
        .map(|e| e.payload["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["not_allowlisted", "insufficient_role", "rate_limited"]
    );
    assert_eq!(denied[0].payload["user_id"], STRANGER);
    assert_eq!(denied[0].payload["attempted"], "/balance");

    // Every message and reply is recorded; each reply is caused by its message.
    let sent = w.fake.sent().len();
    let (received, replies) = eventually(WAIT, "every message and reply readable", || async {
        let received = w.events("ChatMessageReceived").await;
        let replies = w.events("ChatReplySent").await;
        (received.len() == sent && replies.len() == sent).then_some((received, replies))
    })
    .await;
    let stranger = received
        .iter()
        .find(|e| e.payload["user_id"] == STRANGER)
        .unwrap();
    assert_eq!(stranger.payload["trust"], "public");
    assert!(replies
        .iter()
        .any(|r| r.metadata.causation_id == stranger.event_id));
    // Everything went out as valid MarkdownV2 (the fake refuses anything else).
    assert!(w
        .fake
        .sent()
        .iter()
        .all(|m| m.parse_mode.as_deref() == Some("MarkdownV2")));

    // A Bot API that cannot be reached: the errors are logged without the token.
    let mut unreachable = config(&w.fake);
    unreachable.api_url = "http://127.0.0.1:1".into();
    let agent = w.agent(&unreachable);
    assert!(!format!("{agent:?}").contains(SECRET));
    let logs_before = logs.text().matches("getUpdates failed").count();
    // Runs until a failure is logged (a deadline, not a fixed time: the machine may be loaded).
    agent
        .poll(jarvis_testkit::eventually(
            Duration::from_secs(60),
            "a getUpdates failure logged",
            || async {
                (logs.text().matches("getUpdates failed").count() > logs_before).then_some(())
            },
        ))
        .await;
    let text = logs.text();
    assert!(!text.contains(SECRET), "the token leaked into the logs");
    for e in w
        .env
        .store
        .read_after(jarvis_store::Checkpoint::default(), 1_000_000)
        .await
        .unwrap()
    {
        assert!(
            !e.payload.to_string().contains(SECRET),
            "the token leaked into {}",
            e.event_type
        );
    }
}

#[tokio::test]
async fn buy_confirm_fill_and_alert_with_the_message_as_cause() {
    let w = World::start().await;
    w.candle(t0(), 100).await;
    let proposal = w.say(OP, "/buy SOL 2").await;
    assert!(
        proposal.text.contains("Buy 2 SOL/USDT at 100"),
        "{}",
        proposal.text
    );
    assert!(
        proposal.text.contains("Risk: approved"),
        "{}",
        proposal.text
    );
    let confirm = proposal.button("Confirm").expect("a Confirm button");
    w.fake.press_button(OP, proposal.message_id, &confirm);
    let confirmed = w.told(OP, "Confirmed: order").await;
    assert!(
        confirmed.text.contains("is submitted"),
        "{}",
        confirmed.text
    );
    // The paper venue fills it at the open of the next candle; the alert goes to every operator.
    w.candle(t0() + Span::hours(2), 101).await;
    let filled = w.told(OP, "Filled: buy 2 SOL/USDT").await;
    assert!(filled.text.contains("at 101.0505"), "{}", filled.text);
    w.told(OP2, "Filled: buy 2 SOL/USDT").await;
    assert!(w.fake.sent_to(VIEWER).is_empty(), "viewers get no alerts");

    // TradeProposed ← ChatMessageReceived, then the pipeline's chain down to OrderFilled.
    let fill = eventually(WAIT, "OrderFilled", || async {
        w.events("OrderFilled").await.pop()
    })
    .await;
    let chain: Vec<String> = w
        .env
        .store
        .causal_chain(fill)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        chain,
        [
            "ChatMessageReceived",
            "TradeProposed",
            "OrderAdmitted",
            "TradeApproved",
            "OrderSubmitted",
            "OrderFilled"
        ]
    );
    let positions = w.say(OP, "/positions").await.text;
    assert!(
        positions.contains("SOL/USDT: 2 at avg 101.05"),
        "{positions}"
    );
    let trades = w.say(OP, "/trades 1").await.text;
    assert!(trades.contains("buy 2 SOL/USDT at 101.0505"), "{trades}");
    // The same alert is not sent twice: one per operator.
    assert_eq!(
        w.fake
            .sent_to(OP)
            .iter()
            .filter(|m| m.text.starts_with("Filled"))
            .count(),
        1
    );
}

#[tokio::test]
async fn confirmation_by_another_user_or_after_expiry_is_refused() {
    let w = World::start().await;
    w.candle(t0(), 100).await;
    let proposal = w.say(OP, "/buy SOL $100").await;
    assert!(
        proposal.text.contains("Buy 1 SOL/USDT"),
        "{}",
        proposal.text
    );
    let data = proposal.button("Confirm").unwrap();
    // Another operator presses it.
    w.fake.press_button(OP2, proposal.message_id, &data);
    let refused = w.told(OP, "Not confirmed").await;
    assert!(
        refused.text.contains("only they may confirm it"),
        "{}",
        refused.text
    );
    // A viewer presses it: refused before reaching the desk, and recorded.
    w.fake.press_button(VIEWER, proposal.message_id, &data);
    w.told(OP, "Only an operator may press this button.").await;
    // Too late.
    w.clock.advance(Span::minutes(3));
    w.fake.press_button(OP, proposal.message_id, &data);
    let expired = eventually(WAIT, "the expiry refusal", || async {
        w.fake
            .sent_to(OP)
            .into_iter()
            .find(|m| m.text.contains("expired at"))
    })
    .await;
    assert!(expired.text.contains("propose again"), "{}", expired.text);
    assert!(w.events("OrderSubmitted").await.is_empty());
    let denied = eventually(WAIT, "the refused press recorded", || async {
        let d = w.events("TelegramAccessDenied").await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].payload["attempted"], "button:confirm");
}

#[tokio::test]
async fn halt_stops_trading_until_resume() {
    let w = World::start().await;
    w.candle(t0(), 100).await;
    let halted = w.say(OP, "/halt fat finger").await.text;
    assert!(halted.contains("Trading is halted: fat finger"), "{halted}");
    w.told(OP2, "Trading HALTED").await;
    assert!(w
        .say(OP, "/status")
        .await
        .text
        .contains("Trading: HALTED (fat finger)"));
    // The risk agent's heartbeat says so in the agents' list: once two `halted` beats went out (the
    // agent has recorded the first by the time the second arrives; /status is rate-limited, so ask once).
    let mut beats = w.env.client.subscribe("jarvis.health.risk").await.unwrap();
    let mut halted_beats = 0;
    while halted_beats < 2 {
        let beat = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut beats))
            .await
            .expect("a risk heartbeat")
            .unwrap();
        let beat: serde_json::Value = serde_json::from_slice(&beat.payload).unwrap();
        halted_beats += usize::from(beat["status"] == "halted");
    }
    let status = w.say(OP, "/status").await.text;
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("- risk (") && l.ends_with("): halted")),
        "{status}"
    );
    let rejected = w.say(OP, "/buy SOL 1").await.text;
    assert!(rejected.contains("Risk: REJECTED (halted)"), "{rejected}");
    w.told(OP, "Rejected by risk").await;
    assert!(w
        .say(OP, "/resume")
        .await
        .text
        .contains("Trading is resumed"));
    let approved = w.say(OP, "/buy SOL 1").await;
    assert!(
        approved.text.contains("Risk: approved"),
        "{}",
        approved.text
    );
    // Halted again between the proposal and its confirmation: not submitted.
    w.say(OP2, "/halt").await;
    w.fake.press_button(
        OP,
        approved.message_id,
        &approved.button("Confirm").unwrap(),
    );
    let refused = w.told(OP, "Not confirmed: trading is halted").await;
    assert!(refused.text.contains("/resume first"), "{}", refused.text);
    assert!(w.events("OrderSubmitted").await.is_empty());
}

#[tokio::test]
async fn a_malformed_update_is_dead_lettered_and_a_restart_resumes_after_the_last_update() {
    let mut w = World::start().await;
    let bad = w
        .fake
        .push_update(json!({"message": {"message_id": "not a number", "chat": 5}}));
    let help = w.fake.send_text(OP, None, "/help");
    w.reply_to(help, "/help").await;
    wait_stream_len_of(&w.env.js, DLQ_STREAM, 1).await;
    let dead = read_stream(&w.env.js, DLQ_STREAM).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].subject, "jarvis.dlq.telegram");
    let reason = dead[0].headers.get("jarvis-dlq-error").unwrap().to_string();
    assert!(
        reason.contains(&format!("update {bad} is not a Bot API update")),
        "{reason}"
    );
    let body: serde_json::Value = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(body["raw"]["message"]["message_id"], "not a number");

    eventually(WAIT, "the offset recorded", || async {
        let consumed = w.events("TelegramUpdatesConsumed").await;
        consumed
            .iter()
            .any(|e| e.payload["next_offset"].as_i64() == Some(help_update(&w) + 1))
            .then_some(())
    })
    .await;
    w.stop_bot().await;
    assert!(
        w.fake.calls().iter().any(|(m, _)| m == "deletewebhook"),
        "polling removes any webhook first"
    );
    let calls_before = w.fake.offsets().len();
    w.start_bot();
    let start = w.fake.send_text(OP, None, "/start");
    w.reply_to(start, "/start").await;
    // The restarted agent asked from the recorded offset, and answered nothing twice.
    assert_eq!(w.fake.offsets()[calls_before], Some(help_update(&w) + 1));
    for m in [help, start] {
        assert_eq!(
            w.fake
                .sent()
                .iter()
                .filter(|s| s.reply_to == Some(m))
                .count(),
            1
        );
    }
}

/// The update id of the `/help` of the restart test: the second update injected.
fn help_update(_: &World) -> i64 {
    2
}

/// How many messages of `chat` are recorded (read from its conversation, so visible at once, unlike the
/// gap-safe reader that waits for transactions of tests running beside this one).
async fn received(w: &World, chat: i64) -> usize {
    w.env
        .store
        .events_of("Conversation", &ConversationId::telegram(chat).to_string())
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type == "ChatMessageReceived")
        .count()
}

/// How many replies went to the message `message_id`.
fn replies_to(w: &World, message_id: i64) -> usize {
    w.fake
        .sent()
        .iter()
        .filter(|m| m.reply_to == Some(message_id))
        .count()
}

#[tokio::test(flavor = "current_thread")]
async fn webhook_mode_registers_authenticates_and_handles_each_update_once() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut w = World::start_webhook().await;

    // Registered with the public URL, the secret, one connection and the update types the agent reads.
    let hook = w.fake.webhook().unwrap();
    assert_eq!(hook.url, HOOK_URL);
    assert_eq!(hook.secret_token.as_deref(), Some(HOOK_SECRET));
    assert_eq!(hook.max_connections, Some(1));
    assert_eq!(
        hook.allowed_updates,
        Some(vec!["message".to_string(), "callback_query".to_string()])
    );
    assert!(w.fake.offsets().is_empty(), "webhook mode never polls");

    // A command is answered through sendMessage and recorded.
    let (status_msg, status) = w.fake.text_update(OP, Some("op"), "/status");
    assert_eq!(w.fake.deliver(&status).await, 200);
    let reply = w.reply_to(status_msg, "/status").await.text;
    assert!(reply.contains("Trading: running"), "{reply}");
    assert_eq!(received(&w, OP).await, 1);

    // Telegram delivers the same update again (it got no 2xx, say): handled once.
    assert_eq!(w.fake.deliver(&status).await, 200);
    assert_eq!(received(&w, OP).await, 1);
    assert_eq!(replies_to(&w, status_msg), 1);

    // A wrong or missing secret: 401, nothing recorded or answered, a warning without the value.
    let (help_msg, help) = w.fake.text_update(OP, Some("op"), "/help");
    let body = help.to_string().into_bytes();
    assert_eq!(
        w.fake
            .deliver_raw(body.clone(), Some("wrong-secret-value"))
            .await,
        401
    );
    assert_eq!(w.fake.deliver_raw(body, None).await, 401);
    // Not even dead-lettered when it is no update at all.
    assert_eq!(
        w.fake.deliver_raw(b"garbage".to_vec(), Some("nope")).await,
        401
    );
    assert!(read_stream(&w.env.js, DLQ_STREAM).await.is_empty());
    assert_eq!(received(&w, OP).await, 1);
    assert_eq!(replies_to(&w, help_msg), 0);
    let text = logs.text();
    assert!(
        text.contains("without the right secret token"),
        "no warning logged: {text}"
    );
    assert!(
        !text.contains("wrong-secret-value"),
        "the header leaked into the logs"
    );
    assert!(
        !text.contains(HOOK_SECRET),
        "the secret leaked into the logs"
    );
    assert!(!text.contains(SECRET), "the token leaked into the logs");

    // Delivered properly, it is answered, and the offset moves past it.
    assert_eq!(w.fake.deliver(&help).await, 200);
    let reply = w.reply_to(help_msg, "/help").await.text;
    assert!(reply.contains("/status"), "{reply}");
    let help_id = help["update_id"].as_i64().unwrap();
    let consumed = w.env.store.events_of("TelegramBot", BOT_ID).await.unwrap();
    assert_eq!(
        consumed.last().unwrap().payload["next_offset"].as_i64(),
        Some(help_id + 1)
    );

    // A restarted agent remembers the offset: a late redelivery is still handled once.
    w.stop_bot().await;
    w.start_bot();
    w.webhook_ready().await;
    assert_eq!(w.fake.deliver(&help).await, 200);
    assert_eq!(w.fake.deliver(&status).await, 200);
    assert_eq!(replies_to(&w, help_msg), 1);
    assert_eq!(replies_to(&w, status_msg), 1);
    assert_eq!(received(&w, OP).await, 2);
    for e in w
        .env
        .store
        .read_after(jarvis_store::Checkpoint::default(), 1_000_000)
        .await
        .unwrap()
    {
        assert!(
            !e.payload.to_string().contains(HOOK_SECRET),
            "the webhook secret leaked into {}",
            e.event_type
        );
    }
}

#[tokio::test]
async fn webhook_mode_dead_letters_malformed_posts_and_answers_200() {
    let w = World::start_webhook().await;
    // An update whose message cannot be read: dead-lettered like in polling mode.
    let mut bad = json!({"message": {"message_id": "not a number", "chat": 5}});
    let bad_id = w.fake.stamp(&mut bad);
    // (Refused posts are never dead-lettered: see the test above. Not posted here: this test runs beside
    // the one capturing logs, and tracing caches a log line's interest on the thread that first hits it.)
    assert_eq!(w.fake.deliver(&bad).await, 200);
    // A body that is not JSON at all.
    assert_eq!(
        w.fake
            .deliver_raw(b"{not json".to_vec(), Some(HOOK_SECRET))
            .await,
        200
    );
    wait_stream_len_of(&w.env.js, DLQ_STREAM, 2).await;
    let dead = read_stream(&w.env.js, DLQ_STREAM).await;
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|d| d.subject == "jarvis.dlq.telegram"));
    let reason = |i: usize| dead[i].headers.get("jarvis-dlq-error").unwrap().to_string();
    assert!(
        reason(0).contains(&format!("update {bad_id} is not a Bot API update")),
        "{}",
        reason(0)
    );
    let body: serde_json::Value = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(body["raw"]["message"]["message_id"], "not a number");
    assert!(reason(1).contains("not JSON"), "{}", reason(1));
    assert_eq!(&dead[1].payload[..], b"{not json");

    // The agent goes on.
    let (help_msg, help) = w.fake.text_update(OP, None, "/help");
    assert_eq!(w.fake.deliver(&help).await, 200);
    w.reply_to(help_msg, "/help").await;
}

#[tokio::test]
async fn drafts_and_approve_work_against_a_running_jarvis_x() {
    use jarvis_agents::x::outbox::DraftRequest;
    use jarvis_agents::x::{serve_commands, Outbox, OutboxSettings, Secret, XClient};
    use jarvis_testkit::fakes::x::FakeX;
    const BEARER: &str = "AAAA-app-bearer";
    const USER_TOKEN: &str = "user-access-token";

    let w = World::start().await;
    let x = FakeX::start(BEARER, USER_TOKEN).await;
    let client = XClient::new(
        &x.url(),
        Secret::new(BEARER),
        Some(Secret::new(USER_TOKEN)),
        Duration::from_secs(5),
    )
    .unwrap();
    let outbox = Outbox::new(
        w.env.store.clone(),
        client,
        OutboxSettings::default(),
        Arc::new(jarvis_agents::execution::SystemClock),
    );
    let draft = outbox
        .draft(
            DraftRequest {
                text: "gm, $SOL holders".into(),
                in_reply_to: None,
                requested_by: Some("test".into()),
                draft_id: None,
            },
            Utc::now(),
            &EventMetadata::root("test"),
        )
        .await
        .unwrap();
    let id = draft.draft_id.to_string();
    tokio::spawn(serve_commands(
        outbox,
        w.env.client.clone(),
        until(w.stop.subscribe()),
    ));
    // jarvis-x answers on NATS before the bot is asked.
    eventually(WAIT, "jarvis-x up", || async {
        w.env
            .client
            .request("jarvis.cmd.x.drafts", "{}".into())
            .await
            .ok()
            .filter(|r| {
                r.headers
                    .as_ref()
                    .is_none_or(|h| h.get("Nats-Service-Error").is_none())
            })
    })
    .await;

    let drafts = w.say(OP, "/drafts").await.text;
    assert!(
        drafts.contains("1 draft(s) await approval")
            && drafts.contains(&format!("{id}: gm, $SOL holders")),
        "{drafts}"
    );
    assert!(
        x.posted().is_empty(),
        "a draft is not posted before approval"
    );
    // A viewer may list but not approve.
    let no = w.say(VIEWER, &format!("/approve {id}")).await.text;
    assert!(no.contains("needs the operator role"), "{no}");
    let approved = w.say(OP, &format!("/approve {id}")).await.text;
    assert_eq!(approved, format!("Draft {id} is approved for posting."));
    let posted = x.posted();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0].text, "gm, $SOL holders");
    // Approved again: still posted once, and nothing awaits approval.
    w.say(OP2, &format!("/approve {id}")).await;
    assert_eq!(x.posted().len(), 1);
    assert_eq!(w.say(OP, "/drafts").await.text, "No drafts await approval.");
}
