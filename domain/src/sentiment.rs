//! The `sentiment` context: what the sentiment agent concluded about a token from a text that mentions it.
//!
//! `TokenSentiment` holds the scores of one token on one UTC day (id `<TOKEN>@<YYYY-MM-DD>`, the day of the
//! source's event time), so each aggregate stays small. Every score names the event it was computed from
//! (`source_event`) and the model that computed it; scoring the same source with the same model again is a
//! no-op, which makes the agent idempotent under redelivery.
//!
//! The strategy reads it by event time: [`TokenSentiment::latest_at`] (the most recent score at or before a
//! time) and [`TokenSentiment::decayed_average`] (confidence-weighted, halving every `half_life`).

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::JarvisAggregate;

/// The class a text was put in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SentimentLabel {
    /// Expects the price to fall.
    Bearish,
    /// Expects the price to rise.
    Bullish,
    /// Neither.
    Neutral,
}

impl SentimentLabel {
    /// The three labels, in the order of the training data's codes (0 = bearish, 1 = bullish, 2 = neutral).
    pub const ALL: [Self; 3] = [Self::Bearish, Self::Bullish, Self::Neutral];

    /// The label's name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearish => "bearish",
            Self::Bullish => "bullish",
            Self::Neutral => "neutral",
        }
    }

    /// The training data's code: 0 = bearish, 1 = bullish, 2 = neutral.
    pub fn code(self) -> usize {
        self as usize
    }
}

impl fmt::Display for SentimentLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SentimentLabel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bearish" | "negative" => Ok(Self::Bearish),
            "bullish" | "positive" => Ok(Self::Bullish),
            "neutral" => Ok(Self::Neutral),
            other => Err(format!(
                "label {other:?} is not bearish, bullish or neutral"
            )),
        }
    }
}

/// One score of one token from one source event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SentimentScore {
    /// The token, e.g. `SOL` (upper case, as the token map names it).
    pub token: String,
    /// -1 (bearish) .. 1 (bullish).
    pub score: Decimal,
    /// The class.
    pub label: SentimentLabel,
    /// 0 .. 1: how sure the model is of the label.
    pub confidence: Decimal,
    /// The model that scored, e.g. `nblr-2024-1` or `llm:groq/llama-3.3-70b-versatile`.
    pub model: String,
    /// The event whose text was scored.
    pub source_event: Uuid,
    /// That event's type, e.g. `TweetReceived`.
    pub source_type: String,
    /// The source's event time (a tweet's `created_at`), never the wall clock.
    pub at: DateTime<Utc>,
}

impl SentimentScore {
    /// The id of the aggregate this score belongs to: `<TOKEN>@<YYYY-MM-DD>` of `at`.
    pub fn aggregate_id(&self) -> String {
        token_day_id(&self.token, self.at.date_naive())
    }

    /// Checks ranges and names.
    ///
    /// # Errors
    /// [`SentimentError::Invalid`] naming the field and value.
    pub fn validate(&self) -> Result<(), SentimentError> {
        let invalid = |why: String| SentimentError::Invalid {
            source_event: self.source_event,
            why,
        };
        check_token(&self.token).map_err(invalid)?;
        if self.score < -Decimal::ONE || self.score > Decimal::ONE {
            return Err(invalid(format!("score {} is outside -1..1", self.score)));
        }
        if self.confidence < Decimal::ZERO || self.confidence > Decimal::ONE {
            return Err(invalid(format!(
                "confidence {} is outside 0..1",
                self.confidence
            )));
        }
        if self.model.trim().is_empty() {
            return Err(invalid("model is empty".into()));
        }
        if self.source_type.trim().is_empty() {
            return Err(invalid("source_type is empty".into()));
        }
        Ok(())
    }
}

/// A token is 1 to 16 upper-case ASCII letters or digits (a symbol: `SOL`, `BTC`, `USDC`, `TSLA`).
///
/// # Errors
/// A message naming the token.
pub fn check_token(token: &str) -> Result<(), String> {
    let ok = (1..=16).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "token {token:?} is not 1 to 16 upper-case letters or digits"
        ))
    }
}

/// `<TOKEN>@<YYYY-MM-DD>`.
pub fn token_day_id(token: &str, day: NaiveDate) -> String {
    // By hand for the years 0 to 9999 (chrono's `format` parses its pattern on every call, and every
    // candle looks up today's and yesterday's score); chrono's own text for any other year.
    match crate::values::day_text(day) {
        Some(text) => {
            let mut id = String::with_capacity(token.len() + 11);
            id.push_str(token);
            id.push('@');
            id.extend(text.iter().map(|b| char::from(*b)));
            id
        }
        None => format!("{token}@{}", day.format("%Y-%m-%d")),
    }
}

