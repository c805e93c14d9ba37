//! The Jupiter venue end to end on real NATS and Postgres, against the fake Jupiter and the fake Solana RPC:
//! an approved order is submitted, quoted, gated, signed, sent, confirmed and filled, and the portfolio
//! books the fill; every way it can go wrong ends as an event with its reason; redelivery never sends
//! twice; the keypair never reaches an event, a log line or an error. And the live price poller.

mod common;

use std::io::Write as _;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use jarvis_agents::execution::jupiter::{JupiterSettings, JupiterVenue};
use jarvis_agents::execution::wallet::Wallet;
use jarvis_agents::execution::{JupiterExecution, SystemClock};
use jarvis_agents::market::price_poller::{PollError, PollerSettings, PricePoller};
use jarvis_agents::relay::{run_relay, RelaySettings};
use jarvis_agents::runtime::SNAPSHOT_EVERY;
use jarvis_bus::{run_consumer, ConsumerSettings, Envelope, Handler};
use jarvis_domain::market::PriceFeed;
use jarvis_domain::trading::order::{Order, OrderCommand, OrderStatus, TradeProposal};
use jarvis_domain::trading::portfolio::{Portfolio, PortfolioCommand};
use jarvis_domain::trading::{OrderId, PricePoint, Rationale, Side};
use jarvis_domain::{AnyEvent, EventMetadata, RecordedEvent, Symbol};
use jarvis_store::{execute_with_retry, EventStore};
use jarvis_testkit::eventually;
use jarvis_testkit::fakes::jupiter::FakeJupiter;
use jarvis_testkit::fakes::solana_rpc::{FakeSolanaRpc, SendMode};
use rust_decimal::Decimal;

struct World {
    env: Env,
    jupiter: FakeJupiter,
    rpc: FakeSolanaRpc,
    dir: tempfile::TempDir,
    keypair_json: String,
    pubkey: String,
}

impl World {
    async fn start() -> Self {
        let env = Env::start().await;
        let jupiter = FakeJupiter::start().await;
        let rpc = FakeSolanaRpc::start().await;
        let dir = tempfile::tempdir().unwrap();
        let wallet = Wallet::generate();
        let keypair_json = wallet.to_json();
        std::fs::write(dir.path().join("id.json"), &keypair_json).unwrap();
        let pubkey = wallet.pubkey().to_string();
        rpc.expect_signer(&pubkey);
        open_portfolio(&env.store).await;
        Self {
            env,
            jupiter,
            rpc,
            dir,
            keypair_json,
            pubkey,
        }
    }

    fn settings(&self, live: bool) -> JupiterSettings {
        JupiterSettings {
            jupiter_url: self.jupiter.url(),
            rpc_url: self.rpc.url(),
            live,
            keypair_path: Some(self.dir.path().join("id.json")),
            confirm_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(50),
            http_timeout: Duration::from_secs(5),
            ..JupiterSettings::default()
        }
    }

    fn agent(&self, live: bool) -> JupiterExecution {
        let venue = JupiterVenue::new(self.settings(live), Arc::new(SystemClock)).unwrap();
        JupiterExecution::new(self.env.store.clone(), venue)
    }

    /// Pieces of the secret that must never appear anywhere.
    fn secrets(&self) -> Vec<String> {
        let numbers: Vec<&str> = self.keypair_json[1..self.keypair_json.len() - 1]
            .split(',')
            .collect();
        let bytes: Vec<u8> = numbers.iter().map(|n| n.parse().unwrap()).collect();
        vec![
            numbers[..8].join(","),
            numbers[..8].join(", "),
            bs58_of(&bytes),
            bs58_of(&bytes[..32]),
        ]
    }
}

