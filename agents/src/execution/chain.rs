//! Solana JSON-RPC through `solana-rpc-client`: send a signed transaction, poll its status until it is
//! confirmed, fails on chain, expires, or the timeout passes, and read what it moved.
//!
//! A send that the node refused (a JSON-RPC error, e.g. its preflight simulation failed) certainly did not
//! land. A send whose answer was lost (timeout, connection reset) may have: it is confirmed like a sent one,
//! so it ends as filled, failed on chain, or "unconfirmed after N s" with the signature, never as a
//! silent loss.

use std::str::FromStr as _;
use std::time::{Duration, Instant};

use solana_commitment_config::CommitmentConfig;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_rpc_client_api::client_error::{Error as ClientError, ErrorKind};
use solana_rpc_client_types::config::{RpcSendTransactionConfig, RpcTransactionConfig};
use solana_signature::Signature;
use solana_transaction::versioned::VersionedTransaction;
use solana_transaction_status_client_types::option_serializer::OptionSerializer;
use solana_transaction_status_client_types::{UiTransactionEncoding, UiTransactionTokenBalance};

use super::tokens::SOL_MINT;

/// How a send went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The node accepted it.
    Accepted,
    /// The answer was lost: it may or may not have been forwarded.
    Unknown(String),
    /// The node refused it (nothing was forwarded).
    Refused(String),
}

/// How a transaction ended, as far as the chain says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// Confirmed without error, in `slot`.
    Confirmed {
        /// The slot.
        slot: u64,
    },
    /// Landed and failed on chain: nothing moved but the fee.
    FailedOnChain(String),
    /// The chain passed its last valid block height without it: it can never land.
    Expired {
        /// The block height seen.
        height: u64,
    },
    /// Still unknown when the timeout passed.
    TimedOut,
}

/// Balance changes of one owner in one transaction, in smallest units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The slot.
    pub slot: u64,
    /// The fee in lamports.
    pub fee_lamports: u64,
    /// Change of each mint held by the owner (native SOL counted under the wrapped SOL mint, fee
    /// excluded), positive when received.
    pub deltas: Vec<(String, i128)>,
}

impl Moved {
    /// The change of `mint`.
    pub fn delta(&self, mint: &str) -> i128 {
        self.deltas
            .iter()
            .filter(|(m, _)| m == mint)
            .map(|(_, d)| d)
            .sum()
    }
}

/// A Solana JSON-RPC endpoint.
pub struct Chain {
    rpc: RpcClient,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("url", &self.rpc.url())
            .finish()
    }
}

fn ambiguous(e: &ClientError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Io(_) | ErrorKind::Reqwest(_) | ErrorKind::Middleware(_)
    )
}

fn token_sum(
    balances: &OptionSerializer<Vec<UiTransactionTokenBalance>>,
    owner: &str,
) -> Vec<(String, i128)> {
    let OptionSerializer::Some(balances) = balances else {
        return vec![];
    };
    balances
        .iter()
        .filter(|b| matches!(&b.owner, OptionSerializer::Some(o) if o == owner))
        .filter_map(|b| {
            let amount = b.ui_token_amount.amount.parse::<i128>().ok()?;
            Some((b.mint.clone(), amount))
        })
        .collect()
}

impl Chain {
    /// A client of `url` with a per-request timeout, at `confirmed` commitment.
    pub fn new(url: &str, timeout: Duration) -> Self {
        Self {
            rpc: RpcClient::new_with_timeout_and_commitment(
                url.to_string(),
                timeout,
                CommitmentConfig::confirmed(),
            ),
        }
    }

    /// `sendTransaction` (base64, with the node's preflight simulation).
    pub async fn send(&self, transaction: &VersionedTransaction) -> Sent {
        let config = RpcSendTransactionConfig {
            skip_preflight: false,
            preflight_commitment: Some(CommitmentConfig::confirmed().commitment),
            encoding: Some(UiTransactionEncoding::Base64),
            max_retries: None,
            min_context_slot: None,
        };
        match self
            .rpc
            .send_transaction_with_config(transaction, config)
            .await
        {
            Ok(_) => Sent::Accepted,
            Err(e) if ambiguous(&e) => Sent::Unknown(e.to_string()),
            Err(e) => Sent::Refused(e.to_string()),
        }
    }

