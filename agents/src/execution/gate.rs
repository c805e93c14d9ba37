//! The pre-sign gate: what a quote (and the swap transaction built from it) must satisfy before anything is
//! signed. Each broken check is reported with its limit and its actual value, in the units of its name.
//!
//! Times are the execution agent's clock readings (injected, so tests control them): the quote's age is the
//! time from receiving the quote to the moment it would be signed.

use chrono::{DateTime, Utc};
use jarvis_domain::trading::swap::{GateCheck, GateFailure};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::client::{Quote, QuoteRequest, SwapMode, SwapReply};

/// The gate's limits (`[venue]` keys of the same names).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateLimits {
    /// Most price impact accepted, in basis points (Jupiter's `priceImpactPct` × 10 000).
    #[serde(default = "default_max_price_impact_bps")]
    pub max_price_impact_bps: Decimal,
    /// The slippage asked for and the most accepted, in basis points.
    #[serde(default = "default_max_slippage_bps")]
    pub max_slippage_bps: u16,
    /// Oldest quote that may be signed, in milliseconds.
    #[serde(default = "default_max_quote_age_ms")]
    pub max_quote_age_ms: u64,
    /// Most priority fee paid, in lamports (also sent to Jupiter as `maxLamports`).
    #[serde(default = "default_max_priority_fee_lamports")]
    pub max_priority_fee_lamports: u64,
}

fn default_max_price_impact_bps() -> Decimal {
    Decimal::from(100)
}
fn default_max_slippage_bps() -> u16 {
    50
}
fn default_max_quote_age_ms() -> u64 {
    10_000
}
fn default_max_priority_fee_lamports() -> u64 {
    1_000_000
}

impl Default for GateLimits {
    fn default() -> Self {
        Self {
            max_price_impact_bps: default_max_price_impact_bps(),
            max_slippage_bps: default_max_slippage_bps(),
            max_quote_age_ms: default_max_quote_age_ms(),
            max_priority_fee_lamports: default_max_priority_fee_lamports(),
        }
    }
}

const BPS: Decimal = Decimal::from_parts(10_000, 0, 0, false, 0);

/// `(a - b) / base` in basis points, rounded up to 2 decimals; zero when `base` is zero.
fn spread_bps(a: u64, b: u64, base: u64) -> Decimal {
    if base == 0 {
        return Decimal::ZERO;
    }
    let diff = Decimal::from(a) - Decimal::from(b);
    (diff * BPS / Decimal::from(base))
        .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::AwayFromZero)
}

