//! Webhook mode (`[telegram] mode = "webhook"`): Telegram posts each update to `webhook_url`; a reverse
//! proxy terminates TLS there and forwards to the agent's own HTTP listener on `webhook_listen`.
//!
//! - At start the listener is bound, then `setWebhook` is called with the URL, the secret token,
//!   `max_connections = 1` (one update at a time, in order) and the update types the agent reads; it is
//!   retried with a back-off until Telegram accepts it.
//! - `POST <the URL's path>`: the `X-Telegram-Bot-Api-Secret-Token` header must be the secret (compared in
//!   constant time; missing or wrong: 401, nothing recorded). The body (at most [`WEBHOOK_BODY_LIMIT`]) is
//!   an `Update`, handled under a lock by the same code as polling ([`TelegramAgent::consume`]): an update
//!   below the recorded offset was handled before (Telegram delivers again what got no 2xx) and is only
//!   answered 200; otherwise it is handled and the offset recorded. An update that must be tried again
//!   (the store unreachable) answers 503, so Telegram delivers it again; one that can never be handled, or a
//!   body that is no update at all, is dead-lettered to `jarvis.dlq.telegram` and answered 200.
//! - The webhook stays set when the agent stops: Telegram keeps the updates and delivers them once the
//!   listener is back. Polling mode removes it (`deleteWebhook`) at start.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use futures::FutureExt as _;
use sha2::{Digest as _, Sha256};
use teloxide_core::prelude::*;
use teloxide_core::types::{AllowedUpdate, Update, UpdateKind};

use super::bot::TelegramAgent;
use super::{TelegramConfig, TelegramMode};

/// The header Telegram sends the secret token in.
pub const WEBHOOK_SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";

/// The largest body the listener reads (an update is a few KiB).
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// Webhook mode's settings, from a validated `[telegram]`.
#[derive(Clone)]
pub(crate) struct Webhook {
    pub(crate) url: url::Url,
    pub(crate) listen: SocketAddr,
    secret: String,
}

/// Never shows the secret.
impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url.as_str())
            .field("listen", &self.listen)
            .field("secret", &"***")
            .finish()
    }
}

impl Webhook {
    /// The settings in webhook mode, `None` in polling mode.
    ///
    /// # Errors
    /// A missing or bad key (never showing the secret).
    pub(crate) fn from_config(config: &TelegramConfig) -> Result<Option<Self>, String> {
        if config.mode != TelegramMode::Webhook {
            return Ok(None);
        }
        config.validate()?;
        let raw = config
            .webhook_url
            .as_deref()
            .ok_or("telegram.webhook_url is not set: required with telegram.mode = \"webhook\"")?;
        let url =
            url::Url::parse(raw).map_err(|e| format!("telegram.webhook_url = {raw:?}: {e}"))?;
        let listen = config
            .webhook_listen
            .parse()
            .map_err(|e| format!("telegram.webhook_listen = {:?}: {e}", config.webhook_listen))?;
        let secret = config.webhook_secret.clone().ok_or(
            "telegram.webhook_secret is not set: required with telegram.mode = \"webhook\"",
        )?;
        Ok(Some(Self {
            url,
            listen,
            secret,
        }))
    }

    /// The path Telegram posts to (`/` when the URL has none).
    fn path(&self) -> &str {
        match self.url.path() {
            "" => "/",
            p => p,
        }
    }
}

/// Whether `given` is the secret, in time independent of where they differ (both are hashed first, so
/// neither the length nor a common prefix shows).
fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(secret));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// What the agent asks Telegram for: what [`TelegramAgent::handle_update`] reads.
fn allowed_updates() -> Vec<AllowedUpdate> {
    vec![AllowedUpdate::Message, AllowedUpdate::CallbackQuery]
}

