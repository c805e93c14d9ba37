//! `jarvis backtest` from the command line: reports, bad input, sweeps, CSV outputs, recording the run.

use std::process::{Command, Output};

use jarvis_testkit::TestDb;

const SOL: &str = "data/binance_solusdt_1h.csv";

/// `jarvis` run from the repository root with a clean environment; `db` is where runs are recorded.
fn jarvis(args: &[&str], db: Option<&TestDb>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jarvis"));
    cmd.args(args)
        .env_remove("JARVIS_CONFIG")
        .env("JARVIS_LOG", "error")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    if let Some(db) = db {
        cmd.env("JARVIS_DATABASE_URL", db.url());
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run jarvis")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The newest `rows` hours of the SOL file, as a file of its own.
fn sol_subset(dir: &tempfile::TempDir, rows: usize) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/binance_solusdt_1h.csv"
    ))
    .unwrap();
    let subset: Vec<&str> = text.lines().take(rows + 1).collect();
    let path = dir.path().join("binance_solusdt_1h.csv");
    std::fs::write(&path, subset.join("\n") + "\n").unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn the_json_report_is_byte_identical_run_after_run_and_complete() {
    let args = [
        "backtest",
        "--data",
        SOL,
        "--seed",
        "3",
        "--json",
        "--no-record",
    ];
    let first = jarvis(&args, None, &[("JARVIS_TREASURY__DRIFT_BAND", "0.01")]);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = jarvis(&args, None, &[("JARVIS_TREASURY__DRIFT_BAND", "0.01")]);
    assert_eq!(stdout(&first), stdout(&second));
    let report: serde_json::Value = serde_json::from_str(&stdout(&first)).unwrap();
    for key in [
        "total_return",
        "cagr",
        "sharpe",
        "sortino",
        "max_drawdown",
        "max_drawdown_peak_at",
        "max_drawdown_trough_at",
        "win_rate",
        "profit_factor",
        "trades",
        "fees",
        "exposure_time",
        "buy_and_hold_return",
    ] {
        assert!(report.get(key).is_some(), "no {key} in {report}");
    }
    assert_eq!(report["seed"], 3);
    assert!(report["trades"].as_u64().unwrap() > 0);
}

#[test]
fn the_equity_curve_and_trades_go_to_csv() {
    let dir = tempfile::tempdir().unwrap();
    let equity = dir.path().join("equity.csv");
    let trades = dir.path().join("trades.csv");
    let out = jarvis(
        &[
            "backtest",
            "--data",
            SOL,
            "--no-record",
            "--equity-csv",
            equity.to_str().unwrap(),
            "--trades-csv",
            trades.to_str().unwrap(),
        ],
        None,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.contains("total return") && table.contains("buy and hold"),
        "{table}"
    );
    let equity = std::fs::read_to_string(equity).unwrap();
    assert!(equity.starts_with("time,equity,cash,drawdown\n"));
    assert_eq!(equity.lines().count(), 5_363 + 1);
    let trades = std::fs::read_to_string(trades).unwrap();
    assert!(trades.starts_with("time,order_id,symbol,side,quantity,price,fee,"));
    assert!(trades.lines().count() > 1);
}

#[test]
fn bad_input_is_refused_with_the_file_line_or_key() {
    let dir = tempfile::tempdir().unwrap();
    // A bad row.
    let bad = dir.path().join("binance_solusdt_1h.csv");
    let mut text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/binance_solusdt_1h.csv"
    ))
    .unwrap();
    text = text.replacen(",SOL/USDT,", ",SOL/USDT,abc", 1);
    std::fs::write(&bad, &text).unwrap();
    let out = jarvis(
        &["backtest", "--data", bad.to_str().unwrap(), "--no-record"],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("binance_solusdt_1h.csv:2:"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "no report for refused input");
    let out = jarvis(
        &[
            "backtest",
            "--data",
            bad.to_str().unwrap(),
            "--no-record",
            "--skip-bad",
            "--json",
        ],
        None,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"bad_rows_skipped\": 1"));
    // Unknown key, impossible value.
    let config = dir.path().join("jarvis.toml");
    std::fs::write(&config, "[treasury]\ndrift_bandd = 0.1\n").unwrap();
    let out = jarvis(
        &[
            "backtest",
            "--config",
            config.to_str().unwrap(),
            "--data",
            SOL,
            "--no-record",
        ],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("drift_bandd"), "{}", stderr(&out));
    std::fs::write(&config, "[treasury]\ndrift_band = 1.5\n").unwrap();
    let out = jarvis(
        &[
            "backtest",
            "--config",
            config.to_str().unwrap(),
            "--data",
            SOL,
            "--no-record",
        ],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("treasury.drift_band = 1.5"),
        "{}",
        stderr(&out)
    );
    // A range with nothing in it; no input at all.
    let out = jarvis(
        &[
            "backtest",
            "--data",
            SOL,
            "--start",
            "2015-01-01",
            "--end",
            "2016-01-01",
            "--no-record",
        ],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("SOL/USDT") && stderr(&out).contains("no candles between"));
    let out = jarvis(&["backtest", "--no-record"], None, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--data"), "{}", stderr(&out));
}

