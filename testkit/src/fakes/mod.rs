//! Fakes of third-party HTTP APIs, speaking their real wire formats, for the real client crates to talk to.
//!
//! Each fake is an axum server on `127.0.0.1:0`, stopped on drop. Replies are scripted: a queue of
//! [`Reply`]s taken in order, then a default; every request is recorded for assertions.
//!
//! - [`openai`], [`ollama`]: LLM providers (scripted with [`Reply`]).
//! - [`embeddings`]: an OpenAI-compatible `POST /v1/embeddings` with deterministic vectors.
//! - [`jupiter`]: Jupiter's Swap API v1 (quote, swap) and Price API v3.
//! - [`solana_rpc`]: a Solana JSON-RPC node (send, statuses, block height, transactions).
//! - [`x`]: the X API v2 (mentions, recent search, post, users/me) with rate-limit headers and scripted failures.
//! - [`telegram`]: the Telegram Bot API (updates in, messages out), driven by teloxide.

pub mod embeddings;
pub mod jupiter;
pub mod ollama;
pub mod openai;
pub mod solana_rpc;
pub mod telegram;
pub mod x;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// One scripted reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// 200 with an answer.
    Answer {
        /// The answer's text.
        text: String,
        /// `(prompt tokens, completion tokens)` for the usage field; none: the field is left out.
        usage: Option<(u64, u64)>,
        /// Tool calls `(name, arguments)`.
        tool_calls: Vec<(String, Value)>,
    },
    /// An error status, with `Retry-After: <secs>` when given.
    Status {
        /// The HTTP status.
        code: u16,
        /// `Retry-After` in seconds.
        retry_after: Option<u64>,
    },
    /// Waits, then sends the inner reply (a slow provider).
    Slow(Duration, Box<Reply>),
}

impl Reply {
    /// 200 with `text` and usage `(10, 5)`.
    pub fn text(text: impl Into<String>) -> Self {
        Self::with_usage(text, 10, 5)
    }

    /// 200 with `text` and the given usage.
    pub fn with_usage(text: impl Into<String>, tokens_in: u64, tokens_out: u64) -> Self {
        Self::Answer {
            text: text.into(),
            usage: Some((tokens_in, tokens_out)),
            tool_calls: vec![],
        }
    }

    /// 200 with `text` and no usage field.
    pub fn without_usage(text: impl Into<String>) -> Self {
        Self::Answer {
            text: text.into(),
            usage: None,
            tool_calls: vec![],
        }
    }

    /// 200 with tool calls and usage `(10, 5)`.
    pub fn tool_calls(calls: Vec<(String, Value)>) -> Self {
        Self::Answer {
            text: String::new(),
            usage: Some((10, 5)),
            tool_calls: calls,
        }
    }

    /// An error status.
    pub fn status(code: u16) -> Self {
        Self::Status {
            code,
            retry_after: None,
        }
    }

    /// 429 with `Retry-After: <secs>`.
    pub fn rate_limited(secs: u64) -> Self {
        Self::Status {
            code: 429,
            retry_after: Some(secs),
        }
    }

    /// `reply` after `delay`.
    pub fn slow(delay: Duration, reply: Reply) -> Self {
        Self::Slow(delay, Box::new(reply))
    }
}

/// A request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The JSON body.
    pub body: Value,
    /// When it arrived.
    pub at: std::time::Instant,
}

#[derive(Debug)]
struct Script {
    queue: VecDeque<Reply>,
    default: Reply,
    received: Vec<Received>,
}

/// What the two fakes share: the script, the address, and the server task.
#[derive(Debug)]
struct Fake {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Fake {
    async fn start(router: impl FnOnce(Arc<Mutex<Script>>) -> axum::Router) -> Self {
        let script = Arc::new(Mutex::new(Script {
            queue: VecDeque::new(),
            default: Reply::text("ok"),
            received: Vec::new(),
        }));
        let app = router(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a fake server");
        let addr = listener.local_addr().expect("fake server address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            script,
            stop: Some(stop),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Records a request and takes the next reply.
fn next_reply(
    script: &Mutex<Script>,
    path: &str,
    headers: &axum::http::HeaderMap,
    body: Value,
) -> Reply {
    let mut s = script.lock().unwrap_or_else(|p| p.into_inner());
    s.received.push(Received {
        path: path.to_string(),
        authorization: headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
        at: std::time::Instant::now(),
    });
    s.queue.pop_front().unwrap_or_else(|| s.default.clone())
}

/// Waits out [`Reply::Slow`] and returns the reply to send.
async fn settle(mut reply: Reply) -> Reply {
    while let Reply::Slow(delay, inner) = reply {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    reply
}

macro_rules! fake_handle {
    ($name:ident) => {
        impl $name {
            /// Queues replies, taken in order before the default.
            pub fn push(&self, replies: impl IntoIterator<Item = $crate::fakes::Reply>) {
                self.0.lock().queue.extend(replies);
            }

            /// The reply once the queue is empty (initially `Reply::text("ok")`).
            pub fn set_default(&self, reply: $crate::fakes::Reply) {
                self.0.lock().default = reply;
            }

            /// Every request received so far.
            pub fn received(&self) -> Vec<$crate::fakes::Received> {
                self.0.lock().received.clone()
            }

            /// How many requests arrived.
            pub fn count(&self) -> usize {
                self.0.lock().received.len()
            }
        }
    };
}
pub(crate) use fake_handle;
