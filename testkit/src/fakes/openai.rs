//! A fake OpenAI-compatible chat completions API (`POST /v1/chat/completions`), as OpenAI, Groq,
//! OpenRouter and xAI speak it: `choices[0].message`, `usage.prompt_tokens`/`completion_tokens`, errors as
//! `{"error": {"message", "type", "code"}}`, `Retry-After` on 429.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use serde_json::{json, Value};

use super::{fake_handle, next_reply, settle, Fake, Reply, Script};

/// The fake; its base URL (with `/v1`) is [`FakeOpenAi::url`].
#[derive(Debug)]
pub struct FakeOpenAi(Fake);

fake_handle!(FakeOpenAi);

impl FakeOpenAi {
    /// Starts it on a free loopback port.
    pub async fn start() -> Self {
        Self(
            Fake::start(|script| {
                axum::Router::new()
                    .route("/v1/chat/completions", post(chat))
                    .with_state(script)
            })
            .await,
        )
    }

    /// `http://127.0.0.1:<port>/v1`, the `base_url` to configure.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.0.addr)
    }
}

async fn chat(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let model = body["model"].as_str().unwrap_or("unknown").to_string();
    let reply = settle(next_reply(&script, "/v1/chat/completions", &headers, body)).await;
    match reply {
        Reply::Answer {
            text,
            usage,
            tool_calls,
        } => {
            let mut message = json!({"role": "assistant", "content": text});
            if !tool_calls.is_empty() {
                message["content"] = Value::Null;
                message["tool_calls"] = tool_calls
                    .iter()
                    .enumerate()
                    .map(|(i, (name, args))| {
                        json!({"id": format!("call_{i}"), "type": "function",
                               "function": {"name": name, "arguments": args.to_string()}})
                    })
                    .collect();
            }
            let mut answer = json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 1_763_700_000,
                "model": model,
                "choices": [{"index": 0, "message": message,
                             "finish_reason": if tool_calls.is_empty() { "stop" } else { "tool_calls" }}],
                "system_fingerprint": "fp_fake",
            });
            if let Some((i, o)) = usage {
                answer["usage"] =
                    json!({"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o});
            }
            Json(answer).into_response()
        }
        Reply::Status { code, retry_after } => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let kind = if code == 429 {
                "rate_limit_exceeded"
            } else {
                "server_error"
            };
            let body = json!({"error": {"message": format!("fake error {code}"), "type": kind, "code": kind}});
            let mut response = (status, Json(body)).into_response();
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", secs.to_string().parse().expect("header"));
            }
            response
        }
        Reply::Slow(..) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
