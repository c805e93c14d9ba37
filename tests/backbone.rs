//! Backbone scenarios against real NATS JetStream and real PostgreSQL: each test gets its own nats-server
//! on a free port and its own database.

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use common::*;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use jarvis_agents::relay::{run_relay, RelaySettings};
use jarvis_bus::consumer::dlq_headers;
use jarvis_bus::envelope::{headers, headers_for};
use jarvis_bus::{
    ensure_streams, run_consumer, ConsumerSettings, Envelope, Handler, HandlerError,
    StreamSettings, DLQ_STREAM, EVENTS_STREAM,
};
use jarvis_domain::{AnyEvent, EventMetadata, RecordedEvent};
use jarvis_store::{execute_with_retry, Checkpoint};
use jarvis_testkit::eventually;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::Connection;

/// Records every envelope it handles; refuses (permanently) events of aggregates named `*reject*`, and
/// fails transiently on those named `*flaky*`.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Envelope>>>,
}

impl Recorder {
    fn ids(&self) -> Vec<uuid::Uuid> {
        self.seen.lock().unwrap().iter().map(|e| e.id).collect()
    }
}

impl Handler for Recorder {
    async fn handle(&self, envelope: &Envelope, _event: AnyEvent) -> Result<(), HandlerError> {
        if envelope.subject.to_lowercase().contains("reject") {
            return Err(HandlerError::Permanent(
                "this handler refuses rejects".into(),
            ));
        }
        if envelope.subject.contains("flaky") {
            return Err(HandlerError::Transient("always down".into()));
        }
        self.seen.lock().unwrap().push(envelope.clone());
        Ok(())
    }
}

fn spawn_relay(env: &Env) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(run_relay(
        env.store.clone(),
        env.js.clone(),
        RelaySettings::default(),
        async {
            let _ = stopped.await;
        },
    ));
    stop
}

