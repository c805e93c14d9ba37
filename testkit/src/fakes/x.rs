//! A fake of the X API v2 on 127.0.0.1, with the real JSON: `GET /2/users/:id/mentions`,
//! `GET /2/tweets/search/recent`, `POST /2/tweets`, `GET /2/users/me`.
//!
//! Pages are `{"data": [...], "includes": {"users": [...]}, "meta": {"result_count", "newest_id",
//! "oldest_id", "next_token"}}`, newest first, filtered by `since_id`, paged by `max_results`; errors are
//! problem objects (`title`, `detail`, `type`, `status`); every answer carries `x-rate-limit-limit`,
//! `x-rate-limit-remaining` and `x-rate-limit-reset`. Reads need the app's bearer token or the user's;
//! posting and `users/me` need user context (the app token gets 403, as on X): the user's bearer token or,
//! once [`FakeX::accept_oauth1`] is called, an OAuth 1.0a `HMAC-SHA1` signature, which the fake recomputes
//! from the request it received (method, `Host`, path, query, `oauth_*` parameters; not the JSON body):
//! a wrong signature, an unknown consumer key or token, a stale timestamp or a replayed nonce get 401.
//!
//! Tests inject tweets (or raw malformed ones), script failures per endpoint (a 429 with a reset time, a
//! status, a body that is not JSON), and read back every request (with its wall time) and every post.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha1::Sha1;

/// The authenticated user's id.
pub const ME_ID: &str = "1000";
/// The authenticated user's handle.
pub const ME_USERNAME: &str = "jarvis_bot";
/// The first tweet id the fake hands out (ids are 19 digits, like X's).
pub const FIRST_TWEET_ID: u64 = 1_760_000_000_000_000_000;

/// An endpoint, for scripting and reading requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XEndpoint {
    /// `GET /2/users/:id/mentions`.
    Mentions,
    /// `GET /2/tweets/search/recent`.
    Search,
    /// `POST /2/tweets`.
    Post,
    /// `GET /2/users/me`.
    Me,
}

/// A scripted failure, answered instead of the next request to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XFailure {
    /// 429 with `x-rate-limit-remaining: 0` and `x-rate-limit-reset: <epoch secs>`.
    RateLimited {
        /// The reset time, seconds since the epoch.
        reset_epoch_secs: u64,
    },
    /// A status with a problem body.
    Status(u16),
    /// 200 with this body (e.g. not JSON).
    Body(String),
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct XRequest {
    /// Which endpoint.
    pub endpoint: XEndpoint,
    /// The query parameters.
    pub query: HashMap<String, String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The JSON body (posts).
    pub body: Value,
    /// When it arrived (wall clock, to compare with rate-limit resets).
    pub at: SystemTime,
}

/// A tweet posted through the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The id the fake gave it.
    pub id: String,
    /// Its text.
    pub text: String,
    /// The tweet it replies to.
    pub in_reply_to: Option<String>,
}

#[derive(Debug, Clone)]
struct Stored {
    json: Value,
    id: u64,
    mention: bool,
}

/// The OAuth 1.0a credentials the fake accepts (all four, as in X's developer portal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth1Keys {
    /// The API key.
    pub consumer_key: String,
    /// The API key secret.
    pub consumer_secret: String,
    /// The user's access token.
    pub access_token: String,
    /// The user's access token secret.
    pub access_token_secret: String,
}

#[derive(Debug)]
struct Inner {
    bearer: String,
    user_token: String,
    oauth1: Option<OAuth1Keys>,
    nonces: HashSet<String>,
    /// Why OAuth 1.0a requests were refused.
    oauth1_refusals: Vec<String>,
    tweets: Vec<Stored>,
    users: HashMap<String, String>,
    next_id: u64,
    failures: HashMap<XEndpoint, VecDeque<XFailure>>,
    requests: Vec<XRequest>,
    posted: Vec<Posted>,
    remaining: HashMap<XEndpoint, u64>,
}

type Shared = Arc<Mutex<Inner>>;

/// The fake server, stopped on drop.
pub struct FakeX {
    addr: SocketAddr,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeX {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn problem(status: u16, title: &str, detail: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        Json(json!({
            "title": title,
            "detail": detail,
            "type": "about:blank",
            "status": status
        })),
    )
        .into_response()
}

fn with_limits(mut response: Response, remaining: u64, reset: u64) -> Response {
    let h = response.headers_mut();
    h.insert("x-rate-limit-limit", HeaderValue::from_static("450"));
    if let Ok(v) = HeaderValue::from_str(&remaining.to_string()) {
        h.insert("x-rate-limit-remaining", v);
    }
    if let Ok(v) = HeaderValue::from_str(&reset.to_string()) {
        h.insert("x-rate-limit-reset", v);
    }
    response
}

/// The request line the fake received, for checking OAuth 1.0a signatures.
struct Line<'a> {
    method: &'a Method,
    uri: &'a Uri,
}

