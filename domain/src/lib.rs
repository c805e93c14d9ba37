//! Jarvis's domain: aggregates, commands, events and value types. Pure: no I/O, no async runtime.
//!
//! # Layout
//! - [`values`]: checked newtypes (`Symbol`) and the [`Candle`] value.
//! - [`market`]: the `MarketFeed` aggregate (one per symbol and UTC day) and its `CandleClosed` event.
//! - [`trading`]: the `Order`, `Portfolio` and `RiskBook` aggregates (see `docs/adr/0002-trading-domain.md`).
//! - [`social`]: the `XFeed` aggregate (tweets of one UTC day) and its `TweetReceived` event.
//! - [`sentiment`]: the `TokenSentiment` aggregate (scores of one token on one day) and `SentimentScored`.
//! - [`event`]: what every stored event carries ([`EventMetadata`], [`RecordedEvent`]), the CloudEvents type
//!   naming (`jarvis.<context>.<EventType>.v<N>`), and [`AnyEvent`], the registry that decodes any event on the bus.
//! - [`schema`]: JSON Schemas of every event type, written to `schemas/` and checked for drift by a test.

pub mod event;
pub mod market;
pub mod schema;
pub mod sentiment;
pub mod social;
pub mod trading;
pub mod values;

pub use event::{AnyEvent, DecodeError, EventMetadata, JarvisAggregate, RecordedEvent};
pub use values::{Candle, DomainError, Symbol};
