//! The Telegram agent: the owner's console in a chat. See `docs/telegram.md`.
//!
//! Updates arrive by long polling the Bot API (`mode = "polling"`, the default; teloxide's client, base URL
//! configurable) or, with `mode = "webhook"`, as Telegram's posts to the agent's own HTTP listener (the
//! `X-Telegram-Bot-Api-Secret-Token` header checked, one update at a time). For each update:
//! 1. records a message as `ChatMessageReceived` on its `Conversation` before anything else;
//! 2. checks the sender against the allowlist and its role, and the per-user rate limit (a refusal is a
//!    polite reply and a `TelegramAccessDenied` event);
//! 3. runs the command (reads of the store, requests to `jarvis-risk`, `jarvis-trading`, `jarvis-llm`,
//!    `jarvis-memory`, `jarvis-x`) and sends the reply, escaped for MarkdownV2 and split at 4,096
//!    characters, each piece recorded as `ChatReplySent`;
//! 4. after the batch (a webhook post is a batch of one), records the next offset
//!    (`TelegramUpdatesConsumed`), so a restart, or Telegram delivering an update again, never handles an
//!    update twice.
//!
//! A malformed update is dead-lettered to `jarvis.dlq.telegram` with the reason, and the agent goes on.
//! Alerts (fills, rejections, halts, LLM budget alerts, agents down) come from durable consumers of the
//! events, so none is lost across restarts, and go to the operators' and admins' chats and `alert_chats`.
//!
//! # Layout
//! - [`commands`]: parsing, roles, `/help`.
//! - [`format`]: MarkdownV2 escaping and splitting.
//! - [`auth`]: trust per role and the rate limiter.
//! - [`bot`]: the agent: the update loop, recording, sending.
//! - [`webhook`]: webhook mode: `setWebhook` and the HTTP listener.
//! - [`replies`]: what each command answers.
//! - [`alerts`]: the alert consumers and the heartbeat watcher.

pub mod alerts;
pub mod auth;
pub mod bot;
pub mod commands;
pub mod format;
pub mod replies;
pub mod webhook;

use std::collections::HashSet;

use serde::Deserialize;

pub use bot::{TelegramAgent, TelegramSettings};
pub use commands::Role;
pub use webhook::{WEBHOOK_BODY_LIMIT, WEBHOOK_SECRET_HEADER};

/// The dead-letter consumer name: malformed updates go to `jarvis.dlq.telegram`.
pub const DLQ_CONSUMER: &str = "telegram";

/// One allowlisted user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramUser {
    /// The Telegram user id.
    pub id: i64,
    /// What they may do.
    pub role: Role,
}

/// How updates arrive: the agent asks (`getUpdates`) or Telegram posts them (a webhook).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TelegramMode {
    /// Long polling with `getUpdates` (the default; works behind NAT, no public address needed).
    #[default]
    Polling,
    /// Telegram posts each update to `webhook_url`; the agent listens on `webhook_listen`.
    Webhook,
}

/// The ports Telegram posts webhooks to.
pub const WEBHOOK_PORTS: [u16; 4] = [443, 80, 88, 8443];

/// `[telegram]` in `jarvis.toml`. The agent is off without a token.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The bot token from @BotFather (secret: never logged, never in events). None: the agent is off.
    #[serde(default)]
    pub token: Option<String>,
    /// The Bot API's base URL.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// The allowlist: `[{ id = 123, role = "operator" }]`; roles `viewer`, `operator`, `admin`.
    #[serde(default)]
    pub users: Vec<TelegramUser>,
    /// Extra chats (groups, channels) that get the alerts, beside the operators' and admins' own chats.
    #[serde(default)]
    pub alert_chats: Vec<i64>,
    /// Whether alerts are sent at all. Default true.
    #[serde(default = "yes")]
    pub alerts: bool,
    /// Long-polling timeout of `getUpdates`, in seconds (1 to 50). Default 30.
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout_secs: u64,
    /// Most messages one user may send per minute (0: no limit). Default 20.
    #[serde(default = "default_rate")]
    pub rate_limit_per_minute: u32,
    /// How long a `/buy` or `/sell` proposal waits for its confirmation, in seconds. Default 120.
    #[serde(default = "default_ttl")]
    pub confirm_ttl_secs: u64,
    /// `polling` (default) or `webhook`.
    #[serde(default)]
    pub mode: TelegramMode,
    /// Webhook mode: the public `https://` URL Telegram posts updates to (a reverse proxy terminating TLS
    /// in front of `webhook_listen`; port 443, 80, 88 or 8443). Required in webhook mode.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Webhook mode: the socket address the agent's own HTTP listener binds. Default `127.0.0.1:8443`.
    #[serde(default = "default_webhook_listen")]
    pub webhook_listen: String,
    /// Webhook mode: the secret Telegram sends in `X-Telegram-Bot-Api-Secret-Token` (1 to 256 characters of
    /// `A-Z a-z 0-9 _ -`). Required in webhook mode. Secret: never logged, never in events or errors.
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