/// RFC 3986 percent-decoding (`+` is not a space here).
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// RFC 5849 §3.6 encoding, written apart from the client's: the unreserved characters as they are, every
/// other UTF-8 byte as `%XX`.
fn encode(s: &str) -> String {
    const UNRESERVED: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
    s.bytes()
        .map(|b| {
            if UNRESERVED.as_bytes().contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Checks an `Authorization: OAuth ...` header against `keys`; `Err` says why not (never a secret).
fn verify_oauth1(
    keys: &OAuth1Keys,
    nonces: &mut HashSet<String>,
    header: &str,
    line: &Line<'_>,
    headers: &HeaderMap,
) -> Result<(), String> {
    let fields = header.strip_prefix("OAuth ").ok_or("not an OAuth header")?;
    let mut oauth: HashMap<String, String> = HashMap::new();
    for field in fields.split(',') {
        let (k, v) = field.trim().split_once('=').ok_or("a field without =")?;
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or("an unquoted value")?;
        let (k, v) = (
            decode(k).ok_or("bad encoding")?,
            decode(v).ok_or("bad encoding")?,
        );
        if oauth.insert(k.clone(), v).is_some() {
            return Err(format!("{k} twice"));
        }
    }
    let get = |k: &str| oauth.get(k).map(String::as_str).ok_or(format!("no {k}"));
    if get("oauth_signature_method")? != "HMAC-SHA1" {
        return Err("oauth_signature_method is not HMAC-SHA1".into());
    }
    if oauth.get("oauth_version").is_some_and(|v| v != "1.0") {
        return Err("oauth_version is not 1.0".into());
    }
    if get("oauth_consumer_key")? != keys.consumer_key {
        return Err("unknown oauth_consumer_key".into());
    }
    if get("oauth_token")? != keys.access_token {
        return Err("unknown oauth_token".into());
    }
    let timestamp: u64 = get("oauth_timestamp")?
        .parse()
        .map_err(|_| "oauth_timestamp is not a number")?;
    if timestamp.abs_diff(epoch_secs()) > 300 {
        return Err("oauth_timestamp is more than 5 minutes off".into());
    }
    let nonce = get("oauth_nonce")?.to_string();
    if nonce.is_empty() {
        return Err("empty oauth_nonce".into());
    }
    let claimed = base64::engine::general_purpose::STANDARD
        .decode(get("oauth_signature")?)
        .map_err(|_| "oauth_signature is not base64")?;
    // The parameters: the query's and the oauth_* ones but the signature, encoded, sorted.
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in line.uri.query().unwrap_or_default().split('&') {
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        // The client's query is form-urlencoded: `+` is a space.
        let form = |s: &str| decode(&s.replace('+', " ")).ok_or("bad query encoding");
        pairs.push((encode(&form(k)?), encode(&form(v)?)));
    }
    for (k, v) in oauth.iter().filter(|(k, _)| *k != "oauth_signature") {
        pairs.push((encode(k), encode(v)));
    }
    pairs.sort();
    let normalized: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or("no Host")?
        .to_ascii_lowercase();
    let base = [
        line.method.as_str().to_ascii_uppercase(),
        encode(&format!("http://{host}{}", line.uri.path())),
        encode(&normalized.join("&")),
    ]
    .join("&");
    let key = [
        encode(&keys.consumer_secret),
        encode(&keys.access_token_secret),
    ]
    .join("&");
    let mut mac = <Hmac<Sha1>>::new_from_slice(key.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(base.as_bytes());
    mac.verify_slice(&claimed)
        .map_err(|_| "the signature does not match".to_string())?;
    if !nonces.insert(nonce) {
        return Err("oauth_nonce replayed".into());
    }
    Ok(())
}

/// Records the request; returns the scripted failure's response, or an auth refusal, if any.
fn admit(
    inner: &mut Inner,
    endpoint: XEndpoint,
    query: HashMap<String, String>,
    headers: &HeaderMap,
    body: Value,
    line: Line<'_>,
) -> Option<Response> {
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    inner.requests.push(XRequest {
        endpoint,
        query,
        authorization: authorization.clone(),
        body,
        at: SystemTime::now(),
    });
    let token = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "));
    let user_context = matches!(endpoint, XEndpoint::Post | XEndpoint::Me);
    let oauth1 = authorization
        .as_deref()
        .filter(|a| a.starts_with("OAuth "))
        .map(|a| match &inner.oauth1 {
            Some(keys) => verify_oauth1(keys, &mut inner.nonces, a, &line, headers),
            None => Err("OAuth 1.0a is not configured in the fake".into()),
        });
    match (oauth1, token) {
        (Some(Ok(())), _) => {}
        (Some(Err(why)), _) => {
            inner.oauth1_refusals.push(why);
            return Some(problem(401, "Unauthorized", "Unauthorized"));
        }
        (None, token) => match token {
        Some(t) if t == inner.user_token => {}
        Some(t) if t == inner.bearer && !user_context => {}
        Some(t) if t == inner.bearer => {
            return Some(problem(
                403,
                "Unsupported Authentication",
                "Authenticating with OAuth 2.0 Application-Only is forbidden for this endpoint.  Supported authentication types are [OAuth 1.0a User Context, OAuth 2.0 User Context].",
            ))
        }
        _ => return Some(problem(401, "Unauthorized", "Unauthorized")),
        },
    }
    let failure = inner
        .failures
        .get_mut(&endpoint)
        .and_then(VecDeque::pop_front)?;
    Some(match failure {
        XFailure::RateLimited { reset_epoch_secs } => with_limits(
            problem(429, "Too Many Requests", "Too Many Requests"),
            0,
            reset_epoch_secs,
        ),
        XFailure::Status(status) => problem(status, "Scripted failure", "scripted"),
        XFailure::Body(body) => (StatusCode::OK, body).into_response(),
    })
}

/// A page of `tweets` (newest first) after `since_id`, from `next_token`, `max_results` long.
fn page(
    inner: &mut Inner,
    endpoint: XEndpoint,
    q: &HashMap<String, String>,
    pick: impl Fn(&Stored) -> bool,
) -> Response {
    let since: u64 = q.get("since_id").and_then(|s| s.parse().ok()).unwrap_or(0);
    let max: usize = q
        .get("max_results")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    if !(5..=100).contains(&max) {
        return problem(
            400,
            "Invalid Request",
            "The `max_results` query parameter value is not valid",
        );
    }
    let offset: usize = q
        .get("pagination_token")
        .or_else(|| q.get("next_token"))
        .and_then(|t| t.strip_prefix("page-"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let mut matching: Vec<&Stored> = inner
        .tweets
        .iter()
        .filter(|t| t.id > since && pick(t))
        .collect();
    matching.sort_by_key(|t| std::cmp::Reverse(t.id));
    let slice: Vec<&Stored> = matching.iter().skip(offset).take(max).copied().collect();
    let mut meta = json!({ "result_count": slice.len() });
    if let (Some(first), Some(last)) = (slice.first(), slice.last()) {
        meta["newest_id"] = json!(first.id.to_string());
        meta["oldest_id"] = json!(last.id.to_string());
    }
    if offset + slice.len() < matching.len() {
        meta["next_token"] = json!(format!("page-{}", offset + slice.len()));
    }
    let mut body = json!({ "meta": meta });
    if !slice.is_empty() {
        let users: Vec<Value> = slice
            .iter()
            .filter_map(|t| t.json.get("author_id").and_then(Value::as_str))
            .filter_map(|id| {
                inner
                    .users
                    .get(id)
                    .map(|name| json!({"id": id, "name": name, "username": name}))
            })
            .collect();
        body["data"] = Value::Array(slice.iter().map(|t| t.json.clone()).collect());
        body["includes"] = json!({ "users": users });
    }
    let remaining = inner.remaining.entry(endpoint).or_insert(450);
    *remaining = remaining.saturating_sub(1).max(1);
    let remaining = *remaining;
    with_limits(Json(body).into_response(), remaining, epoch_secs() + 900)
}

async fn mentions(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    Path(user): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut inner = inner.lock().unwrap();
    if let Some(r) = admit(
        &mut inner,
        XEndpoint::Mentions,
        q.clone(),
        &headers,
        Value::Null,
        Line {
            method: &method,
            uri: &uri,
        },
    ) {
        return r;
    }
    if !user.bytes().all(|b| b.is_ascii_digit()) {
        return problem(
            400,
            "Invalid Request",
            "The `id` query parameter value is not valid",
        );
    }
    page(&mut inner, XEndpoint::Mentions, &q, |t| {
        t.mention && user == ME_ID
    })
}

async fn search(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut inner = inner.lock().unwrap();
    if let Some(r) = admit(
        &mut inner,
        XEndpoint::Search,
        q.clone(),
        &headers,
        Value::Null,
        Line {
            method: &method,
            uri: &uri,
        },
    ) {
        return r;
    }
    let Some(query) = q.get("query").map(|s| s.to_lowercase()) else {
        return problem(
            400,
            "Invalid Request",
            "The `query` query parameter can not be empty",
        );
    };
    page(&mut inner, XEndpoint::Search, &q, |t| {
        t.json
            .get("text")
            .and_then(Value::as_str)
            .is_some_and(|text| text.to_lowercase().contains(&query))
    })
}

async fn create(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = inner.lock().unwrap();
    if let Some(r) = admit(
        &mut inner,
        XEndpoint::Post,
        HashMap::new(),
        &headers,
        body.clone(),
        Line {
            method: &method,
            uri: &uri,
        },
    ) {
        return r;
    }
    let Some(text) = body.get("text").and_then(Value::as_str).map(str::to_string) else {
        return problem(
            400,
            "Invalid Request",
            "One or more parameters to your request was invalid.",
        );
    };
    if inner.posted.iter().any(|p| p.text == text) {
        return problem(
            403,
            "Forbidden",
            "You are not allowed to create a Tweet with duplicate content.",
        );
    }
    let in_reply_to = body
        .pointer("/reply/in_reply_to_tweet_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let id = inner.next_id;
    inner.next_id += 1;
    inner.posted.push(Posted {
        id: id.to_string(),
        text: text.clone(),
        in_reply_to,
    });
    (
        StatusCode::CREATED,
        Json(json!({"data": {"id": id.to_string(), "text": text, "edit_history_tweet_ids": [id.to_string()]}})),
    )
        .into_response()
}

async fn me(State(inner): State<Shared>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let mut inner = inner.lock().unwrap();
    if let Some(r) = admit(
        &mut inner,
        XEndpoint::Me,
        HashMap::new(),
        &headers,
        Value::Null,
        Line {
            method: &method,
            uri: &uri,
        },
    ) {
        return r;
    }
    Json(json!({"data": {"id": ME_ID, "name": "Jarvis", "username": ME_USERNAME}})).into_response()
}

impl FakeX {
    /// Starts the fake; reads accept `bearer` or `user_token`, posts only `user_token`.
    ///
    /// # Panics
    /// When it cannot bind a loopback port.
    pub async fn start(bearer: &str, user_token: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            bearer: bearer.into(),
            user_token: user_token.into(),
            oauth1: None,
            nonces: HashSet::new(),
            oauth1_refusals: Vec::new(),
            tweets: Vec::new(),
            users: HashMap::new(),
            next_id: FIRST_TWEET_ID,
            failures: HashMap::new(),
            requests: Vec::new(),
            posted: Vec::new(),
            remaining: HashMap::new(),
        }));
        let app = Router::new()
            .route("/2/users/me", get(me))
            .route("/2/users/{id}/mentions", get(mentions))
            .route("/2/tweets/search/recent", get(search))
            .route("/2/tweets", post(create))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake X API");
        let addr = listener.local_addr().expect("fake X address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner, task }
    }

    /// Accepts OAuth 1.0a requests signed with `keys` (besides the bearer tokens).
    pub fn accept_oauth1(&self, keys: OAuth1Keys) {
        self.lock().oauth1 = Some(keys);
    }

    /// Why OAuth 1.0a requests were refused, in order (no secrets).
    pub fn oauth1_refusals(&self) -> Vec<String> {
        self.lock().oauth1_refusals.clone()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, text: &str, author: &str, created_at: &str, mention: bool) -> String {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let author_id = format!(
            "{}",
            2000 + author.len() as u64 * 7 + author.bytes().map(u64::from).sum::<u64>()
        );
        inner.users.insert(author_id.clone(), author.to_string());
        inner.tweets.push(Stored {
            json: json!({
                "id": id.to_string(),
                "text": text,
                "author_id": author_id,
                "created_at": created_at,
                "lang": "en",
                "edit_history_tweet_ids": [id.to_string()]
            }),
            id,
            mention,
        });
        id.to_string()
    }

    /// Adds a tweet mentioning the authenticated user; returns its id.
    pub fn add_mention(&self, text: &str, author: &str, created_at: &str) -> String {
        self.add(text, author, created_at, true)
    }

    /// Adds a tweet found by searches (not a mention); returns its id.
    pub fn add_tweet(&self, text: &str, author: &str, created_at: &str) -> String {
        self.add(text, author, created_at, false)
    }

    /// Adds a raw tweet object (e.g. malformed) under a new id, as a mention or not; returns the id.
    /// `raw`'s own fields win, except `id` when it has none.
    pub fn add_raw(&self, mut raw: Value, mention: bool) -> String {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        if raw.get("id").is_none() {
            raw["id"] = json!(id.to_string());
        }
        inner.tweets.push(Stored {
            json: raw,
            id,
            mention,
        });
        id.to_string()
    }

    /// Answers the next request to `endpoint` with `failure` (queued after earlier ones).
    pub fn fail_next(&self, endpoint: XEndpoint, failure: XFailure) {
        self.lock()
            .failures
            .entry(endpoint)
            .or_default()
            .push_back(failure);
    }

    /// Every request to `endpoint`, in order.
    pub fn requests(&self, endpoint: XEndpoint) -> Vec<XRequest> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .cloned()
            .collect()
    }

    /// Every tweet posted, in order.
    pub fn posted(&self) -> Vec<Posted> {
        self.lock().posted.clone()
    }
}
