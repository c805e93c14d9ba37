//! The `UserMemory` aggregate (context `memory`): what Jarvis remembers of one user, id `user:<user id>`.
//!
//! A memory is a text with its provenance: the event it was taken from (`source_event`, `source_type`) and
//! the [`Trust`] of whoever said it. Each memory id is derived from its source event ([`memory_id_for`]), so a
//! redelivered source stores nothing new. Forgetting (one memory, or all of a user's) is an event too;
//! a forgotten memory stays forgotten: storing it again is a no-op, and a read model rebuilt from the
//! events drops it again.
//!
//! The state keeps the ids (not the texts) of live and forgotten memories; the texts live in the events
//! and the memory read model.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::chat::Trust;
use crate::event::JarvisAggregate;

/// Largest text of one memory, in bytes of UTF-8.
pub const MAX_MEMORY_BYTES: usize = 64 * 1024;

/// Namespace of memory ids (a fixed UUID).
const MEMORY_NAMESPACE: Uuid = Uuid::from_u128(0x6a61_7276_6973_4d65_6d6f_7279_4964_0001);

/// The memory taken from `source_event`: the same source always gives the same id.
pub fn memory_id_for(source_event: Uuid) -> Uuid {
    Uuid::new_v5(&MEMORY_NAMESPACE, source_event.as_bytes())
}

/// The aggregate id of a user's memory: `user:<user_id>`.
pub fn user_memory_id(user_id: i64) -> String {
    format!("user:{user_id}")
}

/// One memory as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoredMemory {
    /// Its id ([`memory_id_for`] the source event).
    pub memory_id: Uuid,
    /// Whose memory it is.
    pub user_id: i64,
    /// What to remember, not blank, at most [`MAX_MEMORY_BYTES`].
    pub text: String,
    /// The event it was taken from.
    pub source_event: Uuid,
    /// That event's type, e.g. `ChatMessageReceived`.
    pub source_type: String,
    /// How far its author is trusted.
    pub trust: Trust,
    /// The source's event time.
    pub at: DateTime<Utc>,
}

/// Commands a user's memory accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum UserMemoryCommand {
    /// Remember something (a no-op when that memory is already stored, or was forgotten).
    Store(StoredMemory),
    /// Forget one memory, or every memory stored so far.
    Forget {
        /// Whose.
        user_id: i64,
        /// The memory; `None` = all of them.
        memory_id: Option<Uuid>,
        /// Why, not blank.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
}

/// Events of a user's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum UserMemoryEvent {
    /// A memory was stored.
    MemoryStored(StoredMemory),
    /// One memory, or every memory stored before this event, was forgotten.
    MemoryForgotten {
        /// Whose.
        user_id: i64,
        /// The memory; `None` = every memory of the user stored before this event.
        memory_id: Option<Uuid>,
        /// Why.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl UserMemoryEvent {
    /// Every event type of this enum with its current version.
    pub const TYPES: &'static [(&'static str, u32)] =
        &[("MemoryStored", 1), ("MemoryForgotten", 1)];
}

impl DomainEvent for UserMemoryEvent {
    fn event_type(&self) -> String {
        match self {
            Self::MemoryStored(_) => "MemoryStored",
            Self::MemoryForgotten { .. } => "MemoryForgotten",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a user's memory refused a command. Nothing is recorded when a command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// A blank text or reason.
    #[error("{field} must not be blank")]
    Blank {
        /// The field.
        field: &'static str,
    },
    /// A text longer than [`MAX_MEMORY_BYTES`].
    #[error("text is {bytes} bytes; at most {MAX_MEMORY_BYTES} are accepted")]
    TooLong {
        /// Its size.
        bytes: usize,
    },
    /// The command is for another user than this aggregate's.
    #[error("command for user {offered} sent to the memory of user {user_id}")]
    WrongUser {
        /// This aggregate's user.
        user_id: i64,
        /// The command's user.
        offered: i64,
    },
    /// No memory was ever stored for this user.
    #[error("unknown user {user_id}: no memory was ever stored for them")]
    UnknownUser {
        /// The user.
        user_id: i64,
    },
    /// This user has no memory with this id.
    #[error("user {user_id} has no memory {memory_id}")]
    UnknownMemory {
        /// The user.
        user_id: i64,
        /// The id asked for.
        memory_id: Uuid,
    },
    /// The memory id is already stored from another source event.
    #[error("memory {memory_id} is already stored from event {recorded}, not {offered}")]
    ConflictingMemory {
        /// The memory.
        memory_id: Uuid,
        /// The source recorded.
        recorded: Uuid,
        /// The source offered.
        offered: Uuid,
    },
}

/// The state of a user's memory: live memory ids (with their source event) and forgotten ones.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserMemory {
    user_id: Option<i64>,
    live: BTreeMap<Uuid, Uuid>,
    forgotten: BTreeSet<Uuid>,
}

impl UserMemory {
    /// How many memories are live (stored and not forgotten).
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Whether the memory was forgotten.
    pub fn is_forgotten(&self, memory_id: &Uuid) -> bool {
        self.forgotten.contains(memory_id)
    }