#[test]
fn a_sweep_ranks_every_point_and_names_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = sol_subset(&dir, 1_500);
    let out = jarvis(
        &[
            "backtest",
            "--data",
            &file,
            "--no-record",
            "--json",
            "--threads",
            "2",
            "--top",
            "2",
            "--sweep",
            "treasury.drift_band=0.01..0.05:0.02",
            "--sweep",
            "treasury.momentum_weight=0..1.5:0.5",
        ],
        None,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let outcome: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(outcome["points"], 12);
    // momentum_weight = 1.5 is out of range: three points fail, each named by its key.
    assert_eq!(outcome["completed"], 9);
    assert_eq!(outcome["failed"], 3);
    assert!(outcome["failures"][0]
        .as_str()
        .unwrap()
        .contains("momentum_weight"));
    let top = outcome["top"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    assert!(top[0]["score"].as_f64().unwrap() >= top[1]["score"].as_f64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_recorded_once_and_replays_candles_from_the_store() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let file = sol_subset(&dir, 300);
    let run = |args: Vec<&str>| {
        let out = jarvis(&args, Some(&db), &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        out
    };
    let first = run(vec!["backtest", "--data", &file, "--json"]);
    assert!(stderr(&first).contains("recorded as backtest run"));
    run(vec!["backtest", "--data", &file, "--json"]);
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let (runs,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'BacktestCompleted'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(runs, 1, "the same run recorded twice is one run");
    // The same candles ingested, replayed from the store: the same report.
    run(vec!["ingest", "candles", &file]);
    let from_store = run(vec!["backtest", "--from-store", "--json", "--no-record"]);
    let a: serde_json::Value = serde_json::from_str(&stdout(&first)).unwrap();
    let b: serde_json::Value = serde_json::from_str(&stdout(&from_store)).unwrap();
    for key in ["total_return", "trades", "fees", "final_equity", "candles"] {
        assert_eq!(a[key], b[key], "{key}");
    }
    assert_eq!(b["sentiment_scores"], 0);
    // Recorded sentiment is replayed at its event time and moves the strategy: a very bearish SOL. (A
    // target of 0.1, so that the tilted target is not hidden under the cap of 0.25 or risk's limits.)
    let config = dir.path().join("jarvis.toml");
    std::fs::write(&config, "[treasury.targets]\n\"SOL/USDT\" = 0.1\n").unwrap();
    let config = config.to_string_lossy().into_owned();
    let run_uncapped = || {
        let out = jarvis(
            &[
                "backtest",
                "--config",
                &config,
                "--from-store",
                "--json",
                "--no-record",
            ],
            Some(&db),
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap()
    };
    let b = run_uncapped();
    let store = jarvis_store::EventStore::connect(db.url(), 2)
        .await
        .unwrap();
    let first_close: chrono::DateTime<chrono::Utc> = a["start"].as_str().unwrap().parse().unwrap();
    for hour in 0..300 {
        let score = jarvis_domain::sentiment::SentimentScore {
            token: "SOL".into(),
            score: rust_decimal::Decimal::new(-1, 0),
            label: jarvis_domain::sentiment::SentimentLabel::Bearish,
            confidence: rust_decimal::Decimal::ONE,
            model: "test".into(),
            source_event: uuid::Uuid::now_v7(),
            source_type: "TweetReceived".into(),
            at: first_close + chrono::Duration::hours(hour),
        };
        jarvis_store::execute_with_retry(
            &store.cqrs::<jarvis_domain::sentiment::TokenSentiment>(()),
            &score.aggregate_id(),
            jarvis_domain::sentiment::SentimentCommand::Record(score),
            &jarvis_domain::EventMetadata::root("test-sentiment"),
            3,
        )
        .await
        .unwrap();
    }
    let c = run_uncapped();
    assert!(c["sentiment_scores"].as_u64().unwrap() > 250, "{c}");
    assert_ne!(
        (&b["trades"], &b["final_equity"]),
        (&c["trades"], &c["final_equity"]),
        "a bearish SOL all along changes what the strategy does"
    );
}

/// The newest `rows` hours of a data file, as a file of its own in `dir`.
fn subset(dir: &tempfile::TempDir, name: &str, rows: usize) -> String {
    let text =
        std::fs::read_to_string(format!("{}/../data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let subset: Vec<&str> = text.lines().take(rows + 1).collect();
    let path = dir.path().join(name);
    std::fs::write(&path, subset.join("\n") + "\n").unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_interleave_appends_several_symbols_in_close_time_order_like_a_live_feed() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let sol = subset(&dir, "binance_solusdt_1h.csv", 48);
    let eth = subset(&dir, "binance_ethusdt_1h.csv", 48);
    let out = jarvis(
        &["ingest", "candles", "--interleave", &sol, &eth],
        Some(&db),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let rows: Vec<(serde_json::Value,)> = sqlx::query_as(
        "SELECT payload FROM events WHERE event_type = 'CandleClosed' ORDER BY position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 96);
    let order: Vec<(String, String)> = rows
        .iter()
        .map(|(p,)| {
            let c = &p["CandleClosed"];
            (
                c["close_time"].as_str().unwrap().to_string(),
                c["symbol"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(
        order, sorted,
        "appended in close-time order across the files"
    );
    assert_ne!(order[0].1, order[1].1, "the two symbols alternate");
}
