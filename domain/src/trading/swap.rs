//! What an on-chain venue (Jupiter on Solana) adds to an order's story: the pre-sign gate's verdict on a
//! quote, the signature recorded before a transaction is sent, and the receipt of a swap that filled.
//!
//! Amounts in a token's smallest unit (lamports, micro-USDC) are integers carried as `Decimal`, so JSON
//! readers never meet a number above 2^53 and nothing goes through `f64`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::OrderId;

/// A check of the pre-sign gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateCheck {
    /// The quote's price impact, in basis points, above the limit.
    PriceImpact,
    /// The slippage the quote allows (its own, or implied by its threshold), in basis points, above the limit.
    Slippage,
    /// The quote is older than the limit (milliseconds, event time) when it would be signed.
    QuoteAge,
    /// The priority fee of the swap transaction, in lamports, above the cap.
    PriorityFee,
    /// The quote is not for what was asked (mints, amount or mode differ).
    QuoteMismatch,
}

/// One broken check, with its numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GateFailure {
    /// The check.
    pub check: GateCheck,
    /// The limit, when the check has one.
    pub limit: Option<Decimal>,
    /// The value that broke it.
    pub actual: Option<Decimal>,
    /// One human sentence with the numbers and their units.
    pub detail: String,
}

/// Payload of `QuoteRejected`: the venue's quote broke the pre-sign gate; nothing was signed or sent, and the
/// order ends as failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QuoteRejected {
    /// The order.
    pub order_id: OrderId,
    /// The venue that quoted, e.g. `jupiter`.
    pub venue: String,
    /// Every broken check (at least one).
    pub checks: Vec<GateFailure>,
    /// When the gate decided.
    pub rejected_at: DateTime<Utc>,
}

/// Payload of `OrderSent`: the signed transaction's signature, recorded before it is sent, so a crash
/// between sending and confirming never leads to a second transaction for the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderSent {
    /// The order.
    pub order_id: OrderId,
    /// The transaction's signature (base58): look it up in any Solana explorer.
    pub signature: String,
    /// The last block height at which the transaction can land; above it, it never will.
    pub last_valid_block_height: u64,
    /// When it was signed and handed to the RPC node.
    pub sent_at: DateTime<Utc>,
}

/// The receipt of a swap that filled an order: what went in and came out, in smallest units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SwapFill {
    /// The venue, e.g. `jupiter`.
    pub venue: String,
    /// The confirmed transaction's signature; `None` for a simulated (dry-run) fill.
    pub signature: Option<String>,
    /// True when nothing was signed or sent: the fill is the quote's amounts (dry run).
    pub simulated: bool,
    /// The mint paid.
    pub input_mint: String,
    /// The mint received.
    pub output_mint: String,
    /// Smallest units paid (an integer).
    pub in_amount: Decimal,
    /// Smallest units received (an integer).
    pub out_amount: Decimal,
    /// The transaction's fee in lamports (base fee plus priority fee); 0 when simulated.
    pub fee_lamports: Decimal,
    /// The slot the transaction landed in; `None` when simulated.
    pub slot: Option<u64>,
    /// Where the amounts come from: `token_balances` (the confirmed transaction's balance changes) or
    /// `quote` (a simulated fill).
    pub amounts_from: String,
}

/// A sentence listing the broken checks, used as the order's failure reason.
pub fn describe(checks: &[GateFailure]) -> String {
    let parts: Vec<&str> = checks.iter().map(|c| c.detail.as_str()).collect();
    format!("quote rejected by the pre-sign gate: {}", parts.join("; "))
}
