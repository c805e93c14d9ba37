//! Read models (the `projections` crate) on real Postgres and NATS: each read model from a realistic history,
//! a projector SIGKILLed mid-run resumes to exactly what a full rebuild makes, rebuilds swap tables in
//! while readers and the projector go on, lag is reported, re-runs change nothing, and agent health and DLQ
//! counts come from NATS.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use jarvis_projections::{
    projections, projector, rebuild, synth, HotModels, PageQuery, Projector, ReadModels, NAMES,
};
use jarvis_store::EventStore;
use jarvis_testkit::eventually;
use rust_decimal::Decimal;
use sqlx::PgPool;

/// A child process, SIGKILLed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn jarvis(db_url: &str, nats_url: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jarvis"));
    cmd.args(args)
        .env("JARVIS_DATABASE_URL", db_url)
        .env("JARVIS_LOG", "warn")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    if let Some(url) = nats_url {
        cmd.env("JARVIS_NATS_URL", url);
    }
    cmd
}

/// Every projection table, as sorted JSON rows.
async fn dump(pool: &PgPool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in projections(&[], &HotModels::default()).unwrap() {
        for table in p.tables() {
            let rows: String = sqlx::query_scalar(&format!(
                "SELECT coalesce(json_agg(x ORDER BY x::text)::text, '[]') FROM projections.{table} x"
            ))
            .fetch_one(pool)
            .await
            .unwrap();
            out.insert((*table).to_string(), rows);
        }
    }
    out
}

fn assert_same(live: &BTreeMap<String, String>, rebuilt: &BTreeMap<String, String>) {
    for (table, rows) in live {
        assert!(
            rows == &rebuilt[table],
            "table {table} differs from a full rebuild:\nlive:    {:.600}\nrebuilt: {:.600}",
            rows,
            rebuilt[table]
        );
    }
}

