//! `[venue]`: where approved orders are executed (the paper venue, or Jupiter on Solana), and the
//! Jupiter venue's limits. Deserialized by the CLI's configuration; unknown keys are errors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::Deserialize;

use super::gate::GateLimits;
use super::jupiter::JupiterSettings;
use super::tokens::{Token, TokenBook};

/// Which venue executes approved orders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VenueKind {
    /// The paper venue inside the trading pipeline (the default).
    #[default]
    Paper,
    /// Jupiter swaps on Solana (a dry run unless live).
    Jupiter,
}

/// `[venue]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VenueConfig {
    /// `paper` or `jupiter`.
    #[serde(default)]
    pub kind: VenueKind,
    /// Send real transactions (also needs `jarvis up --live` and a readable `keypair_path`).
    #[serde(default)]
    pub live: bool,
    /// Jupiter's base URL (Swap API v1 and Price API v3).
    #[serde(default = "default_jupiter_url")]
    pub jupiter_url: String,
    /// Solana JSON-RPC URL.
    #[serde(default = "default_rpc_url")]
    pub rpc_url: String,
    /// Solana CLI keypair file (live only). Never logged.
    #[serde(default)]
    pub keypair_path: Option<PathBuf>,
    /// Most price impact, in basis points.
    #[serde(default = "default_max_price_impact_bps")]
    pub max_price_impact_bps: Decimal,
    /// Slippage asked for and most accepted, in basis points.
    #[serde(default = "default_max_slippage_bps")]
    pub max_slippage_bps: u16,
    /// Oldest quote signed, in milliseconds.
    #[serde(default = "default_max_quote_age_ms")]
    pub max_quote_age_ms: u64,
    /// Most priority fee, in lamports.
    #[serde(default = "default_max_priority_fee_lamports")]
    pub max_priority_fee_lamports: u64,
    /// How long to wait for a confirmation, in seconds.
    #[serde(default = "default_confirm_timeout_secs")]
    pub confirm_timeout_secs: u64,
    /// How often to poll a signature's status, in milliseconds.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Timeout of each HTTP request to Jupiter or the RPC node, in milliseconds.
    #[serde(default = "default_http_timeout_ms")]
    pub http_timeout_ms: u64,
    /// Extra tokens, or other mints for SOL, USDC, USDT: `SYMBOL = { mint = "...", decimals = N }`.
    #[serde(default)]
    pub tokens: BTreeMap<String, Token>,
}

fn default_jupiter_url() -> String {
    "https://lite-api.jup.ag".into()
}
fn default_rpc_url() -> String {
    "https://api.mainnet-beta.solana.com".into()
}
fn default_max_price_impact_bps() -> Decimal {
    GateLimits::default().max_price_impact_bps
}
fn default_max_slippage_bps() -> u16 {
    GateLimits::default().max_slippage_bps
}
fn default_max_quote_age_ms() -> u64 {
    GateLimits::default().max_quote_age_ms
}
fn default_max_priority_fee_lamports() -> u64 {
    GateLimits::default().max_priority_fee_lamports
}
fn default_confirm_timeout_secs() -> u64 {
    60
}
fn default_poll_interval_ms() -> u64 {
    500
}
fn default_http_timeout_ms() -> u64 {
    10_000
}

