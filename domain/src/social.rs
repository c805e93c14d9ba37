//! The `social` context: posts read from social networks, the input of the sentiment agent.
//!
//! `XFeed` holds the tweets the X agent received on one UTC day (id `YYYY-MM-DD`, the day of the tweet's
//! `created_at`): one aggregate per day keeps each small, since cqrs-es reloads an aggregate's events on every
//! command. Receiving a tweet is idempotent: the same tweet again is a no-op; a tweet id already recorded with
//! a different text or author is refused, naming both (X never edits a tweet in place: an edit is a new id).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::JarvisAggregate;

/// Longest text accepted, in bytes. The longest X post is 25,000 characters (at most 100,000 bytes of UTF-8);
/// anything longer is not a tweet, and an event must stay well under the bus's 1 MiB message limit.
pub const MAX_TEXT_BYTES: usize = 100_000;

/// A tweet as the X API v2 returns it (the fields Jarvis uses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Tweet {
    /// The tweet's id (decimal digits, as X gives it: a string, since it exceeds 2^53).
    pub tweet_id: String,
    /// The author's user id.
    pub author_id: String,
    /// The author's handle, without `@`.
    pub author_username: String,
    /// The text, as X returned it.
    pub text: String,
    /// When the tweet was posted (X's `created_at`): the event time of everything derived from it.
    pub created_at: DateTime<Utc>,
    /// X's language guess (`en`, `und`, ...), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
}

impl Tweet {
    /// Checks the shape: a numeric id, an author, a non-empty text of at most [`MAX_TEXT_BYTES`].
    ///
    /// # Errors
    /// [`SocialError::Invalid`] naming the field and the tweet.
    pub fn validate(&self) -> Result<(), SocialError> {
        let invalid = |why: String| SocialError::Invalid {
            tweet_id: self.tweet_id.clone(),
            why,
        };
        if self.tweet_id.is_empty() || !self.tweet_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(format!(
                "tweet_id {:?} is not decimal digits",
                self.tweet_id
            )));
        }
        if self.author_id.is_empty() {
            return Err(invalid("author_id is empty".into()));
        }
        if self.text.trim().is_empty() {
            return Err(invalid("text is empty".into()));
        }
        if self.text.len() > MAX_TEXT_BYTES {
            return Err(invalid(format!(
                "text of {} bytes exceeds {MAX_TEXT_BYTES}",
                self.text.len()
            )));
        }
        Ok(())
    }

    /// The id of the feed this tweet belongs to: the UTC day of its `created_at`, `YYYY-MM-DD`.
    pub fn feed_id(&self) -> String {
        feed_id(self.created_at.date_naive())
    }
}

/// The id of the X feed of a UTC day: `YYYY-MM-DD`.
pub fn feed_id(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// Commands an X feed accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum XFeedCommand {
    /// Record a tweet the X agent read.
    Receive(Tweet),
}

/// Events of an X feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum XFeedEvent {
    /// A tweet was read from X: once per tweet id.
    TweetReceived(Tweet),
}

impl XFeedEvent {
    /// Every event type of this enum with its current version.
    pub const TYPES: &'static [(&'static str, u32)] = &[("TweetReceived", 1)];
}