fn bs58_of(bytes: &[u8]) -> String {
    // Base58 without a dependency: the alphabet and big-number division.
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut digits: Vec<u8> = vec![];
    for &b in bytes {
        let mut carry = b as u32;
        for d in digits.iter_mut() {
            carry += (*d as u32) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    std::iter::repeat_n(b'1', zeros)
        .chain(digits.iter().rev().map(|d| ALPHABET[*d as usize]))
        .map(char::from)
        .collect()
}

fn t0() -> DateTime<Utc> {
    "2026-11-21T10:00:00Z".parse().unwrap()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

async fn open_portfolio(store: &EventStore) {
    let cqrs = store.snapshot_cqrs::<Portfolio>(SNAPSHOT_EVERY, ());
    let open = PortfolioCommand::Open {
        quote_asset: "USDC".into(),
        initial_cash: Decimal::from(10_000),
        at: t0(),
    };
    execute_with_retry(&cqrs, "main", open, &EventMetadata::root("test"), 5)
        .await
        .unwrap();
}

/// Proposes and approves an order; returns its id.
async fn approve(store: &EventStore, key: &str, side: Side, quantity: &str) -> OrderId {
    let order_id = OrderId::derived(key);
    let symbol = Symbol::new_checked("SOL/USDC").unwrap();
    let proposal = TradeProposal {
        order_id,
        symbol: symbol.clone(),
        side,
        quantity: dec(quantity),
        reference: PricePoint {
            symbol,
            price: dec("150"),
            at: t0(),
        },
        proposed_at: t0(),
        rationale: Rationale {
            strategy: "test".into(),
            rule: "manual".into(),
            inputs: serde_json::json!({}).into(),
            evidence: vec![],
            summary: "a test order".into(),
        },
    };
    let cqrs = store.cqrs::<Order>(());
    let id = order_id.to_string();
    let meta = EventMetadata::root("test");
    execute_with_retry(&cqrs, &id, OrderCommand::Propose(proposal), &meta, 5)
        .await
        .unwrap();
    execute_with_retry(
        &cqrs,
        &id,
        OrderCommand::Approve { decided_at: t0() },
        &meta,
        5,
    )
    .await
    .unwrap();
    order_id
}

async fn events_of(store: &EventStore, order: OrderId) -> Vec<RecordedEvent> {
    store.events_of("Order", &order.to_string()).await.unwrap()
}

fn types(events: &[RecordedEvent]) -> Vec<String> {
    events.iter().map(|e| e.event_type.clone()).collect()
}

/// Delivers the order's `TradeApproved` to the agent as the bus would.
async fn deliver(agent: &JupiterExecution, store: &EventStore, order: OrderId) {
    let approved = events_of(store, order)
        .await
        .into_iter()
        .find(|e| e.event_type == "TradeApproved")
        .unwrap();
    let headers = jarvis_bus::envelope::headers_for(&approved);
    let env = Envelope::from_parts(
        &approved.subject(),
        Some(&headers),
        bytes::Bytes::from(approved.payload.to_string()),
    )
    .unwrap();
    let event = AnyEvent::decode(&env.ce_type, &env.data).unwrap();
    agent.handle(&env, event).await.unwrap();
}

async fn order_of(store: &EventStore, order: OrderId) -> Order {
    store.load(&order.to_string(), None).await.unwrap()
}

async fn portfolio(store: &EventStore) -> Portfolio {
    store.load("main", Some(SNAPSHOT_EVERY)).await.unwrap()
}

/// A log sink for the test's thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_approved_order_is_sent_confirmed_filled_and_booked_through_the_bus_and_the_key_stays_secret(
) {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let w = World::start().await;
    let store = w.env.store.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let relay = tokio::spawn(run_relay(
        store.clone(),
        w.env.js.clone(),
        RelaySettings::default(),
        until(stopped.clone()),
    ));
    let agent = w.agent(true);
    let js = w.env.js.clone();
    let consumer_stop = until(stopped.clone());
    let consumer = tokio::spawn(async move {
        let settings =
            ConsumerSettings::new("execution-jupiter", "jarvis.evt.trade.TradeApproved.>");
        run_consumer(&js, &settings, &agent, consumer_stop)
            .await
            .unwrap();
    });
    let order = approve(&store, "happy", Side::Buy, "2").await;
    let done = eventually(Duration::from_secs(60), "the order to fill", || async {
        let o = order_of(&store, order).await;
        (o.status() == OrderStatus::Filled).then_some(o)
    })
    .await;
    // Booked in the portfolio too (the agent applies the fill right after recording it).
    let booked = eventually(
        Duration::from_secs(30),
        "the portfolio to book the fill",
        || async {
            let p = portfolio(&store).await;
            let held = p
                .position(&Symbol::new_checked("SOL/USDC").unwrap())
                .map(|pos| pos.quantity);
            (held == Some(dec("2"))).then_some(p)
        },
    )
    .await;
    let _ = stop.send(true);
    let _ = relay.await;
    let _ = consumer.await;

    let events = events_of(&store, order).await;
    assert_eq!(
        types(&events),
        [
            "TradeProposed",
            "TradeApproved",
            "OrderSubmitted",
            "OrderSent",
            "OrderFilled"
        ]
    );
    assert_eq!(events[2].payload["venue"], "jupiter");
    let signature = events[3].payload["signature"].as_str().unwrap().to_string();
    let filled = &events[4].payload;
    assert_eq!(filled["fill_id"], signature.as_str());
    assert_eq!(filled["swap"]["signature"], signature.as_str());
    assert_eq!(filled["swap"]["simulated"], false);
    assert_eq!(filled["swap"]["in_amount"], "300000000");
    assert_eq!(filled["swap"]["out_amount"], "2000000000");
    assert_eq!(dec(filled["price"].as_str().unwrap()), dec("150"));
    assert_eq!(filled["complete"], true);
    // Causes: submitted ← approved, sent ← submitted, filled ← sent.
    assert_eq!(events[2].metadata.causation_id, events[1].event_id);
    assert_eq!(events[3].metadata.causation_id, events[2].event_id);
    assert_eq!(events[4].metadata.causation_id, events[3].event_id);
    assert_eq!(done.fills().len(), 1);
    // 10,000 - 300 - fee (15,000 lamports at 150 = 0.00225 USDC).
    assert_eq!(booked.cash(), dec("9699.99775"));
    assert_eq!(w.rpc.calls().accepted, vec![signature]);
    assert_eq!(w.rpc.calls().bad_signatures, 0);
    // The keypair is nowhere: not in any event, not in the logs.
    let all = store
        .read_after(jarvis_store::Checkpoint::default(), 1_000)
        .await
        .unwrap();
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("sending"), "the logs were captured");
    for secret in w.secrets() {
        for e in &all {
            let text = format!("{} {:?}", e.payload, e.metadata);
            assert!(!text.contains(&secret), "secret in event {}", e.event_type);
        }
        assert!(!logs.contains(&secret), "secret in the logs");
    }
    assert!(logs.contains(&w.pubkey) || !logs.is_empty());
}

#[tokio::test]
async fn a_quote_broken_by_the_gate_is_rejected_with_its_numbers_and_nothing_is_sent() {
    let w = World::start().await;
    w.jupiter.script(|s| {
        s.price_impact_pct = "0.025".into();
        s.quote_slippage_bps = Some(300);
    });
    let agent = w.agent(true);
    let order = approve(&w.env.store, "gated", Side::Buy, "2").await;
    deliver(&agent, &w.env.store, order).await;
    let events = events_of(&w.env.store, order).await;
    assert_eq!(
        types(&events),
        [
            "TradeProposed",
            "TradeApproved",
            "OrderSubmitted",
            "QuoteRejected"
        ]
    );
    let checks = events[3].payload["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0]["check"], "price_impact");
    assert_eq!(checks[0]["limit"], "100");
    assert_eq!(checks[0]["actual"], "250.00");
    assert_eq!(checks[1]["check"], "slippage");
    assert_eq!(checks[1]["limit"], "50");
    assert_eq!(checks[1]["actual"], "300");
    assert_eq!(
        order_of(&w.env.store, order).await.status(),
        OrderStatus::Failed
    );
    assert_eq!(w.jupiter.calls().swaps, 0);
    assert_eq!(w.rpc.calls().send_transaction, 0);
    assert_eq!(portfolio(&w.env.store).await.cash(), Decimal::from(10_000));
}

#[tokio::test]
async fn a_refused_send_and_an_unconfirmed_transaction_fail_the_order_with_the_signature() {
    let w = World::start().await;
    let agent = w.agent(true);
    w.rpc.set_mode(SendMode::Refuse);
    let refused = approve(&w.env.store, "refused", Side::Buy, "1").await;
    deliver(&agent, &w.env.store, refused).await;
    let events = events_of(&w.env.store, refused).await;
    assert_eq!(
        types(&events),
        [
            "TradeProposed",
            "TradeApproved",
            "OrderSubmitted",
            "OrderSent",
            "OrderFailed"
        ]
    );
    let reason = events[4].payload["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("send failed, nothing landed"),
        "{reason}"
    );

    w.rpc.set_mode(SendMode::NeverConfirm);
    let lost = approve(&w.env.store, "unconfirmed", Side::Buy, "1").await;
    deliver(&agent, &w.env.store, lost).await;
    let events = events_of(&w.env.store, lost).await;
    assert_eq!(
        types(&events),
        [
            "TradeProposed",
            "TradeApproved",
            "OrderSubmitted",
            "OrderSent",
            "OrderFailed"
        ]
    );
    let signature = events[3].payload["signature"].as_str().unwrap();
    assert_eq!(
        events[4].payload["reason"],
        format!(
            "unconfirmed after 1 s, signature {signature}: check it on chain before trading this pair again"
        )
    );
    assert_eq!(portfolio(&w.env.store).await.cash(), Decimal::from(10_000));
}

#[tokio::test]
async fn a_dry_run_fills_simulated_at_the_quote_and_never_calls_send_transaction() {
    let w = World::start().await;
    let agent = w.agent(false);
    let order = approve(&w.env.store, "dry", Side::Buy, "2").await;
    deliver(&agent, &w.env.store, order).await;
    let events = events_of(&w.env.store, order).await;
    assert_eq!(
        types(&events),
        [
            "TradeProposed",
            "TradeApproved",
            "OrderSubmitted",
            "OrderFilled"
        ]
    );
    let filled = &events[3].payload;
    assert_eq!(filled["swap"]["simulated"], true);
    assert_eq!(filled["swap"]["amounts_from"], "quote");
    assert!(filled["swap"]["signature"].is_null());
    assert_eq!(filled["filled_at"], "2026-11-21T10:00:00Z");
    let p = portfolio(&w.env.store).await;
    assert_eq!(
        p.position(&Symbol::new_checked("SOL/USDC").unwrap())
            .unwrap()
            .quantity,
        dec("2")
    );
    assert_eq!(w.rpc.calls().send_transaction, 0);
    assert!(w.rpc.calls().methods.is_empty());
    assert_eq!(w.jupiter.calls().swaps, 0);
}

#[tokio::test]
async fn redelivery_never_sends_twice_and_a_sent_order_after_a_crash_is_looked_up_not_resent() {
    let w = World::start().await;
    let agent = w.agent(true);
    let order = approve(&w.env.store, "twice", Side::Buy, "1").await;
    deliver(&agent, &w.env.store, order).await;
    deliver(&agent, &w.env.store, order).await;
    deliver(&agent, &w.env.store, order).await;
    assert_eq!(w.rpc.calls().send_transaction, 1);
    assert_eq!(
        types(&events_of(&w.env.store, order).await),
        [
            "TradeProposed",
            "TradeApproved",
            "OrderSubmitted",
            "OrderSent",
            "OrderFilled"
        ]
    );
    let p = portfolio(&w.env.store).await;
    assert_eq!(
        p.position(&Symbol::new_checked("SOL/USDC").unwrap())
            .unwrap()
            .quantity,
        dec("1"),
        "booked once"
    );

    // A crash right after the signature was recorded: on restart it is looked up, never sent.
    let crashed = approve(&w.env.store, "crashed", Side::Buy, "1").await;
    let cqrs = w.env.store.cqrs::<Order>(());
    let id = crashed.to_string();
    let meta = EventMetadata::root("test");
    let submit = OrderCommand::Submit {
        venue: "jupiter".into(),
        submitted_at: t0(),
    };
    execute_with_retry(&cqrs, &id, submit, &meta, 5)
        .await
        .unwrap();
    let sig =
        "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW";
    let sent = OrderCommand::RecordSent {
        signature: sig.into(),
        last_valid_block_height: 1_000,
        sent_at: t0(),
    };
    execute_with_retry(&cqrs, &id, sent, &meta, 5)
        .await
        .unwrap();
    let sends = w.rpc.calls().send_transaction;
    deliver(&agent, &w.env.store, crashed).await;
    assert_eq!(w.rpc.calls().send_transaction, sends, "nothing sent again");
    let events = events_of(&w.env.store, crashed).await;
    let last = events.last().unwrap();
    assert_eq!(last.event_type, "OrderFailed");
    let reason = last.payload["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("outcome unknown after restart, signature {sig}")),
        "{reason}"
    );
}

#[tokio::test]
async fn a_halted_book_submits_nothing() {
    let w = World::start().await;
    let cqrs = w
        .env
        .store
        .snapshot_cqrs::<jarvis_domain::trading::RiskBook>(SNAPSHOT_EVERY, ());
    let halt = jarvis_domain::trading::RiskCommand::Halt {
        reason: "test".into(),
        at: t0(),
    };
    execute_with_retry(&cqrs, "main", halt, &EventMetadata::root("test"), 5)
        .await
        .unwrap();
    let agent = w.agent(true);
    let order = approve(&w.env.store, "halted", Side::Buy, "1").await;
    deliver(&agent, &w.env.store, order).await;
    assert_eq!(
        order_of(&w.env.store, order).await.status(),
        OrderStatus::Approved
    );
    assert_eq!(w.jupiter.calls().quotes, 0);
}

#[tokio::test]
async fn the_price_poller_writes_price_observed_and_survives_429_and_500() {
    let w = World::start().await;
    w.jupiter.script(|s| {
        s.price_failures = [429, 500].into_iter().collect();
    });
    let settings = PollerSettings {
        base_url: w.jupiter.url(),
        symbols: vec![Symbol::new_checked("SOL/USDC").unwrap()],
        interval: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        http_timeout: Duration::from_secs(5),
        tokens: Default::default(),
    };
    let poller =
        PricePoller::new(w.env.store.clone(), settings.clone(), Arc::new(SystemClock)).unwrap();
    let err = poller.poll_once().await.unwrap_err();
    assert!(
        matches!(&err, PollError::Api(e) if e.to_string().contains("rate limited (HTTP 429), retry after 1 s")),
        "{err}"
    );
    let err = poller.poll_once().await.unwrap_err();
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    assert_eq!(poller.poll_once().await.unwrap(), 1);
    let ids = w.jupiter.calls().last_price_ids.unwrap();
    assert!(
        ids.contains("So11111111111111111111111111111111111111112")
            && ids.contains("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v")
    );

    // Running: it backs off through more failures and keeps writing.
    w.jupiter
        .script(|s| s.price_failures = [429, 500, 503].into_iter().collect());
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let runner = PricePoller::new(w.env.store.clone(), settings, Arc::new(SystemClock)).unwrap();
    let task = tokio::spawn(runner.run(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let store = w.env.store.clone();
    let observed = eventually(Duration::from_secs(30), "three observations", || async {
        let all = store
            .read_after(jarvis_store::Checkpoint::default(), 10_000)
            .await
            .unwrap();
        let prices: Vec<RecordedEvent> = all
            .into_iter()
            .filter(|e| e.event_type == "PriceObserved")
            .collect();
        (prices.len() >= 3).then_some(prices)
    })
    .await;
    let _ = stop.send(true);
    task.await.unwrap();
    assert!(w.jupiter.calls().prices >= 6);
    let first = &observed[0];
    assert_eq!(first.aggregate_type, "PriceFeed");
    assert_eq!(first.payload["symbol"], "SOL/USDC");
    assert_eq!(first.payload["price"], "150");
    assert_eq!(first.payload["source"], "jupiter-price-v3");
    assert_eq!(first.context(), "market");
    let feed: PriceFeed = store.load(&first.aggregate_id, None).await.unwrap();
    assert!(!feed.is_empty());
}

fn jarvis(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jarvis"));
    cmd.args(args)
        .env_remove("JARVIS_CONFIG")
        .env("JARVIS_LOG", "warn")
        .current_dir(std::env::temp_dir());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn live_needs_the_flag_the_config_and_a_readable_keypair_or_up_exits_2_without_leaking_it() {
    let out = jarvis(&["up", "--live"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--live needs venue.kind = \"jupiter\""),
        "{err}"
    );
    let out = jarvis(&["up", "--live"], &[("JARVIS_VENUE__KIND", "jupiter")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--live needs venue.live = true"), "{err}");
    // A keypair file with a bad byte: the error names the file, never its numbers.
    let dir = tempfile::tempdir().unwrap();
    let wallet = Wallet::generate();
    let json = wallet.to_json();
    let path = dir.path().join("id.json");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(json.replacen(',', ",256,", 1).as_bytes())
        .unwrap();
    let path_text = path.to_string_lossy().into_owned();
    let out = jarvis(
        &["up", "--live"],
        &[
            ("JARVIS_VENUE__KIND", "jupiter"),
            ("JARVIS_VENUE__LIVE", "true"),
            ("JARVIS_VENUE__KEYPAIR_PATH", &path_text),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a Solana CLI keypair"), "{err}");
    let first: String = json[1..].split(',').take(6).collect::<Vec<_>>().join(",");
    assert!(!err.contains(&first) && !err.contains("256"), "{err}");
}

/// `jarvis up` against the test's servers and fakes, killed on drop.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jarvis_up_with_the_jupiter_venue_dry_runs_the_pipeline_on_real_quotes() {
    let env = Env::start().await;
    let jupiter = FakeJupiter::start().await;
    let rpc = FakeSolanaRpc::start().await;
    jupiter.script(|s| {
        let usdt = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB".to_string();
        s.usd_prices.insert(usdt.clone(), Decimal::ONE);
        s.decimals.insert(usdt, 6);
    });
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let command = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jarvis"));
        cmd.args(args)
            .env_remove("JARVIS_CONFIG")
            .env("JARVIS_DATABASE_URL", env.db.url())
            .env("JARVIS_NATS_URL", env.nats.url())
            .env("JARVIS_LOG", "warn")
            .env("JARVIS_VENUE__KIND", "jupiter")
            .env("JARVIS_VENUE__JUPITER_URL", jupiter.url())
            .env("JARVIS_VENUE__RPC_URL", rpc.url())
            .current_dir(root);
        cmd
    };
    let _up = Up(command(&["up"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap());
    // The newest 48 hours of the SOL file.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(format!("{root}/data/binance_solusdt_1h.csv")).unwrap();
    let subset: Vec<&str> = text.lines().take(49).collect();
    let file = dir.path().join("binance_solusdt_1h.csv");
    std::fs::write(&file, subset.join("\n") + "\n").unwrap();
    let out = command(&["ingest", "candles", &file.to_string_lossy()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = env.store.clone();
    let fills = eventually(
        Duration::from_secs(300),
        "a simulated Jupiter fill",
        || async {
            let all = store
                .read_after(jarvis_store::Checkpoint::default(), 100_000)
                .await
                .ok()?;
            let fills: Vec<RecordedEvent> = all
                .into_iter()
                .filter(|e| e.event_type == "OrderFilled")
                .collect();
            (!fills.is_empty()).then_some(fills)
        },
    )
    .await;
    for f in &fills {
        assert_eq!(f.payload["swap"]["simulated"], true, "{}", f.payload);
        assert_eq!(f.payload["swap"]["venue"], "jupiter");
    }
    let all = store
        .read_after(jarvis_store::Checkpoint::default(), 100_000)
        .await
        .unwrap();
    for s in all.iter().filter(|e| e.event_type == "OrderSubmitted") {
        assert_eq!(
            s.payload["venue"], "jupiter",
            "nothing goes to the paper venue"
        );
    }
    assert!(jupiter.calls().quotes >= 1);
    assert_eq!(rpc.calls().send_transaction, 0);
    assert_eq!(jupiter.calls().swaps, 0);
}
