//! The LLM router and the `llm` agent: routing by task with fallback, resilience, cost control, recording.
//!
//! Every call is events on the day's `LlmLedger` (see `jarvis_domain::llm`): `LlmCallRequested`, then
//! `LlmCallCompleted` or `LlmCallFailed`, with `BudgetAlert`, `BudgetExceeded` and `PromptFlagged` where
//! they apply. See `docs/llm.md`.
//!
//! # Layout
//! - [`config`]: `[llm]`: providers, routes, budgets, prices, tool allowlists, timeouts.
//! - [`provider`]: the [`provider::ChatProvider`] trait, the OpenAI-compatible client and the Ollama client.
//! - [`resilience`]: the circuit breaker and jittered back-off.
//! - [`guard`]: the prompt guard (injection screening, tool allowlists).
//! - [`redact`]: secret redaction for everything that is recorded or logged.
//! - [`router`]: [`LlmRouter::ask`], the whole call.
//! - [`usage`]: totals per day, provider and task; [`usage::recorded_answer`] by prompt hash for replay.
//! - [`oracle`]: [`Oracle`], the live router or, in a backtest, the answers recorded by prompt hash.
//! - [`service`]: the micro service `jarvis-llm` (`jarvis.cmd.llm.ask`, `jarvis.cmd.llm.usage`).

pub mod config;
pub mod guard;
pub mod oracle;
pub mod provider;
pub mod redact;
pub mod resilience;
pub mod router;
pub mod service;
pub mod usage;

pub use config::LlmConfig;
pub use oracle::{Fallback, Oracle, RecordedOracle};
pub use router::{Answer, AskError, AskRequest, LlmRouter};
