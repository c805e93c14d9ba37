//! Text embeddings for recall by meaning: the [`Embedder`] trait and a client of the OpenAI-compatible
//! `POST {base_url}/embeddings` API (OpenAI, OpenRouter, Ollama's `/v1`, llama.cpp, vLLM, ...).
//!
//! Vectors come back unit-length ([`normalize`]), so the cosine of two of them is their dot product. The API
//! key is sent as a bearer token and never appears in an error, a log or `Debug`.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// `[memory.embeddings]`: the embedding provider. Recall ranks by text alone when it is absent.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// Base URL of an OpenAI-compatible API, e.g. `https://api.openai.com/v1`; `/embeddings` is appended.
    pub base_url: String,
    /// Bearer token, if the provider needs one. Never logged.
    #[serde(default)]
    pub api_key: Option<String>,
    /// The embedding model.
    #[serde(default = "default_model")]
    pub model: String,
    /// Timeout of one request, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Texts sent per request when filling in embeddings of stored memories.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_model() -> String {
    "text-embedding-3-small".into()
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_batch() -> usize {
    32
}

impl std::fmt::Debug for EmbeddingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("model", &self.model)
            .field("timeout_ms", &self.timeout_ms)
            .field("batch", &self.batch)
            .finish()
    }
}

impl EmbeddingConfig {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// The key, its value and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        let url = url::Url::parse(&self.base_url)
            .map_err(|e| format!("memory.embeddings.base_url = {:?}: {e}", self.base_url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "memory.embeddings.base_url = {:?}: must be http or https",
                self.base_url
            ));
        }
        if self.model.trim().is_empty() {
            return Err("memory.embeddings.model must not be blank".into());
        }
        if self.timeout_ms == 0 {
            return Err("memory.embeddings.timeout_ms = 0: must be positive".into());
        }
        if !(1..=2048).contains(&self.batch) {
            return Err(format!(
                "memory.embeddings.batch = {}: must be 1 to 2048",
                self.batch
            ));
        }
        Ok(())
    }
}

/// Why texts could not be embedded. Messages never contain the API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    /// The provider answered with an error status.
    #[error("embedding provider answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of its body.
        message: String,
    },
    /// The provider could not be reached, or timed out.
    #[error("embedding provider unreachable: {0}")]
    Transport(String),
    /// The answer is not what the API promises.
    #[error("embedding provider answered malformed JSON: {0}")]
    Malformed(String),
}

/// Turns texts into vectors.
#[async_trait]
pub trait Embedder: Send + Sync + std::fmt::Debug {
    /// The model's name, stored beside each vector: vectors of different models are never compared.
    fn model(&self) -> &str;

    /// One unit-length vector per text, in order.
    ///
    /// # Errors
    /// [`EmbedError`] when the provider fails or answers nonsense.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Scales a vector to unit length (a zero vector stays zero).
pub fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
    v
}

