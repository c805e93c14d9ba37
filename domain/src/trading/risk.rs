//! The `RiskBook` aggregate (being written).