    /// Whether anything was ever stored for this user.
    pub fn is_known(&self) -> bool {
        self.user_id.is_some()
    }

    fn check_user(&self, offered: i64) -> Result<(), MemoryError> {
        match self.user_id {
            Some(user_id) if user_id != offered => Err(MemoryError::WrongUser { user_id, offered }),
            _ => Ok(()),
        }
    }

    /// Decides a command. Pure: returns the events, or the refusal.
    ///
    /// # Errors
    /// [`MemoryError`] for a blank or too long text, a blank reason, another user, an unknown user or
    /// memory, or a memory id already stored from another source.
    pub fn decide(&self, command: UserMemoryCommand) -> Result<Vec<UserMemoryEvent>, MemoryError> {
        match command {
            UserMemoryCommand::Store(m) => {
                self.check_user(m.user_id)?;
                if m.text.trim().is_empty() {
                    return Err(MemoryError::Blank { field: "text" });
                }
                if m.text.len() > MAX_MEMORY_BYTES {
                    return Err(MemoryError::TooLong {
                        bytes: m.text.len(),
                    });
                }
                if self.forgotten.contains(&m.memory_id) {
                    return Ok(vec![]);
                }
                match self.live.get(&m.memory_id) {
                    Some(source) if *source == m.source_event => Ok(vec![]),
                    Some(source) => Err(MemoryError::ConflictingMemory {
                        memory_id: m.memory_id,
                        recorded: *source,
                        offered: m.source_event,
                    }),
                    None => Ok(vec![UserMemoryEvent::MemoryStored(m)]),
                }
            }
            UserMemoryCommand::Forget {
                user_id,
                memory_id,
                reason,
                at,
            } => {
                self.check_user(user_id)?;
                if reason.trim().is_empty() {
                    return Err(MemoryError::Blank { field: "reason" });
                }
                if self.user_id.is_none() {
                    return Err(MemoryError::UnknownUser { user_id });
                }
                let changes = match memory_id {
                    Some(id) if self.live.contains_key(&id) => true,
                    Some(id) if self.forgotten.contains(&id) => false,
                    Some(memory_id) => {
                        return Err(MemoryError::UnknownMemory { user_id, memory_id })
                    }
                    None => !self.live.is_empty(),
                };
                Ok(if changes {
                    vec![UserMemoryEvent::MemoryForgotten {
                        user_id,
                        memory_id,
                        reason,
                        at,
                    }]
                } else {
                    vec![]
                })
            }
        }
    }
}

impl Aggregate for UserMemory {
    const TYPE: &'static str = "UserMemory";
    type Command = UserMemoryCommand;
    type Event = UserMemoryEvent;
    type Error = MemoryError;
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
            UserMemoryEvent::MemoryStored(m) => {
                self.user_id = Some(m.user_id);
                self.live.insert(m.memory_id, m.source_event);
            }
            UserMemoryEvent::MemoryForgotten {
                user_id, memory_id, ..
            } => {
                self.user_id = Some(user_id);
                match memory_id {
                    Some(id) => {
                        self.live.remove(&id);
                        self.forgotten.insert(id);
                    }
                    None => {
                        let all = std::mem::take(&mut self.live);
                        self.forgotten.extend(all.into_keys());
                    }
                }
            }
        }
    }
}

impl JarvisAggregate for UserMemory {
    const CONTEXT: &'static str = "memory";
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<UserMemory>;

    fn at() -> DateTime<Utc> {
        "2026-11-21T08:00:00Z".parse().unwrap()
    }

    fn memory(source: u128, text: &str) -> StoredMemory {
        let source_event = Uuid::from_u128(source);
        StoredMemory {
            memory_id: memory_id_for(source_event),
            user_id: 7,
            text: text.into(),
            source_event,
            source_type: "ChatMessageReceived".into(),
            trust: Trust::Owner,
            at: at(),
        }
    }

    fn stored(source: u128, text: &str) -> UserMemoryEvent {
        UserMemoryEvent::MemoryStored(memory(source, text))
    }

    fn forget(memory_id: Option<Uuid>) -> UserMemoryCommand {
        UserMemoryCommand::Forget {
            user_id: 7,
            memory_id,
            reason: "asked to".into(),
            at: at(),
        }
    }