/// A client of an OpenAI-compatible `/embeddings` endpoint.
pub struct OpenAiEmbedder {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    model: String,
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("url", &self.url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Datum>,
}

#[derive(Deserialize)]
struct Datum {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    /// A client for `config`.
    ///
    /// # Errors
    /// [`EmbedError::Transport`] when the HTTP client cannot be built.
    pub fn new(config: &EmbeddingConfig) -> Result<Self, EmbedError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| EmbedError::Transport(e.to_string()))?;
        Ok(Self {
            http,
            url: format!("{}/embeddings", config.base_url.trim_end_matches('/')),
            api_key: config.api_key.clone().filter(|k| !k.is_empty()),
            model: config.model.clone(),
        })
    }

    /// `text` with every occurrence of the key replaced by `***`.
    fn redact(&self, text: String) -> String {
        match &self.api_key {
            Some(key) => text.replace(key.as_str(), "***"),
            None => text,
        }
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(vec![]);
        }
        let mut request = self.http.post(&self.url).json(&Request {
            model: &self.model,
            input: texts,
            encoding_format: "float",
        });
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| EmbedError::Transport(self.redact(e.without_url().to_string())))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| EmbedError::Transport(self.redact(e.without_url().to_string())))?;
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            return Err(EmbedError::Status {
                status: status.as_u16(),
                message: self.redact(text),
            });
        }
        let mut parsed: Response = serde_json::from_slice(&body)
            .map_err(|e| EmbedError::Malformed(self.redact(e.to_string())))?;
        if parsed.data.len() != texts.len() {
            return Err(EmbedError::Malformed(format!(
                "{} embeddings for {} texts",
                parsed.data.len(),
                texts.len()
            )));
        }
        parsed.data.sort_by_key(|d| d.index);
        let dims = parsed.data[0].embedding.len();
        for (i, d) in parsed.data.iter().enumerate() {
            if d.index != i {
                return Err(EmbedError::Malformed(format!(
                    "indexes are not 0..{}",
                    texts.len()
                )));
            }
            if d.embedding.is_empty() || d.embedding.len() != dims {
                return Err(EmbedError::Malformed(format!(
                    "embedding {i} has {} dimensions, the first has {dims}",
                    d.embedding.len()
                )));
            }
            if d.embedding.iter().any(|x| !x.is_finite()) {
                return Err(EmbedError::Malformed(format!(
                    "embedding {i} is not finite"
                )));
            }
        }
        Ok(parsed
            .data
            .into_iter()
            .map(|d| normalize(d.embedding))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jarvis_testkit::fakes::embeddings::FakeEmbeddings;

    fn config(base_url: String, key: &str) -> EmbeddingConfig {
        EmbeddingConfig {
            base_url,
            api_key: Some(key.into()),
            model: "fake-embed".into(),
            timeout_ms: 5_000,
            batch: 8,
        }
    }

    #[tokio::test]
    async fn embeds_through_the_real_wire_format() {
        let fake = FakeEmbeddings::start("sk-secret-1").await;
        let e = OpenAiEmbedder::new(&config(fake.base_url(), "sk-secret-1")).unwrap();
        let texts = vec!["my dog Rex".to_string(), "SOL to the moon".to_string()];
        let v = e.embed(&texts).await.unwrap();
        assert_eq!(v.len(), 2);
        let norm: f32 = v[0].iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        // Deterministic: the same text gives the same vector.
        assert_eq!(e.embed(&texts[..1]).await.unwrap()[0], v[0]);
        let seen = fake.requests();
        assert_eq!(seen[0].model, "fake-embed");
        assert_eq!(seen[0].input, texts);
    }

    #[tokio::test]
    async fn errors_name_the_status_and_never_the_key() {
        let fake = FakeEmbeddings::start("sk-right").await;
        let e = OpenAiEmbedder::new(&config(fake.base_url(), "sk-wrong-and-secret")).unwrap();
        let err = e.embed(&["x".to_string()]).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, EmbedError::Status { status: 401, .. }),
            "{text}"
        );
        // The fake echoes the key it was given, as some providers do.
        assert!(!text.contains("sk-wrong-and-secret"), "{text}");
        assert!(!format!("{e:?}").contains("secret"));
        let c = config(fake.base_url(), "sk-wrong-and-secret");
        assert!(!format!("{c:?}").contains("secret"));
        let down = OpenAiEmbedder::new(&config("http://127.0.0.1:9".into(), "k")).unwrap();
        assert!(matches!(
            down.embed(&["x".to_string()]).await,
            Err(EmbedError::Transport(_))
        ));
    }

    #[test]
    fn config_is_validated() {
        let mut c = config("ftp://x".into(), "k");
        assert!(c.validate().unwrap_err().contains("http or https"));
        c.base_url = "http://x/v1".into();
        assert!(c.validate().is_ok());
        c.batch = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .contains("memory.embeddings.batch = 0"));
    }
}
