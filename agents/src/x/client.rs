//! A client of the X API v2 over reqwest: mentions, recent search, post, and the authenticated user.
//!
//! Reads use the app's bearer token; posting and `GET /2/users/me` need user context ([`UserAuth`]):
//! either OAuth 1.0a user context (each request signed with HMAC-SHA1, see [`super::oauth1`]; the tokens
//! do not expire) or an OAuth 2.0 user access token with `tweet.write`, sent as `Bearer` (expires after
//! 2 hours). Tokens travel only in the `Authorization` header: never in URLs, errors, logs or `Debug` output.
//!
//! Each answer's `x-rate-limit-remaining` / `x-rate-limit-reset` are returned beside it ([`RateLimit`]);
//! a 429 is [`XError::RateLimited`] with the reset time, so the poller can wait exactly that long.
//! A page's tweets are parsed one by one: a malformed tweet is reported beside the good ones, with its raw
//! JSON, never failing the page.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jarvis_domain::social::Tweet;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use super::oauth1::OAuth1Credentials;

/// A secret from the configuration: shown as `***` by `Debug`, read only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// What X said about the rate limit of the endpoint just called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests left in the window (`x-rate-limit-remaining`).
    pub remaining: Option<u64>,
    /// When the window resets, in seconds since the epoch (`x-rate-limit-reset`).
    pub reset_epoch_secs: Option<u64>,
}

impl RateLimit {
    fn of(headers: &HeaderMap) -> Self {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Self {
            remaining: number("x-rate-limit-remaining"),
            reset_epoch_secs: number("x-rate-limit-reset"),
        }
    }
}

/// Why a call to X failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XError {
    /// 429: wait until `reset_epoch_secs` (when X said) before calling this endpoint again.
    #[error("{endpoint}: rate limited (429), reset at {reset_epoch_secs:?}")]
    RateLimited {
        /// The endpoint.
        endpoint: &'static str,
        /// `x-rate-limit-reset`.
        reset_epoch_secs: Option<u64>,
    },
    /// 5xx: X is having trouble; back off.
    #[error("{endpoint}: X answered {status}")]
    Server {
        /// The endpoint.
        endpoint: &'static str,
        /// The status.
        status: u16,
    },
    /// Another 4xx: the request is wrong (auth, permissions, parameters); retrying will not help.
    #[error("{endpoint}: X refused with {status}: {message}")]
    Refused {
        /// The endpoint.
        endpoint: &'static str,
        /// The status.
        status: u16,
        /// X's `title`/`detail`.
        message: String,
    },
    /// The answer is not the JSON X documents.
    #[error("{endpoint}: malformed answer: {why}")]
    Malformed {
        /// The endpoint.
        endpoint: &'static str,
        /// What is wrong.
        why: String,
        /// The body as received (at most 64 KiB), for the dead-letter stream.
        body: String,
    },
    /// The request did not complete (connection, timeout).
    #[error("{endpoint}: {message}")]
    Transport {
        /// The endpoint.
        endpoint: &'static str,
        /// reqwest's message (no URL query, no headers).
        message: String,
    },
    /// A user-context call without user credentials.
    #[error("{0} needs user context: [x] consumer_key/consumer_secret/access_token/access_token_secret (OAuth 1.0a) or [x] user_token")]
    NoUserToken(&'static str),
}

/// A tweet of a page that could not be read, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct MalformedTweet {
    /// The tweet's JSON as X sent it.
    pub raw: Value,
    /// What is wrong.
    pub why: String,
}

/// One page of tweets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// The tweets read, in X's order (newest first).
    pub tweets: Vec<Tweet>,
    /// The ones that could not be read.
    pub malformed: Vec<MalformedTweet>,
    /// `meta.newest_id`.
    pub newest_id: Option<String>,
    /// `meta.next_token`: more pages of this query.
    pub next_token: Option<String>,
    /// The endpoint's rate limit after this call.
    pub rate_limit: RateLimit,
}

/// How user-context calls (posting, `users/me`) authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAuth {
    /// An OAuth 2.0 user access token, sent as `Bearer` (expires after 2 hours).
    Bearer(Secret),
    /// OAuth 1.0a user context: every request signed (the tokens do not expire).
    OAuth1(OAuth1Credentials),
}