/// Commands a token's sentiment accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum SentimentCommand {
    /// Record a score (a no-op when this source was already scored by this model).
    Record(SentimentScore),
}

/// Events of a token's sentiment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SentimentEvent {
    /// A text mentioning the token was scored.
    SentimentScored(SentimentScore),
}

impl SentimentEvent {
    /// Every event type of this enum with its current version.
    pub const TYPES: &'static [(&'static str, u32)] = &[("SentimentScored", 1)];
}

impl DomainEvent for SentimentEvent {
    fn event_type(&self) -> String {
        match self {
            Self::SentimentScored(_) => "SentimentScored".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a score was refused. Nothing is recorded when a command is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SentimentError {
    /// A value is out of range or malformed.
    #[error("score of event {source_event}: {why}")]
    Invalid {
        /// The scored event.
        source_event: Uuid,
        /// What is wrong.
        why: String,
    },
    /// The score belongs to another token or day than the ones already recorded here.
    #[error("score of {token} at {at} does not belong to {aggregate}")]
    WrongAggregate {
        /// The score's token.
        token: String,
        /// The score's time.
        at: DateTime<Utc>,
        /// The aggregate it was sent to.
        aggregate: String,
    },
}

/// The scores of one token on one day, in event-time order.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenSentiment {
    scores: Vec<SentimentScore>,
    scored: BTreeSet<(Uuid, String)>,
}

impl TokenSentiment {
    /// The scores, oldest first (by `at`; equal times in the order recorded).
    pub fn scores(&self) -> &[SentimentScore] {
        &self.scores
    }

    /// Whether `source_event` was scored by `model` here.
    pub fn has_scored(&self, source_event: Uuid, model: &str) -> bool {
        self.scored.contains(&(source_event, model.to_string()))
    }

    /// The most recent score at or before `t` (the last recorded among equal times).
    pub fn latest_at(&self, t: DateTime<Utc>) -> Option<&SentimentScore> {
        let end = self.scores.partition_point(|s| s.at <= t);
        end.checked_sub(1).map(|i| &self.scores[i])
    }

    /// The confidence-weighted mean score of the scores at or before `t`, each weight halving every
    /// `half_life` of age; `None` when there is no score or every weight is zero. Rounded to 4 places.
    pub fn decayed_average(&self, t: DateTime<Utc>, half_life: Duration) -> Option<Decimal> {
        let half_life = half_life.num_milliseconds().max(1) as f64;
        let (mut sum, mut weights) = (0.0, 0.0);
        for s in self.scores.iter().take_while(|s| s.at <= t) {
            let age = (t - s.at).num_milliseconds() as f64;
            let w = s.confidence.to_f64().unwrap_or(0.0) * 0.5f64.powf(age / half_life);
            sum += w * s.score.to_f64().unwrap_or(0.0);
            weights += w;
        }
        (weights > 0.0)
            .then(|| Decimal::from_f64(sum / weights))
            .flatten()
            .map(|d| d.round_dp(4))
    }

    /// Decides whether `score` is new. Pure.
    ///
    /// # Errors
    /// [`SentimentError`] for invalid values or a score of another token or day.
    pub fn decide(&self, score: SentimentScore) -> Result<Vec<SentimentEvent>, SentimentError> {
        score.validate()?;
        if let Some(first) = self.scores.first() {
            if first.aggregate_id() != score.aggregate_id() {
                return Err(SentimentError::WrongAggregate {
                    token: score.token,
                    at: score.at,
                    aggregate: first.aggregate_id(),
                });
            }
        }
        if self.has_scored(score.source_event, &score.model) {
            return Ok(vec![]);
        }
        Ok(vec![SentimentEvent::SentimentScored(score)])
    }
}

impl Aggregate for TokenSentiment {
    const TYPE: &'static str = "TokenSentiment";
    type Command = SentimentCommand;
    type Event = SentimentEvent;
    type Error = SentimentError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let SentimentCommand::Record(score) = command;
        for event in self.decide(score)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let SentimentEvent::SentimentScored(score) = event;
        self.scored
            .insert((score.source_event, score.model.clone()));
        let at = self.scores.partition_point(|s| s.at <= score.at);
        self.scores.insert(at, score);
    }
}

impl JarvisAggregate for TokenSentiment {
    const CONTEXT: &'static str = "sentiment";
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<TokenSentiment>;

    fn score(source: u128, hour: u32, value: &str, label: SentimentLabel) -> SentimentScore {
        SentimentScore {
            token: "SOL".into(),
            score: value.parse().unwrap(),
            label,
            confidence: "0.8".parse().unwrap(),
            model: "nblr".into(),
            source_event: Uuid::from_u128(source),
            source_type: "TweetReceived".into(),
            at: format!("2024-03-01T{hour:02}:00:00Z").parse().unwrap(),
        }
    }

