//! The treasury agent: for each closed candle, its strategies decide which trades to propose.
//!
//! A [`Strategy`] is pure: it sees the candle that just closed, the recent candles of its symbol, the
//! portfolio as it is known, the symbols the treasury trades and the latest sentiment reading of the
//! symbol's base token ([`StrategyInput`]), and returns the trades it wants ([`Proposal`]), each with a
//! machine-readable [`Rationale`](jarvis_domain::trading::Rationale). It reads no clock and does no I/O:
//! every time it uses is the candle's `close_time`, so replaying the same events proposes the same trades.
//!
//! The default strategy is the [`Rebalancer`] (`rebalance`): target weights (explicit, or equal over the
//! traded symbols), tilted by momentum and sentiment, traded back when the drift leaves a band. Its
//! settings are [`StrategyConfig`], the `[treasury]` section of `jarvis.toml`. Users add their own
//! strategies by implementing [`Strategy`], without touching the agents.
//!
//! The agent's step runs inside the trading pipeline (`crate::trading`), which gives the strategy each closed
//! candle; `TradingPipeline::with_strategy` takes a strategy of your own. Sentiment readings are not fed yet:
//! no sentiment agent exists, so `sentiment` is `None` and the sentiment tilt is zero.

pub mod strategy;

pub use strategy::{
    Proposal, Rebalancer, SentimentReading, Strategy, StrategyConfig, StrategyError, StrategyInput,
    REBALANCE, RULE_DRIFT_ABOVE_BAND,
};
