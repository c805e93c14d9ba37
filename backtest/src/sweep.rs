//! Parameter sweeps: a grid of configurations, run in parallel on every core, ranked.
//!
//! Memory stays bounded however large the grid: points are generated one at a time as workers ask for
//! them, and only the best `top` results are kept.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Mutex;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::{Backtest, Data, Sinks};

/// Largest grid accepted: beyond this, a typo in a step is more likely than a wish.
pub const MAX_POINTS: u64 = 10_000_000;

/// One swept parameter: `key=from..to:step`, both ends included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepParam {
    /// The configuration key, e.g. `treasury.drift_band`.
    pub key: String,
    /// The values, in order.
    pub values: Vec<Decimal>,
}

/// A malformed `--sweep`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--sweep {given:?}: {reason}")]
pub struct SweepError {
    /// What was given.
    pub given: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for SweepParam {
    type Err = SweepError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| SweepError {
            given: s.to_string(),
            reason: reason.to_string(),
        };
        let (key, range) = s.split_once('=').ok_or_else(|| {
            err("expected key=from..to:step, e.g. treasury.drift_band=0.02..0.1:0.02")
        })?;
        let (span, step) = range.split_once(':').ok_or_else(|| err("missing :step"))?;
        let (from, to) = span
            .split_once("..")
            .ok_or_else(|| err("missing from..to"))?;
        let number = |v: &str, what: &str| {
            Decimal::from_str_exact(v.trim())
                .map_err(|_| err(&format!("{what} {v:?} is not a decimal number")))
        };
        let (from, to, step) = (
            number(from, "from")?,
            number(to, "to")?,
            number(step, "step")?,
        );
        if key.trim().is_empty() {
            return Err(err("empty key"));
        }
        if step <= Decimal::ZERO {
            return Err(err("step must be greater than zero"));
        }
        if to < from {
            return Err(err("to is less than from"));
        }
        let count = ((to - from) / step).floor() + Decimal::ONE;
        if count > Decimal::from(MAX_POINTS) {
            return Err(err(&format!("{count} values; at most {MAX_POINTS}")));
        }
        let mut values = Vec::new();
        let mut v = from;
        while v <= to {
            values.push(v.normalize());
            v += step;
        }
        Ok(Self {
            key: key.trim().to_string(),
            values,
        })
    }
}

/// The points of a grid, one at a time (the last parameter varies fastest).
pub struct Grid {
    params: Vec<SweepParam>,
    next: Option<Vec<usize>>,
    index: u64,
}

impl Grid {
    /// The grid of `params`.
    ///
    /// # Errors
    /// More than [`MAX_POINTS`] points.
    pub fn new(params: Vec<SweepParam>) -> Result<Self, SweepError> {
        let size = params
            .iter()
            .try_fold(1u64, |n, p| n.checked_mul(p.values.len() as u64))
            .filter(|n| *n <= MAX_POINTS);
        if size.is_none() {
            return Err(SweepError {
                given: params
                    .iter()
                    .map(|p| p.key.clone())
                    .collect::<Vec<_>>()
                    .join(" × "),
                reason: format!("the grid has more than {MAX_POINTS} points"),
            });
        }
        let next = (!params.iter().any(|p| p.values.is_empty())).then(|| vec![0; params.len()]);
        Ok(Self {
            params,
            next,
            index: 0,
        })
    }

    /// How many points it has.
    pub fn len(&self) -> u64 {
        self.params.iter().map(|p| p.values.len() as u64).product()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Iterator for Grid {
    type Item = (u64, Vec<(String, Decimal)>);

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.next.clone()?;
        let point = self
            .params
            .iter()
            .zip(&at)
            .map(|(p, i)| (p.key.clone(), p.values[*i]))
            .collect();
        // Odometer step.
        let mut carry = at;
        let mut i = carry.len();
        self.next = loop {
            if i == 0 {
                break None;
            }
            i -= 1;
            carry[i] += 1;
            if carry[i] < self.params[i].values.len() {
                break Some(carry);
            }
            carry[i] = 0;
        };
        let index = self.index;
        self.index += 1;
        Some((index, point))
    }
}

/// One ranked point.
#[derive(Debug, Clone, Serialize)]
pub struct Ranked {
    /// Its place in the grid.
    pub index: u64,
    /// Its parameters.
    pub parameters: BTreeMap<String, Decimal>,
    /// The ranking metric.
    pub score: f64,
    /// Total return.
    pub total_return: f64,
    /// Sharpe ratio.
    pub sharpe: f64,
    /// Max drawdown.
    pub max_drawdown: f64,
    /// Fills.
    pub trades: u64,
}

/// What a sweep found.
#[derive(Debug, Clone, Serialize)]
pub struct SweepOutcome {
    /// Points in the grid.
    pub points: u64,
    /// Points that ran to the end.
    pub completed: u64,
    /// Points whose configuration or run failed, with the first few reasons.
    pub failed: u64,
    /// The first failures, `index: reason`.
    pub failures: Vec<String>,
    /// The metric ranked by.
    pub metric: String,
    /// The best points, best first.
    pub top: Vec<Ranked>,
}

/// The metric to rank by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Sharpe ratio.
    Sharpe,
    /// Total return.
    TotalReturn,
    /// Sortino ratio.
    Sortino,
    /// Least drawdown first.
    MaxDrawdown,
}

