//! The gateway's routes in memory (`app(state).oneshot(request)`): the auth matrix of every route, input
//! validation as problem+json, rate limits, the second factor of admin routes, the OpenAPI document, and
//! headers. Commands go to a stand-in `jarvis-risk`/`jarvis-trading` on a real nats-server.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use jarvis_gateway::auth::{hash_key, Role, Scope};
use jarvis_gateway::config::{ApiKeyConfig, Secret, UserConfig};
use jarvis_gateway::memory::MemoryModels;
use jarvis_gateway::{app, AppState, Bus, GatewayConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";
const TOTP: &[u8] = b"12345678901234567890";
const VIEWER_KEY: &str = "jk_viewer_key_for_tests";
const READ_ONLY_OPERATOR_KEY: &str = "jk_operator_key_read_only";

fn config() -> GatewayConfig {
    let hash = jarvis_gateway::auth::hash_password("correct horse").unwrap();
    let user = |name: &str, role, totp: bool| UserConfig {
        username: name.into(),
        password_hash: Secret(hash.clone()),
        role,
        totp_secret: totp.then(|| Secret(jarvis_gateway::totp::encode_base32(TOTP))),
    };
    GatewayConfig {
        jwt_secret: Some(Secret(SECRET.into())),
        users: vec![
            user("vera", Role::Viewer, false),
            user("otto", Role::Operator, false),
            user("ada", Role::Admin, true),
        ],
        api_keys: vec![
            ApiKeyConfig {
                name: "grafana".into(),
                key_sha256: hash_key(VIEWER_KEY),
                role: Role::Viewer,
                scopes: vec![Scope::Read],
            },
            ApiKeyConfig {
                name: "bot".into(),
                key_sha256: hash_key(READ_ONLY_OPERATOR_KEY),
                role: Role::Operator,
                scopes: vec![Scope::Read],
            },
        ],
        access_log: false,
        ..GatewayConfig::default()
    }
}

fn state_with(config: GatewayConfig, bus: Option<Bus>) -> AppState {
    let models = Arc::new(MemoryModels::new(jarvis_gateway::bench::sample_data(250)));
    AppState::new(config, models, bus, None)
}

struct Caller {
    app: Router,
    state: AppState,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
}

impl Caller {
    fn new(state: AppState) -> Self {
        Self {
            app: app(state.clone()),
            state,
        }
    }

    fn token(&self, user: &str, mfa: bool) -> String {
        self.state.auth.issue(user, mfa).unwrap().access_token
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let mut request = request;
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 10 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text,
        }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            request = if auth.starts_with("jk_") {
                request.header("x-api-key", auth)
            } else {
                request.header(header::AUTHORIZATION, format!("Bearer {auth}"))
            };
        }
        let request = match body {
            Some(b) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        self.send(request).await
    }
}

fn assert_problem(reply: &Reply, status: StatusCode, detail_has: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "application/problem+json",
        "{}",
        reply.text
    );
    assert_eq!(reply.body["status"], status.as_u16());
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.to_lowercase().contains(&detail_has.to_lowercase()),
        "detail {detail:?} lacks {detail_has:?}"
    );
    assert!(reply.body["type"].as_str().unwrap().starts_with("https://"));
    assert!(reply.body["request_id"].is_string(), "{}", reply.text);
    assert!(reply.body["instance"].is_string(), "{}", reply.text);
}

