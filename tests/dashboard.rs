//! The dashboard in a real browser: `jarvis up` (pipeline, projections, gateway) on real NATS and Postgres,
//! fed real candles, then `node tests/browser/dashboard.mjs` drives Debian's headless Chromium through it:
//! the operator signs in and sees the equity chart, an event appended here shows up live, the kill switch
//! halts trading (checked here in the store), the event explorer shows a causal chain, and a viewer sees no
//! command button. Screenshots land under the target directory; their paths are printed.
//!
//! Needs `/usr/bin/chromium` and `tests/browser/node_modules` (`bash scripts/test.sh` installs both).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use chrono::{TimeZone, Utc};
use common::*;
use jarvis_domain::market::{MarketFeed, MarketFeedCommand, MarketFeedId};
use jarvis_domain::{Candle, EventMetadata, Symbol};
use jarvis_store::{execute_with_retry, Checkpoint};
use jarvis_testkit::eventually;
use rust_decimal::Decimal;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const OPERATOR: (&str, &str) = ("olivia", "operator-password-1");
const VIEWER: (&str, &str) = ("victor", "viewer-password-1");
/// Candles replayed before the browser opens (the newest hours of the SOL file).
const CANDLES: usize = 400;

/// `jarvis up` against the test's servers, killed (SIGKILL) on drop.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn jarvis(env: &Env, config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jarvis"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("JARVIS_DATABASE_URL", env.db.url())
        .env("JARVIS_NATS_URL", env.nats.url())
        .env("JARVIS_LOG", "warn")
        .current_dir(ROOT);
    cmd
}

