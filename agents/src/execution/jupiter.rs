//! The Jupiter venue: quote → pre-sign gate → swap transaction → sign → send → confirm → amounts.
//!
//! [`JupiterVenue::prepare`] does everything up to a signed transaction (or a rejection, a failure before
//! anything was sent, or, without live mode, a simulated fill at the quote). The agent records the
//! signature, then [`JupiterVenue::send_and_confirm`] sends it and reads the outcome from the chain.
//! [`JupiterVenue::recover`] looks up a transaction recorded before a restart, without sending anything.
//!
//! A buy of `q` base units is an `ExactOut` swap of the quote token into exactly `q` base units; a sell is an
//! `ExactIn` swap of exactly `q` base units into the quote token. The fixed side is exact by protocol; the
//! other side is read from the confirmed transaction's balance changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jarvis_domain::trading::swap::{GateFailure, SwapFill};
use jarvis_domain::trading::{OrderId, Side};
use jarvis_domain::Symbol;
use rust_decimal::Decimal;

use super::chain::{parse_signature, Chain, Confirmation, Sent};
use super::client::{JupiterClient, QuoteReply, QuoteRequest, SwapMode};
use super::gate::GateLimits;
use super::tokens::{from_units, to_units, Token, TokenBook, SOL_MINT};
use super::wallet::Wallet;
use super::Clock;

/// The venue's name in `OrderSubmitted`.
pub const VENUE: &str = "jupiter";
/// The Solana signature fee per signature, in lamports (the part of a fee that is not priority).
const BASE_FEE_LAMPORTS: u64 = 5_000;

/// What the Jupiter venue needs.
#[derive(Debug, Clone)]
pub struct JupiterSettings {
    /// Jupiter's base URL, e.g. `https://lite-api.jup.ag`.
    pub jupiter_url: String,
    /// The Solana JSON-RPC URL.
    pub rpc_url: String,
    /// Send real transactions (needs the keypair); otherwise fill simulated at the quote.
    pub live: bool,
    /// The keypair file (live mode only).
    pub keypair_path: Option<PathBuf>,
    /// The pre-sign gate.
    pub limits: GateLimits,
    /// How long to wait for a confirmation.
    pub confirm_timeout: Duration,
    /// How often to poll the signature's status.
    pub poll_interval: Duration,
    /// Timeout of each HTTP request (Jupiter and RPC).
    pub http_timeout: Duration,
    /// Token symbols to mints.
    pub tokens: TokenBook,
}

impl Default for JupiterSettings {
    fn default() -> Self {
        Self {
            jupiter_url: "https://lite-api.jup.ag".into(),
            rpc_url: "https://api.mainnet-beta.solana.com".into(),
            live: false,
            keypair_path: None,
            limits: GateLimits::default(),
            confirm_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            http_timeout: Duration::from_secs(10),
            tokens: TokenBook::default(),
        }
    }
}

/// The order to execute, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct SwapOrder {
    /// The order.
    pub order_id: OrderId,
    /// The pair, e.g. `SOL/USDC`.
    pub symbol: Symbol,
    /// Buy or sell the base.
    pub side: Side,
    /// Base units.
    pub quantity: Decimal,
}

/// What the portfolio can pay or deliver (checked before anything is signed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Funds {
    /// Cash in the quote asset.
    pub cash: Decimal,
    /// Base units held.
    pub held: Decimal,
}

/// The swap an order means, independent of any quote.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    base: Token,
    quote: Token,
    request: QuoteRequest,
}

/// A fill to record.
#[derive(Debug, Clone, PartialEq)]
pub struct FillPlan {
    /// The fill id (the signature, or `simulated-<order>`).
    pub fill_id: String,
    /// Base units.
    pub quantity: Decimal,
    /// Quote per base unit.
    pub price: Decimal,
    /// Fee in the quote asset.
    pub fee: Decimal,
    /// The receipt.
    pub swap: SwapFill,
}

/// A signed transaction, ready to be recorded and sent.
pub struct Ready {
    /// The signed transaction.
    pub transaction: solana_transaction::versioned::VersionedTransaction,
    /// Its signature (base58).
    pub signature: String,
    /// The last block height at which it can land.
    pub last_valid_block_height: u64,
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready")
            .field("signature", &self.signature)
            .field("last_valid_block_height", &self.last_valid_block_height)
            .finish()
    }
}

