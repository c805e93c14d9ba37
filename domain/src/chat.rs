//! The `Conversation` aggregate (context `chat`): the messages Jarvis received in one chat and the replies it
//! sent there, one aggregate per chat, id `<channel>:<chat id>` (e.g. `telegram:123456`).
//!
//! The agent that receives a message (Telegram) records it before doing anything else, with the sender's
//! [`Trust`] as that agent decided it from its allowlist. Recording is idempotent on the message id: the same
//! message again (a redelivered update) is a no-op, and a different message under a recorded id is refused.
//! The aggregate remembers the last [`RECENT`] messages and replies, which is what redeliveries and the
//! memory agent (who asked what a reply answers) need; messages older than that window are taken as
//! recorded, since a chat's message ids only grow.

use std::collections::VecDeque;
use std::fmt;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::JarvisAggregate;

/// Largest text of a chat message or reply, in bytes of UTF-8. Telegram's own limit is 4,096 characters
/// (at most 16 KiB); the rest is room for other channels.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// How many recent messages (and replies) a conversation remembers to recognise a redelivery.
pub const RECENT: usize = 64;

/// How far Jarvis trusts what someone says: decides what their words may move.
///
/// Ordered from least to most trusted, so `trust >= Trust::Allowlisted` reads as "trusted".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// Anyone else: their words are kept and answered, never acted on.
    Public,
    /// A user on the operator's allowlist.
    Allowlisted,
    /// The owner.
    Owner,
}

impl Trust {
    /// Whether what this sender says may inform an action (a trade, a post): owner and allowlisted.
    pub fn is_trusted(self) -> bool {
        self >= Self::Allowlisted
    }

    /// `owner`, `allowlisted` or `public`, as in events and read models.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Allowlisted => "allowlisted",
            Self::Owner => "owner",
        }
    }
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Trust {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "public" => Ok(Self::Public),
            "allowlisted" => Ok(Self::Allowlisted),
            "owner" => Ok(Self::Owner),
            other => Err(format!(
                "trust {other:?}: expected owner, allowlisted or public"
            )),
        }
    }
}

/// The id of a conversation: `<channel>:<chat id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationId {
    /// The channel, e.g. `telegram`.
    pub channel: String,
    /// The chat's id on that channel (Telegram: negative for groups).
    pub chat_id: i64,
}

impl ConversationId {
    /// The conversation of a Telegram chat: `telegram:<chat_id>`.
    pub fn telegram(chat_id: i64) -> Self {
        Self {
            channel: "telegram".into(),
            chat_id,
        }
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.channel, self.chat_id)
    }
}

impl std::str::FromStr for ConversationId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (channel, chat) = s
            .split_once(':')
            .ok_or_else(|| format!("conversation id {s:?} is not <channel>:<chat id>"))?;
        if channel.is_empty() || !channel.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(format!(
                "conversation id {s:?}: channel must be lowercase letters"
            ));
        }
        let chat_id = chat
            .parse()
            .map_err(|e| format!("conversation id {s:?}: chat id {chat:?}: {e}"))?;
        Ok(Self {
            channel: channel.into(),
            chat_id,
        })
    }
}

/// A message as received: what [`ConversationCommand::Receive`] records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReceivedMessage {
    /// The chat.
    pub chat_id: i64,
    /// The message's id in the chat (grows within a chat).
    pub message_id: i64,
    /// The sender.
    pub user_id: i64,
    /// The sender's user name, if they have one.
    pub username: Option<String>,
    /// The text (may be empty, e.g. a photo without caption), at most [`MAX_TEXT_BYTES`].
    pub text: String,
    /// How far the receiving agent trusts the sender.
    pub trust: Trust,
    /// When the channel says it was sent (event time).
    pub received_at: DateTime<Utc>,
}

/// A reply as sent: what [`ConversationCommand::RecordReply`] records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SentReply {
    /// The chat.
    pub chat_id: i64,
    /// The message it answers; `None` for a message Jarvis sent by itself (an alert).
    pub reply_to: Option<i64>,
    /// The text sent, at most [`MAX_TEXT_BYTES`].
    pub text: String,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
}

/// Commands a conversation accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum ConversationCommand {
    /// Record a message received (a no-op when that message id is already recorded with the same content).
    Receive(ReceivedMessage),
    /// Record a reply sent (a no-op when the same reply is already recorded).
    RecordReply(SentReply),
}

/// Events of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConversationEvent {
    /// A message arrived, before anything was done about it.
    ChatMessageReceived(ReceivedMessage),
    /// Jarvis sent a message to the chat.
    ChatReplySent(SentReply),
}

impl ConversationEvent {
    /// Every event type of this enum with its current version.
    pub const TYPES: &'static [(&'static str, u32)] =
        &[("ChatMessageReceived", 1), ("ChatReplySent", 1)];
}

