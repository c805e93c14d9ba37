//! The backtest engine on the real candle files: determinism, look-ahead safety, flat memory, merging.

use std::path::PathBuf;
use std::sync::Arc;

use jarvis_agents::trading::TradingSettings;
use jarvis_agents::treasury::{Proposal, Strategy, StrategyInput};
use jarvis_backtest::{read_files, Backtest, BacktestError, Data, MemoryLedger, Range, Sinks};
use jarvis_domain::market::MarketFeed;
use jarvis_domain::trading::{PricePoint, Rationale, Side};
use jarvis_domain::Candle;
use rust_decimal::Decimal;

fn file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../data")
        .join(name)
}

fn sol() -> Data {
    read_files(&[file("binance_solusdt_1h.csv")], Range::default(), false).unwrap()
}

fn backtest() -> Backtest {
    let mut settings = TradingSettings::default();
    // Trade often, so that the report has something to say.
    settings.strategy.drift_band = Decimal::new(1, 2);
    Backtest {
        settings,
        seed: 7,
        llm: None,
    }
}

fn report_json(data: &Data) -> String {
    let outcome = futures::executor::block_on(backtest().run(data, Sinks::default())).unwrap();
    serde_json::to_string_pretty(&outcome.report).unwrap()
}

#[test]
fn same_inputs_and_seed_give_a_byte_identical_report_even_on_two_threads() {
    let data = Arc::new(sol());
    let first = report_json(&data);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let data = Arc::clone(&data);
            std::thread::spawn(move || report_json(&data))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), first);
    }
    let report: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert!(report["trades"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(report["candles"], 5_363);
    assert_eq!(report["data"][0]["gaps"], 2);
    assert_eq!(report["data"][0]["missing_candles"], 6);
}

/// A strategy that reads the future: it holds the whole file and relies on the next candle's close.
struct Peeking {
    future: Vec<Candle>,
}

impl Strategy for Peeking {
    fn name(&self) -> &str {
        "peeking"
    }

    fn decide(&self, input: &StrategyInput<'_>) -> Vec<Proposal> {
        let next = self
            .future
            .iter()
            .find(|c| c.open_time > input.candle.open_time);
        next.map(|next| Proposal {
            symbol: next.symbol.clone(),
            side: Side::Buy,
            quantity: Decimal::ONE,
            reference: PricePoint {
                symbol: next.symbol.clone(),
                price: next.close,
                at: next.close_time,
            },
            rationale: Rationale {
                strategy: "peeking".into(),
                rule: "knows the future".into(),
                inputs: serde_json::Value::Null.into(),
                evidence: vec![],
                summary: "buys what it knows will rise".into(),
            },
        })
        .into_iter()
        .collect()
    }
}

#[test]
fn a_strategy_that_peeks_at_later_prices_stops_the_run_loudly() {
    let data = sol();
    let peeking = Peeking {
        future: data.candles.clone(),
    };
    let err = futures::executor::block_on(backtest().run_with(
        &data,
        Box::new(peeking),
        Sinks::default(),
    ))
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BacktestError::Stopped { .. }), "{text}");
    assert!(
        text.contains("look-ahead") && text.contains("peeking"),
        "{text}"
    );
}

#[test]
fn three_symbols_merge_by_time_with_the_ingest_duplicate_rule() {
    let data = read_files(
        &[
            file("binance_btcusdt_1h.csv"),
            file("binance_ethusdt_1h.csv"),
            file("binance_solusdt_1h.csv"),
        ],
        Range::default(),
        false,
    )
    .unwrap();
    assert_eq!(data.candles.len(), 37_703 + 37_703 + 5_363);
    assert!(data.candles.windows(2).all(
        |w| (w[0].close_time, w[0].symbol.as_str()) <= (w[1].close_time, w[1].symbol.as_str())
    ));
    let dropped: Vec<u64> = data
        .summaries
        .iter()
        .map(|s| s.duplicates_dropped)
        .collect();
    assert_eq!(dropped, [2_649, 2_649, 0]);
}

#[test]
fn a_range_with_no_data_for_a_symbol_names_it() {
    let range = Range {
        start: Some("2015-01-01T00:00:00Z".parse().unwrap()),
        end: Some("2016-01-01T00:00:00Z".parse().unwrap()),
    };
    let err = read_files(&[file("binance_solusdt_1h.csv")], range, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SOL/USDT") && err.contains("no candles between"),
        "{err}"
    );
}

#[test]
fn an_empty_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("binance_solusdt_1h.csv");
    std::fs::write(
        &path,
        "unix,date,time,symbol,open,high,low,close,Volume SOL,Volume USDT,tradecount\n",
    )
    .unwrap();
    let err = read_files(&[path], Range::default(), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("binance_solusdt_1h.csv") && err.contains("no candles"),
        "{err}"
    );
}

#[test]
fn memory_stays_flat_the_ledger_keeps_only_recent_days_and_open_orders() {
    let data = sol();
    let ledger = MemoryLedger::new(1);
    // The engine evicts as it goes; replaying through a ledger we can inspect shows what it keeps.
    let outcome =
        futures::executor::block_on(backtest().run_on(&ledger, &data, Sinks::default())).unwrap();
    assert!(outcome.report.trades > 0);
    assert!(
        ledger.count::<MarketFeed>() <= 4,
        "market days kept: {}",
        ledger.count::<MarketFeed>()
    );
    assert!(
        ledger.count::<jarvis_domain::trading::order::Order>() <= 2,
        "orders kept: {}",
        ledger.count::<jarvis_domain::trading::order::Order>()
    );
}

