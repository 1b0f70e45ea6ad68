//! [`LockAdmin`]: inspection and forced release, for backends that can offer them.

use std::time::Duration;

use async_trait::async_trait;

use crate::{error::LockError, key::LockKey, lease::LeaseKind};

/// Which of a key's primitives [`LockAdmin::status_of`] and [`LockAdmin::list_of`] look at: a
/// key used as a mutex, as a read/write lock and as a semaphore names three independent
/// resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Primitive {
    /// The exclusive lock of [`DistributedLock`](crate::DistributedLock).
    Mutex,
    /// The read/write lock of [`DistributedRwLock`](crate::DistributedRwLock).
    RwLock,
    /// The semaphore of [`DistributedSemaphore`](crate::DistributedSemaphore).
    Semaphore,
}

impl Primitive {
    /// The primitive's name: `"mutex"`, `"read/write lock"`, `"semaphore"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutex => "mutex",
            Self::RwLock => "read/write lock",
            Self::Semaphore => "semaphore",
        }
    }
}

/// What a backend knows about one key of one primitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockStatus {
    /// The fence of the last grant, if the key was ever granted.
    pub last_fence: Option<u64>,
    /// Time left on the current lease, if someone holds the key; with several holders (readers,
    /// permits), on the one that ends last.
    pub remaining: Option<Duration>,
    /// How many valid leases there are now: 0 or 1 for a mutex and for a read/write lock's
    /// writer, the readers, the permits held.
    pub holders: u32,
    /// How the key is held now: [`Exclusive`](LeaseKind::Exclusive) for a mutex,
    /// [`Read`](LeaseKind::Read) or [`Write`](LeaseKind::Write) for a read/write lock,
    /// [`Permit`](LeaseKind::Permit) for a semaphore; `None` when nobody holds it.
    pub held_as: Option<LeaseKind>,
    /// A semaphore's stored limit while any permit is held; `None` otherwise.
    pub max_holders: Option<u32>,
}

impl LockStatus {
    /// See [`backend::status`](crate::backend::status).
    pub(crate) fn from_parts(last_fence: Option<u64>, remaining: Option<Duration>) -> Self {
        Self {
            last_fence,
            remaining,
            holders: u32::from(remaining.is_some()),
            held_as: remaining.map(|_| LeaseKind::Exclusive),
            max_holders: None,
        }
    }

    /// See [`backend::holders_status`](crate::backend::holders_status).
    pub(crate) fn of_holders(
        last_fence: Option<u64>,
        holders: u32,
        held_as: LeaseKind,
        remaining: Option<Duration>,
        max_holders: Option<u32>,
    ) -> Self {
        let held = holders > 0 && remaining.is_some();
        Self {
            last_fence,
            remaining: remaining.filter(|_| held),
            holders: if held { holders } else { 0 },
            held_as: held.then_some(held_as),
            max_holders: max_holders.filter(|_| held),
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

    /// The state of `key` as `primitive`. The default answers [`status`](Self::status) for
    /// [`Primitive::Mutex`] and refuses the others.
    ///
    /// # Errors
    ///
    /// [`LockError::Backend`] when the backend cannot be reached; [`LockError::Unsupported`]
    /// for a primitive the backend does not offer.
    ///
    /// # Cancel safety
    ///
    /// Read-only.
    async fn status_of(
        &self,
        primitive: Primitive,
        key: &LockKey,
    ) -> Result<LockStatus, LockError> {
        match primitive {
            Primitive::Mutex => self.status(key).await,
            _ => Err(unsupported("status_of")),
        }
    }

    /// Every key of `primitive` starting with `prefix`, in key order, as
    /// [`list`](Self::list) for mutexes. The default answers `list` for [`Primitive::Mutex`]
    /// and refuses the others.
    ///
    /// # Errors
    ///
    /// [`LockError::Backend`] when the backend cannot be reached; [`LockError::Unsupported`]
    /// for a primitive the backend does not offer.
    ///
    /// # Cancel safety
    ///
    /// Read-only.
    async fn list_of(
        &self,
        primitive: Primitive,
        prefix: &str,
    ) -> Result<Vec<(LockKey, LockStatus)>, LockError> {
        match primitive {
            Primitive::Mutex => self.list(prefix).await,
            _ => Err(unsupported("list_of")),
        }
    }
}

fn unsupported(operation: &'static str) -> LockError {
    LockError::Unsupported {
        operation,
        backend: "this backend's LockAdmin",
        reason: "it inspects only mutexes",
    }
}