/// What [`JupiterVenue::prepare`] came to. Nothing was sent in any case.
#[derive(Debug)]
pub enum Prepared {
    /// The gate refused the quote (or its transaction).
    Rejected(Vec<GateFailure>),
    /// It cannot go on (a quote that failed, insufficient funds, a transaction refused).
    Failed(String),
    /// Dry run: filled at the quote, nothing signed.
    Simulated(Box<FillPlan>),
    /// Signed: record the signature, then send.
    Ready(Ready),
}

/// How a sent (or recovered) transaction ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It filled.
    Filled(Box<FillPlan>),
    /// It did not, for this reason (with the signature, so an operator can look it up).
    Failed(String),
}

/// Jupiter plus, in live mode, the chain and the wallet.
pub struct JupiterVenue {
    client: JupiterClient,
    chain: Chain,
    wallet: Option<Wallet>,
    settings: JupiterSettings,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for JupiterVenue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JupiterVenue")
            .field("jupiter_url", &self.settings.jupiter_url)
            .field("live", &self.settings.live)
            .field("wallet", &self.wallet)
            .finish()
    }
}

/// Why the venue cannot start.
#[derive(Debug, thiserror::Error)]
pub enum VenueError {
    /// Live mode without a keypair path.
    #[error("live trading needs venue.keypair_path")]
    NoKeypair,
    /// The keypair file is not usable.
    #[error(transparent)]
    Wallet(#[from] super::wallet::WalletError),
    /// The HTTP client cannot start.
    #[error(transparent)]
    Client(#[from] super::client::JupiterError),
}

impl JupiterVenue {
    /// The venue; loads the keypair in live mode.
    ///
    /// # Errors
    /// [`VenueError`] for live mode without a usable keypair.
    pub fn new(settings: JupiterSettings, clock: Arc<dyn Clock>) -> Result<Self, VenueError> {
        let wallet = if settings.live {
            let path = settings
                .keypair_path
                .as_ref()
                .ok_or(VenueError::NoKeypair)?;
            Some(Wallet::load(path)?)
        } else {
            None
        };
        let client = JupiterClient::new(&settings.jupiter_url, settings.http_timeout)?;
        let chain = Chain::new(&settings.rpc_url, settings.http_timeout);
        Ok(Self {
            client,
            chain,
            wallet,
            settings,
            clock,
        })
    }

    /// Whether it sends real transactions.
    pub fn live(&self) -> bool {
        self.wallet.is_some()
    }

    /// The wallet's public key, in live mode.
    pub fn pubkey(&self) -> Option<String> {
        self.wallet.as_ref().map(|w| w.pubkey().to_string())
    }

    fn plan(&self, order: &SwapOrder) -> Result<Plan, String> {
        let (base, quote) = self
            .settings
            .tokens
            .pair(order.symbol.as_str())
            .map_err(|e| e.to_string())?;
        let amount =
            to_units("quantity", order.quantity, base.decimals).map_err(|e| e.to_string())?;
        if amount == 0 {
            return Err(format!(
                "quantity {} is below one smallest unit of {} ({} decimals)",
                order.quantity, order.symbol, base.decimals
            ));
        }
        let (input, output, swap_mode) = match order.side {
            Side::Buy => (quote, base, SwapMode::ExactOut),
            Side::Sell => (base, quote, SwapMode::ExactIn),
        };
        Ok(Plan {
            base: base.clone(),
            quote: quote.clone(),
            request: QuoteRequest {
                input_mint: input.mint.clone(),
                output_mint: output.mint.clone(),
                amount,
                swap_mode,
                slippage_bps: self.settings.limits.max_slippage_bps,
            },
        })
    }

    /// The fill of `order` for `base_units` base and `quote_units` quote moved.
    fn fill_of(
        &self,
        order: &SwapOrder,
        plan: &Plan,
        base_units: u64,
        quote_units: u64,
        swap: SwapFill,
    ) -> Result<FillPlan, String> {
        let quantity = from_units(base_units, plan.base.decimals);
        let notional = from_units(quote_units, plan.quote.decimals);
        if quantity.is_zero() || notional.is_zero() {
            return Err(format!(
                "the swap moved {base_units} base and {quote_units} quote units: nothing to fill"
            ));
        }
        let price = notional
            .checked_div(quantity)
            .ok_or_else(|| "price overflows".to_string())?;
        // The network fee, in the quote asset when SOL is one side of the pair (else unpriced: 0, and the
        // lamports stay in the receipt).
        let fee_sol = from_units(u64::try_from(swap.fee_lamports).unwrap_or(u64::MAX), 9);
        let fee = if plan.quote.mint == SOL_MINT {
            fee_sol
        } else if plan.base.mint == SOL_MINT {
            (fee_sol * price).round_dp(plan.quote.decimals)
        } else {
            Decimal::ZERO
        };
        let fill_id = swap
            .signature
            .clone()
            .unwrap_or_else(|| format!("simulated-{}", order.order_id));
        Ok(FillPlan {
            fill_id,
            quantity,
            price,
            fee,
            swap,
        })
    }

    /// Quotes, gates, and (live) builds and signs the swap. Nothing is sent.
    pub async fn prepare(&self, order: &SwapOrder, funds: Funds) -> Prepared {
        let plan = match self.plan(order) {
            Ok(plan) => plan,
            Err(reason) => return Prepared::Failed(reason),
        };
        let reply: QuoteReply = match self.client.quote(&plan.request).await {
            Ok(reply) => reply,
            Err(e) => return Prepared::Failed(format!("no quote: {e}")),
        };
        let quoted_at = self.clock.now();
        let limits = &self.settings.limits;
        let checks = limits.check(&plan.request, &reply.quote, quoted_at, quoted_at, None);
        if !checks.is_empty() {
            return Prepared::Rejected(checks);
        }
        let q = &reply.quote;
        // Worst cases: the most a buy can cost, the base a sell gives.
        match order.side {
            Side::Buy => {
                let most = from_units(
                    q.other_amount_threshold.max(q.in_amount),
                    plan.quote.decimals,
                );
                if most > funds.cash {
                    return Prepared::Failed(format!(
                        "insufficient cash: the swap may cost up to {most} {}, the portfolio has {}",
                        quote_symbol(order),
                        funds.cash
                    ));
                }
            }
            Side::Sell => {
                if order.quantity > funds.held {
                    return Prepared::Failed(format!(
                        "insufficient position: sells {}, the portfolio holds {}",
                        order.quantity, funds.held
                    ));
                }
            }
        }
        let Some(wallet) = &self.wallet else {
            let (base_units, quote_units) = match order.side {
                Side::Buy => (q.out_amount, q.in_amount),
                Side::Sell => (q.in_amount, q.out_amount),
            };
            let swap = SwapFill {
                venue: VENUE.into(),
                signature: None,
                simulated: true,
                input_mint: q.input_mint.clone(),
                output_mint: q.output_mint.clone(),
                in_amount: Decimal::from(q.in_amount),
                out_amount: Decimal::from(q.out_amount),
                fee_lamports: Decimal::from(BASE_FEE_LAMPORTS),
                slot: None,
                amounts_from: "quote".into(),
            };
            return match self.fill_of(order, &plan, base_units, quote_units, swap) {
                Ok(fill) => Prepared::Simulated(Box::new(fill)),
                Err(reason) => Prepared::Failed(reason),
            };
        };
        let swap = match self
            .client
            .swap(
                &reply,
                &wallet.pubkey().to_string(),
                limits.max_priority_fee_lamports,
            )
            .await
        {
            Ok(swap) => swap,
            Err(e) => return Prepared::Failed(format!("no swap transaction: {e}")),
        };
        if let Some(error) = &swap.simulation_error {
            return Prepared::Failed(format!("Jupiter's simulation of the swap failed: {error}"));
        }
        let checks = limits.check(
            &plan.request,
            &reply.quote,
            quoted_at,
            self.clock.now(),
            Some(&swap),
        );
        if !checks.is_empty() {
            return Prepared::Rejected(checks);
        }
        match wallet.sign_swap(&swap.transaction) {
            Ok(transaction) => {
                let signature = transaction
                    .signatures
                    .first()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                Prepared::Ready(Ready {
                    transaction,
                    signature,
                    last_valid_block_height: swap.last_valid_block_height,
                })
            }
            Err(e) => Prepared::Failed(e.to_string()),
        }
    }

    /// Sends the signed transaction and waits for the chain's verdict.
    pub async fn send_and_confirm(&self, order: &SwapOrder, ready: &Ready) -> Outcome {
        match self.chain.send(&ready.transaction).await {
            Sent::Accepted => {}
            Sent::Refused(reason) => {
                return Outcome::Failed(format!(
                    "send failed, nothing landed: {reason} (signature {})",
                    ready.signature
                ))
            }
            Sent::Unknown(reason) => {
                tracing::warn!(signature = %ready.signature, %reason, "send answer lost; confirming anyway");
            }
        }
        self.settle(order, &ready.signature, ready.last_valid_block_height)
            .await
    }

    async fn settle(&self, order: &SwapOrder, signature: &str, last_valid: u64) -> Outcome {
        let sig = match parse_signature(signature) {
            Ok(sig) => sig,
            Err(e) => return Outcome::Failed(e),
        };
        let timeout = self.settings.confirm_timeout;
        match self
            .chain
            .confirm(&sig, last_valid, timeout, self.settings.poll_interval)
            .await
        {
            Confirmation::Confirmed { slot } => self.read_fill(order, signature, slot).await,
            Confirmation::FailedOnChain(err) => Outcome::Failed(format!(
                "failed on chain: {err} (signature {signature}; only the fee was paid)"
            )),
            Confirmation::Expired { height } => Outcome::Failed(format!(
                "expired unconfirmed: block height {height} passed the last valid {last_valid}, signature {signature}"
            )),
            Confirmation::TimedOut => Outcome::Failed(format!(
                "unconfirmed after {} s, signature {signature}: check it on chain before trading this pair again",
                timeout.as_secs()
            )),
        }
    }

    async fn read_fill(&self, order: &SwapOrder, signature: &str, slot: u64) -> Outcome {
        let plan = match self.plan(order) {
            Ok(plan) => plan,
            Err(reason) => return Outcome::Failed(format!("{reason} (signature {signature})")),
        };
        let owner = self.pubkey().unwrap_or_default();
        let sig = match parse_signature(signature) {
            Ok(sig) => sig,
            Err(e) => return Outcome::Failed(e),
        };
        let (moved, fee_lamports, amounts_from, slot) = match self.chain.moved(&sig, &owner).await {
            Ok(m) => {
                let fee = m.fee_lamports;
                let slot = m.slot;
                (Some(m), fee, "token_balances", slot)
            }
            Err(e) => {
                tracing::warn!(%signature, cause = %e, "getTransaction failed; filling at the quote's fixed side and worst case");
                (None, 0, "quote_threshold", slot)
            }
        };
        let fixed = plan.request.amount;
        // The side that is not fixed, from the balances; the fixed side is exact by protocol.
        let variable = |mint: &str, sign: i128| -> Option<u64> {
            let d = moved.as_ref()?.delta(mint) * sign;
            u64::try_from(d).ok().filter(|d| *d > 0)
        };
        let (in_amount, out_amount) = match plan.request.swap_mode {
            SwapMode::ExactOut => (variable(&plan.request.input_mint, -1), Some(fixed)),
            SwapMode::ExactIn => (Some(fixed), variable(&plan.request.output_mint, 1)),
        };
        let (Some(in_amount), Some(out_amount)) = (in_amount, out_amount) else {
            return Outcome::Failed(format!(
                "confirmed, but its balance changes could not be read: signature {signature}; check the wallet and record the fill by hand"
            ));
        };
        let (base_units, quote_units) = match order.side {
            Side::Buy => (out_amount, in_amount),
            Side::Sell => (in_amount, out_amount),
        };
        let swap = SwapFill {
            venue: VENUE.into(),
            signature: Some(signature.to_string()),
            simulated: false,
            input_mint: plan.request.input_mint.clone(),
            output_mint: plan.request.output_mint.clone(),
            in_amount: Decimal::from(in_amount),
            out_amount: Decimal::from(out_amount),
            fee_lamports: Decimal::from(fee_lamports),
            slot: Some(slot),
            amounts_from: amounts_from.into(),
        };
        match self.fill_of(order, &plan, base_units, quote_units, swap) {
            Ok(fill) => Outcome::Filled(Box::new(fill)),
            Err(reason) => Outcome::Failed(format!("{reason} (signature {signature})")),
        }
    }

    /// The outcome of a transaction recorded as sent before a restart, looked up once, nothing sent: filled
    /// or failed on chain if the chain knows, else failed as "outcome unknown".
    pub async fn recover(&self, order: &SwapOrder, signature: &str) -> Outcome {
        let unknown = |why: String| {
            Outcome::Failed(format!(
                "outcome unknown after restart, signature {signature}: {why}; check it on chain"
            ))
        };
        if !self.live() {
            return unknown("not in live mode".into());
        }
        let sig = match parse_signature(signature) {
            Ok(sig) => sig,
            Err(e) => return unknown(e),
        };
        match self.chain.status(&sig, true).await {
            Ok(Some(Confirmation::Confirmed { slot })) => {
                self.read_fill(order, signature, slot).await
            }
            Ok(Some(Confirmation::FailedOnChain(err))) => Outcome::Failed(format!(
                "failed on chain: {err} (signature {signature}; only the fee was paid)"
            )),
            Ok(_) => unknown("not confirmed".into()),
            Err(e) => unknown(format!("status lookup failed: {e}")),
        }
    }

    /// The time now, by the venue's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

fn quote_symbol(order: &SwapOrder) -> &str {
    order.symbol.as_str().split('/').nth(1).unwrap_or("quote")
}
