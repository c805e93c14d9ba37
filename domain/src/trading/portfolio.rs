//! The `Portfolio` aggregate (being written).
