//! The one error type every backend returns.

use std::{error::Error as StdError, fmt, time::Duration};

use crate::key::LockKey;

/// A boxed error from a backend's driver, kept as the source of [`LockError::Backend`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong with a lock, on any backend.
///
/// Variants say what the caller can do. Contention is not an error:
/// [`DistributedLock::try_acquire`](crate::DistributedLock::try_acquire) returns `Ok(None)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The wait for a lock ended at its deadline; someone else still held it.
    #[error("timed out after {waited:?} waiting for lock \"{key}\"")]
    Timeout {
        /// The contended key.
        key: LockKey,
        /// How long the caller waited.
        waited: Duration,
    },

    /// A key that breaks the rules of [`LockKey`].
    #[error("invalid lock key \"{key}\": {reason}")]
    InvalidKey {
        /// The offending name, escaped and shortened for display.
        key: String,
        /// Which rule it breaks.
        reason: InvalidKeyReason,
    },

    /// A ttl outside the accepted range (see [`ttl`](crate::backend::ttl)).
    #[error("invalid ttl {ttl:?}: {reason}")]
    InvalidTtl {
        /// The ttl as given.
        ttl: Duration,
        /// Which rule it breaks.
        reason: InvalidTtlReason,
    },

    /// A setting that cannot work: guard options, a backend URL, a table name.
    #[error("invalid {input}: {reason}")]
    InvalidConfig {
        /// Which setting, with its value where that is safe to show (never a password).
        input: String,
        /// Why it is rejected.
        reason: String,
    },

    /// The backend cannot do this operation at all, whatever the input: e.g. an admin call on
    /// a lock kind that keeps no per-key state. Not transient. Prefer types that do not offer
    /// the operation; this is for the paths where a run-time refusal remains.
    #[error("{operation} is not supported by {backend}: {reason}")]
    Unsupported {
        /// The operation, e.g. `"force_release"`.
        operation: &'static str,
        /// The backend or lock kind, e.g. `"the postgres advisory strategy"`.
        backend: &'static str,
        /// Why, and what to use instead.
        reason: &'static str,
    },

    /// The lease ended while the caller relied on it (see
    /// [`Locker::with_lock`](crate::Locker::with_lock)).
    #[error("lease on \"{key}\" was lost")]
    LeaseLost {
        /// The key whose lease was lost.
        key: LockKey,
    },

    /// The key's fence counter reached its maximum; fences never wrap.
    #[error("fence counter of \"{key}\" is exhausted")]
    FenceOverflow {
        /// The key.
        key: LockKey,
    },

    /// The backend failed. [`FailureKind`] tells whether retrying can help.
    #[error("{backend} backend failed ({kind}): {source}")]
    Backend {
        /// The backend's name, e.g. `"redis"`.
        backend: &'static str,
        /// Transient (retry may help) or permanent (fix something first).
        kind: FailureKind,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

impl LockError {
    /// A transient backend failure: connection refused or dropped, timed out, server loading.
    pub fn transient(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            backend,
            kind: FailureKind::Transient,
            source: source.into(),
        }
    }

    /// A permanent backend failure: permission denied, bad credentials, misconfiguration.
    pub fn permanent(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            backend,
            kind: FailureKind::Permanent,
            source: source.into(),
        }
    }

    /// An invalid setting, named by `input`.
    pub fn invalid_config(input: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            input: input.into(),
            reason: reason.into(),
        }
    }

    /// Whether trying the same call again later may succeed.
    ///
    /// True for [`Timeout`](Self::Timeout) and transient backend failures.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. }
                | Self::Backend {
                    kind: FailureKind::Transient,
                    ..
                }
        )
    }
}

/// Whether a backend failure may go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The server could not be reached or did not answer in time; retrying may help.
    Transient,
    /// The server refused (permissions, authentication, configuration); retrying will not help.
    Permanent,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
        })
    }
}

/// Why a key was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidKeyReason {
    /// The key is empty.
    #[error("a key must not be empty")]
    Empty,
    /// The key is longer than the maximum.
    #[error("{len} bytes is longer than the maximum of {max}")]
    TooLong {
        /// The key's length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The key contains a control character.
    #[error("control character at byte {at}")]
    ControlCharacter {
        /// Byte offset of the first control character.
        at: usize,
    },
}

/// Why a ttl was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTtlReason {
    /// The ttl is zero.
    #[error("a ttl must not be zero")]
    Zero,
    /// The ttl is below one millisecond, the resolution every backend supports.
    #[error("below the minimum of {min:?}")]
    TooShort {
        /// The minimum.
        min: Duration,
    },
    /// The ttl is above the maximum.
    #[error("above the maximum of {max:?}")]
    TooLong {
        /// The maximum.
        max: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_keep_their_source_and_kind() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = LockError::transient("redis", io);
        assert!(err.is_transient());
        let source = StdError::source(&err).expect("source kept");
        assert_eq!(source.to_string(), "refused");
        assert!(!LockError::permanent("redis", "NOPERM").is_transient());
    }
}
