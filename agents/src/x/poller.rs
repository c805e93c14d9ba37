//! The X poller: mentions and tracked searches, from their cursors, into `TweetReceived`.
//!
//! One poll of a query: read its cursor (`XAccount`'s `XCursorAdvanced`), ask X for newer tweets (following
//! `next_token` up to `max_pages`), append each tweet oldest first to its day's `XFeed` (idempotent), then
//! advance the cursor to the page's `newest_id`. A crash between the tweets and the cursor repeats the poll,
//! and the repeated tweets are no-ops: nothing is processed twice.
//!
//! Bad input never stops it: a tweet X sent malformed, or one its feed refuses, goes to `jarvis.dlq.x` with
//! the reason and the others are kept; an answer that is not X's JSON goes there too, and the poll backs off.
//!
//! Waiting: each endpoint (mentions, search) has its own next time. After a success it is the interval, or
//! the rate-limit reset when `x-rate-limit-remaining` is 0; after a 429, the reset X gave (capped at
//! `max_backoff`, plus up to 250 ms of jitter so requests land after it); after a 5xx or a transport error,
//! double the last wait, jittered and capped. No request is made to an endpoint before its time.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use jarvis_bus::consumer::dlq_headers;
use jarvis_bus::dlq_subject;
use jarvis_bus::envelope::headers;
use jarvis_domain::social::{Tweet, XFeed, XFeedCommand};
use jarvis_domain::x_account::{XAccount, XAccountCommand, X_ACCOUNT};
use jarvis_domain::EventMetadata;
use jarvis_store::{execute_with_retry, EventStore};
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use super::client::{endpoints, Page, RateLimit, XClient, XError};
use super::drafter::ReplyDrafter;
use super::{DLQ_CONSUMER, MENTIONS};
use crate::execution::Clock;
use crate::runtime::SNAPSHOT_EVERY;

/// Who writes what the poller reads.
const SOURCE: &str = "x";
/// Retries after conflicts with another writer.
const RETRIES: u32 = 5;
/// Most jitter added to a wait.
const JITTER_MS: u64 = 250;

/// What the poller polls.
#[derive(Debug, Clone)]
pub struct PollerSettings {
    /// Whose mentions (none: mentions are not polled).
    pub user_id: Option<String>,
    /// Poll mentions.
    pub poll_mentions: bool,
    /// Searches.
    pub track: Vec<String>,
    /// Time between polls of an endpoint.
    pub interval: Duration,
    /// The longest wait after errors and rate limits.
    pub max_backoff: Duration,
    /// Tweets per page.
    pub max_results: u32,
    /// Pages per query and poll.
    pub max_pages: u32,
}

/// Why a poll stopped.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// X failed or refused.
    #[error(transparent)]
    Api(#[from] XError),
    /// The store failed (the poll is repeated later; nothing is lost).
    #[error("store: {0}")]
    Store(String),
    /// The dead-letter stream is unreachable.
    #[error("dead-letter: {0}")]
    Bus(String),
}

/// What one poll of one query did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Tweets appended (or already present).
    pub received: usize,
    /// Tweets dead-lettered.
    pub dead_lettered: usize,
    /// The endpoint's rate limit after the last call.
    pub rate_limit: RateLimit,
}

/// The endpoints, each with its own schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Mentions,
    Search,
}

/// The poller.
pub struct XPoller {
    client: XClient,
    store: EventStore,
    js: async_nats::jetstream::Context,
    settings: PollerSettings,
    clock: Arc<dyn Clock>,
    drafter: Option<ReplyDrafter>,
}

fn jitter() -> Duration {
    Duration::from_millis((Uuid::now_v7().as_u128() as u64) % (JITTER_MS + 1))
}

/// How long until `reset_epoch_secs` on the wall clock (zero when past).
fn until(reset_epoch_secs: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(reset_epoch_secs).saturating_sub(now)
}