impl DomainEvent for ConversationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ChatMessageReceived(_) => "ChatMessageReceived",
            Self::ChatReplySent(_) => "ChatReplySent",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a conversation refused a command. Nothing is recorded when a command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// The text is longer than [`MAX_TEXT_BYTES`].
    #[error("{field} is {bytes} bytes; at most {MAX_TEXT_BYTES} are accepted")]
    TooLong {
        /// `text`.
        field: &'static str,
        /// Its size.
        bytes: usize,
    },
    /// The command names another chat than the conversation's.
    #[error("message for chat {offered} sent to the conversation of chat {chat_id}")]
    WrongChat {
        /// The conversation's chat.
        chat_id: i64,
        /// The command's chat.
        offered: i64,
    },
    /// A different message is already recorded under this message id.
    #[error("message {message_id} of chat {chat_id} is already recorded with other content (recorded {recorded}; offered {offered})")]
    ConflictingMessage {
        /// The chat.
        chat_id: i64,
        /// The message id.
        message_id: i64,
        /// What is recorded, summarised.
        recorded: String,
        /// What was offered, summarised.
        offered: String,
    },
}

/// The state of a conversation: its chat and its recent messages and replies.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    chat_id: Option<i64>,
    recent: VecDeque<ReceivedMessage>,
    /// The highest message id that left `recent`: anything at or below it counts as recorded.
    evicted_up_to: Option<i64>,
    replies: VecDeque<SentReply>,
    messages: u64,
}

fn summary(m: &ReceivedMessage) -> String {
    format!(
        "user {} at {} trust {}, {} bytes of text",
        m.user_id,
        m.received_at,
        m.trust,
        m.text.len()
    )
}

impl Conversation {
    /// The chat, once a message or reply is recorded.
    pub fn chat_id(&self) -> Option<i64> {
        self.chat_id
    }

    /// How many messages were received in all.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// A recent message by id, if still remembered.
    pub fn message(&self, message_id: i64) -> Option<&ReceivedMessage> {
        self.recent.iter().find(|m| m.message_id == message_id)
    }

    /// The trust of the latest remembered message of `user_id`.
    pub fn trust_of(&self, user_id: i64) -> Option<Trust> {
        self.recent
            .iter()
            .rev()
            .find(|m| m.user_id == user_id)
            .map(|m| m.trust)
    }

    fn check_chat(&self, offered: i64) -> Result<(), ChatError> {
        match self.chat_id {
            Some(chat_id) if chat_id != offered => Err(ChatError::WrongChat { chat_id, offered }),
            _ => Ok(()),
        }
    }

    fn check_text(text: &str) -> Result<(), ChatError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(ChatError::TooLong {
                field: "text",
                bytes: text.len(),
            });
        }
        Ok(())
    }

    /// Decides a command. Pure: returns the events, or the refusal.
    ///
    /// # Errors
    /// [`ChatError`] for a text that is too long, another chat, or a conflicting message.
    pub fn decide(
        &self,
        command: ConversationCommand,
    ) -> Result<Vec<ConversationEvent>, ChatError> {
        match command {
            ConversationCommand::Receive(m) => {
                self.check_chat(m.chat_id)?;
                Self::check_text(&m.text)?;
                if let Some(recorded) = self.message(m.message_id) {
                    if *recorded == m {
                        return Ok(vec![]);
                    }
                    return Err(ChatError::ConflictingMessage {
                        chat_id: m.chat_id,
                        message_id: m.message_id,
                        recorded: summary(recorded),
                        offered: summary(&m),
                    });
                }
                if self
                    .evicted_up_to
                    .is_some_and(|up_to| m.message_id <= up_to)
                {
                    return Ok(vec![]);
                }
                Ok(vec![ConversationEvent::ChatMessageReceived(m)])
            }
            ConversationCommand::RecordReply(r) => {
                self.check_chat(r.chat_id)?;
                Self::check_text(&r.text)?;
                if self.replies.contains(&r) {
                    return Ok(vec![]);
                }
                Ok(vec![ConversationEvent::ChatReplySent(r)])
            }
        }
    }
}

impl Aggregate for Conversation {
    const TYPE: &'static str = "Conversation";
    type Command = ConversationCommand;
    type Event = ConversationEvent;
    type Error = ChatError;
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
            ConversationEvent::ChatMessageReceived(m) => {
                self.chat_id = Some(m.chat_id);
                self.messages += 1;
                self.recent.push_back(m);
                if self.recent.len() > RECENT {
                    if let Some(old) = self.recent.pop_front() {
                        self.evicted_up_to = Some(
                            self.evicted_up_to
                                .map_or(old.message_id, |f| f.max(old.message_id)),
                        );
                    }
                }
            }
            ConversationEvent::ChatReplySent(r) => {
                self.chat_id = Some(r.chat_id);
                self.replies.push_back(r);
                if self.replies.len() > RECENT {
                    self.replies.pop_front();
                }
            }
        }
    }
}

impl JarvisAggregate for Conversation {
    const CONTEXT: &'static str = "chat";
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<Conversation>;