impl Default for VenueConfig {
    fn default() -> Self {
        Self {
            kind: VenueKind::Paper,
            live: false,
            jupiter_url: default_jupiter_url(),
            rpc_url: default_rpc_url(),
            keypair_path: None,
            max_price_impact_bps: default_max_price_impact_bps(),
            max_slippage_bps: default_max_slippage_bps(),
            max_quote_age_ms: default_max_quote_age_ms(),
            max_priority_fee_lamports: default_max_priority_fee_lamports(),
            confirm_timeout_secs: default_confirm_timeout_secs(),
            poll_interval_ms: default_poll_interval_ms(),
            http_timeout_ms: default_http_timeout_ms(),
            tokens: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for VenueConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VenueConfig")
            .field("kind", &self.kind)
            .field("live", &self.live)
            .field("jupiter_url", &self.jupiter_url)
            .field("rpc_url", &self.rpc_url)
            .field(
                "keypair_path",
                &self.keypair_path.as_ref().map(|_| "<set, not shown>"),
            )
            .field("max_price_impact_bps", &self.max_price_impact_bps)
            .field("max_slippage_bps", &self.max_slippage_bps)
            .field("max_quote_age_ms", &self.max_quote_age_ms)
            .field("max_priority_fee_lamports", &self.max_priority_fee_lamports)
            .field("confirm_timeout_secs", &self.confirm_timeout_secs)
            .finish_non_exhaustive()
    }
}

impl VenueConfig {
    /// The gate's limits.
    pub fn limits(&self) -> GateLimits {
        GateLimits {
            max_price_impact_bps: self.max_price_impact_bps,
            max_slippage_bps: self.max_slippage_bps,
            max_quote_age_ms: self.max_quote_age_ms,
            max_priority_fee_lamports: self.max_priority_fee_lamports,
        }
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// `venue.<key> = <value>: <what is allowed>`.
    pub fn validate(&self) -> Result<(), String> {
        self.limits().validate().map_err(|e| format!("venue.{e}"))?;
        for (key, value) in [
            ("confirm_timeout_secs", self.confirm_timeout_secs),
            ("poll_interval_ms", self.poll_interval_ms),
            ("http_timeout_ms", self.http_timeout_ms),
        ] {
            if value == 0 {
                return Err(format!("venue.{key} = 0: must be positive"));
            }
        }
        for (key, url) in [
            ("jupiter_url", &self.jupiter_url),
            ("rpc_url", &self.rpc_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("venue.{key} = {url:?}: must be an http(s) URL"));
            }
        }
        TokenBook::with(&self.tokens).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The Jupiter venue's settings, live or not. Does not check the keypair (the venue loads it).
    ///
    /// # Errors
    /// A bad `[venue.tokens]` entry.
    pub fn jupiter_settings(&self, live: bool) -> Result<JupiterSettings, String> {
        Ok(JupiterSettings {
            jupiter_url: self.jupiter_url.clone(),
            rpc_url: self.rpc_url.clone(),
            live,
            keypair_path: self.keypair_path.clone(),
            limits: self.limits(),
            confirm_timeout: Duration::from_secs(self.confirm_timeout_secs),
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            http_timeout: Duration::from_millis(self.http_timeout_ms),
            tokens: TokenBook::with(&self.tokens).map_err(|e| e.to_string())?,
        })
    }

    /// Whether to trade live, from the flag and the configuration: live needs `--live` and `venue.live`
    /// and `venue.kind = "jupiter"` and a keypair path. `venue.live` without the flag is a dry run.
    ///
    /// # Errors
    /// What is missing for `--live`, in one sentence.
    pub fn live_mode(&self, flag: bool) -> Result<bool, String> {
        if !flag {
            return Ok(false);
        }
        if self.kind != VenueKind::Jupiter {
            return Err(
                "--live needs venue.kind = \"jupiter\" (the paper venue is never live)".into(),
            );
        }
        if !self.live {
            return Err(
                "--live needs venue.live = true in the configuration as well (both must agree)"
                    .into(),
            );
        }
        let Some(path) = &self.keypair_path else {
            return Err("--live needs venue.keypair_path (a Solana CLI keypair file)".into());
        };
        super::wallet::Wallet::load(path).map_err(|e| e.to_string())?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_needs_the_flag_the_config_and_a_readable_keypair() {
        let mut c = VenueConfig::default();
        assert_eq!(c.live_mode(false), Ok(false));
        assert!(c.live_mode(true).unwrap_err().contains("venue.kind"));
        c.kind = VenueKind::Jupiter;
        assert!(c.live_mode(true).unwrap_err().contains("venue.live = true"));
        c.live = true;
        assert_eq!(c.live_mode(false), Ok(false));
        assert!(c.live_mode(true).unwrap_err().contains("keypair_path"));
        c.keypair_path = Some("/nonexistent/key.json".into());
        let err = c.live_mode(true).unwrap_err();
        assert!(err.contains("cannot read it"), "{err}");
        let dir = tempfile_dir();
        let path = dir.join("key.json");
        let wallet = super::super::wallet::Wallet::generate();
        std::fs::write(&path, wallet.to_json()).unwrap();
        c.keypair_path = Some(path.clone());
        assert_eq!(c.live_mode(true), Ok(true));
        assert!(!format!("{c:?}").contains("key.json"));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("jarvis-venue-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn bad_values_are_named() {
        let c = VenueConfig {
            max_slippage_bps: 0,
            ..VenueConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err(),
            "venue.max_slippage_bps = 0: must be 1 to 10000"
        );
        let c = VenueConfig {
            rpc_url: "api.mainnet".into(),
            ..VenueConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err(),
            "venue.rpc_url = \"api.mainnet\": must be an http(s) URL"
        );
    }
}
