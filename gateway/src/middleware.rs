//! Middleware: rate limits, problem bodies, metrics and access logs, security headers.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Problem};
use crate::AppState;

/// The client's IP, when the server recorded it.
fn client_ip(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// A short stable key of the credential a request carries (never the credential itself).
fn credential_key(req: &Request) -> Option<String> {
    use std::hash::Hasher;
    let value = req
        .headers()
        .get("x-api-key")
        .or_else(|| req.headers().get(header::AUTHORIZATION))?;
    let mut h = std::hash::DefaultHasher::new();
    h.write(value.as_bytes());
    Some(format!("cred:{:016x}", h.finish()))
}

/// 429 with `Retry-After` when the client's IP, or its credential, has used its budget.
pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ip = client_ip(&req);
    if let Err(retry_after_secs) = state.ip_limiter.check(&ip) {
        return ApiError::RateLimited { retry_after_secs }.into_response();
    }
    if let Some(key) = credential_key(&req) {
        if let Err(retry_after_secs) = state.key_limiter.check(&key) {
            return ApiError::RateLimited { retry_after_secs }.into_response();
        }
    }
    next.run(req).await
}

/// A problem already, or a JSON answer a handler chose to give with an error status (e.g. `/readyz`).
fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/problem+json")
                || v.as_bytes().starts_with(b"application/json")
        })
}

/// Writes the body of [`ApiError`] responses, and turns every other error response (axum's rejections,
/// unknown routes, timeouts, body limits) into a problem too. A 5xx never carries the original text.
pub async fn problems(req: Request, next: Next) -> Response {
    let instance = req.uri().path().to_string();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let mut problem = match parts.extensions.remove::<Problem>() {
        Some(p) => p,
        None => {
            let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&text).trim().to_string();
            from_status(status, text)
        }
    };
    problem.instance = Some(instance);
    problem.request_id = request_id;
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// A problem for a response that was not an [`ApiError`].
fn from_status(status: StatusCode, text: String) -> Problem {
    let (kind, title) = match status {
        StatusCode::BAD_REQUEST => ("bad-request", "Bad request"),
        StatusCode::UNAUTHORIZED => ("unauthorized", "Unauthorized"),
        StatusCode::FORBIDDEN => ("forbidden", "Forbidden"),
        StatusCode::NOT_FOUND => ("not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "Request timed out"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "Payload too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        StatusCode::UNPROCESSABLE_ENTITY => ("validation", "Invalid request"),
        s if s.is_server_error() => ("internal", "Internal error"),
        _ => ("error", "Error"),
    };
    let detail = if status.is_server_error() {
        if !text.is_empty() {
            tracing::error!(status = status.as_u16(), cause = %text, "request failed");
        }
        "the gateway failed to answer this request; it has been logged with this request id".into()
    } else if text.is_empty() {
        match status {
            StatusCode::NOT_FOUND => "no such route; see /api/openapi.json".into(),
            StatusCode::METHOD_NOT_ALLOWED => {
                "this route does not take that method; see /api/openapi.json".into()
            }
            StatusCode::REQUEST_TIMEOUT => "the request took too long".into(),
            StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than allowed".into(),
            s => s.canonical_reason().unwrap_or("error").to_string(),
        }
    } else {
        text
    };
    Problem::new(status, kind, title, detail)
}

/// Counts and times every request by route, and logs one line per request (target `jarvis::access`).
pub async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let log = state.config.access_log;
    let (path, ip, request_id) = if log {
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        (req.uri().path().to_string(), client_ip(&req), id)
    } else {
        Default::default()
    };
    let response = next.run(req).await;
    let elapsed = start.elapsed();
    let status = response.status();
    state
        .metrics
        .requests
        .with_label_values(&[method.as_str(), &route, status.as_str()])
        .inc();
    state
        .metrics
        .latency
        .with_label_values(&[method.as_str(), &route])
        .observe(elapsed.as_secs_f64());
    if log {
        tracing::info!(
            target: "jarvis::access",
            method = %method,
            path = %path,
            route = %route,
            status = status.as_u16(),
            latency_us = elapsed.as_micros() as u64,
            client_ip = %ip,
            request_id = %request_id,
            "request"
        );
    }
    response
}

/// The security headers every response carries.
pub fn security_headers() -> [(header::HeaderName, HeaderValue); 6] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                 script-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; \
                 base-uri 'none'; form-action 'self'",
            ),
        ),
        (
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ]
}
