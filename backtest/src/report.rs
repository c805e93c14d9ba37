//! The report, computed as the events go by: memory does not grow with the length of the run. The equity
//! curve and the trades are written out as they happen, to writers the caller chooses (CSV files).

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use chrono::{DateTime, NaiveDate, Utc};
use jarvis_domain::backtest::{BacktestReport, DataSummary, OrderCounts};
use jarvis_domain::trading::order::OrderEvent;
use jarvis_domain::trading::portfolio::PortfolioEvent;
use jarvis_domain::trading::{RiskRule, Side};
use jarvis_domain::Symbol;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

/// Days per year for annualising: crypto trades every day.
const DAYS_PER_YEAR: f64 = 365.0;

/// Where the equity curve and the trades go as CSV; `None` drops them.
#[derive(Default)]
pub struct Sinks {
    /// `time,equity,cash,drawdown`.
    pub equity: Option<Box<dyn Write + Send>>,
    /// `time,order_id,symbol,side,quantity,price,fee,position_after,cash_after`.
    pub trades: Option<Box<dyn Write + Send>>,
}

/// Running sums of daily returns.
#[derive(Default)]
struct Returns {
    n: u64,
    sum: f64,
    sum_sq: f64,
    downside_sq: f64,
}

impl Returns {
    fn add(&mut self, r: f64) {
        self.n += 1;
        self.sum += r;
        self.sum_sq += r * r;
        if r < 0.0 {
            self.downside_sq += r * r;
        }
    }

    fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }

    fn sharpe(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let n = self.n as f64;
        let var = (self.sum_sq - self.sum * self.sum / n) / (n - 1.0);
        if var <= 0.0 {
            0.0
        } else {
            self.mean() / var.sqrt() * DAYS_PER_YEAR.sqrt()
        }
    }

    fn sortino(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let downside = (self.downside_sq / self.n as f64).sqrt();
        if downside == 0.0 {
            0.0
        } else {
            self.mean() / downside * DAYS_PER_YEAR.sqrt()
        }
    }
}

/// Folds the run's events into a report.
pub struct Accumulator {
    sinks: Sinks,
    sink_error: Option<std::io::Error>,
    initial: Decimal,
    equity: Option<Decimal>,
    cash: Decimal,
    first_mark: Option<DateTime<Utc>>,
    last_mark: Option<DateTime<Utc>>,
    peak: (Decimal, Option<DateTime<Utc>>),
    max_drawdown: (f64, Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    day: Option<(NaiveDate, Decimal)>,
    previous_day_close: Option<Decimal>,
    returns: Returns,
    positions: BTreeMap<Symbol, Decimal>,
    exposed_seconds: i64,
    trades: u64,
    fees: Decimal,
    realized: Decimal,
    wins: u64,
    losses: u64,
    gross_profit: Decimal,
    gross_loss: Decimal,
    orders: OrderCounts,
    /// Counted by rule; named (as the events name them) when the report is written.
    rejections: HashMap<RiskRule, u64>,
    first_close: BTreeMap<Symbol, Decimal>,
    last_close: BTreeMap<Symbol, Decimal>,
}

fn ratio(a: Decimal, b: Decimal) -> f64 {
    if b.is_zero() {
        return 0.0;
    }
    a.checked_div(b).and_then(|r| r.to_f64()).unwrap_or(0.0)
}

/// Six decimal places: enough for any report, and the same bytes on every run.
fn round(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1e6).round() / 1e6
    } else {
        0.0
    }
}

impl Accumulator {
    /// An accumulator writing to `sinks`.
    pub fn new(sinks: Sinks) -> Self {
        let mut acc = Self {
            sinks,
            sink_error: None,
            initial: Decimal::ZERO,
            equity: None,
            cash: Decimal::ZERO,
            first_mark: None,
            last_mark: None,
            peak: (Decimal::ZERO, None),
            max_drawdown: (0.0, None, None),
            day: None,
            previous_day_close: None,
            returns: Returns::default(),
            positions: BTreeMap::new(),
            exposed_seconds: 0,
            trades: 0,
            fees: Decimal::ZERO,
            realized: Decimal::ZERO,
            wins: 0,
            losses: 0,
            gross_profit: Decimal::ZERO,
            gross_loss: Decimal::ZERO,
            orders: OrderCounts::default(),
            rejections: HashMap::new(),
            first_close: BTreeMap::new(),
            last_close: BTreeMap::new(),
        };
        acc.write_header();
        acc
    }

