//! What every agent shares: turning the outcome of a command into a consumer outcome.

use cqrs_es::AggregateError;

/// Events between snapshots of the aggregates that grow (portfolio, risk book, paper venue). One value
/// for every writer of an aggregate: the repository records which sequence a snapshot covers from it.
/// Small, because cqrs-es loads the snapshot plus every event after it on each command.
pub const SNAPSHOT_EVERY: usize = 20;
use jarvis_bus::HandlerError;

/// How a failed command maps onto the consumer's retry policy.
///
/// - The aggregate refused the command: retrying the same event cannot change that, so it is permanent
///   (the event goes to the dead-letter stream with the refusal).
/// - Every retry conflicted, the database is unreachable, or something unexpected happened: transient,
///   the event comes back after the back-off.
/// - A stored event that does not deserialize: permanent, a human must look.
pub fn handler_error<E: std::error::Error>(err: AggregateError<E>) -> HandlerError {
    match err {
        AggregateError::UserError(e) => HandlerError::Permanent(format!("refused: {e}")),
        AggregateError::AggregateConflict => {
            HandlerError::Transient("conflicts with another writer persisted".into())
        }
        AggregateError::DatabaseConnectionError(e) => {
            HandlerError::Transient(format!("database: {e}"))
        }
        AggregateError::DeserializationError(e) => {
            HandlerError::Permanent(format!("stored state does not deserialize: {e}"))
        }
        AggregateError::UnexpectedError(e) => HandlerError::Transient(format!("unexpected: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("no")]
    struct No;

    #[test]
    fn refusals_are_permanent_and_conflicts_transient() {
        assert!(
            matches!(handler_error(AggregateError::UserError(No)), HandlerError::Permanent(m) if m == "refused: no")
        );
        assert!(matches!(
            handler_error::<No>(AggregateError::AggregateConflict),
            HandlerError::Transient(_)
        ));
    }
}
