//! The lexicon baseline that `jarvis sentiment eval` prints beside the classifier: VADER (Hutto & Gilbert
//! 2014), the standard rule-and-lexicon scorer for social-media text, through the `vader_sentiment` port.
//!
//! VADER's `compound` score maps to a label with VADER's own thresholds: ≥ 0.05 bullish, ≤ −0.05 bearish,
//! neutral in between. It knows general English sentiment, not finance ("shares fall" has no negative
//! word), which is why a trained classifier beats it on finance tweets; it is here as the floor to beat.
//! (The port is small and unmaintained since 2020; it is used for evaluation only, never to trade.)

use jarvis_domain::sentiment::SentimentLabel;
use vader_sentiment::SentimentIntensityAnalyzer;

/// VADER's compound score of `text`, in -1..1.
pub fn vader_compound(text: &str) -> f64 {
    thread_local! {
        static ANALYZER: SentimentIntensityAnalyzer<'static> = SentimentIntensityAnalyzer::new();
    }
    ANALYZER.with(|a| {
        a.polarity_scores(text)
            .get("compound")
            .copied()
            .unwrap_or(0.0)
    })
}

/// VADER's label for `text`.
pub fn vader_label(text: &str) -> SentimentLabel {
    label_of_compound(vader_compound(text))
}

/// ≥ 0.05 bullish, ≤ −0.05 bearish, else neutral.
pub fn label_of_compound(compound: f64) -> SentimentLabel {
    if compound >= 0.05 {
        SentimentLabel::Bullish
    } else if compound <= -0.05 {
        SentimentLabel::Bearish
    } else {
        SentimentLabel::Neutral
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vader_reads_plain_sentiment_and_misses_finance_jargon() {
        assert_eq!(
            vader_label("Great quarter, love this stock!"),
            SentimentLabel::Bullish
        );
        assert_eq!(
            vader_label("terrible, awful results"),
            SentimentLabel::Bearish
        );
        assert_eq!(
            vader_label("The report is due on Tuesday"),
            SentimentLabel::Neutral
        );
        assert_eq!(vader_label(""), SentimentLabel::Neutral);
    }
}
