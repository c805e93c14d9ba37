//! A fake Telegram Bot API (`POST /bot<token>/<method>`, JSON bodies, `{"ok": true, "result": ...}` or
//! `{"ok": false, "error_code", "description"}`), for the real teloxide client.
//!
//! A test injects updates (messages and button presses from a given user, or any raw JSON) and reads what
//! the bot sent. `getUpdates` behaves like Telegram's: `offset` confirms (drops) every update below it,
//! `timeout` long-polls until an update arrives. `sendMessage` checks what Telegram checks: the token, a
//! text of at most 4,096 characters, and with `parse_mode = MarkdownV2` that every reserved character is
//! escaped (`Bad Request: can't parse entities: ...` otherwise).
//!
//! Webhooks: `setWebhook` (sent by teloxide as `multipart/form-data`; JSON is read too) checks what Telegram
//! checks (an `https` URL on port 443, 80, 88 or 8443, a secret token of 1-256 `A-Z a-z 0-9 _ -`,
//! `max_connections` 1-100) and records the webhook; while one is set `getUpdates` fails with 409 as on
//! Telegram; `deleteWebhook` removes it. [`FakeTelegram::deliver`] then plays Telegram delivering an update:
//! it posts the JSON to the registered URL's path with the registered secret in
//! `X-Telegram-Bot-Api-Secret-Token`, at the address given to [`FakeTelegram::proxy_webhook_to`] (standing
//! in for the reverse proxy that terminates TLS in front of the agent), and answers the HTTP status.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use serde_json::{json, Value};

use super::Fake;

/// Characters MarkdownV2 reserves.
const RESERVED: &str = "_*[]()~`>#+-=|{}.!\\";

/// The bot's own user id (the part of the token before `:`) when the token has none.
const BOT_USER_ID: i64 = 100_000;

/// A message the bot sent.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    /// The chat.
    pub chat_id: i64,
    /// Its id, as the fake assigned it.
    pub message_id: i64,
    /// The text as a user reads it (MarkdownV2 escapes removed).
    pub text: String,
    /// The text as sent.
    pub raw_text: String,
    /// `parse_mode`, if any.
    pub parse_mode: Option<String>,
    /// `reply_markup`, if any.
    pub reply_markup: Option<Value>,
    /// `reply_parameters.message_id`, if any.
    pub reply_to: Option<i64>,
}

impl SentMessage {
    /// The callback data of the inline button labelled `label`, if there is one.
    pub fn button(&self, label: &str) -> Option<String> {
        self.reply_markup.as_ref()?["inline_keyboard"]
            .as_array()?
            .iter()
            .flat_map(|row| row.as_array().cloned().unwrap_or_default())
            .find(|b| b["text"] == label)
            .and_then(|b| b["callback_data"].as_str().map(str::to_string))
    }
}

/// The webhook as registered with `setWebhook`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// `url`.
    pub url: String,
    /// `secret_token`, if given.
    pub secret_token: Option<String>,
    /// `max_connections`, if given.
    pub max_connections: Option<u64>,
    /// `allowed_updates`, if given.
    pub allowed_updates: Option<Vec<String>>,
}

#[derive(Debug, Default)]
struct State0 {
    webhook: Option<Webhook>,
    proxy: Option<std::net::SocketAddr>,
    token: String,
    pending: Vec<Value>,
    next_update_id: i64,
    next_message_id: i64,
    date: Option<i64>,
    sent: Vec<SentMessage>,
    calls: Vec<(String, Value)>,
    offsets: Vec<Option<i64>>,
}

type Shared = Arc<(Mutex<State0>, tokio::sync::Notify)>;

/// The fake; point `api_url` at [`FakeTelegram::url`].
pub struct FakeTelegram {
    fake: Fake,
    state: Shared,
}

impl std::fmt::Debug for FakeTelegram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeTelegram")
            .field("addr", &self.fake.addr)
            .finish()
    }
}

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State0> {
    state.0.lock().unwrap_or_else(|p| p.into_inner())
}

fn ok(result: Value) -> Response {
    Json(json!({"ok": true, "result": result})).into_response()
}