    /// Polls `getSignatureStatuses` every `poll` until the transaction is confirmed or failed, the chain
    /// passes `last_valid_block_height`, or `timeout` passes. RPC errors while polling are retried.
    pub async fn confirm(
        &self,
        signature: &Signature,
        last_valid_block_height: u64,
        timeout: Duration,
        poll: Duration,
    ) -> Confirmation {
        let start = Instant::now();
        loop {
            match self.status(signature, false).await {
                Ok(Some(done)) => return done,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%signature, cause = %e, "getSignatureStatuses failed; polling on")
                }
            }
            match self.rpc.get_block_height().await {
                Ok(height) if height > last_valid_block_height => {
                    // One last look, in the whole history, before calling it expired.
                    if let Ok(Some(done)) = self.status(signature, true).await {
                        return done;
                    }
                    return Confirmation::Expired { height };
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(cause = %e, "getBlockHeight failed"),
            }
            if start.elapsed() >= timeout {
                return Confirmation::TimedOut;
            }
            tokio::time::sleep(poll.min(timeout.saturating_sub(start.elapsed()))).await;
        }
    }

    /// The transaction's final status if the chain has one (`None`: unknown or not yet confirmed).
    ///
    /// # Errors
    /// The RPC failure, as text.
    pub async fn status(
        &self,
        signature: &Signature,
        history: bool,
    ) -> Result<Option<Confirmation>, String> {
        let statuses = if history {
            self.rpc
                .get_signature_statuses_with_history(&[*signature])
                .await
        } else {
            self.rpc.get_signature_statuses(&[*signature]).await
        }
        .map_err(|e| e.to_string())?;
        Ok(match statuses.value.into_iter().next().flatten() {
            Some(status) if status.err.is_some() => Some(Confirmation::FailedOnChain(format!(
                "{}",
                status.err.expect("checked")
            ))),
            Some(status) if status.satisfies_commitment(CommitmentConfig::confirmed()) => {
                Some(Confirmation::Confirmed { slot: status.slot })
            }
            _ => None,
        })
    }

    /// What the confirmed transaction moved for `owner`, from `getTransaction`'s balances.
    ///
    /// # Errors
    /// The RPC failure or a transaction without metadata, as text.
    pub async fn moved(&self, signature: &Signature, owner: &str) -> Result<Moved, String> {
        let config = RpcTransactionConfig {
            encoding: Some(UiTransactionEncoding::Json),
            commitment: Some(CommitmentConfig::confirmed()),
            max_supported_transaction_version: Some(0),
        };
        let tx = self
            .rpc
            .get_transaction_with_config(signature, config)
            .await
            .map_err(|e| e.to_string())?;
        let meta = tx
            .transaction
            .meta
            .ok_or_else(|| format!("transaction {signature} has no status metadata"))?;
        let mut deltas: Vec<(String, i128)> = Vec::new();
        for (mint, amount) in token_sum(&meta.post_token_balances, owner) {
            deltas.push((mint, amount));
        }
        for (mint, amount) in token_sum(&meta.pre_token_balances, owner) {
            deltas.push((mint, -amount));
        }
        // The fee payer (account 0) is the owner: its lamports, fee put back, are the native SOL moved.
        if let (Some(pre), Some(post)) = (meta.pre_balances.first(), meta.post_balances.first()) {
            let native = i128::from(*post) - i128::from(*pre) + i128::from(meta.fee);
            deltas.push((SOL_MINT.to_string(), native));
        }
        Ok(Moved {
            slot: tx.slot,
            fee_lamports: meta.fee,
            deltas,
        })
    }
}

/// Parses a base58 signature.
///
/// # Errors
/// A message naming the text.
pub fn parse_signature(text: &str) -> Result<Signature, String> {
    Signature::from_str(text).map_err(|e| format!("signature {text:?}: {e}"))
}
