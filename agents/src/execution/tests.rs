//! The venue against the fake Jupiter and the fake Solana RPC (real clients, real wire formats).

use std::sync::Arc;
use std::time::Duration;

use jarvis_domain::trading::swap::GateCheck;
use jarvis_domain::trading::{OrderId, Side};
use jarvis_domain::Symbol;
use jarvis_testkit::fakes::jupiter::{FakeJupiter, SOL, USDC};
use jarvis_testkit::fakes::solana_rpc::{FakeSolanaRpc, SendMode};
use rust_decimal::Decimal;

use super::jupiter::{Funds, JupiterSettings, JupiterVenue, Outcome, Prepared, SwapOrder};
use super::wallet::Wallet;
use super::{Clock, SteppingClock, SystemClock};

struct World {
    jupiter: FakeJupiter,
    rpc: FakeSolanaRpc,
    _dir: tempfile::TempDir,
    keypair_json: String,
    pubkey: String,
    settings: JupiterSettings,
}

async fn world(live: bool) -> World {
    let jupiter = FakeJupiter::start().await;
    let rpc = FakeSolanaRpc::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wallet = Wallet::generate();
    let keypair_json = wallet.to_json();
    let path = dir.path().join("id.json");
    std::fs::write(&path, &keypair_json).unwrap();
    let pubkey = wallet.pubkey().to_string();
    rpc.expect_signer(&pubkey);
    let settings = JupiterSettings {
        jupiter_url: jupiter.url(),
        rpc_url: rpc.url(),
        live,
        keypair_path: Some(path),
        confirm_timeout: Duration::from_secs(1),
        poll_interval: Duration::from_millis(50),
        http_timeout: Duration::from_secs(5),
        ..JupiterSettings::default()
    };
    World {
        jupiter,
        rpc,
        _dir: dir,
        keypair_json,
        pubkey,
        settings,
    }
}

fn venue(w: &World, clock: Arc<dyn Clock>) -> JupiterVenue {
    JupiterVenue::new(w.settings.clone(), clock).unwrap()
}

fn order(side: Side, quantity: &str) -> SwapOrder {
    SwapOrder {
        order_id: OrderId::derived("test"),
        symbol: Symbol::new_checked("SOL/USDC").unwrap(),
        side,
        quantity: Decimal::from_str_exact(quantity).unwrap(),
    }
}

fn rich() -> Funds {
    Funds {
        cash: Decimal::from(100_000),
        held: Decimal::from(100),
    }
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str_exact(s).unwrap()
}

#[tokio::test]
async fn a_live_buy_is_quoted_signed_sent_confirmed_and_read_from_the_chain() {
    let w = world(true).await;
    let venue = venue(&w, Arc::new(SystemClock));
    let buy = order(Side::Buy, "2");
    let Prepared::Ready(ready) = venue.prepare(&buy, rich()).await else {
        panic!("not ready");
    };
    let Outcome::Filled(fill) = venue.send_and_confirm(&buy, &ready).await else {
        panic!("not filled");
    };
    // 2 SOL at 150 USDC, ExactOut: exactly 2 SOL out, 300 USDC in (from the token balances).
    assert_eq!(fill.quantity, dec("2"));
    assert_eq!(fill.price, dec("150"));
    assert_eq!(fill.fill_id, ready.signature);
    assert_eq!(
        fill.swap.signature.as_deref(),
        Some(ready.signature.as_str())
    );
    assert!(!fill.swap.simulated);
    assert_eq!(fill.swap.in_amount, dec("300000000"));
    assert_eq!(fill.swap.out_amount, dec("2000000000"));
    assert_eq!(fill.swap.fee_lamports, dec("15000"));
    assert_eq!(fill.swap.amounts_from, "token_balances");
    // 15,000 lamports at 150 USDC per SOL.
    assert_eq!(fill.fee, dec("0.00225"));
    let calls = w.rpc.calls();
    assert_eq!(calls.send_transaction, 1);
    assert_eq!(calls.bad_signatures, 0, "the fake verified our signature");
    assert_eq!(calls.accepted, vec![ready.signature.clone()]);
    // The quote went back to /swap unchanged, for our wallet.
    let swap = w.jupiter.calls().last_swap_request.unwrap();
    assert_eq!(swap["userPublicKey"], w.pubkey.as_str());
    assert_eq!(swap["quoteResponse"]["outAmount"], "2000000000");
    assert_eq!(swap["quoteResponse"]["swapMode"], "ExactOut");
}

