//! Backtest runs: the report a run produced, stored so the dashboard can list past runs.
//!
//! A run's id derives from its inputs (data, configuration, seed), so recording the same run twice is a
//! no-op, and a run that claims the same id with a different report is refused: same inputs must give the
//! same report.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::JarvisAggregate;

/// What a backtest read from one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DataSummary {
    /// The file (its name) or `store`.
    pub source: String,
    /// The pair.
    pub symbol: String,
    /// Candles used (in the time range).
    pub candles: u64,
    /// Rows dropped by the duplicate rule (the same as `jarvis ingest`'s).
    pub duplicates_dropped: u64,
    /// Rows that failed to parse and were skipped (only with `--skip-bad`; otherwise the run refuses).
    pub bad_rows_skipped: u64,
    /// Holes in the series (never filled in).
    pub gaps: u64,
    /// Candles missing in those holes.
    pub missing_candles: u64,
    /// Open time of the first candle used.
    pub first: Option<DateTime<Utc>>,
    /// Open time of the last candle used.
    pub last: Option<DateTime<Utc>>,
}

/// How many orders ended how.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCounts {
    /// Proposed by the strategy.
    pub proposed: u64,
    /// Approved by risk.
    pub approved: u64,
    /// Rejected by risk.
    pub rejected: u64,
    /// Submitted to the venue.
    pub submitted: u64,
    /// Fills recorded.
    pub fills: u64,
    /// Orders that failed at the venue.
    pub failed: u64,
}

/// The outcome of a backtest. Ratios are plain numbers (0.1 = 10 %); money is decimal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BacktestReport {
    /// The strategy's name.
    pub strategy: String,
    /// The seed the run used.
    pub seed: u64,
    /// What was read.
    pub data: Vec<DataSummary>,
    /// Close time of the first candle.
    pub start: Option<DateTime<Utc>>,
    /// Close time of the last candle.
    pub end: Option<DateTime<Utc>>,
    /// Candles replayed.
    pub candles: u64,
    /// Recorded sentiment scores replayed (from the store), each at its event time.
    #[serde(default)]
    pub sentiment_scores: u64,
    /// LLM calls (`treasury.llm_review`) answered from recorded `LlmCallCompleted` events by prompt hash.
    #[serde(default)]
    pub llm_answers_replayed: u64,
    /// LLM calls with no recorded answer that got the configured fallback answer instead.
    #[serde(default)]
    pub llm_fallbacks: u64,
    /// Events the run produced (candles included).
    pub events: u64,
    /// Starting cash.
    pub initial_capital: Decimal,
    /// Equity at the last mark.
    pub final_equity: Decimal,
    /// `final / initial − 1`.
    pub total_return: f64,
    /// Compound annual growth rate over the run's span.
    pub cagr: f64,
    /// Annualised Sharpe ratio of daily returns (365 days, no risk-free rate).
    pub sharpe: f64,
    /// Annualised Sortino ratio of daily returns.
    pub sortino: f64,
    /// Largest peak-to-trough fall of equity, as a fraction of the peak.
    pub max_drawdown: f64,
    /// When the equity peaked before that fall.
    pub max_drawdown_peak_at: Option<DateTime<Utc>>,
    /// When the fall bottomed.
    pub max_drawdown_trough_at: Option<DateTime<Utc>>,
    /// Sells with a positive net realised P&L, over all sells that realised P&L.
    pub win_rate: f64,
    /// Gross profit over gross loss of those sells (net of fees); `null` when nothing was lost.
    pub profit_factor: Option<f64>,
    /// Net realised P&L (fees of sells deducted).
    pub realized_pnl: Decimal,
    /// Fills.
    pub trades: u64,
    /// Fees paid.
    pub fees: Decimal,
    /// Share of the run's time with a position open.
    pub exposure_time: f64,
    /// Buying every symbol equally at its first close and holding to its last.
    pub buy_and_hold_return: f64,
    /// Orders by outcome.
    pub orders: OrderCounts,
    /// Risk rejections by rule.
    pub rejections_by_rule: BTreeMap<String, u64>,
}

/// Commands of a backtest run.
#[derive(Debug, Clone, PartialEq)]
pub enum BacktestCommand {
    /// Record the finished run.
    Complete {
        /// The report.
        report: Box<BacktestReport>,
        /// What the run was asked (command line, configuration digest), for the dashboard.
        parameters: BTreeMap<String, String>,
        /// When the run finished (wall clock: a run is an operator's action, not market history).
        at: DateTime<Utc>,
    },
}

