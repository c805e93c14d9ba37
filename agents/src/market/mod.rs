//! The market agent: turns price sources (candle files today; live feeds later) into market events.
pub mod candle_file;
pub mod ingest;
