//! `jarvis sentiment train|eval` and `jarvis bench sentiment`: the offline classifier from the shell.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::Subcommand;
use jarvis_agents::sentiment::dataset::{read_labelled, LabelledFile, LabelledText};
use jarvis_agents::sentiment::lexicon::vader_label;
use jarvis_agents::sentiment::metrics::Confusion;
use jarvis_agents::sentiment::model::{train_to_json, NbLrModel, TrainOptions};
use jarvis_agents::sentiment::text::tokenize;
use jarvis_agents::sentiment::OfflineScorer;
use serde_json::{json, Value};

use crate::Exit;

/// `[sentiment]`: the sentiment agent.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentimentConfig {
    /// Run the agent in `jarvis up` (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Extra names and Solana mints per token, beside the built-in ones, e.g.
    /// `WIF = ["dogwifhat", "EKpQGSJtjMFqKZ9KQanSqYXRcF8fBopzLHYxdM65zcjm"]`.
    #[serde(default)]
    pub aliases: std::collections::BTreeMap<String, Vec<String>>,
}

fn yes() -> bool {
    true
}

impl Default for SentimentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            aliases: Default::default(),
        }
    }
}

impl SentimentConfig {
    /// The agent's settings. Token keys are upper-cased: environment variables reach the configuration in
    /// lower case (`JARVIS_SENTIMENT__ALIASES__WIF` is `sentiment.aliases.wif`).
    pub fn settings(&self) -> jarvis_agents::sentiment::SentimentSettings {
        let mut aliases = std::collections::BTreeMap::<String, Vec<String>>::new();
        for (token, names) in &self.aliases {
            aliases
                .entry(token.to_ascii_uppercase())
                .or_default()
                .extend(names.iter().cloned());
        }
        jarvis_agents::sentiment::SentimentSettings { aliases }
    }
}

/// `jarvis sentiment ...`
#[derive(Debug, Subcommand)]
pub enum SentimentCommand {
    /// Train the offline classifier from a labelled CSV (`text,label`; 0 bearish, 1 bullish, 2 neutral) and
    /// write the model file. The 20% of texts held out by hash are never trained on.
    Train {
        /// The labelled file.
        file: PathBuf,
        /// Where to write the model (the shipped one is `agents/assets/sentiment_model.json`).
        #[arg(long)]
        out: PathBuf,
        /// Inverse regularisation strength.
        #[arg(long, default_value_t = TrainOptions::default().c)]
        c: f64,
        /// Fewest training texts a feature must appear in.
        #[arg(long, default_value_t = TrainOptions::default().min_df)]
        min_df: usize,
        /// L-BFGS iterations at most, per class.
        #[arg(long, default_value_t = TrainOptions::default().max_iterations)]
        max_iterations: u64,
    },
    /// Evaluate the shipped classifier and the VADER lexicon baseline on a labelled CSV: accuracy, macro-F1,
    /// per-class precision/recall/F1 and the confusion matrix, on the rows the model was not trained on.
    Eval {
        /// The labelled file.
        file: PathBuf,
        /// A model file instead of the shipped model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn read(file: &Path) -> anyhow::Result<LabelledFile> {
    read_labelled(file).map_err(|e| {
        Exit {
            code: 2,
            message: e.to_string(),
        }
        .into()
    })
}

/// Runs a `jarvis sentiment` command.
///
/// # Errors
/// [`Exit`] 2 for a missing file, a wrong header or a file with no good row; I/O errors.
pub fn run(cmd: SentimentCommand) -> anyhow::Result<()> {
    match cmd {
        SentimentCommand::Train {
            file,
            out,
            c,
            min_df,
            max_iterations,
        } => train(
            &file,
            &out,
            TrainOptions {
                c,
                min_df,
                max_iterations,
            },
        ),
        SentimentCommand::Eval { file, model, json } => {
            let model = match model {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    Box::leak(Box::new(NbLrModel::from_json(&text).map_err(|e| Exit {
                        code: 2,
                        message: format!("{}: {e}", path.display()),
                    })?))
                }
                None => NbLrModel::shipped(),
            };
            let report = evaluate(&file, model)?;
            if json {
                println!("{report}");
            } else {
                print!("{}", report_text(&report));
            }
            Ok(())
        }
    }
}

fn train(file: &Path, out: &Path, options: TrainOptions) -> anyhow::Result<()> {
    let data = read(file)?;
    for bad in &data.bad_rows {
        eprintln!("skipped {}", data.bad_row_message(bad));
    }
    let source = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let started = Instant::now();
    let text = train_to_json(&data.rows, &source, &options).map_err(|e| Exit {
        code: 2,
        message: e.to_string(),
    })?;
    std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    let model = NbLrModel::from_json(&text)?;
    let info = model.info();
    println!(
        "trained {} on {} rows of {} ({} held out, {} bad) in {:.1}s: {} features, written to {}",
        model.name(),
        info.rows_trained,
        file.display(),
        info.rows_held_out,
        data.bad_rows.len(),
        started.elapsed().as_secs_f64(),
        model.features(),
        out.display()
    );
    let model: &'static NbLrModel = Box::leak(Box::new(model));
    let report = evaluate(file, model)?;
    print!("{}", report_text(&report));
    Ok(())
}

fn confusion(
    rows: &[&LabelledText],
    predict: impl Fn(&str) -> jarvis_domain::sentiment::SentimentLabel,
) -> Confusion {
    let mut c = Confusion::default();
    for r in rows {
        c.add(r.label, predict(&r.text));
    }
    c
}

