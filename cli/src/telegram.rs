//! `jarvis up`'s manual order desk (`jarvis-trading`) and Telegram agent (when `[telegram] token` is set;
//! long polling, or webhook mode with `[telegram] mode = "webhook"`).

use std::future::Future;
use std::sync::Arc;

use jarvis_agents::execution::SystemClock;
use jarvis_agents::orders::OrderDesk;
use jarvis_agents::telegram::{TelegramAgent, TelegramSettings};
use jarvis_store::EventStore;

use crate::config::Config;

/// Starts `jarvis-trading`: manual orders for Telegram and the gateway.
pub fn spawn_trading_desk(
    config: &Config,
    store: &EventStore,
    client: &async_nats::Client,
    health: jarvis_bus::service::Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let desk = OrderDesk::new(
        store.clone(),
        config.trading_settings(),
        Arc::new(SystemClock),
        chrono::Duration::seconds(config.telegram.confirm_ttl_secs as i64),
    );
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(e) = desk.serve(client, health, shutdown).await {
            tracing::error!(cause = %e, "the trading service failed; manual orders are unavailable");
        }
    })
}

/// Starts the Telegram agent when `[telegram] token` is set; `None` otherwise.
///
/// # Errors
/// A bad `[telegram]` section (never naming the token).
pub fn spawn_agent(
    config: &Config,
    store: &EventStore,
    client: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if !config.telegram.enabled() {
        tracing::info!("no [telegram] token: the Telegram agent is off");
        return Ok(None);
    }
    let mut settings = TelegramSettings::new(&config.telegram, &config.portfolio.quote_asset);
    settings.llm_daily_usd = config.llm.budget.daily_usd;
    let agent = TelegramAgent::new(
        &config.telegram,
        settings,
        store.clone(),
        client.clone(),
        js.clone(),
        Arc::new(SystemClock),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    // Webhook mode (`mode = "webhook"`): `run` binds `webhook_listen` and calls `setWebhook`; polling mode
    // removes any webhook and long-polls.
    tracing::info!(mode = ?config.telegram.mode, "starting the Telegram agent");
    Ok(Some(tokio::spawn(Arc::new(agent).run(shutdown))))
}
