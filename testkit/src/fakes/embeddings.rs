//! A fake OpenAI-compatible embeddings API: `POST /v1/embeddings` with a bearer key, answering the real
//! JSON (`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[...]}],"model":...,"usage":...}`).
//!
//! Vectors are deterministic bags of words: each word (lower-cased, letters and digits), after an optional
//! synonym table that maps words to a canonical one, adds 1 to one of [`DIMS`] dimensions chosen by an
//! FNV-1a hash. So texts that share words, or synonyms, point the same way, and a test can show recall by
//! meaning (`puppy` finds `dog`) where full-text search finds nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

/// Dimensions of the fake's vectors.
pub const DIMS: usize = 256;

/// A request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenRequest {
    /// The `model` field.
    pub model: String,
    /// The texts, in order.
    pub input: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Body {
    model: String,
    input: Input,
}

#[derive(Default)]
struct Shared {
    key: String,
    synonyms: HashMap<String, String>,
    requests: Mutex<Vec<SeenRequest>>,
    failing: AtomicBool,
    /// Most words per input (0 = no limit), like a model's context length.
    max_tokens: AtomicUsize,
}

/// The running fake; stops on drop.
pub struct FakeEmbeddings {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

fn fnv1a(word: &str) -> u64 {
    word.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The fake's vector of `text` (not normalised), given a synonym table.
pub fn embed_text(text: &str, synonyms: &HashMap<String, String>) -> Vec<f32> {
    let mut v = vec![0.0f32; DIMS];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_lowercase();
        let word = synonyms.get(&word).unwrap_or(&word);
        v[(fnv1a(word) % DIMS as u64) as usize] += 1.0;
    }
    v
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Json<Body>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    if given != shared.key {
        // Like some real providers, the message repeats the key it was given.
        return (
            StatusCode::UNAUTHORIZED,
            Json(
                json!({"error": {"message": format!("Incorrect API key provided: {given}"),
                "type": "invalid_request_error", "code": "invalid_api_key"}}),
            ),
        )
            .into_response();
    }
    let Json(body) =
        match body {
            Ok(b) => b,
            Err(e) => return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"message": e.body_text(), "type": "invalid_request_error"}})),
            )
                .into_response(),
        };
    if shared.failing.load(Ordering::SeqCst) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"message": "The server had an error", "type": "server_error"}})),
        )
            .into_response();
    }
    let input = match body.input {
        Input::One(s) => vec![s],
        Input::Many(v) => v,
    };
    shared
        .requests
        .lock()
        .expect("requests lock")
        .push(SeenRequest {
            model: body.model.clone(),
            input: input.clone(),
        });
    let max_tokens = shared.max_tokens.load(Ordering::SeqCst);
    if let Some(long) = input
        .iter()
        .map(|t| t.split_whitespace().count())
        .find(|n| max_tokens > 0 && *n > max_tokens)
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": format!(
                "This model's maximum context length is {max_tokens} tokens, however you requested {long} tokens"),
                "type": "invalid_request_error", "code": "context_length_exceeded"}})),
        )
            .into_response();
    }
    let tokens: usize = input.iter().map(|t| t.split_whitespace().count()).sum();
    let data: Vec<_> = input
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": embed_text(t, &shared.synonyms)}))
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}

impl FakeEmbeddings {
    /// Starts the fake, accepting `api_key` as the bearer token.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(api_key: &str) -> Self {
        Self::with_synonyms(api_key, &[]).await
    }

    /// Starts the fake with a synonym table: each `(word, canonical)` embeds `word` as `canonical`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn with_synonyms(api_key: &str, synonyms: &[(&str, &str)]) -> Self {
        let shared = Arc::new(Shared {
            key: api_key.to_string(),
            synonyms: synonyms
                .iter()
                .map(|(w, c)| (w.to_lowercase(), c.to_lowercase()))
                .collect(),
            ..Default::default()
        });
        let app = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake embeddings server");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// `http://127.0.0.1:<port>/v1`: the base URL a client appends `/embeddings` to.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every successful request so far, in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    /// Inputs of more than `words` words get a 400 (`context_length_exceeded`), like a model's context length;
    /// 0 = no limit (the default).
    pub fn set_max_tokens(&self, words: usize) {
        self.shared.max_tokens.store(words, Ordering::SeqCst);
    }

    /// While set, every request gets a 500.
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }
}

impl Drop for FakeEmbeddings {
    fn drop(&mut self) {
        self.task.abort();
    }
}
