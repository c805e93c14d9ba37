//! Jarvis's domain: aggregates, commands, events and value types. Pure: no I/O, no async runtime.
//!
//! # Layout
//! - [`values`]: checked newtypes (`Symbol`) and the [`Candle`] value.
//! - [`market`]: the `MarketFeed` aggregate (one per symbol and UTC day) and its `CandleClosed` event.
//! - [`trading`]: the `Order`, `Portfolio` and `RiskBook` aggregates (see `docs/adr/0002-trading-domain.md`).
//! - [`chat`]: the `Conversation` aggregate (one per chat): `ChatMessageReceived`, `ChatReplySent`, and [`chat::Trust`].
//! - [`memory`]: the `UserMemory` aggregate (one per user): `MemoryStored`, `MemoryForgotten`.
//! - [`llm`]: the `LlmLedger` aggregate (one per UTC day): LLM calls, their cost and the budgets.
//! - [`social`]: the `XFeed` aggregate (tweets of one UTC day) and its `TweetReceived` event.
//! - [`sentiment`]: the `TokenSentiment` aggregate (scores of one token on one day) and `SentimentScored`.
//! - [`x_account`]: the `XAccount` aggregate (context `x`): poll cursors (`XCursorAdvanced`), drafts,
//!   approvals and posts (`TweetDrafted` ... `TweetPosted`).
//! - [`telegram`]: the `TelegramBot` aggregate: the Bot API offset and refused attempts.
//! - [`event`]: what every stored event carries ([`EventMetadata`], [`RecordedEvent`]), the CloudEvents type
//!   naming (`jarvis.<context>.<EventType>.v<N>`), and [`AnyEvent`], the registry that decodes any event on the bus.
//! - [`text`]: [`text::Text`] and [`text::Json`], a rationale's or a verdict's words written when first read.
//! - [`schema`]: JSON Schemas of every event type, written to `schemas/` and checked for drift by a test.

pub mod backtest;
pub mod chat;
pub mod event;
pub mod llm;
pub mod market;
pub mod memory;
pub mod schema;
pub mod sentiment;
pub mod social;
pub mod telegram;
pub mod text;
pub mod trading;
pub mod values;
pub mod x_account;

pub use event::{AnyEvent, DecodeError, EventMetadata, EventRef, JarvisAggregate, RecordedEvent};
pub use values::{Candle, DomainError, Symbol};