    fn scored(s: SentimentScore) -> SentimentEvent {
        SentimentEvent::SentimentScored(s)
    }

    #[test]
    fn a_new_score_is_recorded() {
        let s = score(1, 9, "0.7", SentimentLabel::Bullish);
        Given::with(())
            .given_no_previous_events()
            .when(SentimentCommand::Record(s.clone()))
            .then_expect_events(vec![scored(s)]);
    }

    #[test]
    fn the_same_source_and_model_again_is_a_no_op_another_model_is_not() {
        let s = score(1, 9, "0.7", SentimentLabel::Bullish);
        Given::with(())
            .given(vec![scored(s.clone())])
            .when(SentimentCommand::Record(s.clone()))
            .then_expect_events(vec![]);
        let mut llm = s.clone();
        llm.model = "llm:local/llama3.2".into();
        Given::with(())
            .given(vec![scored(s)])
            .when(SentimentCommand::Record(llm.clone()))
            .then_expect_events(vec![scored(llm)]);
    }

    #[test]
    fn out_of_range_values_are_refused_with_the_value() {
        let refuse = |s: SentimentScore| {
            Given::with(())
                .given_no_previous_events()
                .when(SentimentCommand::Record(s))
                .inspect_result()
                .unwrap_err()
                .to_string()
        };
        assert!(refuse(score(1, 1, "1.5", SentimentLabel::Bullish)).contains("score 1.5"));
        let mut s = score(1, 1, "0", SentimentLabel::Neutral);
        s.confidence = "-0.1".parse().unwrap();
        assert!(refuse(s).contains("confidence -0.1"));
        let mut s = score(1, 1, "0", SentimentLabel::Neutral);
        s.token = "sol".into();
        assert!(refuse(s).contains("token \"sol\""));
    }

    #[test]
    fn a_score_of_another_day_is_refused() {
        let mut next_day = score(2, 1, "0", SentimentLabel::Neutral);
        next_day.at = "2024-03-02T01:00:00Z".parse().unwrap();
        Given::with(())
            .given(vec![scored(score(1, 1, "0", SentimentLabel::Neutral))])
            .when(SentimentCommand::Record(next_day))
            .then_expect_error_message(
                "score of SOL at 2024-03-02 01:00:00 UTC does not belong to SOL@2024-03-01",
            );
    }

    #[test]
    fn latest_at_reads_by_event_time_not_by_arrival() {
        let mut state = TokenSentiment::default();
        // Arrives late but happened first.
        state.apply(scored(score(2, 12, "-0.5", SentimentLabel::Bearish)));
        state.apply(scored(score(1, 9, "0.7", SentimentLabel::Bullish)));
        let at = |h: u32| format!("2024-03-01T{h:02}:00:00Z").parse().unwrap();
        assert!(state.latest_at(at(8)).is_none());
        assert_eq!(state.latest_at(at(9)).unwrap().score.to_string(), "0.7");
        assert_eq!(state.latest_at(at(11)).unwrap().score.to_string(), "0.7");
        assert_eq!(state.latest_at(at(23)).unwrap().score.to_string(), "-0.5");
    }

    #[test]
    fn decayed_average_weights_recent_scores_more() {
        let mut state = TokenSentiment::default();
        state.apply(scored(score(1, 0, "1", SentimentLabel::Bullish)));
        state.apply(scored(score(2, 2, "-1", SentimentLabel::Bearish)));
        let t = "2024-03-01T02:00:00Z".parse().unwrap();
        // Weights 0.8 * 0.5^(2h/2h) = 0.4 and 0.8: (0.4 - 0.8) / 1.2 = -0.3333.
        assert_eq!(
            state
                .decayed_average(t, Duration::hours(2))
                .unwrap()
                .to_string(),
            "-0.3333"
        );
        let before = "2024-03-01T01:00:00Z".parse().unwrap();
        assert_eq!(
            state
                .decayed_average(before, Duration::hours(2))
                .unwrap()
                .to_string(),
            "1"
        );
        assert!(TokenSentiment::default()
            .decayed_average(t, Duration::hours(1))
            .is_none());
    }

    #[test]
    fn labels_parse_and_serialize_lowercase() {
        assert_eq!(
            "Bullish".parse::<SentimentLabel>().unwrap(),
            SentimentLabel::Bullish
        );
        assert!("up".parse::<SentimentLabel>().is_err());
        let json =
            serde_json::to_value(scored(score(1, 1, "0.25", SentimentLabel::Bearish))).unwrap();
        assert_eq!(json["SentimentScored"]["label"], "bearish");
        assert_eq!(json["SentimentScored"]["score"], "0.25");
    }
}
