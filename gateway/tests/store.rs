//! The gateway over a real Postgres: events from the store (list, cursor, chain), API keys minted by an admin
//! and used, and a database failure that becomes a generic 500 without SQL or driver text.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use jarvis_domain::market::{MarketFeed, MarketFeedCommand, MarketFeedId};
use jarvis_domain::{Candle, EventMetadata, Symbol};
use jarvis_gateway::auth::Role;
use jarvis_gateway::config::{Secret, UserConfig};
use jarvis_gateway::live::LiveModels;
use jarvis_gateway::{app, AppState, GatewayConfig};
use jarvis_store::{execute_with_retry, EventStore};
use jarvis_testkit::TestDb;
use serde_json::{json, Value};
use tower::ServiceExt;

const TOTP: &[u8] = b"12345678901234567890";

fn config() -> GatewayConfig {
    let hash = jarvis_gateway::auth::hash_password("correct horse").unwrap();
    GatewayConfig {
        jwt_secret: Some(Secret("a-test-secret-that-is-long-enough-for-hs256".into())),
        users: vec![UserConfig {
            username: "ada".into(),
            password_hash: Secret(hash),
            role: Role::Admin,
            totp_secret: Some(Secret(jarvis_gateway::totp::encode_base32(TOTP))),
        }],
        access_log: false,
        ..GatewayConfig::default()
    }
}