    fn write_header(&mut self) {
        let equity = self
            .sinks
            .equity
            .as_mut()
            .map(|w| writeln!(w, "time,equity,cash,drawdown"));
        let trades = self.sinks.trades.as_mut().map(|w| {
            writeln!(
                w,
                "time,order_id,symbol,side,quantity,price,fee,position_after,cash_after"
            )
        });
        self.keep_error(equity);
        self.keep_error(trades);
    }

    fn keep_error(&mut self, result: Option<std::io::Result<()>>) {
        if let Some(Err(e)) = result {
            self.sink_error.get_or_insert(e);
        }
    }

    /// A candle the run replayed: the buy-and-hold benchmark's prices.
    pub fn candle(&mut self, symbol: &Symbol, close: Decimal) {
        if !self.first_close.contains_key(symbol) {
            self.first_close.insert(symbol.clone(), close);
        }
        match self.last_close.get_mut(symbol) {
            Some(last) => *last = close,
            None => {
                self.last_close.insert(symbol.clone(), close);
            }
        }
    }

    /// One event the run wrote.
    pub fn observe(&mut self, event: &dyn Any) {
        if let Some(e) = event.downcast_ref::<PortfolioEvent>() {
            self.portfolio(e);
        } else if let Some(e) = event.downcast_ref::<OrderEvent>() {
            match e {
                OrderEvent::TradeProposed(_) => self.orders.proposed += 1,
                OrderEvent::TradeApproved(_) => self.orders.approved += 1,
                OrderEvent::TradeRejected(rejected) => {
                    self.orders.rejected += 1;
                    // Every rule the order was rejected by: risk's, and the LLM review's.
                    for r in &rejected.reasons {
                        *self.rejections.entry(r.rule).or_default() += 1;
                    }
                }
                OrderEvent::OrderSubmitted(_) => self.orders.submitted += 1,
                OrderEvent::OrderFilled(_) => self.orders.fills += 1,
                OrderEvent::OrderFailed(_) | OrderEvent::QuoteRejected(_) => {
                    self.orders.failed += 1
                }
                OrderEvent::OrderSent(_) => {}
            }
        }
    }

    fn portfolio(&mut self, event: &PortfolioEvent) {
        match event {
            PortfolioEvent::PortfolioOpened { initial_cash, .. } => {
                self.initial = *initial_cash;
                self.cash = *initial_cash;
            }
            PortfolioEvent::PositionChanged {
                order_id,
                symbol,
                side,
                quantity,
                price,
                fee,
                position_after,
                cash_after,
                at,
                ..
            } => {
                self.trades += 1;
                self.fees += *fee;
                self.cash = *cash_after;
                if position_after.is_zero() {
                    self.positions.remove(symbol);
                } else {
                    self.positions.insert(symbol.clone(), *position_after);
                }
                let side = match side {
                    Side::Buy => "buy",
                    Side::Sell => "sell",
                };
                let row = self.sinks.trades.as_mut().map(|w| {
                    writeln!(
                        w,
                        "{},{order_id},{symbol},{side},{quantity},{price},{fee},{position_after},{cash_after}",
                        at.to_rfc3339()
                    )
                });
                self.keep_error(row);
            }
            PortfolioEvent::PnlRealized { pnl, fee, .. } => {
                let net = *pnl - *fee;
                self.realized += net;
                if net > Decimal::ZERO {
                    self.wins += 1;
                    self.gross_profit += net;
                } else {
                    self.losses += 1;
                    self.gross_loss -= net;
                }
            }
            PortfolioEvent::PortfolioMarked { at, equity, .. } => self.mark(*at, *equity),
        }
    }

