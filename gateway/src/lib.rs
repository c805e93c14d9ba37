//! The thin axum gateway: REST over the read models, SSE of live events, commands turned into bus requests,
//! OpenAPI, metrics, and the dashboard's embedded assets.
//!
//! Not built yet (issue: projections, gateway and dashboard).
