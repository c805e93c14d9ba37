//! A client of Jupiter's Swap API v1 (`GET /swap/v1/quote`, `POST /swap/v1/swap`) over reqwest.
//!
//! The quote is kept twice: typed, for the gate, and as the exact JSON Jupiter sent, because `/swap` wants
//! the quote back unchanged. Amounts on the wire are strings of integers (smallest units); they are parsed
//! into `u64`, never through a float.

use std::time::Duration;

use base64::Engine as _;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

/// Which side of a swap is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwapMode {
    /// The input amount is fixed; slippage falls on the output.
    ExactIn,
    /// The output amount is fixed; slippage falls on the input.
    ExactOut,
}

impl SwapMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExactIn => "ExactIn",
            Self::ExactOut => "ExactOut",
        }
    }
}

/// What to ask a quote for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteRequest {
    /// The mint paid.
    pub input_mint: String,
    /// The mint received.
    pub output_mint: String,
    /// Smallest units of the input (`ExactIn`) or of the output (`ExactOut`).
    pub amount: u64,
    /// Which side is fixed.
    pub swap_mode: SwapMode,
    /// The slippage to allow, in basis points.
    pub slippage_bps: u16,
}

fn u64_from_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Text(String),
        Number(u64),
    }
    match Wire::deserialize(d)? {
        Wire::Text(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an integer amount"))),
        Wire::Number(n) => Ok(n),
    }
}

/// The fields of a Jupiter quote that Jarvis reads (the rest is kept in [`QuoteReply::raw`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    /// The mint paid.
    pub input_mint: String,
    /// Smallest units paid (for `ExactOut`, the expected input).
    #[serde(deserialize_with = "u64_from_string")]
    pub in_amount: u64,
    /// The mint received.
    pub output_mint: String,
    /// Smallest units received (for `ExactIn`, the expected output).
    #[serde(deserialize_with = "u64_from_string")]
    pub out_amount: u64,
    /// The worst case on the side that is not fixed: minimum out (`ExactIn`) or maximum in (`ExactOut`).
    #[serde(deserialize_with = "u64_from_string")]
    pub other_amount_threshold: u64,
    /// Which side is fixed.
    pub swap_mode: SwapMode,
    /// The slippage the quote allows, in basis points.
    pub slippage_bps: u16,
    /// The price impact as a fraction (`"0.0025"` is 0.25 %, 25 bps), sent as a string.
    pub price_impact_pct: Decimal,
    /// The route (kept opaque).
    #[serde(default)]
    pub route_plan: Vec<Value>,
    /// The slot the quote was computed at.
    #[serde(default)]
    pub context_slot: Option<u64>,
}

/// A quote as received: typed, and the exact JSON to hand back to `/swap`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteReply {
    /// The fields Jarvis reads.
    pub quote: Quote,
    /// Jupiter's JSON, unchanged.
    pub raw: Value,
}

/// The swap transaction Jupiter built for a quote.
#[derive(Clone, PartialEq)]
pub struct SwapReply {
    /// The unsigned transaction (a serialized `VersionedTransaction`).
    pub transaction: Vec<u8>,
    /// The last block height at which it can land.
    pub last_valid_block_height: u64,
    /// The priority fee it pays, in lamports.
    pub prioritization_fee_lamports: u64,
    /// Jupiter's simulation error, if its simulation of the transaction failed.
    pub simulation_error: Option<String>,
}

impl std::fmt::Debug for SwapReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwapReply")
            .field("transaction_bytes", &self.transaction.len())
            .field("last_valid_block_height", &self.last_valid_block_height)
            .field(
                "prioritization_fee_lamports",
                &self.prioritization_fee_lamports,
            )
            .field("simulation_error", &self.simulation_error)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SwapWire {
    swap_transaction: String,
    last_valid_block_height: u64,
    #[serde(default)]
    prioritization_fee_lamports: u64,
    #[serde(default)]
    simulation_error: Option<Value>,
}

/// A failed call to Jupiter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JupiterError {
    /// Jupiter answered 429: too many requests.
    #[error("{endpoint}: rate limited (HTTP 429){}", retry_after.map(|s| format!(", retry after {s} s")).unwrap_or_default())]
    RateLimited {
        /// Which call.
        endpoint: &'static str,
        /// Its `Retry-After`, in seconds, when it sent one.
        retry_after: Option<u64>,
    },
    /// Any other non-2xx answer, with the start of its body.
    #[error("{endpoint}: HTTP {status}: {body}")]
    Status {
        /// Which call.
        endpoint: &'static str,
        /// The status code.
        status: u16,
        /// Up to 300 characters of the body.
        body: String,
    },
    /// No answer (connection refused, timeout).
    #[error("{endpoint}: {message}")]
    Transport {
        /// Which call.
        endpoint: &'static str,
        /// The transport error.
        message: String,
    },
    /// An answer that is not what the API documents.
    #[error("{endpoint}: unexpected answer: {message}")]
    Decode {
        /// Which call.
        endpoint: &'static str,
        /// What did not parse.
        message: String,
    },
}

/// The HTTP client of one Jupiter base URL (e.g. `https://lite-api.jup.ag`).
#[derive(Debug, Clone)]
pub struct JupiterClient {
    http: reqwest::Client,
    base: String,
}

