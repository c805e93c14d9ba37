//! A fake of Jupiter's HTTP APIs on 127.0.0.1: Swap API v1 (`GET /swap/v1/quote`, `POST /swap/v1/swap`) and
//! Price API v3 (`GET /price/v3?ids=`), with the real JSON shapes.
//!
//! Quotes are priced from USD prices per mint (like Jupiter's own), with a scripted price impact and
//! slippage. `/swap` returns a real serialized, unsigned `VersionedTransaction` (v0) whose fee payer is the
//! `userPublicKey`; its one instruction carries, as JSON, what the swap moves, so that [`super::solana_rpc`]
//! can "execute" it and report the balance changes a real node would.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use rust_decimal::prelude::ToPrimitive as _;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use solana_address::Address as Pubkey;
use solana_message::compiled_instruction::CompiledInstruction;
use solana_message::{v0, Hash, MessageHeader, VersionedMessage};
use solana_signature::Signature;
use solana_transaction::versioned::VersionedTransaction;

/// Wrapped SOL.
pub const SOL: &str = "So11111111111111111111111111111111111111112";
/// USDC.
pub const USDC: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
/// Jupiter's aggregator program (the fake transaction's program id).
pub const JUPITER_PROGRAM: &str = "JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4";
/// The recent blockhash of every fake swap transaction.
pub const BLOCKHASH: [u8; 32] = [7; 32];

/// What the fake answers; change it between calls through [`FakeJupiter::script`].
#[derive(Debug, Clone)]
pub struct JupiterScript {
    /// USD price of each mint (quotes and `/price/v3`).
    pub usd_prices: BTreeMap<String, Decimal>,
    /// Decimals of each mint.
    pub decimals: BTreeMap<String, u32>,
    /// `priceImpactPct` of every quote (a fraction, as Jupiter sends it).
    pub price_impact_pct: String,
    /// The `slippageBps` quotes report (default: the one asked).
    pub quote_slippage_bps: Option<u16>,
    /// `prioritizationFeeLamports` of every swap.
    pub prioritization_fee_lamports: u64,
    /// `lastValidBlockHeight` of every swap.
    pub last_valid_block_height: u64,
    /// Status codes the next `/price/v3` calls answer with instead of prices (429 carries `Retry-After: 1`).
    pub price_failures: VecDeque<u16>,
    /// Status codes the next `/swap/v1/quote` calls answer with instead of a quote.
    pub quote_failures: VecDeque<u16>,
}

impl Default for JupiterScript {
    fn default() -> Self {
        Self {
            usd_prices: BTreeMap::from([
                (SOL.to_string(), Decimal::new(15_000, 2)),
                (USDC.to_string(), Decimal::ONE),
            ]),
            decimals: BTreeMap::from([(SOL.to_string(), 9), (USDC.to_string(), 6)]),
            price_impact_pct: "0.0001".into(),
            quote_slippage_bps: None,
            prioritization_fee_lamports: 10_000,
            last_valid_block_height: 1_000,
            price_failures: VecDeque::new(),
            quote_failures: VecDeque::new(),
        }
    }
}

/// What the fake was asked.
#[derive(Debug, Clone, Default)]
pub struct JupiterCalls {
    /// `/swap/v1/quote` calls.
    pub quotes: usize,
    /// `/swap/v1/swap` calls.
    pub swaps: usize,
    /// `/price/v3` calls.
    pub prices: usize,
    /// The body of the last `/swap/v1/swap` call.
    pub last_swap_request: Option<Value>,
    /// The query of the last `/price/v3` call.
    pub last_price_ids: Option<String>,
}

#[derive(Default)]
struct Inner {
    script: JupiterScript,
    calls: JupiterCalls,
}

type Shared = Arc<Mutex<Inner>>;

/// The fake server, stopped on drop.
pub struct FakeJupiter {
    addr: SocketAddr,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeJupiter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(json!({ "error": message }))).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    response
}

fn units(value: Decimal) -> Option<u64> {
    value.trunc().to_u64()
}

async fn quote(State(inner): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut inner = inner.lock().unwrap();
    inner.calls.quotes += 1;
    if let Some(status) = inner.script.quote_failures.pop_front() {
        return error(status, "scripted failure");
    }
    let script = &inner.script;
    let (Some(input), Some(output), Some(amount)) = (
        q.get("inputMint"),
        q.get("outputMint"),
        q.get("amount").and_then(|a| a.parse::<u64>().ok()),
    ) else {
        return error(400, "inputMint, outputMint and amount are required");
    };
    let slippage: u16 = q
        .get("slippageBps")
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let mode = q.get("swapMode").map_or("ExactIn", String::as_str);
    let (Some(usd_in), Some(usd_out), Some(dec_in), Some(dec_out)) = (
        script.usd_prices.get(input),
        script.usd_prices.get(output),
        script.decimals.get(input),
        script.decimals.get(output),
    ) else {
        return error(400, "TOKEN_NOT_TRADABLE");
    };
    let scale = |d: u32| Decimal::from(10u64.pow(d));
    // Value of one smallest unit of each side, in USD.
    let unit_in = *usd_in / scale(*dec_in);
    let unit_out = *usd_out / scale(*dec_out);
    let bps = Decimal::from(slippage) / Decimal::from(10_000);
    let (in_amount, out_amount, threshold) = if mode == "ExactOut" {
        let needed = (Decimal::from(amount) * unit_out / unit_in).ceil();
        let most = (needed * (Decimal::ONE + bps)).ceil();
        (units(needed), Some(amount), units(most))
    } else {
        let gets = (Decimal::from(amount) * unit_in / unit_out).trunc();
        let least = (gets * (Decimal::ONE - bps)).trunc();
        (Some(amount), units(gets), units(least))
    };
    let (Some(in_amount), Some(out_amount), Some(threshold)) = (in_amount, out_amount, threshold)
    else {
        return error(400, "amount too large");
    };
    Json(json!({
        "inputMint": input,
        "inAmount": in_amount.to_string(),
        "outputMint": output,
        "outAmount": out_amount.to_string(),
        "otherAmountThreshold": threshold.to_string(),
        "swapMode": mode,
        "slippageBps": script.quote_slippage_bps.unwrap_or(slippage),
        "platformFee": null,
        "priceImpactPct": script.price_impact_pct,
        "routePlan": [{
            "swapInfo": {
                "ammKey": "HJPjoWUrhoZzkNfRpHuieeFk9WcZWjwy6PBjZ81ngndJ",
                "label": "Whirlpool",
                "inputMint": input,
                "outputMint": output,
                "inAmount": in_amount.to_string(),
                "outAmount": out_amount.to_string(),
                "feeAmount": "0",
                "feeMint": input
            },
            "percent": 100,
            "bps": 10000
        }],
        "contextSlot": 299_283_763u64,
        "timeTaken": 0.0123,
        "swapUsdValue": "0",
        "simplerRouteUsed": false
    }))
    .into_response()
}

