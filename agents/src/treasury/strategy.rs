//! Strategies: pure functions from a closed candle (and what is known around it) to proposed trades.
//!
//! - [`Strategy`] is the trait users implement to add their own strategies.
//! - [`Rebalancer`] (`rebalance`) is the default: it keeps each symbol near a target weight of the
//!   portfolio's equity, tilted by momentum and sentiment, and trades only when the drift leaves a band.
//! - [`StrategyConfig`] is the `[treasury]` section of `jarvis.toml`; [`StrategyConfig::build`] makes the
//!   default strategy from it.
//!
//! Nothing here reads a clock, does I/O or awaits: the time of every decision is the candle's
//! `close_time`, and the same input gives the same output, byte for byte. Money is [`Decimal`] and every
//! operation is checked; an overflow proposes nothing and logs a warning.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use jarvis_domain::text::{Json, Text};
use jarvis_domain::trading::{PortfolioView, PricePoint, Rationale, Side};
use jarvis_domain::{Candle, Symbol};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// The name of the default strategy, [`Rebalancer`], as it appears in rationales.
pub const REBALANCE: &str = "rebalance";
/// The rule of the [`Rebalancer`] that fires when a weight drifts out of its band.
pub const RULE_DRIFT_ABOVE_BAND: &str = "drift_above_band";

/// A sentiment reading for a token (from `SentimentScored` events, when there are any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentimentReading {
    /// The token scored, e.g. `SOL` (the base asset of the symbol it is used for).
    pub token: String,
    /// The score, from -1 (bearish) to 1 (bullish); values outside are clamped when used.
    pub score: Decimal,
    /// How sure the scorer is, from 0 to 1; values outside are clamped when used.
    pub confidence: Decimal,
    /// When it was scored (event time).
    pub at: DateTime<Utc>,
    /// The id of the event that carried it: evidence in the rationale.
    pub event_id: Uuid,
}

/// What a strategy sees when a candle closes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StrategyInput<'a> {
    /// The candle that just closed; decisions are at `candle.close_time`.
    pub candle: &'a Candle,
    /// Its event id: evidence in the rationale.
    pub candle_event: Uuid,
    /// Recent closed candles of the same symbol, oldest first, ending with `candle`.
    pub history: &'a [Candle],
    /// Holdings and prices as the portfolio knows them.
    pub portfolio: &'a PortfolioView,
    /// Every symbol the treasury trades (those that have candles).
    pub symbols: &'a BTreeSet<Symbol>,
    /// The latest sentiment reading for this symbol's base token, if any.
    pub sentiment: Option<&'a SentimentReading>,
}

/// A trade a strategy wants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The pair to trade.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Base units, greater than zero.
    pub quantity: Decimal,
    /// The price the decision relied on, and when it was observed.
    pub reference: PricePoint,
    /// Why: the strategy, the rule, the numbers and the evidence.
    pub rationale: Rationale,
}

/// A strategy: users add their own by implementing this, without touching the agents.
///
/// A strategy must be pure: no clock, no I/O, no randomness, so that replaying the same events proposes the
/// same trades.
///
/// A rationale's words take a `String` or a `serde_json::Value` with `.into()`, or
/// [`Text::lazy`](jarvis_domain::text::Text::lazy) and [`Json::lazy`](jarvis_domain::text::Json::lazy) to be
/// written only when read (a backtest seldom reads them; the rebalancer does this).
pub trait Strategy: Send + Sync {
    /// The strategy's name, as written in its rationales (e.g. `rebalance`).
    fn name(&self) -> &str;