/// Every route: method, path, the least role, a valid body.
fn routes() -> Vec<(Method, &'static str, Role, Option<Value>)> {
    use Role::*;
    let id = "00000000-0000-0000-0000-000000000001";
    let _ = id;
    vec![
        (Method::GET, "/api/v1/auth/me", Viewer, None),
        (Method::GET, "/api/v1/portfolio", Viewer, None),
        (Method::GET, "/api/v1/portfolio/equity", Viewer, None),
        (Method::GET, "/api/v1/positions", Viewer, None),
        (Method::GET, "/api/v1/orders", Viewer, None),
        (Method::GET, "/api/v1/trades", Viewer, None),
        (Method::GET, "/api/v1/risk", Viewer, None),
        (Method::GET, "/api/v1/risk/rejections", Viewer, None),
        (Method::GET, "/api/v1/prices", Viewer, None),
        (Method::GET, "/api/v1/prices/SOL-USDT", Viewer, None),
        (Method::GET, "/api/v1/sentiment", Viewer, None),
        (Method::GET, "/api/v1/sentiment/SOL", Viewer, None),
        (Method::GET, "/api/v1/llm/usage", Viewer, None),
        (Method::GET, "/api/v1/agents", Viewer, None),
        (Method::GET, "/api/v1/events", Viewer, None),
        (Method::GET, "/api/v1/conversations", Viewer, None),
        (
            Method::GET,
            "/api/v1/conversations/42/messages",
            Viewer,
            None,
        ),
        (Method::GET, "/api/v1/backtests", Viewer, None),
        (
            Method::POST,
            "/api/v1/commands/halt",
            Operator,
            Some(json!({"reason": "test"})),
        ),
        (
            Method::POST,
            "/api/v1/commands/resume",
            Operator,
            Some(json!({"reason": "test"})),
        ),
        (
            Method::POST,
            "/api/v1/commands/orders",
            Operator,
            Some(json!({"symbol": "SOLUSDT", "side": "buy", "quantity": "1.5"})),
        ),
        (
            Method::POST,
            "/api/v1/commands/orders/00000000-0000-0000-0000-000000000001/confirm",
            Operator,
            None,
        ),
        (Method::GET, "/api/v1/commands/x/drafts", Operator, None),
        (
            Method::POST,
            "/api/v1/commands/x/drafts/00000000-0000-0000-0000-000000000001/approve",
            Operator,
            None,
        ),
        (
            Method::POST,
            "/api/v1/commands/x/drafts/00000000-0000-0000-0000-000000000001/reject",
            Operator,
            Some(json!({"reason": "off message"})),
        ),
        (Method::GET, "/api/v1/admin/api-keys", Admin, None),
    ]
}

/// A stand-in for `jarvis-risk`, `jarvis-trading` and `jarvis-x` on a real nats-server: answers every verb with what
/// it was sent.
async fn services(client: async_nats::Client) {
    let stand_ins = [
        ("risk", &["halt", "resume"][..]),
        ("trading", &["propose", "confirm"][..]),
        ("x", &["drafts", "approve", "reject"][..]),
    ];
    for (agent, verbs) in stand_ins {
        let client = client.clone();
        tokio::spawn(async move {
            let _ = jarvis_bus::service::serve(
                &client,
                agent,
                "stand-in",
                verbs,
                |verb, body| async move {
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    Ok(json!({"verb": verb, "request": body}))
                },
                std::future::pending::<()>(),
            )
            .await;
        });
    }
    // They register asynchronously, each on its own: wait until every one answers, so that no caller meets
    // a 503 from a stand-in not yet up (waiting on one of them says nothing of the others).
    for (agent, verbs) in stand_ins {
        let subject = format!("jarvis.cmd.{agent}.{}", verbs[0]);
        jarvis_testkit::eventually(
            std::time::Duration::from_secs(60),
            &format!("stand-in {agent} up"),
            || async { client.request(subject.clone(), "{}".into()).await.ok() },
        )
        .await;
    }
}