/// What a fake swap moves, carried as the instruction's data (read by the fake RPC).
pub fn swap_instruction_data(
    quote: &Value,
    owner: &str,
    decimals: &BTreeMap<String, u32>,
) -> Vec<u8> {
    let mint = |k: &str| quote[k].as_str().unwrap_or_default().to_string();
    let (input, output) = (mint("inputMint"), mint("outputMint"));
    json!({
        "owner": owner,
        "in_mint": input,
        "in_amount": quote["inAmount"],
        "in_decimals": decimals.get(&input).copied().unwrap_or(0),
        "out_mint": output,
        "out_amount": quote["outAmount"],
        "out_decimals": decimals.get(&output).copied().unwrap_or(0),
    })
    .to_string()
    .into_bytes()
}

async fn swap(State(inner): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut inner = inner.lock().unwrap();
    inner.calls.swaps += 1;
    inner.calls.last_swap_request = Some(body.clone());
    let Some(user) = body["userPublicKey"]
        .as_str()
        .and_then(|u| u.parse::<Pubkey>().ok())
    else {
        return error(400, "userPublicKey is not a public key");
    };
    let quote = &body["quoteResponse"];
    if !quote.is_object() {
        return error(400, "quoteResponse is required");
    }
    let program: Pubkey = JUPITER_PROGRAM.parse().expect("program id");
    let message = v0::Message {
        header: MessageHeader {
            num_required_signatures: 1,
            num_readonly_signed_accounts: 0,
            num_readonly_unsigned_accounts: 1,
        },
        account_keys: vec![user, program],
        recent_blockhash: Hash::new_from_array(BLOCKHASH),
        instructions: vec![CompiledInstruction {
            program_id_index: 1,
            accounts: vec![0],
            data: swap_instruction_data(quote, &user.to_string(), &inner.script.decimals),
        }],
        address_table_lookups: vec![],
    };
    let unsigned = VersionedTransaction {
        signatures: vec![Signature::default()],
        message: VersionedMessage::V0(message),
    };
    let bytes = bincode::serialize(&unsigned).expect("transaction serializes");
    let script = &inner.script;
    Json(json!({
        "swapTransaction": base64::engine::general_purpose::STANDARD.encode(bytes),
        "lastValidBlockHeight": script.last_valid_block_height,
        "prioritizationFeeLamports": script.prioritization_fee_lamports,
        "computeUnitLimit": 200_000,
        "prioritizationType": {
            "computeBudget": {
                "microLamports": script.prioritization_fee_lamports * 5,
                "estimatedMicroLamports": script.prioritization_fee_lamports * 5
            }
        },
        "dynamicSlippageReport": null,
        "simulationError": null
    }))
    .into_response()
}

async fn price(State(inner): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut inner = inner.lock().unwrap();
    inner.calls.prices += 1;
    inner.calls.last_price_ids = q.get("ids").cloned();
    if let Some(status) = inner.script.price_failures.pop_front() {
        return error(status, "scripted failure");
    }
    let mut out = serde_json::Map::new();
    for id in q.get("ids").map(|s| s.split(',')).into_iter().flatten() {
        let (Some(usd), Some(decimals)) = (
            inner.script.usd_prices.get(id),
            inner.script.decimals.get(id),
        ) else {
            continue; // Jupiter leaves unpriced mints out.
        };
        let usd: f64 = usd.to_string().parse().unwrap_or_default();
        out.insert(
            id.to_string(),
            json!({
                "usdPrice": usd,
                "blockId": 348_004_023u64,
                "decimals": decimals,
                "priceChange24h": 1.29
            }),
        );
    }
    (HeaderMap::new(), Json(Value::Object(out))).into_response()
}

impl FakeJupiter {
    /// Starts the fake on a free loopback port, on the current tokio runtime.
    ///
    /// # Panics
    /// When it cannot bind.
    pub async fn start() -> Self {
        let inner: Shared = Arc::default();
        let app = Router::new()
            .route("/swap/v1/quote", get(quote))
            .route("/swap/v1/swap", post(swap))
            .route("/price/v3", get(price))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Jupiter");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes what it answers.
    pub fn script(&self, change: impl FnOnce(&mut JupiterScript)) {
        change(&mut self.inner.lock().unwrap().script);
    }

    /// What it was asked so far.
    pub fn calls(&self) -> JupiterCalls {
        self.inner.lock().unwrap().calls.clone()
    }
}
