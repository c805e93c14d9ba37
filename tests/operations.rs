//! The runbook's `nats` CLI recipes (docs/operations.md) against a running `jarvis up`: the CLI cannot be
//! installed here, so each recipe's request is sent with async-nats, on the same subject with the same body
//! the CLI sends (`nats micro ls|info|stats` → `$SRV.PING|INFO|STATS`, `nats stream info` →
//! `$JS.API.STREAM.INFO.<stream>`, `nats consumer info` → `$JS.API.CONSUMER.INFO.<stream>.<consumer>`,
//! `nats stream get` → `$JS.API.STREAM.MSG.GET.<stream>`, `nats stream rmm` → `$JS.API.STREAM.MSG.DELETE`,
//! `nats stream purge --subject` → `$JS.API.STREAM.PURGE`, `nats sub`, `nats req`). Also `jarvis status`.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use common::books::*;
use common::*;
use futures::StreamExt;
use jarvis_testkit::eventually;
use serde_json::{json, Value};

/// A request with the CLI's body; the reply as JSON.
async fn req(client: &async_nats::Client, subject: &str, body: Value) -> Value {
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let reply = client
        .request(subject.to_string(), body)
        .await
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
    serde_json::from_slice(&reply.payload)
        .unwrap_or_else(|e| panic!("{subject}: {e}: {:?}", reply.payload))
}

