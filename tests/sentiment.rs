//! The sentiment agent on real NATS and Postgres, and `jarvis sentiment eval` from the shell.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use common::*;
use jarvis_agents::relay::{run_relay, RelaySettings};
use jarvis_agents::sentiment::agent::{consumer_settings, CONSUMER};
use jarvis_agents::sentiment::{OfflineScorer, SentimentAgent, SentimentSettings};
use jarvis_bus::consumer::dlq_headers;
use jarvis_bus::envelope::{headers, headers_for};
use jarvis_bus::{run_consumer, Envelope, DLQ_STREAM};
use jarvis_domain::sentiment::TokenSentiment;
use jarvis_domain::social::{Tweet, XFeed, XFeedCommand};
use jarvis_domain::{EventMetadata, RecordedEvent};
use jarvis_store::{execute_with_retry, EventStore};
use jarvis_testkit::eventually;
use serde_json::Value;

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

fn agent(store: &EventStore) -> Arc<SentimentAgent> {
    Arc::new(
        SentimentAgent::new(
            store.clone(),
            Arc::new(OfflineScorer::default()),
            &SentimentSettings::default(),
        )
        .unwrap(),
    )
}

/// Starts the relay and the agent; both stop when the returned sender drops.
fn spawn(env: &Env, agent: Arc<SentimentAgent>) -> tokio::sync::watch::Sender<bool> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(run_relay(
        env.store.clone(),
        env.js.clone(),
        RelaySettings::default(),
        until(stopped.clone()),
    ));
    let js = env.js.clone();
    let mut settings = consumer_settings();
    settings.backoff = vec![Duration::from_millis(50)];
    let stopped = until(stopped);
    tokio::spawn(async move {
        run_consumer(&js, &settings, agent.as_ref(), stopped)
            .await
            .unwrap();
    });
    stop
}

