//! Configuration: `jarvis.toml` (from `--config`, `JARVIS_CONFIG`, or `./jarvis.toml` if present), then
//! `JARVIS_<SECTION>__<KEY>` environment variables, then the short forms `JARVIS_DATABASE_URL` and
//! `JARVIS_NATS_URL`. Unknown keys are errors that name the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[database]`
    #[serde(default)]
    pub database: DatabaseConfig,
    /// `[nats]`
    #[serde(default)]
    pub nats: NatsConfig,
    /// `[relay]`
    #[serde(default)]
    pub relay: RelayConfig,
    /// `[portfolio]`
    #[serde(default)]
    pub portfolio: PortfolioConfig,
    /// `[treasury]`: the strategy.
    #[serde(default)]
    pub treasury: jarvis_agents::treasury::StrategyConfig,
    /// `[risk]`: the risk limits.
    #[serde(default)]
    pub risk: jarvis_domain::trading::RiskLimits,
    /// `[paper]`: the paper venue's fill model.
    #[serde(default)]
    pub paper: jarvis_domain::trading::paper::PaperConfig,
    /// `[memory]`: the memory agent and its embedding provider.
    #[serde(default)]
    pub memory: jarvis_agents::memory::MemoryConfig,
    /// `[llm]`: the LLM router (off without providers).
    #[serde(default)]
    pub llm: jarvis_agents::llm::LlmConfig,
    /// `[venue]`: which venue executes approved orders (paper or Jupiter), and Jupiter's limits.
    #[serde(default)]
    pub venue: jarvis_agents::execution::VenueConfig,
    /// `[market]`: the live price poller.
    #[serde(default)]
    pub market: jarvis_agents::market::price_poller::MarketConfig,
    /// `[sentiment]`: the sentiment agent.
    #[serde(default)]
    pub sentiment: crate::sentiment::SentimentConfig,
    /// `[x]`: the X agent (off without a bearer token).
    #[serde(default)]
    pub x: jarvis_agents::x::XConfig,
    /// `[telegram]`: the Telegram agent (off without a token).
    #[serde(default)]
    pub telegram: jarvis_agents::telegram::TelegramConfig,
    /// `[gateway]`: the HTTP gateway.
    #[serde(default)]
    pub gateway: jarvis_gateway::GatewayConfig,
    /// `[health]`: heartbeats.
    #[serde(default)]
    pub health: HealthConfig,
}

/// `[health]`: the heartbeats every agent publishes on `jarvis.health.<agent>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// How often each agent publishes its heartbeat, in ms (100 to 60000). An instance is down after three
    /// intervals without one.
    #[serde(default = "default_health_interval_ms")]
    pub interval_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval_ms: default_health_interval_ms(),
        }
    }
}

impl HealthConfig {
    /// The heartbeat interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Checks `interval_ms` against the allowed range.
    ///
    /// # Errors
    /// The key, its value and the range.
    pub fn validate(&self) -> anyhow::Result<()> {
        let (min, max) = (
            jarvis_bus::health::MIN_INTERVAL.as_millis() as u64,
            jarvis_bus::health::MAX_INTERVAL.as_millis() as u64,
        );
        anyhow::ensure!(
            (min..=max).contains(&self.interval_ms),
            "health.interval_ms = {}: must be {min} to {max} (ms)",
            self.interval_ms
        );
        Ok(())
    }
}

fn default_health_interval_ms() -> u64 {
    jarvis_bus::health::DEFAULT_INTERVAL.as_millis() as u64
}

/// `[portfolio]`: what the paper portfolio opens with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortfolioConfig {
    /// The quote asset: only symbols quoted in it are traded.
    #[serde(default = "default_quote_asset")]
    pub quote_asset: String,
    /// Cash at the start.
    #[serde(default = "default_initial_cash")]
    pub initial_cash: rust_decimal::Decimal,
}

impl Default for PortfolioConfig {
    fn default() -> Self {
        Self {
            quote_asset: default_quote_asset(),
            initial_cash: default_initial_cash(),
        }
    }
}

fn default_quote_asset() -> String {
    "USDT".into()
}

fn default_initial_cash() -> rust_decimal::Decimal {
    rust_decimal::Decimal::from(10_000)
}

