//! Read models: projectors that read the store's global order (or JetStream) and move their tables and
//! their checkpoint in one transaction, so each event has exactly one effect and a projector survives
//! SIGKILL.
//!
//! Not built yet (issue: projections, gateway and dashboard). It will use `jarvis_store::EventStore::read_after`
//! and `jarvis_store::reader::save_checkpoint` inside the projector's transaction.
