//! Fakes of third-party HTTP APIs that tests cannot reach: small axum servers on `127.0.0.1` port 0 that
//! speak the real wire format, driven by the real client code.
//!
//! - [`embeddings`]: an OpenAI-compatible `POST /v1/embeddings` with deterministic vectors.

pub mod embeddings;
