//! The memory agent proper: a consumer that turns conversation events into `MemoryStored` events.
//!
//! [`memory_of`] says what an event is worth remembering, for whom, and how far to trust it; it is the one
//! place to extend when a new kind of event should become memory (e.g. LLM answers: add an arm for
//! `AnyEvent::Llm(LlmEvent::LlmCallCompleted{..})` and its subject to [`SOURCES`]).
//!
//! Each memory is caused by its source event and its id is derived from that event's id, so a redelivered
//! event stores nothing new, and a memory forgotten meanwhile stays forgotten.

use chrono::{DateTime, Utc};
use jarvis_bus::{Envelope, Handler, HandlerError};
use jarvis_domain::chat::{Conversation, ConversationEvent, Trust};
use jarvis_domain::memory::{
    memory_id_for, user_memory_id, StoredMemory, UserMemory, UserMemoryCommand, MAX_MEMORY_BYTES,
};
use jarvis_domain::AnyEvent;
use jarvis_store::{execute_with_retry, EventStore};

use crate::runtime::{handler_error, SNAPSHOT_EVERY};

/// The durable consumers of the agent and their subjects: one consumer per subject, since nats-server 2.9
/// has no multi-filter consumers.
pub const SOURCES: &[(&str, &str)] = &[("memory-chat", "jarvis.evt.chat.>")];

/// Retries after conflicts with another writer.
const RETRIES: u32 = 5;

/// Who a memory is about, and how far it is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    /// A user said it, with the trust the receiving agent gave them.
    User {
        /// The user.
        user_id: i64,
        /// Their trust.
        trust: Trust,
    },
    /// Jarvis said it in a chat: it belongs to the user it answered, and is trusted no more than them
    /// (an answer to a public user may repeat what they injected). Resolved from the conversation.
    JarvisInChat {
        /// The chat.
        chat_id: i64,
        /// The message it answered, if any.
        reply_to: Option<i64>,
    },
}

/// What an event is worth remembering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMemory {
    /// Whose memory, and its trust.
    pub author: Author,
    /// The text (trimmed; cut to [`MAX_MEMORY_BYTES`] when stored).
    pub text: String,
    /// The source's event time.
    pub at: DateTime<Utc>,
}

/// What `event` is worth remembering, if anything: chat messages and Jarvis's replies with text.
pub fn memory_of(event: &AnyEvent) -> Option<NewMemory> {
    let memory = match event {
        AnyEvent::Chat(ConversationEvent::ChatMessageReceived(m)) => NewMemory {
            author: Author::User {
                user_id: m.user_id,
                trust: m.trust,
            },
            text: m.text.trim().to_string(),
            at: m.received_at,
        },
        AnyEvent::Chat(ConversationEvent::ChatReplySent(r)) => NewMemory {
            author: Author::JarvisInChat {
                chat_id: r.chat_id,
                reply_to: r.reply_to,
            },
            text: r.text.trim().to_string(),
            at: r.sent_at,
        },
        _ => return None,
    };
    (!memory.text.is_empty()).then_some(memory)
}

/// `text` cut at a character boundary to at most `max` bytes.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The memory agent, as a consumer of [`SOURCES`].
#[derive(Debug, Clone)]
pub struct MemoryAgent {
    store: EventStore,
}

impl MemoryAgent {
    /// An agent writing to `store`.
    pub fn new(store: EventStore) -> Self {
        Self { store }
    }

    /// The user and trust of a memory: Jarvis's words in a chat belong to the author of the message they
    /// answer, or in a private chat (whose id is the user's), to that user. `None` when nobody can be named.
    async fn resolve(
        &self,
        envelope: &Envelope,
        author: Author,
    ) -> Result<Option<(i64, Trust)>, HandlerError> {
        let (chat_id, reply_to) = match author {
            Author::User { user_id, trust } => return Ok(Some((user_id, trust))),
            Author::JarvisInChat { chat_id, reply_to } => (chat_id, reply_to),
        };
        let conversation: Conversation = self
            .store
            .load(&envelope.subject, Some(SNAPSHOT_EVERY))
            .await
            .map_err(handler_error)?;
        if let Some(m) = reply_to.and_then(|id| conversation.message(id)) {
            return Ok(Some((m.user_id, m.trust)));
        }
        Ok((chat_id > 0).then(|| {
            let trust = conversation.trust_of(chat_id).unwrap_or(Trust::Public);
            (chat_id, trust)
        }))
    }
}

impl Handler for MemoryAgent {
    async fn handle(&self, envelope: &Envelope, event: AnyEvent) -> Result<(), HandlerError> {
        let Some(memory) = memory_of(&event) else {
            return Ok(());
        };
        let Some((user_id, trust)) = self.resolve(envelope, memory.author).await? else {
            tracing::debug!(event_id = %envelope.id, "no user to remember this for");
            return Ok(());
        };
        let command = UserMemoryCommand::Store(StoredMemory {
            memory_id: memory_id_for(envelope.id),
            user_id,
            text: truncate(memory.text, MAX_MEMORY_BYTES),
            source_event: envelope.id,
            source_type: event.event_type(),
            trust,
            at: memory.at,
        });
        let cqrs = self.store.snapshot_cqrs::<UserMemory>(SNAPSHOT_EVERY, ());
        execute_with_retry(
            &cqrs,
            &user_memory_id(user_id),
            command,
            &envelope.caused("memory"),
            RETRIES,
        )
        .await
        .map(|_| ())
        .map_err(handler_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jarvis_domain::chat::{ReceivedMessage, SentReply};

    fn at() -> DateTime<Utc> {
        "2026-11-21T08:00:00Z".parse().unwrap()
    }

    #[test]
    fn chat_messages_and_replies_become_memories() {
        let m = AnyEvent::Chat(ConversationEvent::ChatMessageReceived(ReceivedMessage {
            chat_id: 1,
            message_id: 2,
            user_id: 3,
            username: None,
            text: "  I hold SOL  ".into(),
            trust: Trust::Allowlisted,
            received_at: at(),
        }));
        assert_eq!(
            memory_of(&m),
            Some(NewMemory {
                author: Author::User {
                    user_id: 3,
                    trust: Trust::Allowlisted
                },
                text: "I hold SOL".into(),
                at: at(),
            })
        );
        let r = AnyEvent::Chat(ConversationEvent::ChatReplySent(SentReply {
            chat_id: 1,
            reply_to: Some(2),
            text: "Noted".into(),
            sent_at: at(),
        }));
        assert!(matches!(
            memory_of(&r).unwrap().author,
            Author::JarvisInChat {
                chat_id: 1,
                reply_to: Some(2)
            }
        ));
    }

    #[test]
    fn empty_texts_and_other_events_are_not_remembered() {
        let empty = AnyEvent::Chat(ConversationEvent::ChatReplySent(SentReply {
            chat_id: 1,
            reply_to: None,
            text: " \n ".into(),
            sent_at: at(),
        }));
        assert_eq!(memory_of(&empty), None);
        let other = AnyEvent::Risk(jarvis_domain::trading::RiskEvent::TradingResumed {
            reason: "x".into(),
            at: at(),
            drawdown_base: None,
        });
        assert_eq!(memory_of(&other), None);
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("héllo".into(), 3), "hé");
        assert_eq!(truncate("abc".into(), 10), "abc");
    }
}
