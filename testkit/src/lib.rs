//! Test-only helpers: a private nats-server per test on a free port, and a fresh Postgres database per test.
//!
//! Both clean up on drop, so tests run in parallel and in any order without sharing state.
//!
//! - [`NatsServer`]: `nats-server -js` on a port the server picks itself (`-p -1`), read back from its ports
//!   file, with its own store directory; [`NatsServer::restart`] brings it back on the same port and store.
//! - [`TestDb`]: `CREATE DATABASE jarvis_test_<uuid>` on the machine's Postgres (`JARVIS_TEST_DATABASE_URL`,
//!   default `postgres://postgres@127.0.0.1:5432/postgres`), dropped with `FORCE` on drop.
//! - [`fakes`]: fakes of third-party HTTP APIs in their real wire formats: OpenAI-compatible chat and embeddings,
//!   Ollama, Jupiter, Solana JSON-RPC.

pub mod fakes;

use std::time::{Duration, Instant};

use jarvis_bus::server::NatsProcess;

use sqlx::{Connection, Executor, PgConnection};

/// A nats-server with JetStream, private to one test, killed (and its files removed) on drop.
pub struct NatsServer {
    process: NatsProcess,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free loopback port and waits until it accepts connections.
    ///
    /// # Panics
    /// When the binary is missing or the server does not come up.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for nats-server");
        let process = NatsProcess::start(dir.path(), None).unwrap_or_else(|e| panic!("{e}"));
        Self { process, _dir: dir }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Kills it and starts it again on the same port with the same JetStream store.
    ///
    /// # Panics
    /// When it does not come back.
    pub fn restart(&mut self) {
        self.process.restart().unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A fresh, empty Postgres database, dropped on drop.
pub struct TestDb {
    url: String,
    admin_url: String,
    name: String,
}

/// The server tests create their databases on.
pub fn admin_database_url() -> String {
    std::env::var("JARVIS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

impl TestDb {
    /// Creates `jarvis_test_<uuid>`.
    ///
    /// # Panics
    /// When Postgres is unreachable (start it: see the README).
    pub async fn create() -> Self {
        let admin_url = admin_database_url();
        let name = format!("jarvis_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach Postgres at {admin_url}: {e}"));
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        Self {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin_url).await {
                    let _ = conn.execute(sql.as_str()).await;
                }
            });
        })
        .join();
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after `timeout`.
///
/// # Panics
/// When the deadline passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
