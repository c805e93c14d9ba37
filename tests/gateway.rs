//! The gateway over a real socket, on real NATS and Postgres, in front of the real relay, projectors and
//! `jarvis-risk`: events appended to the store show up in REST (events, prices) and on the SSE stream, and a
//! halt posted by an operator reaches the risk book and comes back through the read models.

mod common;

use std::time::Duration;

use common::{append_days, Env};
use jarvis_gateway::auth::Role;
use jarvis_gateway::config::{Secret, UserConfig};
use jarvis_testkit::eventually;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn events_reach_rest_and_sse_and_commands_reach_the_bus() {
    let env = Env::start().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let relay = tokio::spawn(jarvis_agents::relay::run_relay(
        env.store.clone(),
        env.js.clone(),
        Default::default(),
        until_stopped(),
    ));
    let risk = {
        let (store, client, stopped) = (env.store.clone(), env.client.clone(), until_stopped());
        tokio::spawn(async move {
            jarvis_agents::risk::serve_commands(store, client, stopped)
                .await
                .unwrap()
        })
    };
    let (read, projectors) = jarvis_projections::spawn(
        env.store.pool().clone(),
        Some((env.client.clone(), env.js.clone())),
        until_stopped,
    )
    .await
    .unwrap();
    let mut config = jarvis::config::Config::default();
    config.gateway.listen = "127.0.0.1:0".into();
    config.gateway.users = vec![UserConfig {
        username: "otto".into(),
        password_hash: Secret(jarvis_gateway::auth::hash_password("correct horse").unwrap()),
        role: Role::Operator,
        totp_secret: None,
    }];
    let (addr, gateway) = jarvis::gateway::spawn(
        &config,
        &env.store,
        read,
        &env.client,
        &env.js,
        until_stopped(),
    )
    .await
    .unwrap()
    .unwrap();
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();

    // Its checks have 2 s timeouts of their own: asked again rather than failing on one slow moment.
    let ready: Value = eventually(WAIT, "/readyz ready", || async {
        let ready: Value = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (ready["status"] == "ready").then_some(ready)
    })
    .await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let tokens: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": "otto", "password": "correct horse"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tokens["access_token"].as_str().unwrap().to_string();

    // Open the stream before appending: it delivers only new events.
    let mut sse = tokio::net::TcpStream::connect(addr).await.unwrap();
    sse.write_all(
        format!(
            "GET /api/v1/stream?subject=jarvis.evt.market.%3E&access_token={token} HTTP/1.1\r\nHost: {addr}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = [0u8; 512];
    let n = sse.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");

    let story = append_days(&env.store, "SOL/USDT", 0, 1).await;

    let mut seen = head;
    tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        while !seen.contains("event: CandleClosed") {
            let n = sse.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no CandleClosed on the stream: {seen}"));
    assert!(
        seen.contains("\"type\":\"jarvis.market.CandleClosed.v1\""),
        "{seen}"
    );

    let get = |path: String| {
        let (http, token, base) = (http.clone(), token.clone(), base.clone());
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let events = get(format!(
        "/api/v1/events?correlation_id={}&limit=100",
        story.correlation_id
    ))
    .await;
    assert_eq!(events.0, 200);
    assert_eq!(events.1["items"].as_array().unwrap().len(), 24);
    eventually(WAIT, "the price read model has SOL/USDT", || async {
        let (status, prices) = get("/api/v1/prices".into()).await;
        (status == 200
            && prices["items"]
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p["symbol"] == "SOL/USDT")))
        .then_some(())
    })
    .await;

    // The kill switch: through jarvis-risk, into the store, back out of the risk read model.
    let halt = http
        .post(format!("{base}/api/v1/commands/halt"))
        .bearer_auth(&token)
        .json(&json!({"reason": "socket test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(halt.status().as_u16(), 200, "{:?}", halt.text().await);
    eventually(WAIT, "the risk read model is halted", || async {
        let (_, risk) = get("/api/v1/risk".into()).await;
        (risk["halted"] == true).then_some(())
    })
    .await;
    // No jarvis-trading here: a clear 503.
    let order = http
        .post(format!("{base}/api/v1/commands/orders"))
        .bearer_auth(&token)
        .json(&json!({"symbol": "SOLUSDT", "side": "buy", "notional": "10"}))
        .send()
        .await
        .unwrap();
    assert_eq!(order.status().as_u16(), 503);
    let problem: Value = order.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("jarvis-trading"),
        "{problem}"
    );

    let _ = stop.send(true);
    // The open stream does not hold the shutdown up.
    tokio::time::timeout(WAIT, gateway).await.unwrap().unwrap();
    relay.await.unwrap();
    risk.await.unwrap();
    for task in projectors {
        task.await.unwrap();
    }
}
