//! A fake Ollama (`POST /api/chat`, not streamed), in Ollama's format: `message`, `done`,
//! `prompt_eval_count`, `eval_count` and the durations in nanoseconds; errors as `{"error": "..."}`.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use serde_json::{json, Value};

use super::{fake_handle, next_reply, settle, Fake, Reply, Script};

/// The fake; its base URL is [`FakeOllama::url`].
#[derive(Debug)]
pub struct FakeOllama(Fake);

fake_handle!(FakeOllama);

impl FakeOllama {
    /// Starts it on a free loopback port.
    pub async fn start() -> Self {
        Self(
            Fake::start(|script| {
                axum::Router::new()
                    .route("/api/chat", post(chat))
                    .with_state(script)
            })
            .await,
        )
    }

    /// `http://127.0.0.1:<port>`, the `base_url` to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.0.addr)
    }
}

async fn chat(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let model = body["model"].as_str().unwrap_or("unknown").to_string();
    let reply = settle(next_reply(&script, "/api/chat", &headers, body)).await;
    match reply {
        Reply::Answer {
            text,
            usage,
            tool_calls,
        } => {
            let mut message = json!({"role": "assistant", "content": text});
            if !tool_calls.is_empty() {
                message["tool_calls"] = tool_calls
                    .iter()
                    .map(|(name, args)| json!({"function": {"name": name, "arguments": args}}))
                    .collect();
            }
            let mut answer = json!({
                "model": model,
                "created_at": "2026-11-21T08:00:00.000000Z",
                "message": message,
                "done_reason": "stop",
                "done": true,
                "total_duration": 4_883_583_458u64,
                "load_duration": 1_334_875,
            });
            if let Some((i, o)) = usage {
                answer["prompt_eval_count"] = json!(i);
                answer["prompt_eval_duration"] = json!(342_546_000);
                answer["eval_count"] = json!(o);
                answer["eval_duration"] = json!(4_535_599_000u64);
            }
            Json(answer).into_response()
        }
        Reply::Status { code, .. } => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, Json(json!({"error": format!("fake error {code}")}))).into_response()
        }
        Reply::Slow(..) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
