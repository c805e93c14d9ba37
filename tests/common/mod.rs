//! Helpers shared by the scenario tests.

#![allow(dead_code)]

use std::time::Duration;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use chrono::{Duration as Days, TimeZone, Utc};
use futures::StreamExt;
use jarvis_bus::{ensure_streams, StreamSettings, EVENTS_STREAM};
use jarvis_domain::market::{MarketFeed, MarketFeedCommand, MarketFeedId};
use jarvis_domain::{Candle, EventMetadata, Symbol};
use jarvis_store::{execute_with_retry, EventStore};
use jarvis_testkit::{eventually, NatsServer, TestDb};

pub mod books;
use rust_decimal::Decimal;

/// A private nats-server, a fresh database, and clients of both, migrated and provisioned.
pub struct Env {
    pub nats: NatsServer,
    pub db: TestDb,
    pub store: EventStore,
    pub client: async_nats::Client,
    pub js: Context,
}

impl Env {
    pub async fn start() -> Self {
        let nats = NatsServer::start();
        let db = TestDb::create().await;
        let store = EventStore::connect(db.url(), 8).await.unwrap();
        store.migrate().await.unwrap();
        let (client, js) = jarvis_bus::connect(&nats.url(), "test").await.unwrap();
        ensure_streams(&js, &StreamSettings::default())
            .await
            .unwrap();
        Self {
            nats,
            db,
            store,
            client,
            js,
        }
    }
}

/// Appends `days` days of 24 hourly candles of `symbol`, from day `first` after 2021-01-01, one command
/// per day, and returns the metadata used.
pub async fn append_days(store: &EventStore, symbol: &str, first: i64, days: i64) -> EventMetadata {
    let metadata = EventMetadata::root("test-writer");
    let cqrs = store.cqrs::<MarketFeed>(());
    let start = Utc.with_ymd_and_hms(2021, 1, 1, 0, 0, 0).unwrap();
    for day in first..first + days {
        let candles: Vec<Candle> = (0..24)
            .map(|h| {
                let p = Decimal::new(100 + h, 0);
                Candle {
                    symbol: Symbol::new_checked(symbol).unwrap(),
                    open_time: start + Days::days(day) + Days::hours(h),
                    close_time: start + Days::days(day) + Days::hours(h + 1),
                    open: p,
                    high: p + Decimal::ONE,
                    low: p - Decimal::ONE,
                    close: p,
                    volume: Decimal::ONE,
                }
            })
            .collect();
        let feed = MarketFeedId::of(&candles[0]).to_string();
        execute_with_retry(
            &cqrs,
            &feed,
            MarketFeedCommand::RecordCandles {
                feed: feed.clone(),
                candles,
            },
            &metadata,
            5,
        )
        .await
        .unwrap();
    }
    metadata
}

/// A message read back from a stream.
#[derive(Debug, Clone)]
pub struct StreamMessage {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Vec<u8>,
}

/// Every message of a stream, in stream order.
///
/// Retried as a whole for up to a minute: in a cluster that has just lost its stream leader, creating the
/// ordered consumer can time out while the new leader settles.
pub async fn read_stream(js: &Context, stream: &str) -> Vec<StreamMessage> {
    let mut last_error = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        match try_read_stream(js, stream).await {
            Ok(messages) => return messages,
            Err(e) => last_error = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("reading stream {stream} kept failing for 60 s: {last_error}");
}

async fn try_read_stream(js: &Context, stream: &str) -> Result<Vec<StreamMessage>, String> {
    let stream = js
        .get_stream(stream)
        .await
        .map_err(|e| format!("stream info: {e}"))?;
    let mut consumer = stream
        .create_consumer(OrderedConfig::default())
        .await
        .map_err(|e| format!("ordered consumer: {e}"))?;
    let info = consumer
        .info()
        .await
        .map_err(|e| format!("consumer info: {e}"))?;
    if info.num_pending == 0 {
        return Ok(vec![]);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("consumer messages: {e}"))?;
    let mut out = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| format!("stream read stalled after {} messages", out.len()))?;
        let Some(m) = next else { break };
        let m = m.map_err(|e| format!("message {}: {e}", out.len()))?;
        let pending = m.info().map_err(|e| format!("message info: {e}"))?.pending;
        out.push(StreamMessage {
            subject: m.subject.to_string(),
            headers: m.headers.clone().unwrap_or_default(),
            payload: m.payload.to_vec(),
        });
        if pending == 0 {
            break;
        }
    }
    Ok(out)
}

/// The distinct `Nats-Msg-Id`s of some messages.
pub fn msg_ids(messages: &[StreamMessage]) -> std::collections::HashSet<String> {
    messages
        .iter()
        .map(|m| m.headers.get("Nats-Msg-Id").unwrap().to_string())
        .collect()
}

/// Waits until `stream` holds at least `n` messages.
pub async fn wait_stream_len_of(js: &Context, stream: &str, n: usize) {
    eventually(
        Duration::from_secs(60),
        &format!("{n} messages in {stream}"),
        || async {
            let mut s = js.get_stream(stream).await.ok()?;
            let have = s.info().await.ok()?.state.messages as usize;
            (have >= n).then_some(())
        },
    )
    .await;
}

/// Waits until `JARVIS_EVENTS` holds at least `n` messages.
pub async fn wait_stream_len(js: &Context, n: usize) {
    wait_stream_len_of(js, EVENTS_STREAM, n).await;
}

/// How many messages `JARVIS_EVENTS` holds.
pub async fn stream_len(js: &Context) -> usize {
    let mut s = js.get_stream(EVENTS_STREAM).await.unwrap();
    s.info().await.unwrap().state.messages as usize
}

/// Every event of the store, once at least `n` are readable. The gap-safe reader waits for the oldest
/// transaction on the whole server, which may belong to a test running beside this one: poll.
pub async fn read_all(store: &EventStore, n: usize) -> Vec<jarvis_domain::RecordedEvent> {
    let events = eventually(
        Duration::from_secs(60),
        &format!("{n} readable events"),
        || async {
            let events = store
                .read_after(jarvis_store::Checkpoint::default(), 1_000_000)
                .await
                .unwrap();
            (events.len() >= n).then_some(events)
        },
    )
    .await;
    assert_eq!(events.len(), n, "more events than written");
    events
}

/// Every event of the store, once all of them are readable. The gap-safe reader only returns events older
/// than every transaction still open on the whole server (possibly a test running beside this one), so a
/// single read can miss the newest events: count them first, then read until the reader has them all.
pub async fn read_everything(store: &EventStore) -> Vec<jarvis_domain::RecordedEvent> {
    eventually(
        Duration::from_secs(60),
        "every stored event readable",
        || async {
            let total = usize::try_from(store.count().await.ok()?).ok()?;
            let events = store
                .read_after(jarvis_store::Checkpoint::default(), 10_000_000)
                .await
                .ok()?;
            (events.len() >= total).then_some(events)
        },
    )
    .await
}

/// A fresh, migrated database and a store on it (no NATS).
pub async fn fresh_store() -> (TestDb, EventStore) {
    let db = TestDb::create().await;
    let store = EventStore::connect(db.url(), 4).await.unwrap();
    store.migrate().await.unwrap();
    (db, store)
}
