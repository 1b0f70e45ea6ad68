//! [`LockAdmin`]: inspection and forced release, for backends that can offer them.

use std::time::Duration;

use async_trait::async_trait;

use crate::{error::LockError, key::LockKey};

/// What a backend knows about one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockStatus {
    /// The fence of the last acquisition, if the key was ever locked.
    pub last_fence: Option<u64>,
    /// Time left on the current lease, if someone holds the key.
    pub remaining: Option<Duration>,
}

impl LockStatus {
    /// See [`backend::status`](crate::backend::status).
    pub(crate) fn from_parts(last_fence: Option<u64>, remaining: Option<Duration>) -> Self {
        Self {
            last_fence,
            remaining,
        }
    }

    /// A status.
    #[deprecated(
        since = "0.1.1",
        note = "backend authors: use `leasehold::backend::status`"
    )]
    pub fn new(last_fence: Option<u64>, remaining: Option<Duration>) -> Self {
        Self::from_parts(last_fence, remaining)
    }

    /// Whether someone holds the key.
    pub fn is_held(&self) -> bool {
        self.remaining.is_some()
    }
}

/// Administrative operations that only some backends support: not part of
/// [`DistributedLock`](crate::DistributedLock), so no backend has to implement them.
#[async_trait]
pub trait LockAdmin: Send + Sync + std::fmt::Debug + 'static {
    /// The state of `key`.
    ///
    /// # Errors
    ///
    /// [`LockError::Backend`] when the backend cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Read-only.
    async fn status(&self, key: &LockKey) -> Result<LockStatus, LockError>;

    /// Every key starting with `prefix` (all keys for `""`), in key order.
    ///
    /// # Errors
    ///
    /// [`LockError::Backend`] when the backend cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Read-only.
    async fn list(&self, prefix: &str) -> Result<Vec<(LockKey, LockStatus)>, LockError>;

    /// Frees `key` whoever holds it: an explicit administrator's action. The holder is not
    /// told; its next extend returns `false`. Fences keep increasing.
    ///
    /// # Errors
    ///
    /// [`LockError::Backend`] when the backend cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not have freed the key.
    async fn force_release(&self, key: &LockKey) -> Result<bool, LockError>;
}
