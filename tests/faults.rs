//! Faults the stack must survive, with real processes: the `jarvis` binary as child processes, real
//! nats-server and Postgres on loopback. Poison messages of every kind, the dead-letter commands, two
//! processes sharing one agent's consumer, nats-server and Postgres restarts under load.

mod common;

use std::collections::HashSet;
use std::process::{Child, Stdio};
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::HeaderMap;
use bytes::Bytes;
use common::books::*;
use common::*;
use jarvis_bus::envelope::{headers, headers_for};
use jarvis_bus::{DLQ_STREAM, EVENTS_STREAM};
use jarvis_domain::social::{Tweet, XFeed, XFeedCommand};
use jarvis_domain::{EventMetadata, RecordedEvent};
use jarvis_store::server::PostgresProcess;
use jarvis_store::{execute_with_retry, EventStore};
use jarvis_testkit::{eventually, NatsServer};
use serde_json::Value;

/// A `jarvis` child process, killed (SIGKILL) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(env: &impl Target, args: &[&str], extra_env: &[(&str, &str)]) -> Proc {
    Proc(
        jarvis(env, args, extra_env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start jarvis"),
    )
}

/// `jarvis <args>` to completion: (exit code, stdout, stderr).
fn run(env: &impl Target, args: &[&str]) -> (i32, String, String) {
    let out = jarvis(env, args, &[]).output().expect("run jarvis");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn tweet(id: &str, text: &str) -> Tweet {
    Tweet {
        tweet_id: id.into(),
        author_id: "7".into(),
        author_username: "desk".into(),
        text: text.into(),
        created_at: "2024-03-01T14:30:00Z".parse().unwrap(),
        lang: Some("en".into()),
    }
}

async fn receive(store: &EventStore, t: Tweet) {
    let id = t.feed_id();
    execute_with_retry(
        &store.cqrs::<XFeed>(()),
        &id,
        XFeedCommand::Receive(t),
        &EventMetadata::root("test-x"),
        5,
    )
    .await
    .unwrap();
}

/// The CloudEvents headers of a `TweetReceived` about `subject_id`, as the relay would publish them.
fn tweet_headers(subject_id: &str) -> HeaderMap {
    headers_for(&RecordedEvent {
        event_id: uuid::Uuid::now_v7(),
        position: 1,
        txid: 1,
        aggregate_type: "XFeed".into(),
        aggregate_id: subject_id.into(),
        sequence: 1,
        event_type: "TweetReceived".into(),
        event_version: "1".into(),
        payload: Value::Null,
        metadata: EventMetadata::root("test"),
        recorded_at: chrono::Utc::now(),
    })
}

/// Bytes a header block takes on the wire.
fn wire_len(h: &HeaderMap) -> usize {
    12 + h
        .iter()
        .map(|(k, vs)| {
            vs.iter()
                .map(|v| AsRef::<str>::as_ref(k).len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum::<usize>()
}

async fn scored(store: &EventStore, n: usize) -> Vec<RecordedEvent> {
    eventually(
        Duration::from_secs(120),
        &format!("{n} SentimentScored"),
        || async {
            let s: Vec<RecordedEvent> = store
                .read_after(jarvis_store::Checkpoint::default(), 1_000_000)
                .await
                .ok()?
                .into_iter()
                .filter(|e| e.event_type == "SentimentScored")
                .collect();
            (s.len() >= n).then_some(s)
        },
    )
    .await
}

async fn wait_consumer(js: &async_nats::jetstream::Context, name: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("consumer {name}"),
        || async {
            let stream = js.get_stream(EVENTS_STREAM).await.ok()?;
            stream
                .get_consumer::<PullConfig>(name)
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
}

async fn dlq_len(js: &async_nats::jetstream::Context) -> u64 {
    let mut s = js.get_stream(DLQ_STREAM).await.unwrap();
    s.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_of_every_kind_is_dead_lettered_and_the_dlq_commands_list_replay_and_purge_it() {
    let env = Env::start().await;
    let _relay = spawn(&env, &["relay"], &[]);
    let _agent = spawn(&env, &["agent", "sentiment"], &[]);
    wait_consumer(&env.js, "sentiment").await;
    let publish = |kind: &str, h: Option<HeaderMap>, body: Vec<u8>| {
        let js = env.js.clone();
        let subject = format!("jarvis.evt.social.TweetReceived.poison-{kind}");
        async move {
            let ack = match h {
                Some(h) => js.publish_with_headers(subject, h, Bytes::from(body)).await,
                None => js.publish(subject, Bytes::from(body)).await,
            };
            ack.unwrap().await.unwrap();
        }
    };
    let good_body = |text: &str| serde_json::to_vec(&tweet("9", text)).unwrap();
    publish(
        "json",
        Some(tweet_headers("poison-json")),
        b"{not json".to_vec(),
    )
    .await;
    publish(
        "schema",
        Some(tweet_headers("poison-schema")),
        br#"{"tweet_id": 5}"#.to_vec(),
    )
    .await;
    let mut wrong_type = tweet_headers("poison-type");
    wrong_type.insert(headers::TYPE, "jarvis.social.Nope.v1");
    publish("type", Some(wrong_type), good_body("$SOL up")).await;
    publish(
        "utf8",
        Some(tweet_headers("poison-utf8")),
        b"\xff\xfe{\"text\": \"\xc3\x28\"}".to_vec(),
    )
    .await;
    publish("headers", None, good_body("$SOL no headers at all")).await;
    // As large as the server takes (1 MiB by default, headers included): valid JSON, a text far over the
    // scorer's limit. Its dead letter cannot hold it whole beside the dead-letter headers.
    let max = env.client.server_info().max_payload;
    let large_headers = tweet_headers("poison-large");
    let room = max - wire_len(&large_headers) - 200;
    let filler = "moon ".repeat(room / 5 + 1);
    let mut t = serde_json::to_value(tweet("9", "")).unwrap();
    t["text"] = Value::String(String::new());
    let skeleton = serde_json::to_vec(&t).unwrap().len();
    t["text"] = Value::String(filler[..room - skeleton].to_string());
    let large = serde_json::to_vec(&t).unwrap();
    assert_eq!(large.len(), room);
    publish("large", Some(large_headers), large).await;
    // The stream keeps flowing: a good tweet through the store and the relay is scored.
    receive(&env.store, tweet("3", "$SOL is crashing, sell everything")).await;
    let events = scored(&env.store, 1).await;
    assert_eq!(events[0].payload["token"], "SOL");
    wait_stream_len_of(&env.js, DLQ_STREAM, 6).await;

    // `jarvis dlq list --json`: one line per dead letter, with its reason.
    let (code, out, err) = run(&env, &["dlq", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let letters = json_lines(&out);
    assert_eq!(letters.len(), 6, "{out}");
    let by_kind = |kind: &str| -> Value {
        letters
            .iter()
            .find(|l| {
                l["subject"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("poison-{kind}"))
            })
            .unwrap_or_else(|| panic!("no dead letter of kind {kind}: {out}"))
            .clone()
    };
    for l in &letters {
        assert_eq!(l["consumer"], "sentiment");
        assert!(!l["error"].as_str().unwrap().is_empty(), "{l}");
        assert!(l["id"].as_u64().unwrap() > 0);
        assert!(l["deliveries"].as_u64().unwrap() >= 1);
        assert!(l["time"].is_string());
    }
    assert_eq!(by_kind("type")["ce_type"], "jarvis.social.Nope.v1");
    assert!(
        by_kind("type")["error"].as_str().unwrap().contains("Nope"),
        "{out}"
    );
    assert!(
        by_kind("headers")["error"]
            .as_str()
            .unwrap()
            .contains("bad envelope"),
        "{out}"
    );
    assert!(by_kind("headers")["ce_type"].is_null());
    let large = by_kind("large");
    assert_eq!(large["truncated"], true, "{large}");
    assert_eq!(large["size"].as_u64().unwrap() as usize, room);
    for kind in ["json", "schema", "utf8"] {
        assert!(
            !by_kind(kind)["error"].as_str().unwrap().is_empty(),
            "{out}"
        );
    }
    let (_, other, _) = run(
        &env,
        &["dlq", "list", "--consumer", "sentiment-chat", "--json"],
    );
    assert!(json_lines(&other).is_empty());
    // The text form names the same dead letters.
    let (code, text, _) = run(&env, &["dlq", "list"]);
    assert_eq!(code, 0);
    assert_eq!(text.lines().count(), 6, "{text}");

    // A dead letter whose cause was fixed: its replay is handled like a new delivery.
    let fixed_id = uuid::Uuid::now_v7();
    let mut h = tweet_headers("replayed");
    h.insert(headers::ID, fixed_id.to_string().as_str());
    h.insert(
        "jarvis-dlq-error",
        "transient: gave up after 5 deliveries: database down",
    );
    h.insert("jarvis-dlq-consumer", "sentiment");
    h.insert(
        "jarvis-dlq-subject",
        "jarvis.evt.social.TweetReceived.replayed",
    );
    h.insert("jarvis-dlq-stream-sequence", "999999");
    h.insert("jarvis-dlq-deliveries", "5");
    env.js
        .publish_with_headers(
            "jarvis.dlq.sentiment",
            h,
            Bytes::from(serde_json::to_vec(&tweet("77", "$BONK to the moon, bullish")).unwrap()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let (_, out, _) = run(&env, &["dlq", "list", "--json"]);
    let fixed = json_lines(&out)
        .into_iter()
        .find(|l| l["subject"] == "jarvis.evt.social.TweetReceived.replayed")
        .unwrap();
    let fixed_dlq_id = fixed["id"].as_u64().unwrap().to_string();
    // Refused for another consumer's name.
    let (code, _, err) = run(
        &env,
        &["dlq", "replay", &fixed_dlq_id, "--consumer", "memory-chat"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("belongs to consumer sentiment"), "{err}");
    let (code, out, err) = run(&env, &["dlq", "replay", &fixed_dlq_id, "--json"]);
    assert_eq!(code, 0, "{err}");
    let replayed = json_lines(&out);
    assert_eq!(
        replayed[0]["subject"],
        "jarvis.evt.social.TweetReceived.replayed"
    );
    assert_eq!(replayed[0]["duplicate"], false);
    let events = scored(&env.store, 2).await;
    assert!(
        events
            .iter()
            .any(|e| e.metadata.causation_id == fixed_id && e.payload["token"] == "BONK"),
        "the replayed tweet was scored, caused by its original event id"
    );
    // It left the dead-letter stream; replaying it again is an error naming it.
    assert_eq!(dlq_len(&env.js).await, 6);
    let (code, _, err) = run(&env, &["dlq", "replay", &fixed_dlq_id]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("dead letter {fixed_dlq_id}")),
        "{err}"
    );

    // Replaying a poison message (the truncated one comes back whole from JARVIS_EVENTS) dead-letters it
    // again, under a new id; the others stay.
    let large_id = large["id"].as_u64().unwrap();
    let (code, _, err) = run(&env, &["dlq", "replay", &large_id.to_string()]);
    assert_eq!(code, 0, "{err}");
    let again = eventually(
        Duration::from_secs(60),
        "the replayed large message dead-lettered again",
        || async {
            let (_, out, _) = run(&env, &["dlq", "list", "--json"]);
            json_lines(&out).into_iter().find(|l| {
                l["subject"].as_str().unwrap().ends_with("poison-large")
                    && l["id"].as_u64().unwrap() != large_id
            })
        },
    )
    .await;
    assert_eq!(again["size"].as_u64().unwrap() as usize, room);
    assert_eq!(dlq_len(&env.js).await, 6);

    // Purge one consumer's dead letters, then all.
    let (code, out, err) = run(
        &env,
        &["dlq", "purge", "--consumer", "sentiment-chat", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_lines(&out)[0]["purged"], 0);
    let (code, out, _) = run(&env, &["dlq", "purge", "--consumer", "sentiment", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json_lines(&out)[0]["purged"], 6);
    let (_, out, _) = run(&env, &["dlq", "list", "--json"]);
    assert!(json_lines(&out).is_empty());
    let (_, out, _) = run(&env, &["dlq", "list"]);
    assert_eq!(out.trim(), "no dead letters");
}

/// `stream_sequence`s a process's consumer runner logged as handled (debug log of `jarvis_bus::consumer`).
fn handled(log: &std::path::Path, consumer: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("handled") && l.contains(&format!("consumer={consumer}")))
        .filter_map(|l| {
            let at = l.find("stream_sequence=")? + "stream_sequence=".len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_running_the_trading_agent_split_the_work_and_do_nothing_twice() {
    let env = Env::start().await;
    let logs = tempfile::tempdir().unwrap();
    let tight = [
        ("JARVIS_TREASURY__DRIFT_BAND", "0.001"),
        ("JARVIS_LOG", "warn,jarvis_bus::consumer=debug"),
    ];
    let _relay = spawn(&env, &["relay"], &[]);
    let _risk = spawn(&env, &["agent", "risk"], &[]);
    let agent = |n: usize| {
        let log = logs.path().join(format!("trading-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = jarvis(&env, &["agent", "trading"], &tight)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        (Proc(child), log)
    };
    let (_a, log_a) = agent(1);
    let (_b, log_b) = agent(2);
    let (_dir, file) = sol_subset(300);
    ingest(&env, &file);
    wait_idle(&env, 300).await;
    let all = check_books(&env).await;
    // Both processes took candles; no candle was handled by both (no redelivery happened to either).
    let (a, b) = (handled(&log_a, "trading"), handled(&log_b, "trading"));
    assert!(
        !a.is_empty() && !b.is_empty(),
        "work split: {} and {} candles",
        a.len(),
        b.len()
    );
    let (sa, sb): (HashSet<u64>, HashSet<u64>) =
        (a.iter().copied().collect(), b.iter().copied().collect());
    assert_eq!(sa.len() + sb.len(), 300, "each candle handled once in all");
    assert!(sa.is_disjoint(&sb));
    // One proposal per candle at most, one order per proposal.
    let proposed = of_type(&all, "TradeProposed");
    let causes: HashSet<uuid::Uuid> = proposed.iter().map(|e| e.metadata.causation_id).collect();
    assert_eq!(causes.len(), proposed.len(), "two proposals for one candle");
    assert!(!of_type(&all, "OrderFilled").is_empty());
}

/// A private Postgres cluster (which a test may restart) and nats-server, with the test's clients.
struct Private {
    pg: PostgresProcess,
    _pg_dir: tempfile::TempDir,
    nats: NatsServer,
    store: EventStore,
    js: async_nats::jetstream::Context,
}

impl Private {
    async fn start() -> Self {
        let pg_dir = tempfile::tempdir().unwrap();
        let pg = PostgresProcess::start(&pg_dir.path().join("pg"), None).unwrap();
        let url = pg.url("jarvis");
        jarvis::stack::create_database_if_missing(&url)
            .await
            .unwrap();
        let store = EventStore::connect(&url, 4).await.unwrap();
        store.migrate().await.unwrap();
        let nats = NatsServer::start();
        let (_, js) = jarvis_bus::connect(&nats.url(), "test").await.unwrap();
        jarvis_bus::ensure_streams(&js, &jarvis_bus::StreamSettings::default())
            .await
            .unwrap();
        Self {
            pg,
            _pg_dir: pg_dir,
            nats,
            store,
            js,
        }
    }
}

impl Target for Private {
    fn database_url(&self) -> String {
        self.pg.url("jarvis")
    }
    fn nats_url(&self) -> String {
        self.nats.url()
    }
    fn store(&self) -> &EventStore {
        &self.store
    }
    fn js(&self) -> &async_nats::jetstream::Context {
        &self.js
    }
}

/// The events stream holds each stored event exactly once.
pub async fn check_stream_once(env: &impl Target) {
    let stored = env.store().count().await.unwrap() as usize;
    wait_stream_len(env.js(), stored).await;
    let messages = read_stream(env.js(), EVENTS_STREAM).await;
    assert_eq!(messages.len(), stored, "stream vs store");
    assert_eq!(msg_ids(&messages).len(), stored, "an event published twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_and_postgres_restarts_under_load_lose_and_duplicate_nothing() {
    let mut env = Private::start().await;
    let tight = [("JARVIS_TREASURY__DRIFT_BAND", "0.001")];
    let _up = up(&env, &tight);
    let (_dir, file) = sol_subset(400);
    ingest(&env, &file);
    eventually(Duration::from_secs(120), "100 candles taken", || async {
        (candles_taken(&env).await >= 100).then_some(())
    })
    .await;
    // nats-server dies (SIGKILL) and comes back on the same port and store.
    env.nats.restart();
    eventually(Duration::from_secs(120), "200 candles taken", || async {
        (candles_taken(&env).await >= 200).then_some(())
    })
    .await;
    // Postgres stops (fast shutdown: sessions cut) and comes back on the same port.
    let port = env.pg.port();
    env.pg.stop().unwrap();
    let dir = env._pg_dir.path().join("pg");
    env.pg = PostgresProcess::start(&dir, Some(port)).unwrap();
    wait_idle(&env, 400).await;
    let all = check_books(&env).await;
    let proposed = of_type(&all, "TradeProposed");
    let causes: HashSet<uuid::Uuid> = proposed.iter().map(|e| e.metadata.causation_id).collect();
    assert_eq!(causes.len(), proposed.len(), "two proposals for one candle");
    check_stream_once(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_loses_nothing_and_its_memory_stays_bounded() {
    // `jarvis bench soak` makes its own scratch database on this server and its own nats-server.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jarvis"))
        .args([
            "bench",
            "soak",
            "--duration",
            "20s",
            "--burst",
            "100",
            "--json",
        ])
        .env("JARVIS_DATABASE_URL", jarvis_testkit::admin_database_url())
        .env("JARVIS_LOG", "warn")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for zero in [
        "lost_events",
        "duplicate_events",
        "unhandled_candles",
        "duplicate_proposals",
        "dead_letters",
    ] {
        assert_eq!(report[zero], 0, "{zero}: {report}");
    }
    assert!(report["candles"].as_u64().unwrap() > 100, "{report}");
    assert!(report["trades"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["events"], report["stream_messages"]);
    // Bounded growth: generous, the point is catching a leak that grows with every candle.
    let (start, end) = (
        report["rss_mib_start"].as_f64().unwrap(),
        report["rss_mib_end"].as_f64().unwrap(),
    );
    assert!(start > 0.0 && end <= start * 2.0 + 64.0, "{report}");
    for key in [
        "candles_per_sec",
        "baseline_capacity_candles_per_sec",
        "ratio",
    ] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
}

/// `jarvis up` with the LLM review of every proposal (`treasury.llm_review`, a priced fake OpenAI-compatible
/// provider), SIGKILLed mid-replay and restarted. Orders and fills reconcile with the portfolio, and so does
/// the LLM spend: each call finished once, each proposal's review paid for once (a candle handled again after
/// the kill gets the answer already recorded), the ledgers' totals equal the recorded calls, and the
/// projections' `llm_usage` equals what the store's events sum to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_replay_with_llm_reviews_charges_each_review_once_and_spend_reconciles() {
    use jarvis_domain::llm::LlmLedger;
    use jarvis_testkit::fakes::openai::FakeOpenAi;
    use jarvis_testkit::fakes::Reply;
    use rust_decimal::Decimal;
    use std::collections::HashMap;

    let env = Env::start().await;
    let llm = FakeOpenAi::start().await;
    // A little slow, so that the kill may land while a review is in flight.
    llm.set_default(Reply::slow(
        Duration::from_millis(50),
        Reply::with_usage(
            "{\"decision\": \"approve\", \"reason\": \"within the plan\"}",
            420,
            24,
        ),
    ));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jarvis.toml");
    std::fs::write(
        &config,
        format!(
            "[treasury]\ndrift_band = 0.001\nllm_review = true\n\n\
             [llm.providers.fake]\nkind = \"openai\"\nbase_url = \"{}\"\n\n\
             [llm.routes]\ntrading = [\"fake/gpt-4o-mini\"]\n\n\
             [llm.prices.\"fake/gpt-4o-mini\"]\ninput = 0.15\noutput = 0.6\n",
            llm.url()
        ),
    )
    .unwrap();
    let with_config = [("JARVIS_CONFIG", config.to_str().unwrap())];
    let candles = 150;
    let (_dir, file) = sol_subset(candles);
    let first = up(&env, &with_config);
    ingest(&env, &file);
    let reviews = |n: i64| {
        let pool = env.store.pool().clone();
        async move {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events WHERE event_type = 'LlmCallCompleted'",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (done >= n).then_some(())
        }
    };
    eventually(Duration::from_secs(300), "5 LLM reviews", || reviews(5)).await;
    let taken = candles_taken(&env).await;
    drop(first); // SIGKILL, maybe mid-review
    assert!(
        (taken as usize) < candles,
        "killed mid-replay ({taken} of {candles})"
    );
    let _second = up(&env, &with_config);
    wait_idle(&env, candles).await;
    let all = check_books(&env).await;

    // Each call finished once, after its request.
    let call = |e: &RecordedEvent| -> uuid::Uuid {
        e.payload["call_id"].as_str().unwrap().parse().unwrap()
    };
    let requested: HashSet<uuid::Uuid> = of_type(&all, "LlmCallRequested")
        .iter()
        .map(|e| call(e))
        .collect();
    let completed = of_type(&all, "LlmCallCompleted");
    let failed = of_type(&all, "LlmCallFailed");
    let mut finished: Vec<uuid::Uuid> = completed.iter().map(|e| call(e)).collect();
    finished.extend(failed.iter().map(|e| call(e)));
    let distinct: HashSet<uuid::Uuid> = finished.iter().copied().collect();
    assert_eq!(distinct.len(), finished.len(), "a call finished twice");
    assert!(
        distinct.is_subset(&requested),
        "a call finished unrequested"
    );
    assert!(failed.is_empty(), "the fake never fails: {failed:?}");
    // One paid review per proposal: every proposal carries the review of a recorded call, no two share
    // one, and no review was paid for twice (same story, same prompt).
    let proposed = of_type(&all, "TradeProposed");
    assert!(!proposed.is_empty());
    let reviewed: Vec<uuid::Uuid> = proposed
        .iter()
        .map(|e| {
            e.payload["rationale"]["inputs"]["llm_review"]["call_id"]
                .as_str()
                .unwrap_or_else(|| panic!("a proposal without its review: {}", e.payload))
                .parse()
                .unwrap()
        })
        .collect();
    let reviewed_set: HashSet<uuid::Uuid> = reviewed.iter().copied().collect();
    assert_eq!(
        reviewed_set.len(),
        reviewed.len(),
        "two proposals, one review"
    );
    let completed_ids: HashSet<uuid::Uuid> = completed.iter().map(|e| call(e)).collect();
    assert_eq!(
        reviewed_set, completed_ids,
        "the calls paid for are exactly the proposals' reviews"
    );
    let mut per_question: HashMap<(uuid::Uuid, String), usize> = HashMap::new();
    for e in &completed {
        let hash = e.payload["prompt_hash"].as_str().unwrap().to_string();
        *per_question
            .entry((e.metadata.correlation_id, hash))
            .or_default() += 1;
    }
    assert!(
        per_question.values().all(|n| *n == 1),
        "one review paid for twice: {per_question:?}"
    );
    // The ledgers' totals are the recorded calls' costs.
    let cost =
        |e: &RecordedEvent| -> Decimal { e.payload["cost"].as_str().unwrap().parse().unwrap() };
    let spent: Decimal = completed.iter().map(|e| cost(e)).sum();
    assert!(spent > Decimal::ZERO, "priced calls cost something");
    let ledgers: HashSet<&str> = all
        .iter()
        .filter(|e| e.aggregate_type == "LlmLedger")
        .map(|e| e.aggregate_id.as_str())
        .collect();
    let (mut ledger_cost, mut ledger_calls) = (Decimal::ZERO, 0u64);
    for id in ledgers {
        let ledger: LlmLedger = env
            .store
            .load(id, Some(jarvis_agents::runtime::SNAPSHOT_EVERY))
            .await
            .unwrap();
        ledger_cost += ledger.total().cost;
        ledger_calls += ledger.total().calls;
    }
    assert_eq!(
        ledger_cost, spent,
        "the ledgers' spend vs the recorded calls"
    );
    assert_eq!(ledger_calls as usize, completed.len());
    // The read model: llm_usage sums to the same, once the projectors caught up.
    let pool = env.store.pool().clone();
    let (calls, failures, usd): (i64, i64, Decimal) = eventually(
        Duration::from_secs(120),
        "llm_usage caught up with the store",
        || async {
            let row: (Option<i64>, Option<i64>, Option<Decimal>) = sqlx::query_as(
                "SELECT sum(calls)::bigint, sum(failures)::bigint, sum(cost_usd)
                   FROM projections.llm_usage",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            let row = (
                row.0.unwrap_or(0),
                row.1.unwrap_or(0),
                row.2.unwrap_or_default(),
            );
            (row.0 as usize >= completed.len()).then_some(row)
        },
    )
    .await;
    assert_eq!(calls as usize, completed.len(), "llm_usage calls");
    assert_eq!(failures as usize, failed.len(), "llm_usage failures");
    assert_eq!(usd, spent, "llm_usage spend");
    assert!(
        llm.count() >= completed.len(),
        "every recorded call was asked"
    );
}
