//! The offline classifier: NB-weighted logistic regression ("NBSVM"-style, Wang & Manning 2012) over binary
//! unigram and bigram features, one-vs-rest for bearish, bullish and neutral.
//!
//! # Training (`jarvis sentiment train DATA.csv --out FILE`)
//! 1. Rows whose text is held out ([`super::text::is_held_out`], about 20%) are set aside and never seen.
//! 2. Features: every unigram and bigram of [`super::text::tokenize`] present in at least `min_df` training
//!    texts, in lexicographic order; a text's feature is 1 when present.
//! 3. For each class, the naive-Bayes log-count ratio `r = ln((p/|p|₁)/(q/|q|₁))` (p, q: feature counts in the
//!    class and in the rest, plus 1) scales the features, and an L2-regularised logistic regression fits the
//!    class against the rest, with balanced class weights (`n / (2·rows of the side)`) and penalty `1/C`,
//!    minimised by `argmin`'s L-BFGS with a Moré-Thuente line search.
//!
//!    That is `linfa-logistic`'s objective and solver, written over a sparse matrix with sample weights:
//!    `linfa-logistic` takes a dense matrix (7,585 rows × 16,000 features, 1 GB per class; a run was
//!    stopped unfinished after 16 minutes here, where this trains all three classes in about 70 s) and has
//!    no sample weights. A test checks that both find the same model on a
//!    problem small enough to be dense.
//! 4. The fitted weights are multiplied by `r` and written, rounded to 1e-4, with the FNV-1a hashes of
//!    every text trained on (so `eval` can say which rows the model has seen).
//!
//! Same file and options → byte-identical model file: nothing is random, and the order of everything is fixed.
//!
//! # Scoring
//! The margin of each class is its intercept plus the weights of the text's features; the label is the
//! largest margin; the softmax of the three margins gives `confidence` (the top one) and
//! `score = p(bullish) − p(bearish)`. They rank texts well but are not calibrated probabilities.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use jarvis_domain::sentiment::SentimentLabel;
use ndarray::Array1;
use serde::{Deserialize, Serialize};

use super::dataset::LabelledText;
use super::text::{fnv1a64, is_held_out, tokenize, tokenize_into};

/// The identifier of the file format.
pub const FORMAT: &str = "jarvis-sentiment-nblr/1";
/// Weights are stored as integers in units of 1/SCALE.
const SCALE: f64 = 10_000.0;

/// What training does.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Inverse L2 regularisation strength (as scikit-learn's `C`).
    pub c: f64,
    /// Fewest training texts a feature must appear in.
    pub min_df: usize,
    /// L-BFGS iterations at most, per class.
    pub max_iterations: u64,
}

impl Default for TrainOptions {
    /// The options of the shipped model (chosen on an inner validation fold; see `docs/sentiment.md`).
    fn default() -> Self {
        Self {
            c: 0.5,
            min_df: 2,
            max_iterations: 300,
        }
    }
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A class has no training row, or no feature survived `min_df`.
    #[error("cannot train: {0}")]
    Data(String),
    /// The solver refused.
    #[error("logistic regression for class {class}: {message}")]
    Solver {
        /// The class being fitted.
        class: SentimentLabel,
        /// linfa's message.
        message: String,
    },
}

/// Why a model file cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Not JSON of the expected shape.
    #[error("model file is malformed: {0}")]
    Malformed(String),
    /// Another format.
    #[error("model format {found:?} is not {FORMAT:?}")]
    Format {
        /// The format found.
        found: String,
    },
}

/// How the model was trained, as recorded in its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    /// The file name trained from (no directory).
    pub source: String,
    /// Rows trained on.
    pub rows_trained: usize,
    /// Rows of the file held out.
    pub rows_held_out: usize,
    /// The options' `c`.
    pub c: f64,
    /// The options' `min_df`.
    pub min_df: usize,
    /// The options' `max_iterations`.
    pub max_iterations: u64,
}

#[derive(Serialize, Deserialize)]
struct ModelFile {
    format: String,
    classes: Vec<SentimentLabel>,
    features: String,
    holdout: String,
    training: TrainingInfo,
    scale: f64,
    intercepts: [i64; 3],
    terms: Vec<(String, i64, i64, i64)>,
    trained_text_hashes: Vec<String>,
}

