//! The `x` context: the X account Jarvis polls and posts as (aggregate `XAccount`, id [`X_ACCOUNT`]).
//!
//! - **Cursors.** For each query it polls (`mentions`, or a tracked search such as `$SOL`), the newest tweet
//!   id seen, as `XCursorAdvanced`: after a restart the poller asks X only for tweets newer than that
//!   (`since_id`), so old tweets are never processed again. A cursor only moves forward (tweet ids grow).
//! - **Drafts.** Every reply or post starts as `TweetDrafted`. It is sent only once approved
//!   (`TweetApproved` by an operator, or by `auto` while under the daily cap), and sending records its
//!   intent first (`TweetSending`, like `OrderSent`): a draft is sent at most once however often it is
//!   approved, and a crash between the intent and X's answer leaves it `sending` for a human to check,
//!   never re-sent blindly. X's answer is `TweetPosted` (with X's tweet id) or `TweetPostFailed`.
//!   In dry-run mode, sending records `TweetDryRun` instead, and nothing reaches X.
//! - **Daily cap.** Auto-approval happens only while fewer than the cap's drafts of the draft's UTC day (by
//!   its event time) have been approved, by anyone.
//!
//! Pure: times come in with the commands.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::JarvisAggregate;
use crate::social::MAX_TEXT_BYTES;

/// The id of the one X account aggregate.
pub const X_ACCOUNT: &str = "main";
/// Who auto-approves drafts.
pub const AUTO: &str = "auto";
/// Longest post accepted, in characters (X's limit for accounts without a subscription).
pub const MAX_POST_CHARS: usize = 280;

/// A draft's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DraftStatus {
    /// Waiting for approval.
    Pending,
    /// Approved, not yet sent.
    Approved,
    /// Refused by an operator.
    Rejected,
    /// Being sent: the intent is recorded, X's answer is not.
    Sending,
    /// On X.
    Posted,
    /// X refused it, or it could not be sent; approving again retries.
    Failed,
    /// Dry run: recorded, never sent.
    DryRun,
}

/// A draft as the account holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Draft {
    /// The draft's id.
    pub draft_id: Uuid,
    /// The text to post.
    pub text: String,
    /// The tweet it replies to, if a reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// Who asked for it (`operator:...`, `x-drafter`, ...).
    pub requested_by: String,
    /// Its event time: the mention it answers, or when it was asked for.
    pub at: DateTime<Utc>,
    /// Where it stands.
    pub status: DraftStatus,
    /// X's id once posted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tweet_id: Option<String>,
    /// The claim of the sender that recorded the intent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Uuid>,
}

