//! The agent itself: the long-polling loop (webhook mode is in [`super::webhook`]), the per-update handling
//! and offset recording both share, recording every message before acting on it, authorisation,
//! sending replies, and dead-lettering what cannot be handled.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use jarvis_bus::consumer::dlq_headers;
use jarvis_bus::HandlerError;
use jarvis_domain::chat::{
    Conversation, ConversationCommand, ConversationId, ReceivedMessage, SentReply,
};
use jarvis_domain::telegram::{AccessDenied, DenialReason, TelegramBot, TelegramCommand, BOT_ID};
use jarvis_domain::{EventMetadata, EventRef};
use jarvis_store::EventStore;
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::Row;
use teloxide_core::prelude::*;
use teloxide_core::types::{
    CallbackQuery, InlineKeyboardMarkup, Message, MessageId, ParseMode, ReplyParameters, Update,
    UpdateKind,
};
use uuid::Uuid;

use super::auth::{trust_of, RateLimiter};
use super::commands::{self, Role};
use super::format::{escape, split, MAX_MESSAGE_CHARS};
use super::{TelegramConfig, DLQ_CONSUMER};
use crate::execution::Clock;
use crate::ledger::Ledger;

/// What the agent needs beside its configuration.
#[derive(Debug, Clone)]
pub struct TelegramSettings {
    /// The allowlist.
    pub users: HashMap<i64, Role>,
    /// Extra alert chats.
    pub alert_chats: Vec<i64>,
    /// Whether alerts are sent.
    pub alerts: bool,
    /// `getUpdates` long-polling timeout.
    pub poll_timeout: StdDuration,
    /// Messages per user per minute (0: no limit).
    pub rate_limit_per_minute: u32,
    /// The portfolio's quote asset (`USDT`), for `/price SOL`.
    pub quote_asset: String,
    /// The LLM's daily budget, USD, for `/budget`.
    pub llm_daily_usd: Option<Decimal>,
    /// How long a request to another service may take (an LLM answer takes a while).
    pub request_timeout: StdDuration,
}

impl TelegramSettings {
    /// Settings from `[telegram]` and the portfolio's quote asset.
    pub fn new(config: &TelegramConfig, quote_asset: &str) -> Self {
        Self {
            users: config.users.iter().map(|u| (u.id, u.role)).collect(),
            alert_chats: config.alert_chats.clone(),
            alerts: config.alerts,
            poll_timeout: StdDuration::from_secs(config.poll_timeout_secs),
            rate_limit_per_minute: config.rate_limit_per_minute,
            quote_asset: quote_asset.to_ascii_uppercase(),
            llm_daily_usd: None,
            request_timeout: StdDuration::from_secs(60),
        }
    }

    /// The chats that get alerts: every operator's and admin's private chat, and `alert_chats`.
    pub fn alert_chats(&self) -> Vec<i64> {
        let mut chats: BTreeSet<i64> = self
            .users
            .iter()
            .filter(|(_, role)| **role >= Role::Operator)
            .map(|(id, _)| *id)
            .collect();
        chats.extend(self.alert_chats.iter().copied());
        chats.into_iter().collect()
    }
}

/// What became of one update.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Handled (or nothing to do).
    Done,
    /// Cannot ever be handled: dead-letter it with the reason.
    DeadLetter(String),
    /// Failed for now (the store is unreachable): poll it again later.
    Retry(String),
}

/// A reply: text (plain; escaped when sent) and an optional inline keyboard.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reply {
    /// The text.
    pub text: String,
    /// Buttons under the last piece.
    pub keyboard: Option<InlineKeyboardMarkup>,
}

impl Reply {
    /// A text reply.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            keyboard: None,
        }
    }
}

/// The Telegram agent.
pub struct TelegramAgent {
    pub(crate) bot: Bot,
    pub(crate) store: EventStore,
    pub(crate) client: async_nats::Client,
    pub(crate) js: Context,
    pub(crate) settings: TelegramSettings,
    pub(crate) clock: Arc<dyn Clock>,
    limiter: RateLimiter,
    pub(crate) health: super::alerts::HealthBoard,
    /// Webhook mode's settings; `None`: long polling.
    pub(crate) webhook: Option<super::webhook::Webhook>,
    /// Webhook mode: the offset (`None` until read from the store), locked while an update is handled,
    /// so updates are handled one at a time and in order.
    pub(crate) webhook_offset: tokio::sync::Mutex<Option<Option<i64>>>,
    /// Webhook mode: the address the listener is bound to, once it is.
    pub(crate) webhook_addr: std::sync::OnceLock<std::net::SocketAddr>,
}

