//! The execution agent's on-chain venue: Jupiter (quotes and swap transactions) and Solana JSON-RPC
//! (send and confirm). The paper venue lives in the trading pipeline (`crate::trading`).
//!
//! # Layout
//! - [`config`]: the `[venue]` section.
//! - [`tokens`]: token symbols to mints and decimals; exact conversion to and from smallest units.
//! - [`client`]: Jupiter's Swap API v1 client (`/swap/v1/quote`, `/swap/v1/swap`).
//! - [`gate`]: the pre-sign gate (price impact, slippage, quote age, priority fee, quote mismatch).
//! - [`wallet`]: the keypair file, redacted everywhere, and the checks before signing a swap.
//! - [`chain`]: Solana JSON-RPC: send, confirm by polling, read balance changes.
//! - [`jupiter`]: the venue: prepare (quote → gate → swap → sign), send and confirm, recover after a restart.
//! - [`agent`]: [`JupiterExecution`], the consumer of `TradeApproved` that drives an order to its end.

pub mod agent;
pub mod chain;
pub mod client;
pub mod config;
pub mod gate;
pub mod jupiter;
pub mod tokens;
pub mod wallet;

#[cfg(test)]
mod tests;

use std::sync::Mutex;

use chrono::{DateTime, Utc};

pub use agent::JupiterExecution;
pub use config::{VenueConfig, VenueKind};
pub use gate::GateLimits;
pub use jupiter::{JupiterSettings, JupiterVenue};

/// Where the venue reads the time (quote age, live fills). Injected so tests can move it.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that returns a set time, advanced by a fixed step at every reading (tests).
#[derive(Debug)]
pub struct SteppingClock {
    now: Mutex<DateTime<Utc>>,
    step: chrono::Duration,
}

impl SteppingClock {
    /// Starts at `start`; each reading moves it by `step`.
    pub fn new(start: DateTime<Utc>, step: chrono::Duration) -> Self {
        Self {
            now: Mutex::new(start),
            step,
        }
    }
}

impl Clock for SteppingClock {
    fn now(&self) -> DateTime<Utc> {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        let t = *now;
        *now = t + self.step;
        t
    }
}
