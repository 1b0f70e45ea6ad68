//! Maps `sqlx` errors into `LockError`, in one place.

use leasehold::{LockError, LockKey};

pub(crate) const BACKEND: &str = "sqlite";

/// SQLITE_BUSY (5) and SQLITE_LOCKED (6) with their extended codes: another connection holds
/// the database; contention, never a generic error.
pub(crate) fn is_busy(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    db.code()
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// Busy and I/O failures are transient; the rest (a read-only file, a corrupt database, a
/// missing table) permanent. A fence at `i64`'s end is `FenceOverflow`.
pub(crate) fn map(error: sqlx::Error, key: Option<&LockKey>) -> LockError {
    if let (sqlx::Error::Database(db), Some(key)) = (&error, key) {
        if db.message().contains("integer overflow") {
            return LockError::FenceOverflow { key: key.clone() };
        }
    }
    if is_busy(&error) || matches!(error, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut) {
        LockError::transient(BACKEND, error)
    } else {
        LockError::permanent(BACKEND, error)
    }
}