/// Never shows the bot (its `Debug` would print the token).
impl std::fmt::Debug for TelegramAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramAgent")
            .field("api_url", &self.bot.api_url().as_str())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn transient(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Transient(e.to_string())
}

/// A header value: one line of visible text.
fn header_value(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1_000)
        .collect()
}

impl TelegramAgent {
    /// An agent with the token and base URL of `config`, and `settings`.
    ///
    /// # Errors
    /// A message (without the token) when there is no token, the URL is bad or the HTTP client fails.
    pub fn new(
        config: &TelegramConfig,
        settings: TelegramSettings,
        store: EventStore,
        client: async_nats::Client,
        js: Context,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        config.validate()?;
        let token = config
            .token
            .clone()
            .filter(|t| !t.trim().is_empty())
            .ok_or("telegram.token is not set: the agent is off")?;
        let url = url::Url::parse(&config.api_url)
            .map_err(|e| format!("telegram.api_url = {:?}: {e}", config.api_url))?;
        // Long polls hold the request open for the poll timeout: the client must wait longer.
        let http = reqwest::Client::builder()
            .connect_timeout(StdDuration::from_secs(5))
            .timeout(settings.poll_timeout + StdDuration::from_secs(15))
            .build()
            .map_err(|e| format!("building the Telegram HTTP client: {e}"))?;
        let bot = Bot::with_client(token, http).set_api_url(url);
        let webhook = super::webhook::Webhook::from_config(config)?;
        Ok(Self {
            bot,
            store,
            client,
            js,
            limiter: RateLimiter::new(settings.rate_limit_per_minute),
            settings,
            clock,
            health: Default::default(),
            webhook,
            webhook_offset: tokio::sync::Mutex::new(None),
            webhook_addr: std::sync::OnceLock::new(),
        })
    }