/// Every reply to a request within `wait` (what `nats micro ls` and `nats req --replies 0` do).
async fn gather(client: &async_nats::Client, subject: &str, wait: Duration) -> Vec<Value> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(subject.to_string(), inbox, Bytes::new())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await {
        out.push(serde_json::from_slice(&m.payload).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runbooks_nats_recipes_work_against_a_running_stack() {
    let env = Env::start().await;
    // The Telegram and X agents too, against the fake Bot API and the fake X API.
    let telegram = jarvis_testkit::fakes::telegram::FakeTelegram::start("123456:ops-test").await;
    let x = jarvis_testkit::fakes::x::FakeX::start("ops-bearer", "ops-user").await;
    let (telegram_url, x_url) = (telegram.url(), x.url());
    let bots = [
        ("JARVIS_TELEGRAM__TOKEN", "123456:ops-test"),
        ("JARVIS_TELEGRAM__API_URL", telegram_url.as_str()),
        ("JARVIS_X__BEARER_TOKEN", "ops-bearer"),
        ("JARVIS_X__USER_TOKEN", "ops-user"),
        ("JARVIS_X__API_URL", x_url.as_str()),
    ];
    let _up = Up(jarvis(&env, &["up"], &bots)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let (_dir, file) = sol_subset(50);
    ingest(&env, &file);
    wait_idle(&env, 50).await;
    let client = &env.client;

    // nats micro ls: every agent of `jarvis up` is a service.
    let names = eventually(Duration::from_secs(60), "every service", || async {
        let names: BTreeSet<String> = gather(client, "$SRV.PING", Duration::from_millis(500))
            .await
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        [
            "jarvis-relay",
            "jarvis-trading",
            "jarvis-risk",
            "jarvis-sentiment",
            "jarvis-memory",
            "jarvis-telegram",
            "jarvis-x",
        ]
        .iter()
        .all(|n| names.contains(*n))
        .then_some(names)
    })
    .await;
    assert!(
        !names.contains("jarvis-llm"),
        "no [llm] providers: no jarvis-llm"
    );
    // nats micro info jarvis-risk: its endpoints and subjects.
    let info = req(client, "$SRV.INFO.jarvis-risk", Value::Null).await;
    assert_eq!(info["type"], "io.nats.micro.v1.info_response");
    let subjects: BTreeSet<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    for verb in ["halt", "resume", "status"] {
        assert!(
            subjects.contains(format!("jarvis.cmd.risk.{verb}").as_str()),
            "{info}"
        );
    }
    let trading = req(client, "$SRV.INFO.jarvis-trading", Value::Null).await;
    let trading_subjects: BTreeSet<&str> = trading["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    for verb in ["status", "propose", "confirm"] {
        assert!(
            trading_subjects.contains(format!("jarvis.cmd.trading.{verb}").as_str()),
            "{trading}"
        );
    }
    // nats req jarvis.cmd.<agent>.status: the heartbeat, with the consumer's lag.
    let status = req(client, "jarvis.cmd.trading.status", json!({})).await;
    assert_eq!(status["agent"], "trading");
    assert_eq!(status["status"], "ok");
    assert_eq!(status["consumers"][0]["name"], "trading");
    assert_eq!(status["consumers"][0]["num_pending"], 0);
    let risk = req(client, "jarvis.cmd.risk.status", json!({})).await;
    assert_eq!(risk["halted"], false, "{risk}");
    assert_eq!(risk["health"]["agent"], "risk", "{risk}");
    // nats req jarvis.cmd.risk.halt / resume.
    let halted = req(client, "jarvis.cmd.risk.halt", json!({"reason": "runbook"})).await;
    assert_eq!(halted["halted"], true, "{halted}");
    let resumed = req(
        client,
        "jarvis.cmd.risk.resume",
        json!({"reason": "runbook"}),
    )
    .await;
    assert_eq!(resumed["halted"], false, "{resumed}");
    // nats micro stats jarvis-risk: requests counted per endpoint.
    let stats = req(client, "$SRV.STATS.jarvis-risk", Value::Null).await;
    assert_eq!(stats["type"], "io.nats.micro.v1.stats_response");
    let requests: u64 = stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["num_requests"].as_u64().unwrap())
        .sum();
    assert!(requests >= 3, "{stats}");

    // nats sub 'jarvis.health.>': heartbeats on core NATS.
    let mut beats = client.subscribe("jarvis.health.>").await.unwrap();
    let beat = tokio::time::timeout(Duration::from_secs(30), beats.next())
        .await
        .expect("a heartbeat within 30 s")
        .unwrap();
    let beat: Value = serde_json::from_slice(&beat.payload).unwrap();
    assert!(beat["interval_ms"].as_u64().unwrap() > 0);
    assert!(beat["instance"].as_str().unwrap().contains(':'));
    // nats req jarvis.ping.health '' --replies 0: every instance answers at once. (Asked again until all
    // answered within the half second: on a loaded machine a reply can miss the window.)
    let every = [
        "relay",
        "trading",
        "risk",
        "sentiment",
        "memory",
        "telegram",
        "x",
    ];
    let agents = eventually(
        Duration::from_secs(60),
        "every agent answering a ping",
        || async {
            let all = gather(client, "jarvis.ping.health", Duration::from_millis(500)).await;
            let agents: BTreeSet<String> = all
                .iter()
                .map(|b| b["agent"].as_str().unwrap().to_string())
                .collect();
            every.iter().all(|a| agents.contains(*a)).then_some(agents)
        },
    )
    .await;
    for a in every {
        assert!(agents.contains(a), "{agents:?}");
    }

    // nats stream ls / info.
    let list = req(client, "$JS.API.STREAM.NAMES", json!({})).await;
    let streams: BTreeSet<&str> = list["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(streams, BTreeSet::from(["JARVIS_DLQ", "JARVIS_EVENTS"]));
    let info = req(client, "$JS.API.STREAM.INFO.JARVIS_EVENTS", json!({})).await;
    assert_eq!(info["config"]["num_replicas"], 1);
    assert_eq!(info["config"]["duplicate_window"], 120_000_000_000u64);
    // The halt and resume above were appended a moment ago: let the relay publish them.
    let stored = env.store.count().await.unwrap();
    wait_stream_len(&env.js, stored as usize).await;
    let info = req(client, "$JS.API.STREAM.INFO.JARVIS_EVENTS", json!({})).await;
    assert_eq!(info["state"]["messages"], stored);
    // nats consumer ls / info: the lag.
    let consumers = req(client, "$JS.API.CONSUMER.NAMES.JARVIS_EVENTS", json!({})).await;
    let consumers: BTreeSet<&str> = consumers["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for c in ["trading", "sentiment", "sentiment-chat", "memory-chat"] {
        assert!(consumers.contains(c), "{consumers:?}");
    }
    let trading = req(
        client,
        "$JS.API.CONSUMER.INFO.JARVIS_EVENTS.trading",
        json!({}),
    )
    .await;
    assert_eq!(trading["num_pending"], 0);
    assert_eq!(trading["num_ack_pending"], 0);
    assert!(trading["num_redelivered"].is_u64());
    // nats stream get JARVIS_EVENTS 1: the message with its headers (base64).
    let got = req(
        client,
        "$JS.API.STREAM.MSG.GET.JARVIS_EVENTS",
        json!({"seq": 1}),
    )
    .await;
    assert_eq!(got["message"]["seq"], 1);
    assert!(got["message"]["hdrs"].is_string(), "{got}");
    assert!(got["message"]["subject"]
        .as_str()
        .unwrap()
        .starts_with("jarvis.evt."));

    // Dead letters: nats stream view / rmm / purge --subject.
    for n in 1..=3 {
        env.js
            .publish("jarvis.dlq.trading", format!("dead {n}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let dlq = req(
        client,
        "$JS.API.STREAM.INFO.JARVIS_DLQ",
        json!({"subjects_filter": "jarvis.dlq.>"}),
    )
    .await;
    assert_eq!(dlq["state"]["messages"], 3);
    assert_eq!(dlq["state"]["subjects"]["jarvis.dlq.trading"], 3, "{dlq}");
    let first = dlq["state"]["first_seq"].as_u64().unwrap();
    let deleted = req(
        client,
        "$JS.API.STREAM.MSG.DELETE.JARVIS_DLQ",
        json!({"seq": first}),
    )
    .await;
    assert_eq!(deleted["success"], true, "{deleted}");
    let purged = req(
        client,
        "$JS.API.STREAM.PURGE.JARVIS_DLQ",
        json!({"filter": "jarvis.dlq.trading"}),
    )
    .await;
    assert_eq!(purged["purged"], 2, "{purged}");

    // jarvis status --json: who is alive, lag, dead letters. It collects heartbeats for one second, and the
    // relay moves its checkpoint (the lag) a moment after its last publish is acked: asked until both show.
    let alive_of = |status: &Value| -> BTreeSet<String> {
        status["agents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["alive"] == true)
            .map(|a| a["agent"].as_str().unwrap().to_string())
            .collect()
    };
    let status: Value = eventually(
        Duration::from_secs(60),
        "jarvis status: agents alive, relay caught up",
        || async {
            let out = jarvis(&env, &["status", "--json"], &[]).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let status: Value = serde_json::from_slice(&out.stdout).unwrap();
            let alive = alive_of(&status);
            (["relay", "trading", "risk"]
                .iter()
                .all(|a| alive.contains(*a))
                && status["relay"]["lag_events"] == 0)
                .then_some(status)
        },
    )
    .await;
    let alive = alive_of(&status);
    for a in ["relay", "trading", "risk"] {
        assert!(alive.contains(a), "{status}");
    }
    assert_eq!(status["relay"]["lag_events"], 0);
    assert!(
        status["dead_letters"].as_object().unwrap().is_empty(),
        "{status}"
    );
    let text = eventually(
        Duration::from_secs(60),
        "trading in the text of jarvis status",
        || async {
            let text = jarvis(&env, &["status"], &[]).output().unwrap();
            let text = String::from_utf8_lossy(&text.stdout).into_owned();
            text.contains("agent    trading").then_some(text)
        },
    )
    .await;
    assert!(text.contains("agent    trading"), "{text}");
}

/// A free port on 127.0.0.1 for the gateway (released before the gateway binds it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The latest heartbeat of `agent` on `jarvis.health.<agent>` whose status is `status`.
async fn beat_with_status(beats: &mut async_nats::Subscriber, agent: &str, status: &str) -> Value {
    let wait = async {
        while let Some(m) = beats.next().await {
            let beat: Value = serde_json::from_slice(&m.payload).unwrap();
            if beat["agent"] == agent && beat["status"] == status {
                return beat;
            }
        }
        panic!("the heartbeat subscription ended");
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("no {status} heartbeat of {agent} within 60 s"))
}

/// The status of `agent` in `jarvis status --json` (alive instances only).
fn status_of(env: &Env, config: &str, agent: &str) -> Option<String> {
    let out = jarvis(env, &["--config", config, "status", "--json"], &[])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    status["agents"]
        .as_array()?
        .iter()
        .find(|a| a["agent"] == agent && a["alive"] == true)
        .and_then(|a| a["status"].as_str().map(str::to_string))
}

/// While the risk book is halted, the heartbeats of `trading` and `risk` say `halted`, and so do `jarvis
/// status` and the gateway's `/api/v1/agents`; after the resume, `ok` again. Every heartbeat of `jarvis up`
/// beats at the configured `health.interval_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_say_halted_while_trading_is_halted_and_beat_at_the_configured_interval() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let hash = jarvis_gateway::auth::hash_password("viewer-password-1").unwrap();
    let config = dir.path().join("jarvis.toml");
    std::fs::write(
        &config,
        format!(
            "[health]\ninterval_ms = 300\n\n[gateway]\nlisten = \"{listen}\"\n\n[[gateway.users]]\n\
             username = \"victor\"\npassword_hash = \"{hash}\"\nrole = \"viewer\"\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    let client = &env.client;
    let mut trading_beats = client.subscribe("jarvis.health.trading").await.unwrap();
    let mut risk_beats = client.subscribe("jarvis.health.risk").await.unwrap();
    let _up = Up(jarvis(&env, &["--config", &config, "up"], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());

    // Running: ok, at the configured interval, for every agent of `jarvis up`.
    let beat = beat_with_status(&mut trading_beats, "trading", "ok").await;
    assert_eq!(beat["interval_ms"], 300, "{beat}");
    let all = eventually(
        Duration::from_secs(60),
        "every agent's heartbeat",
        || async {
            let all = gather(client, "jarvis.ping.health", Duration::from_millis(500)).await;
            let agents: BTreeSet<String> = all
                .iter()
                .map(|b| b["agent"].as_str().unwrap().to_string())
                .collect();
            ["relay", "trading", "risk", "sentiment", "memory"]
                .iter()
                .all(|a| agents.contains(*a))
                .then_some(all)
        },
    )
    .await;
    for beat in &all {
        assert_eq!(beat["interval_ms"], 300, "{beat}");
    }

    // Halted: both heartbeats say so, on the subject and in the reply to a ping.
    let halted = req(client, "jarvis.cmd.risk.halt", json!({"reason": "drill"})).await;
    assert_eq!(halted["halted"], true, "{halted}");
    let status = req(client, "jarvis.cmd.risk.status", json!({})).await;
    assert_eq!(status["health"]["status"], "halted", "{status}");
    let beat = beat_with_status(&mut trading_beats, "trading", "halted").await;
    assert_eq!(beat["interval_ms"], 300, "{beat}");
    assert_eq!(beat["consumers"][0]["name"], "trading", "{beat}");
    beat_with_status(&mut risk_beats, "risk", "halted").await;
    // (Asked again until both answered within the half second: a reply can miss it on a loaded machine.)
    let pinged = eventually(
        Duration::from_secs(60),
        "trading and risk pinged",
        || async {
            let pinged = gather(client, "jarvis.ping.health", Duration::from_millis(500)).await;
            ["trading", "risk"]
                .iter()
                .all(|a| pinged.iter().any(|b| b["agent"] == *a))
                .then_some(pinged)
        },
    )
    .await;
    for agent in ["trading", "risk"] {
        assert!(
            pinged
                .iter()
                .any(|b| b["agent"] == agent && b["status"] == "halted"),
            "{agent} in {pinged:?}"
        );
    }
    // `jarvis status` shows it (it collects heartbeats for one second: a loaded machine may answer later,
    // so it is asked until trading answered).
    let trading_status = eventually(
        Duration::from_secs(60),
        "trading in jarvis status",
        || async { status_of(&env, &config, "trading") },
    )
    .await;
    assert_eq!(trading_status, "halted");
    let text = eventually(
        Duration::from_secs(60),
        "trading in the text of jarvis status",
        || async {
            let text = jarvis(&env, &["--config", &config, "status"], &[])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&text.stdout).into_owned();
            text.lines()
                .any(|l| l.contains("trading") && l.contains("alive"))
                .then_some(text)
        },
    )
    .await;
    assert!(
        text.lines()
            .any(|l| l.contains("trading") && l.contains("alive (halted)")),
        "{text}"
    );
    // The gateway's /api/v1/agents shows it.
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let agents = |want: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            eventually(
                Duration::from_secs(60),
                &format!("/api/v1/agents: trading and risk {want}"),
                || async {
                    let login: Value = http
                        .post(format!("{base}/api/v1/auth/login"))
                        .json(&json!({"username": "victor", "password": "viewer-password-1"}))
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                    let token = login["access_token"].as_str()?;
                    let agents: Value = http
                        .get(format!("{base}/api/v1/agents"))
                        .bearer_auth(token)
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                    let agents = agents["items"].as_array()?.clone();
                    ["trading", "risk"]
                        .iter()
                        .all(|a| {
                            agents.iter().any(|b| {
                                b["agent"] == *a && b["status"] == want && b["interval_ms"] == 300
                            })
                        })
                        .then_some(agents)
                },
            )
            .await
        }
    };
    agents("halted").await;

    // Resumed: ok again everywhere.
    let resumed = req(
        client,
        "jarvis.cmd.risk.resume",
        json!({"reason": "drill over"}),
    )
    .await;
    assert_eq!(resumed["halted"], false, "{resumed}");
    beat_with_status(&mut trading_beats, "trading", "ok").await;
    beat_with_status(&mut risk_beats, "risk", "ok").await;
    let trading_status = eventually(
        Duration::from_secs(60),
        "trading in jarvis status",
        || async { status_of(&env, &config, "trading") },
    )
    .await;
    assert_eq!(trading_status, "ok");
    agents("ok").await;
}
