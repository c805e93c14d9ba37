//! The `Order` aggregate (being written).
