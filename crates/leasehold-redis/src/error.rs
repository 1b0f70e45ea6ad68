//! Maps `redis` errors into `LockError`, in one place.

use leasehold::LockError;
use redis::{ErrorKind, RedisError, ServerErrorKind};

pub(crate) const BACKEND: &str = "redis";

/// Whether retrying may help: the server was unreachable, slow, restarting or failing over.
pub(crate) fn is_transient(error: &RedisError) -> bool {
    if refused_certificate(error) {
        return false;
    }
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

/// Runs one command for at most `limit`: the `redis` crate's response timeout does not cover
/// waiting for a reconnect, so a call made while the connection is being re-established could
/// otherwise wait for the whole retry chain. Running out of time is an I/O timeout: transient.
pub(crate) async fn bounded<T>(
    limit: std::time::Duration,
    command: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    tokio::time::timeout(limit, command)
        .await
        .unwrap_or_else(|_| {
            Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no reply from Redis within {limit:?}"),
            )))
        })
}

/// Whether the acquire script's `INCR` found the fence counter at `i64::MAX`.
pub(crate) fn is_fence_overflow(error: &RedisError) -> bool {
    error
        .to_string()
        .contains("increment or decrement would overflow")
}

/// Whether TLS failed because the server's certificate was refused (unknown CA, wrong name,
/// expired): a configuration problem that retrying cannot fix.
#[cfg(feature = "tls")]
fn refused_certificate(error: &RedisError) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    // `redis` keeps an I/O error as the `source`, inside an `Arc`; tokio-rustls puts the
    // rustls error inside the I/O error.
    let Some(source) = std::error::Error::source(error) else {
        return false;
    };
    let source: &(dyn std::error::Error + 'static) = match source.downcast_ref::<Shared>() {
        Some(shared) => &**shared,
        None => source,
    };
    source
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| matches!(tls, rustls::Error::InvalidCertificate(_)))
}

#[cfg(not(feature = "tls"))]
fn refused_certificate(_error: &RedisError) -> bool {
    false
}

/// Transient failures (connection, timeout, loading, failover) become
/// `FailureKind::Transient`; everything else (NOPERM, authentication, a refused TLS certificate,
/// bad config) permanent.
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