fn default_api_url() -> String {
    "https://api.telegram.org".into()
}

fn yes() -> bool {
    true
}

fn default_poll_timeout() -> u64 {
    30
}

fn default_rate() -> u32 {
    20
}

fn default_ttl() -> u64 {
    120
}

fn default_webhook_listen() -> String {
    "127.0.0.1:8443".into()
}

/// Whether `secret` is what Telegram accepts as a webhook secret token.
fn valid_webhook_secret(secret: &str) -> bool {
    (1..=256).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            token: None,
            api_url: default_api_url(),
            users: vec![],
            alert_chats: vec![],
            alerts: true,
            poll_timeout_secs: default_poll_timeout(),
            rate_limit_per_minute: default_rate(),
            confirm_ttl_secs: default_ttl(),
            mode: TelegramMode::Polling,
            webhook_url: None,
            webhook_listen: default_webhook_listen(),
            webhook_secret: None,
        }
    }
}

impl std::fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("api_url", &self.api_url)
            .field("users", &self.users)
            .field("alert_chats", &self.alert_chats)
            .field("alerts", &self.alerts)
            .field("poll_timeout_secs", &self.poll_timeout_secs)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("confirm_ttl_secs", &self.confirm_ttl_secs)
            .field("mode", &self.mode)
            .field("webhook_url", &self.webhook_url)
            .field("webhook_listen", &self.webhook_listen)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