async fn call(
    app: &axum::Router,
    method: Method,
    uri: &str,
    auth: (&str, &str),
    body: Option<Value>,
) -> (StatusCode, Value, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(auth.0, auth.1)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 10 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

async fn append_candles(store: &EventStore, symbol: &str, days: i64) -> EventMetadata {
    use chrono::{Duration, TimeZone, Utc};
    let metadata = EventMetadata::root("test-writer");
    let cqrs = store.cqrs::<MarketFeed>(());
    let start = Utc.with_ymd_and_hms(2021, 1, 1, 0, 0, 0).unwrap();
    for day in 0..days {
        let candles: Vec<Candle> = (0..24)
            .map(|h| {
                let p = rust_decimal::Decimal::new(100 + h, 0);
                Candle {
                    symbol: Symbol::new_checked(symbol).unwrap(),
                    open_time: start + Duration::days(day) + Duration::hours(h),
                    close_time: start + Duration::days(day) + Duration::hours(h + 1),
                    open: p,
                    high: p,
                    low: p,
                    close: p,
                    volume: rust_decimal::Decimal::ONE,
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

#[tokio::test]
async fn events_from_the_store_page_and_chain() {
    let db = TestDb::create().await;
    let store = EventStore::connect(db.url(), 4).await.unwrap();
    store.migrate().await.unwrap();
    let story = append_candles(&store, "SOL/USDT", 2).await;
    append_candles(&store, "BTC/USDT", 1).await;
    let state = AppState::new(
        config(),
        Arc::new(LiveModels::new(
            store.clone(),
            jarvis_projections::ReadModels::new(store.pool().clone()),
        )),
        None,
        Some(store.pool().clone()),
    );
    let token = state.auth.issue("ada", false).unwrap().access_token;
    let bearer = format!("Bearer {token}");
    let auth = ("authorization", bearer.as_str());
    let app = app(state);
    let uri = format!(
        "/api/v1/events?correlation_id={}&limit=30",
        story.correlation_id
    );
    let (status, first, text) = call(&app, Method::GET, &uri, auth, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let items = first["items"].as_array().unwrap();
    assert_eq!(items.len(), 30);
    let positions: Vec<i64> = items
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] > w[1]), "newest first");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second, _) = call(
        &app,
        Method::GET,
        &format!("{uri}&cursor={cursor}"),
        auth,
        None,
    )
    .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 18);
    assert!(second["next_cursor"].is_null());
    assert!(second["items"][0]["position"].as_i64().unwrap() < positions[29]);
    let id = items[0]["event_id"].as_str().unwrap();
    let (status, one, _) = call(
        &app,
        Method::GET,
        &format!("/api/v1/events/{id}"),
        auth,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["event_type"], "CandleClosed");
    assert_eq!(one["payload"]["symbol"], json!("SOL/USDT"), "{one}");
    let (status, chain, _) = call(
        &app,
        Method::GET,
        &format!("/api/v1/events/{id}/chain"),
        auth,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        chain["items"].as_array().unwrap().last().unwrap()["event_id"],
        id
    );
    let (status, _, _) = call(
        &app,
        Method::GET,
        "/api/v1/events/00000000-0000-0000-0000-000000000000",
        auth,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, typed, _) = call(
        &app,
        Method::GET,
        "/api/v1/events?type=CandleClosed&limit=1000",
        auth,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(typed["items"].as_array().unwrap().len(), 72);
}

#[tokio::test]
async fn a_database_failure_is_a_generic_500() {
    let db = TestDb::create().await;
    let store = EventStore::connect(db.url(), 2).await.unwrap();
    store.migrate().await.unwrap();
    let state = AppState::new(
        config(),
        Arc::new(LiveModels::new(
            store.clone(),
            jarvis_projections::ReadModels::new(store.pool().clone()),
        )),
        None,
        Some(store.pool().clone()),
    );
    let token = state.auth.issue("ada", false).unwrap().access_token;
    let bearer = format!("Bearer {token}");
    let app = app(state);
    // Break the database under the gateway: the table it reads is gone.
    sqlx::query("DROP TABLE events CASCADE")
        .execute(store.pool())
        .await
        .unwrap();
    let (status, problem, text) = call(
        &app,
        Method::GET,
        "/api/v1/events",
        ("authorization", &bearer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{text}");
    assert_eq!(problem["type"], "https://jarvis.dev/problems/internal");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("request id"), "{detail}");
    for leak in [
        "relation",
        "SELECT",
        "sqlx",
        "database",
        "postgres",
        "does not exist",
        "events",
    ] {
        assert!(!detail.contains(leak), "{leak:?} leaked: {text}");
    }
    for leak in [
        "relation",
        "SELECT",
        "sqlx",
        "postgres",
        "does not exist",
        "FROM",
    ] {
        assert!(!text.contains(leak), "{leak:?} leaked: {text}");
    }
    // Readiness reports the database by name only.
    store.pool().close().await;
    let (status, ready, _) = call(&app, Method::GET, "/readyz", ("x-none", "-"), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["checks"]["database"], "unreachable");
}

#[tokio::test]
async fn admin_mints_uses_and_revokes_an_api_key() {
    let db = TestDb::create().await;
    let store = EventStore::connect(db.url(), 4).await.unwrap();
    store.migrate().await.unwrap();
    let state = AppState::new(
        config(),
        Arc::new(jarvis_gateway::memory::MemoryModels::new(
            jarvis_gateway::bench::sample_data(3),
        )),
        None,
        Some(store.pool().clone()),
    );
    let admin = format!(
        "Bearer {}",
        state.auth.issue("ada", true).unwrap().access_token
    );
    let app = app(state.clone());
    let (status, minted, text) = call(
        &app,
        Method::POST,
        "/api/v1/admin/api-keys",
        ("authorization", &admin),
        Some(json!({"name": "grafana", "role": "viewer", "scopes": ["read"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let key = minted["key"].as_str().unwrap().to_string();
    let stored: String = sqlx::query_scalar("SELECT key_sha256 FROM gateway_api_keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        stored,
        jarvis_gateway::auth::hash_key(&key),
        "only the hash is stored"
    );
    let (status, _, _) = call(
        &app,
        Method::GET,
        "/api/v1/portfolio",
        ("x-api-key", &key),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(
        &app,
        Method::POST,
        "/api/v1/admin/api-keys",
        ("authorization", &admin),
        Some(json!({"name": "grafana", "role": "viewer", "scopes": ["read"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // A second gateway over the same database knows the key after loading.
    let other = AppState::new(
        config(),
        Arc::new(jarvis_gateway::memory::MemoryModels::default()),
        None,
        Some(store.pool().clone()),
    );
    jarvis_gateway::routes::admin::reload_keys(&other)
        .await
        .unwrap();
    assert_eq!(
        other.auth.principal_of_key(&key).unwrap().subject,
        "grafana"
    );
    // ...and a third, already running, learns of keys minted and revoked elsewhere without a restart.
    let third = AppState::new(
        config(),
        Arc::new(jarvis_gateway::memory::MemoryModels::default()),
        None,
        Some(store.pool().clone()),
    );
    let watcher = tokio::spawn(jarvis_gateway::routes::admin::watch_keys(
        third.clone(),
        std::time::Duration::from_secs(3600),
        std::future::pending(),
    ));
    jarvis_testkit::eventually(
        std::time::Duration::from_secs(30),
        "the watcher to load the keys",
        || async { third.auth.principal_of_key(&key).ok() },
    )
    .await;
    let (status, late, text) = call(
        &app,
        Method::POST,
        "/api/v1/admin/api-keys",
        ("authorization", &admin),
        Some(json!({"name": "late", "role": "viewer", "scopes": ["read"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let late_key = late["key"].as_str().unwrap().to_string();
    jarvis_testkit::eventually(
        std::time::Duration::from_secs(30),
        "a key minted elsewhere to be known",
        || async { third.auth.principal_of_key(&late_key).ok() },
    )
    .await;
    let id = minted["id"].as_str().unwrap();
    let (status, _, _) = call(
        &app,
        Method::DELETE,
        &format!("/api/v1/admin/api-keys/{id}"),
        ("authorization", &admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = call(
        &app,
        Method::GET,
        "/api/v1/portfolio",
        ("x-api-key", &key),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Revoked here, refused by the running third gateway too.
    jarvis_testkit::eventually(
        std::time::Duration::from_secs(30),
        "a key revoked elsewhere to be refused",
        || async { third.auth.principal_of_key(&key).is_err().then_some(()) },
    )
    .await;
    watcher.abort();
}
