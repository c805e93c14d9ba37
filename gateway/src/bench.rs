//! The load generator of `jarvis bench gateway`: `connections` HTTP/1.1 keep-alive connections (hyper's
//! client), each sending requests back to back for a fixed time; requests per second and latency
//! percentiles. Also sample data for the served read models and a raw baseline router.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue, Request};
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use std::sync::Arc;

use serde_json::json;

use crate::memory::Data;
use crate::models::*;
use crate::{AppState, GatewayConfig, ReadModels};

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The path requested.
    pub path: String,
    /// Concurrent connections.
    pub connections: usize,
    /// 2xx answers.
    pub requests: u64,
    /// Other answers and failures.
    pub errors: u64,
    /// Wall time.
    pub elapsed_secs: f64,
    /// 2xx answers per second.
    pub requests_per_sec: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Largest latency.
    pub max_ms: f64,
}

/// Sends GET `path` to `addr` over `connections` connections for `duration`.
///
/// # Errors
/// When a connection cannot be opened.
pub async fn load(
    addr: SocketAddr,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    connections: usize,
    duration: Duration,
) -> anyhow::Result<LoadReport> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let path = path.to_string();
        let headers = headers.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut histogram = hdrhistogram::Histogram::<u64>::new(3).expect("valid histogram");
            let (mut ok, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                if sender.ready().await.is_err() {
                    errors += 1;
                    break;
                }
                let mut request = Request::get(&path).header("host", "127.0.0.1");
                for (name, value) in &headers {
                    request = request.header(name, value);
                }
                let request = request.body(Empty::<Bytes>::new()).expect("valid request");
                let sent = Instant::now();
                match sender.send_request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let body = response.into_body().collect().await;
                        let _ = histogram.record(sent.elapsed().as_micros() as u64);
                        if status.is_success() && body.is_ok() {
                            ok += 1;
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            (ok, errors, histogram)
        }));
    }
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).expect("valid histogram");
    let (mut ok, mut errors) = (0, 0);
    for task in tasks {
        let (o, e, h) = task.await?;
        ok += o;
        errors += e;
        let _ = histogram.add(h);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1_000.0;
    Ok(LoadReport {
        path: path.to_string(),
        connections,
        requests: ok,
        errors,
        elapsed_secs: elapsed,
        requests_per_sec: ok as f64 / elapsed,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: histogram.max() as f64 / 1_000.0,
    })
}

/// Read models with `trades` fills over five symbols, an equity curve, and a few of everything else.
pub fn sample_data(trades: usize) -> Data {
    let t0 = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid time");
    let symbols = ["SOL/USDT", "BTC/USDT", "ETH/USDT", "JUP/USDT", "BONK/USDT"];
    let positions: Vec<Position> = symbols
        .iter()
        .enumerate()
        .map(|(i, s)| Position {
            symbol: s.to_string(),
            quantity: Decimal::new(15 + i as i64, 1),
            avg_cost: Decimal::new(10_000 + 100 * i as i64, 2),
            price: Some(Decimal::new(10_500 + 100 * i as i64, 2)),
            market_value: Decimal::new(157_500 + 1_000 * i as i64, 2),
            unrealized_pnl: Decimal::new(750, 2),
            realized_pnl: Decimal::new(1_234, 2),
        })
        .collect();
    let trades: Vec<Trade> = (0..trades)
        .map(|i| Trade {
            fill_id: format!("fill-{i}"),
            order_id: Uuid::from_u128(i as u128 + 1),
            symbol: symbols[i % symbols.len()].to_string(),
            side: if i % 2 == 0 { "buy" } else { "sell" }.to_string(),
            quantity: Decimal::new(1 + (i % 7) as i64, 1),
            price: Decimal::new(10_000 + (i % 500) as i64, 2),
            fee: Decimal::new(5, 2),
            filled_at: t0 + chrono::Duration::minutes(i as i64),
        })
        .collect();
    let equity = (0..1_000)
        .map(|i| EquityPoint {
            at: t0 + chrono::Duration::hours(i),
            equity: Decimal::new(1_000_000 + i * 37, 2),
            cash: Decimal::new(500_000, 2),
        })
        .collect();
    Data {
        portfolio: Portfolio {
            quote_asset: "USDT".into(),
            cash: Decimal::new(500_000, 2),
            equity: Decimal::new(1_305_000, 2),
            high_water_mark: Decimal::new(1_310_000, 2),
            day_start_equity: Decimal::new(1_300_000, 2),
            realized_pnl: Decimal::new(6_170, 2),
            unrealized_pnl: Decimal::new(3_750, 2),
            positions,
            as_of: Some(t0),
            halted: false,
        },
        equity,
        trades,
        ..Data::default()
    }
}

