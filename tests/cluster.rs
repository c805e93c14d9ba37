//! A 3-node JetStream cluster on 127.0.0.1 (three nats-server processes with routes) and R3 streams: `jarvis
//! up` runs against all three; one node is killed during a replay, and nothing is lost or duplicated; brought
//! back, it catches up (its replica is current, as `$JS.API.STREAM.INFO` reports).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::books::*;
use common::*;
use jarvis_bus::server::{ClusterNode, NatsProcess};
use jarvis_bus::EVENTS_STREAM;
use jarvis_store::EventStore;
use jarvis_testkit::{eventually, TestDb};
use serde_json::{json, Value};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster {
    nodes: Vec<Option<NatsProcess>>,
    specs: Vec<ClusterNode>,
    dirs: Vec<tempfile::TempDir>,
    db: TestDb,
    store: EventStore,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
}

impl Cluster {
    async fn start() -> Self {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let specs: Vec<ClusterNode> = (0..3)
            .map(|i| ClusterNode {
                name: format!("n{}", i + 1),
                cluster: "jarvis".into(),
                port: free_port(),
                cluster_port: routes[i],
                routes: routes.clone(),
            })
            .collect();
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let nodes = specs
            .iter()
            .zip(&dirs)
            .map(|(spec, dir)| {
                Some(NatsProcess::start_clustered(dir.path(), spec.clone()).unwrap())
            })
            .collect();
        let db = TestDb::create().await;
        let store = EventStore::connect(db.url(), 8).await.unwrap();
        store.migrate().await.unwrap();
        let urls = specs
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",");
        let (client, js) = jarvis_bus::connect(&urls, "test").await.unwrap();
        let settings = jarvis_bus::StreamSettings {
            replicas: 3,
            ..Default::default()
        };
        // JetStream answers once the cluster has elected its meta leader.
        eventually(
            Duration::from_secs(60),
            "R3 streams on the cluster",
            || async { jarvis_bus::ensure_streams(&js, &settings).await.ok() },
        )
        .await;
        Self {
            nodes,
            specs,
            dirs,
            db,
            store,
            client,
            js,
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.kill();
        }
    }

    fn restart(&mut self, i: usize) {
        self.nodes[i] =
            Some(NatsProcess::start_clustered(self.dirs[i].path(), self.specs[i].clone()).unwrap());
    }
}

impl Target for Cluster {
    fn database_url(&self) -> String {
        self.db.url().to_string()
    }
    fn nats_url(&self) -> String {
        self.specs
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }
    fn store(&self) -> &EventStore {
        &self.store
    }
    fn js(&self) -> &async_nats::jetstream::Context {
        &self.js
    }
}

/// `$JS.API.STREAM.INFO.JARVIS_EVENTS`, as `nats stream info` sends it.
async fn stream_info(client: &async_nats::Client) -> Option<Value> {
    let reply = client
        .request(
            format!("$JS.API.STREAM.INFO.{EVENTS_STREAM}"),
            json!({}).to_string().into(),
        )
        .await
        .ok()?;
    let v: Value = serde_json::from_slice(&reply.payload).ok()?;
    v.get("error").is_none().then_some(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_nodes_mid_replay_loses_and_duplicates_nothing_and_it_catches_up() {
    let mut cluster = Cluster::start().await;
    // The stream's raft group may still be electing its first leader right after it was created.
    let info = eventually(Duration::from_secs(60), "stream info", || {
        stream_info(&cluster.client)
    })
    .await;
    assert_eq!(info["config"]["num_replicas"], 3);
    let tight = [
        ("JARVIS_TREASURY__DRIFT_BAND", "0.001"),
        ("JARVIS_NATS__REPLICAS", "3"),
    ];
    let _up = up(&cluster, &tight);
    let (_dir, file) = sol_subset(300);
    ingest(&cluster, &file);
    eventually(Duration::from_secs(120), "100 candles taken", || async {
        (candles_taken(&cluster).await >= 100).then_some(())
    })
    .await;
    // The stream's leader is the node most likely to hurt: kill that one.
    let leader = eventually(Duration::from_secs(60), "the stream's leader", || async {
        let info = stream_info(&cluster.client).await?;
        info["cluster"]["leader"].as_str().map(str::to_string)
    })
    .await;
    let victim = cluster.specs.iter().position(|s| s.name == leader).unwrap();
    cluster.kill(victim);
    wait_idle(&cluster, 300).await;
    let all = check_books(&cluster).await;
    let proposed = of_type(&all, "TradeProposed");
    let causes: HashSet<uuid::Uuid> = proposed.iter().map(|e| e.metadata.causation_id).collect();
    assert_eq!(causes.len(), proposed.len(), "two proposals for one candle");
    let stored = cluster.store.count().await.unwrap() as usize;
    wait_stream_len(&cluster.js, stored).await;
    let messages = read_stream(&cluster.js, EVENTS_STREAM).await;
    assert_eq!(messages.len(), stored, "stream vs store");
    assert_eq!(msg_ids(&messages).len(), stored, "an event published twice");
    // Back: its replica catches up with the new leader.
    cluster.restart(victim);
    let name = cluster.specs[victim].name.clone();
    let last = messages.len() as u64;
    eventually(
        Duration::from_secs(120),
        "the restarted node to catch up",
        || async {
            let info = stream_info(&cluster.client).await?;
            let c = &info["cluster"];
            let me = c["replicas"]
                .as_array()?
                .iter()
                .find(|r| r["name"] == name.as_str())
                .cloned()
                .or_else(|| (c["leader"] == name.as_str()).then(|| json!({"current": true})))?;
            (me["current"] == true
                && me["lag"].as_u64().unwrap_or(0) == 0
                && info["state"]["last_seq"].as_u64()? >= last)
                .then_some(())
        },
    )
    .await;
    // Asked through that node alone, the stream reports every message.
    let alone = async_nats::connect(format!("nats://127.0.0.1:{}", cluster.specs[victim].port))
        .await
        .unwrap();
    let info = eventually(
        Duration::from_secs(60),
        "stream info via the restarted node",
        || stream_info(&alone),
    )
    .await;
    assert_eq!(info["state"]["messages"].as_u64().unwrap() as usize, stored);
}