    fn mark(&mut self, at: DateTime<Utc>, equity: Decimal) {
        if let Some(last) = self.last_mark {
            if !self.positions.is_empty() && at > last {
                self.exposed_seconds += (at - last).num_seconds();
            }
        }
        self.first_mark.get_or_insert(at);
        self.last_mark = Some(at);
        self.equity = Some(equity);
        // Daily returns, close to close.
        let today = at.date_naive();
        match self.day {
            Some((day, close)) if day != today => {
                if let Some(previous) = self.previous_day_close {
                    self.returns.add(ratio(close - previous, previous));
                }
                self.previous_day_close = Some(close);
                self.day = Some((today, equity));
            }
            Some((_, ref mut close)) => *close = equity,
            None => {
                self.previous_day_close = Some(self.initial);
                self.day = Some((today, equity));
            }
        }
        if equity > self.peak.0 || self.peak.1.is_none() {
            self.peak = (equity, Some(at));
        }
        let drawdown = ratio(self.peak.0 - equity, self.peak.0);
        if drawdown > self.max_drawdown.0 {
            self.max_drawdown = (drawdown, self.peak.1, Some(at));
        }
        let row = self.sinks.equity.as_mut().map(|w| {
            writeln!(
                w,
                "{},{equity},{},{}",
                at.to_rfc3339(),
                self.cash,
                round(drawdown)
            )
        });
        self.keep_error(row);
    }

    /// The report, once the run is over.
    ///
    /// # Errors
    /// A failure to write the CSV outputs.
    pub fn finish(
        mut self,
        strategy: &str,
        seed: u64,
        data: Vec<DataSummary>,
        candles: u64,
        events: u64,
        span: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    ) -> std::io::Result<BacktestReport> {
        // The last day's return.
        if let (Some((_, close)), Some(previous)) = (self.day, self.previous_day_close) {
            self.returns.add(ratio(close - previous, previous));
        }
        for w in [self.sinks.equity.as_mut(), self.sinks.trades.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Err(e) = w.flush() {
                self.sink_error.get_or_insert(e);
            }
        }
        if let Some(e) = self.sink_error {
            return Err(e);
        }
        let final_equity = self.equity.unwrap_or(self.initial);
        let total_return = ratio(final_equity - self.initial, self.initial);
        let seconds = match (self.first_mark, self.last_mark) {
            (Some(a), Some(b)) => (b - a).num_seconds(),
            _ => 0,
        };
        let years = seconds as f64 / (DAYS_PER_YEAR * 86_400.0);
        let cagr = if years > 0.0 && total_return > -1.0 {
            (1.0 + total_return).powf(1.0 / years) - 1.0
        } else {
            0.0
        };
        let sells = self.wins + self.losses;
        let buy_and_hold = if self.first_close.is_empty() {
            0.0
        } else {
            let sum: f64 = self
                .first_close
                .iter()
                .map(|(s, first)| ratio(self.last_close[s] - *first, *first))
                .sum();
            sum / self.first_close.len() as f64
        };
        Ok(BacktestReport {
            strategy: strategy.to_string(),
            seed,
            data,
            start: span.0,
            end: span.1,
            candles,
            sentiment_scores: 0,
            llm_answers_replayed: 0,
            llm_fallbacks: 0,
            events,
            initial_capital: self.initial,
            final_equity,
            total_return: round(total_return),
            cagr: round(cagr),
            sharpe: round(self.returns.sharpe()),
            sortino: round(self.returns.sortino()),
            max_drawdown: round(self.max_drawdown.0),
            max_drawdown_peak_at: self.max_drawdown.1,
            max_drawdown_trough_at: self.max_drawdown.2,
            win_rate: if sells == 0 {
                0.0
            } else {
                round(self.wins as f64 / sells as f64)
            },
            profit_factor: (!self.gross_loss.is_zero())
                .then(|| round(ratio(self.gross_profit, self.gross_loss))),
            realized_pnl: self.realized,
            trades: self.trades,
            fees: self.fees,
            exposure_time: if seconds > 0 {
                round(self.exposed_seconds as f64 / seconds as f64)
            } else {
                0.0
            },
            buy_and_hold_return: round(buy_and_hold),
            orders: self.orders,
            rejections_by_rule: self
                .rejections
                .into_iter()
                .map(|(rule, n)| {
                    let name = serde_json::to_value(rule)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_else(|| format!("{rule:?}"));
                    (name, n)
                })
                .collect(),
        })
    }
}
