//! The market agent: turns price sources into market events: candle files into `CandleClosed`, and the
//! live Jupiter Price API into `PriceObserved` ([`price_poller`]).
pub mod candle_file;
pub mod ingest;
pub mod price_poller;
