//! `jarvis up`'s execution venue and live price poller: the `--live` checks, and the tasks that run the
//! Jupiter execution agent and the poller beside the trading pipeline.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jarvis_agents::execution::{JupiterExecution, JupiterVenue, SystemClock, VenueKind};
use jarvis_agents::market::price_poller::PricePoller;
use jarvis_bus::{run_consumer, ConsumerSettings};
use jarvis_store::EventStore;
use tokio::task::JoinHandle;

use crate::config::Config;

/// The Jupiter venue to run, checked before anything starts.
pub struct Execution {
    venue: JupiterVenue,
    ack_wait: Duration,
}

/// The Jupiter venue when `venue.kind = "jupiter"`, live only when `--live`, `venue.live` and a readable
/// keypair all agree.
///
/// # Errors
/// One sentence naming what `--live` misses (exit code 2 for the caller).
pub fn execution(config: &Config, live_flag: bool) -> Result<Option<Execution>, String> {
    let live = config.venue.live_mode(live_flag)?;
    if config.venue.kind == VenueKind::Paper {
        return Ok(None);
    }
    if config.venue.live && !live {
        tracing::warn!("venue.live = true but jarvis up was started without --live: the Jupiter venue dry-runs (quotes, no transactions)");
    }
    let settings = config.venue.jupiter_settings(live)?;
    // Long enough for the slowest handling of one order: quote, swap, send, then the confirmation timeout.
    let ack_wait = settings.confirm_timeout + settings.http_timeout * 6 + Duration::from_secs(30);
    let venue = JupiterVenue::new(settings, Arc::new(SystemClock)).map_err(|e| e.to_string())?;
    match venue.pubkey() {
        Some(pubkey) => println!("venue: jupiter, LIVE: signing with wallet {pubkey}"),
        None => println!(
            "venue: jupiter, dry run: real quotes, simulated fills, nothing signed or sent"
        ),
    }
    Ok(Some(Execution { venue, ack_wait }))
}

/// The tasks [`spawn`] started: the execution agent's and the poller's, each when configured.
pub type Tasks = (Option<JoinHandle<()>>, Option<JoinHandle<()>>);

/// Starts the Jupiter execution consumer (when there is one) and the price poller (when `poll` and
/// `[market] poll_prices`), each until its `until()` completes.
///
/// # Errors
/// A bad `[market]` section.
pub fn spawn<F, Fut>(
    config: &Config,
    execution: Option<Execution>,
    poll: bool,
    store: &EventStore,
    js: &async_nats::jetstream::Context,
    until: F,
) -> anyhow::Result<Tasks>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let execution = execution.map(|Execution { venue, ack_wait }| {
        let agent = JupiterExecution::new(store.clone(), venue);
        let js = js.clone();
        let stopped = until();
        tokio::spawn(async move {
            // One order at a time, in approval order, with an ack wait longer than an order can take, so a
            // slow confirmation is never redelivered while it is still being handled.
            let mut settings = ConsumerSettings::new(
                crate::agents::EXECUTION_CONSUMER,
                "jarvis.evt.trade.TradeApproved.>",
            );
            settings.max_ack_pending = 1;
            settings.ack_wait = ack_wait;
            settings.max_deliver = 10;
            if let Err(e) = run_consumer(&js, &settings, &agent, stopped).await {
                tracing::error!(cause = %e, "the Jupiter execution agent failed to start");
            }
        })
    });
    let poller = if poll && config.market.poll_prices {
        let settings = config
            .market
            .settings(config.token_book()?)
            .map_err(|e| anyhow::anyhow!(e))?;
        let poller = PricePoller::new(store.clone(), settings, Arc::new(SystemClock))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let stopped = until();
        Some(tokio::spawn(poller.run(stopped)))
    } else {
        None
    };
    Ok((execution, poller))
}
