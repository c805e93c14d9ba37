//! Jarvis's agents: each consumes events, decides, and commands its own aggregates.
//!
//! # Layout
//! - [`relay`]: the outbox relay, which publishes every stored event to JetStream in the store's gap-safe
//!   order, exactly once, with leader election by advisory lock.
//! - [`llm`]: the LLM router (routing, fallback, budgets, recording) and the `jarvis-llm` service.
//! - [`risk`]: the risk agent: the risk book's halt, resume and status as the micro service `jarvis-risk`.
//! - [`trading`]: the trading pipeline: for each closed candle, execution → settlement → treasury → risk →
//!   execution, each step an agent's command on its own aggregate.
//! - [`treasury`]: strategies (a trait, and the default rebalancer with momentum and sentiment tilts).
//! - [`sentiment`]: the sentiment agent: the offline classifier and the LLM scorer behind one trait, token
//!   extraction, and the consumer that scores `TweetReceived` into `SentimentScored`.
//! - [`orders`]: the manual order desk: `/buy` and `/sell` proposals, risk-checked, confirmed by their requester,
//!   as the micro service `jarvis-trading`.
//! - [`telegram`]: the Telegram agent: commands, alerts, authorisation, over teloxide's Bot API client.
//! - [`runtime`]: what agents share (mapping command failures onto retry or dead-letter).
//! - [`memory`]: the memory agent: chat events → `MemoryStored`, the `memories` read model, recall and forget
//!   as the micro service `jarvis-memory`.
//! - [`execution`]: the Jupiter venue (quote, pre-sign gate, sign, send and confirm on Solana) and its agent,
//!   [`execution::JupiterExecution`].
//! - [`market`]: the market agent: candle files ([`market::candle_file`]) and their ingestion into
//!   `MarketFeed` aggregates ([`market::ingest`]).
//! - [`x`]: the X agent: the API v2 client, the mentions/search poller (`TweetReceived`), and the outbox of
//!   drafts and posts with the micro service `jarvis-x`.

pub mod execution;
pub mod ledger;
pub mod llm;
pub mod market;
pub mod memory;
pub mod orders;
pub mod relay;
pub mod risk;
pub mod runtime;
pub mod sentiment;
pub mod telegram;
pub mod trading;
pub mod treasury;
pub mod x;