#[tokio::test]
async fn auth_matrix_of_every_route() {
    let nats = jarvis_testkit::NatsServer::start();
    let (client, js) = jarvis_bus::connect(&nats.url(), "test").await.unwrap();
    services(client.clone()).await;
    let caller = Caller::new(state_with(config(), Some(Bus { client, js })));
    let tokens = [
        (Role::Viewer, caller.token("vera", false)),
        (Role::Operator, caller.token("otto", false)),
        (Role::Admin, caller.token("ada", true)),
    ];
    // The stand-in services register asynchronously.
    jarvis_testkit::eventually(
        std::time::Duration::from_secs(60),
        "services up",
        || async {
            let r = caller
                .call(
                    Method::POST,
                    "/api/v1/commands/resume",
                    Some(&tokens[1].1),
                    None,
                )
                .await;
            (r.status == StatusCode::OK).then_some(())
        },
    )
    .await;
    for (method, path, least, body) in routes() {
        let none = caller.call(method.clone(), path, None, body.clone()).await;
        assert_problem(&none, StatusCode::UNAUTHORIZED, "credentials");
        let garbage = caller
            .call(method.clone(), path, Some("not-a-jwt"), body.clone())
            .await;
        assert_problem(&garbage, StatusCode::UNAUTHORIZED, "invalid token");
        for (role, token) in &tokens {
            let reply = caller
                .call(method.clone(), path, Some(token), body.clone())
                .await;
            if *role >= least {
                assert!(
                    reply.status.is_success(),
                    "{method} {path} as {role:?}: {} {}",
                    reply.status,
                    reply.text
                );
            } else {
                assert_problem(&reply, StatusCode::FORBIDDEN, "role");
            }
        }
    }
}

#[tokio::test]
async fn api_keys_are_scoped_and_never_admin() {
    let caller = Caller::new(state_with(config(), None));
    let ok = caller
        .call(Method::GET, "/api/v1/portfolio", Some(VIEWER_KEY), None)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body["quote_asset"], "USDT");
    let me = caller
        .call(Method::GET, "/api/v1/auth/me", Some(VIEWER_KEY), None)
        .await;
    assert_eq!(me.body["kind"], "api_key");
    assert_eq!(me.body["subject"], "grafana");
    // An operator key without the commands scope cannot halt.
    let halt = caller
        .call(
            Method::POST,
            "/api/v1/commands/halt",
            Some(READ_ONLY_OPERATOR_KEY),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_problem(&halt, StatusCode::FORBIDDEN, "scope");
    let stream = caller
        .call(Method::GET, "/api/v1/stream", Some(VIEWER_KEY), None)
        .await;
    assert_problem(&stream, StatusCode::FORBIDDEN, "scope");
    let unknown = caller
        .call(Method::GET, "/api/v1/portfolio", Some("jk_nope"), None)
        .await;
    assert_problem(&unknown, StatusCode::UNAUTHORIZED, "unknown API key");
}

#[tokio::test]
async fn login_refresh_and_totp_for_admin_routes() {
    let caller = Caller::new(state_with(config(), None));
    let login = |user: &str, password: &str, totp: Option<String>| {
        let mut body = json!({"username": user, "password": password});
        if let Some(code) = totp {
            body["totp"] = json!(code);
        }
        caller.call(Method::POST, "/api/v1/auth/login", None, Some(body))
    };
    let wrong = login("vera", "wrong", None).await;
    assert_problem(
        &wrong,
        StatusCode::UNAUTHORIZED,
        "wrong user name, password",
    );
    let unknown = login("nobody", "correct horse", None).await;
    assert_eq!(
        unknown.body["detail"], wrong.body["detail"],
        "no hint which was wrong"
    );

    // Admin without a second factor: authenticated, but admin routes need it.
    let ada = login("ada", "correct horse", None).await;
    assert_eq!(ada.status, StatusCode::OK, "{}", ada.text);
    assert_eq!(ada.body["mfa"], false);
    let access = ada.body["access_token"].as_str().unwrap().to_string();
    let keys = caller
        .call(Method::GET, "/api/v1/admin/api-keys", Some(&access), None)
        .await;
    assert_problem(&keys, StatusCode::FORBIDDEN, "second factor");
    assert!(keys.body["type"]
        .as_str()
        .unwrap()
        .ends_with("mfa-required"));

    let bad_code = login("ada", "correct horse", Some("000000".into())).await;
    assert_eq!(bad_code.status, StatusCode::UNAUTHORIZED);
    let ada = login(
        "ada",
        "correct horse",
        Some(jarvis_gateway::totp::code_now(TOTP)),
    )
    .await;
    assert_eq!(ada.body["mfa"], true, "{}", ada.text);
    let access = ada.body["access_token"].as_str().unwrap().to_string();
    let keys = caller
        .call(Method::GET, "/api/v1/admin/api-keys", Some(&access), None)
        .await;
    assert_eq!(keys.status, StatusCode::OK, "{}", keys.text);
    let names: Vec<&str> = keys.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bot", "grafana"]);
    assert!(!keys.text.contains(&hash_key(VIEWER_KEY)), "no full hashes");

    // Refresh: a new pair; a refresh token is not an access token, nor the reverse.
    let refresh = ada.body["refresh_token"].as_str().unwrap().to_string();
    let as_access = caller
        .call(Method::GET, "/api/v1/portfolio", Some(&refresh), None)
        .await;
    assert_problem(&as_access, StatusCode::UNAUTHORIZED, "refresh token");
    let again = caller
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.body["mfa"], true);
    let wrong_kind = caller
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": access})),
        )
        .await;
    assert_problem(&wrong_kind, StatusCode::UNAUTHORIZED, "not a refresh token");
}