/// The X API v2 client.
#[derive(Clone)]
pub struct XClient {
    http: reqwest::Client,
    base: String,
    bearer: Secret,
    user: Option<UserAuth>,
}

impl std::fmt::Debug for XClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XClient")
            .field("base", &self.base)
            .field("bearer", &self.bearer)
            .field(
                "user",
                &self.user.as_ref().map(|u| match u {
                    UserAuth::Bearer(_) => "Bearer ***",
                    UserAuth::OAuth1(_) => "OAuth 1.0a ***",
                }),
            )
            .finish()
    }
}

/// The fields asked for every tweet.
const TWEET_FIELDS: &str = "created_at,author_id,lang";
const MAX_BODY: usize = 64 * 1024;

/// Endpoint names (also in errors and dead letters).
pub mod endpoints {
    /// `GET /2/users/:id/mentions`.
    pub const MENTIONS: &str = "GET /2/users/:id/mentions";
    /// `GET /2/tweets/search/recent`.
    pub const SEARCH: &str = "GET /2/tweets/search/recent";
    /// `POST /2/tweets`.
    pub const POST: &str = "POST /2/tweets";
    /// `GET /2/users/me`.
    pub const ME: &str = "GET /2/users/me";
}

fn truncated(text: &str) -> String {
    let mut end = text.len().min(MAX_BODY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// X's error message in a problem body (`title`, `detail`, or the first of `errors`).
fn problem(body: &Value) -> String {
    let first = body.get("errors").and_then(|e| e.get(0)).unwrap_or(body);
    let pick = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    match (
        pick(body, "title").or_else(|| pick(first, "title")),
        pick(body, "detail").or_else(|| pick(first, "detail").or_else(|| pick(first, "message"))),
    ) {
        (Some(t), Some(d)) => format!("{t}: {d}"),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => "no detail".into(),
    }
}

/// Reads one tweet of `data`, its author's handle from `includes.users`.
fn read_tweet(raw: &Value, users: &[Value]) -> Result<Tweet, String> {
    let text_of = |k: &str| raw.get(k).and_then(Value::as_str);
    let tweet_id = text_of("id").ok_or("no string id")?.to_string();
    let text = text_of("text").ok_or("no text")?.to_string();
    let author_id = text_of("author_id").ok_or("no author_id")?.to_string();
    let created = text_of("created_at").ok_or("no created_at")?;
    let created_at: DateTime<Utc> = DateTime::parse_from_rfc3339(created)
        .map_err(|e| format!("created_at {created:?}: {e}"))?
        .with_timezone(&Utc);
    let author_username = users
        .iter()
        .find(|u| u.get("id").and_then(Value::as_str) == Some(author_id.as_str()))
        .and_then(|u| u.get("username").and_then(Value::as_str))
        .unwrap_or_default()
        .to_string();
    let tweet = Tweet {
        tweet_id,
        author_id,
        author_username,
        text,
        created_at,
        lang: text_of("lang").map(str::to_string),
    };
    tweet.validate().map_err(|e| e.to_string())?;
    Ok(tweet)
}

/// Reads a page of tweets from a 200 body.
fn read_page(endpoint: &'static str, body: &str) -> Result<Page, XError> {
    let malformed = |why: String| XError::Malformed {
        endpoint,
        why,
        body: truncated(body),
    };
    let value: Value =
        serde_json::from_str(body).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let meta = value
        .get("meta")
        .filter(|m| m.is_object())
        .ok_or_else(|| malformed("no meta object".into()))?;
    let data = match value.get("data") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        Some(_) => return Err(malformed("data is not an array".into())),
    };
    let users = value
        .pointer("/includes/users")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut page = Page {
        newest_id: meta
            .get("newest_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        next_token: meta
            .get("next_token")
            .and_then(Value::as_str)
            .map(str::to_string),
        ..Page::default()
    };
    for raw in data {
        match read_tweet(raw, users) {
            Ok(t) => page.tweets.push(t),
            Err(why) => page.malformed.push(MalformedTweet {
                raw: raw.clone(),
                why,
            }),
        }
    }
    Ok(page)
}

impl XClient {
    /// A client of the API at `base_url` (e.g. `https://api.x.com`).
    ///
    /// # Errors
    /// [`XError::Transport`] when the HTTP client cannot start.
    pub fn new(
        base_url: &str,
        bearer: Secret,
        user: Option<Secret>,
        timeout: Duration,
    ) -> Result<Self, XError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("jarvis/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| XError::Transport {
                endpoint: "client",
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            bearer,
            user: user.map(UserAuth::Bearer),
        })
    }

    /// The same client with user context `auth` (replacing a user token given to [`XClient::new`]).
    #[must_use]
    pub fn with_user_auth(mut self, auth: Option<UserAuth>) -> Self {
        self.user = auth;
        self
    }

    /// Whether posting is possible (user context is configured).
    pub fn can_post(&self) -> bool {
        self.user.is_some()
    }

    /// Sends a request and returns the status, rate limit and body text; maps 429, 5xx and other 4xx.
    async fn call(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<(RateLimit, String), XError> {
        let transport = |e: reqwest::Error| XError::Transport {
            endpoint,
            // Without the URL: its query may carry a search the operator considers private.
            message: e.without_url().to_string(),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let limit = RateLimit::of(response.headers());
        let body = response.text().await.map_err(transport)?;
        match status {
            200..=299 => Ok((limit, body)),
            429 => Err(XError::RateLimited {
                endpoint,
                reset_epoch_secs: limit.reset_epoch_secs,
            }),
            500..=599 => Err(XError::Server { endpoint, status }),
            _ => Err(XError::Refused {
                endpoint,
                status,
                message: serde_json::from_str::<Value>(&body)
                    .map(|v| problem(&v))
                    .unwrap_or_else(|_| truncated(&body).chars().take(200).collect()),
            }),
        }
    }

    /// A user-context request: `method` on `url`, authorized by the configured user context.
    fn user_request(
        &self,
        endpoint: &'static str,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, XError> {
        let auth = self.user.as_ref().ok_or(XError::NoUserToken(endpoint))?;
        let parsed = reqwest::Url::parse(url).map_err(|e| XError::Transport {
            endpoint,
            message: format!("bad URL: {e}"),
        })?;
        let header = match auth {
            UserAuth::Bearer(token) => format!("Bearer {}", token.expose()),
            UserAuth::OAuth1(creds) => creds.authorization(method.as_str(), &parsed),
        };
        Ok(self
            .http
            .request(method, parsed)
            .header(reqwest::header::AUTHORIZATION, header))
    }

    /// Mentions of `user_id` newer than `since_id`, one page.
    ///
    /// # Errors
    /// [`XError`]; malformed tweets are in [`Page::malformed`], not errors.
    pub async fn mentions(
        &self,
        user_id: &str,
        since_id: Option<&str>,
        max_results: u32,
        pagination_token: Option<&str>,
    ) -> Result<Page, XError> {
        let url = format!("{}/2/users/{user_id}/mentions", self.base);
        let mut query = vec![
            ("max_results", max_results.clamp(5, 100).to_string()),
            ("tweet.fields", TWEET_FIELDS.into()),
            ("expansions", "author_id".into()),
            ("user.fields", "username".into()),
        ];
        if let Some(s) = since_id {
            query.push(("since_id", s.into()));
        }
        if let Some(t) = pagination_token {
            query.push(("pagination_token", t.into()));
        }
        let request = self
            .http
            .get(url)
            .bearer_auth(self.bearer.expose())
            .query(&query);
        let (limit, body) = self.call(endpoints::MENTIONS, request).await?;
        let mut page = read_page(endpoints::MENTIONS, &body)?;
        page.rate_limit = limit;
        Ok(page)
    }

    /// Recent tweets matching `query` newer than `since_id`, one page.
    ///
    /// # Errors
    /// As [`XClient::mentions`].
    pub async fn search_recent(
        &self,
        search: &str,
        since_id: Option<&str>,
        max_results: u32,
        next_token: Option<&str>,
    ) -> Result<Page, XError> {
        let url = format!("{}/2/tweets/search/recent", self.base);
        let mut query = vec![
            ("query", search.to_string()),
            ("max_results", max_results.clamp(10, 100).to_string()),
            ("tweet.fields", TWEET_FIELDS.into()),
            ("expansions", "author_id".into()),
            ("user.fields", "username".into()),
        ];
        if let Some(s) = since_id {
            query.push(("since_id", s.into()));
        }
        if let Some(t) = next_token {
            query.push(("next_token", t.into()));
        }
        let request = self
            .http
            .get(url)
            .bearer_auth(self.bearer.expose())
            .query(&query);
        let (limit, body) = self.call(endpoints::SEARCH, request).await?;
        let mut page = read_page(endpoints::SEARCH, &body)?;
        page.rate_limit = limit;
        Ok(page)
    }

    /// The authenticated user's id (`GET /2/users/me`, user context).
    ///
    /// # Errors
    /// [`XError::NoUserToken`] without a user token; other [`XError`]s.
    pub async fn me(&self) -> Result<String, XError> {
        let request = self.user_request(
            endpoints::ME,
            reqwest::Method::GET,
            &format!("{}/2/users/me", self.base),
        )?;
        let (_, body) = self.call(endpoints::ME, request).await?;
        let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        value
            .pointer("/data/id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| XError::Malformed {
                endpoint: endpoints::ME,
                why: "no data.id".into(),
                body: truncated(&body),
            })
    }

    /// Posts `text`, as a reply to `in_reply_to` when given; returns X's id of the new tweet.
    ///
    /// # Errors
    /// [`XError::NoUserToken`] without a user token; other [`XError`]s.
    pub async fn post(&self, text: &str, in_reply_to: Option<&str>) -> Result<String, XError> {
        let mut body = json!({ "text": text });
        if let Some(id) = in_reply_to {
            body["reply"] = json!({ "in_reply_to_tweet_id": id });
        }
        // The JSON body is not part of an OAuth 1.0a signature.
        let request = self
            .user_request(
                endpoints::POST,
                reqwest::Method::POST,
                &format!("{}/2/tweets", self.base),
            )?
            .json(&body);
        let (_, answer) = self.call(endpoints::POST, request).await?;
        let value: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
        value
            .pointer("/data/id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| XError::Malformed {
                endpoint: endpoints::POST,
                why: "no data.id".into(),
                body: truncated(&answer),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_keeps_good_tweets_and_reports_bad_ones() {
        let body = json!({
            "data": [
                {"id": "12", "text": "$SOL up", "author_id": "7", "created_at": "2024-03-01T12:00:00.000Z", "lang": "en"},
                {"id": "11", "text": "no time", "author_id": "7"},
            ],
            "includes": {"users": [{"id": "7", "name": "Desk", "username": "desk"}]},
            "meta": {"result_count": 2, "newest_id": "12", "oldest_id": "11"}
        })
        .to_string();
        let page = read_page(endpoints::MENTIONS, &body).unwrap();
        assert_eq!(page.tweets.len(), 1);
        assert_eq!(page.tweets[0].author_username, "desk");
        assert_eq!(page.malformed[0].why, "no created_at");
        assert_eq!(page.newest_id.as_deref(), Some("12"));
        let empty = read_page(endpoints::MENTIONS, r#"{"meta":{"result_count":0}}"#).unwrap();
        assert!(empty.tweets.is_empty() && empty.newest_id.is_none());
        let err = read_page(endpoints::SEARCH, "<html>").unwrap_err();
        assert!(err.to_string().contains("not JSON"), "{err}");
    }

    #[test]
    fn secrets_are_hidden_from_debug() {
        let client = XClient::new(
            "http://127.0.0.1:1",
            Secret::new("bearer-secret-1"),
            Some(Secret::new("user-secret-2")),
            Duration::from_secs(1),
        )
        .unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn problems_are_summarised() {
        let v = json!({"title": "Unauthorized", "detail": "Unauthorized", "type": "about:blank", "status": 401});
        assert_eq!(problem(&v), "Unauthorized: Unauthorized");
        let v = json!({"errors": [{"message": "duplicate content"}]});
        assert_eq!(problem(&v), "duplicate content");
    }
}