/// The eval report as JSON (see `docs/sentiment.md` for the keys).
///
/// # Errors
/// [`Exit`] 2 for a missing or malformed file, or one without any good row.
pub fn evaluate(file: &Path, model: &'static NbLrModel) -> anyhow::Result<Value> {
    let data = read(file)?;
    if data.rows.is_empty() {
        return Err(Exit {
            code: 2,
            message: format!(
                "{}: no labelled row to evaluate ({} bad rows)",
                file.display(),
                data.bad_rows.len()
            ),
        }
        .into());
    }
    let predict = |t: &str| model.predict(t).label;
    let (seen, unseen): (Vec<&LabelledText>, Vec<&LabelledText>) = data
        .rows
        .iter()
        .partition(|r| model.was_trained_on(&r.text));
    let metrics = |rows: &[&LabelledText]| {
        let ours = confusion(rows, predict);
        let baseline = confusion(rows, vader_label);
        let mut v = ours.to_json();
        v["baseline"] = json!({"name": "vader", "metrics": baseline.to_json()});
        v
    };
    let held_out = metrics(&unseen);
    let mut report = json!({
        "file": file.display().to_string(),
        "model": model.name(),
        "rows_read": data.rows.len() + data.bad_rows.len(),
        "bad_rows": data.bad_rows.iter().map(|b| data.bad_row_message(b)).collect::<Vec<_>>(),
        "rows_trained_on": seen.len(),
        "evaluated": "rows the model was not trained on",
    });
    if let (Value::Object(r), Value::Object(h)) = (&mut report, held_out) {
        r.extend(h);
    }
    report["all_rows"] = if seen.is_empty() {
        Value::Null
    } else {
        let all: Vec<&LabelledText> = data.rows.iter().collect();
        metrics(&all)
    };
    Ok(report)
}

fn metrics_text(title: &str, v: &Value) -> String {
    let mut c = Confusion::default();
    if let Some(rows) = v["confusion"]["rows_actual_columns_predicted"].as_array() {
        for (a, row) in rows.iter().enumerate() {
            for (p, n) in row.as_array().into_iter().flatten().enumerate() {
                c.matrix[a][p] = n.as_u64().unwrap_or(0);
            }
        }
    }
    c.to_text(title)
}

fn report_text(r: &Value) -> String {
    let mut out = format!(
        "{}: {} rows read, {} bad, {} trained on by {}\n",
        r["file"].as_str().unwrap_or(""),
        r["rows_read"],
        r["bad_rows"].as_array().map_or(0, Vec::len),
        r["rows_trained_on"],
        r["model"].as_str().unwrap_or("")
    );
    for bad in r["bad_rows"].as_array().into_iter().flatten() {
        out.push_str(&format!("  bad row {}\n", bad.as_str().unwrap_or("")));
    }
    out.push_str(&metrics_text(
        "offline classifier, rows it was not trained on",
        r,
    ));
    out.push_str(&metrics_text(
        "VADER baseline, same rows",
        &r["baseline"]["metrics"],
    ));
    if !r["all_rows"].is_null() {
        out.push_str(&metrics_text(
            "offline classifier, ALL rows (includes rows it was trained on: optimistic)",
            &r["all_rows"],
        ));
        out.push_str(&metrics_text(
            "VADER baseline, ALL rows",
            &r["all_rows"]["baseline"]["metrics"],
        ));
    }
    out
}

/// `jarvis bench sentiment`: texts/s of the offline scorer on one core, beside tokenising the same texts.
///
/// # Errors
/// [`Exit`] 2 when the file cannot be read.
pub fn bench(file: &Path, rounds: usize) -> anyhow::Result<Value> {
    let data = read(file)?;
    let texts: Vec<&str> = data.rows.iter().map(|r| r.text.as_str()).collect();
    anyhow::ensure!(!texts.is_empty(), "{}: no text to score", file.display());
    let scorer = OfflineScorer::default();
    // Warm up: the model loads on first use.
    let mut checksum = 0.0;
    for t in texts.iter().take(100) {
        checksum += scorer.score_now(t).map(|s| s.score).unwrap_or(0.0);
    }
    let n = texts.len() * rounds;
    let started = Instant::now();
    let mut tokens = 0usize;
    for _ in 0..rounds {
        for t in &texts {
            tokens += std::hint::black_box(tokenize(t)).len();
        }
    }
    let baseline = started.elapsed();
    let started = Instant::now();
    for _ in 0..rounds {
        for t in &texts {
            checksum += std::hint::black_box(scorer.score_now(t))
                .map(|s| s.score)
                .unwrap_or(0.0);
        }
    }
    let ours = started.elapsed();
    let rate = |d: std::time::Duration| (n as f64 / d.as_secs_f64()).round();
    let (ours_rate, base_rate) = (rate(ours), rate(baseline));
    Ok(json!({
        "bench": "sentiment",
        "model": scorer.model_ref().name(),
        "texts": n,
        "threads": 1,
        "texts_per_sec": ours_rate,
        "baseline": "tokenising the same texts (text::tokenize), nothing else",
        "baseline_texts_per_sec": base_rate,
        "ratio": ((ours_rate / base_rate) * 1000.0).round() / 1000.0,
        "tokens": tokens,
        "checksum": (checksum * 1000.0).round() / 1000.0,
    }))
}
