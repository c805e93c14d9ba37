//! Drafts, approval and sending of posts and replies, and the micro service `jarvis-x`.
//!
//! Everything posted starts as a draft (`TweetDrafted`). A draft is sent once approved: by an operator
//! (`jarvis.cmd.x.approve`, from Telegram's `/approve` or the gateway), or by `auto` when `auto_post` is on
//! and the draft's UTC day is under `daily_post_cap`. Sending records the intent first (`TweetSending`
//! with this sender's claim) and only the sender whose claim was recorded calls X, so approving twice, or
//! two processes approving at once, posts once. X's answer becomes `TweetPosted` (with X's id) or
//! `TweetPostFailed`. With `dry_run`, the intent is `TweetDryRun` and nothing is sent.
//!
//! Service verbs (JSON):
//! - `jarvis.cmd.x.draft` `{"text": "..", "in_reply_to": "123", "requested_by": ".."}` → the draft;
//! - `jarvis.cmd.x.drafts` `{}` → `{"drafts": [...]}`, the pending ones, oldest first;
//! - `jarvis.cmd.x.approve` `{"draft_id": uuid, "approved_by": ".."}` → the draft after sending;
//! - `jarvis.cmd.x.reject` `{"draft_id": uuid, "rejected_by": "..", "reason": ".."}` → the draft.
//!
//! A draft is `{"draft_id", "text", "in_reply_to"?, "requested_by", "at", "status", "tweet_id"?}` with
//! `status` one of `pending`, `approved`, `rejected`, `sending`, `posted`, `failed`, `dry_run`.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use cqrs_es::AggregateError;
use jarvis_bus::service::{parse, ServiceError};
use jarvis_bus::BusError;
use jarvis_domain::x_account::{
    Draft, DraftStatus, XAccount, XAccountCommand, XAccountError, X_ACCOUNT,
};
use jarvis_domain::EventMetadata;
use jarvis_store::{execute_with_retry, EventStore};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::client::XClient;
use crate::execution::Clock;
use crate::runtime::SNAPSHOT_EVERY;

/// Retries after conflicts with another writer.
const RETRIES: u32 = 5;

/// How drafts become posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxSettings {
    /// Approve drafts automatically while under the cap.
    pub auto_post: bool,
    /// Most approvals per UTC day of the draft's event time, for auto-posting.
    pub daily_post_cap: u32,
    /// Record and log; send nothing.
    pub dry_run: bool,
}

/// What went wrong with an outbox request.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The account refused (unknown draft, bad text, wrong state).
    #[error(transparent)]
    Refused(#[from] XAccountError),
    /// Posting is impossible: no user context and not a dry run.
    #[error("posting needs user context: OAuth 1.0a ([x] consumer_key, consumer_secret, access_token, access_token_secret) or [x] user_token (or [x] dry_run = true)")]
    CannotPost,
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}

impl From<AggregateError<XAccountError>> for OutboxError {
    fn from(e: AggregateError<XAccountError>) -> Self {
        match e {
            AggregateError::UserError(e) => Self::Refused(e),
            other => Self::Store(other.to_string()),
        }
    }
}

impl From<OutboxError> for ServiceError {
    fn from(e: OutboxError) -> Self {
        match e {
            OutboxError::Refused(XAccountError::Invalid { .. }) => {
                ServiceError::bad_request(e.to_string())
            }
            OutboxError::Refused(_) | OutboxError::CannotPost => {
                ServiceError::refused(e.to_string())
            }
            OutboxError::Store(_) => ServiceError::internal(e.to_string()),
        }
    }
}