/// A class with its probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// The class with the largest margin.
    pub label: SentimentLabel,
    /// Softmax of the margins, in [`SentimentLabel::ALL`] order.
    pub probabilities: [f64; 3],
}

impl Prediction {
    /// `p(bullish) − p(bearish)`, in -1..1.
    pub fn score(&self) -> f64 {
        self.probabilities[1] - self.probabilities[0]
    }

    /// The probability of the label.
    pub fn confidence(&self) -> f64 {
        self.probabilities[self.label.code()]
    }
}

/// A trained classifier.
#[derive(Debug, Clone)]
pub struct NbLrModel {
    name: String,
    intercepts: [f64; 3],
    index: HashMap<String, u32>,
    weights: Vec<[f32; 3]>,
    trained: Vec<u64>,
    info: TrainingInfo,
}

/// The model shipped in the binary (`agents/assets/sentiment_model.json`).
static SHIPPED: std::sync::LazyLock<NbLrModel> = std::sync::LazyLock::new(|| {
    NbLrModel::from_json(include_str!("../../assets/sentiment_model.json"))
        .unwrap_or_else(|e| panic!("the shipped sentiment model does not load: {e}"))
});

impl NbLrModel {
    /// The model shipped in the binary.
    pub fn shipped() -> &'static Self {
        &SHIPPED
    }

    /// `nblr-<8 hex digits of the file's FNV-1a hash>`: another training gives another name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it was trained.
    pub fn info(&self) -> &TrainingInfo {
        &self.info
    }

    /// Number of features.
    pub fn features(&self) -> usize {
        self.weights.len()
    }

    /// Whether this model was trained on `text` (exactly this text).
    pub fn was_trained_on(&self, text: &str) -> bool {
        self.trained.binary_search(&fnv1a64(text)).is_ok()
    }

    /// Classifies `text`.
    pub fn predict(&self, text: &str) -> Prediction {
        let mut tokens = Vec::new();
        tokenize_into(text, &mut tokens);
        self.predict_tokens(&tokens)
    }

    /// Classifies already tokenised text.
    pub fn predict_tokens(&self, tokens: &[String]) -> Prediction {
        let mut found: Vec<u32> = Vec::with_capacity(tokens.len() * 2);
        let mut bigram = String::new();
        for (i, t) in tokens.iter().enumerate() {
            if let Some(&f) = self.index.get(t.as_str()) {
                found.push(f);
            }
            if let Some(next) = tokens.get(i + 1) {
                bigram.clear();
                bigram.push_str(t);
                bigram.push(' ');
                bigram.push_str(next);
                if let Some(&f) = self.index.get(bigram.as_str()) {
                    found.push(f);
                }
            }
        }
        found.sort_unstable();
        found.dedup();
        let mut margins = self.intercepts;
        for f in found {
            let w = self.weights[f as usize];
            for (m, w) in margins.iter_mut().zip(w) {
                *m += f64::from(w);
            }
        }
        prediction(margins)
    }

    /// Reads a model file.
    ///
    /// # Errors
    /// [`ModelError`] for malformed JSON or another format.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let file: ModelFile =
            serde_json::from_str(text).map_err(|e| ModelError::Malformed(e.to_string()))?;
        if file.format != FORMAT {
            return Err(ModelError::Format { found: file.format });
        }
        if file.classes != SentimentLabel::ALL {
            return Err(ModelError::Malformed(format!(
                "classes {:?} are not bearish, bullish, neutral",
                file.classes
            )));
        }
        let mut index = HashMap::with_capacity(file.terms.len());
        let mut weights = Vec::with_capacity(file.terms.len());
        for (i, (term, a, b, c)) in file.terms.into_iter().enumerate() {
            let w = [a, b, c].map(|v| (v as f64 / file.scale) as f32);
            if index.insert(term.clone(), i as u32).is_some() {
                return Err(ModelError::Malformed(format!(
                    "term {term:?} appears twice"
                )));
            }
            weights.push(w);
        }
        let mut trained = file
            .trained_text_hashes
            .iter()
            .map(|h| {
                u64::from_str_radix(h, 16)
                    .map_err(|e| ModelError::Malformed(format!("text hash {h:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        trained.sort_unstable();
        Ok(Self {
            name: format!("nblr-{:08x}", fnv1a64(text) as u32),
            intercepts: file.intercepts.map(|v| v as f64 / file.scale),
            index,
            weights,
            trained,
            info: file.training,
        })
    }

    /// Trains on the rows of a file that are not held out.
    ///
    /// # Errors
    /// [`TrainError`] when a class is missing or the solver fails.
    pub fn train(
        rows: &[LabelledText],
        source: &str,
        options: &TrainOptions,
    ) -> Result<Self, TrainError> {
        let text = train_to_json(rows, source, options)?;
        Self::from_json(&text).map_err(|e| TrainError::Data(format!("model does not reload: {e}")))
    }
}

fn prediction(margins: [f64; 3]) -> Prediction {
    let mut label = 0;
    for (i, m) in margins.iter().enumerate() {
        if *m > margins[label] {
            label = i;
        }
    }
    let top = margins[label];
    let exp = margins.map(|m| (m - top).exp());
    let sum: f64 = exp.iter().sum();
    Prediction {
        label: SentimentLabel::ALL[label],
        probabilities: exp.map(|e| e / sum),
    }
}

/// The unigrams and bigrams of a text, each once.
fn features_of(text: &str) -> BTreeSet<String> {
    let tokens = tokenize(text);
    let mut out: BTreeSet<String> = tokens.iter().cloned().collect();
    for pair in tokens.windows(2) {
        out.insert(format!("{} {}", pair[0], pair[1]));
    }
    out
}

/// Trains and returns the model file's text (see the module docs).
///
/// # Errors
/// [`TrainError`].
pub fn train_to_json(
    rows: &[LabelledText],
    source: &str,
    options: &TrainOptions,
) -> Result<String, TrainError> {
    let train: Vec<&LabelledText> = rows.iter().filter(|r| !is_held_out(&r.text)).collect();
    let held_out = rows.len() - train.len();
    let docs: Vec<BTreeSet<String>> = train.iter().map(|r| features_of(&r.text)).collect();
    let mut df: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &docs {
        for f in d {
            *df.entry(f.as_str()).or_default() += 1;
        }
    }
    let vocab: Vec<&str> = df
        .iter()
        .filter(|(_, n)| **n >= options.min_df)
        .map(|(t, _)| *t)
        .collect();
    if vocab.is_empty() {
        return Err(TrainError::Data(format!(
            "no feature appears in {} training texts",
            options.min_df
        )));
    }
    let position: HashMap<&str, usize> = vocab.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let rows_features: Vec<Vec<usize>> = docs
        .iter()
        .map(|d| {
            d.iter()
                .filter_map(|f| position.get(f.as_str()).copied())
                .collect()
        })
        .collect();
    let labels: Vec<usize> = train.iter().map(|r| r.label.code()).collect();
    let n = labels.len();
    let mut weights = vec![[0f64; 3]; vocab.len()];
    let mut intercepts = [0f64; 3];
    for class in SentimentLabel::ALL {
        let c = class.code();
        let n_pos = labels.iter().filter(|l| **l == c).count();
        let n_neg = n - n_pos;
        if n_pos == 0 || n_neg == 0 {
            return Err(TrainError::Data(format!(
                "class {class} has {n_pos} of {n} training rows; every class needs some, and so does the rest"
            )));
        }
        // Naive-Bayes log-count ratios.
        let (mut p, mut q) = (vec![1f64; vocab.len()], vec![1f64; vocab.len()]);
        for (feats, l) in rows_features.iter().zip(&labels) {
            let side = if *l == c { &mut p } else { &mut q };
            for f in feats {
                side[*f] += 1.0;
            }
        }
        let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
        let r: Vec<f64> = p
            .iter()
            .zip(&q)
            .map(|(p, q)| ((p / ps) / (q / qs)).ln())
            .collect();
        // Balanced class weights, as scikit-learn's `class_weight="balanced"`: n / (2 · rows of the side).
        let (w_pos, w_neg) = (
            n as f64 / (2.0 * n_pos as f64),
            n as f64 / (2.0 * n_neg as f64),
        );
        let problem = Problem {
            rows: rows_features
                .iter()
                .map(|feats| feats.iter().map(|f| (*f as u32, r[*f])).collect())
                .collect(),
            targets: labels
                .iter()
                .map(|l| if *l == c { 1.0 } else { -1.0 })
                .collect(),
            weights: labels
                .iter()
                .map(|l| if *l == c { w_pos } else { w_neg })
                .collect(),
            alpha: 1.0 / options.c,
            features: vocab.len(),
        };
        let theta = problem
            .solve(options.max_iterations)
            .map_err(|message| TrainError::Solver { class, message })?;
        for f in 0..vocab.len() {
            weights[f][c] = theta[f] * r[f];
        }
        intercepts[c] = theta[vocab.len()];
    }
    let mut hashes: Vec<u64> = train.iter().map(|r| fnv1a64(&r.text)).collect();
    hashes.sort_unstable();
    hashes.dedup();
    let round = |v: f64| (v * SCALE).round() as i64;
    let file = ModelFile {
        format: FORMAT.into(),
        classes: SentimentLabel::ALL.to_vec(),
        features:
            "binary unigrams and bigrams of jarvis text::tokenize, min_df on the training split"
                .into(),
        holdout: "fnv1a64(utf8 text) % 5 == 0 is held out".into(),
        training: TrainingInfo {
            source: source.to_string(),
            rows_trained: n,
            rows_held_out: held_out,
            c: options.c,
            min_df: options.min_df,
            max_iterations: options.max_iterations,
        },
        scale: SCALE,
        intercepts: intercepts.map(round),
        terms: vocab
            .iter()
            .zip(&weights)
            .map(|(t, w)| (t.to_string(), round(w[0]), round(w[1]), round(w[2])))
            .collect(),
        trained_text_hashes: hashes.iter().map(|h| format!("{h:016x}")).collect(),
    };
    Ok(write_model(&file))
}

/// One term per line, so that a retrained model's diff is readable.
fn write_model(file: &ModelFile) -> String {
    let mut out = String::from("{\n");
    let _ = writeln!(out, "\"format\": {},", j(&file.format));
    let _ = writeln!(out, "\"classes\": {},", j(&file.classes));
    let _ = writeln!(out, "\"features\": {},", j(&file.features));
    let _ = writeln!(out, "\"holdout\": {},", j(&file.holdout));
    let _ = writeln!(out, "\"training\": {},", j(&file.training));
    let _ = writeln!(out, "\"scale\": {},", j(&file.scale));
    let _ = writeln!(out, "\"intercepts\": {},", j(&file.intercepts));
    out.push_str("\"terms\": [\n");
    for (i, t) in file.terms.iter().enumerate() {
        let sep = if i + 1 < file.terms.len() { "," } else { "" };
        let _ = writeln!(out, "{}{sep}", j(t));
    }
    out.push_str("],\n\"trained_text_hashes\": [\n");
    for (i, chunk) in file.trained_text_hashes.chunks(8).enumerate() {
        let sep = if (i + 1) * 8 < file.trained_text_hashes.len() {
            ","
        } else {
            ""
        };
        let line: Vec<String> = chunk.iter().map(j).collect();
        let _ = writeln!(out, "{}{sep}", line.join(","));
    }
    out.push_str("]\n}\n");
    out
}

/// One class against the rest: weighted logistic loss over sparse rows, L2 on the weights (not the
/// intercept), `θ` = feature weights then the intercept. The objective of `linfa-logistic`, plus sample
/// weights, over a sparse matrix (see the module docs for why).
struct Problem {
    rows: Vec<Vec<(u32, f64)>>,
    targets: Vec<f64>,
    weights: Vec<f64>,
    alpha: f64,
    features: usize,
}

impl Problem {
    fn margin(&self, theta: &Array1<f64>, row: &[(u32, f64)]) -> f64 {
        row.iter()
            .fold(theta[self.features], |z, (f, x)| z + theta[*f as usize] * x)
    }

    /// L-BFGS (memory 10, Moré-Thuente line search: linfa-logistic's solver) from zero.
    fn solve(self, max_iterations: u64) -> Result<Array1<f64>, String> {
        let init = Array1::zeros(self.features + 1);
        let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
            .with_tolerance_grad(1e-6)
            .map_err(|e| e.to_string())?;
        let result = Executor::new(self, solver)
            .configure(|s| s.param(init).max_iters(max_iterations))
            .run()
            .map_err(|e| e.to_string())?;
        result
            .state()
            .get_best_param()
            .cloned()
            .ok_or_else(|| "the solver returned no parameters".to_string())
    }
}

/// `ln(1 + e^(−m))`, without overflow.
fn log_loss(m: f64) -> f64 {
    if m > 0.0 {
        (-m).exp().ln_1p()
    } else {
        -m + m.exp().ln_1p()
    }
}

impl CostFunction for Problem {
    type Param = Array1<f64>;
    type Output = f64;

    fn cost(&self, theta: &Self::Param) -> Result<f64, argmin::core::Error> {
        let mut loss = 0.0;
        for ((row, y), w) in self.rows.iter().zip(&self.targets).zip(&self.weights) {
            loss += w * log_loss(y * self.margin(theta, row));
        }
        let l2: f64 = theta.iter().take(self.features).map(|t| t * t).sum();
        Ok(loss + 0.5 * self.alpha * l2)
    }
}

impl Gradient for Problem {
    type Param = Array1<f64>;
    type Gradient = Array1<f64>;

    fn gradient(&self, theta: &Self::Param) -> Result<Array1<f64>, argmin::core::Error> {
        let mut grad = Array1::zeros(self.features + 1);
        for ((row, y), w) in self.rows.iter().zip(&self.targets).zip(&self.weights) {
            let m = y * self.margin(theta, row);
            // d/dz of w·ln(1 + e^(−y z)) = −w·y·σ(−y z)
            let g = -w * y / (1.0 + m.exp());
            for (f, x) in row {
                grad[*f as usize] += g * x;
            }
            grad[self.features] += g;
        }
        for f in 0..self.features {
            grad[f] += self.alpha * theta[f];
        }
        Ok(grad)
    }
}

/// Compact JSON of a value that always serialises (strings, numbers, plain structs).
fn j<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<LabelledText> {
        let mut rows = Vec::new();
        let samples = [
            ("stock falls after weak guidance", SentimentLabel::Bearish),
            ("shares drop on lawsuit fears", SentimentLabel::Bearish),
            ("analyst downgrades stock to sell", SentimentLabel::Bearish),
            (
                "stock jumps after strong earnings beat",
                SentimentLabel::Bullish,
            ),
            ("shares rally on upgrade to buy", SentimentLabel::Bullish),
            ("record revenue lifts stock higher", SentimentLabel::Bullish),
            ("company to present at conference", SentimentLabel::Neutral),
            ("quarterly report due on tuesday", SentimentLabel::Neutral),
            ("ceo to speak at annual meeting", SentimentLabel::Neutral),
        ];
        for round in 0..12 {
            for (i, (t, l)) in samples.iter().enumerate() {
                rows.push(LabelledText {
                    line: (round * 10 + i + 2) as u64,
                    text: format!("{t} #{round}"),
                    label: *l,
                });
            }
        }
        rows
    }

    #[test]
    fn training_twice_gives_the_same_bytes_and_the_model_learns() {
        let options = TrainOptions {
            max_iterations: 100,
            ..TrainOptions::default()
        };
        let a = train_to_json(&rows(), "tiny.csv", &options).unwrap();
        let b = train_to_json(&rows(), "tiny.csv", &options).unwrap();
        assert_eq!(a, b);
        let model = NbLrModel::from_json(&a).unwrap();
        assert_eq!(
            model.predict("shares drop after downgrade").label,
            SentimentLabel::Bearish
        );
        assert_eq!(
            model.predict("stock jumps on record revenue").label,
            SentimentLabel::Bullish
        );
        assert_eq!(
            model.predict("ceo to present at meeting").label,
            SentimentLabel::Neutral
        );
        let held: Vec<_> = rows()
            .into_iter()
            .filter(|r| is_held_out(&r.text))
            .collect();
        assert!(!held.is_empty());
        assert!(held.iter().all(|r| !model.was_trained_on(&r.text)));
        assert!(model.was_trained_on(
            &rows()
                .into_iter()
                .find(|r| !is_held_out(&r.text))
                .unwrap()
                .text
        ));
    }

    const DATA: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/financial_tweets_sentiment_train.csv"
    );

    #[test]
    fn the_shipped_model_reaches_its_target_on_rows_it_never_saw() {
        let data = super::super::dataset::read_labelled(std::path::Path::new(DATA)).unwrap();
        assert!(data.bad_rows.is_empty(), "{:?}", data.bad_rows);
        let model = NbLrModel::shipped();
        let mut held_out = super::super::metrics::Confusion::default();
        for r in &data.rows {
            // Trained on exactly the rows the split puts on the training side.
            assert_eq!(model.was_trained_on(&r.text), !is_held_out(&r.text), "{r}");
            if !model.was_trained_on(&r.text) {
                held_out.add(r.label, model.predict(&r.text).label);
            }
        }
        assert_eq!(held_out.total(), 1958);
        // A quality check of the shipped weights (not a timing): docs/sentiment.md reports 0.7657.
        assert!(
            held_out.macro_f1() >= 0.75,
            "{}",
            held_out.to_text("held out")
        );
    }

    #[test]
    fn training_on_the_shipped_data_reproduces_the_shipped_model_byte_for_byte() {
        let data = super::super::dataset::read_labelled(std::path::Path::new(DATA)).unwrap();
        let text = train_to_json(
            &data.rows,
            "financial_tweets_sentiment_train.csv",
            &TrainOptions::default(),
        )
        .unwrap();
        assert!(
            text == include_str!("../../assets/sentiment_model.json"),
            "retrain with `jarvis sentiment train data/financial_tweets_sentiment_train.csv --out agents/assets/sentiment_model.json`"
        );
    }

    #[test]
    fn the_sparse_solver_finds_what_linfa_logistic_finds() {
        use linfa::prelude::*;
        // A small dense problem: 80 rows, 4 features, a noisy linear rule.
        let (n, f) = (80, 4);
        let value = |i: usize, j: usize| (((i * 7 + j * 13) % 11) as f64 - 5.0) / 5.0;
        let x = ndarray::Array2::from_shape_fn((n, f), |(i, j)| value(i, j));
        let y: Vec<bool> = (0..n)
            .map(|i| x[[i, 0]] - 0.5 * x[[i, 2]] + if i % 9 == 0 { 2.0 } else { 0.0 } > 0.1)
            .collect();
        let alpha = 0.7;
        let fitted = linfa_logistic::LogisticRegression::default()
            .alpha(alpha)
            .max_iterations(500)
            .gradient_tolerance(1e-8)
            .fit(&linfa::Dataset::new(
                x.clone(),
                ndarray::Array1::from(y.clone()),
            ))
            .unwrap();
        let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
        let theta = Problem {
            rows: (0..n)
                .map(|i| (0..f).map(|j| (j as u32, x[[i, j]])).collect())
                .collect(),
            targets: y.iter().map(|b| if *b { 1.0 } else { -1.0 }).collect(),
            weights: vec![1.0; n],
            alpha,
            features: f,
        }
        .solve(500)
        .unwrap();
        for j in 0..f {
            assert!(
                (theta[j] - sign * fitted.params()[j]).abs() < 1e-3,
                "{theta} vs {}",
                fitted.params()
            );
        }
        assert!((theta[f] - sign * fitted.intercept()).abs() < 1e-3);
    }

    #[test]
    fn predictions_are_probabilities_and_scores_in_range() {
        let p = prediction([2.0, -1.0, 0.0]);
        assert_eq!(p.label, SentimentLabel::Bearish);
        assert!((p.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(p.score() < 0.0 && p.score() >= -1.0);
        assert!(p.confidence() > 0.5);
    }

    #[test]
    fn a_malformed_or_foreign_model_is_refused() {
        assert!(matches!(
            NbLrModel::from_json("{}"),
            Err(ModelError::Malformed(_))
        ));
        let foreign = write_model(&ModelFile {
            format: "other/9".into(),
            classes: SentimentLabel::ALL.to_vec(),
            features: String::new(),
            holdout: String::new(),
            training: TrainingInfo {
                source: String::new(),
                rows_trained: 0,
                rows_held_out: 0,
                c: 1.0,
                min_df: 1,
                max_iterations: 1,
            },
            scale: SCALE,
            intercepts: [0; 3],
            terms: vec![],
            trained_text_hashes: vec![],
        });
        assert!(matches!(
            NbLrModel::from_json(&foreign),
            Err(ModelError::Format { .. })
        ));
    }
}