#[tokio::test]
async fn a_live_sell_reads_the_quote_token_received() {
    let w = world(true).await;
    let venue = venue(&w, Arc::new(SystemClock));
    let sell = order(Side::Sell, "1.5");
    let Prepared::Ready(ready) = venue.prepare(&sell, rich()).await else {
        panic!("not ready");
    };
    let Outcome::Filled(fill) = venue.send_and_confirm(&sell, &ready).await else {
        panic!("not filled");
    };
    assert_eq!(fill.quantity, dec("1.5"));
    assert_eq!(fill.price, dec("150"));
    assert_eq!(fill.swap.input_mint, SOL);
    assert_eq!(fill.swap.output_mint, USDC);
}

#[tokio::test]
async fn the_gate_rejects_with_numbers_and_nothing_is_built_or_sent() {
    let w = world(true).await;
    w.jupiter.script(|s| s.price_impact_pct = "0.03".into());
    let venue = venue(&w, Arc::new(SystemClock));
    let Prepared::Rejected(checks) = venue.prepare(&order(Side::Buy, "2"), rich()).await else {
        panic!("not rejected");
    };
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].check, GateCheck::PriceImpact);
    assert_eq!(checks[0].limit, Some(dec("100")));
    assert_eq!(checks[0].actual, Some(dec("300")));
    assert_eq!(w.jupiter.calls().swaps, 0);
    assert_eq!(w.rpc.calls().send_transaction, 0);
}

#[tokio::test]
async fn an_old_quote_and_a_high_priority_fee_are_rejected_before_signing() {
    let w = world(true).await;
    w.jupiter
        .script(|s| s.prioritization_fee_lamports = 5_000_000);
    // Every clock reading is 6 s after the last: the quote is 6 s old when it would be signed.
    let start = chrono::Utc::now();
    let clock = Arc::new(SteppingClock::new(start, chrono::Duration::seconds(6)));
    let mut w2 = w;
    w2.settings.limits.max_quote_age_ms = 5_000;
    let venue = JupiterVenue::new(w2.settings.clone(), clock).unwrap();
    let Prepared::Rejected(checks) = venue.prepare(&order(Side::Buy, "2"), rich()).await else {
        panic!("not rejected");
    };
    let kinds: Vec<GateCheck> = checks.iter().map(|c| c.check).collect();
    assert_eq!(kinds, vec![GateCheck::QuoteAge, GateCheck::PriorityFee]);
    assert_eq!(checks[0].actual, Some(dec("6000")));
    assert_eq!(checks[1].actual, Some(dec("5000000")));
    assert_eq!(w2.rpc.calls().send_transaction, 0);
}

#[tokio::test]
async fn a_refused_send_fails_and_an_unconfirmed_one_times_out_with_its_signature() {
    let w = world(true).await;
    let venue = venue(&w, Arc::new(SystemClock));
    let buy = order(Side::Buy, "1");
    w.rpc.set_mode(SendMode::Refuse);
    let Prepared::Ready(ready) = venue.prepare(&buy, rich()).await else {
        panic!("not ready");
    };
    let Outcome::Failed(reason) = venue.send_and_confirm(&buy, &ready).await else {
        panic!("not failed");
    };
    assert!(
        reason.starts_with("send failed, nothing landed:"),
        "{reason}"
    );
    assert!(reason.contains("Transaction simulation failed"), "{reason}");
    w.rpc.set_mode(SendMode::NeverConfirm);
    let Prepared::Ready(ready) = venue.prepare(&buy, rich()).await else {
        panic!("not ready");
    };
    let Outcome::Failed(reason) = venue.send_and_confirm(&buy, &ready).await else {
        panic!("not failed");
    };
    assert_eq!(
        reason,
        format!(
            "unconfirmed after 1 s, signature {}: check it on chain before trading this pair again",
            ready.signature
        )
    );
    // Looked up after a restart: still unknown, and nothing is sent again.
    let sends = w.rpc.calls().send_transaction;
    let Outcome::Failed(reason) = venue.recover(&buy, &ready.signature).await else {
        panic!("not failed");
    };
    assert!(
        reason.starts_with(&format!(
            "outcome unknown after restart, signature {}",
            ready.signature
        )),
        "{reason}"
    );
    assert_eq!(w.rpc.calls().send_transaction, sends);
}

