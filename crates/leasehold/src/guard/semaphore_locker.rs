//! [`SemaphoreLocker`]: auto-renewing permits.

use std::{future::Future, sync::Arc};

use super::{
    locker::{run_body, start_guard},
    options::LockOptions,
    renewal::Primitive,
    view::LeaseView,
    LockGuard,
};
use crate::{error::LockError, key::IntoLockKey, semaphore::DistributedSemaphore};

/// Auto-renewing semaphore permits on top of any [`DistributedSemaphore`].
///
/// Each method takes the semaphore's limit, `max_holders`; it must be the same for every holder
/// of a key while permits are held (see [`DistributedSemaphore`]). The guards are the same
/// [`LockGuard`] as [`Locker`](crate::Locker)'s, with the same renewal, states and
/// [`lost`](LockGuard::lost).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), leasehold::LockError> {
/// use leasehold::{memory::MemoryLock, LockOptions, SemaphoreLocker};
///
/// let permits = SemaphoreLocker::new(MemoryLock::new());
/// let a = permits.permit("licences", 2, LockOptions::default()).await?;
/// let b = permits.permit("licences", 2, LockOptions::default()).await?;
/// assert!(permits.try_permit("licences", 2, LockOptions::default()).await?.is_none());
/// a.release().await?;
/// let ran = permits
///     .with_permit("licences", 2, LockOptions::default(), |_| async { "ran" })
///     .await?;
/// assert_eq!(ran, "ran");
/// b.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SemaphoreLocker {
    backend: Arc<dyn DistributedSemaphore>,
}

impl From<Arc<dyn DistributedSemaphore>> for SemaphoreLocker {
    fn from(backend: Arc<dyn DistributedSemaphore>) -> Self {
        Self { backend }
    }
}

impl SemaphoreLocker {
    /// Wraps a backend (an `Arc<dyn DistributedSemaphore>`, or a backend value).
    pub fn new(backend: impl DistributedSemaphore) -> Self {
        Self {
            backend: Arc::new(backend),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn DistributedSemaphore> {
        &self.backend
    }

    /// Takes one of `max_holders` permits of `key`, waiting up to `options.wait()`, and keeps it
    /// renewed.
    ///
    /// # Errors
    ///
    /// As [`Locker::lock`](crate::Locker::lock), and [`LockError::InvalidConfig`] for a
    /// `max_holders` of 0 or one other than the stored limit.
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedSemaphore::acquire`].
    pub async fn permit(
        &self,
        key: impl IntoLockKey,
        max_holders: u32,
        options: LockOptions,
    ) -> Result<LockGuard, LockError> {
        let key = key.into_lock_key()?;
        let ttl = options.check()?;
        let lease = self
            .backend
            .acquire(&key, max_holders, ttl, options.wait())
            .await?;
        tracing::debug!(key = %key, fence = lease.fence(), "permit acquired");
        Ok(self.guard(lease, ttl, &options))
    }

    /// Tries once to take a permit; `Ok(None)` when all `max_holders` are held.
    ///
    /// # Errors
    ///
    /// As [`permit`](Self::permit), without `Timeout`.
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedSemaphore::try_acquire`].
    pub async fn try_permit(
        &self,
        key: impl IntoLockKey,
        max_holders: u32,
        options: LockOptions,
    ) -> Result<Option<LockGuard>, LockError> {
        let key = key.into_lock_key()?;
        let ttl = options.check()?;
        let lease = self.backend.try_acquire(&key, max_holders, ttl).await?;
        Ok(lease.map(|lease| self.guard(lease, ttl, &options)))
    }

    /// Runs `body` while holding a permit, then releases it; `Ok` only if the permit was still
    /// held when the body finished, exactly as [`Locker::with_lock`](crate::Locker::with_lock).
    ///
    /// # Errors
    ///
    /// As [`permit`](Self::permit), and [`LockError::LeaseLost`].
    ///
    /// # Cancel safety
    ///
    /// As [`Locker::with_lock`](crate::Locker::with_lock).
    pub async fn with_permit<F, Fut, T>(
        &self,
        key: impl IntoLockKey,
        max_holders: u32,
        options: LockOptions,
        body: F,
    ) -> Result<T, LockError>
    where
        F: FnOnce(LeaseView) -> Fut,
        Fut: Future<Output = T>,
    {
        run_body(self.permit(key, max_holders, options).await?, body).await
    }

    fn guard(
        &self,
        lease: crate::lease::Lease,
        ttl: std::time::Duration,
        options: &LockOptions,
    ) -> LockGuard {
        start_guard(
            Primitive::Semaphore(Arc::clone(&self.backend)),
            lease,
            ttl,
            options,
            None,
        )
    }
}
