//! The trading pipeline end to end: `jarvis up` (paper venue) on real NATS and Postgres, fed real candles.

mod common;

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use common::books::*;
use common::*;
use jarvis_testkit::eventually;
use rust_decimal::Decimal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paper_trading_replays_the_sol_file_and_the_books_reconcile() {
    let env = Env::start().await;
    let _up = up(&env, &[]);
    ingest(&env, "data/binance_solusdt_1h.csv");
    wait_idle(&env, 5_363).await;
    let all = check_books(&env).await;
    for kind in [
        "TradeProposed",
        "TradeApproved",
        "TradeRejected",
        "OrderSubmitted",
        "OrderFilled",
        "PnlRealized",
    ] {
        assert!(!of_type(&all, kind).is_empty(), "no {kind} in the replay");
    }
    // Every rejection names its rules with numbers.
    for r in of_type(&all, "TradeRejected") {
        let reasons = r.payload["reasons"].as_array().unwrap();
        assert!(
            !reasons.is_empty()
                && reasons
                    .iter()
                    .all(|x| x["rule"].is_string() && x["detail"].is_string())
        );
    }
    // Live/backtest parity: `jarvis backtest` on the same file and configuration makes the same fills.
    let live: Vec<String> = of_type(&all, "PositionChanged")
        .iter()
        .map(|e| {
            format!(
                "{},{},{},{},{},{}",
                e.payload["at"]
                    .as_str()
                    .unwrap()
                    .parse::<chrono::DateTime<chrono::Utc>>()
                    .unwrap()
                    .to_rfc3339(),
                e.payload["symbol"].as_str().unwrap(),
                e.payload["side"].as_str().unwrap(),
                dec(e, "quantity"),
                dec(e, "price"),
                dec(e, "fee")
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let trades = dir.path().join("trades.csv");
    let out = jarvis(
        &env,
        &[
            "backtest",
            "--data",
            "data/binance_solusdt_1h.csv",
            "--json",
            "--no-record",
            "--trades-csv",
            trades.to_str().unwrap(),
        ],
        &[],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backtest: Vec<String> = std::fs::read_to_string(&trades)
        .unwrap()
        .lines()
        .skip(1)
        .map(|row| {
            let f: Vec<&str> = row.split(',').collect();
            let d = |i: usize| Decimal::from_str(f[i]).unwrap();
            format!("{},{},{},{},{},{}", f[0], f[2], f[3], d(4), d(5), d(6))
        })
        .collect();
    assert!(!live.is_empty());
    assert_eq!(
        live, backtest,
        "live fills (left) and backtest fills (right) differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_stops_submissions_until_resumed() {
    let env = Env::start().await;
    // A tight band, so that the strategy proposes on nearly every candle.
    let _up = up(&env, &[("JARVIS_TREASURY__DRIFT_BAND", "0.001")]);
    let (_dir, file) = sol_subset(400);
    ingest(&env, &file);
    let request = |verb: &'static str| {
        let client = env.client.clone();
        async move {
            eventually(Duration::from_secs(30), "jarvis-risk answering", || {
                let client = client.clone();
                async move {
                    client
                        .request(
                            format!("jarvis.cmd.risk.{verb}"),
                            r#"{"reason":"test"}"#.into(),
                        )
                        .await
                        .ok()
                }
            })
            .await
        }
    };
    eventually(Duration::from_secs(120), "100 candles taken", || async {
        (candles_taken(&env).await >= 100).then_some(())
    })
    .await;
    request("halt").await;
    let halted_at = candles_taken(&env).await;
    assert!(
        halted_at < 300,
        "the pipeline outran the test: halted only after {halted_at} candles"
    );
    let resume_at = (halted_at + 100).min(350);
    eventually(
        Duration::from_secs(120),
        "100 more candles taken",
        || async { (candles_taken(&env).await >= resume_at).then_some(()) },
    )
    .await;
    request("resume").await;
    wait_idle(&env, 400).await;
    let all = check_books(&env).await;
    let halted = all
        .iter()
        .find(|e| e.event_type == "TradingHalted" && e.payload["rule"] == "halted")
        .unwrap();
    let resumed = all
        .iter()
        .find(|e| {
            e.event_type == "TradingResumed"
                && e.position > halted.position
                && e.metadata.source == "operator:resume"
        })
        .unwrap();
    let submitted = of_type(&all, "OrderSubmitted");
    let during: Vec<_> = submitted
        .iter()
        .filter(|e| e.position > halted.position && e.position < resumed.position)
        .collect();
    assert!(
        during.is_empty(),
        "orders submitted while halted: {during:?}"
    );
    let rejected_halted = of_type(&all, "TradeRejected")
        .into_iter()
        .filter(|e| e.position > halted.position && e.position < resumed.position)
        .filter(|e| {
            e.payload["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["rule"] == "halted")
        })
        .count();
    assert!(
        rejected_halted > 0,
        "proposals while halted are rejected with rule halted"
    );
    assert!(
        submitted.iter().any(|e| e.position < halted.position),
        "trading before the halt"
    );
    assert!(
        submitted.iter().any(|e| e.position > resumed.position),
        "trading after the resume"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_replay_then_restart_continues_without_duplicate_orders_or_fills() {
    let env = Env::start().await;
    let tight = [("JARVIS_TREASURY__DRIFT_BAND", "0.001")];
    let (_dir, file) = sol_subset(400);
    let first = up(&env, &tight);
    ingest(&env, &file);
    eventually(Duration::from_secs(120), "150 candles taken", || async {
        (candles_taken(&env).await >= 150).then_some(())
    })
    .await;
    drop(first); // SIGKILL, mid-candle or between two
    let _second = up(&env, &tight);
    wait_idle(&env, 400).await;
    let all = check_books(&env).await;
    // One proposal per candle at most, one order per proposal.
    let proposed = of_type(&all, "TradeProposed");
    let orders: HashSet<&str> = proposed.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(orders.len(), proposed.len(), "an order proposed twice");
    let causes: HashSet<uuid::Uuid> = proposed.iter().map(|e| e.metadata.causation_id).collect();
    assert_eq!(causes.len(), proposed.len(), "two proposals for one candle");
    assert!(!of_type(&all, "OrderFilled").is_empty());
}

/// The oldest `rows` hours of the ETH file (August 2017), as a file of its own.
fn eth_oldest(rows: usize) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/binance_ethusdt_1h.csv"
    ))
    .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut subset = vec![lines[0]];
    subset.extend(&lines[lines.len() - rows..]);
    let path = dir.path().join("binance_ethusdt_1h.csv");
    std::fs::write(&path, subset.join("\n") + "\n").unwrap();
    (dir, path.to_string_lossy().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_history_ingested_after_newer_is_stale_and_never_traded() {
    let env = Env::start().await;
    let _up = up(&env, &[]);
    let (_sol_dir, sol) = sol_subset(60);
    ingest(&env, &sol);
    wait_idle(&env, 60).await;
    // Four years older than what the pipeline has already seen.
    let (_eth_dir, eth) = eth_oldest(60);
    ingest(&env, &eth);
    wait_idle(&env, 120).await;
    let all = check_books(&env).await;
    let eth_proposals = of_type(&all, "TradeProposed")
        .into_iter()
        .filter(|e| e.payload["symbol"] == "ETH/USDT")
        .count();
    assert!(
        eth_proposals > 0,
        "the strategy proposed on the old ETH candles"
    );
    let stale = of_type(&all, "TradeRejected")
        .into_iter()
        .filter(|e| e.payload["symbol"] == "ETH/USDT")
        .filter(|e| {
            e.payload["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["rule"] == "stale_price")
        })
        .count();
    assert_eq!(
        stale, eth_proposals,
        "every proposal on the old candles is rejected as stale"
    );
    let submitted_eth = of_type(&all, "OrderSubmitted")
        .into_iter()
        .filter(|e| {
            all.iter().any(|p| {
                p.event_type == "TradeProposed"
                    && p.aggregate_id == e.aggregate_id
                    && p.payload["symbol"] == "ETH/USDT"
            })
        })
        .count();
    assert_eq!(submitted_eth, 0);
}

/// `treasury.llm_review` live asks the LLM router (a fake OpenAI-compatible provider here) about every
/// proposal; `jarvis backtest --from-store` then answers the same reviews from the recorded
/// `LlmCallCompleted` events by prompt hash, calls no provider, and trades exactly as live did. A review
/// with no record stops the run naming its prompt hash, unless `--llm-fallback` says what to answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_reviews_are_replayed_from_the_recorded_answers_by_prompt_hash() {
    use jarvis_testkit::fakes::{openai::FakeOpenAi, Reply};
    let env = Env::start().await;
    let llm = FakeOpenAi::start().await;
    // The first reviews veto, the rest approve.
    llm.push((0..3).map(|_| Reply::text(r#"{"decision":"veto","reason":"too risky"}"#)));
    llm.set_default(Reply::text(
        r#"Here you go: {"decision": "approve", "reason": "in line with the targets"}"#,
    ));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jarvis.toml");
    std::fs::write(
        &config,
        format!(
            "[treasury]\nllm_review = true\n\n[llm.providers.fake]\nkind = \"openai\"\nbase_url = \"{}\"\n\n\
             [llm.routes]\ntrading = [\"fake/gpt-4o-mini\"]\n",
            llm.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let with_config = [("JARVIS_CONFIG", config)];
    let up = up(&env, &with_config);
    let (_data, file) = sol_subset(300);
    ingest(&env, &file);
    wait_idle(&env, 300).await;
    drop(up);
    let all = check_books(&env).await;
    let calls = of_type(&all, "LlmCallCompleted").len();
    assert!(calls > 3, "{calls} reviews");
    assert_eq!(llm.count(), calls, "one provider call per review");
    let vetoed = of_type(&all, "TradeRejected")
        .iter()
        .filter(|r| r.payload["reasons"][0]["rule"] == "llm_review")
        .count();
    assert_eq!(vetoed, 3);
    let live_fills = of_type(&all, "OrderFilled").len();
    assert!(live_fills > 0);
    // Every proposal carries what the model said.
    for p in of_type(&all, "TradeProposed") {
        assert!(
            p.payload["rationale"]["inputs"]["llm_review"]["prompt_hash"].is_string(),
            "{}",
            p.payload
        );
    }

    let backtest = |extra: &[&str]| {
        let mut args = vec!["backtest", "--json", "--no-record"];
        args.extend_from_slice(extra);
        jarvis(&env, &args, &with_config).output().unwrap()
    };
    let out = backtest(&["--from-store"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["llm_answers_replayed"], calls as u64, "{report}");
    assert_eq!(report["llm_fallbacks"], 0);
    assert_eq!(report["orders"]["fills"], live_fills as u64, "{report}");
    assert_eq!(report["rejections_by_rule"]["llm_review"], 3, "{report}");
    assert_eq!(llm.count(), calls, "the backtest called the provider");

    // The same candles from a file: nothing recorded for a file run, so the first review stops it.
    let out = backtest(&["--data", &file]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no recorded answer for prompt hash"),
        "{stderr}"
    );
    let out = backtest(&["--data", &file, "--llm-fallback", "veto"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["llm_fallbacks"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["orders"]["fills"], 0, "{report}");
    assert_eq!(llm.count(), calls, "the backtest called the provider");
}
