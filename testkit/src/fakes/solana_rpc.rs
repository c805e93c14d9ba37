//! A fake Solana JSON-RPC node on 127.0.0.1, answering what `solana-rpc-client` calls for a swap:
//! `sendTransaction`, `getSignatureStatuses`, `getBlockHeight`, `getTransaction`, plus
//! `getLatestBlockhash`, `getVersion` and `getHealth`.
//!
//! It checks every transaction it receives: it must decode, every signature must verify, and its fee
//! payer must be the expected signer; anything else is refused and counted in [`RpcCalls::bad_signatures`].
//! An accepted transaction built by [`super::jupiter`] is "executed" from its instruction data: the owner's
//! token balances and lamports change as a real swap's would, and `getTransaction` reports them.
//!
//! Switchable behaviour ([`SendMode`]): accept and confirm, refuse the send (a preflight failure), accept
//! but never confirm, or land and fail on chain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};
use solana_transaction::versioned::VersionedTransaction;

use super::jupiter::SOL;

/// What `sendTransaction` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendMode {
    /// Accept, and confirm at once.
    #[default]
    Confirm,
    /// Refuse with a preflight simulation failure (JSON-RPC error -32002).
    Refuse,
    /// Accept, and never confirm (status stays unknown).
    NeverConfirm,
    /// Accept, and land with an instruction error.
    FailOnChain,
}

/// What it was asked.
#[derive(Debug, Clone, Default)]
pub struct RpcCalls {
    /// `sendTransaction` calls (accepted or not).
    pub send_transaction: usize,
    /// Transactions refused because a signature did not verify or the payer was not the expected signer.
    pub bad_signatures: usize,
    /// Signatures of the transactions accepted, in order.
    pub accepted: Vec<String>,
    /// Every method called, in order.
    pub methods: Vec<String>,
}

#[derive(Debug, Clone)]
struct Landed {
    slot: u64,
    fee: u64,
    mode: SendMode,
    transaction: VersionedTransaction,
    swap: Value,
}

struct Inner {
    mode: SendMode,
    expected_signer: Option<String>,
    block_height: u64,
    calls: RpcCalls,
    landed: BTreeMap<String, Landed>,
}

type Shared = Arc<Mutex<Inner>>;

/// The fake node, stopped on drop.
pub struct FakeSolanaRpc {
    addr: SocketAddr,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSolanaRpc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lamports the owner holds before a swap, and token units of every mint.
const START_LAMPORTS: i128 = 100_000_000_000;
const START_TOKENS: i128 = 1_000_000_000_000;
/// The base fee per signature.
const BASE_FEE: u64 = 5_000;

fn ok(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

fn rpc_error(id: &Value, code: i64, message: &str, data: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message, "data": data } })
}

fn context(slot: u64) -> Value {
    json!({ "slot": slot, "apiVersion": "2.2.14" })
}

fn ui_amount(amount: i128, decimals: u32) -> Value {
    let text = if decimals == 0 {
        amount.to_string()
    } else {
        let s = format!("{:0>width$}", amount, width = decimals as usize + 1);
        let (int, frac) = s.split_at(s.len() - decimals as usize);
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            int.to_string()
        } else {
            format!("{int}.{frac}")
        }
    };
    json!({
        "uiAmount": text.parse::<f64>().ok(),
        "decimals": decimals,
        "amount": amount.to_string(),
        "uiAmountString": text
    })
}

fn amount(v: &Value) -> i128 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64().map(i128::from))
        .unwrap_or(0)
}

