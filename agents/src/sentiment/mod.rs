//! The sentiment agent: scores texts (tweets now, chat messages and news later) for the tokens they mention
//! and records a `SentimentScored` per token, caused by the text's event.
//!
//! # Layout
//! - [`SentimentScorer`]: the trait every scorer implements, with two implementations: [`OfflineScorer`]
//!   (the shipped classifier, no network) and [`llm::LlmScorer`] (any LLM behind a `prompt → answer` function,
//!   e.g. the LLM router).
//! - [`text`]: normalisation and tokenisation, and the hash that holds out 20% of a data set.
//! - [`model`]: the classifier (NB-weighted logistic regression trained with `linfa-logistic`), its training
//!   and its file format; the trained model ships in `agents/assets/sentiment_model.json`.
//! - [`dataset`], [`metrics`], [`lexicon`]: labelled CSV files, accuracy/macro-F1/confusion, and the VADER
//!   baseline, for `jarvis sentiment eval`.
//! - [`tokens`]: which tokens a text mentions (cashtags, names, mints).
//! - [`agent`]: the consumer that turns `TweetReceived` into `SentimentScored`.

pub mod agent;
pub mod dataset;
pub mod lexicon;
pub mod llm;
pub mod metrics;
pub mod model;
pub mod text;
pub mod tokens;

use async_trait::async_trait;
use jarvis_domain::sentiment::SentimentLabel;

pub use agent::{SentimentAgent, SentimentSettings};
pub use model::NbLrModel;

/// Longest text scored, in bytes (the longest X post, 25,000 characters, fits).
pub const MAX_TEXT_BYTES: usize = jarvis_domain::social::MAX_TEXT_BYTES;

/// A scorer's verdict on one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// -1 (bearish) .. 1 (bullish).
    pub score: f64,
    /// The class.
    pub label: SentimentLabel,
    /// 0 .. 1.
    pub confidence: f64,
    /// Which model scored, e.g. `nblr-1a2b3c4d` or `llm:trading`.
    pub model: String,
}

/// Why a text was not scored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScoreError {
    /// Nothing to score.
    #[error("text is empty")]
    Empty,
    /// Longer than any post.
    #[error("text of {0} bytes exceeds {MAX_TEXT_BYTES}")]
    TooLong(usize),
    /// The model could not be reached or timed out: worth retrying.
    #[error("{model} unavailable: {reason}")]
    Unavailable {
        /// The model.
        model: String,
        /// Why.
        reason: String,
    },
    /// The model answered something that is not a score: retrying the same text won't help.
    #[error("{model} answered no valid score: {reason}")]
    BadAnswer {
        /// The model.
        model: String,
        /// What is wrong with the answer.
        reason: String,
    },
}

impl ScoreError {
    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// Checks what every scorer refuses: empty text and text longer than [`MAX_TEXT_BYTES`].
///
/// # Errors
/// [`ScoreError::Empty`] or [`ScoreError::TooLong`].
pub fn check_text(text: &str) -> Result<(), ScoreError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(ScoreError::TooLong(text.len()));
    }
    if text.trim().is_empty() {
        return Err(ScoreError::Empty);
    }
    Ok(())
}

/// Scores a text. Implementations must be deterministic for a given model where they can (the offline one
/// is), and must never panic on any UTF-8 input.
#[async_trait]
pub trait SentimentScorer: Send + Sync {
    /// The model's name, recorded in each score.
    fn model(&self) -> String;

    /// Scores `text`.
    ///
    /// # Errors
    /// [`ScoreError`]: bad input, or the model unavailable or answering nonsense.
    async fn score(&self, text: &str) -> Result<Score, ScoreError>;
}

/// The shipped classifier: no network, about 100,000 texts/s on one core (see `docs/performance.md`).
#[derive(Debug, Clone, Copy)]
pub struct OfflineScorer {
    model: &'static NbLrModel,
}

impl Default for OfflineScorer {
    fn default() -> Self {
        Self {
            model: NbLrModel::shipped(),
        }
    }
}

impl OfflineScorer {
    /// A scorer with a model of your own (e.g. freshly trained, leaked for the process's life).
    pub fn with_model(model: &'static NbLrModel) -> Self {
        Self { model }
    }

    /// The model.
    pub fn model_ref(&self) -> &'static NbLrModel {
        self.model
    }

    /// Scores synchronously.
    ///
    /// # Errors
    /// [`ScoreError::Empty`] or [`ScoreError::TooLong`].
    pub fn score_now(&self, text: &str) -> Result<Score, ScoreError> {
        check_text(text)?;
        let p = self.model.predict(text);
        Ok(Score {
            score: p.score(),
            label: p.label,
            confidence: p.confidence(),
            model: self.model.name().to_string(),
        })
    }
}

#[async_trait]
impl SentimentScorer for OfflineScorer {
    fn model(&self) -> String {
        self.model.name().to_string()
    }

    async fn score(&self, text: &str) -> Result<Score, ScoreError> {
        self.score_now(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn offline_scorer_refuses_empty_and_huge_text_and_scores_in_range() {
        let s = OfflineScorer::default();
        assert_eq!(s.score("  ").await.unwrap_err(), ScoreError::Empty);
        let huge = "a".repeat(1 << 20);
        assert_eq!(
            s.score(&huge).await.unwrap_err().to_string(),
            "text of 1048576 bytes exceeds 100000"
        );
        let score = s
            .score("$SOL rallies 20% after record volume")
            .await
            .unwrap();
        assert!((-1.0..=1.0).contains(&score.score));
        assert!((0.0..=1.0).contains(&score.confidence));
        assert!(score.model.starts_with("nblr-"));
    }
}
