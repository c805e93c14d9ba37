//! The `TelegramBot` aggregate (context `telegram`, one per bot, id [`BOT_ID`]): what the Telegram agent
//! must remember beyond the conversations themselves.
//!
//! - `TelegramUpdatesConsumed`: the Bot API offset after a batch of updates was handled, so a restarted agent
//!   asks for the updates after it and never handles one twice. The offset only grows.
//! - `TelegramAccessDenied`: someone who may not do what they asked (not on the allowlist, a role too low,
//!   or over the rate limit) was refused; the attempt is kept for the operator.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::JarvisAggregate;

/// The id of the one bot's aggregate.
pub const BOT_ID: &str = "main";

/// Why an attempt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DenialReason {
    /// The user is not on the allowlist.
    NotAllowlisted,
    /// The user's role may not do this (a viewer trading, say).
    InsufficientRole,
    /// The user sent more than the per-user rate limit allows.
    RateLimited,
}

impl DenialReason {
    /// `not_allowlisted`, `insufficient_role` or `rate_limited`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAllowlisted => "not_allowlisted",
            Self::InsufficientRole => "insufficient_role",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// A refused attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AccessDenied {
    /// The chat it came from.
    pub chat_id: i64,
    /// Who tried.
    pub user_id: i64,
    /// Their user name, if they have one.
    pub username: Option<String>,
    /// The message, when it was a message (a button press has none).
    pub message_id: Option<i64>,
    /// What they tried, e.g. `/buy` or `button:confirm`.
    pub attempted: String,
    /// Why it was refused.
    pub reason: DenialReason,
    /// When (the message's time, or the agent's clock for a button press).
    pub at: DateTime<Utc>,
}

/// Commands the bot's aggregate accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum TelegramCommand {
    /// Every update below `next_offset` is handled (a no-op unless it moves the offset forward).
    ConsumeUpdates {
        /// The `offset` to ask `getUpdates` for next: the last handled `update_id` + 1.
        next_offset: i64,
        /// How many updates this batch held.
        updates: u32,
        /// When (the agent's clock).
        at: DateTime<Utc>,
    },
    /// Record a refused attempt.
    DenyAccess(AccessDenied),
}

/// Events of the bot's aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TelegramEvent {
    /// A batch of updates was handled; ask for `next_offset` next.
    TelegramUpdatesConsumed {
        /// The next `getUpdates` offset.
        next_offset: i64,
        /// How many updates the batch held.
        updates: u32,
        /// When.
        at: DateTime<Utc>,
    },
    /// An attempt was refused.
    TelegramAccessDenied(AccessDenied),
}

impl TelegramEvent {
    /// Every event type of this enum with its current version.
    pub const TYPES: &'static [(&'static str, u32)] =
        &[("TelegramUpdatesConsumed", 1), ("TelegramAccessDenied", 1)];
}

impl DomainEvent for TelegramEvent {
    fn event_type(&self) -> String {
        match self {
            Self::TelegramUpdatesConsumed { .. } => "TelegramUpdatesConsumed",
            Self::TelegramAccessDenied(_) => "TelegramAccessDenied",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why the bot's aggregate refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelegramError {
    /// An offset below 1 (Bot API update ids are positive).
    #[error("next_offset = {0}: must be at least 1")]
    InvalidOffset(i64),
}

/// The state: the offset to ask for next, and how many attempts were refused.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelegramBot {
    next_offset: Option<i64>,
    denied: u64,
}

impl TelegramBot {
    /// The `getUpdates` offset to ask for next, once a batch was handled.
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    /// How many attempts were refused in all.
    pub fn denied(&self) -> u64 {
        self.denied
    }

    /// Decides a command. Pure.
    ///
    /// # Errors
    /// [`TelegramError`] for an offset below 1.
    pub fn decide(&self, command: TelegramCommand) -> Result<Vec<TelegramEvent>, TelegramError> {
        match command {
            TelegramCommand::ConsumeUpdates {
                next_offset,
                updates,
                at,
            } => {
                if next_offset < 1 {
                    return Err(TelegramError::InvalidOffset(next_offset));
                }
                if self.next_offset.is_some_and(|o| next_offset <= o) {
                    return Ok(vec![]);
                }
                Ok(vec![TelegramEvent::TelegramUpdatesConsumed {
                    next_offset,
                    updates,
                    at,
                }])
            }
            TelegramCommand::DenyAccess(denied) => {
                Ok(vec![TelegramEvent::TelegramAccessDenied(denied)])
            }
        }
    }
}

impl Aggregate for TelegramBot {
    const TYPE: &'static str = "TelegramBot";
    type Command = TelegramCommand;
    type Event = TelegramEvent;
    type Error = TelegramError;
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
        match event {
            TelegramEvent::TelegramUpdatesConsumed { next_offset, .. } => {
                self.next_offset =
                    Some(self.next_offset.map_or(next_offset, |o| o.max(next_offset)));
            }
            TelegramEvent::TelegramAccessDenied(_) => self.denied += 1,
        }
    }
}

impl JarvisAggregate for TelegramBot {
    const CONTEXT: &'static str = "telegram";
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<TelegramBot>;

    fn at() -> DateTime<Utc> {
        "2026-11-21T08:00:00Z".parse().unwrap()
    }

    fn consumed(next_offset: i64) -> TelegramEvent {
        TelegramEvent::TelegramUpdatesConsumed {
            next_offset,
            updates: 1,
            at: at(),
        }
    }

    #[test]
    fn the_offset_only_moves_forward() {
        let consume = |next_offset| TelegramCommand::ConsumeUpdates {
            next_offset,
            updates: 1,
            at: at(),
        };
        Given::with(())
            .given_no_previous_events()
            .when(consume(5))
            .then_expect_events(vec![consumed(5)]);
        Given::with(())
            .given(vec![consumed(5)])
            .when(consume(5))
            .then_expect_events(vec![]);
        Given::with(())
            .given(vec![consumed(5)])
            .when(consume(3))
            .then_expect_events(vec![]);
        Given::with(())
            .given_no_previous_events()
            .when(consume(0))
            .then_expect_error_message("next_offset = 0: must be at least 1");
    }

    #[test]
    fn denials_are_recorded_and_survive_serde() {
        let denied = AccessDenied {
            chat_id: 9,
            user_id: 9,
            username: Some("mallory".into()),
            message_id: Some(3),
            attempted: "/buy".into(),
            reason: DenialReason::NotAllowlisted,
            at: at(),
        };
        Given::with(())
            .given_no_previous_events()
            .when(TelegramCommand::DenyAccess(denied.clone()))
            .then_expect_events(vec![TelegramEvent::TelegramAccessDenied(denied.clone())]);
        let mut bot = TelegramBot::default();
        bot.apply(TelegramEvent::TelegramAccessDenied(denied.clone()));
        bot.apply(consumed(7));
        assert_eq!((bot.denied(), bot.next_offset()), (1, Some(7)));
        let e = TelegramEvent::TelegramAccessDenied(denied);
        let back: TelegramEvent =
            serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        assert_eq!(DenialReason::RateLimited.as_str(), "rate_limited");
        let json = serde_json::to_string(&DenialReason::InsufficientRole).unwrap();
        assert_eq!(json, "\"insufficient_role\"");
    }
}