/// Sends a request and returns the JSON body of a 2xx answer.
pub(crate) async fn json_of(
    endpoint: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<Value, JupiterError> {
    let transport = |e: reqwest::Error| JupiterError::Transport {
        endpoint,
        message: e.without_url().to_string(),
    };
    let response = request.send().await.map_err(transport)?;
    let status = response.status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        return Err(JupiterError::RateLimited {
            endpoint,
            retry_after,
        });
    }
    let body = response.text().await.map_err(transport)?;
    if !status.is_success() {
        return Err(JupiterError::Status {
            endpoint,
            status: status.as_u16(),
            body: body.chars().take(300).collect(),
        });
    }
    serde_json::from_str(&body).map_err(|e| JupiterError::Decode {
        endpoint,
        message: e.to_string(),
    })
}

impl JupiterClient {
    /// A client of `base` (no trailing slash needed), with a per-request timeout.
    ///
    /// # Errors
    /// When the TLS backend cannot start.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, JupiterError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("jarvis/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| JupiterError::Transport {
                endpoint: "client",
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The underlying HTTP client (shared with the price poller).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `GET /swap/v1/quote`.
    ///
    /// # Errors
    /// [`JupiterError`].
    pub async fn quote(&self, request: &QuoteRequest) -> Result<QuoteReply, JupiterError> {
        const ENDPOINT: &str = "GET /swap/v1/quote";
        let amount = request.amount.to_string();
        let slippage = request.slippage_bps.to_string();
        let call = self
            .http
            .get(format!("{}/swap/v1/quote", self.base))
            .query(&[
                ("inputMint", request.input_mint.as_str()),
                ("outputMint", request.output_mint.as_str()),
                ("amount", amount.as_str()),
                ("slippageBps", slippage.as_str()),
                ("swapMode", request.swap_mode.as_str()),
            ]);
        let raw = json_of(ENDPOINT, call).await?;
        let quote = serde_json::from_value(raw.clone()).map_err(|e| JupiterError::Decode {
            endpoint: ENDPOINT,
            message: e.to_string(),
        })?;
        Ok(QuoteReply { quote, raw })
    }

    /// `POST /swap/v1/swap`: the transaction for `quote`, paid by `user`, with SOL wrapped and unwrapped
    /// around it and a priority fee of at most `max_priority_fee_lamports`.
    ///
    /// # Errors
    /// [`JupiterError`].
    pub async fn swap(
        &self,
        quote: &QuoteReply,
        user: &str,
        max_priority_fee_lamports: u64,
    ) -> Result<SwapReply, JupiterError> {
        const ENDPOINT: &str = "POST /swap/v1/swap";
        let body = json!({
            "userPublicKey": user,
            "quoteResponse": quote.raw,
            "wrapAndUnwrapSol": true,
            "dynamicComputeUnitLimit": true,
            "prioritizationFeeLamports": {
                "priorityLevelWithMaxLamports": {
                    "maxLamports": max_priority_fee_lamports,
                    "priorityLevel": "high",
                    "global": false
                }
            }
        });
        let call = self
            .http
            .post(format!("{}/swap/v1/swap", self.base))
            .json(&body);
        let raw = json_of(ENDPOINT, call).await?;
        let decode = |message: String| JupiterError::Decode {
            endpoint: ENDPOINT,
            message,
        };
        let wire: SwapWire = serde_json::from_value(raw).map_err(|e| decode(e.to_string()))?;
        let transaction = base64::engine::general_purpose::STANDARD
            .decode(wire.swap_transaction.trim())
            .map_err(|e| decode(format!("swapTransaction is not base64: {e}")))?;
        Ok(SwapReply {
            transaction,
            last_valid_block_height: wire.last_valid_block_height,
            prioritization_fee_lamports: wire.prioritization_fee_lamports,
            simulation_error: wire
                .simulation_error
                .filter(|v| !v.is_null())
                .map(|v| v.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_documented_quote_parses() {
        let raw = json!({
            "inputMint": "So11111111111111111111111111111111111111112",
            "inAmount": "1000000000",
            "outputMint": "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
            "outAmount": "147480000",
            "otherAmountThreshold": "146742600",
            "swapMode": "ExactIn",
            "slippageBps": 50,
            "platformFee": null,
            "priceImpactPct": "0.0001",
            "routePlan": [{"swapInfo": {"ammKey": "x", "label": "Whirlpool", "inputMint": "a", "outputMint": "b",
                "inAmount": "1", "outAmount": "2", "feeAmount": "0", "feeMint": "a"}, "percent": 100}],
            "contextSlot": 299283763,
            "timeTaken": 0.0159
        });
        let quote: Quote = serde_json::from_value(raw).unwrap();
        assert_eq!(quote.in_amount, 1_000_000_000);
        assert_eq!(quote.other_amount_threshold, 146_742_600);
        assert_eq!(quote.swap_mode, SwapMode::ExactIn);
        assert_eq!(quote.price_impact_pct, Decimal::new(1, 4));
        assert_eq!(quote.context_slot, Some(299_283_763));
    }

    #[test]
    fn a_float_amount_is_refused() {
        let raw = json!({
            "inputMint": "a", "inAmount": "1.5", "outputMint": "b", "outAmount": "1",
            "otherAmountThreshold": "1", "swapMode": "ExactIn", "slippageBps": 50, "priceImpactPct": "0"
        });
        let err = serde_json::from_value::<Quote>(raw)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"1.5\" is not an integer amount"), "{err}");
    }
}