/// `[database]`: the event store.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://...`; when unset, `jarvis up` runs a private cluster and other commands use the one
    /// `jarvis up` started, or `postgres://postgres@127.0.0.1:5432/jarvis`.
    pub url: Option<String>,
    /// Pool size.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: default_max_connections(),
        }
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.url.as_deref().map(jarvis_store::redact_url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

fn default_max_connections() -> u32 {
    10
}

/// `[nats]`: the bus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://...`; when unset, like `database.url`.
    pub url: Option<String>,
    /// How long `JARVIS_EVENTS` keeps events, in seconds (0: forever; the store keeps them regardless).
    #[serde(default)]
    pub max_age_secs: u64,
    /// JetStream duplicate window, in seconds (at least 120).
    #[serde(default = "default_duplicate_window")]
    pub duplicate_window_secs: u64,
    /// Stream replicas (1 on one server, 3 on a cluster).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_age_secs: 0,
            duplicate_window_secs: default_duplicate_window(),
            replicas: default_replicas(),
        }
    }
}

fn default_duplicate_window() -> u64 {
    120
}

fn default_replicas() -> usize {
    1
}

/// `[relay]`: the outbox relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Events read from the store per batch.
    #[serde(default = "default_batch")]
    pub batch: i64,
    /// Publishes awaiting their ack at once.
    #[serde(default = "default_window")]
    pub window: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: default_batch(),
            window: default_window(),
        }
    }
}

fn default_batch() -> i64 {
    1_000
}

fn default_window() -> usize {
    256
}