    /// The trades wanted now that `input.candle` has closed; empty for none.
    fn decide(&self, input: &StrategyInput<'_>) -> Vec<Proposal>;

    /// How many closed candles (including the one that just closed) the strategy wants in
    /// [`StrategyInput::history`]. The agent keeps at least this many per symbol. Defaults to 1.
    fn history_len(&self) -> usize {
        1
    }
}

/// A configuration value that breaks a rule. The message names the key and the value, e.g.
/// `treasury.drift_band = 1.5: must be in (0, 1)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    /// A key of the `[treasury]` section has a value out of range.
    #[error("{key} = {value}: {reason}")]
    InvalidConfig {
        /// The full key, e.g. `treasury.drift_band`.
        key: String,
        /// The offending value, as text.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, value: impl ToString, reason: &str) -> StrategyError {
    StrategyError::InvalidConfig {
        key: key.into(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// The largest accepted `momentum_lookback`, in candles.
const MAX_LOOKBACK: usize = 100_000;
/// The largest scale a [`Decimal`] can carry, hence the largest `quantity_dp`.
const MAX_DP: u32 = 28;
/// Basis points in one.
const BPS: Decimal = Decimal::from_parts(10_000, 0, 0, false, 0);

/// The treasury's settings: the `[treasury]` section of `jarvis.toml`. Every key has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StrategyConfig {
    /// Target weight per symbol, each in [0, 1], summing to at most 1 (the rest stays in cash). Empty (the
    /// default) means equal weight over the traded symbols. A traded symbol missing from a non-empty map has
    /// target 0 and is sold out.
    pub targets: BTreeMap<Symbol, Decimal>,
    /// How far a weight may drift from its target before trading, in (0, 1). Default 0.05.
    pub drift_band: Decimal,
    /// The smallest trade worth making, in the quote asset; not negative. Default 10.
    pub min_trade_notional: Decimal,
    /// The cap on any symbol's (tilted) target weight, in (0, 1]. Default 0.2, under the risk book's
    /// default `max_position_per_token` (2,500) until equity passes 12,500.
    pub max_weight_per_symbol: Decimal,
    /// The largest order, in the quote asset; a bigger move is made in slices over later candles. Positive.
    /// Default 1,000, the risk book's default `max_notional_per_order`.
    pub max_order_notional: Decimal,
    /// Candles between the two closes momentum compares; 0 turns momentum off. Default 24.
    pub momentum_lookback: usize,
    /// The largest relative tilt momentum may give a target, in [0, 1]. Default 0.5.
    pub momentum_weight: Decimal,
    /// How much sentiment (score × confidence) tilts a target, in [0, 1]; 0 turns it off. Default 0.3.
    pub sentiment_weight: Decimal,
    /// Decimal places of proposed quantities (rounded down), at most 28. Default 6.
    pub quantity_dp: u32,
    /// Cash kept back for fees when buying, in basis points of the notional, in [0, 10000). Default 50.
    pub fee_buffer_bps: Decimal,
    /// Whether an LLM reviews every proposal before risk sees it (task `trading`): it may veto with a reason.
    /// Needs `[llm]` providers live; a backtest answers from the recorded calls. Default false.
    pub llm_review: bool,
}

impl Default for StrategyConfig {
    fn default() -> Self {
        Self {
            targets: BTreeMap::new(),
            drift_band: Decimal::new(5, 2),
            min_trade_notional: Decimal::TEN,
            max_weight_per_symbol: Decimal::new(2, 1),
            max_order_notional: Decimal::from(1_000),
            momentum_lookback: 24,
            momentum_weight: Decimal::new(5, 1),
            sentiment_weight: Decimal::new(3, 1),
            quantity_dp: 6,
            fee_buffer_bps: Decimal::new(50, 0),
            llm_review: false,
        }
    }
}

impl StrategyConfig {
    /// Checks every key.
    ///
    /// # Errors
    /// [`StrategyError::InvalidConfig`] for the first key out of range, naming the key and the value.
    pub fn validate(&self) -> Result<(), StrategyError> {
        let zero = Decimal::ZERO;
        let one = Decimal::ONE;
        let mut sum = zero;
        for (symbol, weight) in &self.targets {
            let key = format!("treasury.targets.\"{symbol}\"");
            if *weight < zero || *weight > one {
                return Err(invalid(key, weight, "must be in [0, 1]"));
            }
            sum = sum
                .checked_add(*weight)
                .ok_or_else(|| invalid("treasury.targets", sum, "sum overflows"))?;
        }
        if sum > one {
            return Err(invalid(
                "treasury.targets",
                format!("{sum} (the sum of the weights)"),
                "must be at most 1",
            ));
        }
        if self.drift_band <= zero || self.drift_band >= one {
            return Err(invalid(
                "treasury.drift_band",
                self.drift_band,
                "must be in (0, 1)",
            ));
        }
        if self.max_order_notional <= zero {
            return Err(StrategyError::InvalidConfig {
                key: "treasury.max_order_notional".into(),
                value: self.max_order_notional.to_string(),
                reason: "must be greater than zero".into(),
            });
        }
        if self.min_trade_notional < zero {
            return Err(invalid(
                "treasury.min_trade_notional",
                self.min_trade_notional,
                "must not be negative",
            ));
        }
        if self.max_weight_per_symbol <= zero || self.max_weight_per_symbol > one {
            return Err(invalid(
                "treasury.max_weight_per_symbol",
                self.max_weight_per_symbol,
                "must be in (0, 1]",
            ));
        }
        if self.momentum_lookback > MAX_LOOKBACK {
            return Err(invalid(
                "treasury.momentum_lookback",
                self.momentum_lookback,
                "must be at most 100000",
            ));
        }
        if self.momentum_weight < zero || self.momentum_weight > one {
            return Err(invalid(
                "treasury.momentum_weight",
                self.momentum_weight,
                "must be in [0, 1]",
            ));
        }
        if self.sentiment_weight < zero || self.sentiment_weight > one {
            return Err(invalid(
                "treasury.sentiment_weight",
                self.sentiment_weight,
                "must be in [0, 1]",
            ));
        }
        if self.quantity_dp > MAX_DP {
            return Err(invalid(
                "treasury.quantity_dp",
                self.quantity_dp,
                "must be at most 28",
            ));
        }
        if self.fee_buffer_bps < zero || self.fee_buffer_bps >= BPS {
            return Err(invalid(
                "treasury.fee_buffer_bps",
                self.fee_buffer_bps,
                "must be in [0, 10000)",
            ));
        }
        Ok(())
    }

    /// The default strategy with these settings: a [`Rebalancer`]. Call [`Self::validate`] first.
    pub fn build(&self) -> Box<dyn Strategy> {
        Box::new(Rebalancer::new(self.clone()))
    }
}

/// The default strategy (`rebalance`): keeps the candle's symbol near its target weight of equity.
///
/// For the candle that closed (and only its symbol), at price `close` and time `close_time`:
/// 1. base weight = `targets[symbol]` (0 if absent) when targets are set, else `1 / |symbols|` (the candle's
///    symbol counts even if missing from the set);
/// 2. momentum = `close / close(momentum_lookback candles earlier) − 1` (0 without enough history), its tilt
///    clamped to `±momentum_weight`; sentiment tilt = `score × confidence × sentiment_weight`;
/// 3. target = `clamp(base × (1 + momentum tilt + sentiment tilt), 0, max_weight_per_symbol)`;
/// 4. current weight = `held × close / equity`; inside `drift_band` nothing is proposed; otherwise the
///    quantity `|target − current| × equity / close` (computed as notionals, the same number with less
///    rounding), rounded down to `quantity_dp`. A target of 0 sells everything held. A sell is capped at
///    the held quantity, a buy at what the cash pays with `fee_buffer_bps` kept back; a trade whose
///    notional is below `min_trade_notional` is dropped.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rebalancer {
    config: StrategyConfig,
}

/// An arithmetic overflow, naming what was being computed.
#[derive(Debug)]
struct Overflow(&'static str);

fn checked(value: Option<Decimal>, what: &'static str) -> Result<Decimal, Overflow> {
    value.ok_or(Overflow(what))
}

/// A decimal as text for a rationale: trailing zeros dropped.
fn text(value: Decimal) -> String {
    value.normalize().to_string()
}

/// A weight for a summary: 4 decimal places, trailing zeros dropped.
fn short(value: Decimal) -> String {
    text(value.round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero))
}

impl Rebalancer {
    /// A rebalancer with these settings (not validated here; see [`StrategyConfig::validate`]).
    pub fn new(config: StrategyConfig) -> Self {
        Self { config }
    }

    /// Its settings.
    pub fn config(&self) -> &StrategyConfig {
        &self.config
    }

    fn round_down(&self, value: Decimal) -> Decimal {
        value.round_dp_with_strategy(self.config.quantity_dp, RoundingStrategy::ToZero)
    }

    fn base_weight(
        &self,
        symbol: &Symbol,
        symbols: &BTreeSet<Symbol>,
    ) -> Result<Decimal, Overflow> {
        if !self.config.targets.is_empty() {
            return Ok(self
                .config
                .targets
                .get(symbol)
                .copied()
                .unwrap_or(Decimal::ZERO));
        }
        let count = symbols.len() + usize::from(!symbols.contains(symbol));
        checked(
            Decimal::ONE.checked_div(Decimal::from(count)),
            "base_weight",
        )
    }

    /// `close / close(lookback candles earlier) − 1`, or 0 when off or without enough history.
    fn momentum(&self, input: &StrategyInput<'_>) -> Result<Decimal, Overflow> {
        let lookback = self.config.momentum_lookback;
        if lookback == 0 {
            return Ok(Decimal::ZERO);
        }
        let history = input.history;
        // The index of the candle that closed: the last one of the history, or just after it if the
        // history stops before it.
        let end = match history.last() {
            Some(last) if last.open_time == input.candle.open_time => history.len() - 1,
            _ => history.len(),
        };
        let Some(earlier) = end.checked_sub(lookback).and_then(|i| history.get(i)) else {
            return Ok(Decimal::ZERO);
        };
        if earlier.symbol != input.candle.symbol || earlier.close <= Decimal::ZERO {
            return Ok(Decimal::ZERO);
        }
        let ratio = checked(input.candle.close.checked_div(earlier.close), "momentum")?;
        checked(ratio.checked_sub(Decimal::ONE), "momentum")
    }

    fn plan(&self, input: &StrategyInput<'_>) -> Result<Option<Proposal>, Overflow> {
        let cfg = &self.config;
        let zero = Decimal::ZERO;
        let one = Decimal::ONE;
        let candle = input.candle;
        let symbol = &candle.symbol;
        let price = candle.close;
        let portfolio = input.portfolio;
        let equity = portfolio.equity;
        if price <= zero || equity <= zero {
            return Ok(None);
        }
        let held = portfolio.positions.get(symbol).copied().unwrap_or(zero);
        let cash = portfolio.cash;

        let base = self.base_weight(symbol, input.symbols)?;
        let momentum = self.momentum(input)?;
        let max_tilt = cfg.momentum_weight.max(zero);
        let momentum_tilt = momentum.clamp(-max_tilt, max_tilt);
        let sentiment = input.sentiment.filter(|_| cfg.sentiment_weight > zero);
        let sentiment_tilt = match sentiment {
            Some(reading) => {
                let score = reading.score.clamp(-one, one);
                let confidence = reading.confidence.clamp(zero, one);
                let product = checked(score.checked_mul(confidence), "sentiment_tilt")?;
                checked(product.checked_mul(cfg.sentiment_weight), "sentiment_tilt")?
            }
            None => zero,
        };
        let factor = checked(
            one.checked_add(momentum_tilt)
                .and_then(|f| f.checked_add(sentiment_tilt)),
            "tilt",
        )?;
        let target = checked(base.checked_mul(factor), "target_weight")?
            .clamp(zero, cfg.max_weight_per_symbol.max(zero));

        let held_notional = checked(held.checked_mul(price), "held notional")?;
        let current = checked(held_notional.checked_div(equity), "current_weight")?;
        let drift = checked(target.checked_sub(current), "drift")?;
        if drift.abs() <= cfg.drift_band {
            return Ok(None);
        }
        let side = if drift > zero { Side::Buy } else { Side::Sell };

        let target_notional = checked(target.checked_mul(equity), "target notional")?;
        let gap = checked(target_notional.checked_sub(held_notional), "quantity")?.abs();
        let wanted = if side == Side::Sell && target.is_zero() {
            held
        } else {
            checked(gap.checked_div(price), "quantity")?
        };
        let quantity = match side {
            Side::Sell => self.round_down(wanted.min(held)),
            Side::Buy => {
                let fee = checked(cfg.fee_buffer_bps.checked_div(BPS), "fee buffer")?;
                let unit_cost = checked(
                    one.checked_add(fee).and_then(|f| f.checked_mul(price)),
                    "fee buffer",
                )?;
                let affordable = if cash > zero && unit_cost > zero {
                    self.round_down(checked(cash.checked_div(unit_cost), "affordable")?)
                } else {
                    zero
                };
                self.round_down(wanted).min(affordable)
            }
        }
        .normalize();
        // Slices: never more than max_order_notional at once.
        let quantity = if checked(quantity.checked_mul(price), "notional")? > cfg.max_order_notional
        {
            self.round_down(checked(cfg.max_order_notional.checked_div(price), "slice")?)
                .normalize()
        } else {
            quantity
        };
        if quantity <= zero {
            return Ok(None);
        }
        let notional = checked(quantity.checked_mul(price), "notional")?;
        if notional < cfg.min_trade_notional {
            return Ok(None);
        }

        let mut evidence = vec![input.candle_event];
        if let Some(reading) = sentiment {
            evidence.push(reading.event_id);
        }
        // The rationale's words are written when first read (`jarvis_domain::text`): a backtest seldom
        // reads them, and formatting every number costs more than deciding.
        let (momentum_lookback, drift_band) = (cfg.momentum_lookback, cfg.drift_band);
        let reading = sentiment.map(|r| (r.token.clone(), r.score, r.confidence));
        let at = candle.close_time;
        let name = symbol.clone();
        let inputs = Json::lazy(move || {
            json!({
                "symbol": name.as_str(),
                "price": text(price),
                "close_time": at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                "equity": text(equity),
                "cash": text(cash),
                "held": text(held),
                "current_weight": text(current),
                "base_weight": text(base),
                "momentum_lookback": momentum_lookback,
                "momentum": text(momentum),
                "momentum_tilt": text(momentum_tilt),
                "sentiment_token": reading.as_ref().map(|r| r.0.clone()),
                "sentiment_score": reading.as_ref().map(|r| text(r.1)),
                "sentiment_confidence": reading.as_ref().map(|r| text(r.2)),
                "sentiment_tilt": text(sentiment_tilt),
                "target_weight": text(target),
                "drift_band": text(drift_band),
                "quantity": text(quantity),
                "notional": text(notional),
            })
        });
        let name = symbol.clone();
        let summary = Text::lazy(move || {
            let direction = match side {
                Side::Buy => "below",
                Side::Sell => "above",
            };
            format!(
                "{name} weight {} {direction} target {} (band {}): {side} {} at {}",
                short(current),
                short(target),
                text(drift_band),
                text(quantity),
                text(price),
            )
        });
        Ok(Some(Proposal {
            symbol: symbol.clone(),
            side,
            quantity,
            reference: PricePoint {
                symbol: symbol.clone(),
                price,
                at: candle.close_time,
            },
            rationale: Rationale {
                strategy: REBALANCE.into(),
                rule: RULE_DRIFT_ABOVE_BAND.into(),
                inputs,
                evidence,
                summary,
            },
        }))
    }
}

impl Strategy for Rebalancer {
    fn name(&self) -> &str {
        REBALANCE
    }

    fn decide(&self, input: &StrategyInput<'_>) -> Vec<Proposal> {
        match self.plan(input) {
            Ok(proposal) => proposal.into_iter().collect(),
            Err(Overflow(what)) => {
                tracing::warn!(
                    symbol = %input.candle.symbol,
                    close_time = %input.candle.close_time,
                    candle_event = %input.candle_event,
                    what,
                    "rebalance: arithmetic overflow, no trade"
                );
                Vec::new()
            }
        }
    }

    fn history_len(&self) -> usize {
        self.config.momentum_lookback.saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use serde_json::Value;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str_exact(text).unwrap()
    }

    fn sym(text: &str) -> Symbol {
        Symbol::new_checked(text).unwrap()
    }

    fn candle(symbol: &str, index: i64, close: &str) -> Candle {
        let start: DateTime<Utc> = "2024-01-01T00:00:00Z".parse().unwrap();
        let open_time = start + Duration::hours(index);
        let close = dec(close);
        Candle {
            symbol: sym(symbol),
            open_time,
            close_time: open_time + Duration::hours(1),
            open: close,
            high: close,
            low: close,
            close,
            volume: Decimal::ONE,
        }
    }

    /// Candles of `symbol` with these closes, one an hour.
    fn series(symbol: &str, closes: &[&str]) -> Vec<Candle> {
        closes
            .iter()
            .zip(0..)
            .map(|(close, i)| candle(symbol, i, close))
            .collect()
    }

    fn portfolio(cash: &str, holdings: &[(&str, &str, &str)]) -> PortfolioView {
        let mut positions = BTreeMap::new();
        let mut prices = BTreeMap::new();
        let mut equity = dec(cash);
        let at: DateTime<Utc> = "2024-01-01T00:00:00Z".parse().unwrap();
        for (symbol, quantity, price) in holdings {
            positions.insert(sym(symbol), dec(quantity));
            prices.insert(
                sym(symbol),
                PricePoint {
                    symbol: sym(symbol),
                    price: dec(price),
                    at,
                },
            );
            equity += dec(quantity) * dec(price);
        }
        PortfolioView {
            cash: dec(cash),
            positions,
            prices,
            equity,
            high_water_mark: equity,
            day_start_equity: equity,
        }
    }

    fn symbols(list: &[&str]) -> BTreeSet<Symbol> {
        list.iter().map(|s| sym(s)).collect()
    }

    const THREE: [&str; 3] = ["BTC/USDT", "ETH/USDT", "SOL/USDT"];

    fn candle_event() -> Uuid {
        Uuid::from_u128(1)
    }

    fn sentiment_event() -> Uuid {
        Uuid::from_u128(2)
    }

    /// Owns what a [`StrategyInput`] borrows.
    struct Fixture {
        history: Vec<Candle>,
        portfolio: PortfolioView,
        symbols: BTreeSet<Symbol>,
        sentiment: Option<SentimentReading>,
    }

    impl Fixture {
        fn new(history: Vec<Candle>, portfolio: PortfolioView, symbols: &[&str]) -> Self {
            Self {
                history,
                portfolio,
                symbols: self::symbols(symbols),
                sentiment: None,
            }
        }

        fn input(&self) -> StrategyInput<'_> {
            StrategyInput {
                candle: self.history.last().unwrap(),
                candle_event: candle_event(),
                history: &self.history,
                portfolio: &self.portfolio,
                symbols: &self.symbols,
                sentiment: self.sentiment.as_ref(),
            }
        }
    }

    /// Defaults without momentum (so that a short history does not matter), without slicing and with a
    /// 0.5 cap per symbol, so that each test sees one whole trade.
    fn flat() -> StrategyConfig {
        StrategyConfig {
            momentum_lookback: 0,
            ..unsliced()
        }
    }

    /// The defaults as the tests were written for: one whole trade, up to half the equity per symbol.
    fn unsliced() -> StrategyConfig {
        StrategyConfig {
            max_weight_per_symbol: dec("0.5"),
            max_order_notional: Decimal::MAX,
            ..StrategyConfig::default()
        }
    }

    fn targets(list: &[(&str, &str)]) -> BTreeMap<Symbol, Decimal> {
        list.iter().map(|(s, w)| (sym(s), dec(w))).collect()
    }

    fn decide_one(config: StrategyConfig, fixture: &Fixture) -> Option<Proposal> {
        let proposals = Rebalancer::new(config).decide(&fixture.input());
        assert!(proposals.len() <= 1, "{proposals:?}");
        proposals.into_iter().next()
    }

    #[test]
    fn equal_weight_from_all_cash_buys_a_third() {
        let fixture = Fixture::new(
            series("SOL/USDT", &["100"]),
            portfolio("10000", &[]),
            &THREE,
        );
        let p = decide_one(flat(), &fixture).expect("a buy");
        assert_eq!(p.symbol, sym("SOL/USDT"));
        assert_eq!(p.side, Side::Buy);
        assert_eq!(p.quantity, dec("33.333333"));
        assert_eq!(p.quantity.to_string(), "33.333333");
        assert_eq!(
            p.reference,
            PricePoint {
                symbol: sym("SOL/USDT"),
                price: dec("100"),
                at: "2024-01-01T01:00:00Z".parse().unwrap(),
            }
        );
        let r = &p.rationale;
        assert_eq!(r.strategy, "rebalance");
        assert_eq!(r.rule, "drift_above_band");
        assert_eq!(r.evidence, vec![candle_event()]);
        assert_eq!(
            r.summary,
            "SOL/USDT weight 0 below target 0.3333 (band 0.05): buy 33.333333 at 100"
        );
        assert_eq!(r.inputs["price"], "100");
        assert_eq!(r.inputs["close_time"], "2024-01-01T01:00:00Z");
        assert_eq!(r.inputs["equity"], "10000");
        assert_eq!(r.inputs["cash"], "10000");
        assert_eq!(r.inputs["held"], "0");
        assert_eq!(r.inputs["current_weight"], "0");
        assert_eq!(r.inputs["base_weight"], "0.3333333333333333333333333333");
        assert_eq!(r.inputs["target_weight"], "0.3333333333333333333333333333");
        assert_eq!(r.inputs["momentum"], "0");
        assert_eq!(r.inputs["momentum_tilt"], "0");
        assert_eq!(r.inputs["sentiment_score"], Value::Null);
        assert_eq!(r.inputs["sentiment_confidence"], Value::Null);
        assert_eq!(r.inputs["sentiment_tilt"], "0");
        assert_eq!(r.inputs["drift_band"], "0.05");
    }

    #[test]
    fn the_candles_symbol_counts_even_if_missing_from_the_set() {
        let fixture = Fixture::new(
            series("SOL/USDT", &["100"]),
            portfolio("10000", &[]),
            &["BTC/USDT", "ETH/USDT"],
        );
        let p = decide_one(flat(), &fixture).expect("a buy");
        assert_eq!(p.quantity, dec("33.333333"));
    }

    #[test]
    fn inside_the_band_no_trade() {
        // 30 SOL at 100 of 10000: weight 0.3, target 1/3, drift 0.033 <= 0.05.
        let fixture = Fixture::new(
            series("SOL/USDT", &["100"]),
            portfolio("7000", &[("SOL/USDT", "30", "100")]),
            &THREE,
        );
        assert_eq!(decide_one(flat(), &fixture), None);
    }

    #[test]
    fn above_target_sells_down() {
        // 50 SOL at 100 of 10000: weight 0.5, target 1/3: sell 1666.67 / 100.
        let fixture = Fixture::new(
            series("SOL/USDT", &["100"]),
            portfolio("5000", &[("SOL/USDT", "50", "100")]),
            &THREE,
        );
        let p = decide_one(flat(), &fixture).expect("a sell");
        assert_eq!(p.side, Side::Sell);
        assert_eq!(p.quantity, dec("16.666666"));
        assert_eq!(
            p.rationale.summary,
            "SOL/USDT weight 0.5 above target 0.3333 (band 0.05): sell 16.666666 at 100"
        );
        assert_eq!(p.rationale.inputs["held"], "50");
        assert_eq!(p.rationale.inputs["current_weight"], "0.5");
    }

    #[test]
    fn a_symbol_not_in_explicit_targets_is_sold_out() {
        let config = StrategyConfig {
            targets: targets(&[("BTC/USDT", "0.5"), ("ETH/USDT", "0.3")]),
            ..unsliced()
        };
        let fixture = Fixture::new(
            series("SOL/USDT", &["100"]),
            portfolio("9000", &[("SOL/USDT", "10", "100")]),
            &THREE,
        );
        let p = decide_one(config, &fixture).expect("a sell");
        assert_eq!(p.side, Side::Sell);
        assert_eq!(p.quantity, dec("10"));
        assert_eq!(p.rationale.inputs["base_weight"], "0");
        assert_eq!(p.rationale.inputs["target_weight"], "0");
        assert_eq!(
            p.rationale.summary,
            "SOL/USDT weight 0.1 above target 0 (band 0.05): sell 10 at 100"
        );
    }

    #[test]
    fn explicit_target_buys_to_its_weight() {
        let config = StrategyConfig {
            targets: targets(&[("SOL/USDT", "0.2")]),
            ..unsliced()
        };
        let fixture = Fixture::new(
            series("SOL/USDT", &["100"]),
            portfolio("10000", &[]),
            &THREE,
        );
        let p = decide_one(config, &fixture).expect("a buy");
        assert_eq!(p.quantity, dec("20"));
        assert_eq!(p.quantity.to_string(), "20");
    }

    #[test]
    fn min_notional_suppresses_tiny_trades() {
        // Target 1/3 of 20 is 6.67, below the minimum of 10.
        let fixture = Fixture::new(series("SOL/USDT", &["100"]), portfolio("20", &[]), &THREE);
        assert_eq!(decide_one(flat(), &fixture), None);
        let config = StrategyConfig {
            min_trade_notional: dec("5"),
            ..unsliced()
        };
        let p = decide_one(config, &fixture).expect("a buy above a lower minimum");
        assert_eq!(p.quantity, dec("0.066666"));
    }

    #[test]
    fn buy_is_capped_by_cash_with_the_fee_buffer() {
        // Equity 10000, cash 1000: target 1/3 wants 33.33 SOL; cash pays 1000 / (100 * 1.005).
        let fixture = Fixture::new(
            series("SOL/USDT", &["100"]),
            portfolio("1000", &[("BTC/USDT", "1", "9000")]),
            &THREE,
        );
        let p = decide_one(flat(), &fixture).expect("a capped buy");
        assert_eq!(p.side, Side::Buy);
        assert_eq!(p.quantity, dec("9.950248"));
        let cost = p.quantity * dec("100") * dec("1.005");
        assert!(cost <= dec("1000"), "{cost}");
        // Without cash, nothing.
        let broke = Fixture::new(
            series("SOL/USDT", &["100"]),
            portfolio("0", &[("BTC/USDT", "1", "9000")]),
            &THREE,
        );
        assert_eq!(decide_one(flat(), &broke), None);
    }

    #[test]
    fn sell_is_capped_by_held() {
        // Target 0 sells everything held, rounded down to 6 places: never more than held.
        let config = StrategyConfig {
            targets: targets(&[("BTC/USDT", "0.5")]),
            ..unsliced()
        };
        let fixture = Fixture::new(
            series("SOL/USDT", &["100"]),
            portfolio("9000", &[("SOL/USDT", "10.1234567", "100")]),
            &THREE,
        );
        let p = decide_one(config.clone(), &fixture).expect("a sell");
        assert_eq!(p.side, Side::Sell);
        assert_eq!(p.quantity, dec("10.123456"));
        // A stale equity (below what the position is worth now) still sells no more than held.
        let mut stale = Fixture::new(
            series("SOL/USDT", &["100"]),
            portfolio("0", &[("SOL/USDT", "10", "100")]),
            &THREE,
        );
        stale.portfolio.equity = dec("500");
        let p = decide_one(config, &stale).expect("a sell");
        assert_eq!(p.quantity, dec("10"));
        assert_eq!(p.rationale.inputs["current_weight"], "2");
    }

    fn momentum_config() -> StrategyConfig {
        StrategyConfig {
            targets: targets(&[("SOL/USDT", "0.2")]),
            momentum_lookback: 4,
            ..unsliced()
        }
    }

    #[test]
    fn momentum_tilts_up() {
        // 100 -> 110 over 4 candles: momentum 0.1, target 0.2 * 1.1 = 0.22; 2200 / 110 = 20.
        let fixture = Fixture::new(
            series("SOL/USDT", &["100", "104", "90", "120", "110"]),
            portfolio("10000", &[]),
            &THREE,
        );
        let p = decide_one(momentum_config(), &fixture).expect("a buy");
        assert_eq!(p.quantity, dec("20"));
        let inputs = &p.rationale.inputs;
        assert_eq!(inputs["momentum"], "0.1");
        assert_eq!(inputs["momentum_tilt"], "0.1");
        assert_eq!(inputs["base_weight"], "0.2");
        assert_eq!(inputs["target_weight"], "0.22");
        assert_eq!(
            p.rationale.summary,
            "SOL/USDT weight 0 below target 0.22 (band 0.05): buy 20 at 110"
        );
    }

    #[test]
    fn momentum_tilts_down() {
        // 100 -> 80: momentum -0.2, target 0.2 * 0.8 = 0.16; 1600 / 80 = 20.
        let fixture = Fixture::new(
            series("SOL/USDT", &["100", "95", "90", "85", "80"]),
            portfolio("10000", &[]),
            &THREE,
        );
        let p = decide_one(momentum_config(), &fixture).expect("a buy");
        assert_eq!(p.quantity, dec("20"));
        assert_eq!(p.rationale.inputs["momentum"], "-0.2");
        assert_eq!(p.rationale.inputs["momentum_tilt"], "-0.2");
        assert_eq!(p.rationale.inputs["target_weight"], "0.16");
    }

    #[test]
    fn momentum_tilt_is_clamped() {
        // 100 -> 200: momentum 1, tilt capped at 0.5, target 0.3; 3000 / 200 = 15.
        let fixture = Fixture::new(
            series("SOL/USDT", &["100", "120", "140", "160", "200"]),
            portfolio("10000", &[]),
            &THREE,
        );
        let p = decide_one(momentum_config(), &fixture).expect("a buy");
        assert_eq!(p.quantity, dec("15"));
        assert_eq!(p.rationale.inputs["momentum"], "1");
        assert_eq!(p.rationale.inputs["momentum_tilt"], "0.5");
        assert_eq!(p.rationale.inputs["target_weight"], "0.3");
    }

    #[test]
    fn history_without_the_candle_counts_it_as_the_next() {
        let fixture = Fixture::new(
            series("SOL/USDT", &["100", "104", "90", "120", "110"]),
            portfolio("10000", &[]),
            &THREE,
        );
        let input = StrategyInput {
            history: &fixture.history[..4],
            ..fixture.input()
        };
        // The earlier candle is 4 before the fifth: the first, at 100.
        let p = Rebalancer::new(momentum_config()).decide(&input);
        assert_eq!(p[0].rationale.inputs["momentum"], "0.1");
    }

    #[test]
    fn no_history_means_no_momentum() {
        let fixture = Fixture::new(
            series("SOL/USDT", &["100", "104", "90", "110"]),
            portfolio("10000", &[]),
            &THREE,
        );
        // Four candles are not enough for a lookback of 4.
        let p = decide_one(momentum_config(), &fixture).expect("a buy");
        assert_eq!(p.rationale.inputs["momentum"], "0");
        assert_eq!(p.rationale.inputs["target_weight"], "0.2");
        // An empty history, with the default lookback of 24.
        let input = StrategyInput {
            history: &[],
            ..fixture.input()
        };
        let p = StrategyConfig::default().build().decide(&input);
        assert_eq!(p[0].rationale.inputs["momentum"], "0");
        assert_eq!(p[0].rationale.inputs["momentum_lookback"], 24);
    }

    fn reading(score: &str, confidence: &str) -> SentimentReading {
        SentimentReading {
            token: "SOL".to_string(),
            score: dec(score),
            confidence: dec(confidence),
            at: "2024-01-01T00:30:00Z".parse().unwrap(),
            event_id: sentiment_event(),
        }
    }

    #[test]
    fn sentiment_tilts_and_is_evidence() {
        // 0.5 * 0.8 * 0.3 = 0.12: target 0.25 * 1.12 = 0.28; 2800 / 100 = 28.
        let config = StrategyConfig {
            targets: targets(&[("SOL/USDT", "0.25")]),
            ..unsliced()
        };
        let mut fixture = Fixture::new(
            series("SOL/USDT", &["100"]),
            portfolio("10000", &[]),
            &THREE,
        );
        fixture.sentiment = Some(reading("0.5", "0.8"));
        let p = decide_one(config.clone(), &fixture).expect("a buy");
        assert_eq!(p.quantity, dec("28"));
        let r = &p.rationale;
        assert_eq!(r.evidence, vec![candle_event(), sentiment_event()]);
        assert_eq!(r.inputs["sentiment_token"], "SOL");
        assert_eq!(r.inputs["sentiment_score"], "0.5");
        assert_eq!(r.inputs["sentiment_confidence"], "0.8");
        assert_eq!(r.inputs["sentiment_tilt"], "0.12");
        assert_eq!(r.inputs["target_weight"], "0.28");

        // Bearish: -1 * 1 * 0.3: target 0.25 * 0.7 = 0.175; 1750 / 100 = 17.5.
        fixture.sentiment = Some(reading("-1", "1"));
        let p = decide_one(config.clone(), &fixture).expect("a buy");
        assert_eq!(p.quantity, dec("17.5"));
        assert_eq!(p.rationale.inputs["sentiment_tilt"], "-0.3");

        // Weight 0 turns sentiment off: not used, not evidence.
        let off = StrategyConfig {
            sentiment_weight: Decimal::ZERO,
            ..config
        };
        let p = decide_one(off, &fixture).expect("a buy");
        assert_eq!(p.quantity, dec("25"));
        assert_eq!(p.rationale.evidence, vec![candle_event()]);
        assert_eq!(p.rationale.inputs["sentiment_score"], Value::Null);
        assert_eq!(p.rationale.inputs["sentiment_tilt"], "0");
    }

    #[test]
    fn target_is_capped_by_max_weight() {
        // One symbol: equal weight 1, capped at 0.5.
        let fixture = Fixture::new(
            series("SOL/USDT", &["100"]),
            portfolio("10000", &[]),
            &["SOL/USDT"],
        );
        let p = decide_one(flat(), &fixture).expect("a buy");
        assert_eq!(p.quantity, dec("50"));
        assert_eq!(p.rationale.inputs["base_weight"], "1");
        assert_eq!(p.rationale.inputs["target_weight"], "0.5");
    }

    #[test]
    fn no_equity_no_trade() {
        let mut fixture = Fixture::new(series("SOL/USDT", &["100"]), portfolio("0", &[]), &THREE);
        assert_eq!(decide_one(flat(), &fixture), None);
        fixture.portfolio.equity = dec("-5");
        assert_eq!(decide_one(flat(), &fixture), None);
    }

    #[test]
    fn overflow_proposes_nothing() {
        let mut fixture = Fixture::new(series("SOL/USDT", &["100"]), portfolio("1", &[]), &THREE);
        fixture
            .portfolio
            .positions
            .insert(sym("SOL/USDT"), Decimal::MAX);
        assert_eq!(decide_one(flat(), &fixture), None);
    }

    #[test]
    fn config_defaults_and_validation() {
        let config = StrategyConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.drift_band, dec("0.05"));
        assert_eq!(config.min_trade_notional, dec("10"));
        assert_eq!(config.max_weight_per_symbol, dec("0.2"));
        assert_eq!(config.max_order_notional, dec("1000"));
        assert_eq!(config.momentum_lookback, 24);
        assert_eq!(config.momentum_weight, dec("0.5"));
        assert_eq!(config.sentiment_weight, dec("0.3"));
        assert_eq!(config.quantity_dp, 6);
        assert_eq!(config.fee_buffer_bps, dec("50"));

        let message = |config: StrategyConfig| config.validate().unwrap_err().to_string();
        let base = StrategyConfig::default;
        assert_eq!(
            message(StrategyConfig {
                drift_band: dec("1.5"),
                ..base()
            }),
            "treasury.drift_band = 1.5: must be in (0, 1)"
        );
        assert_eq!(
            message(StrategyConfig {
                drift_band: dec("0"),
                ..base()
            }),
            "treasury.drift_band = 0: must be in (0, 1)"
        );
        assert_eq!(
            message(StrategyConfig {
                targets: targets(&[("SOL/USDT", "1.2")]),
                ..base()
            }),
            "treasury.targets.\"SOL/USDT\" = 1.2: must be in [0, 1]"
        );
        assert_eq!(
            message(StrategyConfig {
                targets: targets(&[("SOL/USDT", "-0.1")]),
                ..base()
            }),
            "treasury.targets.\"SOL/USDT\" = -0.1: must be in [0, 1]"
        );
        assert_eq!(
            message(StrategyConfig {
                targets: targets(&[("SOL/USDT", "0.6"), ("BTC/USDT", "0.5")]),
                ..base()
            }),
            "treasury.targets = 1.1 (the sum of the weights): must be at most 1"
        );
        assert!(message(StrategyConfig {
            max_weight_per_symbol: dec("0"),
            ..base()
        })
        .starts_with("treasury.max_weight_per_symbol = 0:"));
        assert!(message(StrategyConfig {
            min_trade_notional: dec("-1"),
            ..base()
        })
        .starts_with("treasury.min_trade_notional = -1:"));
        assert!(message(StrategyConfig {
            momentum_weight: dec("2"),
            ..base()
        })
        .starts_with("treasury.momentum_weight = 2:"));
        assert!(message(StrategyConfig {
            sentiment_weight: dec("-0.3"),
            ..base()
        })
        .starts_with("treasury.sentiment_weight = -0.3:"));
        assert!(message(StrategyConfig {
            quantity_dp: 29,
            ..base()
        })
        .starts_with("treasury.quantity_dp = 29:"));
        assert!(message(StrategyConfig {
            fee_buffer_bps: dec("10000"),
            ..base()
        })
        .starts_with("treasury.fee_buffer_bps = 10000:"));
        assert!(message(StrategyConfig {
            momentum_lookback: 1_000_000,
            ..base()
        })
        .starts_with("treasury.momentum_lookback = 1000000:"));
    }

