//! Classification metrics: accuracy, per-class precision/recall/F1, macro-F1 and the confusion matrix.

use jarvis_domain::sentiment::SentimentLabel;
use serde::Serialize;
use serde_json::{json, Value};

/// Counts of (actual, predicted) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// `matrix[actual][predicted]`, in [`SentimentLabel::ALL`] order.
    pub matrix: [[u64; 3]; 3],
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// Of the texts predicted as the class, the share that are.
    pub precision: f64,
    /// Of the texts of the class, the share predicted as it.
    pub recall: f64,
    /// Harmonic mean of the two (0 when both are 0).
    pub f1: f64,
    /// Texts of the class.
    pub support: u64,
}

impl Confusion {
    /// Adds one prediction.
    pub fn add(&mut self, actual: SentimentLabel, predicted: SentimentLabel) {
        self.matrix[actual.code()][predicted.code()] += 1;
    }

    /// Texts counted.
    pub fn total(&self) -> u64 {
        self.matrix.iter().flatten().sum()
    }

    /// Share predicted right (0 for no text).
    pub fn accuracy(&self) -> f64 {
        let right: u64 = (0..3).map(|i| self.matrix[i][i]).sum();
        ratio(right, self.total())
    }

    /// Precision, recall and F1 of `label`.
    pub fn class(&self, label: SentimentLabel) -> ClassMetrics {
        let c = label.code();
        let tp = self.matrix[c][c];
        let predicted: u64 = (0..3).map(|a| self.matrix[a][c]).sum();
        let actual: u64 = self.matrix[c].iter().sum();
        let (precision, recall) = (ratio(tp, predicted), ratio(tp, actual));
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        ClassMetrics {
            precision,
            recall,
            f1,
            support: actual,
        }
    }

    /// Unweighted mean of the three classes' F1.
    pub fn macro_f1(&self) -> f64 {
        SentimentLabel::ALL
            .iter()
            .map(|l| self.class(*l).f1)
            .sum::<f64>()
            / 3.0
    }

    /// `{"texts", "accuracy", "macro_f1", "classes": {label: {...}}, "confusion": {"labels", "rows"}}`, rates
    /// rounded to 4 places.
    pub fn to_json(&self) -> Value {
        let classes: serde_json::Map<String, Value> = SentimentLabel::ALL
            .iter()
            .map(|l| {
                let m = self.class(*l);
                (
                    l.to_string(),
                    json!({
                        "precision": round4(m.precision),
                        "recall": round4(m.recall),
                        "f1": round4(m.f1),
                        "support": m.support,
                    }),
                )
            })
            .collect();
        json!({
            "texts": self.total(),
            "accuracy": round4(self.accuracy()),
            "macro_f1": round4(self.macro_f1()),
            "classes": classes,
            "confusion": {
                "labels": SentimentLabel::ALL.map(|l| l.as_str()),
                "rows_actual_columns_predicted": self.matrix,
            },
        })
    }

    /// A few lines of text: accuracy, macro-F1, per-class figures and the matrix.
    pub fn to_text(&self, title: &str) -> String {
        let mut out = format!(
            "{title}: {} texts, accuracy {:.4}, macro-F1 {:.4}\n",
            self.total(),
            self.accuracy(),
            self.macro_f1()
        );
        out.push_str("  class     precision  recall  f1      support\n");
        for l in SentimentLabel::ALL {
            let m = self.class(l);
            out.push_str(&format!(
                "  {:<9} {:<10.4} {:<7.4} {:<7.4} {}\n",
                l.as_str(),
                m.precision,
                m.recall,
                m.f1,
                m.support
            ));
        }
        out.push_str("  confusion (rows actual, columns predicted: bearish bullish neutral)\n");
        for l in SentimentLabel::ALL {
            let r = self.matrix[l.code()];
            out.push_str(&format!(
                "  {:<9} {:>7} {:>7} {:>7}\n",
                l.as_str(),
                r[0],
                r[1],
                r[2]
            ));
        }
        out
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Rounds to 4 decimal places, for reports.
pub fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use SentimentLabel::*;

    #[test]
    fn metrics_match_a_hand_computed_example() {
        let mut c = Confusion::default();
        for (a, p) in [
            (Bearish, Bearish),
            (Bearish, Neutral),
            (Bullish, Bullish),
            (Bullish, Bullish),
            (Neutral, Neutral),
            (Neutral, Bullish),
        ] {
            c.add(a, p);
        }
        assert_eq!(c.total(), 6);
        assert!((c.accuracy() - 4.0 / 6.0).abs() < 1e-12);
        let bull = c.class(Bullish);
        assert!((bull.precision - 2.0 / 3.0).abs() < 1e-12 && bull.recall == 1.0);
        assert!((bull.f1 - 0.8).abs() < 1e-12);
        // bearish f1 = 2/3, neutral f1 = 0.5
        assert!((c.macro_f1() - (2.0 / 3.0 + 0.8 + 0.5) / 3.0).abs() < 1e-12);
        let j = c.to_json();
        assert_eq!(j["macro_f1"], 0.6556);
        assert_eq!(j["confusion"]["rows_actual_columns_predicted"][0][2], 1);
        assert!(c.to_text("t").contains("macro-F1 0.6556"));
    }

    #[test]
    fn empty_is_zero_not_nan() {
        let c = Confusion::default();
        assert_eq!(c.accuracy(), 0.0);
        assert_eq!(c.macro_f1(), 0.0);
    }
}
