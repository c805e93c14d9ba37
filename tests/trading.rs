//! The trading pipeline end to end: `jarvis up` (paper venue) on real NATS and Postgres, fed real candles.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use common::*;
use jarvis_domain::trading::Portfolio;
use jarvis_domain::RecordedEvent;
use jarvis_testkit::eventually;
use rust_decimal::Decimal;

/// `jarvis up` against the test's servers, killed (SIGKILL) on drop.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn jarvis(env: &Env, args: &[&str], extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jarvis"));
    cmd.args(args)
        .env("JARVIS_DATABASE_URL", env.db.url())
        .env("JARVIS_NATS_URL", env.nats.url())
        .env("JARVIS_LOG", "warn")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd
}

fn up(env: &Env, extra_env: &[(&str, &str)]) -> Up {
    Up(jarvis(env, &["up"], extra_env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start jarvis up"))
}

fn ingest(env: &Env, file: &str) {
    let out = jarvis(env, &["ingest", "candles", file], &[])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The newest `rows` hours of the SOL file, as a file of its own.
fn sol_subset(rows: usize) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/binance_solusdt_1h.csv"
    ))
    .unwrap();
    let subset: Vec<&str> = text.lines().take(rows + 1).collect();
    let path = dir.path().join("binance_solusdt_1h.csv");
    std::fs::write(&path, subset.join("\n") + "\n").unwrap();
    (dir, path.to_string_lossy().into_owned())
}

/// Candles the trading consumer has taken (acked or not).
async fn candles_taken(env: &Env) -> u64 {
    let Ok(stream) = env.js.get_stream("JARVIS_EVENTS").await else {
        return 0;
    };
    let Ok(mut consumer) = stream.get_consumer::<PullConfig>("trading").await else {
        return 0;
    };
    consumer
        .info()
        .await
        .map(|i| i.delivered.consumer_sequence)
        .unwrap_or(0)
}

/// Waits until every stored candle was relayed and the trading consumer has finished with all of them.
async fn wait_idle(env: &Env, candles: usize) {
    eventually(
        Duration::from_secs(600),
        "the trading pipeline to finish",
        || async {
            let stream = env.js.get_stream("JARVIS_EVENTS").await.ok()?;
            let mut consumer = stream.get_consumer::<PullConfig>("trading").await.ok()?;
            let info = consumer.info().await.ok()?;
            let relayed = info.delivered.consumer_sequence as usize;
            (relayed >= candles && info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        },
    )
    .await;
}

fn of_type<'a>(events: &'a [RecordedEvent], event_type: &str) -> Vec<&'a RecordedEvent> {
    events
        .iter()
        .filter(|e| e.event_type == event_type)
        .collect()
}

fn dec(e: &RecordedEvent, field: &str) -> Decimal {
    Decimal::from_str(
        e.payload[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {}", e.payload)),
    )
    .unwrap()
}

/// Fills reconcile with the portfolio exactly; no order is filled twice; every fill traces to a candle.
async fn check_books(env: &Env) -> Vec<RecordedEvent> {
    // No candle was given up on.
    let mut dlq = env.js.get_stream("JARVIS_DLQ").await.unwrap();
    assert_eq!(
        dlq.info().await.unwrap().state.messages,
        0,
        "dead-lettered messages"
    );
    let all = env
        .store
        .read_after(jarvis_store::Checkpoint::default(), 10_000_000)
        .await
        .unwrap();
    let fills = of_type(&all, "OrderFilled");
    let changes = of_type(&all, "PositionChanged");
    // Each fill once, and once in the portfolio.
    let ids: Vec<&str> = fills
        .iter()
        .map(|e| e.payload["fill_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "a fill recorded twice"
    );
    let applied: Vec<&str> = changes
        .iter()
        .map(|e| e.payload["fill_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        applied.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>(),
        "fills vs portfolio"
    );
    assert_eq!(applied.len(), ids.len(), "a fill applied twice");
    // No order filled beyond its quantity, and at most once complete.
    let mut per_order: HashMap<&str, (Decimal, usize)> = HashMap::new();
    for f in &fills {
        let entry = per_order.entry(f.aggregate_id.as_str()).or_default();
        entry.0 += dec(f, "quantity");
        entry.1 += usize::from(f.payload["complete"] == true);
    }
    for p in of_type(&all, "TradeProposed") {
        if let Some((filled, complete)) = per_order.get(p.aggregate_id.as_str()) {
            assert!(
                *filled <= dec(p, "quantity"),
                "order {} overfilled",
                p.aggregate_id
            );
            assert!(*complete <= 1);
        }
    }
    // Cash, positions and fees, recomputed from the fills alone, equal the portfolio's.
    let initial = Decimal::from(10_000);
    let (mut cash, mut fees) = (initial, Decimal::ZERO);
    let mut positions: BTreeMap<String, Decimal> = BTreeMap::new();
    for f in &fills {
        let (q, p, fee) = (dec(f, "quantity"), dec(f, "price"), dec(f, "fee"));
        let symbol = f.payload["symbol"].as_str().unwrap().to_string();
        match f.payload["side"].as_str().unwrap() {
            "buy" => {
                cash -= q * p + fee;
                *positions.entry(symbol).or_default() += q;
            }
            _ => {
                cash += q * p - fee;
                *positions.entry(symbol).or_default() -= q;
            }
        }
        fees += fee;
    }
    let portfolio: Portfolio = env
        .store
        .load("main", Some(jarvis_agents::runtime::SNAPSHOT_EVERY))
        .await
        .unwrap();
    assert_eq!(
        portfolio.cash(),
        cash,
        "cash reconciles exactly with the fills"
    );
    assert_eq!(portfolio.fees_paid(), fees, "fees reconcile");
    for (symbol, quantity) in positions {
        let held = portfolio
            .position(&symbol.parse().unwrap())
            .map(|p| p.quantity)
            .unwrap_or_default();
        assert_eq!(held, quantity, "{symbol} position reconciles");
    }
    // Every fill traces back to the candle that caused the decision.
    for f in &fills {
        let chain = env.store.causal_chain((*f).clone()).await.unwrap();
        let types: Vec<&str> = chain.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "CandleClosed",
                "TradeProposed",
                "OrderAdmitted",
                "TradeApproved",
                "OrderSubmitted",
                "OrderFilled"
            ],
            "the causal chain of fill {}",
            f.payload["fill_id"]
        );
    }
    all
}

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
