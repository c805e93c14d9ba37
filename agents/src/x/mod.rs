//! The X (Twitter) agent, over the X API v2 (not the retired v1.1: no `egg-mode`).
//!
//! # Layout
//! - [`client`]: the v2 client over reqwest (mentions, recent search, post, users/me), rate-limit headers.
//! - [`oauth1`]: OAuth 1.0a user-context signing (HMAC-SHA1) of posts and `users/me`.
//! - [`poller`]: polls mentions and tracked searches from their cursors (`XCursorAdvanced`), appends
//!   `TweetReceived`, dead-letters malformed tweets and answers to `jarvis.dlq.x`, honours rate limits.
//! - [`outbox`]: drafts, approvals and sending (`TweetDrafted` → `TweetApproved` → `TweetSending` →
//!   `TweetPosted`), the daily cap, dry-run, and the micro service `jarvis-x`.
//! - [`drafter`]: optional reply drafts for new mentions, written by `jarvis-llm`.
//!
//! Configured by `[x]` ([`XConfig`]); off when there is no bearer token.

pub mod client;
pub mod drafter;
pub mod oauth1;
pub mod outbox;
pub mod poller;

use std::time::Duration;

pub use client::{Secret, UserAuth, XClient, XError};
pub use drafter::ReplyDrafter;
pub use oauth1::OAuth1Credentials;
pub use outbox::{serve_commands, Outbox, OutboxSettings};
pub use poller::{PollerSettings, XPoller};

/// The dead-letter consumer name: malformed tweets and answers go to `jarvis.dlq.x`.
pub const DLQ_CONSUMER: &str = "x";
/// The cursor query of mentions.
pub const MENTIONS: &str = "mentions";

/// `[x]`: the X agent (off without `bearer_token`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XConfig {
    /// The app's bearer token (reads). Never logged.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// A user access token (OAuth 2.0 with `tweet.read users.read tweet.write`), sent as `Bearer` for
    /// posting and `GET /2/users/me`. Never logged.
    #[serde(default)]
    pub user_token: Option<Secret>,
    /// OAuth 1.0a user context (preferred: its tokens do not expire): the app's API key. With
    /// `consumer_secret`, `access_token` and `access_token_secret` (all four or none; not with `user_token`).
    #[serde(default)]
    pub consumer_key: Option<String>,
    /// OAuth 1.0a: the app's API key secret. Never logged.
    #[serde(default)]
    pub consumer_secret: Option<Secret>,
    /// OAuth 1.0a: the user's access token. Never logged.
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// OAuth 1.0a: the user's access token secret. Never logged.
    #[serde(default)]
    pub access_token_secret: Option<Secret>,
    /// The API's base URL.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Searches to poll, e.g. `["$SOL"]` (any recent-search query).
    #[serde(default)]
    pub track: Vec<String>,
    /// The account whose mentions are polled; default: asked from `GET /2/users/me` with the user token.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Poll mentions.
    #[serde(default = "yes")]
    pub poll_mentions: bool,
    /// Seconds between polls of each endpoint.
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    /// The longest wait after errors or a rate limit, in seconds.
    #[serde(default = "default_max_backoff_secs")]
    pub max_backoff_secs: u64,
    /// Tweets per page (5..=100 for mentions, 10..=100 for searches).
    #[serde(default = "default_max_results")]
    pub max_results: u32,
    /// Pages read per query and poll (more new tweets than this are skipped, with a warning).
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
    /// Approve drafts automatically while under `daily_post_cap`.
    #[serde(default)]
    pub auto_post: bool,
    /// Most drafts approved per UTC day (of the draft's event time) for auto-posting.
    #[serde(default = "default_daily_post_cap")]
    pub daily_post_cap: u32,
    /// Record and log what would be posted; send nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Draft a reply to each new mention with the LLM (`jarvis-llm`, task `chat`); needs `[llm]` providers.
    #[serde(default)]
    pub draft_replies: bool,
}

fn yes() -> bool {
    true
}
fn default_api_url() -> String {
    "https://api.x.com".into()
}
fn default_poll_interval_secs() -> u64 {
    60
}
fn default_max_backoff_secs() -> u64 {
    900
}
fn default_max_results() -> u32 {
    100
}
fn default_max_pages() -> u32 {
    5
}
fn default_daily_post_cap() -> u32 {
    5
}