fn spawn_consumer(
    env: &Env,
    settings: ConsumerSettings,
    recorder: Recorder,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let js = env.js.clone();
    tokio::spawn(async move {
        run_consumer(&js, &settings, &recorder, async {
            let _ = stopped.await;
        })
        .await
        .expect("consumer runs");
    });
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_relay_consume_once_in_order_with_cloudevents_headers() {
    let env = Env::start().await;
    let metadata = append_days(&env.store, "SOL/USDT", 0, 3).await;
    // Two relays: one leads, the other stands by; nothing is published twice.
    let _r1 = spawn_relay(&env);
    let _r2 = spawn_relay(&env);
    let recorder = Recorder::default();
    let _c = spawn_consumer(
        &env,
        ConsumerSettings::new("test-consumer", "jarvis.evt.>"),
        recorder.clone(),
    );
    eventually(Duration::from_secs(30), "72 events consumed", || async {
        (recorder.seen.lock().unwrap().len() >= 72).then_some(())
    })
    .await;
    let later = append_days(&env.store, "SOL/USDT", 3, 1).await;
    eventually(Duration::from_secs(30), "96 events consumed", || async {
        (recorder.seen.lock().unwrap().len() >= 96).then_some(())
    })
    .await;

    let stored = read_all(&env.store, 96).await;
    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(
        recorder.ids(),
        stored.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        "each once, in store order"
    );
    for (i, (env_, rec)) in seen.iter().zip(&stored).enumerate() {
        assert_eq!(env_.ce_type, "jarvis.market.CandleClosed.v1");
        assert_eq!(env_.position, rec.position);
        assert_eq!(env_.sequence, rec.sequence);
        assert_eq!(env_.subject, rec.aggregate_id);
        assert_eq!(
            env_.nats_subject,
            format!(
                "jarvis.evt.market.CandleClosed.{}",
                jarvis_domain::event::subject_token(&rec.aggregate_id)
            )
        );
        assert_eq!(env_.source, "test-writer");
        let story = if i < 72 { &metadata } else { &later };
        assert_eq!(env_.correlation_id, story.correlation_id);
        assert_eq!(env_.causation_id, story.causation_id);
        assert_eq!(env_.time, rec.recorded_at);
        let body: serde_json::Value = serde_json::from_slice(&env_.data).unwrap();
        assert_eq!(body, rec.payload, "the body is the event's own object");
    }
    let positions: Vec<i64> = seen.iter().map(|e| e.position).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions increase"
    );
    // The raw headers an operator sees with `nats sub --headers`.
    let raw = read_stream(&env.js, EVENTS_STREAM).await;
    assert_eq!(raw.len(), 96, "no duplicate in the stream");
    let h = &raw[0].headers;
    for (name, want) in [
        ("ce-specversion", "1.0"),
        ("Content-Type", "application/json"),
    ] {
        assert_eq!(h.get(name).map(|v| v.as_str()), Some(want), "{name}");
    }
    assert_eq!(
        h.get("Nats-Msg-Id").unwrap().as_str(),
        h.get("ce-id").unwrap().as_str()
    );
    for name in [
        "ce-type",
        "ce-source",
        "ce-time",
        "ce-subject",
        "ce-correlationid",
        "ce-causationid",
        "ce-position",
        "ce-sequence",
    ] {
        assert!(h.get(name).is_some(), "header {name} present");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_resumes_after_the_stream_when_the_checkpoint_is_lost_beyond_the_duplicate_window() {
    let env = Env::start().await;
    // A short duplicate window, so that "longer than the window" takes a moment, not two minutes.
    let window = Duration::from_millis(300);
    let settings = StreamSettings {
        duplicate_window: window,
        ..Default::default()
    };
    ensure_streams(&env.js, &settings).await.unwrap();
    append_days(&env.store, "ETH/USDT", 0, 2).await;
    let stop = spawn_relay(&env);
    wait_stream_len(&env.js, 48).await;
    let _ = stop.send(());
    // As if the relay had crashed before its checkpoint and stayed down past the duplicate window: only
    // the stream knows what was published, and JetStream would no longer drop a republished copy.
    sqlx::query("DELETE FROM checkpoints")
        .execute(env.store.pool())
        .await
        .unwrap();
    tokio::time::sleep(window * 2).await;
    append_days(&env.store, "ETH/USDT", 2, 1).await;
    let _r = spawn_relay(&env);
    wait_stream_len(&env.js, 72).await;
    // Give a wrong relay time to republish, then check it did not.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let raw = read_stream(&env.js, EVENTS_STREAM).await;
    assert_eq!(raw.len(), 72, "nothing republished");
    assert_eq!(msg_ids(&raw).len(), 72);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_ignores_a_foreign_message_that_claims_a_position() {
    let env = Env::start().await;
    // Someone publishes by hand a copy of headers that claims position 1, before the relay ever ran.
    let forged = poison_headers("jarvis.market.CandleClosed.v1", "forged");
    env.js
        .publish_with_headers(
            "jarvis.evt.market.CandleClosed.forged",
            forged,
            Bytes::from(GOOD_CANDLE),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    append_days(&env.store, "SOL/USDT", 0, 1).await;
    let _r = spawn_relay(&env);
    wait_stream_len(&env.js, 1 + 24).await;
    let raw = read_stream(&env.js, EVENTS_STREAM).await;
    let positions: Vec<&str> = raw[1..]
        .iter()
        .map(|m| m.headers.get("ce-position").unwrap().as_str())
        .collect();
    assert_eq!(
        positions.first(),
        Some(&"1"),
        "position 1 was published, not skipped"
    );
    assert_eq!(positions.len(), 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_relay_leads_and_a_standby_takes_over() {
    let env = Env::start().await;
    let leader = spawn_relay(&env);
    append_days(&env.store, "SOL/USDT", 0, 1).await;
    wait_stream_len(&env.js, 24).await;
    let _standby = spawn_relay(&env);
    let locks = || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
              WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()",
        )
        .fetch_one(env.store.pool())
        .await
        .unwrap();
        n
    };
    // The standby is connected and asking; still only one holds the lock.
    // (Not counting this very query, whose text matches too.)
    eventually(Duration::from_secs(60), "two relay connections", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%pg_try_advisory_lock%'",
        )
        .fetch_one(env.store.pool())
        .await
        .unwrap();
        (n >= 1).then_some(())
    })
    .await;
    assert_eq!(locks().await, 1, "exactly one relay holds the leader lock");
    let _ = leader.send(());
    append_days(&env.store, "SOL/USDT", 1, 1).await;
    wait_stream_len(&env.js, 48).await;
    assert_eq!(locks().await, 1);
    let raw = read_stream(&env.js, EVENTS_STREAM).await;
    assert_eq!(msg_ids(&raw).len(), 48);
}

/// A `jarvis` child process, killed if the test fails before it says so.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn jarvis_relay(env: &Env) -> ChildGuard {
    // Small batches and window: publishing takes long enough to be killed in the middle of it.
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_jarvis"))
            .arg("relay")
            .env("JARVIS_DATABASE_URL", env.db.url())
            .env("JARVIS_NATS_URL", env.nats.url())
            .env("JARVIS_RELAY__BATCH", "20")
            .env("JARVIS_RELAY__WINDOW", "4")
            .env("JARVIS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start jarvis relay"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_with_sigkill_mid_stream_and_restarted_publishes_each_event_once_in_order() {
    let env = Env::start().await;
    let total = 150 * 24;
    let writer = {
        let store = env.store.clone();
        tokio::spawn(async move {
            for day in 0..150 {
                append_days(&store, "BTC/USDT", day, 1).await;
            }
        })
    };
    let mut relay = jarvis_relay(&env);
    let mut killed_mid_stream = 0;
    let mut before = 0;
    for _ in 0..8 {
        // As soon as it has published something more, kill it without warning.
        let now = eventually(Duration::from_secs(60), "the relay publishing", || async {
            let n = stream_len(&env.js).await;
            (n > before || n == total).then_some(n)
        })
        .await;
        if now == total {
            break;
        }
        relay.0.kill().expect("SIGKILL");
        relay.0.wait().unwrap();
        killed_mid_stream += 1;
        before = stream_len(&env.js).await;
        relay = jarvis_relay(&env);
    }
    assert!(
        killed_mid_stream >= 3,
        "the relay was killed mid-stream only {killed_mid_stream} times"
    );
    writer.await.unwrap();
    let stored = read_all(&env.store, total).await;
    wait_stream_len(&env.js, total).await;
    // Give a wrong relay time to republish, then check it did not.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(relay);
    let raw = read_stream(&env.js, EVENTS_STREAM).await;
    assert_eq!(raw.len(), stored.len(), "stream count equals store count");
    let ids: Vec<String> = raw
        .iter()
        .map(|m| m.headers.get("ce-id").unwrap().to_string())
        .collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "no duplicate ids"
    );
    let want: Vec<String> = stored.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(ids, want, "stream order is store order");
    let positions: Vec<i64> = raw
        .iter()
        .map(|m| {
            m.headers
                .get("ce-position")
                .unwrap()
                .as_str()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "position order preserved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_under_running_relay_and_consumer_loses_nothing() {
    let mut env = Env::start().await;
    let _r = spawn_relay(&env);
    let recorder = Recorder::default();
    let _c = spawn_consumer(
        &env,
        ConsumerSettings::new("restart-consumer", "jarvis.evt.>"),
        recorder.clone(),
    );
    append_days(&env.store, "SOL/USDT", 0, 2).await;
    eventually(Duration::from_secs(30), "first 48 consumed", || async {
        (recorder.ids().len() >= 48).then_some(())
    })
    .await;
    env.nats.kill();
    // Written while the bus is down: the store is the system of record.
    append_days(&env.store, "SOL/USDT", 2, 2).await;
    // Restart only once the clients have noticed the server is gone, so they really reconnect.
    eventually(
        Duration::from_secs(30),
        "the client to see the server gone",
        || async {
            (env.client.connection_state() != async_nats::connection::State::Connected)
                .then_some(())
        },
    )
    .await;
    env.nats.restart();
    append_days(&env.store, "SOL/USDT", 4, 2).await;
    let stored = read_all(&env.store, 144).await;
    eventually(
        Duration::from_secs(60),
        "all 144 consumed after the restart",
        || async {
            let seen: HashSet<_> = recorder.ids().into_iter().collect();
            (seen.len() >= 144).then_some(())
        },
    )
    .await;
    let seen: HashSet<_> = recorder.ids().into_iter().collect();
    let want: HashSet<_> = stored.iter().map(|e| e.event_id).collect();
    assert_eq!(seen, want, "nothing lost");
    let raw = read_stream(&env.js, EVENTS_STREAM).await;
    assert_eq!(raw.len(), 144, "no duplicate in the stream");
    let ids: Vec<String> = raw
        .iter()
        .map(|m| m.headers.get("ce-id").unwrap().to_string())
        .collect();
    let want: Vec<String> = stored.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(ids, want, "stream order is store order");
}

fn poison_headers(ce_type: &str, subject: &str) -> HeaderMap {
    let event = RecordedEvent {
        event_id: uuid::Uuid::now_v7(),
        position: 1,
        txid: 1,
        aggregate_type: "MarketFeed".into(),
        aggregate_id: subject.into(),
        sequence: 1,
        event_type: "CandleClosed".into(),
        event_version: "1".into(),
        payload: serde_json::Value::Null,
        metadata: EventMetadata::root("test"),
        recorded_at: chrono::Utc::now(),
    };
    let mut h = headers_for(&event);
    h.insert(headers::TYPE, ce_type);
    h
}

const GOOD_CANDLE: &str = r#"{"symbol":"SOL/USDT","open_time":"2021-12-06T00:00:00Z","close_time":"2021-12-06T01:00:00Z","open":"1","high":"2","low":"1","close":"2","volume":"3"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dlq_and_the_consumer_goes_on() {
    let env = Env::start().await;
    let recorder = Recorder::default();
    let mut settings = ConsumerSettings::new("poison-consumer", "jarvis.evt.>");
    settings.max_deliver = 2;
    settings.backoff = vec![Duration::from_millis(50)];
    let _c = spawn_consumer(&env, settings, recorder.clone());
    let publish = |subject: &str, h: Option<HeaderMap>, body: &'static str| {
        let js = env.js.clone();
        let subject = subject.to_string();
        async move {
            let ack = match h {
                Some(h) => js.publish_with_headers(subject, h, Bytes::from(body)).await,
                None => js.publish(subject, Bytes::from(body)).await,
            };
            ack.unwrap().await.unwrap();
        }
    };
    let ct = "jarvis.market.CandleClosed.v1";
    publish(
        "jarvis.evt.market.CandleClosed.a",
        None,
        "not json, no headers",
    )
    .await;
    publish(
        "jarvis.evt.market.Nope.b",
        Some(poison_headers("jarvis.market.Nope.v1", "b")),
        "{}",
    )
    .await;
    publish(
        "jarvis.evt.market.CandleClosed.c",
        Some(poison_headers(ct, "c")),
        r#"{"symbol":"SOL/USDT"}"#,
    )
    .await;
    publish(
        "jarvis.evt.market.CandleClosed.d",
        Some(poison_headers(ct, "reject-d")),
        GOOD_CANDLE,
    )
    .await;
    publish(
        "jarvis.evt.market.CandleClosed.e",
        Some(poison_headers(ct, "flaky-e")),
        GOOD_CANDLE,
    )
    .await;
    publish(
        "jarvis.evt.market.CandleClosed.f",
        Some(poison_headers(ct, "good-f")),
        GOOD_CANDLE,
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the good message handled",
        || async { (!recorder.ids().is_empty()).then_some(()) },
    )
    .await;
    // Relayed events that the handler refuses: dead letters must not carry the relay's publish directives.
    let _relay = spawn_relay(&env);
    append_days(&env.store, "REJECT/USDT", 0, 1).await;
    wait_stream_len_of(&env.js, DLQ_STREAM, 5 + 24).await;
    let dlq = read_stream(&env.js, DLQ_STREAM).await;
    let errors: Vec<(String, String)> = dlq
        .iter()
        .map(|m| {
            assert_eq!(m.subject, "jarvis.dlq.poison-consumer");
            assert_eq!(
                m.headers.get(dlq_headers::CONSUMER).unwrap().as_str(),
                "poison-consumer"
            );
            (
                m.headers.get(dlq_headers::SUBJECT).unwrap().to_string(),
                m.headers.get(dlq_headers::ERROR).unwrap().to_string(),
            )
        })
        .collect();
    let error_of = |suffix: &str| {
        errors
            .iter()
            .find(|(s, _)| s.ends_with(suffix))
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("no dead letter for {suffix}: {errors:?}"))
    };
    assert!(error_of(".a").contains("bad envelope: missing header ce-specversion"));
    assert!(error_of(".b").contains("unknown ce-type"));
    assert!(error_of(".c").contains("missing field"));
    assert!(error_of(".d").contains("this handler refuses rejects"));
    assert!(error_of(".e").contains("gave up after 2 deliveries: always down"));
    let relayed: Vec<_> = dlq
        .iter()
        .filter(|m| {
            m.headers
                .get("ce-subject")
                .is_some_and(|s| s.as_str().starts_with("REJECT/USDT@"))
        })
        .collect();
    assert_eq!(
        relayed.len(),
        24,
        "every refused relayed event is dead-lettered"
    );
    for m in relayed {
        assert!(m
            .headers
            .get(dlq_headers::ERROR)
            .unwrap()
            .as_str()
            .contains("refuses rejects"));
        assert!(m.headers.get(headers::EXPECTED_LAST_SEQUENCE).is_none());
        assert!(
            m.headers.get(headers::POSITION).is_some(),
            "original attributes kept"
        );
    }
    // The original headers travel with the dead letter, and so does the body.
    let d = dlq
        .iter()
        .find(|m| {
            m.headers
                .get(dlq_headers::SUBJECT)
                .unwrap()
                .as_str()
                .ends_with(".d")
        })
        .unwrap();
    assert_eq!(d.headers.get("ce-type").unwrap().as_str(), ct);
    assert_eq!(d.payload, GOOD_CANDLE.as_bytes());
    assert_eq!(recorder.seen.lock().unwrap()[0].subject, "good-f");
}

// --- Optimistic concurrency: a tiny aggregate whose handler waits until both writers have loaded it. ---

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally {
    count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum TallyEvent {
    Added { by: String },
}

impl DomainEvent for TallyEvent {
    fn event_type(&self) -> String {
        "Added".into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

struct Gate {
    barrier: tokio::sync::Barrier,
    handled: AtomicUsize,
}

impl Aggregate for Tally {
    const TYPE: &'static str = "Tally";
    type Command = String;
    type Event = TallyEvent;
    type Error = Never;
    type Services = Arc<Gate>;

    async fn handle(
        &mut self,
        by: String,
        gate: &Arc<Gate>,
        sink: &EventSink<Self>,
    ) -> Result<(), Never> {
        // The first two calls (one per writer) meet here: both have loaded the empty aggregate.
        if gate.handled.fetch_add(1, Ordering::SeqCst) < 2 {
            gate.barrier.wait().await;
        }
        sink.write(TallyEvent::Added { by }, self).await;
        Ok(())
    }

    fn apply(&mut self, _event: TallyEvent) {
        self.count += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_writers_one_conflict_retried_nothing_lost() {
    let (_db, store) = fresh_store().await;
    let gate = Arc::new(Gate {
        barrier: tokio::sync::Barrier::new(2),
        handled: AtomicUsize::new(0),
    });
    let cqrs = Arc::new(store.cqrs::<Tally>(gate));
    let metadata = EventMetadata::root("test");
    let write = |who: &str| {
        let (cqrs, metadata, who) = (cqrs.clone(), metadata.clone(), who.to_string());
        tokio::spawn(async move { execute_with_retry(&cqrs, "tally-1", who, &metadata, 3).await })
    };
    let (a, b) = (write("a"), write("b"));
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert_eq!(
        a.conflicts + b.conflicts,
        1,
        "exactly one writer conflicted and retried"
    );
    let stored = read_all(&store, 2).await;
    assert_eq!(
        stored.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_safety_a_late_commit_holding_a_lower_position_is_still_delivered_in_order() {
    let (db, store) = fresh_store().await;
    let insert = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, event_id)
                  VALUES ('MarketFeed', $1, 1, 'CandleClosed', '1', '{}'::json, $2::text::json, $3)";
    let meta = serde_json::to_string(&EventMetadata::root("test").to_map()).unwrap();
    let mut long = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let mut tx = long.begin().await.unwrap();
    sqlx::query(insert)
        .bind("slow")
        .bind(&meta)
        .bind(uuid::Uuid::now_v7())
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(insert)
        .bind("fast")
        .bind(&meta)
        .bind(uuid::Uuid::now_v7())
        .execute(store.pool())
        .await
        .unwrap();
    // The fast event (higher position) is committed, but the slow one (lower position) is not yet.
    let mut tail = store.tail(Checkpoint::default()).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(600), tail.next_batch(10)).await;
    assert!(
        early.is_err(),
        "nothing is readable while a lower position may still commit: {early:?}"
    );
    tx.commit().await.unwrap();
    // Another test's transaction may hold back "fast" for a moment (xmin is server-wide): read until both.
    let mut batch = Vec::new();
    while batch.len() < 2 {
        let more = tokio::time::timeout(Duration::from_secs(30), tail.next_batch(10))
            .await
            .expect("both events delivered after the commit")
            .unwrap();
        batch.extend(more);
    }
    let ids: Vec<&str> = batch.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["slow", "fast"],
        "both delivered, in position order"
    );
    assert!(batch[0].position < batch[1].position);
}

fn jarvis(db: &jarvis_testkit::TestDb, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_jarvis"))
        .args(args)
        .env("JARVIS_DATABASE_URL", db.url())
        .env("JARVIS_NATS_URL", "nats://127.0.0.1:1")
        .env("JARVIS_LOG", "warn")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run jarvis")
}

fn reports(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_of_every_candle_file_gives_the_counts_of_its_readme_and_again_appends_nothing() {
    let db = jarvis_testkit::TestDb::create().await;
    let files = [
        "data/binance_solusdt_1h.csv",
        "data/binance_ethusdt_1h.csv",
        "data/binance_btcusdt_1h.csv",
        "data/yahoo_sol_usd_1d.csv",
    ];
    let mut args = vec!["ingest", "candles", "--json"];
    args.extend(files);
    let out = jarvis(&db, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<(String, u64, u64, u64, u64, u64)> = reports(&out)
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_u64().unwrap();
            (
                r["symbol"].as_str().unwrap().to_string(),
                n("rows_read"),
                n("appended"),
                n("duplicates_dropped"),
                n("gaps"),
                n("missing_intervals"),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("SOL/USDT".to_string(), 5_363, 5_363, 0, 2, 6),
            ("ETH/USDT".to_string(), 40_352, 37_703, 2_649, 10, 22),
            ("BTC/USDT".to_string(), 40_352, 37_703, 2_649, 10, 22),
            ("SOL/USD".to_string(), 787, 787, 0, 0, 0),
        ]
    );
    let store = jarvis_store::EventStore::connect(db.url(), 2)
        .await
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 5_363 + 2 * 37_703 + 787);

    // Again: nothing new.
    let out = jarvis(&db, &args);
    assert!(out.status.success());
    for r in reports(&out) {
        assert_eq!(r["appended"], 0, "{r}");
        assert_eq!(
            r["already_present"],
            r["rows_read"].as_u64().unwrap() - r["duplicates_dropped"].as_u64().unwrap()
        );
    }
    assert_eq!(store.count().await.unwrap(), 5_363 + 2 * 37_703 + 787);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_refuses_bad_rows_and_conflicting_candles_with_file_and_line() {
    let db = jarvis_testkit::TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let header = "unix,date,time,symbol,open,high,low,close,Volume SOL,Volume USDT,tradecount\n";
    let good = dir.path().join("good.csv");
    std::fs::write(&good, format!("{header}1.63875E+12,06-12-21,01:00:00,SOL/USDT,10,12,9,11,5,50,7\n1.63875E+12,06-12-21,00:00:00,SOL/USDT,10,12,9,11,5,50,7\n")).unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, format!("{header}1.63875E+12,06-12-21,02:00:00,SOL/USDT,10,12,9,abc,5,50,7\n1.63875E+12,06-12-21,03:00:00,SOL/USDT,10,12,9,11,5,50,7\n")).unwrap();
    let store = jarvis_store::EventStore::connect(db.url(), 2)
        .await
        .unwrap();

    let out = jarvis(&db, &["ingest", "candles", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv:2: field close: \"abc\""), "{err}");
    assert!(err.contains("nothing was written"), "{err}");

    let out = jarvis(&db, &["ingest", "candles", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(store.count().await.unwrap(), 2);

    // --skip-bad ingests the good row and lists the bad one.
    let out = jarvis(
        &db,
        &["ingest", "candles", "--skip-bad", bad.to_str().unwrap()],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("bad.csv:2: field close"));
    assert_eq!(store.count().await.unwrap(), 3);

    // A different candle for a recorded hour: refused, named with file and line, the rest lands.
    let conflict = dir.path().join("conflict.csv");
    std::fs::write(&conflict, format!("{header}1.63875E+12,06-12-21,04:00:00,SOL/USDT,10,12,9,11,5,50,7\n1.63875E+12,06-12-21,00:00:00,SOL/USDT,10,13,9,11,5,50,7\n")).unwrap();
    let out = jarvis(&db, &["ingest", "candles", conflict.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .contains("conflict.csv:3: conflicting candle for SOL/USDT at 2021-12-06 00:00:00 UTC"),
        "{stdout}"
    );
    assert!(
        stdout.contains("recorded O=10 H=12") && stdout.contains("offered O=10 H=13"),
        "{stdout}"
    );
    assert_eq!(store.count().await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_record_the_sequence_they_cover() {
    use jarvis_domain::market::{MarketFeed, MarketFeedCommand};
    let (_db, store) = fresh_store().await;
    // Snapshot every 5 events; commands of 4 then 8 candles: the second command crosses the boundary.
    let cqrs = store.snapshot_cqrs::<MarketFeed>(5, ());
    let metadata = EventMetadata::root("test");
    let day = |hours: std::ops::Range<i64>| {
        let start = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2021, 1, 1, 0, 0, 0).unwrap();
        let candles: Vec<jarvis_domain::Candle> = hours
            .map(|h| {
                let p = rust_decimal::Decimal::new(100 + h, 0);
                jarvis_domain::Candle {
                    symbol: jarvis_domain::Symbol::new_checked("SOL/USDT").unwrap(),
                    open_time: start + chrono::Duration::hours(h),
                    close_time: start + chrono::Duration::hours(h + 1),
                    open: p,
                    high: p,
                    low: p,
                    close: p,
                    volume: rust_decimal::Decimal::ONE,
                }
            })
            .collect();
        MarketFeedCommand::RecordCandles {
            feed: "SOL/USDT@2021-01-01".into(),
            candles,
        }
    };
    execute_with_retry(&cqrs, "SOL/USDT@2021-01-01", day(0..4), &metadata, 3)
        .await
        .unwrap();
    execute_with_retry(&cqrs, "SOL/USDT@2021-01-01", day(4..12), &metadata, 3)
        .await
        .unwrap();
    let last: i64 = sqlx::query_scalar("SELECT last_sequence FROM snapshots")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        last, 12,
        "the snapshot holds the state through the last event committed with it"
    );
    // Recording all twelve again must be a no-op: the loaded state knows events 11 and 12 too.
    execute_with_retry(&cqrs, "SOL/USDT@2021-01-01", day(0..12), &metadata, 3)
        .await
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_refuses_events_the_bus_could_not_carry() {
    let (_db, store) = fresh_store().await;
    let gate = Arc::new(Gate {
        barrier: tokio::sync::Barrier::new(1),
        handled: AtomicUsize::new(2),
    });
    let cqrs = store.cqrs::<Tally>(gate);
    // Without metadata (plain cqrs-es execute), nothing is written and the error says what to do.
    let err = cqrs
        .execute("tally-1", "x".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("correlation_id") && err.contains("execute_with_retry"),
        "{err}"
    );
    let err = execute_with_retry(&cqrs, "", "x".into(), &EventMetadata::root("t"), 0)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty aggregate id"), "{err}");
    let big = "x".repeat(jarvis_store::repository::MAX_EVENT_BYTES + 1);
    let err = execute_with_retry(&cqrs, "tally-2", big, &EventMetadata::root("t"), 0)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("exceeds"), "{err}");
    assert_eq!(store.count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_trace_prints_the_causal_chain_oldest_first() {
    let (db, store) = fresh_store().await;
    let gate = Arc::new(Gate {
        barrier: tokio::sync::Barrier::new(1),
        handled: AtomicUsize::new(2),
    });
    let cqrs = store.cqrs::<Tally>(gate);
    // A root, then two events each caused by the one before, on different aggregates.
    let root = EventMetadata::root("test-root");
    execute_with_retry(&cqrs, "tally-a", "first".into(), &root, 0)
        .await
        .unwrap();
    let a = read_all(&store, 1).await.remove(0);
    execute_with_retry(
        &cqrs,
        "tally-b",
        "second".into(),
        &EventMetadata::caused_by(&a, "agent-b"),
        0,
    )
    .await
    .unwrap();
    let b = read_all(&store, 2).await.remove(1);
    execute_with_retry(
        &cqrs,
        "tally-c",
        "third".into(),
        &EventMetadata::caused_by(&b, "agent-c"),
        0,
    )
    .await
    .unwrap();
    let c = read_all(&store, 3).await.remove(2);

    let out = jarvis(&db, &["events", "trace", &c.event_id.to_string(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chain = reports(&out);
    let ids: Vec<&str> = chain.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        vec![
            a.event_id.to_string(),
            b.event_id.to_string(),
            c.event_id.to_string()
        ]
    );
    assert_eq!(chain[0]["source"], "test-root");
    assert_eq!(chain[2]["causation_id"], b.event_id.to_string());
    assert!(chain
        .iter()
        .all(|e| e["correlation_id"] == root.correlation_id.to_string()));

    // By global position too; and an unknown event is a clear error.
    let out = jarvis(&db, &["events", "trace", &b.position.to_string(), "--json"]);
    assert_eq!(reports(&out).len(), 2);
    let out = jarvis(&db, &["events", "trace", &uuid::Uuid::now_v7().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no event"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_nats_micro_services_that_answer_json_requests() {
    use jarvis_bus::service::{parse, serve, ServiceError};
    let nats = jarvis_testkit::NatsServer::start();
    let (client, _) = jarvis_bus::connect(&nats.url(), "test").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = client.clone();
    tokio::spawn(async move {
        serve(
            &server,
            "echo",
            "echoes a reason",
            &["say", "fail"],
            |verb, body| async move {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Say {
                    reason: String,
                }
                let say: Say = parse(&body)?;
                match verb.as_str() {
                    "say" => Ok(serde_json::json!({ "said": say.reason })),
                    _ => Err(ServiceError::refused(format!("refusing {:?}", say.reason))),
                }
            },
            async {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
    });
    // What `nats req jarvis.cmd.echo.say '{"reason":"hi"}'` does.
    let reply = eventually(Duration::from_secs(60), "the service answering", || async {
        client
            .request("jarvis.cmd.echo.say", Bytes::from(r#"{"reason":"hi"}"#))
            .await
            .ok()
    })
    .await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap()["said"],
        "hi"
    );
    let bad = client
        .request("jarvis.cmd.echo.say", Bytes::from(r#"{"reasn":"hi"}"#))
        .await
        .unwrap();
    let h = bad.headers.unwrap();
    assert_eq!(h.get("Nats-Service-Error-Code").unwrap().as_str(), "400");
    assert!(h
        .get("Nats-Service-Error")
        .unwrap()
        .as_str()
        .contains("unknown field `reasn`"));
    let refused = client
        .request("jarvis.cmd.echo.fail", Bytes::from(r#"{"reason":"x"}"#))
        .await
        .unwrap();
    assert_eq!(
        refused
            .headers
            .unwrap()
            .get("Nats-Service-Error-Code")
            .unwrap()
            .as_str(),
        "409"
    );
    // What `nats micro ls` / `nats micro info` rely on.
    let ping = client
        .request("$SRV.PING.jarvis-echo", Bytes::new())
        .await
        .unwrap();
    let ping: serde_json::Value = serde_json::from_slice(&ping.payload).unwrap();
    assert_eq!(ping["name"], "jarvis-echo");
    let info = client
        .request("$SRV.INFO.jarvis-echo", Bytes::new())
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    let subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert!(subjects.contains(&"jarvis.cmd.echo.say"), "{subjects:?}");
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_is_a_nats_request_that_appends_trading_halted() {
    let env = Env::start().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(jarvis_agents::risk::serve_commands(
        env.store.clone(),
        env.client.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let request = |verb: &'static str, body: &'static str| {
        let client = env.client.clone();
        async move {
            eventually(Duration::from_secs(60), "jarvis-risk answering", || {
                let client = client.clone();
                async move {
                    client
                        .request(format!("jarvis.cmd.risk.{verb}"), Bytes::from(body))
                        .await
                        .ok()
                }
            })
            .await
        }
    };
    let json =
        |m: async_nats::Message| serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap();
    // `nats req jarvis.cmd.risk.halt '{"reason":"manual"}'`
    let halted = json(request("halt", r#"{"reason":"manual"}"#).await);
    assert_eq!(halted["halted"], true);
    assert_eq!(halted["halt"]["reason"], "manual");
    assert_eq!(halted["halt"]["rule"], "halted");
    // Halting again changes nothing.
    json(request("halt", r#"{"reason":"again"}"#).await);
    let stored = read_all(&env.store, 1).await;
    assert_eq!(stored[0].ce_type(), "jarvis.risk.TradingHalted.v1");
    assert_eq!(stored[0].metadata.source, "operator:halt");
    assert_eq!(json(request("status", "").await)["halted"], true);
    let resumed = json(request("resume", r#"{"reason":"checked"}"#).await);
    assert_eq!(resumed["halted"], false);
    let stored = read_all(&env.store, 2).await;
    assert_eq!(stored[1].ce_type(), "jarvis.risk.TradingResumed.v1");
    // A malformed request is refused with a reason, and nothing is written.
    let bad = request("halt", r#"{"reson":"typo"}"#).await;
    let h = bad.headers.unwrap();
    assert_eq!(h.get("Nats-Service-Error-Code").unwrap().as_str(), "400");
    assert!(h
        .get("Nats-Service-Error")
        .unwrap()
        .as_str()
        .contains("reson"));
    let blank = request("halt", r#"{"reason":"  "}"#).await;
    assert_eq!(
        blank
            .headers
            .unwrap()
            .get("Nats-Service-Error-Code")
            .unwrap()
            .as_str(),
        "409"
    );
    assert_eq!(env.store.count().await.unwrap(), 2);
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_load_equals_a_full_replay_for_additive_state() {
    use jarvis_domain::trading::{OrderId, Portfolio, PortfolioCommand, Side};
    let (_db, store) = fresh_store().await;
    let cqrs = store.snapshot_cqrs::<Portfolio>(5, ());
    let metadata = EventMetadata::root("test");
    let at = |h: i64| {
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2021, 1, 1, 0, 0, 0).unwrap()
            + chrono::Duration::hours(h)
    };
    let open = PortfolioCommand::Open {
        quote_asset: "USDT".into(),
        initial_cash: Decimal::from(100_000),
        at: at(0),
    };
    execute_with_retry(&cqrs, "p", open, &metadata, 0)
        .await
        .unwrap();
    // Each buy adds a fee of 1: 23 events cross four snapshot boundaries.
    for i in 0..23 {
        let buy = PortfolioCommand::ApplyFill {
            order_id: OrderId::derived(&format!("o{i}")),
            fill_id: format!("f{i}"),
            symbol: "SOL/USDT".parse().unwrap(),
            side: Side::Buy,
            quantity: Decimal::ONE,
            price: Decimal::from(10),
            fee: Decimal::ONE,
            filled_at: at(i + 1),
        };
        execute_with_retry(&cqrs, "p", buy, &metadata, 0)
            .await
            .unwrap();
    }
    let replayed: Portfolio = store.load("p", None).await.unwrap();
    let snapshotted: Portfolio = store.load("p", Some(5)).await.unwrap();
    assert_eq!(replayed.fees_paid(), Decimal::from(23));
    assert_eq!(
        snapshotted, replayed,
        "snapshot + later events must equal the full replay"
    );
}