impl DomainEvent for XFeedEvent {
    fn event_type(&self) -> String {
        match self {
            Self::TweetReceived(_) => "TweetReceived".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why an X feed refused a tweet. Nothing is recorded when a command is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SocialError {
    /// The tweet is malformed.
    #[error("tweet {tweet_id}: {why}")]
    Invalid {
        /// The tweet's id as given.
        tweet_id: String,
        /// What is wrong.
        why: String,
    },
    /// The tweet belongs to another day's feed.
    #[error("tweet {tweet_id} posted {created_at} does not belong to the feed of {day}")]
    WrongDay {
        /// The tweet's id.
        tweet_id: String,
        /// Its time.
        created_at: DateTime<Utc>,
        /// The feed's day.
        day: String,
    },
    /// The tweet id is recorded with other content.
    #[error("tweet {tweet_id} is recorded with text {recorded:?} by {recorded_author}; offered {offered:?} by {offered_author}")]
    Conflicting {
        /// The tweet's id.
        tweet_id: String,
        /// The recorded text.
        recorded: String,
        /// The recorded author id.
        recorded_author: String,
        /// The offered text.
        offered: String,
        /// The offered author id.
        offered_author: String,
    },
}

/// The state of one day's feed: the tweets recorded, by id.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct XFeed {
    tweets: BTreeMap<String, Tweet>,
}

impl XFeed {
    /// The tweet recorded under `tweet_id`.
    pub fn tweet(&self, tweet_id: &str) -> Option<&Tweet> {
        self.tweets.get(tweet_id)
    }

    /// How many tweets the feed holds.
    pub fn len(&self) -> usize {
        self.tweets.len()
    }

    /// Whether the feed holds no tweet.
    pub fn is_empty(&self) -> bool {
        self.tweets.is_empty()
    }

    /// Decides whether `tweet` is new. Pure.
    ///
    /// # Errors
    /// [`SocialError`] for a malformed tweet, one of another day, or a conflicting one.
    pub fn decide(&self, tweet: Tweet) -> Result<Vec<XFeedEvent>, SocialError> {
        tweet.validate()?;
        if let Some(day) = self.tweets.values().next().map(Tweet::feed_id) {
            if tweet.feed_id() != day {
                return Err(SocialError::WrongDay {
                    tweet_id: tweet.tweet_id,
                    created_at: tweet.created_at,
                    day,
                });
            }
        }
        match self.tweets.get(&tweet.tweet_id) {
            Some(recorded) if *recorded == tweet => Ok(vec![]),
            Some(recorded) => Err(SocialError::Conflicting {
                tweet_id: tweet.tweet_id.clone(),
                recorded: recorded.text.clone(),
                recorded_author: recorded.author_id.clone(),
                offered: tweet.text,
                offered_author: tweet.author_id,
            }),
            None => Ok(vec![XFeedEvent::TweetReceived(tweet)]),
        }
    }
}

impl Aggregate for XFeed {
    const TYPE: &'static str = "XFeed";
    type Command = XFeedCommand;
    type Event = XFeedEvent;
    type Error = SocialError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let XFeedCommand::Receive(tweet) = command;
        for event in self.decide(tweet)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let XFeedEvent::TweetReceived(tweet) = event;
        self.tweets.insert(tweet.tweet_id.clone(), tweet);
    }
}

impl JarvisAggregate for XFeed {
    const CONTEXT: &'static str = "social";
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<XFeed>;

    pub(crate) fn tweet(id: &str, text: &str) -> Tweet {
        Tweet {
            tweet_id: id.into(),
            author_id: "42".into(),
            author_username: "trader".into(),
            text: text.into(),
            created_at: "2024-03-01T12:00:00Z".parse().unwrap(),
            lang: Some("en".into()),
        }
    }

    #[test]
    fn a_new_tweet_is_received() {
        Given::with(())
            .given_no_previous_events()
            .when(XFeedCommand::Receive(tweet("1", "$SOL to the moon")))
            .then_expect_events(vec![XFeedEvent::TweetReceived(tweet(
                "1",
                "$SOL to the moon",
            ))]);
    }

    #[test]
    fn the_same_tweet_again_is_a_no_op() {
        Given::with(())
            .given(vec![XFeedEvent::TweetReceived(tweet("1", "gm"))])
            .when(XFeedCommand::Receive(tweet("1", "gm")))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_tweet_id_with_other_text_is_refused_naming_both() {
        let err = Given::with(())
            .given(vec![XFeedEvent::TweetReceived(tweet("1", "gm"))])
            .when(XFeedCommand::Receive(tweet("1", "gn")))
            .inspect_result()
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"gm\"") && text.contains("\"gn\""), "{text}");
    }

    #[test]
    fn empty_huge_and_malformed_tweets_are_refused() {
        let refuse = |t: Tweet| {
            Given::with(())
                .given_no_previous_events()
                .when(XFeedCommand::Receive(t))
                .inspect_result()
                .unwrap_err()
                .to_string()
        };
        assert!(refuse(tweet("1", "  ")).contains("text is empty"));
        let huge = refuse(tweet("1", &"a".repeat(1 << 20)));
        assert!(huge.contains("1048576 bytes exceeds 100000"), "{huge}");
        assert!(refuse(tweet("x1", "hi")).contains("tweet_id \"x1\""));
    }

    #[test]
    fn a_tweet_of_another_day_is_refused() {
        let mut late = tweet("2", "hello");
        late.created_at = "2024-03-02T00:00:00Z".parse().unwrap();
        let err = Given::with(())
            .given(vec![XFeedEvent::TweetReceived(tweet("1", "gm"))])
            .when(XFeedCommand::Receive(late))
            .inspect_result()
            .unwrap_err();
        assert!(matches!(err, SocialError::WrongDay { .. }), "{err}");
        assert_eq!(tweet("1", "gm").feed_id(), "2024-03-01");
    }

    #[test]
    fn serde_round_trip_keeps_the_wire_names() {
        let e = XFeedEvent::TweetReceived(tweet("1", "gm"));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["TweetReceived"]["author_username"], "trader");
        assert_eq!(serde_json::from_value::<XFeedEvent>(json).unwrap(), e);
    }
}