impl Default for XConfig {
    fn default() -> Self {
        Self {
            bearer_token: None,
            user_token: None,
            consumer_key: None,
            consumer_secret: None,
            access_token: None,
            access_token_secret: None,
            api_url: default_api_url(),
            track: vec![],
            user_id: None,
            poll_mentions: true,
            poll_interval_secs: default_poll_interval_secs(),
            max_backoff_secs: default_max_backoff_secs(),
            max_results: default_max_results(),
            max_pages: default_max_pages(),
            auto_post: false,
            daily_post_cap: default_daily_post_cap(),
            dry_run: false,
            draft_replies: false,
        }
    }
}

impl XConfig {
    /// Whether the agent runs (a bearer token is configured).
    pub fn enabled(&self) -> bool {
        self.bearer_token
            .as_ref()
            .is_some_and(|t| !t.expose().trim().is_empty())
    }

    /// Checks the values.
    ///
    /// # Errors
    /// `x.<key> = <value>: <what is wrong>`.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.api_url.starts_with("http://") || self.api_url.starts_with("https://")) {
            return Err(format!(
                "x.api_url = {:?}: must be an http(s) URL",
                self.api_url
            ));
        }
        if self.poll_interval_secs == 0 {
            return Err("x.poll_interval_secs = 0: must be positive".into());
        }
        if !(10..=100).contains(&self.max_results) {
            return Err(format!(
                "x.max_results = {}: must be 10..=100",
                self.max_results
            ));
        }
        if self.max_pages == 0 {
            return Err("x.max_pages = 0: must be positive".into());
        }
        for (i, q) in self.track.iter().enumerate() {
            if q.trim().is_empty() || q.len() > 512 {
                return Err(format!(
                    "x.track[{i}] = {q:?}: a search of 1..=512 characters"
                ));
            }
        }
        if let Some(id) = &self.user_id {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("x.user_id = {id:?}: must be a numeric user id"));
            }
        }
        let oauth1 = self.oauth1()?;
        if oauth1.is_some() && self.user_token.is_some() {
            return Err(
                "x.user_token: set either OAuth 1.0a (x.consumer_key, x.consumer_secret, \
                 x.access_token, x.access_token_secret) or x.user_token, not both"
                    .into(),
            );
        }
        if self.auto_post && !self.dry_run && self.user_auth()?.is_none() {
            return Err(
                "x.auto_post = true: posting needs OAuth 1.0a (x.consumer_key, x.consumer_secret, \
                 x.access_token, x.access_token_secret) or x.user_token (or x.dry_run = true)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The OAuth 1.0a credentials when all four keys are set; none when none is.
    ///
    /// # Errors
    /// `x.<key> is not set: ...` when only some are, or one is blank.
    pub fn oauth1(&self) -> Result<Option<OAuth1Credentials>, String> {
        let present = |v: Option<&str>| v.is_some_and(|s| !s.trim().is_empty());
        let keys = [
            ("x.consumer_key", self.consumer_key.as_deref()),
            (
                "x.consumer_secret",
                self.consumer_secret.as_ref().map(Secret::expose),
            ),
            (
                "x.access_token",
                self.access_token.as_ref().map(Secret::expose),
            ),
            (
                "x.access_token_secret",
                self.access_token_secret.as_ref().map(Secret::expose),
            ),
        ];
        if keys.iter().all(|(_, v)| v.is_none()) {
            return Ok(None);
        }
        if let Some((missing, _)) = keys.iter().find(|(_, v)| !present(*v)) {
            return Err(format!(
                "{missing} is not set (or blank): OAuth 1.0a needs all four of x.consumer_key, \
                 x.consumer_secret, x.access_token, x.access_token_secret"
            ));
        }
        Ok(Some(OAuth1Credentials {
            consumer_key: self.consumer_key.clone().unwrap_or_default(),
            consumer_secret: self
                .consumer_secret
                .clone()
                .unwrap_or_else(|| Secret::new("")),
            access_token: self.access_token.clone().unwrap_or_else(|| Secret::new("")),
            access_token_secret: self
                .access_token_secret
                .clone()
                .unwrap_or_else(|| Secret::new("")),
        }))
    }

    /// The user context of posting and `users/me`: OAuth 1.0a when configured, else `user_token`.
    ///
    /// # Errors
    /// As [`XConfig::oauth1`].
    pub fn user_auth(&self) -> Result<Option<UserAuth>, String> {
        Ok(match self.oauth1()? {
            Some(creds) => Some(UserAuth::OAuth1(creds)),
            None => self.user_token.clone().map(UserAuth::Bearer),
        })
    }

    /// The client.
    ///
    /// # Errors
    /// When there is no bearer token, or the HTTP client cannot start.
    pub fn client(&self) -> Result<XClient, String> {
        let bearer = self
            .bearer_token
            .clone()
            .ok_or("x.bearer_token is not set")?;
        let user = self.user_auth()?;
        Ok(
            XClient::new(&self.api_url, bearer, None, Duration::from_secs(15))
                .map_err(|e| e.to_string())?
                .with_user_auth(user),
        )
    }

    /// The poller's settings (the user id is resolved at start when not configured).
    pub fn poller_settings(&self) -> PollerSettings {
        PollerSettings {
            user_id: self.user_id.clone(),
            poll_mentions: self.poll_mentions,
            track: self.track.clone(),
            interval: Duration::from_secs(self.poll_interval_secs),
            max_backoff: Duration::from_secs(self.max_backoff_secs.max(self.poll_interval_secs)),
            max_results: self.max_results,
            max_pages: self.max_pages,
        }
    }

    /// The outbox's settings.
    pub fn outbox_settings(&self) -> OutboxSettings {
        OutboxSettings {
            auto_post: self.auto_post,
            daily_post_cap: self.daily_post_cap,
            dry_run: self.dry_run,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_show_in_debug() {
        let config = XConfig {
            bearer_token: Some(Secret::new("AAAA-bearer-secret")),
            user_token: Some(Secret::new("user-secret-token")),
            ..XConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("bearer-secret"), "{shown}");
        assert!(!shown.contains("user-secret"), "{shown}");
        assert!(config.enabled());
        assert!(!XConfig::default().enabled());
    }

    #[test]
    fn validation_names_the_key() {
        let bad = XConfig {
            max_results: 500,
            ..XConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .starts_with("x.max_results = 500"));
        let auto = XConfig {
            auto_post: true,
            ..XConfig::default()
        };
        assert!(auto.validate().unwrap_err().contains("x.user_token"));
        let track = XConfig {
            track: vec![" ".into()],
            ..XConfig::default()
        };
        assert!(track.validate().unwrap_err().starts_with("x.track[0]"));
    }

    fn oauth1_config() -> XConfig {
        XConfig {
            bearer_token: Some(Secret::new("AAAA-bearer")),
            consumer_key: Some("ck-public".into()),
            consumer_secret: Some(Secret::new("cs-secret-1")),
            access_token: Some(Secret::new("at-secret-2")),
            access_token_secret: Some(Secret::new("ats-secret-3")),
            auto_post: true,
            ..XConfig::default()
        }
    }

    #[test]
    fn oauth1_needs_all_four_keys_and_not_a_user_token() {
        let full = oauth1_config();
        full.validate().unwrap();
        assert!(matches!(full.user_auth(), Ok(Some(UserAuth::OAuth1(_)))));
        let shown = format!("{full:?} {:?} {:?}", full.user_auth(), full.client());
        assert!(!shown.contains("secret-"), "{shown}");
        assert!(full.client().is_ok());

        let no_secret = XConfig {
            access_token_secret: None,
            ..oauth1_config()
        };
        let err = no_secret.validate().unwrap_err();
        assert!(err.starts_with("x.access_token_secret is not set"), "{err}");
        let blank_key = XConfig {
            consumer_key: Some(" ".into()),
            ..oauth1_config()
        };
        let err = blank_key.validate().unwrap_err();
        assert!(err.starts_with("x.consumer_key is not set"), "{err}");
        let only_key = XConfig {
            consumer_key: Some("ck".into()),
            ..XConfig::default()
        };
        let err = only_key.validate().unwrap_err();
        assert!(err.starts_with("x.consumer_secret is not set"), "{err}");
        assert!(!err.contains("secret-"), "{err}");

        let both = XConfig {
            user_token: Some(Secret::new("user-secret-token")),
            ..oauth1_config()
        };
        let err = both.validate().unwrap_err();
        assert!(
            err.starts_with("x.user_token: set either OAuth 1.0a"),
            "{err}"
        );

        // A user token alone is still accepted.
        let bearer = XConfig {
            user_token: Some(Secret::new("t")),
            auto_post: true,
            ..XConfig::default()
        };
        bearer.validate().unwrap();
        assert!(matches!(bearer.user_auth(), Ok(Some(UserAuth::Bearer(_)))));
    }
}
