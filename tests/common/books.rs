//! The trading pipeline's books, checked from the store: shared by the scenario tests that run `jarvis up`
//! (trading, faults, cluster) as child processes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use jarvis_domain::trading::Portfolio;
use jarvis_domain::RecordedEvent;
use jarvis_testkit::eventually;
use rust_decimal::Decimal;

use super::Env;

/// Where a scenario's servers are: the test's [`Env`], or a fault test's private Postgres and NATS cluster.
pub trait Target {
    /// The database URL `jarvis` gets.
    fn database_url(&self) -> String;
    /// The NATS URL(s) `jarvis` gets (comma-separated for a cluster).
    fn nats_url(&self) -> String;
    /// The test's store client.
    fn store(&self) -> &jarvis_store::EventStore;
    /// The test's JetStream client.
    fn js(&self) -> &async_nats::jetstream::Context;
}

impl Target for Env {
    fn database_url(&self) -> String {
        self.db.url().to_string()
    }
    fn nats_url(&self) -> String {
        self.nats.url()
    }
    fn store(&self) -> &jarvis_store::EventStore {
        &self.store
    }
    fn js(&self) -> &async_nats::jetstream::Context {
        &self.js
    }
}

/// `jarvis up` against the test's servers, killed (SIGKILL) on drop.
pub struct Up(pub Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn jarvis(env: &impl Target, args: &[&str], extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jarvis"));
    cmd.args(args)
        .env("JARVIS_DATABASE_URL", env.database_url())
        .env("JARVIS_NATS_URL", env.nats_url())
        .env("JARVIS_LOG", "warn")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd
}

pub fn up(env: &impl Target, extra_env: &[(&str, &str)]) -> Up {
    Up(jarvis(env, &["up"], extra_env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start jarvis up"))
}

pub fn ingest(env: &impl Target, file: &str) {
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
pub fn sol_subset(rows: usize) -> (tempfile::TempDir, String) {
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
pub async fn candles_taken(env: &impl Target) -> u64 {
    let Ok(stream) = env.js().get_stream("JARVIS_EVENTS").await else {
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
pub async fn wait_idle(env: &impl Target, candles: usize) {
    eventually(
        Duration::from_secs(600),
        "the trading pipeline to finish",
        || async {
            let stream = env.js().get_stream("JARVIS_EVENTS").await.ok()?;
            let mut consumer = stream.get_consumer::<PullConfig>("trading").await.ok()?;
            let info = consumer.info().await.ok()?;
            let relayed = info.delivered.consumer_sequence as usize;
            (relayed >= candles && info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        },
    )
    .await;
}

pub fn of_type<'a>(events: &'a [RecordedEvent], event_type: &str) -> Vec<&'a RecordedEvent> {
    events
        .iter()
        .filter(|e| e.event_type == event_type)
        .collect()
}

pub fn dec(e: &RecordedEvent, field: &str) -> Decimal {
    Decimal::from_str(
        e.payload[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {}", e.payload)),
    )
    .unwrap()
}

/// Fills reconcile with the portfolio exactly; no order is filled twice; every fill traces to a candle.
pub async fn check_books(env: &impl Target) -> Vec<RecordedEvent> {
    // No candle was given up on.
    let mut dlq = env.js().get_stream("JARVIS_DLQ").await.unwrap();
    let dead = dlq.info().await.unwrap().state.messages;
    if dead > 0 {
        let letters = jarvis_bus::dlq::list(env.js(), None)
            .await
            .unwrap_or_default();
        let why: Vec<String> = letters
            .iter()
            .take(5)
            .map(|l| format!("{} ({} deliveries): {}", l.consumer, l.deliveries, l.error))
            .collect();
        panic!("{dead} dead-lettered messages, first: {why:#?}");
    }
    // Every event, not only those the gap-safe reader shows at this instant: the portfolio below is loaded
    // whole, and a tail still hidden behind another test's open transaction would not reconcile with it.
    let all = super::read_everything(env.store()).await;
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
        .store()
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
        let chain = env.store().causal_chain((*f).clone()).await.unwrap();
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