impl FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sharpe" => Ok(Self::Sharpe),
            "total_return" => Ok(Self::TotalReturn),
            "sortino" => Ok(Self::Sortino),
            "max_drawdown" => Ok(Self::MaxDrawdown),
            other => Err(format!(
                "unknown metric {other:?}: sharpe, total_return, sortino or max_drawdown"
            )),
        }
    }
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Self::Sharpe => "sharpe",
            Self::TotalReturn => "total_return",
            Self::Sortino => "sortino",
            Self::MaxDrawdown => "max_drawdown",
        }
    }
}

const FAILURES_KEPT: usize = 10;

struct Shared {
    grid: Grid,
    top: Vec<Ranked>,
    completed: u64,
    failed: u64,
    failures: Vec<String>,
}

/// Runs every point of `grid` on `data` with `threads` workers, keeping the best `top`. `configure` turns a
/// point into a backtest (or says why the configuration is invalid).
pub fn run<F>(
    data: &Data,
    grid: Grid,
    threads: usize,
    top: usize,
    metric: Metric,
    configure: F,
) -> SweepOutcome
where
    F: Fn(&[(String, Decimal)]) -> Result<Backtest, String> + Sync,
{
    let points = grid.len();
    let shared = Mutex::new(Shared {
        grid,
        top: Vec::with_capacity(top + 1),
        completed: 0,
        failed: 0,
        failures: Vec::new(),
    });
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let Some((index, point)) = shared.lock().expect("sweep lock").grid.next() else {
                    break;
                };
                let outcome = configure(&point).and_then(|backtest| {
                    futures::executor::block_on(backtest.run(data, Sinks::default()))
                        .map_err(|e| e.to_string())
                });
                let mut shared = shared.lock().expect("sweep lock");
                match outcome {
                    Ok(outcome) => {
                        shared.completed += 1;
                        let r = &outcome.report;
                        let score = match metric {
                            Metric::Sharpe => r.sharpe,
                            Metric::TotalReturn => r.total_return,
                            Metric::Sortino => r.sortino,
                            Metric::MaxDrawdown => -r.max_drawdown,
                        };
                        shared.top.push(Ranked {
                            index,
                            parameters: point.into_iter().collect(),
                            score,
                            total_return: r.total_return,
                            sharpe: r.sharpe,
                            max_drawdown: r.max_drawdown,
                            trades: r.trades,
                        });
                        // Best first; ties by grid order, so the ranking does not depend on threads.
                        shared.top.sort_by(|a, b| {
                            b.score.total_cmp(&a.score).then(a.index.cmp(&b.index))
                        });
                        shared.top.truncate(top);
                    }
                    Err(reason) => {
                        shared.failed += 1;
                        if shared.failures.len() < FAILURES_KEPT {
                            shared.failures.push(format!("{index}: {reason}"));
                        }
                    }
                }
            });
        }
    });
    let shared = shared.into_inner().expect("sweep lock");
    let mut failures = shared.failures;
    failures.sort();
    SweepOutcome {
        points,
        completed: shared.completed,
        failed: shared.failed,
        failures,
        metric: metric.name().to_string(),
        top: shared.top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_includes_both_ends() {
        let p: SweepParam = "treasury.drift_band=0.02..0.1:0.02".parse().unwrap();
        assert_eq!(p.key, "treasury.drift_band");
        let values: Vec<String> = p.values.iter().map(ToString::to_string).collect();
        assert_eq!(values, ["0.02", "0.04", "0.06", "0.08", "0.1"]);
    }

    #[test]
    fn malformed_sweeps_say_what_is_wrong() {
        for (given, wanted) in [
            ("drift", "expected key=from..to:step"),
            ("k=1..2", "missing :step"),
            ("k=1:1", "missing from..to"),
            ("k=a..2:1", "from \"a\" is not a decimal"),
            ("k=1..2:0", "step must be greater than zero"),
            ("k=3..2:1", "to is less than from"),
            ("k=0..1000000000:1", "at most"),
        ] {
            let e = given.parse::<SweepParam>().unwrap_err().to_string();
            assert!(e.contains(wanted), "{given}: {e}");
        }
    }

    #[test]
    fn the_grid_walks_every_point_once_in_order() {
        let a: SweepParam = "a=1..2:1".parse().unwrap();
        let b: SweepParam = "b=10..30:10".parse().unwrap();
        let grid = Grid::new(vec![a, b]).unwrap();
        assert_eq!(grid.len(), 6);
        let points: Vec<String> = grid
            .map(|(i, p)| format!("{i}:{}={},{}={}", p[0].0, p[0].1, p[1].0, p[1].1))
            .collect();
        assert_eq!(
            points,
            [
                "0:a=1,b=10",
                "1:a=1,b=20",
                "2:a=1,b=30",
                "3:a=2,b=10",
                "4:a=2,b=20",
                "5:a=2,b=30"
            ]
        );
    }

    #[test]
    fn a_grid_too_large_is_refused_before_running() {
        let big: SweepParam = "a=1..5000:1".parse().unwrap();
        let e = Grid::new(vec![big.clone(), big.clone(), big])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("more than"), "{e}");
    }
}
