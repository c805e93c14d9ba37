//! `jarvis gateway`: the HTTP gateway (REST, SSE, commands, OpenAPI, metrics), its helpers
//! (`hash-password`, `totp-secret`, `api-key`), its place in `jarvis up`, and `jarvis bench gateway`.

use std::io::BufRead as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use jarvis_gateway::{AppState, Bus};
use jarvis_store::EventStore;

use crate::config::Config;
use crate::stack::Endpoints;
use crate::{shutdown_signal, Exit};

/// `jarvis gateway ...`
#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Print an argon2 hash of a password read from stdin, for `[[gateway.users]] password_hash`.
    HashPassword,
    /// Print a new TOTP secret (base32) and its otpauth URI, for `[[gateway.users]] totp_secret`.
    TotpSecret {
        /// The user it is for (shown in authenticator apps).
        #[arg(long, default_value = "jarvis")]
        user: String,
    },
    /// Print a new API key and its SHA-256, for `[[gateway.api_keys]]`.
    ApiKey,
}

/// `jarvis gateway [COMMAND]`.
///
/// # Errors
/// Bad configuration (exit 2), an unreachable store or bus, or a listener that cannot bind.
pub async fn run(
    config: &Config,
    data_dir: &Path,
    cmd: Option<GatewayCommand>,
) -> anyhow::Result<()> {
    match cmd {
        Some(GatewayCommand::HashPassword) => {
            eprintln!("password (read from stdin, one line):");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.len() < 8 {
                return Err(Exit {
                    code: 2,
                    message: "the password must have at least 8 characters".into(),
                }
                .into());
            }
            let hash = jarvis_gateway::auth::hash_password(password).map_err(anyhow::Error::msg)?;
            println!("{hash}");
            Ok(())
        }
        Some(GatewayCommand::TotpSecret { user }) => {
            let text = jarvis_gateway::totp::new_secret();
            println!("{text}");
            println!("otpauth://totp/Jarvis:{user}?secret={text}&issuer=Jarvis&algorithm=SHA1&digits=6&period=30");
            Ok(())
        }
        Some(GatewayCommand::ApiKey) => {
            let key = jarvis_gateway::auth::new_api_key();
            println!("key:        {key}");
            println!("key_sha256: {}", jarvis_gateway::auth::hash_key(&key));
            Ok(())
        }
        None => serve(config, data_dir).await,
    }
}

async fn serve(config: &Config, data_dir: &Path) -> anyhow::Result<()> {
    let endpoints = Endpoints::resolve(config, data_dir);
    let store = endpoints.store(config).await?;
    store.migrate().await.context("migrating the store")?;
    let (client, js) = endpoints.bus("jarvis-gateway").await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    // The projectors run in `jarvis up` (or `jarvis projections run`): this process follows their tables
    // into memory, and listens to heartbeats itself.
    let health = jarvis_projections::AgentHealth::default();
    let read = jarvis_projections::ReadModels::new(store.pool().clone())
        .with_health(health.clone())
        .with_jetstream(js.clone());
    let follow = {
        let (read, stopped) = (read.clone(), until_stopped());
        tokio::spawn(async move { read.follow(Duration::from_millis(500), stopped).await })
    };
    let heartbeats = {
        let (client, stopped) = (client.clone(), until_stopped());
        tokio::spawn(async move {
            if let Err(e) = health.subscribe(&client, stopped).await {
                tracing::error!(cause = %e, "cannot subscribe to agent heartbeats");
            }
        })
    };
    let task = spawn(config, &store, read, &client, &js, until_stopped())
        .await?
        .map(|(_, task)| task);
    let Some(task) = task else {
        return Err(Exit {
            code: 2,
            message: "gateway.enabled = false: nothing to serve".into(),
        }
        .into());
    };
    shutdown_signal().await;
    let _ = stop.send(true);
    let _ = task.await;
    let _ = follow.await;
    let _ = heartbeats.await;
    Ok(())
}

/// Binds `[gateway] listen` and serves until `stopped` completes; the bound address and the task, or `None`
/// when `[gateway] enabled = false`.
///
/// # Errors
/// When the address cannot be bound.
pub async fn spawn(
    config: &Config,
    store: &EventStore,
    read: jarvis_projections::ReadModels,
    client: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>> {
    let gateway = &config.gateway;
    if !gateway.enabled {
        return Ok(None);
    }
    if gateway.jwt_secret.is_none() {
        tracing::warn!(
            "gateway.jwt_secret is unset: tokens are signed with a random key and die with this process"
        );
    }
    let listener = tokio::net::TcpListener::bind(&gateway.listen)
        .await
        .with_context(|| format!("binding gateway.listen = {}", gateway.listen))?;
    let state = AppState::new(
        gateway.clone(),
        Arc::new(jarvis_gateway::live::LiveModels::new(store.clone(), read)),
        Some(Bus {
            client: client.clone(),
            js: js.clone(),
        }),
        Some(store.pool().clone()),
    );
    jarvis_gateway::routes::admin::reload_keys(&state)
        .await
        .context("loading the minted API keys")?;
    let address = listener.local_addr()?;
    // Logged, not printed: `jarvis up`'s stdout may be a pipe its reader has closed after the banner.
    tracing::info!("gateway listening on http://{address} (docs: http://{address}/api/docs)");
    // Keys minted or revoked through another gateway over the same database take effect here at once.
    let keys = tokio::spawn(jarvis_gateway::routes::admin::watch_keys(
        state.clone(),
        Duration::from_secs(60),
        std::future::pending(),
    ));
    let task = tokio::spawn(async move {
        if let Err(e) = jarvis_gateway::run(
            listener,
            state,
            jarvis_gateway::dashboard::router(),
            stopped,
        )
        .await
        {
            tracing::error!(cause = %e, "the gateway stopped");
        }
        keys.abort();
    });
    Ok(Some((address, task)))
}

/// `jarvis bench gateway` (see [`jarvis_gateway::bench::run`]).
///
/// # Errors
/// When a listener cannot bind or a connection fails.
pub async fn bench(connections: usize, secs: u64) -> anyhow::Result<serde_json::Value> {
    jarvis_gateway::bench::run(connections, secs).await
}
