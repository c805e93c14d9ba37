//! Jarvis's agents: each consumes events, decides, and commands its own aggregates.
//!
//! # Layout
//! - [`relay`]: the outbox relay, which publishes every stored event to JetStream in the store's gap-safe
//!   order, exactly once, with leader election by advisory lock.
//! - [`market`]: the market agent: candle files ([`market::candle_file`]) and their ingestion into
//!   `MarketFeed` aggregates ([`market::ingest`]).

pub mod market;
pub mod relay;