/// Events of a backtest run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum BacktestEvent {
    /// A run finished with this report.
    BacktestCompleted {
        /// The report.
        report: Box<BacktestReport>,
        /// What the run was asked.
        parameters: BTreeMap<String, String>,
        /// When it finished.
        at: DateTime<Utc>,
    },
}

impl BacktestEvent {
    /// Every event type of this enum with its current version.
    pub const TYPES: &'static [(&'static str, u32)] = &[("BacktestCompleted", 1)];
}

impl DomainEvent for BacktestEvent {
    fn event_type(&self) -> String {
        match self {
            Self::BacktestCompleted { .. } => "BacktestCompleted".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a run could not be recorded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BacktestError {
    /// The run id was recorded with a different report: the same inputs gave another result.
    #[error(
        "run recorded before with a different report: the same inputs must give the same report"
    )]
    DifferentReport,
}

/// One backtest run, id derived from its inputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BacktestRun {
    report: Option<Box<BacktestReport>>,
}

impl BacktestRun {
    /// The recorded report, if any.
    pub fn report(&self) -> Option<&BacktestReport> {
        self.report.as_deref()
    }
}

impl fmt::Display for BacktestRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.report {
            Some(r) => write!(f, "backtest of {} ({} candles)", r.strategy, r.candles),
            None => write!(f, "backtest not recorded"),
        }
    }
}

impl Aggregate for BacktestRun {
    const TYPE: &'static str = "BacktestRun";
    type Command = BacktestCommand;
    type Event = BacktestEvent;
    type Error = BacktestError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let BacktestCommand::Complete {
            report,
            parameters,
            at,
        } = command;
        match &self.report {
            Some(recorded) if **recorded == *report => Ok(()),
            Some(_) => Err(BacktestError::DifferentReport),
            None => {
                sink.write(
                    BacktestEvent::BacktestCompleted {
                        report,
                        parameters,
                        at,
                    },
                    self,
                )
                .await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        let BacktestEvent::BacktestCompleted { report, .. } = event;
        self.report = Some(report);
    }
}

impl JarvisAggregate for BacktestRun {
    const CONTEXT: &'static str = "backtest";
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<BacktestRun>;

    fn report(trades: u64) -> BacktestReport {
        BacktestReport {
            strategy: "rebalance".into(),
            seed: 1,
            data: vec![],
            start: None,
            end: None,
            candles: 10,
            sentiment_scores: 0,
            llm_answers_replayed: 0,
            llm_fallbacks: 0,
            events: 30,
            initial_capital: Decimal::from(10_000),
            final_equity: Decimal::from(10_100),
            total_return: 0.01,
            cagr: 0.5,
            sharpe: 1.0,
            sortino: 1.5,
            max_drawdown: 0.02,
            max_drawdown_peak_at: None,
            max_drawdown_trough_at: None,
            win_rate: 0.5,
            profit_factor: Some(2.0),
            realized_pnl: Decimal::from(100),
            trades,
            fees: Decimal::ONE,
            exposure_time: 0.7,
            buy_and_hold_return: 0.02,
            orders: OrderCounts::default(),
            rejections_by_rule: BTreeMap::new(),
        }
    }

    fn complete(trades: u64) -> BacktestCommand {
        BacktestCommand::Complete {
            report: Box::new(report(trades)),
            parameters: BTreeMap::new(),
            at: "2026-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    fn completed(trades: u64) -> BacktestEvent {
        BacktestEvent::BacktestCompleted {
            report: Box::new(report(trades)),
            parameters: BTreeMap::new(),
            at: "2026-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn a_finished_run_is_recorded() {
        Given::with(())
            .given_no_previous_events()
            .when(complete(3))
            .then_expect_events(vec![completed(3)]);
    }

    #[test]
    fn recording_the_same_run_again_is_a_no_op() {
        Given::with(())
            .given(vec![completed(3)])
            .when(complete(3))
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_same_run_with_another_report_is_refused() {
        Given::with(())
            .given(vec![completed(3)])
            .when(complete(4))
            .then_expect_error(BacktestError::DifferentReport);
    }
}
