//! Chat providers behind one trait: any OpenAI-compatible API (`POST {base_url}/chat/completions`) and
//! Ollama (`POST {base_url}/api/chat`), both over reqwest.
//!
//! Ollama is spoken directly rather than through the `ollama-rs` crate: ollama-rs 0.3 turns on schemars'
//! `preserve_order` feature, which switches `serde_json` to insertion order for the whole workspace and so
//! rewrites every committed event schema (`schemas/`); its chat call is one small JSON request anyway.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::redact::redact;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message of `role`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// A tool the model may call (OpenAI function-calling shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The tool's name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of its arguments.
    #[serde(default = "empty_object")]
    pub parameters: Value,
}

fn empty_object() -> Value {
    json!({"type": "object", "properties": {}})
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The tool's name.
    pub name: String,
    /// Its arguments (JSON).
    pub arguments: Value,
}

/// A request to one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Output token limit.
    pub max_tokens: u64,
    /// Tools offered (already filtered by the task's allowlist).
    pub tools: Vec<ToolSpec>,
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The text.
    pub text: String,
    /// Input tokens, from the provider's usage field.
    pub tokens_in: Option<u64>,
    /// Output tokens, from the provider's usage field.
    pub tokens_out: Option<u64>,
    /// Tool calls.
    pub tool_calls: Vec<ToolCall>,
}

/// Why one request to one provider failed. Messages never hold an API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// 429: retry after the given wait, if the provider said.
    #[error("rate limited (429){}", retry_after.map(|d| format!(", retry after {} ms", d.as_millis())).unwrap_or_default())]
    RateLimited {
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// 5xx: the provider failed; retry with back-off.
    #[error("server error {status}: {body}")]
    Server {
        /// The status.
        status: u16,
        /// The start of the body, redacted.
        body: String,
    },
    /// Another 4xx: retrying the same request won't help (bad key, unknown model); try the next provider.
    #[error("refused {status}: {body}")]
    Refused {
        /// The status.
        status: u16,
        /// The start of the body, redacted.
        body: String,
    },
    /// No answer within the timeout.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// Connection refused, reset, DNS, ...
    #[error("unreachable: {0}")]
    Transport(String),
    /// A 200 whose body is not the expected JSON.
    #[error("unreadable answer: {0}")]
    Decode(String),
}

impl ProviderError {
    /// Whether retrying the same provider may help.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Server { .. })
    }
}

/// A chat API.
#[async_trait]
pub trait ChatProvider: Send + Sync {
    /// Sends one request and waits for the whole answer, at most `timeout`.
    ///
    /// # Errors
    /// [`ProviderError`].
    async fn chat(
        &self,
        request: &ChatRequest,
        timeout: Duration,
    ) -> Result<ChatResponse, ProviderError>;
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}

fn transport(err: reqwest::Error, timeout: Duration) -> ProviderError {
    if err.is_timeout() {
        ProviderError::Timeout(timeout.as_millis() as u64)
    } else {
        // reqwest's message holds the URL (never a key) and the cause.
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        ProviderError::Transport(redact(&text))
    }
}

/// `Retry-After` as seconds (the HTTP-date form is treated as absent).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// Maps a non-success status to its error.
async fn status_error(response: reqwest::Response) -> ProviderError {
    let status = response.status();
    let wait = retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    let body = redact(&body.chars().take(300).collect::<String>());
    if status == StatusCode::TOO_MANY_REQUESTS {
        ProviderError::RateLimited { retry_after: wait }
    } else if status.is_server_error() {
        ProviderError::Server {
            status: status.as_u16(),
            body,
        }
    } else {
        ProviderError::Refused {
            status: status.as_u16(),
            body,
        }
    }
}

async fn post_json(
    request: reqwest::RequestBuilder,
    body: &Value,
    timeout: Duration,
) -> Result<Value, ProviderError> {
    let send = async {
        let response = request
            .json(body)
            .send()
            .await
            .map_err(|e| transport(e, timeout))?;
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        response
            .json::<Value>()
            .await
            .map_err(|e| ProviderError::Decode(e.to_string()))
    };
    // One deadline for connect, headers and body: a provider that trickles bytes cannot hang the caller.
    tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| ProviderError::Timeout(timeout.as_millis() as u64))?
}

/// Any OpenAI-compatible chat completions API.
pub struct OpenAiClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
}

impl OpenAiClient {
    /// A client of `base_url` (e.g. `https://api.groq.com/openai/v1`) with an optional bearer key.
    pub fn new(base_url: &str, api_key: Option<String>) -> Self {
        Self {
            http: http_client(),
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
        }
    }