/// A draft request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DraftRequest {
    /// The text.
    pub text: String,
    /// The tweet to reply to.
    #[serde(default)]
    pub in_reply_to: Option<String>,
    /// Who asks (default `operator`).
    #[serde(default)]
    pub requested_by: Option<String>,
    /// An id for idempotent retries (default: a new one).
    #[serde(default)]
    pub draft_id: Option<Uuid>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Approve {
    draft_id: String,
    #[serde(default)]
    approved_by: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reject {
    draft_id: String,
    #[serde(default)]
    rejected_by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn draft_id(text: &str) -> Result<Uuid, ServiceError> {
    text.parse()
        .map_err(|_| ServiceError::bad_request(format!("draft_id {text:?} is not a UUID")))
}

/// Drafts, approvals and sending.
#[derive(Clone)]
pub struct Outbox {
    store: EventStore,
    client: XClient,
    settings: OutboxSettings,
    clock: Arc<dyn Clock>,
}

impl Outbox {
    /// An outbox posting with `client`.
    pub fn new(
        store: EventStore,
        client: XClient,
        settings: OutboxSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            client,
            settings,
            clock,
        }
    }

    async fn account(&self) -> Result<XAccount, OutboxError> {
        Ok(self.store.load(X_ACCOUNT, Some(SNAPSHOT_EVERY)).await?)
    }

    async fn execute(
        &self,
        command: XAccountCommand,
        metadata: &EventMetadata,
    ) -> Result<(), OutboxError> {
        let cqrs = self.store.snapshot_cqrs::<XAccount>(SNAPSHOT_EVERY, ());
        execute_with_retry(&cqrs, X_ACCOUNT, command, metadata, RETRIES).await?;
        Ok(())
    }

    async fn draft_now(&self, draft_id: Uuid) -> Result<Draft, OutboxError> {
        self.account()
            .await?
            .draft(draft_id)
            .cloned()
            .ok_or(OutboxError::Refused(XAccountError::UnknownDraft(draft_id)))
    }

    fn check_can_post(&self) -> Result<(), OutboxError> {
        if self.settings.dry_run || self.client.can_post() {
            Ok(())
        } else {
            Err(OutboxError::CannotPost)
        }
    }

    /// Records a draft at event time `at` (auto-approved and sent when auto-posting allows).
    ///
    /// # Errors
    /// [`OutboxError`].
    pub async fn draft(
        &self,
        request: DraftRequest,
        at: chrono::DateTime<chrono::Utc>,
        metadata: &EventMetadata,
    ) -> Result<Draft, OutboxError> {
        let draft_id = request.draft_id.unwrap_or_else(Uuid::now_v7);
        let auto = self.settings.auto_post && self.check_can_post().is_ok();
        self.execute(
            XAccountCommand::Draft {
                draft_id,
                text: request.text,
                in_reply_to: request.in_reply_to,
                requested_by: request.requested_by.unwrap_or_else(|| "operator".into()),
                at,
                auto_post_cap: auto.then_some(self.settings.daily_post_cap),
            },
            metadata,
        )
        .await?;
        self.send(draft_id, metadata).await
    }

    /// Approves a draft and sends it (once, however often it is approved).
    ///
    /// # Errors
    /// [`OutboxError`].
    pub async fn approve(&self, draft_id: Uuid, approved_by: &str) -> Result<Draft, OutboxError> {
        self.check_can_post()?;
        let metadata = EventMetadata::root(format!("x:approve:{approved_by}"));
        self.execute(
            XAccountCommand::Approve {
                draft_id,
                approved_by: approved_by.to_string(),
                at: self.clock.now(),
            },
            &metadata,
        )
        .await?;
        self.send(draft_id, &metadata).await
    }

    /// Rejects a draft.
    ///
    /// # Errors
    /// [`OutboxError`].
    pub async fn reject(
        &self,
        draft_id: Uuid,
        rejected_by: &str,
        reason: Option<String>,
    ) -> Result<Draft, OutboxError> {
        let metadata = EventMetadata::root(format!("x:reject:{rejected_by}"));
        self.execute(
            XAccountCommand::Reject {
                draft_id,
                rejected_by: rejected_by.to_string(),
                reason,
                at: self.clock.now(),
            },
            &metadata,
        )
        .await?;
        self.draft_now(draft_id).await
    }

    /// Whether a draft with this id exists.
    ///
    /// # Errors
    /// [`OutboxError::Store`].
    pub async fn has_draft(&self, draft_id: Uuid) -> Result<bool, OutboxError> {
        Ok(self.account().await?.draft(draft_id).is_some())
    }

    /// The pending drafts, oldest first.
    ///
    /// # Errors
    /// [`OutboxError::Store`].
    pub async fn pending(&self) -> Result<Vec<Draft>, OutboxError> {
        Ok(self
            .account()
            .await?
            .drafts_in(DraftStatus::Pending)
            .into_iter()
            .cloned()
            .collect())
    }

    /// Sends an approved draft: records the intent under a fresh claim, and calls X only if that claim is
    /// the one recorded. A draft in any other state is returned as it is.
    ///
    /// # Errors
    /// [`OutboxError`] for store failures; X's refusal is recorded as `TweetPostFailed`, not an error.
    pub async fn send(
        &self,
        draft_id: Uuid,
        metadata: &EventMetadata,
    ) -> Result<Draft, OutboxError> {
        let draft = self.draft_now(draft_id).await?;
        if draft.status != DraftStatus::Approved {
            return Ok(draft);
        }
        let claim = Uuid::now_v7();
        self.execute(
            XAccountCommand::StartSending {
                draft_id,
                claim,
                dry_run: self.settings.dry_run,
                at: self.clock.now(),
            },
            metadata,
        )
        .await?;
        let draft = self.draft_now(draft_id).await?;
        if draft.status == DraftStatus::DryRun {
            tracing::info!(%draft_id, text = %draft.text, in_reply_to = ?draft.in_reply_to, "dry run: would post");
            return Ok(draft);
        }
        if draft.status != DraftStatus::Sending || draft.claim != Some(claim) {
            // Another sender got there first.
            return Ok(draft);
        }
        let command = match self
            .client
            .post(&draft.text, draft.in_reply_to.as_deref())
            .await
        {
            Ok(tweet_id) => {
                tracing::info!(%draft_id, %tweet_id, "posted to X");
                XAccountCommand::RecordPosted {
                    draft_id,
                    tweet_id,
                    at: self.clock.now(),
                }
            }
            Err(e) => {
                tracing::warn!(%draft_id, cause = %e, "posting to X failed");
                XAccountCommand::RecordFailed {
                    draft_id,
                    reason: e.to_string(),
                    at: self.clock.now(),
                }
            }
        };
        self.execute(command, metadata).await?;
        self.draft_now(draft_id).await
    }

    /// Sends every approved draft not yet sent (after a crash between an approval and its sending).
    ///
    /// # Errors
    /// [`OutboxError::Store`].
    pub async fn send_approved(&self) -> Result<usize, OutboxError> {
        let approved: Vec<Uuid> = self
            .account()
            .await?
            .drafts_in(DraftStatus::Approved)
            .iter()
            .map(|d| d.draft_id)
            .collect();
        let metadata = EventMetadata::root("x:resume");
        for id in &approved {
            self.send(*id, &metadata).await?;
        }
        Ok(approved.len())
    }

    async fn handle(&self, verb: &str, body: &[u8]) -> Result<Value, ServiceError> {
        let draft = match verb {
            "draft" => {
                let request: DraftRequest = parse(body)?;
                let metadata = EventMetadata::root(format!(
                    "x:draft:{}",
                    request.requested_by.as_deref().unwrap_or("operator")
                ));
                self.draft(request, self.clock.now(), &metadata).await?
            }
            "drafts" => {
                let Empty {} = parse(body)?;
                return Ok(json!({ "drafts": self.pending().await? }));
            }
            "approve" => {
                let Approve {
                    draft_id,
                    approved_by,
                } = parse(body)?;
                self.approve(
                    self::draft_id(&draft_id)?,
                    approved_by.as_deref().unwrap_or("operator"),
                )
                .await?
            }
            "reject" => {
                let Reject {
                    draft_id,
                    rejected_by,
                    reason,
                } = parse(body)?;
                self.reject(
                    self::draft_id(&draft_id)?,
                    rejected_by.as_deref().unwrap_or("operator"),
                    reason,
                )
                .await?
            }
            other => return Err(ServiceError::bad_request(format!("unknown verb {other:?}"))),
        };
        serde_json::to_value(draft).map_err(|e| ServiceError::internal(e.to_string()))
    }
}

/// Serves `jarvis-x` (`draft`, `drafts`, `approve`, `reject`) until `shutdown` completes.
///
/// # Errors
/// [`BusError`] when the service cannot be registered with NATS.
pub async fn serve_commands(
    outbox: Outbox,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BusError> {
    if let Err(e) = outbox.send_approved().await {
        tracing::warn!(cause = %e, "x: could not send the drafts approved before the restart");
    }
    jarvis_bus::service::serve_with_health(
        &client,
        "x",
        "Jarvis X account: draft, drafts (pending), approve, reject",
        &["draft", "drafts", "approve", "reject"],
        |verb: String, body: Bytes| {
            let outbox = outbox.clone();
            async move { outbox.handle(&verb, &body).await }
        },
        jarvis_bus::service::Health::new("x", &[]),
        shutdown,
    )
    .await
}
