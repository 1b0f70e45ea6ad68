//! Maps `sqlx` errors into `LockError`, in one place.

use std::{future::Future, time::Duration};

use leasehold::{LockError, LockKey};

pub(crate) const BACKEND: &str = "postgres";

/// The default of [`PostgresLockBuilder::request_timeout`](crate::PostgresLockBuilder::request_timeout).
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `request` (a statement, with the pool checkout and transaction around it) for at most
/// `timeout`. sqlx 0.8 has no client-side statement timeout and no TCP keepalive, so without
/// this a black-holed server hangs a call for the kernel's TCP timeout (many minutes). Running
/// out of time is an I/O timeout: transient.
pub(crate) async fn within<T>(
    timeout: Duration,
    request: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    tokio::time::timeout(timeout, request)
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no reply from PostgreSQL within the request timeout of {timeout:?}"),
            )))
        })
}

/// SQLSTATEs that mean contention (serialization failure, deadlock) or a server that will come
/// back (connection class 08, shutdown 57P01-57P03, too many connections 53300).
fn sqlstate_is_transient(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300" | "55P03"
        )
}

/// Serialization failures and deadlocks: contention, never a generic error.
pub(crate) fn is_contention(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().as_deref().is_some_and(sqlstate_is_transient),
        _ => false,
    }
}

/// Transient failures become `FailureKind::Transient`; the rest (permissions, authentication,
/// missing table, bad config) permanent. A fence counter at `bigint`'s end (`22003`) or a fence
/// sequence at its maximum (`2200H`) is `FenceOverflow`.
pub(crate) fn map(error: sqlx::Error, key: Option<&LockKey>) -> LockError {
    if let (sqlx::Error::Database(db), Some(key)) = (&error, key) {
        if matches!(db.code().as_deref(), Some("22003" | "2200H")) {
            return LockError::FenceOverflow { key: key.clone() };
        }
    }
    if is_transient(&error) {
        LockError::transient(BACKEND, error)
    } else {
        LockError::permanent(BACKEND, error)
    }
}
