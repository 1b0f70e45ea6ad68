//! Maps `redis` errors into `LockError`, in one place.

use leasehold::LockError;
use redis::{ErrorKind, RedisError, ServerErrorKind};

pub(crate) const BACKEND: &str = "redis";

/// Whether retrying may help: the server was unreachable, slow, restarting or failing over.
pub(crate) fn is_transient(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
            )
        )
}

/// Transient failures (connection, timeout, loading, failover) become
/// `FailureKind::Transient`; everything else (NOPERM, authentication, bad config) permanent.
pub(crate) fn map(error: RedisError) -> LockError {
    if is_transient(&error) {
        LockError::transient(BACKEND, error)
    } else {
        LockError::permanent(BACKEND, error)
    }
}

/// A reply that does not have the shape our scripts return.
pub(crate) fn unexpected_reply(what: &str, reply: impl std::fmt::Debug) -> LockError {
    LockError::permanent(BACKEND, format!("unexpected reply to {what}: {reply:?}"))
}