impl Config {
    /// Loads the configuration: file, then environment.
    ///
    /// # Errors
    /// A missing explicit file, a syntax error, an unknown key or a bad value, named with its source.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<Self> {
        Self::load_with(explicit, &[])
    }

    /// Loads the configuration with `overrides` (`section.key`, value) on top of the file and the
    /// environment, e.g. one point of a backtest sweep; they are checked like any other key.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_with(
        explicit: Option<&Path>,
        overrides: &[(String, figment::value::Value)],
    ) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        let path: Option<PathBuf> = match explicit {
            Some(p) => {
                anyhow::ensure!(p.exists(), "config file {} does not exist", p.display());
                Some(p.to_path_buf())
            }
            None => Some(PathBuf::from("jarvis.toml")).filter(|p| p.exists()),
        };
        if let Some(path) = &path {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment
            .merge(
                Env::prefixed("JARVIS_")
                    .filter(|k| k.as_str().contains("__"))
                    .split("__"),
            )
            .merge(
                Env::raw()
                    .only(&["JARVIS_DATABASE_URL"])
                    .map(|_| "database.url".into()),
            )
            .merge(
                Env::raw()
                    .only(&["JARVIS_NATS_URL"])
                    .map(|_| "nats.url".into()),
            );
        for (key, value) in overrides {
            figment = figment.merge(figment::providers::Serialized::default(key, value));
        }
        let config: Self = figment.extract().map_err(|e| {
            let mut text = String::new();
            for err in e {
                text.push_str(&format!("\n  - {err}"));
            }
            anyhow::anyhow!("invalid configuration:{text}")
        })?;
        config.validate().with_context(|| {
            format!(
                "invalid configuration{}",
                path.map(|p| format!(" in {}", p.display()))
                    .unwrap_or_default()
            )
        })?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// The key, its value and the allowed range.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.nats.duplicate_window_secs >= 120,
            "nats.duplicate_window_secs = {}: must be at least 120 (the relay relies on it)",
            self.nats.duplicate_window_secs
        );
        anyhow::ensure!(
            (1..=5).contains(&self.nats.replicas),
            "nats.replicas = {}: must be 1 to 5",
            self.nats.replicas
        );
        anyhow::ensure!(
            self.relay.batch > 0,
            "relay.batch = {}: must be positive",
            self.relay.batch
        );
        anyhow::ensure!(
            (1..=jarvis_agents::relay::MAX_WINDOW).contains(&self.relay.window),
            "relay.window = {}: must be 1 to {} (the NATS client's limit of unacked publishes)",
            self.relay.window,
            jarvis_agents::relay::MAX_WINDOW
        );
        anyhow::ensure!(
            self.database.max_connections > 0,
            "database.max_connections = 0: must be positive"
        );
        anyhow::ensure!(
            self.portfolio.initial_cash >= rust_decimal::Decimal::ZERO,
            "portfolio.initial_cash = {}: must not be negative",
            self.portfolio.initial_cash
        );
        self.treasury.validate()?;
        self.risk
            .validate()
            .map_err(|e| anyhow::anyhow!("risk: {e}"))?;
        self.paper
            .validate()
            .map_err(|e| anyhow::anyhow!("paper: {e}"))?;
        self.memory.validate().map_err(|e| anyhow::anyhow!(e))?;
        self.llm.validate().map_err(|e| anyhow::anyhow!(e))?;
        self.venue.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        self.telegram.validate().map_err(|e| anyhow::anyhow!(e))?;
        self.gateway.validate().map_err(|e| anyhow::anyhow!(e))?;
        self.market
            .settings(self.token_book()?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.x.validate().map_err(|e| anyhow::anyhow!(e))?;
        self.health.validate()?;
        Ok(())
    }

    /// The token book: defaults plus `[venue.tokens]`.
    ///
    /// # Errors
    /// A bad `[venue.tokens]` entry.
    pub fn token_book(&self) -> anyhow::Result<jarvis_agents::execution::tokens::TokenBook> {
        jarvis_agents::execution::tokens::TokenBook::with(&self.venue.tokens)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The streams' settings.
    pub fn stream_settings(&self) -> jarvis_bus::StreamSettings {
        jarvis_bus::StreamSettings {
            max_age: Duration::from_secs(self.nats.max_age_secs),
            duplicate_window: Duration::from_secs(self.nats.duplicate_window_secs),
            replicas: self.nats.replicas,
        }
    }

    /// The trading pipeline's settings.
    pub fn trading_settings(&self) -> jarvis_agents::trading::TradingSettings {
        jarvis_agents::trading::TradingSettings {
            quote_asset: self.portfolio.quote_asset.to_ascii_uppercase(),
            initial_cash: self.portfolio.initial_cash,
            strategy: self.treasury.clone(),
            limits: self.risk.clone(),
            paper: self.paper.clone(),
            submit_to_paper: self.venue.kind == jarvis_agents::execution::VenueKind::Paper,
        }
    }

    /// The relay's settings.
    pub fn relay_settings(&self) -> jarvis_agents::relay::RelaySettings {
        jarvis_agents::relay::RelaySettings {
            batch: self.relay.batch,
            window: self.relay.window,
            ..Default::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn file_then_env_with_short_forms() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "jarvis.toml",
                "[database]\nurl = \"postgres://file/db\"\n[nats]\nurl = \"nats://file:4222\"\nreplicas = 1\n",
            )?;
            jail.set_env("JARVIS_NATS_URL", "nats://env:4222");
            jail.set_env("JARVIS_RELAY__WINDOW", "64");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.database.url.as_deref(), Some("postgres://file/db"));
            assert_eq!(c.nats.url.as_deref(), Some("nats://env:4222"));
            assert_eq!(c.relay.window, 64);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        Jail::expect_with(|jail| {
            jail.create_file("jarvis.toml", "[nats]\nurll = \"x\"\n")?;
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("urll"), "{err}");
            jail.create_file("jarvis.toml", "[nats]\nduplicate_window_secs = 5\n")?;
            let err = format!("{:#}", Config::load(None).unwrap_err());
            assert!(err.contains("nats.duplicate_window_secs = 5"), "{err}");
            jail.create_file("jarvis.toml", "")?;
            jail.set_env("JARVIS_RELAY__BATCHH", "5");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("batchh"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_heartbeat_interval_is_configured_and_checked() {
        Jail::expect_with(|jail| {
            jail.create_file("jarvis.toml", "[health]\ninterval_ms = 250\n")?;
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.health.interval(), Duration::from_millis(250));
            jail.set_env("JARVIS_HEALTH__INTERVAL_MS", "1500");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.health.interval_ms, 1500);
            jail.set_env("JARVIS_HEALTH__INTERVAL_MS", "50");
            let err = format!("{:#}", Config::load(None).unwrap_err());
            assert!(
                err.contains("health.interval_ms = 50") && err.contains("100 to 60000"),
                "{err}"
            );
            jail.set_env("JARVIS_HEALTH__INTERVAL_MS", "60001");
            let err = format!("{:#}", Config::load(None).unwrap_err());
            assert!(err.contains("health.interval_ms = 60001"), "{err}");
            jail.clear_env();
            jail.create_file("jarvis.toml", "[health]\ninterval = 5\n")?;
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("interval"), "{err}");
            jail.create_file("jarvis.toml", "")?;
            assert_eq!(
                Config::load(None)
                    .map_err(|e| e.to_string())?
                    .health
                    .interval_ms,
                5000
            );
            Ok(())
        });
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let mut c = Config::default();
        c.database.url = Some("postgres://u:hunter2@h/db".into());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn telegram_from_file_and_env_never_shows_the_token() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "jarvis.toml",
                "[telegram]\napi_url = \"http://127.0.0.1:1\"\nusers = [{ id = 7, role = \"operator\" }]\n",
            )?;
            jail.set_env("JARVIS_TELEGRAM__TOKEN", "123:hunter2");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert!(c.telegram.enabled());
            assert_eq!(c.telegram.users[0].id, 7);
            assert!(!format!("{c:?}").contains("hunter2"));
            jail.create_file("jarvis.toml", "[telegram]\nuserz = []\n")?;
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("userz"), "{err}");
            jail.create_file("jarvis.toml", "[telegram]\npoll_timeout_secs = 99\n")?;
            let err = format!("{:#}", Config::load(None).unwrap_err());
            assert!(err.contains("telegram.poll_timeout_secs = 99"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn telegram_webhook_mode_from_file_and_env_never_shows_the_secret() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "jarvis.toml",
                "[telegram]\nmode = \"webhook\"\nwebhook_url = \"https://bot.example.com/hook\"\n",
            )?;
            jail.set_env("JARVIS_TELEGRAM__TOKEN", "123:hunter2");
            let err = format!("{:#}", Config::load(None).unwrap_err());
            assert!(err.contains("telegram.webhook_secret is not set"), "{err}");
            jail.set_env("JARVIS_TELEGRAM__WEBHOOK_SECRET", "Hook_s3cret");
            jail.set_env("JARVIS_TELEGRAM__WEBHOOK_LISTEN", "0.0.0.0:9443");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                c.telegram.mode,
                jarvis_agents::telegram::TelegramMode::Webhook
            );
            assert_eq!(c.telegram.webhook_listen, "0.0.0.0:9443");
            assert_eq!(c.telegram.webhook_secret.as_deref(), Some("Hook_s3cret"));
            assert!(!format!("{c:?}").contains("Hook_s3cret"));
            jail.set_env("JARVIS_TELEGRAM__WEBHOOK_SECRET", "bad secret!");
            let err = format!("{:#}", Config::load(None).unwrap_err());
            assert!(err.contains("telegram.webhook_secret: must be"), "{err}");
            assert!(!err.contains("bad secret!"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn memory_embeddings_from_file_and_env() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "jarvis.toml",
                "[memory.embeddings]\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\n",
            )?;
            jail.set_env("JARVIS_MEMORY__EMBEDDINGS__API_KEY", "sk-hunter2");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            let e = c.memory.embeddings.as_ref().unwrap();
            assert_eq!(e.api_key.as_deref(), Some("sk-hunter2"));
            assert!(c.memory.enabled);
            assert!(!format!("{c:?}").contains("hunter2"));
            jail.create_file("jarvis.toml", "[memory.embeddings]\nbase_url = \"x\"\n")?;
            let err = format!("{:#}", Config::load(None).unwrap_err());
            assert!(err.contains("memory.embeddings.base_url"), "{err}");
            jail.clear_env();
            jail.create_file("jarvis.toml", "[memory]\nembedings = 1\n")?;
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("embedings"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn x_section_from_file_and_env_with_tokens_hidden() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "jarvis.toml",
                "[x]\napi_url = \"http://127.0.0.1:1\"\ntrack = [\"$SOL\", \"$JUP\"]\nauto_post = true\ndry_run = true\n",
            )?;
            jail.set_env("JARVIS_X__BEARER_TOKEN", "AAAA-bearer-hunter2");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert!(c.x.enabled());
            assert_eq!(c.x.track, ["$SOL", "$JUP"]);
            assert!(!format!("{c:?}").contains("hunter2"));
            jail.create_file("jarvis.toml", "[x]\nauto_post = true\n")?;
            let err = format!("{:#}", Config::load(None).unwrap_err());
            assert!(
                err.contains("x.auto_post = true") && err.contains("x.user_token"),
                "{err}"
            );
            jail.create_file("jarvis.toml", "[x]\nbearer = \"t\"\n")?;
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("bearer"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn x_oauth1_keys_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.create_file("jarvis.toml", "[x]\nauto_post = true\n")?;
            jail.set_env("JARVIS_X__BEARER_TOKEN", "AAAA-bearer-hunter2");
            jail.set_env("JARVIS_X__CONSUMER_KEY", "ck-public");
            jail.set_env("JARVIS_X__CONSUMER_SECRET", "cs-hunter2");
            jail.set_env("JARVIS_X__ACCESS_TOKEN", "at-hunter2");
            let err = format!("{:#}", Config::load(None).unwrap_err());
            assert!(err.contains("x.access_token_secret is not set"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
            jail.set_env("JARVIS_X__ACCESS_TOKEN_SECRET", "ats-hunter2");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert!(c.x.oauth1().unwrap().is_some());
            assert!(!format!("{c:?}").contains("hunter2"));
            jail.set_env("JARVIS_X__USER_TOKEN", "user-hunter2");
            let err = format!("{:#}", Config::load(None).unwrap_err());
            assert!(err.contains("x.user_token: set either OAuth 1.0a"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
            Ok(())
        });
    }
}
