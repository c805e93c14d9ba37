//! The X agent on real NATS and Postgres, against the fake X API v2 driven by the real reqwest client.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use jarvis_agents::execution::SystemClock;
use jarvis_agents::relay::{run_relay, RelaySettings};
use jarvis_agents::sentiment::agent::consumer_settings;
use jarvis_agents::sentiment::{OfflineScorer, SentimentAgent, SentimentSettings};
use jarvis_agents::x::outbox::DraftRequest;
use jarvis_agents::x::{
    serve_commands, Outbox, OutboxSettings, PollerSettings, Secret, XClient, XConfig, XPoller,
};
use jarvis_bus::consumer::dlq_headers;
use jarvis_bus::{run_consumer, DLQ_STREAM};
use jarvis_domain::x_account::{DraftStatus, XAccount, X_ACCOUNT};
use jarvis_domain::{EventMetadata, RecordedEvent};
use jarvis_store::EventStore;
use jarvis_testkit::eventually;
use jarvis_testkit::fakes::x::{FakeX, OAuth1Keys, XEndpoint, XFailure, ME_ID};
use serde_json::{json, Value};

const BEARER: &str = "AAAA-app-bearer-s3cret";
const USER_TOKEN: &str = "user-access-s3cret";

type Stop = tokio::sync::watch::Sender<bool>;

fn until(stop: &Stop) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = stop.subscribe();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

fn client(fake: &FakeX, user: bool) -> XClient {
    XClient::new(
        &fake.url(),
        Secret::new(BEARER),
        user.then(|| Secret::new(USER_TOKEN)),
        Duration::from_secs(5),
    )
    .unwrap()
}

fn settings(track: &[&str]) -> PollerSettings {
    PollerSettings {
        user_id: Some(ME_ID.into()),
        poll_mentions: true,
        track: track.iter().map(|s| s.to_string()).collect(),
        interval: Duration::from_millis(50),
        max_backoff: Duration::from_secs(10),
        max_results: 10,
        max_pages: 5,
    }
}

fn poller(env: &Env, fake: &FakeX, track: &[&str]) -> XPoller {
    XPoller::new(
        client(fake, false),
        env.store.clone(),
        env.js.clone(),
        settings(track),
        Arc::new(SystemClock),
    )
}

/// Every stored event of a type, once at least `n` are readable.
async fn events_of_type(store: &EventStore, event_type: &str, n: usize) -> Vec<RecordedEvent> {
    eventually(
        Duration::from_secs(60),
        &format!("{n} {event_type}"),
        || async {
            let all = store
                .read_after(jarvis_store::Checkpoint::default(), 100_000)
                .await
                .ok()?;
            let of: Vec<RecordedEvent> = all
                .into_iter()
                .filter(|e| e.event_type == event_type)
                .collect();
            (of.len() >= n).then_some(of)
        },
    )
    .await
}

