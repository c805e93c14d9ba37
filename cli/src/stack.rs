//! Where the store and the bus are, and `jarvis up`'s private servers.
//!
//! With no `database.url` / `nats.url` configured, `jarvis up` starts `nats-server -js` and a private
//! Postgres cluster as child processes on free loopback ports, with data under the data directory
//! (`./.jarvis` by default), and writes their URLs to `<data-dir>/stack.json` so that other commands
//! (`jarvis status`, `jarvis ingest`, ...) find them. Without that file, they fall back to the machine's
//! servers: `postgres://postgres@127.0.0.1:5432/jarvis` and `nats://127.0.0.1:4222`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use jarvis_bus::server::NatsProcess;
use jarvis_store::server::PostgresProcess;
use jarvis_store::EventStore;
use serde::{Deserialize, Serialize};
use sqlx::{Connection, Executor, PgConnection};

use crate::config::Config;

/// The machine's Postgres, used when nothing else is configured.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/jarvis";
/// The machine's NATS, used when nothing else is configured.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// The URLs `jarvis up` publishes for other commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackFile {
    /// The private Postgres, if `jarvis up` started one.
    pub database_url: Option<String>,
    /// The private nats-server, if `jarvis up` started one.
    pub nats_url: Option<String>,
    /// The process that owns them.
    pub pid: u32,
}

fn stack_file(data_dir: &Path) -> PathBuf {
    data_dir.join("stack.json")
}

fn read_stack_file(data_dir: &Path) -> Option<StackFile> {
    let text = std::fs::read_to_string(stack_file(data_dir)).ok()?;
    let file: StackFile = serde_json::from_str(&text).ok()?;
    // A stale file from a killed `jarvis up` points at dead servers: ignore it.
    Path::new(&format!("/proc/{}", file.pid))
        .exists()
        .then_some(file)
}

/// The database and NATS URLs: configuration, else a running `jarvis up`'s private servers, else the
/// machine's defaults.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Postgres.
    pub database_url: String,
    /// NATS.
    pub nats_url: String,
}

impl Endpoints {
    /// Resolves the URLs for commands other than `jarvis up`.
    pub fn resolve(config: &Config, data_dir: &Path) -> Self {
        let stack = read_stack_file(data_dir);
        let from_stack = |f: fn(&StackFile) -> Option<String>| stack.as_ref().and_then(f);
        Self {
            database_url: config
                .database
                .url
                .clone()
                .or_else(|| from_stack(|s| s.database_url.clone()))
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
            nats_url: config
                .nats
                .url
                .clone()
                .or_else(|| from_stack(|s| s.nats_url.clone()))
                .unwrap_or_else(|| DEFAULT_NATS_URL.into()),
        }
    }

    /// Connects to the store, creating its database first if the server does not have it yet.
    ///
    /// # Errors
    /// When Postgres is unreachable or refuses.
    pub async fn store(&self, config: &Config) -> anyhow::Result<EventStore> {
        create_database_if_missing(&self.database_url).await?;
        EventStore::connect(&self.database_url, config.database.max_connections)
            .await
            .with_context(|| {
                format!(
                    "connecting to {}",
                    jarvis_store::redact_url(&self.database_url)
                )
            })
    }

    /// Connects to NATS as `name`.
    ///
    /// # Errors
    /// When NATS is unreachable.
    pub async fn bus(
        &self,
        name: &str,
    ) -> anyhow::Result<(async_nats::Client, async_nats::jetstream::Context)> {
        Ok(jarvis_bus::connect(&self.nats_url, name).await?)
    }
}

/// Creates the URL's database through the server's `postgres` database when it does not exist.
///
/// # Errors
/// When the server is unreachable or the database cannot be created.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let redacted = jarvis_store::redact_url(url);
    match PgConnection::connect(url).await {
        Ok(conn) => {
            let _ = conn.close().await;
            Ok(())
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            let mut parsed = url::Url::parse(url).with_context(|| format!("parsing {redacted}"))?;
            let name = parsed.path().trim_start_matches('/').to_string();
            anyhow::ensure!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "database name {name:?} in {redacted}: use letters, digits and _ only"
            );
            parsed.set_path("/postgres");
            let mut admin = PgConnection::connect(parsed.as_str())
                .await
                .with_context(|| {
                    format!("connecting to the postgres database beside {redacted}")
                })?;
            match admin
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await
            {
                Ok(_) => tracing::info!(database = %name, "created database"),
                // Another process created it at the same moment.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
                Err(e) => return Err(e).with_context(|| format!("creating database {name}")),
            }
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("connecting to {redacted}")),
    }
}

/// `jarvis up`'s private servers, stopped on drop.
pub struct LocalStack {
    /// The private Postgres, if one was needed.
    pub postgres: Option<PostgresProcess>,
    /// The private nats-server, if one was needed.
    pub nats: Option<NatsProcess>,
    data_dir: PathBuf,
    /// The URLs to use.
    pub endpoints: Endpoints,
}

impl LocalStack {
    /// Starts what the configuration does not provide: a private Postgres when `database.url` is unset,
    /// a private nats-server when `nats.url` is unset.
    ///
    /// # Errors
    /// When a binary is missing (the message names the package) or a server does not come up.
    pub fn start(config: &Config, data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("resolving {}", data_dir.display()))?;
        let postgres = match &config.database.url {
            Some(_) => None,
            None => Some(
                PostgresProcess::start(&data_dir.join("postgres"), None)
                    .context("starting the private Postgres")?,
            ),
        };
        let nats = match &config.nats.url {
            Some(_) => None,
            None => Some(
                NatsProcess::start(&data_dir.join("nats"), None)
                    .context("starting the private nats-server")?,
            ),
        };
        let endpoints = Endpoints {
            database_url: postgres
                .as_ref()
                .map(|p| p.url("jarvis"))
                .or_else(|| config.database.url.clone())
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
            nats_url: nats
                .as_ref()
                .map(NatsProcess::url)
                .or_else(|| config.nats.url.clone())
                .unwrap_or_else(|| DEFAULT_NATS_URL.into()),
        };
        let file = StackFile {
            database_url: postgres.as_ref().map(|_| endpoints.database_url.clone()),
            nats_url: nats.as_ref().map(|_| endpoints.nats_url.clone()),
            pid: std::process::id(),
        };
        std::fs::write(stack_file(&data_dir), serde_json::to_vec_pretty(&file)?)
            .context("writing stack.json")?;
        Ok(Self {
            postgres,
            nats,
            data_dir,
            endpoints,
        })
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(stack_file(&self.data_dir));
        if let Some(pg) = self.postgres.as_mut() {
            let _ = pg.stop();
        }
    }
}
