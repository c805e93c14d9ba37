//! Backtests: the same agents on an in-process store under a virtual clock, fed from candle files (read by
//! the same rules as `jarvis ingest`) or from candles recorded in the event store.
//!
//! A backtest runs [`TradingPipeline`], the code `jarvis up` runs, on a [`MemoryLedger`] instead of the
//! Postgres event store: the same strategy, risk book, paper venue and portfolio, command for command.
//! The virtual clock is the candles' own time: every rule of the pipeline decides by event time, so
//! nothing needs a wall clock. Candles are fed in close-time order; the strategy sees only the candle that
//! just closed and the history before it, and a proposal relying on a later price stops the run.
//!
//! Same data, configuration and seed give the same report, byte for byte: event ids derive from the seed,
//! and nothing depends on the wall clock, hash order or threads.

pub mod data;
pub mod ledger;
pub mod report;
pub mod sweep;

use std::sync::{Arc, Mutex};

use chrono::Duration;
use jarvis_agents::ledger::Ledger;
use jarvis_agents::llm::RecordedOracle;
use jarvis_agents::trading::{TradingPipeline, TradingSettings};
use jarvis_agents::treasury::Strategy;
use jarvis_bus::HandlerError;
use jarvis_domain::backtest::BacktestReport;
use jarvis_domain::market::{MarketFeed, MarketFeedCommand, MarketFeedEvent, MarketFeedId};
use jarvis_domain::sentiment::{SentimentCommand, TokenSentiment};
use jarvis_domain::trading::order::{Order, OrderStatus};
use jarvis_domain::{Candle, EventMetadata, EventRef};

pub use data::{read_files, Data, DataError, Range};
pub use ledger::MemoryLedger;
pub use report::{Accumulator, Sinks};

/// Why a run stopped before its end. A stopped run has no report: a partial report is never presented
/// as complete.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The input cannot be used.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The pipeline refused a candle (a look-ahead, a refused command): the run is not valid.
    #[error("stopped at the {symbol} candle closing {close_time}: {reason}")]
    Stopped {
        /// The candle's pair.
        symbol: String,
        /// The candle's close time.
        close_time: String,
        /// What went wrong.
        reason: String,
    },
    /// The equity or trades CSV could not be written.
    #[error("writing the CSV output: {0}")]
    Output(#[from] std::io::Error),
}

/// One backtest: settings (strategy, limits, fill model, capital), a seed, and the recorded LLM answers.
#[derive(Debug, Clone)]
pub struct Backtest {
    /// What the pipeline trades with.
    pub settings: TradingSettings,
    /// Seeds the event ids (and anything random a strategy is given).
    pub seed: u64,
    /// Answers the LLM review (`treasury.llm_review`) from records by prompt hash; never a live provider.
    /// `None` answers nothing: a review then vetoes every proposal, as live trading with no LLM would.
    pub llm: Option<Arc<RecordedOracle>>,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The report.
    pub report: BacktestReport,
}

impl Backtest {
    /// Runs the default strategy of the settings on `data`.
    ///
    /// # Errors
    /// [`BacktestError`].
    pub async fn run(&self, data: &Data, sinks: Sinks) -> Result<Outcome, BacktestError> {
        let strategy = self.settings.strategy.build();
        self.run_with(data, strategy, sinks).await
    }

    /// Runs `strategy` on `data`.
    ///
    /// # Errors
    /// [`BacktestError`].
    pub async fn run_with(
        &self,
        data: &Data,
        strategy: Box<dyn Strategy>,
        sinks: Sinks,
    ) -> Result<Outcome, BacktestError> {
        let ledger = MemoryLedger::new(self.seed);
        self.run_on_with(&ledger, data, strategy, sinks).await
    }

    /// Runs the default strategy on `ledger` (fresh: a used ledger holds another run's books), which the
    /// caller can inspect afterwards.
    ///
    /// # Errors
    /// [`BacktestError`].
    pub async fn run_on(
        &self,
        ledger: &MemoryLedger,
        data: &Data,
        sinks: Sinks,
    ) -> Result<Outcome, BacktestError> {
        let strategy = self.settings.strategy.build();
        self.run_on_with(ledger, data, strategy, sinks).await
    }