#[tokio::test]
async fn expired_and_foreign_tokens_are_refused() {
    let caller = Caller::new(state_with(config(), None));
    let now = chrono::Utc::now().timestamp() as u64;
    let claims = |secret: &str, exp: u64| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": "vera", "role": "viewer", "mfa": false, "typ": "access",
                    "iat": now - 3600, "exp": exp, "jti": "x"}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let expired = caller
        .call(
            Method::GET,
            "/api/v1/portfolio",
            Some(&claims(SECRET, now - 600)),
            None,
        )
        .await;
    assert_problem(&expired, StatusCode::UNAUTHORIZED, "expired");
    assert!(expired.body["type"]
        .as_str()
        .unwrap()
        .ends_with("token-expired"));
    let foreign = caller
        .call(
            Method::GET,
            "/api/v1/portfolio",
            Some(&claims("another-secret-another-secret-xx", now + 600)),
            None,
        )
        .await;
    assert_problem(&foreign, StatusCode::UNAUTHORIZED, "invalid token");
    let fine = caller
        .call(
            Method::GET,
            "/api/v1/portfolio",
            Some(&claims(SECRET, now + 600)),
            None,
        )
        .await;
    assert_eq!(fine.status, StatusCode::OK);
    // A role claim above the user's configured role is capped by the configuration.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "vera", "role": "admin", "mfa": true, "typ": "access",
                "iat": now, "exp": now + 600, "jti": "y"}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let keys = caller
        .call(Method::GET, "/api/v1/admin/api-keys", Some(&forged), None)
        .await;
    assert_problem(&keys, StatusCode::FORBIDDEN, "role");
}

