//! Fakes of third-party HTTP APIs, each a small axum server on 127.0.0.1 port 0 speaking the real wire
//! format, driven in tests by the real client crates.
//!
//! - [`jupiter`]: Jupiter's Swap API v1 (quote, swap) and Price API v3.
//! - [`solana_rpc`]: a Solana JSON-RPC node (send, statuses, block height, transactions).

pub mod jupiter;
pub mod solana_rpc;
