//! The trading domain: orders, the portfolio, and the risk book. See `docs/adr/0002-trading-domain.md`.
//!
//! - [`values`]: order ids, sides, checked amounts, risk verdicts and rationales.
//! - [`order`]: the `Order` aggregate, one per order: proposed → approved/rejected → submitted → filled/failed.
//! - [`portfolio`]: the `Portfolio` aggregate: cash, positions, average cost, realised P&L, fees, marks.
//! - [`paper`]: the `PaperVenue` aggregate: fills at the next observed price, with slippage, fees and a
//!   volume cap.
//! - [`risk`]: the `RiskBook` aggregate: limits, halts, and the assessment of every proposal.
//! - [`swap`]: what an on-chain venue adds to an order: the pre-sign gate's verdict, the signature sent,
//!   the swap's receipt.

pub mod order;
pub mod paper;
pub mod portfolio;
pub mod risk;
pub mod swap;
pub mod values;

pub use order::{Order, OrderCommand, OrderEvent, OrderStatus, TradeProposal};
pub use portfolio::{Portfolio, PortfolioCommand, PortfolioEvent, PortfolioView};
pub use risk::{
    ProposalToAssess, QuoteCheck, RiskBook, RiskCommand, RiskEvent, RiskLimits, RiskView,
};
pub use values::{OrderId, PricePoint, Rationale, RiskRule, RiskViolation, Side};
