//! `jarvis up`'s X agent: the mentions/search poller and the `jarvis-x` service, when `[x] bearer_token`
//! is set.

use std::future::Future;
use std::sync::Arc;

use jarvis_agents::execution::SystemClock;
use jarvis_agents::x::{serve_commands, Outbox, ReplyDrafter, UserAuth, XPoller};
use jarvis_store::EventStore;
use tokio::task::JoinHandle;

use crate::config::Config;

/// Starts the poller and the service, each until its `until()` completes; none without a bearer token.
///
/// # Errors
/// When the HTTP client cannot start.
pub fn spawn<F, Fut>(
    config: &Config,
    store: &EventStore,
    client: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    until: F,
) -> anyhow::Result<Vec<JoinHandle<()>>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let x = &config.x;
    if !x.enabled() {
        return Ok(vec![]);
    }
    let api = x.client().map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "x: user context (posting, users/me): {}",
        match x.user_auth() {
            Ok(Some(UserAuth::OAuth1(_))) => "OAuth 1.0a, signed requests",
            Ok(Some(UserAuth::Bearer(_))) =>
                "OAuth 2.0 user token (expires after 2 hours: refresh it outside Jarvis)",
            _ => "none: nothing can be posted",
        }
    );
    let clock = Arc::new(SystemClock);
    let poller = XPoller::new(
        api.clone(),
        store.clone(),
        js.clone(),
        x.poller_settings(),
        clock.clone(),
    );
    let outbox = Outbox::new(store.clone(), api, x.outbox_settings(), clock);
    let poller = if x.draft_replies {
        if config.llm.providers.is_empty() {
            println!(
                "x: draft_replies is on but no [llm] provider is configured; no reply is drafted"
            );
            poller
        } else {
            poller.with_drafter(ReplyDrafter::new(client.clone(), outbox.clone()))
        }
    } else {
        poller
    };
    let service_client = client.clone();
    let stopped = until();
    let service = tokio::spawn(async move {
        if let Err(e) = serve_commands(outbox, service_client, stopped).await {
            tracing::error!(cause = %e, "the jarvis-x service failed; drafts cannot be approved");
        }
    });
    println!(
        "x: polling {} at {}{}{}",
        if x.track.is_empty() {
            "mentions".to_string()
        } else {
            format!("mentions and {}", x.track.join(", "))
        },
        x.api_url,
        if x.auto_post {
            format!(", auto-posting up to {} a day", x.daily_post_cap)
        } else {
            String::new()
        },
        if x.dry_run {
            " (dry run: nothing is posted)"
        } else {
            ""
        }
    );
    Ok(vec![tokio::spawn(poller.run(until())), service])
}