    fn forgotten(memory_id: Option<Uuid>) -> UserMemoryEvent {
        UserMemoryEvent::MemoryForgotten {
            user_id: 7,
            memory_id,
            reason: "asked to".into(),
            at: at(),
        }
    }

    #[test]
    fn a_memory_is_stored_once() {
        Given::with(())
            .given_no_previous_events()
            .when(UserMemoryCommand::Store(memory(1, "likes SOL")))
            .then_expect_events(vec![stored(1, "likes SOL")]);
        Given::with(())
            .given(vec![stored(1, "likes SOL")])
            .when(UserMemoryCommand::Store(memory(1, "likes SOL")))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_forgotten_memory_stays_forgotten() {
        let id = memory(1, "x").memory_id;
        Given::with(())
            .given(vec![stored(1, "likes SOL")])
            .when(forget(Some(id)))
            .then_expect_events(vec![forgotten(Some(id))]);
        Given::with(())
            .given(vec![stored(1, "likes SOL"), forgotten(Some(id))])
            .when(UserMemoryCommand::Store(memory(1, "likes SOL")))
            .then_expect_events(vec![]);
        Given::with(())
            .given(vec![stored(1, "likes SOL"), forgotten(Some(id))])
            .when(forget(Some(id)))
            .then_expect_events(vec![]);
    }

    #[test]
    fn forgetting_all_covers_what_was_stored_before() {
        Given::with(())
            .given(vec![stored(1, "a"), stored(2, "b")])
            .when(forget(None))
            .then_expect_events(vec![forgotten(None)]);
        Given::with(())
            .given(vec![stored(1, "a"), stored(2, "b"), forgotten(None)])
            .when(UserMemoryCommand::Store(memory(2, "b")))
            .then_expect_events(vec![]);
        Given::with(())
            .given(vec![stored(1, "a"), forgotten(None)])
            .when(UserMemoryCommand::Store(memory(3, "c")))
            .then_expect_events(vec![stored(3, "c")]);
        Given::with(())
            .given(vec![stored(1, "a"), forgotten(None)])
            .when(forget(None))
            .then_expect_events(vec![]);
    }

    #[test]
    fn bad_commands_are_refused_with_their_reason() {
        Given::with(())
            .given_no_previous_events()
            .when(UserMemoryCommand::Store(memory(1, "  ")))
            .then_expect_error_message("text must not be blank");
        Given::with(())
            .given_no_previous_events()
            .when(UserMemoryCommand::Store(memory(1, &"x".repeat(1_000_000))))
            .then_expect_error_message("text is 1000000 bytes; at most 65536 are accepted");
        Given::with(())
            .given_no_previous_events()
            .when(forget(None))
            .then_expect_error_message("unknown user 7: no memory was ever stored for them");
        let unknown = Uuid::from_u128(99);
        Given::with(())
            .given(vec![stored(1, "a")])
            .when(forget(Some(unknown)))
            .then_expect_error_message(&format!("user 7 has no memory {unknown}"));
        let mut other = memory(2, "b");
        other.user_id = 8;
        Given::with(())
            .given(vec![stored(1, "a")])
            .when(UserMemoryCommand::Store(other))
            .then_expect_error_message("command for user 8 sent to the memory of user 7");
        let mut conflicting = memory(1, "a");
        conflicting.source_event = Uuid::from_u128(5);
        let result = Given::with(())
            .given(vec![stored(1, "a")])
            .when(UserMemoryCommand::Store(conflicting))
            .inspect_result();
        assert!(matches!(result, Err(MemoryError::ConflictingMemory { .. })));
    }

    #[test]
    fn every_event_and_command_survives_serde() {
        for e in [
            stored(1, "a"),
            forgotten(None),
            forgotten(Some(Uuid::from_u128(3))),
        ] {
            let back: UserMemoryEvent =
                serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
            assert_eq!(back, e);
        }
        for c in [forget(None), UserMemoryCommand::Store(memory(1, "a"))] {
            let back: UserMemoryCommand =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back, c);
        }
        let mut state = UserMemory::default();
        state.apply(stored(1, "a"));
        state.apply(forgotten(None));
        let back: UserMemory =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn state_counts_live_and_forgotten() {
        let mut m = UserMemory::default();
        assert!(!m.is_known());
        m.apply(stored(1, "a"));
        m.apply(stored(2, "b"));
        let id = memory(1, "a").memory_id;
        m.apply(forgotten(Some(id)));
        assert_eq!(m.live(), 1);
        assert!(m.is_forgotten(&id) && m.is_known());
        assert_eq!(user_memory_id(7), "user:7");
        assert_ne!(
            memory_id_for(Uuid::from_u128(1)),
            memory_id_for(Uuid::from_u128(2))
        );
    }
}