#[test]
fn recorded_sentiment_reaches_the_strategy_and_is_evidence_of_its_proposals() {
    use jarvis_agents::ledger::Ledger;
    use jarvis_agents::trading::TradingPipeline;
    use jarvis_backtest::record_candle;
    use jarvis_domain::sentiment::{
        SentimentCommand, SentimentLabel, SentimentScore, TokenSentiment,
    };
    use jarvis_domain::trading::OrderEvent;
    use jarvis_domain::EventMetadata;
    use std::sync::Mutex;

    let data = sol();
    let candles = &data.candles[..60];
    let ledger = MemoryLedger::new(9);
    let proposals = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&proposals);
    ledger.observe(Box::new(move |_, _, _, event| {
        if let Some(OrderEvent::TradeProposed(p)) = event.downcast_ref::<OrderEvent>() {
            seen.lock().unwrap().push(p.rationale.clone());
        }
    }));
    let root = ledger.next_ref(None);
    let metadata = EventMetadata {
        correlation_id: root.event_id,
        causation_id: root.event_id,
        source: "test".into(),
    };
    // A bullish score of SOL, at the first candle's close.
    let score = SentimentScore {
        token: "SOL".into(),
        score: Decimal::new(9, 1),
        label: SentimentLabel::Bullish,
        confidence: Decimal::ONE,
        model: "test".into(),
        source_event: root.event_id,
        source_type: "TweetReceived".into(),
        at: candles[0].close_time,
    };
    let id = score.aggregate_id();
    let mut settings = backtest().settings;
    settings.strategy.drift_band = Decimal::new(1, 3);
    let pipeline = TradingPipeline::new(&ledger, settings);
    futures::executor::block_on(async {
        ledger
            .execute::<TokenSentiment>(&id, SentimentCommand::Record(score), &metadata, false)
            .await
            .unwrap();
        let (scored, _) = ledger
            .find_event::<TokenSentiment, _>(&id, |_| true)
            .await
            .unwrap()
            .unwrap();
        for candle in candles {
            let closed = record_candle(&ledger, candle, &metadata).await.unwrap();
            pipeline.on_candle(&closed, candle.clone()).await.unwrap();
        }
        let proposals = proposals.lock().unwrap();
        let with_sentiment: Vec<_> = proposals
            .iter()
            .filter(|r| r.evidence.contains(&scored.event_id))
            .collect();
        assert!(!with_sentiment.is_empty(), "{proposals:?}");
        assert_eq!(with_sentiment[0].inputs["sentiment_token"], "SOL");
        assert_eq!(with_sentiment[0].inputs["sentiment_score"], "0.9");
    });
}

/// A candle delivered again after later candles moved the portfolio on (its acknowledgement was lost when
/// NATS restarted) keeps its recorded decision: nothing new is recorded and nothing is refused. (Deciding
/// it again could propose something else under the same order id, which the order refuses: that sent 48
/// candles to the dead-letter stream in `tests/faults.rs`'s NATS restart before the redelivery flag.)
#[test]
fn a_candle_redelivered_after_later_ones_keeps_its_recorded_decision() {
    use jarvis_agents::trading::TradingPipeline;
    use jarvis_backtest::record_candle;
    use jarvis_domain::trading::OrderEvent;
    use jarvis_domain::EventMetadata;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let data = sol();
    let candles = &data.candles[..80];
    let ledger = MemoryLedger::new(9);
    let recorded = Arc::new(AtomicUsize::new(0));
    let proposals = Arc::new(AtomicUsize::new(0));
    let (r, p) = (Arc::clone(&recorded), Arc::clone(&proposals));
    ledger.observe(Box::new(move |_, _, _, event| {
        r.fetch_add(1, Ordering::SeqCst);
        if let Some(OrderEvent::TradeProposed(_)) = event.downcast_ref::<OrderEvent>() {
            p.fetch_add(1, Ordering::SeqCst);
        }
    }));
    let root = ledger.next_ref(None);
    let metadata = EventMetadata {
        correlation_id: root.event_id,
        causation_id: root.event_id,
        source: "test".into(),
    };
    let mut settings = backtest().settings;
    settings.strategy.drift_band = Decimal::new(1, 3);
    let pipeline = TradingPipeline::new(&ledger, settings);
    futures::executor::block_on(async {
        // Each candle, and whether deciding it proposed anything.
        let mut handled = Vec::new();
        for candle in candles {
            let closed = record_candle(&ledger, candle, &metadata).await.unwrap();
            let before = proposals.load(Ordering::SeqCst);
            pipeline.on_candle(&closed, candle.clone()).await.unwrap();
            handled.push((
                closed,
                candle.clone(),
                proposals.load(Ordering::SeqCst) > before,
            ));
        }
        // The latest of them (the market days kept in memory hold their history), then 3 more candles.
        let deciding: Vec<_> = handled[..handled.len() - 3]
            .iter()
            .rev()
            .filter(|h| h.2)
            .take(8)
            .collect();
        assert!(deciding.len() >= 3, "the strategy proposed too rarely");
        let events = recorded.load(Ordering::SeqCst);
        for (closed, candle, _) in &deciding {
            pipeline
                .candle(closed, candle.clone(), true)
                .await
                .unwrap_or_else(|e| panic!("redelivered {}: {e}", candle.close_time));
        }
        assert_eq!(
            recorded.load(Ordering::SeqCst),
            events,
            "a redelivered candle recorded something"
        );
    });
}