impl TelegramConfig {
    /// Whether the agent runs: a non-blank token.
    pub fn enabled(&self) -> bool {
        self.token.as_deref().is_some_and(|t| !t.trim().is_empty())
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// The key, its value and what is allowed (never the token).
    pub fn validate(&self) -> Result<(), String> {
        let url = url::Url::parse(&self.api_url)
            .map_err(|e| format!("telegram.api_url = {:?}: {e}", self.api_url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "telegram.api_url = {:?}: must be http or https",
                self.api_url
            ));
        }
        if !(1..=50).contains(&self.poll_timeout_secs) {
            return Err(format!(
                "telegram.poll_timeout_secs = {}: must be 1 to 50",
                self.poll_timeout_secs
            ));
        }
        if self.confirm_ttl_secs == 0 {
            return Err("telegram.confirm_ttl_secs = 0: must be positive".into());
        }
        let mut seen = HashSet::new();
        for user in &self.users {
            if !seen.insert(user.id) {
                return Err(format!(
                    "telegram.users: user id {} is listed twice",
                    user.id
                ));
            }
        }
        self.webhook_listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| {
                format!(
                    "telegram.webhook_listen = {:?}: {e} (expected <ip>:<port>, e.g. \"127.0.0.1:8443\")",
                    self.webhook_listen
                )
            })?;
        if let Some(hook) = &self.webhook_url {
            let url = url::Url::parse(hook)
                .map_err(|e| format!("telegram.webhook_url = {hook:?}: {e}"))?;
            if url.scheme() != "https" {
                return Err(format!(
                    "telegram.webhook_url = {hook:?}: must be https (Telegram posts only to https)"
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(
                    "telegram.webhook_url: must not carry a user or password (use webhook_secret)"
                        .into(),
                );
            }
            let port = url.port_or_known_default().unwrap_or(443);
            if !WEBHOOK_PORTS.contains(&port) {
                return Err(format!(
                    "telegram.webhook_url = {hook:?}: port {port}: Telegram posts only to ports 443, 80, 88 or 8443"
                ));
            }
        }
        if let Some(secret) = &self.webhook_secret {
            if !valid_webhook_secret(secret) {
                return Err("telegram.webhook_secret: must be 1 to 256 characters of A-Z, a-z, 0-9, _ and - \
                     (the value is not shown)"
                    .into());
            }
        }
        if self.mode == TelegramMode::Webhook {
            if self.webhook_url.is_none() {
                return Err(
                    "telegram.webhook_url is not set: required with telegram.mode = \"webhook\""
                        .into(),
                );
            }
            if self.webhook_secret.is_none() {
                return Err(
                    "telegram.webhook_secret is not set: required with telegram.mode = \"webhook\" \
                     (prefer JARVIS_TELEGRAM__WEBHOOK_SECRET)"
                        .into(),
                );
            }
        }
        if let Some(token) = self.token.as_deref().filter(|t| !t.trim().is_empty()) {
            if !token.contains(':') {
                return Err(
                    "telegram.token: not a bot token (expected <bot id>:<secret> from @BotFather)"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_shows_in_debug_or_errors() {
        let config = TelegramConfig {
            token: Some("123456:hunter2-secret".into()),
            ..Default::default()
        };
        assert!(config.enabled());
        assert!(!format!("{config:?}").contains("hunter2"));
        let bad = TelegramConfig {
            token: Some("hunter2".into()),
            ..Default::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(!TelegramConfig::default().enabled());
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = TelegramConfig {
            poll_timeout_secs: 0,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("poll_timeout_secs = 0"));
        c.poll_timeout_secs = 30;
        c.api_url = "ftp://x".into();
        assert!(c.validate().unwrap_err().contains("telegram.api_url"));
        c.api_url = default_api_url();
        c.users = vec![
            TelegramUser {
                id: 1,
                role: Role::Viewer,
            },
            TelegramUser {
                id: 1,
                role: Role::Admin,
            },
        ];
        assert!(c.validate().unwrap_err().contains("listed twice"));
        let parsed: Result<TelegramConfig, _> =
            serde_json::from_str(r#"{"users":[{"id":1,"role":"root"}]}"#);
        assert!(parsed.is_err());
    }

    fn webhook() -> TelegramConfig {
        TelegramConfig {
            token: Some("123456:hunter2-secret".into()),
            mode: TelegramMode::Webhook,
            webhook_url: Some("https://jarvis.example.com/telegram/hook".into()),
            webhook_secret: Some("Sup3r_secret-token".into()),
            ..Default::default()
        }
    }

    #[test]
    fn webhook_mode_needs_an_https_url_and_a_valid_secret() {
        assert_eq!(TelegramConfig::default().mode, TelegramMode::Polling);
        assert_eq!(TelegramConfig::default().webhook_listen, "127.0.0.1:8443");
        webhook().validate().unwrap();

        let mut c = webhook();
        c.webhook_url = None;
        let err = c.validate().unwrap_err();
        assert!(err.contains("telegram.webhook_url is not set"), "{err}");
        // Polling mode ignores the webhook keys.
        c.mode = TelegramMode::Polling;
        c.validate().unwrap();

        let mut c = webhook();
        c.webhook_secret = None;
        let err = c.validate().unwrap_err();
        assert!(err.contains("telegram.webhook_secret is not set"), "{err}");

        for bad in ["has space", "semi;colon", "", "ä", &"x".repeat(257)] {
            let mut c = webhook();
            c.webhook_secret = Some(bad.to_string());
            let err = c.validate().unwrap_err();
            assert!(
                err.contains("telegram.webhook_secret: must be 1 to 256"),
                "{err}"
            );
            if !bad.is_empty() {
                assert!(!err.contains(bad), "the secret leaked into {err}");
            }
        }
        let mut c = webhook();
        c.webhook_secret = Some("x".repeat(256));
        c.validate().unwrap();

        let mut c = webhook();
        c.webhook_url = Some("http://jarvis.example.com/hook".into());
        assert!(c.validate().unwrap_err().contains("must be https"));
        c.webhook_url = Some("https://jarvis.example.com:9000/hook".into());
        let err = c.validate().unwrap_err();
        assert!(err.contains("port 9000") && err.contains("8443"), "{err}");
        c.webhook_url = Some("https://jarvis.example.com:8443/hook".into());
        c.validate().unwrap();
        c.webhook_url = Some("not a url".into());
        assert!(c
            .validate()
            .unwrap_err()
            .contains("telegram.webhook_url = \"not a url\""));

        let mut c = webhook();
        c.webhook_listen = "localhost".into();
        assert!(c
            .validate()
            .unwrap_err()
            .contains("telegram.webhook_listen = \"localhost\""));

        let parsed: TelegramConfig = serde_json::from_str(
            r#"{"mode":"webhook","webhook_url":"https://a.example/h","webhook_secret":"abc"}"#,
        )
        .unwrap();
        assert_eq!(parsed.mode, TelegramMode::Webhook);
        assert!(serde_json::from_str::<TelegramConfig>(r#"{"mode":"push"}"#).is_err());
        assert!(!format!("{:?}", webhook()).contains("Sup3r_secret"));
    }
}