impl GateLimits {
    /// Checks `limits` make sense.
    ///
    /// # Errors
    /// The key, its value and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_price_impact_bps < Decimal::ZERO || self.max_price_impact_bps > BPS {
            return Err(format!(
                "max_price_impact_bps = {}: must be 0 to 10000",
                self.max_price_impact_bps
            ));
        }
        if self.max_slippage_bps == 0 || self.max_slippage_bps > 10_000 {
            return Err(format!(
                "max_slippage_bps = {}: must be 1 to 10000",
                self.max_slippage_bps
            ));
        }
        if self.max_quote_age_ms == 0 {
            return Err("max_quote_age_ms = 0: must be positive".into());
        }
        Ok(())
    }

    /// Every check `quote` breaks, as asked by `request`, received at `quoted_at` and checked at `now`; with
    /// the swap transaction's numbers when it was built.
    pub fn check(
        &self,
        request: &QuoteRequest,
        quote: &Quote,
        quoted_at: DateTime<Utc>,
        now: DateTime<Utc>,
        swap: Option<&SwapReply>,
    ) -> Vec<GateFailure> {
        let mut failures = Vec::new();
        let fixed = match quote.swap_mode {
            SwapMode::ExactIn => quote.in_amount,
            SwapMode::ExactOut => quote.out_amount,
        };
        let mut mismatches = Vec::new();
        if quote.input_mint != request.input_mint {
            mismatches.push(format!(
                "input mint {} (asked {})",
                quote.input_mint, request.input_mint
            ));
        }
        if quote.output_mint != request.output_mint {
            mismatches.push(format!(
                "output mint {} (asked {})",
                quote.output_mint, request.output_mint
            ));
        }
        if quote.swap_mode != request.swap_mode {
            mismatches.push(format!(
                "mode {} (asked {})",
                quote.swap_mode.as_str(),
                request.swap_mode.as_str()
            ));
        } else if fixed != request.amount {
            mismatches.push(format!("amount {fixed} (asked {})", request.amount));
        }
        if !mismatches.is_empty() {
            failures.push(GateFailure {
                check: GateCheck::QuoteMismatch,
                limit: None,
                actual: None,
                detail: format!("quote is not for the order: {}", mismatches.join(", ")),
            });
        }
        let impact = (quote.price_impact_pct.abs() * BPS).round_dp(2);
        if impact > self.max_price_impact_bps {
            failures.push(GateFailure {
                check: GateCheck::PriceImpact,
                limit: Some(self.max_price_impact_bps),
                actual: Some(impact),
                detail: format!(
                    "price impact {impact} bps above the limit of {} bps",
                    self.max_price_impact_bps
                ),
            });
        }
        // The slippage the quote really allows: its own figure, or the one its threshold implies if larger.
        let implied = match quote.swap_mode {
            SwapMode::ExactIn => spread_bps(
                quote.out_amount,
                quote.other_amount_threshold,
                quote.out_amount,
            ),
            SwapMode::ExactOut => spread_bps(
                quote.other_amount_threshold,
                quote.in_amount,
                quote.in_amount,
            ),
        };
        let slippage = implied.max(Decimal::from(quote.slippage_bps));
        let max_slippage = Decimal::from(self.max_slippage_bps);
        if slippage > max_slippage {
            failures.push(GateFailure {
                check: GateCheck::Slippage,
                limit: Some(max_slippage),
                actual: Some(slippage),
                detail: format!("slippage {slippage} bps above the limit of {max_slippage} bps"),
            });
        }
        let age_ms = (now - quoted_at).num_milliseconds().max(0);
        if age_ms as u64 > self.max_quote_age_ms {
            failures.push(GateFailure {
                check: GateCheck::QuoteAge,
                limit: Some(Decimal::from(self.max_quote_age_ms)),
                actual: Some(Decimal::from(age_ms)),
                detail: format!(
                    "quote {age_ms} ms old at signing, above the limit of {} ms",
                    self.max_quote_age_ms
                ),
            });
        }
        if let Some(swap) = swap {
            if swap.prioritization_fee_lamports > self.max_priority_fee_lamports {
                failures.push(GateFailure {
                    check: GateCheck::PriorityFee,
                    limit: Some(Decimal::from(self.max_priority_fee_lamports)),
                    actual: Some(Decimal::from(swap.prioritization_fee_lamports)),
                    detail: format!(
                        "priority fee {} lamports above the cap of {} lamports",
                        swap.prioritization_fee_lamports, self.max_priority_fee_lamports
                    ),
                });
            }
        }
        failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> QuoteRequest {
        QuoteRequest {
            input_mint: "USDC".into(),
            output_mint: "SOL".into(),
            amount: 2_000_000_000,
            swap_mode: SwapMode::ExactOut,
            slippage_bps: 50,
        }
    }

    fn quote() -> Quote {
        Quote {
            input_mint: "USDC".into(),
            in_amount: 300_000_000,
            output_mint: "SOL".into(),
            out_amount: 2_000_000_000,
            other_amount_threshold: 301_500_000,
            swap_mode: SwapMode::ExactOut,
            slippage_bps: 50,
            price_impact_pct: Decimal::new(5, 4),
            route_plan: vec![],
            context_slot: None,
        }
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    fn swap(fee: u64) -> SwapReply {
        SwapReply {
            transaction: vec![],
            last_valid_block_height: 10,
            prioritization_fee_lamports: fee,
            simulation_error: None,
        }
    }

    #[test]
    fn a_good_quote_passes() {
        let limits = GateLimits::default();
        assert_eq!(
            limits.check(&request(), &quote(), at(0), at(500), Some(&swap(5_000))),
            vec![]
        );
    }

    #[test]
    fn each_broken_check_reports_its_numbers() {
        let limits = GateLimits::default();
        let mut q = quote();
        q.price_impact_pct = Decimal::new(25, 3); // 2.5 % = 250 bps
        q.other_amount_threshold = 303_000_000; // 100 bps above in
        let failures = limits.check(&request(), &q, at(0), at(12_345), Some(&swap(2_000_000)));
        let summary: Vec<(GateCheck, Option<Decimal>, Option<Decimal>)> = failures
            .iter()
            .map(|f| (f.check, f.limit, f.actual))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    GateCheck::PriceImpact,
                    Some(Decimal::from(100)),
                    Some(Decimal::new(25000, 2))
                ),
                (
                    GateCheck::Slippage,
                    Some(Decimal::from(50)),
                    Some(Decimal::new(10000, 2))
                ),
                (
                    GateCheck::QuoteAge,
                    Some(Decimal::from(10_000)),
                    Some(Decimal::from(12_345))
                ),
                (
                    GateCheck::PriorityFee,
                    Some(Decimal::from(1_000_000)),
                    Some(Decimal::from(2_000_000))
                ),
            ]
        );
        assert_eq!(
            failures[0].detail,
            "price impact 250.00 bps above the limit of 100 bps"
        );
        assert_eq!(
            failures[2].detail,
            "quote 12345 ms old at signing, above the limit of 10000 ms"
        );
    }

    #[test]
    fn a_quote_for_something_else_is_a_mismatch() {
        let mut q = quote();
        q.out_amount = 1;
        q.output_mint = "BONK".into();
        let failures = GateLimits::default().check(&request(), &q, at(0), at(0), None);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].check, GateCheck::QuoteMismatch);
        assert_eq!(
            failures[0].detail,
            "quote is not for the order: output mint BONK (asked SOL), amount 1 (asked 2000000000)"
        );
    }

    #[test]
    fn limits_are_validated() {
        let mut limits = GateLimits::default();
        assert!(limits.validate().is_ok());
        limits.max_slippage_bps = 0;
        assert_eq!(
            limits.validate().unwrap_err(),
            "max_slippage_bps = 0: must be 1 to 10000"
        );
    }
}