    /// Runs the agent until `shutdown` completes: the update loop, and (with alerts on) the alert consumers
    /// and the heartbeat watcher.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send + 'static) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until = move || {
            let mut rx = stopped.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        if self.settings.alerts {
            super::alerts::spawn(&self, &mut tasks, &until);
        }
        {
            let (agent, stopped) = (self.clone(), until());
            if self.webhook.is_some() {
                tasks.spawn(async move { agent.serve_webhook(stopped).await });
            } else {
                tasks.spawn(async move { agent.poll(stopped).await });
            }
        }
        shutdown.await;
        let _ = stop.send(true);
        while tasks.join_next().await.is_some() {}
    }

    /// The long-polling loop: `getUpdates` from the recorded offset, each update handled in turn, then the
    /// offset recorded. Errors are logged (never with the token) and retried with a back-off.
    ///
    /// It first removes any webhook (`getUpdates` fails while one is set); a failure there is logged and
    /// polling goes on.
    pub async fn poll(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let removed = tokio::select! {
            _ = &mut shutdown => return,
            r = self.bot.delete_webhook().send() => r,
        };
        if let Err(e) = removed {
            tracing::warn!(cause = %e, "deleteWebhook failed; polling anyway");
        }
        let mut offset = loop {
            match self.load_offset().await {
                Ok(offset) => break offset,
                Err(e) => {
                    tracing::warn!(cause = %e, "reading the Telegram offset failed; retrying");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(StdDuration::from_secs(1)) => {}
                    }
                }
            }
        };
        let mut pause = StdDuration::from_millis(200);
        loop {
            let mut request = self
                .bot
                .get_updates()
                .timeout(self.settings.poll_timeout.as_secs() as u32);
            if let Some(o) = offset {
                request = request.offset(o as i32);
            }
            let updates = tokio::select! {
                _ = &mut shutdown => return,
                r = request.send() => r,
            };
            let updates = match updates {
                Ok(u) => {
                    pause = StdDuration::from_millis(200);
                    u
                }
                Err(e) => {
                    // teloxide removes the token from network errors' URLs.
                    tracing::warn!(cause = %e, ?pause, "getUpdates failed; retrying");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(StdDuration::from_secs(30));
                    continue;
                }
            };
            if let Some(reason) = self.consume(&updates, &mut offset).await {
                tracing::warn!(%reason, "update not handled; polling it again");
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(StdDuration::from_secs(1)) => {}
                }
            }
        }
    }

    /// The recorded offset: the first update id not handled yet (`None`: none was ever handled).
    pub(crate) async fn load_offset(&self) -> Result<Option<i64>, String> {
        Ledger::load::<TelegramBot>(&self.store, BOT_ID, true)
            .await
            .map(|bot| bot.next_offset())
            .map_err(|e| e.to_string())
    }

    /// Handles a batch of updates in order, from `offset`, for both modes (a webhook post is a batch of
    /// one): updates below the offset were handled before and are skipped (Telegram delivers again what it
    /// is not sure arrived); what can never be handled is dead-lettered; the first update that must be tried
    /// again stops the batch. Then the new offset is recorded (`TelegramUpdatesConsumed`) and `offset`
    /// moved. Answers why an update must be tried again, if one must.
    pub(crate) async fn consume(
        &self,
        updates: &[Update],
        offset: &mut Option<i64>,
    ) -> Option<String> {
        let mut handled = 0u32;
        let mut next = *offset;
        let mut retry = None;
        for update in updates {
            let id = i64::from(update.id.0);
            if next.is_some_and(|o| id < o) {
                tracing::debug!(update_id = id, "update handled before; skipped");
                continue;
            }
            match self.handle_update(update).await {
                Outcome::Done => {}
                Outcome::DeadLetter(reason) => self.dead_letter(update, &reason).await,
                Outcome::Retry(reason) => {
                    retry = Some(format!("update {id}: {reason}"));
                    break;
                }
            }
            handled += 1;
            next = Some(id + 1);
        }
        if next != *offset {
            if let Some(n) = next {
                let consume = TelegramCommand::ConsumeUpdates {
                    next_offset: n,
                    updates: handled,
                    at: self.clock.now(),
                };
                if let Err(e) = Ledger::execute::<TelegramBot>(
                    &self.store,
                    BOT_ID,
                    consume,
                    &EventMetadata::root("telegram"),
                    true,
                )
                .await
                {
                    // Polling: the Bot API has the offset anyway once asked with it. Both modes: a message is
                    // recorded before it is answered, and never answered twice. The event is the durable copy.
                    tracing::warn!(cause = %e, next_offset = n, "recording the Telegram offset failed");
                }
            }
            *offset = next;
        }
        retry
    }

    /// Handles one update.
    pub(crate) async fn handle_update(&self, update: &Update) -> Outcome {
        match &update.kind {
            UpdateKind::Message(m) => self.on_message(m).await,
            UpdateKind::CallbackQuery(q) => self.on_callback(q).await,
            UpdateKind::Error(raw) => Outcome::DeadLetter(format!(
                "update {} is not a Bot API update this agent can read: {}",
                update.id.0,
                describe(raw)
            )),
            _ => Outcome::Done,
        }
    }

    /// Copies an update to `jarvis.dlq.telegram` with the reason.
    pub(crate) async fn dead_letter(&self, update: &Update, reason: &str) {
        tracing::warn!(update_id = update.id.0, %reason, "dead-lettering a Telegram update");
        let body = match &update.kind {
            UpdateKind::Error(raw) => {
                serde_json::json!({"update_id": update.id.0, "raw": raw}).to_string()
            }
            _ => serde_json::to_string(update).unwrap_or_default(),
        };
        let mut h = HeaderMap::new();
        h.insert(
            "Nats-Msg-Id",
            format!("{DLQ_CONSUMER}:update:{}", update.id.0).as_str(),
        );
        h.insert(
            "jarvis-telegram-update-id",
            update.id.0.to_string().as_str(),
        );
        self.publish_dead(h, body.into_bytes(), reason).await;
    }

    /// Copies a webhook body that is no update at all to `jarvis.dlq.telegram` with the reason (its
    /// message id is the body's SHA-256, so the same body posted again is kept once).
    pub(crate) async fn dead_letter_body(&self, body: &[u8], reason: &str) {
        use sha2::Digest as _;
        tracing::warn!(%reason, bytes = body.len(), "dead-lettering a Telegram webhook body");
        let digest = sha2::Sha256::digest(body);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("{DLQ_CONSUMER}:body:{hex}").as_str());
        self.publish_dead(h, body.to_vec(), reason).await;
    }

    async fn publish_dead(&self, mut h: HeaderMap, body: Vec<u8>, reason: &str) {
        h.insert(dlq_headers::ERROR, header_value(reason).as_str());
        h.insert(dlq_headers::CONSUMER, DLQ_CONSUMER);
        h.insert(dlq_headers::SUBJECT, "telegram.updates");
        let subject = jarvis_bus::dlq_subject(DLQ_CONSUMER);
        let published = match self
            .js
            .publish_with_headers(subject.clone(), h, body.into())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = published {
            tracing::error!(cause = %e, %subject, "dead-lettering a Telegram update failed; it is dropped");
        }
    }

    async fn on_message(&self, m: &Message) -> Outcome {
        let Some(from) = &m.from else {
            // A channel post or an anonymous admin: nobody to answer or authorise.
            return Outcome::Done;
        };
        let Ok(user_id) = i64::try_from(from.id.0) else {
            return Outcome::DeadLetter(format!("user id {} does not fit an i64", from.id.0));
        };
        let text = m
            .text()
            .or_else(|| m.caption())
            .unwrap_or_default()
            .to_string();
        let role = self.settings.users.get(&user_id).copied();
        let chat_id = m.chat.id.0;
        let message_id = i64::from(m.id.0);
        let received = ReceivedMessage {
            chat_id,
            message_id,
            user_id,
            username: from.username.clone(),
            text: text.clone(),
            trust: trust_of(role),
            received_at: m.date,
        };
        let cause = match self.record_message(received).await {
            Ok(Some(cause)) => cause,
            // Recorded before: handled before (a repeated update).
            Ok(None) => return Outcome::Done,
            Err(HandlerError::Permanent(reason)) => return Outcome::DeadLetter(reason),
            Err(HandlerError::Transient(reason)) => return Outcome::Retry(reason),
        };
        let Some(parsed) = commands::parse(&text) else {
            return Outcome::Done;
        };
        let attempted = match &parsed {
            Ok(c) => c.name().to_string(),
            Err(_) => text
                .split_whitespace()
                .next()
                .unwrap_or("")
                .chars()
                .take(32)
                .collect(),
        };
        let deny = |reason: DenialReason| AccessDenied {
            chat_id,
            user_id,
            username: from.username.clone(),
            message_id: Some(message_id),
            attempted: attempted.clone(),
            reason,
            at: m.date,
        };
        let reply = if !self.limiter.allow(user_id, m.date) {
            self.deny(deny(DenialReason::RateLimited), &cause).await;
            Reply::text(format!(
                "You are sending messages faster than {} a minute; please wait a moment.",
                self.settings.rate_limit_per_minute
            ))
        } else if let Some(role) = role {
            match parsed {
                Err(usage) => Reply::text(usage.0),
                Ok(command) if role < command.needs() => {
                    self.deny(deny(DenialReason::InsufficientRole), &cause)
                        .await;
                    Reply::text(format!(
                        "{} needs the {} role; you are a {role}.",
                        command.name(),
                        command.needs()
                    ))
                }
                Ok(command) => self.reply(&command, role, user_id, &cause).await,
            }
        } else {
            self.deny(deny(DenialReason::NotAllowlisted), &cause).await;
            Reply::text(
                "Sorry, this is a private assistant and you are not on its list of users. \
                 Ask its owner to add your Telegram id if you should be.",
            )
        };
        self.send(chat_id, Some(message_id), &reply, Some(cause))
            .await;
        Outcome::Done
    }

    async fn on_callback(&self, q: &CallbackQuery) -> Outcome {
        let Ok(user_id) = i64::try_from(q.from.id.0) else {
            return Outcome::DeadLetter(format!("user id {} does not fit an i64", q.from.id.0));
        };
        // Stop the button's spinner whatever comes next.
        if let Err(e) = self.bot.answer_callback_query(q.id.clone()).await {
            tracing::debug!(cause = %e, "answerCallbackQuery failed");
        }
        let chat_id = q.message.as_ref().map_or(user_id, |m| m.chat().id.0);
        let message_id = q.message.as_ref().map(|m| i64::from(m.id().0));
        let data = q.data.clone().unwrap_or_default();
        let Some((action, id)) = data.split_once(':') else {
            return Outcome::DeadLetter(format!("button data {data:?} is not <action>:<id>"));
        };
        let role = self.settings.users.get(&user_id).copied();
        if role.is_none_or(|r| r < Role::Operator) {
            let denied = AccessDenied {
                chat_id,
                user_id,
                username: q.from.username.clone(),
                message_id: None,
                attempted: format!("button:{action}"),
                reason: if role.is_none() {
                    DenialReason::NotAllowlisted
                } else {
                    DenialReason::InsufficientRole
                },
                at: self.clock.now(),
            };
            let root = EventMetadata::root("telegram");
            let cause = EventRef {
                event_id: root.causation_id,
                correlation_id: root.correlation_id,
            };
            self.deny(denied, &cause).await;
            let text = "Only an operator may press this button.";
            self.send(chat_id, message_id, &Reply::text(text), None)
                .await;
            return Outcome::Done;
        }
        let reply = match action {
            "confirm" => self.confirm(id, user_id).await,
            "cancel" => Reply::text(format!(
                "Cancelled: proposal {id} is left to expire unconfirmed."
            )),
            other => return Outcome::DeadLetter(format!("unknown button action {other:?}")),
        };
        self.send(chat_id, message_id, &reply, None).await;
        Outcome::Done
    }

    async fn deny(&self, denied: AccessDenied, cause: &EventRef) {
        tracing::info!(user_id = denied.user_id, attempted = %denied.attempted, reason = denied.reason.as_str(), "telegram access denied");
        if let Err(e) = Ledger::execute::<TelegramBot>(
            &self.store,
            BOT_ID,
            TelegramCommand::DenyAccess(denied),
            &cause.caused("telegram"),
            true,
        )
        .await
        {
            tracing::warn!(cause = %e, "recording a refused attempt failed");
        }
    }

    /// Records a message; `None` when it was recorded before. Answers the `ChatMessageReceived` event.
    async fn record_message(&self, m: ReceivedMessage) -> Result<Option<EventRef>, HandlerError> {
        let id = ConversationId::telegram(m.chat_id).to_string();
        let conversation: Conversation = Ledger::load(&self.store, &id, true).await?;
        if conversation.message(m.message_id).is_some() {
            return Ok(None);
        }
        let message_id = m.message_id;
        Ledger::execute::<Conversation>(
            &self.store,
            &id,
            ConversationCommand::Receive(m),
            &EventMetadata::root("telegram"),
            true,
        )
        .await?;
        let row = sqlx::query(
            "SELECT event_id, metadata ->> 'correlation_id' AS correlation FROM events \
             WHERE aggregate_type = 'Conversation' AND aggregate_id = $1 \
               AND event_type = 'ChatMessageReceived' \
               AND (payload -> 'ChatMessageReceived' ->> 'message_id')::bigint = $2 \
             ORDER BY sequence DESC LIMIT 1",
        )
        .bind(&id)
        .bind(message_id)
        .fetch_optional(self.store.pool())
        .await
        .map_err(transient)?;
        // Not written: older than the conversation remembers, so taken as recorded.
        let Some(row) = row else {
            return Ok(None);
        };
        let event_id: Uuid = row.try_get("event_id").map_err(transient)?;
        let correlation: Option<String> = row.try_get("correlation").map_err(transient)?;
        Ok(Some(EventRef {
            event_id,
            correlation_id: correlation.and_then(|c| c.parse().ok()).unwrap_or(event_id),
        }))
    }

    /// Sends `reply` to `chat_id` (escaped, split at the limit, the keyboard under the last piece) and
    /// records each piece as `ChatReplySent`, caused by `cause`. Failures are logged, never fatal.
    pub(crate) async fn send(
        &self,
        chat_id: i64,
        reply_to: Option<i64>,
        reply: &Reply,
        cause: Option<EventRef>,
    ) -> bool {
        let pieces = split(&reply.text, MAX_MESSAGE_CHARS);
        let last = pieces.len() - 1;
        for (i, piece) in pieces.iter().enumerate() {
            let mut request = self
                .bot
                .send_message(ChatId(chat_id), escape(piece))
                .parse_mode(ParseMode::MarkdownV2);
            if let (0, Some(to)) = (i, reply_to) {
                if let Ok(to) = i32::try_from(to) {
                    request = request.reply_parameters(
                        ReplyParameters::new(MessageId(to)).allow_sending_without_reply(),
                    );
                }
            }
            if i == last {
                if let Some(keyboard) = &reply.keyboard {
                    request = request.reply_markup(keyboard.clone());
                }
            }
            if let Err(e) = request.send().await {
                tracing::warn!(chat_id, cause = %e, "sending a Telegram message failed");
                return false;
            }
            let sent = SentReply {
                chat_id,
                reply_to,
                text: piece.clone(),
                sent_at: self.clock.now(),
            };
            let metadata =
                cause.map_or_else(|| EventMetadata::root("telegram"), |c| c.caused("telegram"));
            if let Err(e) = Ledger::execute::<Conversation>(
                &self.store,
                &ConversationId::telegram(chat_id).to_string(),
                ConversationCommand::RecordReply(sent),
                &metadata,
                true,
            )
            .await
            {
                tracing::warn!(chat_id, cause = %e, "recording a sent reply failed");
            }
        }
        true
    }
}

/// A short description of a raw update: its keys, never its whole text.
fn describe(raw: &Value) -> String {
    match raw {
        Value::Object(map) if !map.is_empty() => {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            format!(
                "fields [{}] do not match the Bot API's types",
                keys.join(", ")
            )
        }
        _ => "empty or not an object".into(),
    }
}