#[tokio::test]
async fn an_expired_blockhash_and_an_on_chain_failure_are_failures() {
    let w = world(true).await;
    let venue = venue(&w, Arc::new(SystemClock));
    let buy = order(Side::Buy, "1");
    w.rpc.set_mode(SendMode::FailOnChain);
    let Prepared::Ready(ready) = venue.prepare(&buy, rich()).await else {
        panic!("not ready");
    };
    let Outcome::Failed(reason) = venue.send_and_confirm(&buy, &ready).await else {
        panic!("not failed");
    };
    assert!(reason.starts_with("failed on chain:"), "{reason}");
    assert!(reason.contains(&ready.signature), "{reason}");
    w.rpc.set_mode(SendMode::NeverConfirm);
    w.rpc.set_block_height(5_000);
    let Prepared::Ready(ready) = venue.prepare(&buy, rich()).await else {
        panic!("not ready");
    };
    let Outcome::Failed(reason) = venue.send_and_confirm(&buy, &ready).await else {
        panic!("not failed");
    };
    assert!(
        reason.starts_with("expired unconfirmed: block height 5000 passed the last valid 1000"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_dry_run_fills_at_the_quote_and_never_signs_or_sends() {
    let w = world(false).await;
    let venue = venue(&w, Arc::new(SystemClock));
    assert!(!venue.live());
    let Prepared::Simulated(fill) = venue.prepare(&order(Side::Buy, "2"), rich()).await else {
        panic!("not simulated");
    };
    assert!(fill.swap.simulated);
    assert_eq!(fill.swap.signature, None);
    assert_eq!(fill.swap.amounts_from, "quote");
    assert_eq!(fill.quantity, dec("2"));
    assert_eq!(fill.price, dec("150"));
    assert!(fill.fill_id.starts_with("simulated-"));
    assert_eq!(w.jupiter.calls().quotes, 1);
    assert_eq!(w.jupiter.calls().swaps, 0);
    assert_eq!(w.rpc.calls().send_transaction, 0);
    assert!(w.rpc.calls().methods.is_empty());
}

#[tokio::test]
async fn insufficient_funds_fail_before_anything_is_signed() {
    let w = world(true).await;
    let venue = venue(&w, Arc::new(SystemClock));
    let poor = Funds {
        cash: Decimal::from(10),
        held: Decimal::ZERO,
    };
    let Prepared::Failed(reason) = venue.prepare(&order(Side::Buy, "2"), poor).await else {
        panic!("not failed");
    };
    assert_eq!(
        reason,
        "insufficient cash: the swap may cost up to 301.5 USDC, the portfolio has 10"
    );
    let Prepared::Failed(reason) = venue.prepare(&order(Side::Sell, "2"), poor).await else {
        panic!("not failed");
    };
    assert_eq!(
        reason,
        "insufficient position: sells 2, the portfolio holds 0"
    );
    assert_eq!(w.jupiter.calls().swaps, 0);
}

#[tokio::test]
async fn the_keypair_never_shows_in_debug_or_errors() {
    let w = world(true).await;
    let venue = venue(&w, Arc::new(SystemClock));
    let secret = &w.keypair_json[1..w.keypair_json.len() - 1];
    let first = secret.split(',').take(6).collect::<Vec<_>>().join(",");
    let debug = format!("{venue:?} {:?}", w.settings);
    assert!(!debug.contains(&first), "{debug}");
    // A keypair file with one bad byte: the error names the file, not the bytes.
    let bad = w.keypair_json.replacen(',', ",999,", 1);
    let path = w._dir.path().join("bad.json");
    std::fs::write(&path, &bad).unwrap();
    let mut settings = w.settings.clone();
    settings.keypair_path = Some(path);
    let err = JupiterVenue::new(settings, Arc::new(SystemClock))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a Solana CLI keypair"), "{err}");
    assert!(!err.contains(&first) && !err.contains("999"), "{err}");
}
