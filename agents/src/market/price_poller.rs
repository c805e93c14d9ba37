//! The live price poller: every N seconds, `GET {base}/price/v3?ids=<mints>` (Jupiter's Price API v3,
//! `https://lite-api.jup.ag` by default) and one `PriceObserved` per configured symbol.
//!
//! Jupiter prices every token in USD (`usdPrice`); the price of `SOL/USDC` is SOL's USD price over USDC's.
//! Numbers are read from the JSON text into `Decimal` (never computed in `f64`).
//!
//! It never hangs and never floods: every request has a timeout, and after an error the next poll waits
//! twice as long as the last (up to a cap), or as long as a 429's `Retry-After` says, then returns to the
//! normal interval after a success.

use std::future::Future;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use jarvis_domain::market::{PriceFeed, PriceFeedCommand, PriceFeedId, PriceObserved};
use jarvis_domain::{EventMetadata, Symbol};
use jarvis_store::{execute_with_retry, EventStore};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::execution::client::{json_of, JupiterError};
use crate::execution::tokens::TokenBook;
use crate::execution::Clock;

/// The source named in each observation.
pub const SOURCE: &str = "jupiter-price-v3";

/// What the poller polls.
#[derive(Debug, Clone)]
pub struct PollerSettings {
    /// The Price API's base URL.
    pub base_url: String,
    /// The symbols to observe, e.g. `SOL/USDC`.
    pub symbols: Vec<Symbol>,
    /// Time between polls.
    pub interval: Duration,
    /// The longest wait after errors.
    pub max_backoff: Duration,
    /// Timeout of one request.
    pub http_timeout: Duration,
    /// Token symbols to mints.
    pub tokens: TokenBook,
}

/// `[market]`: the live price poller (off by default).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketConfig {
    /// Poll Jupiter's Price API and append `PriceObserved`.
    #[serde(default)]
    pub poll_prices: bool,
    /// The Price API's base URL.
    #[serde(default = "default_price_url")]
    pub price_url: String,
    /// The symbols to observe (their tokens must be known to `[venue.tokens]` or the defaults).
    #[serde(default = "default_poll_symbols")]
    pub poll_symbols: Vec<String>,
    /// Seconds between polls.
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    /// The longest wait after errors, in seconds.
    #[serde(default = "default_max_backoff_secs")]
    pub max_backoff_secs: u64,
}

fn default_price_url() -> String {
    "https://lite-api.jup.ag".into()
}
fn default_poll_symbols() -> Vec<String> {
    vec!["SOL/USDC".into()]
}
fn default_poll_interval_secs() -> u64 {
    10
}
fn default_max_backoff_secs() -> u64 {
    300
}

impl Default for MarketConfig {
    fn default() -> Self {
        Self {
            poll_prices: false,
            price_url: default_price_url(),
            poll_symbols: default_poll_symbols(),
            poll_interval_secs: default_poll_interval_secs(),
            max_backoff_secs: default_max_backoff_secs(),
        }
    }
}

impl MarketConfig {
    /// The poller's settings.
    ///
    /// # Errors
    /// `market.<key> = <value>: <what is wrong>`.
    pub fn settings(&self, tokens: TokenBook) -> Result<PollerSettings, String> {
        if self.poll_interval_secs == 0 {
            return Err("market.poll_interval_secs = 0: must be positive".into());
        }
        if !(self.price_url.starts_with("http://") || self.price_url.starts_with("https://")) {
            return Err(format!(
                "market.price_url = {:?}: must be an http(s) URL",
                self.price_url
            ));
        }
        let mut symbols = Vec::new();
        for text in &self.poll_symbols {
            let symbol = Symbol::new_checked(text)
                .map_err(|e| format!("market.poll_symbols: {text:?}: {e}"))?;
            tokens
                .pair(symbol.as_str())
                .map_err(|e| format!("market.poll_symbols: {e}"))?;
            symbols.push(symbol);
        }
        Ok(PollerSettings {
            base_url: self.price_url.clone(),
            symbols,
            interval: Duration::from_secs(self.poll_interval_secs),
            max_backoff: Duration::from_secs(self.max_backoff_secs.max(self.poll_interval_secs)),
            http_timeout: Duration::from_secs(10),
            tokens,
        })
    }
}

/// Why one poll wrote nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// The API failed or answered something unexpected.
    #[error(transparent)]
    Api(#[from] JupiterError),
    /// A symbol with a token the book does not know.
    #[error("{0}")]
    Config(String),
    /// The store refused or failed.
    #[error("store: {0}")]
    Store(String),
}

/// The poller.
pub struct PricePoller {
    http: reqwest::Client,
    store: EventStore,
    settings: PollerSettings,
    clock: Arc<dyn Clock>,
    /// `(symbol, base mint, quote mint)`.
    pairs: Vec<(Symbol, String, String)>,
}

/// A JSON number (or numeric string) as a `Decimal`, from its text.
fn decimal_of(value: &Value) -> Option<Decimal> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()
}