async fn scored(store: &EventStore, n: usize) -> Vec<RecordedEvent> {
    eventually(
        Duration::from_secs(60),
        &format!("{n} SentimentScored"),
        || async {
            let events = store
                .read_after(jarvis_store::Checkpoint::default(), 100_000)
                .await
                .ok()?;
            let s: Vec<RecordedEvent> = events
                .into_iter()
                .filter(|e| e.event_type == "SentimentScored")
                .collect();
            (s.len() >= n).then_some(s)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tweet_is_scored_per_token_caused_by_the_tweet_and_redelivery_adds_nothing() {
    let env = Env::start().await;
    let agent = agent(&env.store);
    let _stop = spawn(&env, agent.clone());
    receive(
        &env.store,
        tweet("1", "quiet markets today, nothing to see"),
    )
    .await;
    receive(
        &env.store,
        tweet("2", "$SOL breaks out to a record high as Bitcoin rallies"),
    )
    .await;
    let events = scored(&env.store, 2).await;
    let all = env
        .store
        .read_after(jarvis_store::Checkpoint::default(), 100)
        .await
        .unwrap();
    let source = all
        .iter()
        .find(|e| e.event_type == "TweetReceived" && e.payload["tweet_id"] == "2")
        .unwrap()
        .clone();
    let mut tokens: Vec<&str> = events
        .iter()
        .map(|e| e.payload["token"].as_str().unwrap())
        .collect();
    tokens.sort();
    assert_eq!(tokens, ["BTC", "SOL"]);
    for e in &events {
        assert_eq!(e.aggregate_type, "TokenSentiment");
        assert_eq!(e.metadata.causation_id, source.event_id);
        assert_eq!(e.metadata.correlation_id, source.metadata.correlation_id);
        assert_eq!(e.metadata.source, "sentiment");
        assert_eq!(e.payload["source_event"], source.event_id.to_string());
        assert_eq!(e.payload["source_type"], "TweetReceived");
        assert_eq!(e.payload["at"], "2024-03-01T14:30:00Z");
        assert!(e.payload["model"].as_str().unwrap().starts_with("nblr-"));
        assert_eq!(e.ce_type(), "jarvis.sentiment.SentimentScored.v1");
    }
    let sol: TokenSentiment = env.store.load("SOL@2024-03-01", None).await.unwrap();
    let latest = sol
        .latest_at("2024-03-01T23:00:00Z".parse().unwrap())
        .unwrap();
    assert_eq!(latest.source_event, source.event_id);
    assert!(sol
        .latest_at("2024-03-01T14:00:00Z".parse().unwrap())
        .is_none());

    // The same tweet delivered again (a crash before the ack): nothing new.
    let payload = serde_json::to_vec(&source.payload).unwrap();
    let envelope = Envelope::from_parts(
        &source.subject(),
        Some(&headers_for(&source)),
        Bytes::from(payload),
    )
    .unwrap();
    let event = jarvis_domain::AnyEvent::decode(&envelope.ce_type, &envelope.data).unwrap();
    jarvis_bus::Handler::handle(agent.as_ref(), &envelope, event)
        .await
        .unwrap();
    let again = env
        .store
        .read_after(jarvis_store::Checkpoint::default(), 100)
        .await
        .unwrap();
    assert_eq!(
        again
            .iter()
            .filter(|e| e.event_type == "SentimentScored")
            .count(),
        2
    );
}

fn tweet_headers(subject_id: &str) -> HeaderMap {
    let event = RecordedEvent {
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
    };
    let h = headers_for(&event);
    assert_eq!(
        h.get(headers::TYPE).unwrap().as_str(),
        "jarvis.social.TweetReceived.v1"
    );
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_tweets_are_dead_lettered_and_the_agent_goes_on() {
    let env = Env::start().await;
    let _stop = spawn(&env, agent(&env.store));
    let publish = |n: &str, body: Vec<u8>| {
        let js = env.js.clone();
        let subject = format!("jarvis.evt.social.TweetReceived.poison-{n}");
        let h = tweet_headers(&format!("poison-{n}"));
        async move {
            js.publish_with_headers(subject, h, Bytes::from(body))
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    let body = |text: &str| {
        let mut t = serde_json::to_value(tweet("9", text)).unwrap();
        t["text"] = Value::String(text.into());
        serde_json::to_vec(&t).unwrap()
    };
    // Invalid UTF-8 inside the JSON string.
    let mut bad_utf8 = body("$SOL XX");
    let at = bad_utf8.windows(2).position(|w| w == b"XX").unwrap();
    bad_utf8[at] = 0xff;
    bad_utf8[at + 1] = 0xfe;
    publish("utf8", bad_utf8).await;
    publish("empty", body("   ")).await;
    // 200 kB: over the scorer's limit, under NATS's 1 MiB message limit.
    publish("huge", body(&format!("$SOL {}", "moon ".repeat(40_000)))).await;
    // Then a good tweet through the store and the relay.
    receive(&env.store, tweet("3", "$SOL is crashing, sell everything")).await;
    let events = scored(&env.store, 1).await;
    assert_eq!(events[0].payload["token"], "SOL");
    wait_stream_len_of(&env.js, DLQ_STREAM, 3).await;
    let dlq = read_stream(&env.js, DLQ_STREAM).await;
    let mut errors: Vec<(String, String)> = dlq
        .iter()
        .map(|m| {
            assert_eq!(m.subject, format!("jarvis.dlq.{CONSUMER}"));
            (
                m.headers.get(dlq_headers::SUBJECT).unwrap().to_string(),
                m.headers.get(dlq_headers::ERROR).unwrap().to_string(),
            )
        })
        .collect();
    errors.sort();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].0.ends_with("poison-empty") && errors[0].1.contains("text is empty"),
        "{errors:?}"
    );
    assert!(
        errors[1].0.ends_with("poison-huge") && errors[1].1.contains("exceeds 100000"),
        "{errors:?}"
    );
    assert!(
        errors[2].0.ends_with("poison-utf8") && errors[2].1.contains("does not match its schema"),
        "{errors:?}"
    );
}

fn jarvis(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_jarvis"))
        .args(args)
        .env("JARVIS_LOG", "warn")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap()
}

#[test]
fn eval_json_has_the_documented_keys_and_is_reproducible() {
    let file = "data/financial_tweets_sentiment_train.csv";
    let out = jarvis(&["sentiment", "eval", file, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "file",
        "model",
        "rows_read",
        "bad_rows",
        "rows_trained_on",
        "texts",
        "accuracy",
        "macro_f1",
        "classes",
        "confusion",
        "baseline",
        "all_rows",
    ] {
        assert!(report.get(key).is_some(), "no {key} in {report}");
    }
    assert_eq!(report["rows_read"], 9543);
    assert!(report["bad_rows"].as_array().unwrap().is_empty());
    let trained = report["rows_trained_on"].as_u64().unwrap();
    let held_out = report["texts"].as_u64().unwrap();
    assert_eq!(trained + held_out, 9543);
    assert!(held_out > 1_500 && held_out < 2_300, "{held_out}");
    assert!(report["macro_f1"].as_f64().unwrap() >= 0.75, "{report}");
    assert!(report["baseline"]["metrics"]["macro_f1"].as_f64().is_some());
    assert!(report["classes"]["bearish"]["precision"].as_f64().is_some());
    assert_eq!(report["all_rows"]["texts"], 9543);
    let again = jarvis(&["sentiment", "eval", file, "--json"]);
    assert_eq!(out.stdout, again.stdout, "same file, same numbers");
}

#[test]
fn eval_reports_bad_rows_by_line_and_refuses_missing_files_and_wrong_headers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.csv");
    std::fs::write(
        &path,
        "text,label\n\"$TSLA falls 5% on weak guidance\",0\nno label here\n\"record revenue, stock soars\",1\n",
    )
    .unwrap();
    let out = jarvis(&["sentiment", "eval", path.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["texts"], 2);
    assert_eq!(report["rows_trained_on"], 0);
    assert!(report["all_rows"].is_null());
    let bad = report["bad_rows"][0].as_str().unwrap();
    assert!(
        bad.ends_with("mixed.csv:3: 1 fields, expected 2 (text,label)"),
        "{bad}"
    );

    let out = jarvis(&["sentiment", "eval", "/nonexistent/tweets.csv"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open /nonexistent/tweets.csv"));
    std::fs::write(&path, "tweet,sentiment\nx,1\n").unwrap();
    let out = jarvis(&["sentiment", "eval", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mixed.csv:1: header is \"tweet,sentiment\""),
        "{err}"
    );
}

#[test]
fn bench_sentiment_json_has_its_rate_and_baseline() {
    let out = jarvis(&["bench", "sentiment", "--rounds", "1", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["texts_per_sec", "baseline_texts_per_sec", "ratio", "texts"] {
        assert!(report[key].as_f64().is_some(), "no {key} in {report}");
    }
    assert_eq!(report["texts"], 9543);
}

/// `jarvis up` against the test's servers, killed on drop.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jarvis_up_runs_the_sentiment_agent() {
    let env = Env::start().await;
    let _up = Up(Command::new(env!("CARGO_BIN_EXE_jarvis"))
        .arg("up")
        .env("JARVIS_DATABASE_URL", env.db.url())
        .env("JARVIS_NATS_URL", env.nats.url())
        .env("JARVIS_LOG", "warn")
        .env("JARVIS_SENTIMENT__ALIASES__WIF", "[\"dogwifhat\"]")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap());
    receive(&env.store, tweet("5", "dogwifhat holders are dumping hard")).await;
    let events = scored(&env.store, 1).await;
    assert_eq!(events[0].payload["token"], "WIF");
    assert_eq!(events[0].metadata.source, "sentiment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_message_is_scored_like_a_tweet_by_the_agents_second_consumer() {
    use jarvis_domain::chat::{Conversation, ConversationCommand, ReceivedMessage, Trust};
    let env = Env::start().await;
    let agent = agent(&env.store);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(run_relay(
        env.store.clone(),
        env.js.clone(),
        RelaySettings::default(),
        until(stopped.clone()),
    ));
    let js = env.js.clone();
    let running = agent.clone();
    let stopped = until(stopped);
    tokio::spawn(async move {
        jarvis_agents::sentiment::agent::run(running.as_ref(), &js, stopped)
            .await
            .unwrap();
    });
    let message = |id: i64, text: &str| ReceivedMessage {
        chat_id: 42,
        message_id: id,
        user_id: 7,
        username: Some("owner".into()),
        text: text.into(),
        trust: Trust::Owner,
        received_at: "2024-03-01T15:00:00Z".parse().unwrap(),
    };
    for m in [
        message(1, ""),
        message(2, "$SOL breaks out to a record high, very bullish"),
    ] {
        execute_with_retry(
            &env.store.cqrs::<Conversation>(()),
            "telegram:42",
            ConversationCommand::Receive(m),
            &EventMetadata::root("test-telegram"),
            5,
        )
        .await
        .unwrap();
    }
    let events = scored(&env.store, 1).await;
    assert_eq!(events.len(), 1, "the message without text scores nothing");
    assert_eq!(events[0].payload["token"], "SOL");
    assert_eq!(events[0].payload["source_type"], "ChatMessageReceived");
    drop(stop);
}