fn fail(code: u16, description: &str) -> Response {
    let status =
        axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::BAD_REQUEST);
    (
        status,
        Json(json!({"ok": false, "error_code": code, "description": description})),
    )
        .into_response()
}

/// A user object.
fn user(id: i64, username: Option<&str>) -> Value {
    let mut u = json!({"id": id, "is_bot": false, "first_name": format!("User{id}")});
    if let Some(name) = username {
        u["username"] = json!(name);
    }
    u
}

fn chat(id: i64) -> Value {
    if id > 0 {
        json!({"id": id, "type": "private", "first_name": format!("User{id}")})
    } else {
        json!({"id": id, "type": "supergroup", "title": "Jarvis alerts"})
    }
}

/// Checks MarkdownV2 the way Telegram does for plain text: every reserved character escaped.
fn check_markdown(text: &str) -> Result<String, String> {
    let mut plain = String::new();
    let mut chars = text.chars().enumerate();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some((_, e)) => plain.push(e),
                None => {
                    return Err(format!(
                    "can't parse entities: unexpected end of text after '\\' at byte offset {i}"
                ))
                }
            }
        } else if RESERVED.contains(c) {
            return Err(format!(
                "can't parse entities: Character '{c}' is reserved and must be escaped with the preceding '\\'"
            ));
        } else {
            plain.push(c);
        }
    }
    Ok(plain)
}

/// A `multipart/form-data` body's text fields as a JSON object (values that are JSON arrays or objects,
/// like `allowed_updates`, parsed; the rest strings, as Telegram reads them).
fn form_fields(content_type: &str, body: &[u8]) -> Result<Value, String> {
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()
        .map(|b| b.trim_matches('"').to_string())
        .ok_or("multipart body without a boundary")?;
    let text = String::from_utf8_lossy(body);
    let mut fields = serde_json::Map::new();
    for part in text.split(&format!("--{boundary}")).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix("\r\n").unwrap_or(part);
        let (head, value) = part
            .split_once("\r\n\r\n")
            .ok_or("a multipart part without headers")?;
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        let name = head
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("name="))
            .next()
            .map(|n| n.trim_matches('"').to_string())
            .ok_or("a multipart part without a name")?;
        let parsed = if value.starts_with('[') || value.starts_with('{') {
            serde_json::from_str(value).unwrap_or_else(|_| json!(value))
        } else {
            json!(value)
        };
        fields.insert(name, parsed);
    }
    Ok(Value::Object(fields))
}

/// A field given as a number (JSON) or a string (a form).
fn number(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn set_webhook(state: &Shared, body: &Value) -> Response {
    let url = body["url"].as_str().unwrap_or("");
    if url.is_empty() {
        lock(state).webhook = None;
        return ok(json!(true));
    }
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return fail(400, "Bad Request: bad webhook: Failed to resolve host");
    };
    if parsed.scheme() != "https" {
        return fail(
            400,
            "Bad Request: bad webhook: An HTTPS URL must be provided for webhook",
        );
    }
    if !matches!(parsed.port_or_known_default(), Some(443 | 80 | 88 | 8443)) {
        return fail(
            400,
            "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443",
        );
    }
    let secret_token = body["secret_token"].as_str().map(str::to_string);
    if let Some(secret) = &secret_token {
        let allowed = secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !(1..=256).contains(&secret.len()) || !allowed {
            return fail(
                400,
                "Bad Request: secret token contains unallowed characters",
            );
        }
    }
    let max_connections = number(&body["max_connections"]);
    if max_connections.is_some_and(|m| !(1..=100).contains(&m)) {
        return fail(
            400,
            "Bad Request: bad webhook: max_connections must be 1-100",
        );
    }
    let allowed_updates = body["allowed_updates"].as_array().map(|a| {
        a.iter()
            .filter_map(|u| u.as_str().map(str::to_string))
            .collect()
    });
    lock(state).webhook = Some(Webhook {
        url: url.to_string(),
        secret_token,
        max_connections,
        allowed_updates,
    });
    ok(json!(true))
}