    /// The request body of the chat completions API.
    pub fn body(request: &ChatRequest) -> Value {
        let mut body = json!({
            "model": request.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "stream": false,
        });
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters}})
                })
                .collect();
        }
        body
    }

    /// Reads a chat completion.
    ///
    /// # Errors
    /// [`ProviderError::Decode`] when it has no first choice.
    pub fn parse(value: &Value) -> Result<ChatResponse, ProviderError> {
        let message = value
            .pointer("/choices/0/message")
            .ok_or_else(|| ProviderError::Decode("no choices[0].message".into()))?;
        let text = message
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let tool_calls = message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let f = c.get("function")?;
                let arguments = match f.get("arguments") {
                    // OpenAI sends arguments as a JSON string.
                    Some(Value::String(s)) => {
                        serde_json::from_str(s).unwrap_or(Value::String(s.clone()))
                    }
                    Some(v) => v.clone(),
                    None => Value::Null,
                };
                Some(ToolCall {
                    name: f.get("name")?.as_str()?.to_string(),
                    arguments,
                })
            })
            .collect();
        let usage = value.get("usage");
        let count = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64);
        Ok(ChatResponse {
            text,
            tokens_in: count("prompt_tokens"),
            tokens_out: count("completion_tokens"),
            tool_calls,
        })
    }
}

#[async_trait]
impl ChatProvider for OpenAiClient {
    async fn chat(
        &self,
        request: &ChatRequest,
        timeout: Duration,
    ) -> Result<ChatResponse, ProviderError> {
        let mut builder = self
            .http
            .post(format!("{}/chat/completions", self.base_url));
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        let value = post_json(builder, &Self::body(request), timeout).await?;
        Self::parse(&value)
    }
}

/// Ollama's chat API.
pub struct OllamaClient {
    http: reqwest::Client,
    base_url: String,
}

impl OllamaClient {
    /// A client of `base_url`, e.g. `http://127.0.0.1:11434`.
    pub fn new(base_url: &str) -> Self {
        Self {
            http: http_client(),
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }

    /// The request body of `/api/chat` (not streamed).
    pub fn body(request: &ChatRequest) -> Value {
        let mut body = json!({
            "model": request.model,
            "messages": request.messages,
            "stream": false,
            "options": {"num_predict": request.max_tokens},
        });
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters}})
                })
                .collect();
        }
        body
    }

    /// Reads an `/api/chat` answer.
    ///
    /// # Errors
    /// [`ProviderError::Decode`] when it has no message.
    pub fn parse(value: &Value) -> Result<ChatResponse, ProviderError> {
        let message = value
            .get("message")
            .ok_or_else(|| ProviderError::Decode("no message".into()))?;
        let tool_calls = message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let f = c.get("function")?;
                Some(ToolCall {
                    name: f.get("name")?.as_str()?.to_string(),
                    arguments: f.get("arguments").cloned().unwrap_or(Value::Null),
                })
            })
            .collect();
        Ok(ChatResponse {
            text: message
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            tokens_in: value.get("prompt_eval_count").and_then(Value::as_u64),
            tokens_out: value.get("eval_count").and_then(Value::as_u64),
            tool_calls,
        })
    }
}

#[async_trait]
impl ChatProvider for OllamaClient {
    async fn chat(
        &self,
        request: &ChatRequest,
        timeout: Duration,
    ) -> Result<ChatResponse, ProviderError> {
        let builder = self.http.post(format!("{}/api/chat", self.base_url));
        let value = post_json(builder, &Self::body(request), timeout).await?;
        Self::parse(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openai_usage_and_tool_calls() {
        let v = json!({
            "id": "chatcmpl-1", "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "get_price", "arguments": "{\"symbol\":\"SOL\"}"}}]}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
        });
        let r = OpenAiClient::parse(&v).unwrap();
        assert_eq!((r.tokens_in, r.tokens_out), (Some(12), Some(7)));
        assert_eq!(r.tool_calls[0].name, "get_price");
        assert_eq!(r.tool_calls[0].arguments["symbol"], "SOL");
        assert!(OpenAiClient::parse(&json!({"choices": []})).is_err());
    }

    #[test]
    fn reads_ollama_counts() {
        let v = json!({"model": "llama3.2", "created_at": "2024-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": "hi"}, "done": true,
            "prompt_eval_count": 26, "eval_count": 3});
        let r = OllamaClient::parse(&v).unwrap();
        assert_eq!(
            (r.text.as_str(), r.tokens_in, r.tokens_out),
            ("hi", Some(26), Some(3))
        );
    }

    #[test]
    fn retry_after_in_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}