#[tokio::test]
async fn bad_input_is_a_problem_that_names_it() {
    let caller = Caller::new(state_with(config(), None));
    let token = caller.token("otto", false);
    let t = Some(token.as_str());
    let cases: Vec<(Method, &str, Option<Value>, StatusCode, &str)> = vec![
        (
            Method::GET,
            "/api/v1/trades?limit=5000",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit = 5000",
        ),
        (
            Method::GET,
            "/api/v1/trades?limit=0",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit = 0",
        ),
        (
            Method::GET,
            "/api/v1/trades?limit=abc",
            None,
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            Method::GET,
            "/api/v1/trades?from=yesterday",
            None,
            StatusCode::BAD_REQUEST,
            "from",
        ),
        (
            Method::GET,
            "/api/v1/trades?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "not before",
        ),
        (
            Method::GET,
            "/api/v1/trades?limitt=5",
            None,
            StatusCode::BAD_REQUEST,
            "limitt",
        ),
        (
            Method::GET,
            "/api/v1/trades?cursor=garbage",
            None,
            StatusCode::BAD_REQUEST,
            "cursor",
        ),
        (
            Method::GET,
            "/api/v1/orders?status=lost",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "status = \"lost\"",
        ),
        (
            Method::GET,
            "/api/v1/orders/not-a-uuid",
            None,
            StatusCode::BAD_REQUEST,
            "uuid",
        ),
        (
            Method::GET,
            "/api/v1/orders/00000000-0000-0000-0000-000000000009",
            None,
            StatusCode::NOT_FOUND,
            "no order",
        ),
        (
            Method::GET,
            "/api/v1/events?type=Order.Filled",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "type",
        ),
        (
            Method::GET,
            "/api/v1/stream?subject=foo.bar",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "jarvis.evt.",
        ),
        (
            Method::GET,
            "/api/v1/nope",
            None,
            StatusCode::NOT_FOUND,
            "no such route",
        ),
        (
            Method::DELETE,
            "/api/v1/portfolio",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
        ),
        (
            Method::POST,
            "/api/v1/commands/halt",
            Some(json!({})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason",
        ),
        (
            Method::POST,
            "/api/v1/commands/halt",
            Some(json!({"reason": " "})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason",
        ),
        (
            Method::POST,
            "/api/v1/commands/orders",
            Some(json!({"symbol": "SOLUSDT", "side": "hold", "quantity": "1"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "side",
        ),
        (
            Method::POST,
            "/api/v1/commands/orders",
            Some(json!({"symbol": "SOLUSDT", "side": "buy", "quantity": "1", "notional": "5"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "exactly one",
        ),
        (
            Method::POST,
            "/api/v1/commands/orders",
            Some(json!({"symbol": "SOLUSDT", "side": "buy", "quantity": "-1"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "positive",
        ),
        (
            Method::POST,
            "/api/v1/commands/orders",
            Some(json!({"symbol": "SOLUSDT", "side": "buy", "quantity": "lots"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "quantity",
        ),
    ];
    for (method, path, body, status, detail) in cases {
        let reply = caller.call(method.clone(), path, t, body).await;
        assert_problem(&reply, status, detail);
    }
    // A body that is not JSON at all.
    let reply = caller
        .send(
            Request::post("/api/v1/commands/halt")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
        )
        .await;
    assert_problem(&reply, StatusCode::BAD_REQUEST, "json");
    // Too large a body.
    let reply = caller
        .send(
            Request::post("/api/v1/commands/halt")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(format!(
                    "{{\"reason\":\"{}\"}}",
                    "x".repeat(100_000)
                )))
                .unwrap(),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text
    );
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "application/problem+json"
    );
}

#[tokio::test]
async fn commands_without_the_service_are_a_clear_503() {
    let nats = jarvis_testkit::NatsServer::start();
    let (client, js) = jarvis_bus::connect(&nats.url(), "test").await.unwrap();
    let caller = Caller::new(state_with(config(), Some(Bus { client, js })));
    let t = caller.token("otto", false);
    let reply = caller
        .call(
            Method::POST,
            "/api/v1/commands/orders",
            Some(&t),
            Some(json!({"symbol": "SOL/USDT", "side": "buy", "notional": "100"})),
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "jarvis-trading service is not running",
    );
    // Without a bus at all.
    let caller = Caller::new(state_with(config(), None));
    let t = caller.token("otto", false);
    let reply = caller
        .call(
            Method::POST,
            "/api/v1/commands/halt",
            Some(&t),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_problem(&reply, StatusCode::SERVICE_UNAVAILABLE, "no bus");
}

#[tokio::test]
async fn commands_carry_the_requester() {
    let nats = jarvis_testkit::NatsServer::start();
    let (client, js) = jarvis_bus::connect(&nats.url(), "test").await.unwrap();
    services(client.clone()).await;
    let caller = Caller::new(state_with(config(), Some(Bus { client, js })));
    let t = caller.token("otto", false);
    let reply =
        jarvis_testkit::eventually(std::time::Duration::from_secs(60), "propose", || async {
            let r = caller
                .call(
                    Method::POST,
                    "/api/v1/commands/orders",
                    Some(&t),
                    Some(json!({"symbol": "sol/usdt", "side": "BUY", "quantity": "1.5"})),
                )
                .await;
            (r.status == StatusCode::OK).then_some(r)
        })
        .await;
    assert_eq!(
        reply.body["request"],
        json!({"symbol": "SOLUSDT", "side": "buy", "quantity": "1.5", "requested_by": "gateway:otto"})
    );
    let halt = caller
        .call(
            Method::POST,
            "/api/v1/commands/halt",
            Some(&t),
            Some(json!({"reason": "manual"})),
        )
        .await;
    assert_eq!(halt.body["request"]["reason"], "manual [gateway:otto]");
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let mut c = config();
    c.rate_limit_per_ip_per_sec = 1;
    c.rate_limit_burst = 2;
    let caller = Caller::new(state_with(c, None));
    let t = caller.token("vera", false);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            caller
                .call(Method::GET, "/api/v1/portfolio", Some(&t), None)
                .await,
        );
    }
    let limited = statuses
        .iter()
        .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .expect("a 429 after the burst");
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "retry after");
    let retry: u64 = limited.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(statuses[0].status, StatusCode::OK);

    // Per credential: one key's budget does not spend another's.
    let mut c = config();
    c.rate_limit_per_key_per_sec = 1;
    c.rate_limit_burst = 1;
    let caller = Caller::new(state_with(c, None));
    let vera = caller.token("vera", false);
    let otto = caller.token("otto", false);
    let mut last = None;
    for _ in 0..3 {
        last = Some(
            caller
                .call(Method::GET, "/api/v1/risk", Some(&vera), None)
                .await
                .status,
        );
    }
    assert_eq!(last, Some(StatusCode::TOO_MANY_REQUESTS));
    let other = caller
        .call(Method::GET, "/api/v1/risk", Some(&otto), None)
        .await;
    assert_eq!(other.status, StatusCode::OK);
}

#[tokio::test]
async fn pages_follow_their_cursor() {
    let caller = Caller::new(state_with(config(), None));
    let t = caller.token("vera", false);
    let first = caller
        .call(Method::GET, "/api/v1/trades?limit=100", Some(&t), None)
        .await;
    let items = first.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 100);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = caller
        .call(
            Method::GET,
            &format!("/api/v1/trades?limit=100&cursor={cursor}"),
            Some(&t),
            None,
        )
        .await;
    let third_cursor = second.body["next_cursor"].as_str().unwrap();
    let third = caller
        .call(
            Method::GET,
            &format!("/api/v1/trades?limit=100&cursor={third_cursor}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(third.body["items"].as_array().unwrap().len(), 50);
    assert!(third.body["next_cursor"].is_null());
    // Newest first, no overlap between pages.
    let last_of_first = items[99]["filled_at"].as_str().unwrap().to_string();
    let first_of_second = second.body["items"][0]["filled_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(last_of_first > first_of_second);
    // A time range.
    let ranged = caller
        .call(
            Method::GET,
            "/api/v1/trades?from=2026-01-01T00:10:00Z&to=2026-01-01T00:20:00Z",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(
        ranged.body["items"].as_array().unwrap().len(),
        10,
        "{}",
        ranged.text
    );
    let by_symbol = caller
        .call(
            Method::GET,
            "/api/v1/trades?symbol=SOL-USDT&limit=1000",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(
        by_symbol.body["items"].as_array().unwrap().len(),
        50,
        "{}",
        by_symbol.text
    );
}

#[tokio::test]
async fn openapi_documents_every_route_as_3_1() {
    let caller = Caller::new(state_with(config(), None));
    let reply = caller
        .call(Method::GET, "/api/openapi.json", None, None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = &reply.body;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "delete"] {
            if item.get(method).is_some() {
                documented.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let mut expected: Vec<String> = routes()
        .into_iter()
        .map(|(m, p, _, _)| {
            let p = p
                .replace(
                    "drafts/00000000-0000-0000-0000-000000000001",
                    "drafts/{draft_id}",
                )
                .replace("00000000-0000-0000-0000-000000000001", "{proposal_id}")
                .replace("SOL-USDT", "{symbol}")
                .replace("sentiment/SOL", "sentiment/{token}")
                .replace("conversations/42", "conversations/{chat_id}");
            format!("{m} {p}")
        })
        .collect();
    expected.extend(
        [
            "POST /api/v1/auth/login",
            "POST /api/v1/auth/refresh",
            "GET /api/v1/orders/{order_id}",
            "GET /api/v1/events/{event_id}",
            "GET /api/v1/events/{event_id}/chain",
            "GET /api/v1/backtests/{run_id}",
            "GET /api/v1/stream",
            "POST /api/v1/admin/api-keys",
            "DELETE /api/v1/admin/api-keys/{id}",
            "GET /healthz",
            "GET /readyz",
            "GET /metrics",
        ]
        .map(String::from),
    );
    for route in &expected {
        assert!(documented.contains(route), "{route} is not documented");
    }
    assert_eq!(documented.len(), expected.len(), "{documented:?}");
    // Every operation says what its errors look like, and schemas resolve.
    let text = reply.text.clone();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{name} is not defined"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // The docs page works offline: no external scripts or styles.
    let docs = caller.call(Method::GET, "/api/docs", None, None).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.text.contains("/api/openapi.json"));
    assert!(
        !docs.text.contains("http://") && !docs.text.contains("https://"),
        "no CDN"
    );
}

#[tokio::test]
async fn ops_routes_headers_and_metrics() {
    let caller = Caller::new(state_with(config(), None));
    let health = caller.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(health.headers[name], value);
    }
    assert!(health.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    assert!(health.headers.contains_key("strict-transport-security"));
    assert!(health.headers.contains_key("x-request-id"));
    // A given request id is echoed.
    let echoed = caller
        .send(
            Request::get("/healthz")
                .header("x-request-id", "abc-123")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(echoed.headers["x-request-id"], "abc-123");
    let ready = caller.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.body["checks"]["database"], "not configured");
    let t = caller.token("vera", false);
    caller
        .call(Method::GET, "/api/v1/portfolio", Some(&t), None)
        .await;
    let metrics = caller.call(Method::GET, "/metrics", None, None).await;
    assert!(metrics.text.contains(
        "jarvis_http_requests_total{method=\"GET\",route=\"/api/v1/portfolio\",status=\"200\"} 1"
    ), "{}", metrics.text);
    assert!(metrics
        .text
        .contains("jarvis_http_request_duration_seconds_bucket"));
    assert!(metrics.text.contains("jarvis_trades_total 250"));
    assert!(metrics.text.contains("jarvis_relay_lag_events"));
    assert!(
        metrics.text.contains("jarvis_projector_lag_events")
            || metrics.text.contains("jarvis_llm_cost_usd_total")
    );
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let mut c = config();
    c.cors_origins = vec!["https://dash.example".into()];
    let caller = Caller::new(state_with(c, None));
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/api/v1/portfolio")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .body(Body::empty())
            .unwrap()
    };
    let ok = caller.send(preflight("https://dash.example")).await;
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "https://dash.example"
    );
    let other = caller.send(preflight("https://evil.example")).await;
    assert!(!other.headers.contains_key("access-control-allow-origin"));
}

#[test]
fn secrets_stay_out_of_debug() {
    let c = config();
    let text = format!("{c:?}");
    assert!(!text.contains(SECRET) && !text.contains("argon2"), "{text}");
    let state = state_with(c, None);
    assert!(!format!("{:?}", state.auth).contains(SECRET));
}