async fn method(
    State(state): State<Shared>,
    Path((bot, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = if body.is_empty() {
        json!({})
    } else if content_type.starts_with("multipart/form-data") {
        match form_fields(&content_type, &body) {
            Ok(v) => v,
            Err(e) => return fail(400, &format!("Bad Request: {e}")),
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return fail(400, &format!("Bad Request: invalid JSON: {e}")),
        }
    };
    let token = lock(&state).token.clone();
    if bot != format!("bot{token}") {
        return fail(401, "Unauthorized");
    }
    // Telegram reads method names case-insensitively (teloxide sends `SendMessage`).
    let name = name.to_ascii_lowercase();
    if name != "getupdates" {
        lock(&state).calls.push((name.clone(), body.clone()));
    }
    match name.as_str() {
        "getme" => ok(
            json!({"id": bot_id(&token), "is_bot": true, "first_name": "Jarvis", "username": "jarvis_test_bot"}),
        ),
        "getupdates" if lock(&state).webhook.is_some() => fail(
            409,
            "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
        ),
        "getupdates" => get_updates(&state, &body).await,
        "setwebhook" => set_webhook(&state, &body),
        "deletewebhook" => {
            lock(&state).webhook = None;
            ok(json!(true))
        }
        "getwebhookinfo" => {
            let url = lock(&state)
                .webhook
                .as_ref()
                .map(|w| w.url.clone())
                .unwrap_or_default();
            ok(json!({"url": url, "has_custom_certificate": false, "pending_update_count": 0}))
        }
        "sendmessage" => send_message(&state, &body),
        "answercallbackquery" | "editmessagereplymarkup" => {
            ok(json!(true))
        }
        "editmessagetext" => {
            let chat_id = body["chat_id"].as_i64().unwrap_or(0);
            let text = body["text"].as_str().unwrap_or("");
            ok(
                json!({"message_id": body["message_id"], "date": 0, "chat": chat(chat_id), "text": text}),
            )
        }
        other => fail(404, &format!("Not Found: method {other} is not faked")),
    }
}

fn bot_id(token: &str) -> i64 {
    token
        .split(':')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or(BOT_USER_ID)
}

async fn get_updates(state: &Shared, body: &Value) -> Response {
    let offset = body["offset"].as_i64();
    let timeout = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0).min(50));
    let deadline = tokio::time::Instant::now() + timeout;
    lock(state).offsets.push(offset);
    loop {
        let notified = state.1.notified();
        {
            let mut s = lock(state);
            if let Some(o) = offset {
                // Telegram forgets every update below the offset: they are confirmed.
                s.pending
                    .retain(|u| u["update_id"].as_i64().is_some_and(|id| id >= o));
            }
            if !s.pending.is_empty() {
                let limit = body["limit"].as_u64().unwrap_or(100) as usize;
                return ok(Value::Array(
                    s.pending.iter().take(limit).cloned().collect(),
                ));
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return ok(json!([]));
        }
    }
}

fn send_message(state: &Shared, body: &Value) -> Response {
    let Some(chat_id) = body["chat_id"].as_i64() else {
        return fail(400, "Bad Request: chat_id is required");
    };
    let raw = body["text"].as_str().unwrap_or("").to_string();
    let parse_mode = body["parse_mode"].as_str().map(str::to_string);
    let text = if parse_mode.as_deref() == Some("MarkdownV2") {
        match check_markdown(&raw) {
            Ok(t) => t,
            Err(e) => return fail(400, &format!("Bad Request: {e}")),
        }
    } else {
        raw.clone()
    };
    if text.is_empty() {
        return fail(400, "Bad Request: message text is empty");
    }
    if text.chars().count() > 4_096 {
        return fail(400, "Bad Request: message is too long");
    }
    let mut s = lock(state);
    s.next_message_id += 1;
    let message_id = s.next_message_id;
    let date = s.date.unwrap_or(0);
    let reply_markup = body.get("reply_markup").cloned().filter(|v| !v.is_null());
    s.sent.push(SentMessage {
        chat_id,
        message_id,
        text: text.clone(),
        raw_text: raw,
        parse_mode,
        reply_markup: reply_markup.clone(),
        reply_to: body["reply_parameters"]["message_id"].as_i64(),
    });
    let bot = bot_id(&s.token);
    let mut message = json!({
        "message_id": message_id,
        "date": date,
        "chat": chat(chat_id),
        "from": {"id": bot, "is_bot": true, "first_name": "Jarvis", "username": "jarvis_test_bot"},
        "text": text,
    });
    if let Some(markup) = reply_markup {
        message["reply_markup"] = markup;
    }
    ok(message)
}

impl FakeTelegram {
    /// Starts it on a free loopback port, accepting `token`.
    pub async fn start(token: &str) -> Self {
        let state: Shared = Arc::new((
            Mutex::new(State0 {
                token: token.to_string(),
                next_update_id: 1,
                next_message_id: 1_000,
                ..Default::default()
            }),
            tokio::sync::Notify::new(),
        ));
        let routes = state.clone();
        let fake = Fake::start(move |_| {
            axum::Router::new()
                .route("/{bot}/{method}", post(method))
                .with_state(routes)
        })
        .await;
        Self { fake, state }
    }

    /// `http://127.0.0.1:<port>`, the `api_url` to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.fake.addr)
    }

    /// The Unix time given to messages from now on (default 0 for sent messages, now for injected ones).
    pub fn set_date(&self, unix: i64) {
        lock(&self.state).date = Some(unix);
    }

    fn date(&self) -> i64 {
        lock(&self.state).date.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        })
    }

    /// Gives `update` the next `update_id` and returns it (for [`FakeTelegram::deliver`]).
    pub fn stamp(&self, update: &mut Value) -> i64 {
        let mut s = lock(&self.state);
        let id = s.next_update_id;
        s.next_update_id += 1;
        update["update_id"] = json!(id);
        id
    }

    /// Queues an update (its `update_id` is set) and returns its id.
    pub fn push_update(&self, mut update: Value) -> i64 {
        let id = self.stamp(&mut update);
        lock(&self.state).pending.push(update);
        self.state.1.notify_waiters();
        id
    }

    /// An update (with the next `update_id`) of `user` writing `text` in their private chat, not queued:
    /// for [`FakeTelegram::deliver`]. Returns the message id and the update.
    pub fn text_update(&self, user: i64, username: Option<&str>, text: &str) -> (i64, Value) {
        let (message_id, mut update) = self.text_message(user, user, username, text);
        self.stamp(&mut update);
        (message_id, update)
    }

    /// A message update without its `update_id`, and the message id.
    fn text_message(
        &self,
        chat_id: i64,
        user_id: i64,
        username: Option<&str>,
        text: &str,
    ) -> (i64, Value) {
        let date = self.date();
        let message_id = {
            let mut s = lock(&self.state);
            s.next_message_id += 1;
            s.next_message_id
        };
        let update = json!({
            "message": {
                "message_id": message_id,
                "date": date,
                "chat": chat(chat_id),
                "from": user(user_id, username),
                "text": text,
            }
        });
        (message_id, update)
    }

    /// The webhook registered with `setWebhook`, if one is.
    pub fn webhook(&self) -> Option<Webhook> {
        lock(&self.state).webhook.clone()
    }

    /// Where webhook posts go: the registered URL's path at `addr` over plain HTTP, as the reverse proxy
    /// terminating TLS at the public URL would forward them.
    pub fn proxy_webhook_to(&self, addr: std::net::SocketAddr) {
        lock(&self.state).proxy = Some(addr);
    }

    /// Plays Telegram delivering `update` to the registered webhook with the registered secret; answers
    /// the HTTP status. Panics without a webhook or a [`FakeTelegram::proxy_webhook_to`] address.
    pub async fn deliver(&self, update: &Value) -> u16 {
        let secret = self.webhook().and_then(|w| w.secret_token);
        self.deliver_raw(update.to_string().into_bytes(), secret.as_deref())
            .await
    }

    /// Posts `body` to the registered webhook as Telegram would, with `secret` (`None`: no header) in
    /// `X-Telegram-Bot-Api-Secret-Token`; answers the HTTP status.
    pub async fn deliver_raw(&self, body: Vec<u8>, secret: Option<&str>) -> u16 {
        let (hook, proxy) = {
            let s = lock(&self.state);
            (s.webhook.clone(), s.proxy)
        };
        let hook = hook.expect("no webhook is set (setWebhook was not called)");
        let proxy = proxy.expect("no address to deliver to: call proxy_webhook_to first");
        let public = reqwest::Url::parse(&hook.url).expect("the webhook URL was checked");
        let mut target = format!("http://{proxy}{}", public.path());
        if let Some(q) = public.query() {
            target = format!("{target}?{q}");
        }
        let mut request = reqwest::Client::new()
            .post(target)
            .header("content-type", "application/json")
            .body(body);
        if let Some(secret) = secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        let response = request.send().await.expect("the webhook listener answers");
        response.status().as_u16()
    }

    /// `user` writes `text` in their private chat with the bot; returns the message id.
    pub fn send_text(&self, user: i64, username: Option<&str>, text: &str) -> i64 {
        self.send_text_in(user, user, username, text)
    }

    /// `user` writes `text` in chat `chat_id`; returns the message id.
    pub fn send_text_in(
        &self,
        chat_id: i64,
        user_id: i64,
        username: Option<&str>,
        text: &str,
    ) -> i64 {
        let (message_id, update) = self.text_message(chat_id, user_id, username, text);
        self.push_update(update);
        message_id
    }

    /// `user` presses the inline button with `data` under the bot's message `message_id`; returns the
    /// update id.
    pub fn press_button(&self, user_id: i64, message_id: i64, data: &str) -> i64 {
        let sent = lock(&self.state)
            .sent
            .iter()
            .find(|m| m.message_id == message_id)
            .cloned();
        let chat_id = sent.as_ref().map_or(user_id, |m| m.chat_id);
        let message = json!({
            "message_id": message_id,
            "date": self.date(),
            "chat": chat(chat_id),
            "from": {"id": BOT_USER_ID, "is_bot": true, "first_name": "Jarvis"},
            "text": sent.map(|m| m.text).unwrap_or_default(),
        });
        self.push_update(json!({
            "callback_query": {
                "id": format!("cbq-{message_id}-{user_id}"),
                "from": user(user_id, None),
                "message": message,
                "chat_instance": "fake-instance",
                "data": data,
            }
        }))
    }

    /// Every message the bot sent, in order.
    pub fn sent(&self) -> Vec<SentMessage> {
        lock(&self.state).sent.clone()
    }

    /// The messages the bot sent to `chat_id`.
    pub fn sent_to(&self, chat_id: i64) -> Vec<SentMessage> {
        self.sent()
            .into_iter()
            .filter(|m| m.chat_id == chat_id)
            .collect()
    }

    /// Every call but `getUpdates`, `(method in lower case, body)`, in order.
    pub fn calls(&self) -> Vec<(String, Value)> {
        lock(&self.state).calls.clone()
    }

    /// The `offset` of every `getUpdates` call, in order.
    pub fn offsets(&self) -> Vec<Option<i64>> {
        lock(&self.state).offsets.clone()
    }

    /// Updates not yet confirmed by an offset.
    pub fn pending(&self) -> usize {
        lock(&self.state).pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_v2_is_checked_like_telegram() {
        assert_eq!(check_markdown("1\\.5 \\(a\\)").unwrap(), "1.5 (a)");
        assert!(check_markdown("1.5")
            .unwrap_err()
            .contains("'.' is reserved"));
        assert!(check_markdown("a\\").is_err());
    }

    #[test]
    fn multipart_fields_are_read() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"url\"\r\n\r\nhttps://a.example/h\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"allowed_updates\"\r\n\r\n[\"message\"]\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"max_connections\"\r\n\r\n1\r\n--XyZ--\r\n";
        let v = form_fields("multipart/form-data; boundary=XyZ", body.as_bytes()).unwrap();
        assert_eq!(v["url"], "https://a.example/h");
        assert_eq!(v["allowed_updates"], json!(["message"]));
        assert_eq!(number(&v["max_connections"]), Some(1));
    }
}