/// Waits until every projection has applied every event of the store.
async fn wait_caught_up(pool: &PgPool) {
    eventually(
        Duration::from_secs(120),
        "projections caught up",
        || async {
            let status = projector::status(pool, NAMES).await.ok()?;
            status.iter().all(|s| s.lag_events == 0).then_some(())
        },
    )
    .await;
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn events_of_type(pool: &PgPool, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// `jarvis up` trades the SOL file on the paper venue; its projector's read models agree with the store,
/// and a SIGKILLed `up` restarted leaves them identical to a full rebuild.
#[tokio::test(flavor = "multi_thread")]
async fn up_projects_the_paper_trading_pipeline() {
    let env = Env::start().await;
    let pool = env.store.pool().clone();
    let nats = env.nats.url();
    let up = |_: ()| {
        Killed(
            jarvis(env.db.url(), Some(&nats), &["up"])
                .env("JARVIS_TREASURY__DRIFT_BAND", "0.001")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let first = up(());
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/binance_solusdt_1h.csv"
    ))
    .unwrap();
    let file = dir.path().join("binance_solusdt_1h.csv");
    std::fs::write(
        &file,
        text.lines().take(301).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let out = jarvis(
        env.db.url(),
        Some(&nats),
        &["ingest", "candles", file.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Some trades made it, then kill `up` while it is busy, and start it again.
    eventually(Duration::from_secs(300), "a fill", || async {
        (events_of_type(&pool, "OrderFilled").await > 0).then_some(())
    })
    .await;
    drop(first);
    let _second = up(());
    // Idle: every candle handled, projections caught up.
    eventually(
        Duration::from_secs(600),
        "the pipeline to finish",
        || async {
            let stream = env.js.get_stream("JARVIS_EVENTS").await.ok()?;
            let mut consumer = stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>("trading")
                .await
                .ok()?;
            let info = consumer.info().await.ok()?;
            (info.delivered.consumer_sequence >= 300
                && info.num_pending == 0
                && info.num_ack_pending == 0)
                .then_some(())
        },
    )
    .await;
    wait_caught_up(&pool).await;

    // The read models agree with the store.
    let models = ReadModels::new(pool.clone());
    let proposed = events_of_type(&pool, "TradeProposed").await;
    let filled = events_of_type(&pool, "OrderFilled").await;
    assert!(filled > 0, "the drift band makes the treasury trade");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM projections.orders").await,
        proposed
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM projections.fills").await,
        filled
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM projections.orders WHERE status = 'filled'").await,
        count(
            &pool,
            "SELECT count(*) FROM events WHERE event_type = 'OrderFilled' AND (payload -> 'OrderFilled' ->> 'complete')::boolean"
        )
        .await
    );
    let last_cash: String = sqlx::query_scalar(
        "SELECT payload -> 'PositionChanged' ->> 'cash_after' FROM events
          WHERE event_type = 'PositionChanged' ORDER BY position DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let portfolio: Decimal = sqlx::query_scalar("SELECT cash FROM projections.portfolio")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(portfolio, Decimal::from_str(&last_cash).unwrap());
    let last_close: String = sqlx::query_scalar(
        "SELECT payload -> 'CandleClosed' ->> 'close' FROM events WHERE event_type = 'CandleClosed'
          ORDER BY payload -> 'CandleClosed' ->> 'close_time' DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let price: Decimal =
        sqlx::query_scalar("SELECT price FROM projections.prices WHERE symbol = 'SOL/USDT'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(price, Decimal::from_str(&last_close).unwrap());
    assert_eq!(
        count(&pool, "SELECT count(*) FROM projections.equity_curve").await,
        count(
            &pool,
            "SELECT count(DISTINCT payload -> 'PortfolioMarked' ->> 'at') FROM events WHERE event_type = 'PortfolioMarked'"
        )
        .await
    );
    // Trades page by page, newest first, with no gaps or repeats.
    let mut seen = HashSet::new();
    let mut q = PageQuery {
        limit: Some(3),
        ..PageQuery::default()
    };
    loop {
        let page = models.trades(&q, None).await.unwrap();
        for f in &page.items {
            assert!(seen.insert(f.position), "a fill on two pages");
        }
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len() as i64, filled);
    // The audit trail of a fill's story holds its proposal.
    let order = models
        .orders(&PageQuery::default(), None, None)
        .await
        .unwrap()
        .items[0]
        .clone();
    // Filters select in the query, not within a page: a page of one still finds a matching order.
    let one = PageQuery {
        limit: Some(1),
        ..PageQuery::default()
    };
    let filtered = models
        .orders(&one, Some(&order.status), Some(&order.symbol))
        .await
        .unwrap();
    assert_eq!(filtered.items.len(), 1);
    assert!(filtered
        .items
        .iter()
        .all(|o| o.status == order.status && o.symbol == order.symbol));
    assert!(models
        .orders(&one, Some("no-such-status"), None)
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(models
        .trades(&one, Some("NO/SUCH"))
        .await
        .unwrap()
        .items
        .is_empty());
    let trail = models.audit(order.correlation_id).await.unwrap();
    assert!(trail
        .iter()
        .any(|e| e.event_type == "TradeProposed" && e.aggregate_id == order.order_id.to_string()));

    // Identical to a full rebuild.
    let live = dump(&pool).await;
    rebuild(
        &pool,
        projections(&[], &HotModels::default()).unwrap(),
        1_000,
    )
    .await
    .unwrap();
    assert_same(&live, &dump(&pool).await);
}

/// `jarvis projections run` SIGKILLed mid-run and restarted ends exactly where a full rebuild does.
#[tokio::test(flavor = "multi_thread")]
async fn a_projector_killed_mid_run_resumes_to_the_rebuild_state() {
    let (db, store) = fresh_store().await;
    let pool = store.pool().clone();
    synth::insert(&pool, &synth::history(40_000)).await.unwrap();
    let head = store.head_position().await.unwrap();
    let run = || {
        Killed(
            jarvis(db.url(), None, &["projections", "run", "--batch", "100"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let child = run();
    let at = eventually(
        Duration::from_secs(120),
        "the projector under way",
        || async {
            let s = projector::status(&pool, NAMES).await.ok()?;
            let trading = s.iter().find(|s| s.name == "trading")?;
            (trading.position > 0).then_some(trading.position)
        },
    )
    .await;
    drop(child); // SIGKILL
    assert!(at < head, "killed before it finished ({at} of {head})");
    let _child = run();
    wait_caught_up(&pool).await;
    let live = dump(&pool).await;
    let rebuilt = rebuild(
        &pool,
        projections(&[], &HotModels::default()).unwrap(),
        5_000,
    )
    .await
    .unwrap();
    assert_eq!(rebuilt.checkpoint.position, head);
    assert_same(&live, &dump(&pool).await);
}

/// Rebuilds swap fresh tables in while readers query and the projector runs with new events arriving;
/// readers never fail and the result equals a rebuild from scratch; the hot models equal the tables.
#[tokio::test(flavor = "multi_thread")]
async fn rebuilds_swap_tables_while_readers_and_the_projector_go_on() {
    let (_db, store) = fresh_store().await;
    let pool = store.pool().clone();
    synth::insert(&pool, &synth::history(20_000)).await.unwrap();
    let hot = HotModels::default();
    let projector = Projector::open(pool.clone(), projections(&[], &hot).unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let running = tokio::spawn(projector.run(until(stopped.clone())));
    wait_caught_up(&pool).await;
    let models = ReadModels::new(pool.clone()).with_hot(hot.clone());
    // Readers.
    let done = Arc::new(AtomicBool::new(false));
    let (reads, empty) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (models, done, reads, empty) =
            (models.clone(), done.clone(), reads.clone(), empty.clone());
        readers.push(tokio::spawn(async move {
            let q = PageQuery::default();
            while !done.load(Ordering::Relaxed) {
                let orders = models
                    .orders(&q, None, None)
                    .await
                    .expect("orders during a rebuild");
                let trades = models
                    .trades(&q, None)
                    .await
                    .expect("trades during a rebuild");
                let curve = models
                    .equity_curve(&q)
                    .await
                    .expect("equity during a rebuild");
                models
                    .sentiment(Some("sol"), &q)
                    .await
                    .expect("sentiment during a rebuild");
                models
                    .llm_usage(&q)
                    .await
                    .expect("llm usage during a rebuild");
                models
                    .conversations(None, &q)
                    .await
                    .expect("chat during a rebuild");
                if orders.items.is_empty() || trades.items.is_empty() || curve.is_empty() {
                    empty.fetch_add(1, Ordering::Relaxed);
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // New events arrive while two rebuilds run one after the other (one of all projections, one of `trading`).
    let writer = {
        let pool = pool.clone();
        tokio::spawn(async move { synth::insert(&pool, &synth::history_at(10_000, 20_000)).await })
    };
    rebuild(
        &pool,
        projections(&[], &HotModels::default()).unwrap(),
        2_000,
    )
    .await
    .unwrap();
    rebuild(
        &pool,
        projections(&["trading"], &HotModels::default()).unwrap(),
        2_000,
    )
    .await
    .unwrap();
    writer.await.unwrap().unwrap();
    wait_caught_up(&pool).await;
    done.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.expect("a reader failed during a swap");
    }
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(
        empty.load(Ordering::Relaxed),
        0,
        "a reader saw an empty table"
    );
    // The running projector reloaded its memory after the swaps and kept applying.
    eventually(
        Duration::from_secs(60),
        "the hot models to match the tables",
        || async {
            let mut db = pool.acquire().await.ok()?;
            let tables = jarvis_projections::trading::load_snapshot(&mut db, "projections")
                .await
                .ok()?;
            (*hot.snapshot() == tables).then_some(())
        },
    )
    .await;
    let live = dump(&pool).await;
    let _ = stop.send(true);
    running.await.unwrap();
    rebuild(
        &pool,
        projections(&[], &HotModels::default()).unwrap(),
        7_000,
    )
    .await
    .unwrap();
    assert_same(&live, &dump(&pool).await);
}

/// Lag is head − checkpoint; a projector re-run (or a restart) applies nothing twice; the read models hold
/// what the events say.
#[tokio::test(flavor = "multi_thread")]
async fn lag_is_reported_and_re_runs_change_nothing() {
    let (_db, store) = fresh_store().await;
    let pool = store.pool().clone();
    let history = synth::history(3_000);
    synth::insert(&pool, &history).await.unwrap();
    let head = store.head_position().await.unwrap();
    let status = projector::status(&pool, NAMES).await.unwrap();
    assert!(status
        .iter()
        .all(|s| s.lag_events == head && s.position == 0));
    let hot = HotModels::default();
    let mut projector = Projector::open(pool.clone(), projections(&[], &hot).unwrap())
        .await
        .unwrap()
        .with_batch(250);
    // The gap-safe reader waits for older transactions of tests running beside this one: poll.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut read = 0;
    while (read as i64) < head {
        assert!(std::time::Instant::now() < deadline, "events not readable");
        read += projector.catch_up().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read as i64, head);
    let status = projector::status(&pool, NAMES).await.unwrap();
    assert!(
        status
            .iter()
            .all(|s| s.lag_events == 0 && s.position == head),
        "{status:?}"
    );
    let first = dump(&pool).await;
    assert_eq!(projector.catch_up().await.unwrap(), 0);
    // A restart (new projector from the committed checkpoints) finds nothing to do.
    let mut again = Projector::open(
        pool.clone(),
        projections(&[], &HotModels::default()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(again.catch_up().await.unwrap(), 0);
    assert_eq!(dump(&pool).await, first);

    // What the events say.
    let of = |t: &str| history.iter().filter(|e| e.event_type == t).count() as i64;
    let models = ReadModels::new(pool.clone()).with_hot(hot.clone());
    assert_eq!(
        count(&pool, "SELECT count(*) FROM projections.sentiment").await,
        of("SentimentScored")
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM projections.chat_messages").await,
        of("ChatMessageReceived") + of("ChatReplySent")
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM projections.risk_rejections").await,
        of("OrderRefused")
    );
    let usage = models.llm_usage(&PageQuery::default()).await.unwrap();
    assert_eq!(
        usage.iter().map(|u| u.calls).sum::<i64>(),
        of("LlmCallCompleted")
    );
    assert_eq!(
        usage.iter().map(|u| u.failures).sum::<i64>(),
        of("LlmCallFailed")
    );
    assert_eq!(
        usage.iter().map(|u| u.cost_usd).sum::<Decimal>(),
        Decimal::new(31, 5) * Decimal::from(of("LlmCallCompleted"))
    );
    let snapshot = hot.snapshot();
    let portfolio = snapshot.portfolio.as_ref().expect("portfolio opened");
    assert_eq!(portfolio.trades, of("PositionChanged"));
    assert_eq!(snapshot.risk.refused, of("OrderRefused"));
    assert_eq!(snapshot.risk.admitted, of("OrderAdmitted"));
    assert_eq!(snapshot.prices.len(), 3);
    assert_eq!(models.positions(), snapshot.positions);
    let sol = models
        .sentiment(Some("sol"), &PageQuery::default())
        .await
        .unwrap();
    assert!(!sol.items.is_empty() && sol.items.iter().all(|s| s.token == "SOL"));
    assert!(
        models
            .recent_prices("SOL/USDT", &PageQuery::default())
            .await
            .unwrap()
            .len()
            <= 500
    );
    assert!(models
        .orders(
            &PageQuery {
                from: Some("2030-01-01T00:00:00Z".parse().unwrap()),
                to: Some("2020-01-01T00:00:00Z".parse().unwrap()),
                ..PageQuery::default()
            },
            None,
            None
        )
        .await
        .unwrap_err()
        .to_string()
        .contains("from"));
}

/// Heartbeats on core NATS become agent health (a malformed one is skipped); DLQ counts per subject come
/// from the `JARVIS_DLQ` stream.
#[tokio::test(flavor = "multi_thread")]
async fn agent_health_and_dlq_counts_come_from_nats() {
    let env = Env::start().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let (models, tasks) = jarvis_projections::spawn(
        env.store.pool().clone(),
        Some((env.client.clone(), env.js.clone())),
        until,
    )
    .await
    .unwrap();
    let heartbeat = serde_json::json!({
        "agent": "risk", "instance": "host-1", "at": "2026-11-21T10:00:00Z", "interval_ms": 60000,
        "status": "ok", "consumers": [{"name": "risk", "num_pending": 4, "num_ack_pending": 1, "num_redelivered": 0}],
        "dlq_messages": 0
    });
    eventually(Duration::from_secs(30), "the heartbeat", || async {
        env.client
            .publish("jarvis.health.risk", "not json".into())
            .await
            .unwrap();
        env.client
            .publish("jarvis.health.risk", heartbeat.to_string().into())
            .await
            .unwrap();
        let agents = models.agents();
        (agents.len() == 1
            && agents[0].status == "ok"
            && agents[0].heartbeat.consumers[0].num_pending == 4)
            .then_some(())
    })
    .await;
    for subject in [
        "jarvis.dlq.trading",
        "jarvis.dlq.trading",
        "jarvis.dlq.risk",
    ] {
        env.js
            .publish(subject, "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Read through a 5 s timeout of its own: retried, so that a slow moment on a loaded machine is no failure.
    let dlq = eventually(Duration::from_secs(60), "the DLQ counts", || async {
        models.dlq().await.ok().filter(|d| d.total >= 3)
    })
    .await;
    assert_eq!(dlq.total, 3);
    assert_eq!(dlq.subjects["jarvis.dlq.trading"], 2);
    assert_eq!(dlq.subjects["jarvis.dlq.risk"], 1);
    let _ = stop.send(true);
    for t in tasks {
        t.await.unwrap();
    }
    let _: &EventStore = &env.store;
}