    #[test]
    fn a_big_move_is_made_in_slices_of_max_order_notional() {
        // All cash, one symbol, default cap 0.2: the target is 2,000 but one order buys at most 1,000.
        let fixture = Fixture::new(
            series("SOL/USDT", &["100"]),
            portfolio("10000", &[]),
            &["SOL/USDT"],
        );
        let config = StrategyConfig {
            momentum_lookback: 0,
            ..StrategyConfig::default()
        };
        let p = decide_one(config, &fixture).expect("a buy");
        assert_eq!(p.side, Side::Buy);
        assert_eq!(p.quantity, dec("10"));
    }

    #[test]
    fn config_deserializes_with_defaults_and_refuses_unknown_keys() {
        let config: StrategyConfig = serde_json::from_value(json!({
            "targets": {"SOL/USDT": "0.4", "btc/usdt": 0.3},
            "drift_band": 0.1,
        }))
        .unwrap();
        assert_eq!(
            config,
            StrategyConfig {
                targets: targets(&[("SOL/USDT", "0.4"), ("BTC/USDT", "0.3")]),
                drift_band: dec("0.1"),
                ..StrategyConfig::default()
            }
        );
        let empty: StrategyConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(empty, StrategyConfig::default());
        let err = serde_json::from_value::<StrategyConfig>(json!({"drift": 0.1})).unwrap_err();
        assert!(err.to_string().contains("drift"), "{err}");
        let round_trip: StrategyConfig =
            serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
        assert_eq!(round_trip, config);
    }