impl Landed {
    /// `getTransaction`'s result (json encoding).
    fn to_json(&self, signature: &str) -> Value {
        let s = &self.swap;
        let owner = s["owner"].as_str().unwrap_or_default();
        let (in_mint, out_mint) = (
            s["in_mint"].as_str().unwrap_or_default(),
            s["out_mint"].as_str().unwrap_or_default(),
        );
        let (in_amount, out_amount) = (amount(&s["in_amount"]), amount(&s["out_amount"]));
        let failed = self.mode == SendMode::FailOnChain;
        // What moves: nothing but the fee when it failed.
        let mut lamports = START_LAMPORTS - i128::from(self.fee);
        let mut pre_tokens = Vec::new();
        let mut post_tokens = Vec::new();
        for (index, (mint, decimals, change)) in [
            (
                in_mint,
                s["in_decimals"].as_u64().unwrap_or(0) as u32,
                -in_amount,
            ),
            (
                out_mint,
                s["out_decimals"].as_u64().unwrap_or(0) as u32,
                out_amount,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let change = if failed { 0 } else { change };
            if mint == SOL {
                lamports += change; // wrapped and unwrapped around the swap: native SOL moves
                continue;
            }
            let balance = |amount: i128| {
                json!({
                    "accountIndex": index + 2,
                    "mint": mint,
                    "uiTokenAmount": ui_amount(amount, decimals),
                    "owner": owner,
                    "programId": "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
                })
            };
            pre_tokens.push(balance(START_TOKENS));
            post_tokens.push(balance(START_TOKENS + change));
        }
        let message = &self.transaction.message;
        let keys: Vec<String> = message
            .static_account_keys()
            .iter()
            .map(|k| k.to_string())
            .collect();
        let header = message.header();
        let instructions: Vec<Value> = message
            .instructions()
            .iter()
            .map(|i| {
                json!({
                    "programIdIndex": i.program_id_index,
                    "accounts": i.accounts,
                    "data": bs58::encode(&i.data).into_string(),
                    "stackHeight": null
                })
            })
            .collect();
        let err = if failed {
            json!({ "InstructionError": [0, { "Custom": 6001 }] })
        } else {
            Value::Null
        };
        let status = if failed {
            json!({ "Err": err })
        } else {
            json!({ "Ok": null })
        };
        json!({
            "slot": self.slot,
            "blockTime": 1_763_712_000i64,
            "version": 0,
            "transaction": {
                "signatures": [signature],
                "message": {
                    "header": {
                        "numRequiredSignatures": header.num_required_signatures,
                        "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
                        "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts
                    },
                    "accountKeys": keys,
                    "recentBlockhash": message.recent_blockhash().to_string(),
                    "instructions": instructions,
                    "addressTableLookups": []
                }
            },
            "meta": {
                "err": err,
                "status": status,
                "fee": self.fee,
                "preBalances": [START_LAMPORTS as u64, 1_141_440],
                "postBalances": [lamports.max(0) as u64, 1_141_440],
                "innerInstructions": [],
                "logMessages": ["Program JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4 invoke [1]"],
                "preTokenBalances": pre_tokens,
                "postTokenBalances": post_tokens,
                "rewards": [],
                "loadedAddresses": { "writable": [], "readonly": [] },
                "computeUnitsConsumed": 120_000
            }
        })
    }
}

fn send(inner: &mut Inner, id: &Value, params: &Value) -> Value {
    inner.calls.send_transaction += 1;
    let encoded = params[0].as_str().unwrap_or_default();
    let encoding = params[1]["encoding"].as_str().unwrap_or("base58");
    let bytes = if encoding == "base64" {
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
    } else {
        bs58::decode(encoded).into_vec().ok()
    };
    let Some(tx) = bytes.and_then(|b| bincode::deserialize::<VersionedTransaction>(&b).ok()) else {
        return rpc_error(
            id,
            -32602,
            "invalid transaction: failed to deserialize",
            Value::Null,
        );
    };
    let payer = tx
        .message
        .static_account_keys()
        .first()
        .map(|k| k.to_string());
    let verified = !tx.signatures.is_empty() && tx.verify_with_results().iter().all(|ok| *ok);
    let expected = inner
        .expected_signer
        .as_ref()
        .is_none_or(|e| Some(e) == payer.as_ref());
    if !verified || !expected {
        inner.calls.bad_signatures += 1;
        return rpc_error(
            id,
            -32003,
            "Transaction signature verification failure",
            Value::Null,
        );
    }
    let signature = tx.signatures[0].to_string();
    if inner.mode == SendMode::Refuse {
        let data = json!({
            "err": { "InstructionError": [3, { "Custom": 6001 }] },
            "logs": ["Program log: Error: SlippageToleranceExceeded"],
            "accounts": null,
            "unitsConsumed": 59_000,
            "returnData": null,
            "innerInstructions": null,
            "replacementBlockhash": null,
            "loadedAccountsDataSize": null
        });
        return rpc_error(
            id,
            -32002,
            "Transaction simulation failed: Error processing Instruction 3: custom program error: 0x1771",
            data,
        );
    }
    let swap = tx
        .message
        .instructions()
        .first()
        .and_then(|i| serde_json::from_slice::<Value>(&i.data).ok())
        .unwrap_or(Value::Null);
    let fee = BASE_FEE + 10_000;
    inner.landed.insert(
        signature.clone(),
        Landed {
            slot: 300_000_000 + inner.calls.accepted.len() as u64,
            fee,
            mode: inner.mode,
            transaction: tx,
            swap,
        },
    );
    inner.calls.accepted.push(signature.clone());
    ok(id, json!(signature))
}

async fn handle(State(inner): State<Shared>, Json(request): Json<Value>) -> Json<Value> {
    let mut inner = inner.lock().unwrap();
    let id = request["id"].clone();
    let method = request["method"].as_str().unwrap_or_default().to_string();
    inner.calls.methods.push(method.clone());
    let params = &request["params"];
    let slot = 300_000_100;
    let answer = match method.as_str() {
        "sendTransaction" => send(&mut inner, &id, params),
        "getSignatureStatuses" => {
            let statuses: Vec<Value> = params[0]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|sig| {
                    let sig = sig.as_str().unwrap_or_default();
                    match inner.landed.get(sig) {
                        Some(l) if l.mode == SendMode::NeverConfirm => Value::Null,
                        Some(l) if l.mode == SendMode::FailOnChain => {
                            let err = json!({ "InstructionError": [0, { "Custom": 6001 }] });
                            json!({ "slot": l.slot, "confirmations": 0, "status": { "Err": err },
                                    "err": err, "confirmationStatus": "confirmed" })
                        }
                        Some(l) => json!({ "slot": l.slot, "confirmations": null,
                            "status": { "Ok": null }, "err": null, "confirmationStatus": "finalized" }),
                        None => Value::Null,
                    }
                })
                .collect();
            ok(&id, json!({ "context": context(slot), "value": statuses }))
        }
        "getBlockHeight" => ok(&id, json!(inner.block_height)),
        "getTransaction" => {
            let sig = params[0].as_str().unwrap_or_default();
            match inner.landed.get(sig) {
                Some(l) if l.mode != SendMode::NeverConfirm => ok(&id, l.to_json(sig)),
                _ => ok(&id, Value::Null),
            }
        }
        "getLatestBlockhash" => ok(
            &id,
            json!({ "context": context(slot), "value": {
                "blockhash": solana_message::Hash::new_from_array(super::jupiter::BLOCKHASH).to_string(),
                "lastValidBlockHeight": inner.block_height + 150 } }),
        ),
        "getVersion" => ok(
            &id,
            json!({ "solana-core": "2.2.14", "feature-set": 3294202862u64 }),
        ),
        "getHealth" => ok(&id, json!("ok")),
        other => rpc_error(
            &id,
            -32601,
            &format!("Method not found: {other}"),
            Value::Null,
        ),
    };
    Json(answer)
}

impl FakeSolanaRpc {
    /// Starts the fake on a free loopback port, on the current tokio runtime.
    ///
    /// # Panics
    /// When it cannot bind.
    pub async fn start() -> Self {
        let inner: Shared = Arc::new(Mutex::new(Inner {
            mode: SendMode::Confirm,
            expected_signer: None,
            block_height: 100,
            calls: RpcCalls::default(),
            landed: BTreeMap::new(),
        }));
        let app = Router::new()
            .route("/", post(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Solana RPC");
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

    /// What `sendTransaction` does from now on.
    pub fn set_mode(&self, mode: SendMode) {
        self.inner.lock().unwrap().mode = mode;
    }

    /// Refuse any transaction whose fee payer is not `pubkey` (base58).
    pub fn expect_signer(&self, pubkey: &str) {
        self.inner.lock().unwrap().expected_signer = Some(pubkey.to_string());
    }

    /// The block height it reports.
    pub fn set_block_height(&self, height: u64) {
        self.inner.lock().unwrap().block_height = height;
    }

    /// What it was asked so far.
    pub fn calls(&self) -> RpcCalls {
        self.inner.lock().unwrap().calls.clone()
    }
}
