//! Backtests: the same agents on an in-process bus and store under a virtual clock, fed from candle files
//! (read with `jarvis_agents::market::candle_file`, by the same rules as `jarvis ingest`) or from recorded
//! events.
//!
//! Not built yet (issue: backtests).