/// `jarvis bench gateway`: the gateway on loopback serving read models from memory, loaded by 64
/// connections on `/api/v1/portfolio` and `/api/v1/trades`, beside plain axum serving the same bytes.
///
/// # Errors
/// When a listener cannot bind or a connection fails.
pub async fn run(connections: usize, secs: u64) -> anyhow::Result<serde_json::Value> {
    let duration = Duration::from_secs(secs.max(1));
    let data = sample_data(10_000);
    let models = Arc::new(crate::memory::MemoryModels::new(data));
    let config = GatewayConfig {
        rate_limit_per_ip_per_sec: 0,
        rate_limit_per_key_per_sec: 0,
        access_log: false,
        users: vec![crate::config::UserConfig {
            username: "bench".into(),
            password_hash: crate::config::Secret(
                crate::auth::hash_password("bench-password").map_err(anyhow::Error::msg)?,
            ),
            role: crate::auth::Role::Viewer,
            totp_secret: None,
        }],
        ..GatewayConfig::default()
    };
    let state = AppState::new(config, models.clone(), None, None);
    let token = state.auth.issue("bench", false)?.access_token;
    let auth = vec![(
        HeaderName::from_static("authorization"),
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    )];
    // The same bytes the gateway answers, served by a bare axum router.
    let portfolio = serde_json::to_vec(&models.portfolio().await?)?;
    let trades = serde_json::to_vec(
        &models
            .trades(&crate::models::page_query(None, None, None, None)?, None)
            .await?,
    )?;
    let raw = axum::Router::new()
        .route(
            "/api/v1/portfolio",
            axum::routing::get(move || {
                let body = portfolio.clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        )
        .route(
            "/api/v1/trades",
            axum::routing::get(move || {
                let body = trades.clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        );
    let (stop, _) = tokio::sync::watch::channel(false);
    let listen = |router: axum::Router| {
        let mut rx = stop.subscribe();
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(crate::serve(listener, router, async move {
                let _ = rx.wait_for(|s| *s).await;
            }));
            anyhow::Ok(addr)
        }
    };
    let gateway_addr = listen(crate::app(state.clone())).await?;
    let raw_addr = listen(raw).await?;
    let mut report = serde_json::Map::new();
    for (name, path) in [
        ("portfolio", "/api/v1/portfolio"),
        ("trades", "/api/v1/trades"),
    ] {
        // Warm up both, then measure the baseline and ours back to back.
        let warm = Duration::from_millis(500);
        load(raw_addr, path, &[], connections, warm).await?;
        load(gateway_addr, path, &auth, connections, warm).await?;
        let baseline = load(raw_addr, path, &[], connections, duration).await?;
        let ours = load(gateway_addr, path, &auth, connections, duration).await?;
        anyhow::ensure!(
            ours.errors == 0 && baseline.errors == 0,
            "{path}: {} errors from the gateway, {} from the baseline",
            ours.errors,
            baseline.errors
        );
        report.insert(
            name.into(),
            json!({
                "path": path,
                "requests_per_sec": ours.requests_per_sec.round(),
                "p50_ms": ours.p50_ms,
                "p99_ms": ours.p99_ms,
                "max_ms": ours.max_ms,
                "requests": ours.requests,
                "baseline_requests_per_sec": baseline.requests_per_sec.round(),
                "baseline_p50_ms": baseline.p50_ms,
                "baseline_p99_ms": baseline.p99_ms,
                "ratio": ((ours.requests_per_sec / baseline.requests_per_sec) * 1000.0).round() / 1000.0,
                "response_bytes": ours_bytes(path, &state).await,
            }),
        );
    }
    let _ = stop.send(true);
    report.insert("connections".into(), json!(connections));
    report.insert("secs".into(), json!(duration.as_secs()));
    report.insert(
        "served_from".into(),
        json!(
            "read models in memory (10,000 trades, 5 positions); auth (JWT), metrics, headers on"
        ),
    );
    Ok(serde_json::Value::Object(report))
}

async fn ours_bytes(path: &str, state: &AppState) -> usize {
    let page = crate::models::page_query(None, None, None, None).unwrap_or_default();
    match path {
        "/api/v1/portfolio" => state
            .models
            .portfolio()
            .await
            .ok()
            .and_then(|p| serde_json::to_vec(&p).ok())
            .map_or(0, |b| b.len()),
        _ => state
            .models
            .trades(&page, None)
            .await
            .ok()
            .and_then(|p| serde_json::to_vec(&p).ok())
            .map_or(0, |b| b.len()),
    }
}