async fn count_of_type(store: &EventStore, event_type: &str) -> usize {
    // `events_of` reads regardless of visibility: what the command just wrote.
    let mut n = 0;
    for (aggregate, id) in [("XAccount", X_ACCOUNT), ("XFeed", "2024-03-01")] {
        n += store
            .events_of(aggregate, id)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.event_type == event_type)
            .count();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mentions_become_tweet_received_then_sentiment_scored() {
    let env = Env::start().await;
    let fake = FakeX::start(BEARER, USER_TOKEN).await;
    fake.add_mention(
        "@jarvis_bot $SOL breaks out to a record high as Bitcoin rallies",
        "desk",
        "2024-03-01T14:30:00.000Z",
    );
    fake.add_tweet(
        "$SOL is crashing hard, awful losses today",
        "bear",
        "2024-03-01T15:00:00.000Z",
    );
    let (stop, _) = tokio::sync::watch::channel(false);
    tokio::spawn(run_relay(
        env.store.clone(),
        env.js.clone(),
        RelaySettings::default(),
        until(&stop),
    ));
    // The sentiment agent as `jarvis up` runs it.
    let agent = Arc::new(
        SentimentAgent::new(
            env.store.clone(),
            Arc::new(OfflineScorer::default()),
            &SentimentSettings::default(),
        )
        .unwrap(),
    );
    let js = env.js.clone();
    let stopped = until(&stop);
    tokio::spawn(async move {
        run_consumer(&js, &consumer_settings(), agent.as_ref(), stopped)
            .await
            .unwrap();
    });
    tokio::spawn(poller(&env, &fake, &["$SOL"]).run(until(&stop)));

    let received = events_of_type(&env.store, "TweetReceived", 2).await;
    let mention = received
        .iter()
        .find(|e| e.payload["author_username"] == "desk")
        .expect("the mention");
    assert_eq!(mention.ce_type(), "jarvis.social.TweetReceived.v1");
    assert_eq!(mention.payload["created_at"], "2024-03-01T14:30:00Z");
    let scored = events_of_type(&env.store, "SentimentScored", 2).await;
    let of_mention: Vec<&RecordedEvent> = scored
        .iter()
        .filter(|s| s.metadata.causation_id == mention.event_id)
        .collect();
    assert!(!of_mention.is_empty(), "the mention was scored");
    assert!(of_mention.iter().any(|s| s.payload["token"] == "SOL"));
    // Both queries keep a cursor. Each cursor moves after its poll's tweets are appended, so the second
    // tweet can be readable (and scored) a moment before its search's cursor is.
    eventually(Duration::from_secs(30), "both cursors", || async {
        let account: XAccount = env.store.load(X_ACCOUNT, Some(20)).await.ok()?;
        (account.cursor("mentions").is_some() && account.cursor("$SOL").is_some()).then_some(())
    })
    .await;
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_reprocess_old_mentions() {
    let env = Env::start().await;
    let fake = FakeX::start(BEARER, USER_TOKEN).await;
    fake.add_mention("gm $SOL", "a", "2024-03-01T10:00:00.000Z");
    let newest = fake.add_mention("gn $SOL", "b", "2024-03-01T11:00:00.000Z");
    let first = poller(&env, &fake, &[]);
    let report = first.poll_mentions().await.unwrap();
    assert_eq!(report.received, 2);
    drop(first);

    // A new process: it asks X only for what is newer than the cursor kept in the events.
    let second = poller(&env, &fake, &[]);
    assert_eq!(second.poll_mentions().await.unwrap().received, 0);
    let requests = fake.requests(XEndpoint::Mentions);
    assert_eq!(requests[0].query.get("since_id"), None);
    assert_eq!(requests[1].query.get("since_id"), Some(&newest));
    let later = fake.add_mention("$SOL again", "c", "2024-03-01T12:00:00.000Z");
    assert_eq!(second.poll_mentions().await.unwrap().received, 1);
    assert_eq!(count_of_type(&env.store, "TweetReceived").await, 3);
    let account: XAccount = env.store.load(X_ACCOUNT, Some(20)).await.unwrap();
    assert_eq!(account.cursor("mentions"), Some(later.as_str()));
    // Requests carried the app's bearer token, and nothing stored carries a token.
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some(format!("Bearer {BEARER}").as_str())
    );
    assert_no_secret_stored(&env.store).await;
}

async fn assert_no_secret_stored(store: &EventStore) {
    let all = store
        .read_after(jarvis_store::Checkpoint::default(), 100_000)
        .await
        .unwrap();
    for e in all {
        let text = format!("{} {:?}", e.payload, e.metadata);
        assert!(!text.contains("s3cret"), "a secret in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_waits_for_the_reset_without_hammering() {
    let env = Env::start().await;
    let fake = FakeX::start(BEARER, USER_TOKEN).await;
    fake.add_mention("gm $SOL", "a", "2024-03-01T10:00:00.000Z");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let reset = now.as_secs() + 2;
    fake.fail_next(
        XEndpoint::Mentions,
        XFailure::RateLimited {
            reset_epoch_secs: reset,
        },
    );
    let (stop, _) = tokio::sync::watch::channel(false);
    // Polls every 50 ms when all is well.
    tokio::spawn(poller(&env, &fake, &[]).run(until(&stop)));
    let requests = eventually(Duration::from_secs(30), "a request after the 429", || {
        let r = fake.requests(XEndpoint::Mentions);
        async move { (r.len() >= 2).then_some(r) }
    })
    .await;
    // The first request got the 429; the next one came only after the reset X announced.
    let reset_at = UNIX_EPOCH + Duration::from_secs(reset);
    assert!(
        requests[1].at >= reset_at,
        "retried at {:?}, before the reset {reset_at:?}",
        requests[1].at
    );
    // Then polling resumes and the mention lands.
    events_of_type(&env.store, "TweetReceived", 1).await;
    let _ = stop.send(true);

    // 5xx: each retry waits longer than the last (doubling from the interval).
    let env2 = Env::start().await;
    let fake2 = FakeX::start(BEARER, USER_TOKEN).await;
    for _ in 0..3 {
        fake2.fail_next(XEndpoint::Mentions, XFailure::Status(503));
    }
    fake2.add_mention("gm", "a", "2024-03-01T10:00:00.000Z");
    let (stop2, _) = tokio::sync::watch::channel(false);
    tokio::spawn(poller(&env2, &fake2, &[]).run(until(&stop2)));
    let r = eventually(Duration::from_secs(30), "4 requests", || {
        let r = fake2.requests(XEndpoint::Mentions);
        async move { (r.len() >= 4).then_some(r) }
    })
    .await;
    let gap = |i: usize| r[i + 1].at.duration_since(r[i].at).unwrap();
    // Waits of at least 100, 200 and 400 ms (plus jitter) after three failures.
    assert!(gap(0) >= Duration::from_millis(100), "{:?}", gap(0));
    assert!(gap(1) >= Duration::from_millis(200), "{:?}", gap(1));
    assert!(gap(2) >= Duration::from_millis(400), "{:?}", gap(2));
    let _ = stop2.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tweets_and_answers_are_dead_lettered_and_polling_continues() {
    let env = Env::start().await;
    let fake = FakeX::start(BEARER, USER_TOKEN).await;
    let p = poller(&env, &fake, &[]);
    // An answer that is not JSON: dead-lettered, the poll fails, nothing moves.
    fake.fail_next(XEndpoint::Mentions, XFailure::Body("<html>upstream".into()));
    let err = p.poll_mentions().await.unwrap_err();
    assert!(err.to_string().contains("not JSON"), "{err}");
    // A tweet without created_at beside a good one: the good one is kept.
    let bad = fake.add_raw(json!({"text": "$SOL no time", "author_id": "7"}), true);
    fake.add_mention("$SOL fine", "a", "2024-03-01T10:00:00.000Z");
    let report = p.poll_mentions().await.unwrap();
    assert_eq!((report.received, report.dead_lettered), (1, 1));
    // Polling continues past it: the cursor moved beyond the bad tweet.
    fake.add_mention("$SOL later", "a", "2024-03-01T11:00:00.000Z");
    let report = p.poll_mentions().await.unwrap();
    assert_eq!((report.received, report.dead_lettered), (1, 0));

    wait_stream_len_of(&env.js, DLQ_STREAM, 2).await;
    let dead = read_stream(&env.js, DLQ_STREAM).await;
    assert!(dead.iter().all(|m| m.subject == "jarvis.dlq.x"));
    let error = |m: &StreamMessage| {
        m.headers
            .get(dlq_headers::ERROR)
            .unwrap()
            .as_str()
            .to_string()
    };
    assert!(
        error(&dead[0]).contains("malformed answer: not JSON"),
        "{}",
        error(&dead[0])
    );
    assert_eq!(dead[0].payload, b"<html>upstream");
    assert!(
        error(&dead[1]).contains("no created_at"),
        "{}",
        error(&dead[1])
    );
    let raw: Value = serde_json::from_slice(&dead[1].payload).unwrap();
    assert_eq!(raw["id"], bad);
    assert_eq!(
        dead[1].headers.get(dlq_headers::CONSUMER).unwrap().as_str(),
        "x"
    );
    assert_eq!(count_of_type(&env.store, "TweetReceived").await, 2);
}

fn outbox(env: &Env, fake: &FakeX, settings: OutboxSettings) -> Outbox {
    Outbox::new(
        env.store.clone(),
        client(fake, true),
        settings,
        Arc::new(SystemClock),
    )
}

async fn request(env: &Env, verb: &str, body: Value) -> Result<Value, String> {
    let reply = env
        .client
        .request(format!("jarvis.cmd.x.{verb}"), body.to_string().into())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(h) = &reply.headers {
        if let Some(err) = h.get("Nats-Service-Error") {
            return Err(err.to_string());
        }
    }
    Ok(serde_json::from_slice(&reply.payload).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_is_posted_once_after_approval_even_when_approved_twice() {
    let env = Env::start().await;
    let fake = FakeX::start(BEARER, USER_TOKEN).await;
    let (stop, _) = tokio::sync::watch::channel(false);
    let service = tokio::spawn(serve_commands(
        outbox(&env, &fake, OutboxSettings::default()),
        env.client.clone(),
        until(&stop),
    ));
    let draft = eventually(Duration::from_secs(30), "jarvis-x", || async {
        request(
            &env,
            "draft",
            json!({"text": "gm, $SOL holders", "in_reply_to": "1760000000000000001", "requested_by": "telegram:1"}),
        )
        .await
        .ok()
    })
    .await;
    assert_eq!(draft["status"], "pending");
    let id = draft["draft_id"].as_str().unwrap().to_string();
    let pending = request(&env, "drafts", json!({})).await.unwrap();
    assert_eq!(pending["drafts"][0]["draft_id"], id.as_str());
    assert!(fake.posted().is_empty(), "a draft is not posted");

    let approve = json!({"draft_id": id, "approved_by": "telegram:1"});
    let (a, b) = tokio::join!(
        request(&env, "approve", approve.clone()),
        request(&env, "approve", approve.clone())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let again = request(&env, "approve", approve).await.unwrap();
    assert_eq!(again["status"], "posted");
    assert!(a["status"] == "posted" || b["status"] == "posted");
    let posted = fake.posted();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(
        posted[0].in_reply_to.as_deref(),
        Some("1760000000000000001")
    );
    assert_eq!(again["tweet_id"], posted[0].id.as_str());
    assert_eq!(count_of_type(&env.store, "TweetPosted").await, 1);
    let posts = events_of_type(&env.store, "TweetPosted", 1).await;
    assert_eq!(posts[0].payload["tweet_id"], posted[0].id.as_str());
    assert_eq!(posts[0].ce_type(), "jarvis.x.TweetPosted.v1");
    // Posting used the user's token, not the app's.
    let post_auth = fake.requests(XEndpoint::Post)[0].authorization.clone();
    assert_eq!(post_auth, Some(format!("Bearer {USER_TOKEN}")));
    assert!(request(&env, "drafts", json!({})).await.unwrap()["drafts"]
        .as_array()
        .unwrap()
        .is_empty());

    // Rejecting, bad requests and unknown drafts say what is wrong.
    let other = request(&env, "draft", json!({"text": "wagmi"}))
        .await
        .unwrap();
    let rejected = request(
        &env,
        "reject",
        json!({"draft_id": other["draft_id"], "reason": "tone"}),
    )
    .await
    .unwrap();
    assert_eq!(rejected["status"], "rejected");
    let err = request(&env, "approve", json!({"draft_id": other["draft_id"]}))
        .await
        .unwrap_err();
    assert!(err.contains("Rejected"), "{err}");
    let err = request(&env, "draft", json!({"text": "a".repeat(300)}))
        .await
        .unwrap_err();
    assert!(err.contains("text: 300 characters exceed 280"), "{err}");
    let err = request(&env, "approve", json!({"draft_id": "nope"}))
        .await
        .unwrap_err();
    assert!(err.contains("draft_id"), "{err}");
    assert_eq!(fake.posted().len(), 1);
    assert_no_secret_stored(&env.store).await;
    let _ = stop.send(true);
    service.await.unwrap().unwrap();
}

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    s.parse().unwrap()
}

fn text(t: &str) -> DraftRequest {
    DraftRequest {
        text: t.into(),
        in_reply_to: None,
        requested_by: Some("x-drafter".into()),
        draft_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_post_respects_the_daily_cap_by_event_time() {
    let env = Env::start().await;
    let fake = FakeX::start(BEARER, USER_TOKEN).await;
    let outbox = outbox(
        &env,
        &fake,
        OutboxSettings {
            auto_post: true,
            daily_post_cap: 2,
            dry_run: false,
        },
    );
    let m = EventMetadata::root("test");
    let mut statuses = Vec::new();
    for (t, when) in [
        ("one", "2024-03-01T01:00:00Z"),
        ("two", "2024-03-01T12:00:00Z"),
        ("three", "2024-03-01T23:59:59Z"),
        ("four", "2024-03-02T00:00:00Z"),
    ] {
        statuses.push(outbox.draft(text(t), at(when), &m).await.unwrap().status);
    }
    assert_eq!(
        statuses,
        [
            DraftStatus::Posted,
            DraftStatus::Posted,
            DraftStatus::Pending,
            DraftStatus::Posted
        ]
    );
    let posted: Vec<String> = fake.posted().into_iter().map(|p| p.text).collect();
    assert_eq!(posted, ["one", "two", "four"]);
    // Over the cap, an operator can still approve.
    let pending = outbox.pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    let d = outbox.approve(pending[0].draft_id, "op").await.unwrap();
    assert_eq!(d.status, DraftStatus::Posted);
    assert_eq!(fake.posted().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_records_what_would_be_posted_and_sends_nothing() {
    let env = Env::start().await;
    let fake = FakeX::start(BEARER, USER_TOKEN).await;
    let settings = OutboxSettings {
        auto_post: true,
        daily_post_cap: 5,
        dry_run: true,
    };
    // Without a user token, too: a dry run needs none.
    let outbox = Outbox::new(
        env.store.clone(),
        client(&fake, false),
        settings,
        Arc::new(SystemClock),
    );
    let m = EventMetadata::root("test");
    let d = outbox
        .draft(text("$SOL to the moon"), at("2024-03-01T10:00:00Z"), &m)
        .await
        .unwrap();
    assert_eq!(d.status, DraftStatus::DryRun);
    assert!(fake.requests(XEndpoint::Post).is_empty());
    assert!(fake.posted().is_empty());
    let dry = events_of_type(&env.store, "TweetDryRun", 1).await;
    assert_eq!(dry[0].payload["text"], "$SOL to the moon");
    assert_eq!(count_of_type(&env.store, "TweetPosted").await, 0);
    assert_eq!(count_of_type(&env.store, "TweetSending").await, 0);

    // Not a dry run and no user token: approval is refused before anything is recorded as sending.
    let real = Outbox::new(
        env.store.clone(),
        client(&fake, false),
        OutboxSettings::default(),
        Arc::new(SystemClock),
    );
    let pending = real
        .draft(text("gm"), at("2024-03-01T11:00:00Z"), &m)
        .await
        .unwrap();
    let err = real.approve(pending.draft_id, "op").await.unwrap_err();
    assert!(err.to_string().contains("user_token"), "{err}");
    assert!(fake.posted().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_failures_never_show_a_token() {
    let fake = FakeX::start(BEARER, USER_TOKEN).await;
    // The app token cannot post (403 from X); a wrong token is 401.
    let app_only = XClient::new(
        &fake.url(),
        Secret::new(BEARER),
        Some(Secret::new(BEARER)),
        Duration::from_secs(5),
    )
    .unwrap();
    let err = app_only.post("gm", None).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    let wrong = XClient::new(
        &fake.url(),
        Secret::new("wrong-s3cret"),
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let err = wrong.mentions(ME_ID, None, 10, None).await.unwrap_err();
    let shown = format!("{err} {err:?} {wrong:?}");
    assert!(shown.contains("401"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
    let me = client(&fake, true).me().await.unwrap();
    assert_eq!(me, ME_ID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_mentions_get_a_reply_draft_from_the_llm() {
    use jarvis_agents::llm::config::{ProviderConfig, ProviderKind};
    use jarvis_agents::llm::{LlmConfig, LlmRouter};
    use jarvis_agents::x::drafter::reply_draft_id;
    use jarvis_agents::x::ReplyDrafter;
    use jarvis_testkit::fakes::openai::FakeOpenAi;
    use jarvis_testkit::fakes::Reply;

    let env = Env::start().await;
    let fake = FakeX::start(BEARER, USER_TOKEN).await;
    let model = FakeOpenAi::start().await;
    model.set_default(Reply::text("Thanks for the shout-out!"));
    let mut llm = LlmConfig {
        providers: [(
            "local".to_string(),
            ProviderConfig {
                kind: ProviderKind::Openai,
                base_url: model.url(),
                api_key: None,
                timeout_ms: None,
            },
        )]
        .into_iter()
        .collect(),
        routes: [("chat".to_string(), vec!["local/test-model".to_string()])]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    llm.backoff_ms = 10;
    llm.validate().unwrap();
    let (stop, _) = tokio::sync::watch::channel(false);
    tokio::spawn(jarvis_agents::llm::service::serve_commands(
        Arc::new(LlmRouter::new(llm, env.store.clone())),
        env.client.clone(),
        until(&stop),
    ));
    let outbox = outbox(&env, &fake, OutboxSettings::default());
    let p = poller(&env, &fake, &[])
        .with_drafter(ReplyDrafter::new(env.client.clone(), outbox.clone()));
    // The backlog found by the very first poll only sets the cursor.
    let _ = fake.add_mention("@jarvis_bot old news", "a", "2024-03-01T09:00:00.000Z");
    p.poll_mentions().await.unwrap();
    assert!(outbox.pending().await.unwrap().is_empty());
    eventually(Duration::from_secs(30), "jarvis-llm", || async {
        env.client
            .request("jarvis.cmd.llm.usage", "{}".into())
            .await
            .ok()
    })
    .await;
    let id = fake.add_mention(
        "@jarvis_bot love the $SOL calls",
        "fan",
        "2024-03-01T10:00:00.000Z",
    );
    assert_eq!(p.poll_mentions().await.unwrap().received, 1);
    let drafts = outbox.pending().await.unwrap();
    assert_eq!(drafts.len(), 1);
    assert_eq!(drafts[0].draft_id, reply_draft_id(&id));
    assert_eq!(drafts[0].text, "Thanks for the shout-out!");
    assert_eq!(drafts[0].in_reply_to.as_deref(), Some(id.as_str()));
    assert_eq!(
        drafts[0].at,
        "2024-03-01T10:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    );
    assert!(
        fake.posted().is_empty(),
        "a reply is a draft until approved"
    );
    let _ = stop.send(true);
}

const CONSUMER_KEY: &str = "ck-xvz1evFS4wEEPTGEFPHBog";
const CONSUMER_SECRET: &str = "cs-s3cret-kAcSOqF21Fu85e7zjz7ZN2U4";
const ACCESS_TOKEN: &str = "370773112-at-s3cret-GmHxMAgYyLbNEtIK";
const ACCESS_TOKEN_SECRET: &str = "ats-s3cret-LswwdoUaIvS8ltyTt5jk";

fn oauth1_keys() -> OAuth1Keys {
    OAuth1Keys {
        consumer_key: CONSUMER_KEY.into(),
        consumer_secret: CONSUMER_SECRET.into(),
        access_token: ACCESS_TOKEN.into(),
        access_token_secret: ACCESS_TOKEN_SECRET.into(),
    }
}

/// `[x]` with OAuth 1.0a user context (no user token), against the fake.
fn oauth1_config(fake: &FakeX, consumer_secret: &str) -> XConfig {
    XConfig {
        bearer_token: Some(Secret::new(BEARER)),
        consumer_key: Some(CONSUMER_KEY.into()),
        consumer_secret: Some(Secret::new(consumer_secret)),
        access_token: Some(Secret::new(ACCESS_TOKEN)),
        access_token_secret: Some(Secret::new(ACCESS_TOKEN_SECRET)),
        api_url: fake.url(),
        ..XConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_oauth1_an_approved_draft_is_posted_with_a_verified_signature() {
    let env = Env::start().await;
    let fake = FakeX::start(BEARER, USER_TOKEN).await;
    fake.accept_oauth1(oauth1_keys());
    let config = oauth1_config(&fake, CONSUMER_SECRET);
    config.validate().unwrap();
    let api = config.client().unwrap();
    assert!(api.can_post());
    // GET /2/users/me in user context.
    assert_eq!(api.me().await.unwrap(), ME_ID);
    let outbox = Outbox::new(
        env.store.clone(),
        api.clone(),
        OutboxSettings::default(),
        Arc::new(SystemClock),
    );
    let m = EventMetadata::root("test");
    let mut reply = text("gm, signed & sealed: 100% $SOL ☀");
    reply.in_reply_to = Some("1760000000000000001".into());
    let draft = outbox
        .draft(reply, at("2024-03-01T10:00:00Z"), &m)
        .await
        .unwrap();
    assert_eq!(draft.status, DraftStatus::Pending);
    assert!(fake.posted().is_empty());
    let posted = outbox.approve(draft.draft_id, "op").await.unwrap();
    assert_eq!(posted.status, DraftStatus::Posted);
    let tweets = fake.posted();
    assert_eq!(tweets.len(), 1, "{tweets:?}");
    assert_eq!(tweets[0].text, "gm, signed & sealed: 100% $SOL ☀");
    assert_eq!(
        tweets[0].in_reply_to.as_deref(),
        Some("1760000000000000001")
    );
    assert_eq!(posted.tweet_id.as_deref(), Some(tweets[0].id.as_str()));
    assert!(
        fake.oauth1_refusals().is_empty(),
        "{:?}",
        fake.oauth1_refusals()
    );
    // Signed as OAuth 1.0a (the fake recomputed the signature), with fresh nonces, no secret on the wire.
    let mut nonces = Vec::new();
    for r in fake
        .requests(XEndpoint::Post)
        .into_iter()
        .chain(fake.requests(XEndpoint::Me))
    {
        let auth = r.authorization.unwrap();
        assert!(auth.starts_with("OAuth oauth_consumer_key="), "{auth}");
        assert!(
            auth.contains(r#"oauth_signature_method="HMAC-SHA1""#),
            "{auth}"
        );
        assert!(auth.contains(r#"oauth_version="1.0""#), "{auth}");
        assert!(!auth.contains(CONSUMER_SECRET) && !auth.contains(ACCESS_TOKEN_SECRET));
        let nonce = auth
            .split(", ")
            .find_map(|f| f.strip_prefix("oauth_nonce="))
            .unwrap()
            .to_string();
        nonces.push(nonce);
    }
    assert_eq!(nonces.len(), 2);
    assert_ne!(nonces[0], nonces[1]);
    // Reads still use the app's bearer token.
    api.mentions(ME_ID, None, 10, None).await.unwrap();
    assert_eq!(
        fake.requests(XEndpoint::Mentions)[0].authorization,
        Some(format!("Bearer {BEARER}"))
    );
    assert_no_secret_stored(&env.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_oauth1_a_wrong_consumer_secret_is_a_401_that_shows_no_secret() {
    let env = Env::start().await;
    let fake = FakeX::start(BEARER, USER_TOKEN).await;
    fake.accept_oauth1(oauth1_keys());
    let wrong_secret = "cs-s3cret-WRONG-wrong-wrong";
    let config = oauth1_config(&fake, wrong_secret);
    let api = config.client().unwrap();
    let err = api.post("gm", None).await.unwrap_err();
    let err_me = api.me().await.unwrap_err();
    let refusals = fake.oauth1_refusals();
    assert_eq!(
        refusals,
        [
            "the signature does not match",
            "the signature does not match"
        ]
    );
    assert!(fake.posted().is_empty());
    let outbox = Outbox::new(
        env.store.clone(),
        api.clone(),
        OutboxSettings::default(),
        Arc::new(SystemClock),
    );
    let m = EventMetadata::root("test");
    let draft = outbox
        .draft(text("wagmi"), at("2024-03-01T10:00:00Z"), &m)
        .await
        .unwrap();
    // X's refusal is recorded as `TweetPostFailed` (its reason is the error logged), not an error.
    let failed = outbox.approve(draft.draft_id, "op").await.unwrap();
    assert_eq!(failed.status, DraftStatus::Failed);
    assert!(fake.posted().is_empty());
    let recorded = events_of_type(&env.store, "TweetPostFailed", 1).await;
    let reason = recorded[0].payload.to_string();
    assert!(reason.contains("401"), "{reason}");
    let shown = format!(
        "{err} {err:?} {err_me} {err_me:?} {reason} {failed:?} {api:?} {config:?} {refusals:?}"
    );
    assert!(shown.contains("401"), "{shown}");
    assert!(!shown.contains("s3cret"), "a secret in {shown}");
    assert_no_secret_stored(&env.store).await;

    // A correct signature from an unknown access token is refused too, and so is a signed request to a fake
    // that does not know OAuth 1.0a.
    let mut other = oauth1_config(&fake, CONSUMER_SECRET);
    other.access_token = Some(Secret::new("someone-else"));
    let err = other.client().unwrap().me().await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    assert_eq!(
        fake.oauth1_refusals().last().map(String::as_str),
        Some("unknown oauth_token")
    );
    let plain = FakeX::start(BEARER, USER_TOKEN).await;
    let err = oauth1_config(&plain, CONSUMER_SECRET)
        .client()
        .unwrap()
        .me()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}

/// The gateway's `/api/v1/commands/x/drafts` routes go through the same `jarvis-x` service as Telegram:
/// list, reject, approve (posted once), over a real socket and a real nats-server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_lists_rejects_and_approves_drafts_through_jarvis_x() {
    use jarvis_gateway::auth::Role;
    use jarvis_gateway::config::{Secret, UserConfig};
    let env = Env::start().await;
    let fake = FakeX::start(BEARER, USER_TOKEN).await;
    let (stop, _) = tokio::sync::watch::channel(false);
    let outbox = outbox(&env, &fake, OutboxSettings::default());
    tokio::spawn(serve_commands(
        outbox.clone(),
        env.client.clone(),
        until(&stop),
    ));
    let config = jarvis_gateway::GatewayConfig {
        users: vec![UserConfig {
            username: "otto".into(),
            password_hash: Secret(jarvis_gateway::auth::hash_password("pw-otto").unwrap()),
            role: Role::Operator,
            totp_secret: None,
        }],
        ..Default::default()
    };
    let state = jarvis_gateway::AppState::new(
        config,
        Arc::new(jarvis_gateway::memory::MemoryModels::default()),
        Some(jarvis_gateway::Bus {
            client: env.client.clone(),
            js: env.js.clone(),
        }),
        None,
    );
    let token = state.auth.issue("otto", false).unwrap().access_token;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "http://{}/api/v1/commands/x/drafts",
        listener.local_addr().unwrap()
    );
    tokio::spawn(jarvis_gateway::serve(
        listener,
        jarvis_gateway::app(state),
        until(&stop),
    ));
    let http = reqwest::Client::new();
    let metadata = EventMetadata::root("test");
    let mut ids = Vec::new();
    for text in ["gm, $SOL holders", "wagmi"] {
        let request = DraftRequest {
            text: text.into(),
            in_reply_to: None,
            requested_by: Some("test".into()),
            draft_id: None,
        };
        let draft = eventually(Duration::from_secs(30), "a draft", || async {
            outbox
                .draft(request.clone(), chrono::Utc::now(), &metadata)
                .await
                .ok()
        })
        .await;
        ids.push(draft.draft_id.to_string());
    }
    let listed: Value = eventually(Duration::from_secs(30), "jarvis-x answering", || async {
        let r = http.get(&base).bearer_auth(&token).send().await.ok()?;
        r.status().is_success().then_some(())?;
        r.json().await.ok()
    })
    .await;
    let listed: Vec<&str> = listed["drafts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["draft_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    // No credentials: refused before the bus.
    let anonymous = http
        .post(format!("{base}/{}/approve", ids[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let rejected: Value = http
        .post(format!("{base}/{}/reject", ids[1]))
        .bearer_auth(&token)
        .json(&json!({"reason": "off message"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    for _ in 0..2 {
        let approved = http
            .post(format!("{base}/{}/approve", ids[0]))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert!(approved.status().is_success(), "{}", approved.status());
        let approved: Value = approved.json().await.unwrap();
        assert_eq!(approved["status"], "posted", "{approved}");
    }
    let posted = fake.posted();
    assert_eq!(posted.len(), 1, "approved twice, posted once: {posted:?}");
    assert_eq!(posted[0].text, "gm, $SOL holders");
    // The approver is recorded as the gateway's user.
    let approvals = events_of_type(&env.store, "TweetApproved", 1).await;
    assert!(
        approvals[0].payload.to_string().contains("otto"),
        "{}",
        approvals[0].payload
    );
    let _ = stop.send(true);
}