/// Commands of the X account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum XAccountCommand {
    /// Move a query's cursor to `since_id` (ignored unless newer).
    AdvanceCursor {
        /// The query, e.g. `mentions` or `$SOL`.
        query: String,
        /// The newest tweet id seen.
        since_id: String,
        /// The event time: the newest tweet's `created_at`.
        at: DateTime<Utc>,
    },
    /// Record a draft; auto-approve it when `auto_post_cap` is given and the day is under it.
    Draft {
        /// Its id (a retried request with the same id is a no-op).
        draft_id: Uuid,
        /// The text.
        text: String,
        /// The tweet it replies to.
        in_reply_to: Option<String>,
        /// Who asks.
        requested_by: String,
        /// Its event time.
        at: DateTime<Utc>,
        /// `Some(cap)` when auto-posting is on.
        auto_post_cap: Option<u32>,
    },
    /// Approve a draft.
    Approve {
        /// Which.
        draft_id: Uuid,
        /// Who.
        approved_by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Reject a pending draft.
    Reject {
        /// Which.
        draft_id: Uuid,
        /// Who.
        rejected_by: String,
        /// Why, if said.
        reason: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Record the intent to send an approved draft under `claim` (no-op unless approved).
    StartSending {
        /// Which.
        draft_id: Uuid,
        /// The sender's claim: it sends only if the intent recorded is its own.
        claim: Uuid,
        /// Dry run: record `TweetDryRun`, send nothing.
        dry_run: bool,
        /// When.
        at: DateTime<Utc>,
    },
    /// Record X's answer to a send.
    RecordPosted {
        /// Which.
        draft_id: Uuid,
        /// X's id of the new tweet.
        tweet_id: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Record a failed send.
    RecordFailed {
        /// Which.
        draft_id: Uuid,
        /// What went wrong (no secrets).
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
}

/// Events of the X account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum XAccountEvent {
    /// A query's cursor moved: tweets up to `since_id` are processed.
    XCursorAdvanced {
        /// The query.
        query: String,
        /// The newest tweet id processed.
        since_id: String,
        /// The newest tweet's time.
        at: DateTime<Utc>,
    },
    /// A reply or post was drafted.
    TweetDrafted {
        /// Its id.
        draft_id: Uuid,
        /// The text.
        text: String,
        /// The tweet it replies to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_reply_to: Option<String>,
        /// Who asked.
        requested_by: String,
        /// Its event time.
        at: DateTime<Utc>,
    },
    /// A draft was approved for sending.
    TweetApproved {
        /// Which.
        draft_id: Uuid,
        /// Who (`auto` for auto-posting).
        approved_by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A draft was rejected.
    TweetRejected {
        /// Which.
        draft_id: Uuid,
        /// Who.
        rejected_by: String,
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The intent to send: recorded before the request to X.
    TweetSending {
        /// Which.
        draft_id: Uuid,
        /// The sender's claim.
        claim: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// The draft is on X.
    TweetPosted {
        /// Which.
        draft_id: Uuid,
        /// X's id of the new tweet.
        tweet_id: String,
        /// The text posted.
        text: String,
        /// The tweet it replies to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_reply_to: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Sending failed.
    TweetPostFailed {
        /// Which.
        draft_id: Uuid,
        /// Why.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Dry run: what would have been sent; nothing was.
    TweetDryRun {
        /// Which.
        draft_id: Uuid,
        /// The text.
        text: String,
        /// The tweet it would reply to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_reply_to: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
}

impl XAccountEvent {
    /// Every event type of this enum with its current version.
    pub const TYPES: &'static [(&'static str, u32)] = &[
        ("XCursorAdvanced", 1),
        ("TweetDrafted", 1),
        ("TweetApproved", 1),
        ("TweetRejected", 1),
        ("TweetSending", 1),
        ("TweetPosted", 1),
        ("TweetPostFailed", 1),
        ("TweetDryRun", 1),
    ];
}

impl DomainEvent for XAccountEvent {
    fn event_type(&self) -> String {
        match self {
            Self::XCursorAdvanced { .. } => "XCursorAdvanced",
            Self::TweetDrafted { .. } => "TweetDrafted",
            Self::TweetApproved { .. } => "TweetApproved",
            Self::TweetRejected { .. } => "TweetRejected",
            Self::TweetSending { .. } => "TweetSending",
            Self::TweetPosted { .. } => "TweetPosted",
            Self::TweetPostFailed { .. } => "TweetPostFailed",
            Self::TweetDryRun { .. } => "TweetDryRun",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why the account refused a command. Nothing is recorded when a command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XAccountError {
    /// A malformed value.
    #[error("{field}: {why}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// No draft with this id.
    #[error("no draft {0}")]
    UnknownDraft(Uuid),
    /// The draft cannot take this command in its state.
    #[error("draft {draft_id} is {status:?}: cannot {what}")]
    WrongState {
        /// Which.
        draft_id: Uuid,
        /// Its state.
        status: DraftStatus,
        /// What was asked.
        what: &'static str,
    },
    /// The same draft id was offered with other content.
    #[error("draft {0} exists with other text or reply target")]
    Conflicting(Uuid),
}

/// The X account's state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct XAccount {
    cursors: BTreeMap<String, String>,
    drafts: BTreeMap<Uuid, Draft>,
    approved_per_day: BTreeMap<NaiveDate, u32>,
}

/// Whether tweet id `a` is newer than `b` (decimal ids: longer is larger, then lexicographic).
pub fn newer(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

fn check_tweet_id(field: &'static str, id: &str) -> Result<(), XAccountError> {
    if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(XAccountError::Invalid {
            field,
            why: format!("{id:?} is not a tweet id (decimal digits)"),
        });
    }
    Ok(())
}

/// Checks a post's text: not blank, at most [`MAX_POST_CHARS`] characters.
///
/// # Errors
/// [`XAccountError::Invalid`] naming `text`.
pub fn check_post_text(text: &str) -> Result<(), XAccountError> {
    let chars = text.chars().count();
    if text.trim().is_empty() {
        return Err(XAccountError::Invalid {
            field: "text",
            why: "is empty".into(),
        });
    }
    if chars > MAX_POST_CHARS || text.len() > MAX_TEXT_BYTES {
        return Err(XAccountError::Invalid {
            field: "text",
            why: format!("{chars} characters exceed {MAX_POST_CHARS}"),
        });
    }
    Ok(())
}

impl XAccount {
    /// The newest tweet id processed for `query`.
    pub fn cursor(&self, query: &str) -> Option<&str> {
        self.cursors.get(query).map(String::as_str)
    }

    /// A draft by id.
    pub fn draft(&self, draft_id: Uuid) -> Option<&Draft> {
        self.drafts.get(&draft_id)
    }

    /// Every draft in a state, oldest first.
    pub fn drafts_in(&self, status: DraftStatus) -> Vec<&Draft> {
        let mut out: Vec<&Draft> = self
            .drafts
            .values()
            .filter(|d| d.status == status)
            .collect();
        out.sort_by_key(|d| (d.at, d.draft_id));
        out
    }

    /// Drafts of `day` approved so far.
    pub fn approved_on(&self, day: NaiveDate) -> u32 {
        self.approved_per_day.get(&day).copied().unwrap_or(0)
    }

    fn existing(&self, draft_id: Uuid) -> Result<&Draft, XAccountError> {
        self.drafts
            .get(&draft_id)
            .ok_or(XAccountError::UnknownDraft(draft_id))
    }

    /// Decides a command. Pure.
    ///
    /// # Errors
    /// [`XAccountError`] for malformed values, unknown drafts and impossible transitions.
    pub fn decide(&self, command: XAccountCommand) -> Result<Vec<XAccountEvent>, XAccountError> {
        use DraftStatus as S;
        use XAccountEvent as E;
        match command {
            XAccountCommand::AdvanceCursor {
                query,
                since_id,
                at,
            } => {
                check_tweet_id("since_id", &since_id)?;
                if query.trim().is_empty() {
                    return Err(XAccountError::Invalid {
                        field: "query",
                        why: "is empty".into(),
                    });
                }
                Ok(match self.cursors.get(&query) {
                    Some(current) if !newer(&since_id, current) => vec![],
                    _ => vec![E::XCursorAdvanced {
                        query,
                        since_id,
                        at,
                    }],
                })
            }
            XAccountCommand::Draft {
                draft_id,
                text,
                in_reply_to,
                requested_by,
                at,
                auto_post_cap,
            } => {
                check_post_text(&text)?;
                if let Some(id) = &in_reply_to {
                    check_tweet_id("in_reply_to", id)?;
                }
                if let Some(existing) = self.drafts.get(&draft_id) {
                    return if existing.text == text && existing.in_reply_to == in_reply_to {
                        Ok(vec![])
                    } else {
                        Err(XAccountError::Conflicting(draft_id))
                    };
                }
                let mut events = vec![E::TweetDrafted {
                    draft_id,
                    text,
                    in_reply_to,
                    requested_by,
                    at,
                }];
                if auto_post_cap.is_some_and(|cap| self.approved_on(at.date_naive()) < cap) {
                    events.push(E::TweetApproved {
                        draft_id,
                        approved_by: AUTO.into(),
                        at,
                    });
                }
                Ok(events)
            }
            XAccountCommand::Approve {
                draft_id,
                approved_by,
                at,
            } => match self.existing(draft_id)?.status {
                S::Pending | S::Failed => Ok(vec![E::TweetApproved {
                    draft_id,
                    approved_by,
                    at,
                }]),
                // Approving again changes nothing: the draft is sent at most once.
                S::Approved | S::Sending | S::Posted | S::DryRun => Ok(vec![]),
                status @ S::Rejected => Err(XAccountError::WrongState {
                    draft_id,
                    status,
                    what: "approve",
                }),
            },
            XAccountCommand::Reject {
                draft_id,
                rejected_by,
                reason,
                at,
            } => match self.existing(draft_id)?.status {
                S::Pending | S::Approved | S::Failed => Ok(vec![E::TweetRejected {
                    draft_id,
                    rejected_by,
                    reason,
                    at,
                }]),
                S::Rejected => Ok(vec![]),
                status => Err(XAccountError::WrongState {
                    draft_id,
                    status,
                    what: "reject",
                }),
            },
            XAccountCommand::StartSending {
                draft_id,
                claim,
                dry_run,
                at,
            } => {
                let draft = self.existing(draft_id)?;
                if draft.status != S::Approved {
                    return Ok(vec![]);
                }
                Ok(vec![if dry_run {
                    E::TweetDryRun {
                        draft_id,
                        text: draft.text.clone(),
                        in_reply_to: draft.in_reply_to.clone(),
                        at,
                    }
                } else {
                    E::TweetSending {
                        draft_id,
                        claim,
                        at,
                    }
                }])
            }
            XAccountCommand::RecordPosted {
                draft_id,
                tweet_id,
                at,
            } => {
                check_tweet_id("tweet_id", &tweet_id)?;
                let draft = self.existing(draft_id)?;
                match draft.status {
                    S::Sending => Ok(vec![E::TweetPosted {
                        draft_id,
                        tweet_id,
                        text: draft.text.clone(),
                        in_reply_to: draft.in_reply_to.clone(),
                        at,
                    }]),
                    S::Posted if draft.tweet_id.as_deref() == Some(tweet_id.as_str()) => Ok(vec![]),
                    status => Err(XAccountError::WrongState {
                        draft_id,
                        status,
                        what: "record a post",
                    }),
                }
            }
            XAccountCommand::RecordFailed {
                draft_id,
                reason,
                at,
            } => match self.existing(draft_id)?.status {
                S::Sending => Ok(vec![E::TweetPostFailed {
                    draft_id,
                    reason,
                    at,
                }]),
                S::Failed => Ok(vec![]),
                status => Err(XAccountError::WrongState {
                    draft_id,
                    status,
                    what: "record a failure",
                }),
            },
        }
    }

    fn set(&mut self, draft_id: Uuid, status: DraftStatus) -> Option<&mut Draft> {
        let draft = self.drafts.get_mut(&draft_id)?;
        draft.status = status;
        Some(draft)
    }
}

impl Aggregate for XAccount {
    const TYPE: &'static str = "XAccount";
    type Command = XAccountCommand;
    type Event = XAccountEvent;
    type Error = XAccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use DraftStatus as S;
        match event {
            XAccountEvent::XCursorAdvanced {
                query, since_id, ..
            } => {
                self.cursors.insert(query, since_id);
            }
            XAccountEvent::TweetDrafted {
                draft_id,
                text,
                in_reply_to,
                requested_by,
                at,
            } => {
                self.drafts.insert(
                    draft_id,
                    Draft {
                        draft_id,
                        text,
                        in_reply_to,
                        requested_by,
                        at,
                        status: S::Pending,
                        tweet_id: None,
                        claim: None,
                    },
                );
            }
            XAccountEvent::TweetApproved { draft_id, .. } => {
                let day = self.set(draft_id, S::Approved).map(|d| d.at.date_naive());
                if let Some(day) = day {
                    *self.approved_per_day.entry(day).or_default() += 1;
                }
            }
            XAccountEvent::TweetRejected { draft_id, .. } => {
                self.set(draft_id, S::Rejected);
            }
            XAccountEvent::TweetSending {
                draft_id, claim, ..
            } => {
                if let Some(d) = self.set(draft_id, S::Sending) {
                    d.claim = Some(claim);
                }
            }
            XAccountEvent::TweetPosted {
                draft_id, tweet_id, ..
            } => {
                if let Some(d) = self.set(draft_id, S::Posted) {
                    d.tweet_id = Some(tweet_id);
                }
            }
            XAccountEvent::TweetPostFailed { draft_id, .. } => {
                self.set(draft_id, S::Failed);
            }
            XAccountEvent::TweetDryRun { draft_id, .. } => {
                self.set(draft_id, S::DryRun);
            }
        }
    }
}

impl JarvisAggregate for XAccount {
    const CONTEXT: &'static str = "x";
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<XAccount>;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn draft(n: u128, day: &str, cap: Option<u32>) -> XAccountCommand {
        XAccountCommand::Draft {
            draft_id: id(n),
            text: format!("gm {n}"),
            in_reply_to: Some("100".into()),
            requested_by: "test".into(),
            at: at(day),
            auto_post_cap: cap,
        }
    }

    fn drafted(n: u128, day: &str) -> XAccountEvent {
        XAccountEvent::TweetDrafted {
            draft_id: id(n),
            text: format!("gm {n}"),
            in_reply_to: Some("100".into()),
            requested_by: "test".into(),
            at: at(day),
        }
    }

    fn approved(n: u128, by: &str, day: &str) -> XAccountEvent {
        XAccountEvent::TweetApproved {
            draft_id: id(n),
            approved_by: by.into(),
            at: at(day),
        }
    }

    const D1: &str = "2024-03-01T10:00:00Z";
    const D1_LATE: &str = "2024-03-01T23:59:00Z";
    const D2: &str = "2024-03-02T00:01:00Z";

    #[test]
    fn a_cursor_only_moves_forward() {
        let advanced = |id: &str| XAccountEvent::XCursorAdvanced {
            query: "mentions".into(),
            since_id: id.into(),
            at: at(D1),
        };
        let advance = |id: &str| XAccountCommand::AdvanceCursor {
            query: "mentions".into(),
            since_id: id.into(),
            at: at(D1),
        };
        Given::with(())
            .given(vec![advanced("99")])
            .when(advance("100"))
            .then_expect_events(vec![advanced("100")]);
        Given::with(())
            .given(vec![advanced("100")])
            .when(advance("99"))
            .then_expect_events(vec![]);
        assert!(newer("100", "99") && !newer("99", "100") && !newer("5", "5"));
    }

    #[test]
    fn auto_post_approves_within_the_daily_cap_by_event_time() {
        Given::with(())
            .given_no_previous_events()
            .when(draft(1, D1, Some(1)))
            .then_expect_events(vec![drafted(1, D1), approved(1, AUTO, D1)]);
        // The cap of that day is used: the next draft of the same day waits for a human.
        Given::with(())
            .given(vec![drafted(1, D1), approved(1, AUTO, D1)])
            .when(draft(2, D1_LATE, Some(1)))
            .then_expect_events(vec![drafted(2, D1_LATE)]);
        // A new UTC day (of the draft's event time) has a fresh cap.
        Given::with(())
            .given(vec![drafted(1, D1), approved(1, AUTO, D1)])
            .when(draft(3, D2, Some(1)))
            .then_expect_events(vec![drafted(3, D2), approved(3, AUTO, D2)]);
        Given::with(())
            .given_no_previous_events()
            .when(draft(1, D1, None))
            .then_expect_events(vec![drafted(1, D1)]);
    }

    #[test]
    fn approving_twice_sends_once() {
        let history = vec![drafted(1, D1), approved(1, "op", D1)];
        Given::with(())
            .given(history.clone())
            .when(XAccountCommand::Approve {
                draft_id: id(1),
                approved_by: "op".into(),
                at: at(D1),
            })
            .then_expect_events(vec![]);
        let sending = XAccountEvent::TweetSending {
            draft_id: id(1),
            claim: id(9),
            at: at(D1),
        };
        let start = |claim| XAccountCommand::StartSending {
            draft_id: id(1),
            claim: id(claim),
            dry_run: false,
            at: at(D1),
        };
        Given::with(())
            .given(history.clone())
            .when(start(9))
            .then_expect_events(vec![sending.clone()]);
        let mut sent = history;
        sent.push(sending);
        Given::with(())
            .given(sent)
            .when(start(10))
            .then_expect_events(vec![]);
    }

    #[test]
    fn dry_run_records_what_would_be_sent() {
        Given::with(())
            .given(vec![drafted(1, D1), approved(1, "op", D1)])
            .when(XAccountCommand::StartSending {
                draft_id: id(1),
                claim: id(9),
                dry_run: true,
                at: at(D1),
            })
            .then_expect_events(vec![XAccountEvent::TweetDryRun {
                draft_id: id(1),
                text: "gm 1".into(),
                in_reply_to: Some("100".into()),
                at: at(D1),
            }]);
    }

    #[test]
    fn bad_drafts_and_transitions_are_refused_naming_the_field() {
        let refuse = |history: Vec<XAccountEvent>, c| {
            Given::with(())
                .given(history)
                .when(c)
                .inspect_result()
                .unwrap_err()
                .to_string()
        };
        let mut long = draft(1, D1, None);
        if let XAccountCommand::Draft { text, .. } = &mut long {
            *text = "a".repeat(281);
        }
        assert!(refuse(vec![], long).contains("text: 281 characters exceed 280"));
        let mut bad_reply = draft(1, D1, None);
        if let XAccountCommand::Draft { in_reply_to, .. } = &mut bad_reply {
            *in_reply_to = Some("abc".into());
        }
        assert!(refuse(vec![], bad_reply).starts_with("in_reply_to:"));
        let approve = XAccountCommand::Approve {
            draft_id: id(1),
            approved_by: "op".into(),
            at: at(D1),
        };
        assert!(refuse(vec![], approve.clone()).contains("no draft"));
        let rejected = XAccountEvent::TweetRejected {
            draft_id: id(1),
            rejected_by: "op".into(),
            reason: None,
            at: at(D1),
        };
        assert!(refuse(vec![drafted(1, D1), rejected], approve).contains("Rejected"));
    }

    #[test]
    fn serde_round_trip_keeps_the_wire_names() {
        let e = XAccountEvent::TweetPosted {
            draft_id: id(1),
            tweet_id: "1234".into(),
            text: "gm".into(),
            in_reply_to: None,
            at: at(D1),
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["TweetPosted"]["tweet_id"], "1234");
        assert_eq!(serde_json::from_value::<XAccountEvent>(json).unwrap(), e);
    }
}