impl PricePoller {
    /// A poller writing to `store`.
    ///
    /// # Errors
    /// [`PollError::Config`] for a symbol with an unknown token; [`PollError::Api`] when the HTTP client
    /// cannot start.
    pub fn new(
        store: EventStore,
        settings: PollerSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, PollError> {
        let mut pairs = Vec::new();
        for symbol in &settings.symbols {
            let (base, quote) = settings
                .tokens
                .pair(symbol.as_str())
                .map_err(|e| PollError::Config(format!("[market] poll_symbols: {e}")))?;
            pairs.push((symbol.clone(), base.mint.clone(), quote.mint.clone()));
        }
        let http = reqwest::Client::builder()
            .timeout(settings.http_timeout)
            .connect_timeout(settings.http_timeout)
            .user_agent(concat!("jarvis/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                PollError::Api(JupiterError::Transport {
                    endpoint: "client",
                    message: e.to_string(),
                })
            })?;
        Ok(Self {
            http,
            store,
            settings,
            clock,
            pairs,
        })
    }

    /// One poll: fetches the prices and appends one observation per symbol priced. Returns how many.
    ///
    /// # Errors
    /// [`PollError`]; nothing is written for a failed request.
    pub async fn poll_once(&self) -> Result<usize, PollError> {
        const ENDPOINT: &str = "GET /price/v3";
        let mut mints: Vec<&str> = Vec::new();
        for (_, base, quote) in &self.pairs {
            for mint in [base.as_str(), quote.as_str()] {
                if !mints.contains(&mint) {
                    mints.push(mint);
                }
            }
        }
        let url = format!("{}/price/v3", self.settings.base_url.trim_end_matches('/'));
        let ids = mints.join(",");
        let body = json_of(ENDPOINT, self.http.get(url).query(&[("ids", ids.as_str())])).await?;
        let observed_at = self.clock.now();
        let usd = |mint: &str| -> Option<Decimal> {
            decimal_of(body.get(mint)?.get("usdPrice")?).filter(|p| *p > Decimal::ZERO)
        };
        let metadata = EventMetadata::root("market");
        let cqrs = self.store.cqrs::<PriceFeed>(());
        let mut written = 0;
        for (symbol, base, quote) in &self.pairs {
            let (Some(base_usd), Some(quote_usd)) = (usd(base), usd(quote)) else {
                tracing::warn!(%symbol, "no price for one of its tokens in this answer");
                continue;
            };
            let Some(price) = base_usd.checked_div(quote_usd) else {
                continue;
            };
            let observation = PriceObserved {
                symbol: symbol.clone(),
                price: price.round_dp(12).normalize(),
                observed_at,
                source: SOURCE.into(),
            };
            let feed = PriceFeedId::of(&observation).to_string();
            execute_with_retry(
                &cqrs,
                &feed,
                PriceFeedCommand::Record(observation),
                &metadata,
                5,
            )
            .await
            .map_err(|e| PollError::Store(e.to_string()))?;
            written += 1;
        }
        Ok(written)
    }

    /// Polls until `shutdown` completes, backing off after errors.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let interval = self.settings.interval;
        let mut delay = Duration::ZERO;
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = match self.poll_once().await {
                Ok(n) => {
                    tracing::debug!(observations = n, "prices polled");
                    interval
                }
                Err(e) => {
                    let wait = next_delay(&e, delay, interval, self.settings.max_backoff);
                    tracing::warn!(cause = %e, retry_in_ms = wait.as_millis() as u64, "price poll failed");
                    wait
                }
            };
        }
    }
}

/// The wait after a failed poll: the `Retry-After` of a 429 if longer, else double the last wait (at least
/// the interval), capped at `max`.
pub fn next_delay(
    error: &PollError,
    last: Duration,
    interval: Duration,
    max: Duration,
) -> Duration {
    let doubled = last.max(interval).saturating_mul(2);
    let asked = match error {
        PollError::Api(JupiterError::RateLimited {
            retry_after: Some(s),
            ..
        }) => Duration::from_secs(*s),
        _ => Duration::ZERO,
    };
    doubled.max(asked).min(max.max(interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_from_their_text() {
        assert_eq!(
            decimal_of(&serde_json::json!(147.48)),
            Some(Decimal::new(14748, 2))
        );
        assert_eq!(
            decimal_of(&serde_json::json!("0.9999")),
            Some(Decimal::new(9999, 4))
        );
        assert_eq!(
            decimal_of(&serde_json::json!(1e-7)),
            Some(Decimal::new(1, 7))
        );
        assert_eq!(decimal_of(&serde_json::json!(null)), None);
    }

    #[test]
    fn backoff_doubles_honours_retry_after_and_is_capped() {
        let s = Duration::from_secs;
        let other = PollError::Store("x".into());
        assert_eq!(next_delay(&other, s(0), s(5), s(60)), s(10));
        assert_eq!(next_delay(&other, s(40), s(5), s(60)), s(60));
        let limited = PollError::Api(JupiterError::RateLimited {
            endpoint: "GET /price/v3",
            retry_after: Some(30),
        });
        assert_eq!(next_delay(&limited, s(5), s(5), s(60)), s(30));
        assert_eq!(next_delay(&limited, s(5), s(5), s(20)), s(20));
    }
}