impl XPoller {
    /// A poller reading with `client`, writing to `store`, dead-lettering to `js`.
    pub fn new(
        client: XClient,
        store: EventStore,
        js: async_nats::jetstream::Context,
        settings: PollerSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            client,
            store,
            js,
            settings,
            clock,
            drafter: None,
        }
    }

    /// Drafts a reply to each new mention with `drafter` (not to those found by the very first poll, which
    /// only sets the cursor: a new account's backlog is not answered).
    pub fn with_drafter(mut self, drafter: ReplyDrafter) -> Self {
        self.drafter = Some(drafter);
        self
    }

    /// Fills in the user id from `GET /2/users/me` when mentions are polled and none is configured.
    ///
    /// # Errors
    /// [`XError`] when X cannot tell (no user token, refused).
    pub async fn resolve_user_id(&mut self) -> Result<(), XError> {
        if self.settings.poll_mentions && self.settings.user_id.is_none() {
            self.settings.user_id = Some(self.client.me().await?);
        }
        Ok(())
    }

    /// Publishes `payload` to `jarvis.dlq.x` with the headers of a consumer's dead letter
    /// (`jarvis-dlq-error`, `-consumer`, `-subject` = the endpoint, `-deliveries`), de-duplicated by content.
    async fn dead_letter(
        &self,
        endpoint: &str,
        query: &str,
        key: &str,
        reason: &str,
        payload: String,
    ) -> Result<(), PollError> {
        let one_line = |text: &str| -> String {
            text.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(1_000)
                .collect()
        };
        let id = format!(
            "{DLQ_CONSUMER}:{key}:{}",
            Uuid::new_v5(&Uuid::NAMESPACE_OID, payload.as_bytes())
        );
        let mut h = HeaderMap::new();
        h.insert(headers::MSG_ID, id.as_str());
        h.insert(dlq_headers::ERROR, one_line(reason).as_str());
        h.insert(dlq_headers::CONSUMER, DLQ_CONSUMER);
        h.insert(dlq_headers::SUBJECT, endpoint);
        h.insert(dlq_headers::DELIVERIES, "1");
        h.insert("jarvis-x-query", one_line(query).as_str());
        tracing::warn!(%endpoint, %query, %reason, "dead-lettering an X answer");
        let subject = dlq_subject(DLQ_CONSUMER);
        self.js
            .publish_with_headers(subject.clone(), h, payload.into())
            .await
            .map_err(|e| PollError::Bus(format!("publishing to {subject}: {e}")))?
            .await
            .map_err(|e| PollError::Bus(format!("awaiting ack from {subject}: {e}")))?;
        Ok(())
    }

    async fn page(
        &self,
        endpoint: Endpoint,
        query: &str,
        since: Option<&str>,
        token: Option<&str>,
    ) -> Result<Page, XError> {
        match endpoint {
            Endpoint::Mentions => {
                let user = self.settings.user_id.as_deref().unwrap_or_default();
                self.client
                    .mentions(user, since, self.settings.max_results, token)
                    .await
            }
            Endpoint::Search => {
                self.client
                    .search_recent(query, since, self.settings.max_results, token)
                    .await
            }
        }
    }

    /// Polls one query (`mentions`, or a search) once from its cursor.
    ///
    /// # Errors
    /// [`PollError`]; the cursor does not move then, and the next poll asks again.
    pub async fn poll_mentions(&self) -> Result<PollReport, PollError> {
        self.poll(Endpoint::Mentions, MENTIONS).await
    }

    /// Polls one tracked search once from its cursor.
    ///
    /// # Errors
    /// As [`XPoller::poll_mentions`].
    pub async fn poll_search(&self, search: &str) -> Result<PollReport, PollError> {
        self.poll(Endpoint::Search, search).await
    }

    async fn poll(&self, endpoint: Endpoint, query: &str) -> Result<PollReport, PollError> {
        let name = match endpoint {
            Endpoint::Mentions => endpoints::MENTIONS,
            Endpoint::Search => endpoints::SEARCH,
        };
        let account: XAccount = self
            .store
            .load(X_ACCOUNT, Some(SNAPSHOT_EVERY))
            .await
            .map_err(|e| PollError::Store(e.to_string()))?;
        let since = account.cursor(query).map(str::to_string);
        let mut pages: Vec<Page> = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..self.settings.max_pages {
            let page = match self
                .page(endpoint, query, since.as_deref(), token.as_deref())
                .await
            {
                Ok(page) => page,
                Err(XError::Malformed {
                    endpoint,
                    why,
                    body,
                    ..
                }) => {
                    let reason = format!("{endpoint}: malformed answer: {why}");
                    self.dead_letter(endpoint, query, "answer", &reason, body.clone())
                        .await?;
                    return Err(XError::Malformed {
                        endpoint,
                        why,
                        body,
                    }
                    .into());
                }
                Err(e) => return Err(e.into()),
            };
            token = page.next_token.clone();
            let exhausted = page.rate_limit.remaining == Some(0);
            pages.push(page);
            if token.is_none() || exhausted {
                break;
            }
        }
        if token.is_some() {
            tracing::warn!(%query, pages = pages.len(), "more new tweets than max_pages; older ones are skipped");
        }
        let mut report = PollReport {
            rate_limit: pages.last().map(|p| p.rate_limit).unwrap_or_default(),
            ..PollReport::default()
        };
        // Newest id of the poll: the first page's `newest_id`, else the largest id seen.
        let mut newest: Option<String> = pages.first().and_then(|p| p.newest_id.clone());
        let mut newest_at = None;
        let mut consider = |id: &str| {
            if id.bytes().all(|b| b.is_ascii_digit())
                && !id.is_empty()
                && newest
                    .as_deref()
                    .is_none_or(|n| jarvis_domain::x_account::newer(id, n))
            {
                newest = Some(id.to_string());
            }
        };
        let tweets: Vec<&Tweet> = pages.iter().flat_map(|p| &p.tweets).collect();
        for t in &tweets {
            consider(&t.tweet_id);
        }
        for m in pages.iter().flat_map(|p| &p.malformed) {
            if let Some(id) = m.raw.get("id").and_then(Value::as_str) {
                consider(id);
            }
        }
        let metadata = EventMetadata::root(SOURCE);
        let feeds = self.store.cqrs::<XFeed>(());
        let mut to_answer: Vec<&Tweet> = Vec::new();
        // Oldest first, as they happened.
        for tweet in tweets.into_iter().rev() {
            let done = execute_with_retry(
                &feeds,
                &tweet.feed_id(),
                XFeedCommand::Receive(tweet.clone()),
                &metadata,
                RETRIES,
            )
            .await;
            match done {
                Ok(_) => {
                    report.received += 1;
                    if endpoint == Endpoint::Mentions && since.is_some() {
                        to_answer.push(tweet);
                    }
                }
                Err(cqrs_es::AggregateError::UserError(e)) => {
                    let raw = serde_json::to_string(tweet).unwrap_or_default();
                    self.dead_letter(name, query, &tweet.tweet_id, &format!("refused: {e}"), raw)
                        .await?;
                    report.dead_lettered += 1;
                }
                Err(e) => return Err(PollError::Store(e.to_string())),
            }
            newest_at = newest_at.max(Some(tweet.created_at));
        }
        for m in pages.iter().flat_map(|p| &p.malformed) {
            let key = m
                .raw
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("tweet")
                .to_string();
            let reason = format!("{name}: malformed tweet: {}", m.why);
            self.dead_letter(name, query, &key, &reason, m.raw.to_string())
                .await?;
            report.dead_lettered += 1;
        }
        if let Some(drafter) = &self.drafter {
            for mention in to_answer {
                match drafter.draft_reply(mention).await {
                    Ok(Some(d)) => {
                        tracing::info!(draft_id = %d.draft_id, tweet_id = %mention.tweet_id, "reply drafted")
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(tweet_id = %mention.tweet_id, cause = %e, "no reply drafted")
                    }
                }
            }
        }
        if let Some(since_id) = newest {
            let at = newest_at.unwrap_or_else(|| self.clock.now());
            execute_with_retry(
                &self.store.snapshot_cqrs::<XAccount>(SNAPSHOT_EVERY, ()),
                X_ACCOUNT,
                XAccountCommand::AdvanceCursor {
                    query: query.to_string(),
                    since_id,
                    at,
                },
                &metadata,
                RETRIES,
            )
            .await
            .map_err(|e| PollError::Store(e.to_string()))?;
        }
        Ok(report)
    }

    /// Polls every query of `endpoint` once; returns the last rate limit.
    async fn poll_endpoint(&self, endpoint: Endpoint) -> Result<RateLimit, PollError> {
        let queries: Vec<String> = match endpoint {
            Endpoint::Mentions => vec![MENTIONS.to_string()],
            Endpoint::Search => self.settings.track.clone(),
        };
        let mut last = RateLimit::default();
        for query in queries {
            let report = self.poll(endpoint, &query).await?;
            tracing::debug!(%query, received = report.received, dead_lettered = report.dead_lettered, "x polled");
            last = report.rate_limit;
            if last.remaining == Some(0) {
                break;
            }
        }
        Ok(last)
    }

    /// The wait before the next poll of an endpoint, given how the last one went and the last back-off.
    fn next_wait(
        &self,
        outcome: &Result<RateLimit, PollError>,
        backoff: &mut Duration,
    ) -> Duration {
        let (interval, max) = (self.settings.interval, self.settings.max_backoff);
        match outcome {
            Ok(limit) => {
                *backoff = Duration::ZERO;
                match (limit.remaining, limit.reset_epoch_secs) {
                    (Some(0), Some(reset)) => until(reset).min(max).max(interval) + jitter(),
                    _ => interval,
                }
            }
            Err(PollError::Api(XError::RateLimited {
                reset_epoch_secs: Some(reset),
                ..
            })) => {
                *backoff = (*backoff).max(interval).saturating_mul(2).min(max);
                // A reset already past (clock skew) still waits a second: never hammer.
                until(*reset).max(Duration::from_secs(1)).min(max) + jitter()
            }
            Err(PollError::Api(XError::Refused { .. } | XError::NoUserToken(_))) => {
                *backoff = max;
                max
            }
            Err(_) => {
                *backoff = (*backoff).max(interval).saturating_mul(2).min(max);
                *backoff + jitter()
            }
        }
    }

    /// Polls until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        if let Err(e) = self.resolve_user_id().await {
            tracing::warn!(cause = %e, "cannot tell whose mentions to poll (set [x] user_id); polling searches only");
            self.settings.poll_mentions = false;
        }
        let mut schedule: Vec<(Endpoint, Instant, Duration)> = Vec::new();
        if self.settings.poll_mentions && self.settings.user_id.is_some() {
            schedule.push((Endpoint::Mentions, Instant::now(), Duration::ZERO));
        }
        if !self.settings.track.is_empty() {
            schedule.push((Endpoint::Search, Instant::now(), Duration::ZERO));
        }
        if schedule.is_empty() {
            tracing::warn!("x: nothing to poll (no mentions, no [x] track)");
            shutdown.await;
            return;
        }
        loop {
            let next = schedule.iter().map(|(_, at, _)| *at).min();
            let Some(next) = next else { return };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep_until(next) => {}
            }
            for (endpoint, at, backoff) in &mut schedule {
                if *at > Instant::now() {
                    continue;
                }
                let outcome = self.poll_endpoint(*endpoint).await;
                let wait = self.next_wait(&outcome, backoff);
                if let Err(e) = &outcome {
                    tracing::warn!(cause = %e, retry_in_ms = wait.as_millis() as u64, "x poll failed");
                }
                *at = Instant::now() + wait;
            }
        }
    }
}