    async fn run_on_with(
        &self,
        ledger: &MemoryLedger,
        data: &Data,
        strategy: Box<dyn Strategy>,
        sinks: Sinks,
    ) -> Result<Outcome, BacktestError> {
        let name = strategy.name().to_string();
        let interval = data.longest_interval();
        let history_days = strategy.history_len() as i64 * interval / 86_400 + 2;
        let accumulator = Arc::new(Mutex::new(Accumulator::new(sinks)));
        let observed = Arc::clone(&accumulator);
        ledger.observe(Box::new(move |_, _, _, event| {
            observed.lock().expect("report lock").observe(event);
        }));
        let mut pipeline = TradingPipeline::with_strategy(ledger, self.settings.clone(), strategy);
        // Counters of this run's own, when several runs of a sweep share the records.
        let llm = self.llm.as_ref().map(|records| Arc::new(records.fork()));
        if let Some(llm) = &llm {
            pipeline = pipeline.with_reviewer(llm.clone());
        }
        let story = ledger.next_ref(None);
        let mut day = None;
        let mut scores = data.sentiment.iter().peekable();
        for candle in &data.candles {
            let stopped = |reason: String| BacktestError::Stopped {
                symbol: candle.symbol.to_string(),
                close_time: candle.close_time.to_rfc3339(),
                reason,
            };
            let today = candle.open_time.date_naive();
            if day != Some(today) {
                day = Some(today);
                evict(ledger, today - Duration::days(history_days));
            }
            accumulator
                .lock()
                .expect("report lock")
                .candle(&candle.symbol, candle.close);
            // The sentiment agent's scores up to this close, recorded as it recorded them.
            while let Some(score) = scores.next_if(|s| s.at <= candle.close_time) {
                let metadata = EventMetadata {
                    correlation_id: score.source_event,
                    causation_id: score.source_event,
                    source: "sentiment".into(),
                };
                ledger
                    .execute::<TokenSentiment>(
                        &score.aggregate_id(),
                        SentimentCommand::Record(score.clone()),
                        &metadata,
                        false,
                    )
                    .await
                    .map_err(|e| stopped(e.to_string()))?;
            }
            // The market agent records the candle; its CandleClosed is what the pipeline handles.
            let metadata = EventMetadata {
                correlation_id: story.event_id,
                causation_id: story.event_id,
                source: "market".into(),
            };
            let closed = record_candle(ledger, candle, &metadata)
                .await
                .map_err(|e| stopped(e.to_string()))?;
            pipeline
                .on_candle(&closed, candle.clone())
                .await
                .map_err(|e| stopped(e.to_string()))?;
        }
        let events = ledger.events_written();
        let sentiment_scores = (data.sentiment.len() - scores.count()) as u64;
        drop(pipeline);
        ledger.stop_observing();
        let accumulator = Arc::try_unwrap(accumulator)
            .map_err(|_| std::io::Error::other("the report is still shared"))?
            .into_inner()
            .expect("report lock");
        let span = (
            data.candles.first().map(|c| c.close_time),
            data.candles.last().map(|c| c.close_time),
        );
        let report = accumulator.finish(
            &name,
            self.seed,
            data.summaries.clone(),
            data.candles.len() as u64,
            events,
            span,
        )?;
        let report = BacktestReport {
            sentiment_scores,
            llm_answers_replayed: llm.as_ref().map_or(0, |l| l.replayed()),
            llm_fallbacks: llm.as_ref().map_or(0, |l| l.fell_back()),
            ..report
        };
        Ok(Outcome { report })
    }
}

/// Records `candle` on its market feed, as the market agent does, and returns the identity of its
/// `CandleClosed`: what the trading pipeline is handed.
///
/// # Errors
/// The feed refused the candle (invalid, or conflicting with the one recorded).
pub async fn record_candle(
    ledger: &MemoryLedger,
    candle: &Candle,
    metadata: &EventMetadata,
) -> Result<EventRef, HandlerError> {
    let feed = MarketFeedId::of(candle).text();
    let record = MarketFeedCommand::RecordCandle {
        feed: feed.clone(),
        candle: candle.clone(),
    };
    ledger
        .execute::<MarketFeed>(&feed, record, metadata, false)
        .await?;
    ledger
        .find_event_ref::<MarketFeed, _>(&feed, |e| {
            let MarketFeedEvent::CandleClosed(c) = e;
            c.open_time == candle.open_time
        })
        .await?
        .ok_or_else(|| HandlerError::Permanent("the candle was not recorded".into()))
}

/// Drops what the run no longer needs, so memory stays flat: market days older than the strategy's
/// history, and orders that can take no more fills.
fn evict(ledger: &MemoryLedger, oldest_day: chrono::NaiveDate) {
    ledger.retain::<MarketFeed>(|id, _| {
        id.rsplit('@')
            .next()
            .and_then(|d| d.parse::<chrono::NaiveDate>().ok())
            .is_none_or(|d| d >= oldest_day)
    });
    // Sentiment is read for today and yesterday only; the market history reaches further back.
    ledger.retain::<TokenSentiment>(|id, _| {
        id.rsplit('@')
            .next()
            .and_then(|d| d.parse::<chrono::NaiveDate>().ok())
            .is_none_or(|d| d >= oldest_day)
    });
    ledger.retain::<Order>(|_, order| {
        matches!(
            order.status(),
            OrderStatus::Submitted | OrderStatus::PartiallyFilled
        )
    });
}