    fn at(minute: u32) -> DateTime<Utc> {
        format!("2026-11-21T08:{minute:02}:00Z").parse().unwrap()
    }

    fn message(id: i64, text: &str) -> ReceivedMessage {
        ReceivedMessage {
            chat_id: 42,
            message_id: id,
            user_id: 7,
            username: Some("alice".into()),
            text: text.into(),
            trust: Trust::Owner,
            received_at: at(id as u32 % 60),
        }
    }

    fn reply(to: Option<i64>, text: &str) -> SentReply {
        SentReply {
            chat_id: 42,
            reply_to: to,
            text: text.into(),
            sent_at: at(30),
        }
    }

    fn received(m: ReceivedMessage) -> ConversationEvent {
        ConversationEvent::ChatMessageReceived(m)
    }

    #[test]
    fn a_message_is_received() {
        Given::with(())
            .given_no_previous_events()
            .when(ConversationCommand::Receive(message(1, "hello")))
            .then_expect_events(vec![received(message(1, "hello"))]);
    }

    #[test]
    fn the_same_message_again_is_a_no_op() {
        Given::with(())
            .given(vec![received(message(1, "hello"))])
            .when(ConversationCommand::Receive(message(1, "hello")))
            .then_expect_events(vec![]);
    }

    #[test]
    fn another_message_under_a_recorded_id_is_refused() {
        let err = Given::with(())
            .given(vec![received(message(1, "hello"))])
            .when(ConversationCommand::Receive(message(1, "changed")))
            .inspect_result()
            .unwrap_err();
        assert!(
            matches!(err, ChatError::ConflictingMessage { message_id: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn messages_older_than_the_window_count_as_recorded() {
        let history: Vec<_> = (1..=RECENT as i64 + 1)
            .map(|i| received(message(i, "m")))
            .collect();
        Given::with(())
            .given(history.clone())
            .when(ConversationCommand::Receive(message(1, "m")))
            .then_expect_events(vec![]);
        let next = RECENT as i64 + 2;
        Given::with(())
            .given(history)
            .when(ConversationCommand::Receive(message(next, "new")))
            .then_expect_events(vec![received(message(next, "new"))]);
    }

    #[test]
    fn replies_are_recorded_once() {
        Given::with(())
            .given(vec![received(message(1, "hello"))])
            .when(ConversationCommand::RecordReply(reply(Some(1), "hi")))
            .then_expect_events(vec![ConversationEvent::ChatReplySent(reply(Some(1), "hi"))]);
        Given::with(())
            .given(vec![ConversationEvent::ChatReplySent(reply(None, "alert"))])
            .when(ConversationCommand::RecordReply(reply(None, "alert")))
            .then_expect_events(vec![]);
    }

    #[test]
    fn too_long_text_and_another_chat_are_refused() {
        let big = "x".repeat(1_000_000);
        Given::with(())
            .given_no_previous_events()
            .when(ConversationCommand::Receive(message(1, &big)))
            .then_expect_error_message("text is 1000000 bytes; at most 65536 are accepted");
        let mut other = message(2, "hi");
        other.chat_id = 43;
        Given::with(())
            .given(vec![received(message(1, "hello"))])
            .when(ConversationCommand::Receive(other))
            .then_expect_error_message("message for chat 43 sent to the conversation of chat 42");
    }

    #[test]
    fn trust_and_authors_are_remembered() {
        let mut c = Conversation::default();
        c.apply(received(message(1, "hello")));
        let mut public = message(2, "hey");
        public.user_id = 8;
        public.trust = Trust::Public;
        c.apply(received(public));
        assert_eq!(c.message(2).map(|m| m.user_id), Some(8));
        assert_eq!(c.trust_of(7), Some(Trust::Owner));
        assert_eq!(c.trust_of(8), Some(Trust::Public));
        assert!(Trust::Owner.is_trusted() && !Trust::Public.is_trusted());
    }

    #[test]
    fn every_event_and_command_survives_serde() {
        let events = vec![
            received(message(1, "hello")),
            ConversationEvent::ChatReplySent(reply(None, "alert")),
        ];
        for e in events {
            let back: ConversationEvent =
                serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
            assert_eq!(back, e);
        }
        let c = ConversationCommand::RecordReply(reply(Some(1), "hi"));
        let back: ConversationCommand =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let mut state = Conversation::default();
        state.apply(received(message(1, "hello")));
        let back: Conversation =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn ids_and_trust_parse() {
        let id = ConversationId::telegram(-100);
        assert_eq!(id.to_string(), "telegram:-100");
        assert_eq!("telegram:-100".parse::<ConversationId>().unwrap(), id);
        assert!("telegram".parse::<ConversationId>().is_err());
        assert!("telegram:x".parse::<ConversationId>().is_err());
        assert_eq!("allowlisted".parse::<Trust>().unwrap(), Trust::Allowlisted);
        assert!("root".parse::<Trust>().is_err());
        let json = serde_json::to_string(&Trust::Owner).unwrap();
        assert_eq!(json, "\"owner\"");
    }
}