impl TelegramAgent {
    /// Webhook mode: the address the listener is bound to, once it is (`None` before, or in polling mode).
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook_addr.get().copied()
    }

    /// Webhook mode: binds the listener (retried with a back-off while the address is taken), registers
    /// the webhook with Telegram (retried likewise) and serves Telegram's posts until `shutdown`.
    pub(crate) async fn serve_webhook(
        self: Arc<Self>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let Some(hook) = self.webhook.clone() else {
            return;
        };
        let shutdown = shutdown.boxed().shared();
        let mut pause = StdDuration::from_millis(200);
        let listener = loop {
            match tokio::net::TcpListener::bind(hook.listen).await {
                Ok(l) => break l,
                Err(e) => {
                    tracing::error!(cause = %e, listen = %hook.listen, ?pause, "binding telegram.webhook_listen failed; retrying");
                    tokio::select! {
                        _ = shutdown.clone() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(StdDuration::from_secs(30));
                }
            }
        };
        let addr = listener.local_addr().unwrap_or(hook.listen);
        let _ = self.webhook_addr.set(addr);
        tracing::info!(%addr, url = %hook.url, "Telegram webhook listener up");
        let app = axum::Router::new()
            .fallback(on_post)
            .layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT))
            .with_state(self.clone());
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone());
        let register = self.register_webhook(&hook, shutdown.clone());
        let (served, ()) = tokio::join!(async { server.await }, register);
        if let Err(e) = served {
            tracing::error!(cause = %e, "the Telegram webhook listener failed");
        }
    }

    /// `setWebhook`, retried with a back-off until it succeeds or `shutdown`.
    async fn register_webhook(&self, hook: &Webhook, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut pause = StdDuration::from_millis(200);
        loop {
            let request = self
                .bot
                .set_webhook(hook.url.clone())
                .secret_token(hook.secret.clone())
                .max_connections(1)
                .allowed_updates(allowed_updates());
            let result = tokio::select! {
                _ = &mut shutdown => return,
                r = request.send() => r,
            };
            match result {
                Ok(_) => {
                    tracing::info!(url = %hook.url, "Telegram webhook set");
                    return;
                }
                Err(e) => {
                    // teloxide removes the token from network errors' URLs; the secret is never in them.
                    tracing::warn!(cause = %e, ?pause, "setWebhook failed; retrying");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(StdDuration::from_secs(60));
                }
            }
        }
    }

    /// One post from Telegram, authenticated: parses it and handles it in turn.
    async fn on_webhook(&self, body: &[u8]) -> StatusCode {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            self.dead_letter_body(body, &format!("the webhook body is not JSON: {e}"))
                .await;
            return StatusCode::OK;
        }
        // A known update type with unreadable fields parses (as `UpdateKind::Error`) and is dead-lettered
        // by `consume` like in polling mode; only a body without a readable `update_id` fails here. (Parsed
        // from the bytes, as in polling: teloxide reads the update's kind from borrowed keys only.)
        let update = match serde_json::from_slice::<Update>(body) {
            Ok(mut u) => {
                // As teloxide does for `getUpdates`: keep what could not be read, for the dead letter.
                if let UpdateKind::Error(raw) = &mut u.kind {
                    *raw = serde_json::from_slice(body).unwrap_or_default();
                }
                u
            }
            Err(e) => {
                self.dead_letter_body(
                    body,
                    &format!("the webhook body is not a Bot API update: {e}"),
                )
                .await;
                return StatusCode::OK;
            }
        };
        let mut offset = self.webhook_offset.lock().await;
        let current = match *offset {
            Some(o) => o,
            None => match self.load_offset().await {
                Ok(o) => *offset.insert(o),
                Err(e) => {
                    tracing::warn!(cause = %e, update_id = update.id.0, "reading the Telegram offset failed; Telegram will deliver the update again");
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
            },
        };
        let mut next = current;
        let retry = self.consume(std::slice::from_ref(&update), &mut next).await;
        *offset = Some(next);
        match retry {
            None => StatusCode::OK,
            Some(reason) => {
                tracing::warn!(%reason, "update not handled; Telegram will deliver it again");
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

/// Every request to the listener: only `POST <the webhook's path>` with the secret header is an update.
async fn on_post(
    State(agent): State<Arc<TelegramAgent>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(hook) = &agent.webhook else {
        return StatusCode::NOT_FOUND;
    };
    if uri.path() != hook.path() {
        return StatusCode::NOT_FOUND;
    }
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED;
    }
    let given = headers.get(WEBHOOK_SECRET_HEADER);
    if !given.is_some_and(|g| same_secret(g.as_bytes(), hook.secret.as_bytes())) {
        tracing::warn!(
            header = WEBHOOK_SECRET_HEADER,
            present = given.is_some(),
            "a webhook post without the right secret token; refused"
        );
        return StatusCode::UNAUTHORIZED;
    }
    agent.on_webhook(&body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_compared_whole() {
        assert!(same_secret(b"abc-DEF_1", b"abc-DEF_1"));
        assert!(!same_secret(b"abc-DEF_", b"abc-DEF_1"));
        assert!(!same_secret(b"", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
    }

    #[test]
    fn webhook_settings_hide_the_secret() {
        let config = TelegramConfig {
            token: Some("1:x".into()),
            mode: TelegramMode::Webhook,
            webhook_url: Some("https://bot.example.com".into()),
            webhook_secret: Some("hunter2-hook".into()),
            ..Default::default()
        };
        let hook = Webhook::from_config(&config).unwrap().unwrap();
        assert_eq!(hook.path(), "/");
        assert_eq!(hook.listen, "127.0.0.1:8443".parse().unwrap());
        assert!(!format!("{hook:?}").contains("hunter2"));
        let polling = TelegramConfig {
            mode: TelegramMode::Polling,
            ..config
        };
        assert!(Webhook::from_config(&polling).unwrap().is_none());
    }
}