/// Fails with what to run when the browser or the test's npm packages are missing: never a silent pass.
fn browser_prerequisites() -> PathBuf {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: `apt-get install chromium chromium-driver` (bash scripts/test.sh does)"
    );
    let browser = Path::new(ROOT).join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci` in tests/browser (bash scripts/test.sh does)"
    );
    assert!(
        Command::new("node").arg("--version").output().is_ok(),
        "no `node` on PATH: install Node.js 20+ (Debian: nodejs npm)"
    );
    browser
}

/// A free port on 127.0.0.1 for the gateway (released before the gateway binds it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `jarvis.toml` with the two users of the test.
fn config_file(dir: &Path, listen: &str) -> PathBuf {
    let user = |(name, password): (&str, &str), role: &str| {
        let hash = jarvis_gateway::auth::hash_password(password).unwrap();
        format!(
            "[[gateway.users]]\nusername = \"{name}\"\npassword_hash = \"{hash}\"\nrole = \"{role}\"\n\n"
        )
    };
    let text = format!(
        "[gateway]\nlisten = \"{listen}\"\n\n{}{}",
        user(OPERATOR, "operator"),
        user(VIEWER, "viewer")
    );
    let path = dir.join("jarvis.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The newest `rows` hours of the SOL file, as a file of its own.
fn sol_subset(dir: &Path, rows: usize) -> String {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("data/binance_solusdt_1h.csv")).unwrap();
    let subset: Vec<&str> = text.lines().take(rows + 1).collect();
    let path = dir.join("binance_solusdt_1h.csv");
    std::fs::write(&path, subset.join("\n") + "\n").unwrap();
    path.to_string_lossy().into_owned()
}

/// Waits until the trading consumer has taken and finished every stored candle.
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

/// Appends one candle after the replayed ones (a day of its own) and returns its `CandleClosed` event id.
async fn append_live_candle(env: &Env) -> String {
    let open_time = Utc.with_ymd_and_hms(2021, 12, 7, 0, 0, 0).unwrap();
    let p = Decimal::new(19_000, 2);
    let candle = Candle {
        symbol: Symbol::new_checked("SOL/USDT").unwrap(),
        open_time,
        close_time: open_time + chrono::Duration::hours(1),
        open: p,
        high: p,
        low: p,
        close: p,
        volume: Decimal::ONE,
    };
    let feed = MarketFeedId::of(&candle).to_string();
    execute_with_retry(
        &env.store.cqrs::<MarketFeed>(()),
        &feed,
        MarketFeedCommand::RecordCandles {
            feed: feed.clone(),
            candles: vec![candle],
        },
        &EventMetadata::root("dashboard-test"),
        5,
    )
    .await
    .unwrap();
    eventually(
        Duration::from_secs(30),
        "the live candle in the store",
        || async {
            let events = env
                .store
                .read_after(Checkpoint::default(), 10_000_000)
                .await
                .ok()?;
            events
                .into_iter()
                .find(|e| e.event_type == "CandleClosed" && e.aggregate_id == feed)
                .map(|e| e.event_id.to_string())
        },
    )
    .await
}

/// The gateway answers and the projections have an equity curve to draw.
async fn wait_equity(base: &str) {
    let http = reqwest::Client::new();
    eventually(
        Duration::from_secs(120),
        "an equity curve from the gateway",
        || async {
            let login: serde_json::Value = http
                .post(format!("{base}/api/v1/auth/login"))
                .json(&serde_json::json!({"username": OPERATOR.0, "password": OPERATOR.1}))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let token = login["access_token"].as_str()?;
            let page: serde_json::Value = http
                .get(format!("{base}/api/v1/portfolio/equity?limit=10"))
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (page["items"].as_array()?.len() > 1).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sees_equity_and_live_events_halts_trading_and_viewer_has_no_buttons() {
    let browser = browser_prerequisites();
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let config = config_file(dir.path(), &listen);
    let _up = Up(jarvis(&env, &config, &["up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start jarvis up"));
    let file = sol_subset(dir.path(), CANDLES);
    let out = jarvis(&env, &config, &["ingest", "candles", &file])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_idle(&env, CANDLES).await;
    wait_equity(&base).await;

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join(format!("overview-{}.png", std::process::id()));
    let mut node = tokio::process::Command::new("node")
        .arg(browser.join("dashboard.mjs"))
        .arg(&base)
        .arg(&screenshot)
        .env(
            "JARVIS_UI_OPERATOR",
            format!("{}:{}", OPERATOR.0, OPERATOR.1),
        )
        .env("JARVIS_UI_VIEWER", format!("{}:{}", VIEWER.0, VIEWER.1))
        .current_dir(&browser)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node tests/browser/dashboard.mjs");
    let mut stdin = node.stdin.take().unwrap();
    let mut stdout = BufReader::new(node.stdout.take().unwrap()).lines();
    let stderr = node.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });

    let mut printed = Vec::new();
    let run = async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            println!("browser: {line}");
            if line == "ready-for-live-event" {
                let id = append_live_candle(&env).await;
                stdin.write_all(format!("{id}\n").as_bytes()).await.unwrap();
                stdin.flush().await.unwrap();
            }
            printed.push(line);
        }
        node.wait().await.unwrap()
    };
    let status = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the browser test did not finish in 300 s");
    let stderr = errors.await.unwrap();
    assert!(
        status.success(),
        "the browser test failed ({status}):\n{stderr}\n{}",
        printed.join("\n")
    );
    assert!(
        printed.iter().any(|l| l == "dashboard ok"),
        "{}",
        printed.join("\n")
    );
    println!("screenshot: {}", screenshot.display());

    // The kill switch went through the gateway and the risk agent into the store.
    let halted = eventually(
        Duration::from_secs(30),
        "TradingHalted in the store",
        || async {
            let events = env
                .store
                .read_after(Checkpoint::default(), 10_000_000)
                .await
                .ok()?;
            events.into_iter().find(|e| {
                e.event_type == "TradingHalted"
                    && e.payload["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("from the dashboard") && r.contains(OPERATOR.0))
            })
        },
    )
    .await;
    assert_eq!(halted.payload["rule"], "halted");
}