    #[test]
    fn deterministic() {
        let mut fixture = Fixture::new(
            series("SOL/USDT", &["100", "104", "90", "120", "110"]),
            portfolio(
                "4000",
                &[("BTC/USDT", "0.1", "40000"), ("SOL/USDT", "3", "100")],
            ),
            &THREE,
        );
        fixture.sentiment = Some(reading("0.3", "0.9"));
        let config = StrategyConfig {
            momentum_lookback: 4,
            ..unsliced()
        };
        let first = Rebalancer::new(config.clone()).decide(&fixture.input());
        let second = Rebalancer::new(config).decide(&fixture.input());
        assert_eq!(first.len(), 1);
        assert_eq!(first, second);
        assert_eq!(
            serde_json::to_string(&first).unwrap(),
            serde_json::to_string(&second).unwrap()
        );
    }

    /// A user's strategy: buys 1 unit of whatever closed below 100.
    struct BuyTheDip;

    impl Strategy for BuyTheDip {
        fn name(&self) -> &str {
            "buy_the_dip"
        }

        fn decide(&self, input: &StrategyInput<'_>) -> Vec<Proposal> {
            let candle = input.candle;
            if candle.close >= Decimal::ONE_HUNDRED {
                return Vec::new();
            }
            vec![Proposal {
                symbol: candle.symbol.clone(),
                side: Side::Buy,
                quantity: Decimal::ONE,
                reference: PricePoint {
                    symbol: candle.symbol.clone(),
                    price: candle.close,
                    at: candle.close_time,
                },
                rationale: Rationale {
                    strategy: self.name().to_string().into(),
                    rule: "below_100".into(),
                    inputs: json!({"close": candle.close.to_string()}).into(),
                    evidence: vec![input.candle_event],
                    summary: format!("{} closed at {}: buy 1", candle.symbol, candle.close).into(),
                },
            }]
        }
    }

    #[test]
    fn a_custom_strategy_runs_through_the_trait() {
        let strategies: Vec<Box<dyn Strategy>> =
            vec![Box::new(BuyTheDip), StrategyConfig::default().build()];
        let fixture = Fixture::new(series("SOL/USDT", &["99"]), portfolio("10000", &[]), &THREE);
        let names: Vec<&str> = strategies.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["buy_the_dip", "rebalance"]);
        let proposals: Vec<Proposal> = strategies
            .iter()
            .flat_map(|s| s.decide(&fixture.input()))
            .collect();
        assert_eq!(proposals.len(), 2);
        assert_eq!(proposals[0].rationale.strategy, "buy_the_dip");
        assert_eq!(proposals[0].quantity, Decimal::ONE);
        assert_eq!(proposals[1].rationale.strategy, "rebalance");
        assert_eq!(strategies[0].history_len(), 1);
        assert_eq!(strategies[1].history_len(), 25);
    }
}
