//! [`RwLocker`]: auto-renewing read and write guards.

use std::{future::Future, sync::Arc};

use super::{
    locker::{run_body, start_guard},
    options::LockOptions,
    renewal::Primitive,
    view::LeaseView,
    LockGuard,
};
use crate::{error::LockError, key::IntoLockKey, rwlock::DistributedRwLock};

/// Auto-renewing read and write guards on top of any [`DistributedRwLock`].
///
/// The guards are the same [`LockGuard`] as [`Locker`](crate::Locker)'s, with the same renewal,
/// states and [`lost`](LockGuard::lost). Writer-preferring: while a writer waits, new readers
/// wait too. A task that holds a read guard and asks for a write guard waits on itself until
/// its deadline: release the read guard first.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), leasehold::LockError> {
/// use leasehold::{memory::MemoryLock, LockOptions, RwLocker};
///
/// let locks = RwLocker::new(MemoryLock::new());
/// let first = locks.read("cache", LockOptions::default()).await?;
/// let second = locks.read("cache", LockOptions::default()).await?;
/// assert!(locks.try_write("cache", LockOptions::default()).await?.is_none());
/// first.release().await?;
/// second.release().await?;
/// let rebuilt = locks
///     .with_write("cache", LockOptions::default(), |lease| async move { lease.fence() })
///     .await?;
/// assert!(rebuilt > 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RwLocker {
    backend: Arc<dyn DistributedRwLock>,
}

impl From<Arc<dyn DistributedRwLock>> for RwLocker {
    fn from(backend: Arc<dyn DistributedRwLock>) -> Self {
        Self { backend }
    }
}

impl RwLocker {
    /// Wraps a backend (an `Arc<dyn DistributedRwLock>`, or a backend value).
    pub fn new(backend: impl DistributedRwLock) -> Self {
        Self {
            backend: Arc::new(backend),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn DistributedRwLock> {
        &self.backend
    }

    /// Takes `key` for reading, waiting up to `options.wait()`, and keeps it renewed.
    ///
    /// # Errors
    ///
    /// As [`Locker::lock`](crate::Locker::lock).
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedRwLock::acquire_read`].
    pub async fn read(
        &self,
        key: impl IntoLockKey,
        options: LockOptions,
    ) -> Result<LockGuard, LockError> {
        let key = key.into_lock_key()?;
        let ttl = options.check()?;
        let lease = self.backend.acquire_read(&key, ttl, options.wait()).await?;
        tracing::debug!(key = %key, fence = lease.fence(), "read lock acquired");
        Ok(self.guard(lease, ttl, &options))
    }

    /// Takes `key` for writing, waiting up to `options.wait()` (new readers wait meanwhile),
    /// and keeps it renewed.
    ///
    /// # Errors
    ///
    /// As [`Locker::lock`](crate::Locker::lock).
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedRwLock::acquire_write`].
    pub async fn write(
        &self,
        key: impl IntoLockKey,
        options: LockOptions,
    ) -> Result<LockGuard, LockError> {
        let key = key.into_lock_key()?;
        let ttl = options.check()?;
        let lease = self
            .backend
            .acquire_write(&key, ttl, options.wait())
            .await?;
        tracing::debug!(key = %key, fence = lease.fence(), "write lock acquired");
        Ok(self.guard(lease, ttl, &options))
    }

    /// Tries once to take `key` for reading; `Ok(None)` while a writer holds or waits for it.
    ///
    /// # Errors
    ///
    /// As [`Locker::try_lock`](crate::Locker::try_lock).
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedRwLock::try_acquire_read`].
    pub async fn try_read(
        &self,
        key: impl IntoLockKey,
        options: LockOptions,
    ) -> Result<Option<LockGuard>, LockError> {
        let key = key.into_lock_key()?;
        let ttl = options.check()?;
        let lease = self.backend.try_acquire_read(&key, ttl).await?;
        Ok(lease.map(|lease| self.guard(lease, ttl, &options)))
    }

    /// Tries once to take `key` for writing; `Ok(None)` while anyone holds it.
    ///
    /// # Errors
    ///
    /// As [`Locker::try_lock`](crate::Locker::try_lock).
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedRwLock::try_acquire_write`].
    pub async fn try_write(
        &self,
        key: impl IntoLockKey,
        options: LockOptions,
    ) -> Result<Option<LockGuard>, LockError> {
        let key = key.into_lock_key()?;
        let ttl = options.check()?;
        let lease = self.backend.try_acquire_write(&key, ttl).await?;
        Ok(lease.map(|lease| self.guard(lease, ttl, &options)))
    }

    /// Runs `body` while holding `key` for reading, then releases it; `Ok` only if the lease
    /// was still held when the body finished, exactly as
    /// [`Locker::with_lock`](crate::Locker::with_lock).
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read), and [`LockError::LeaseLost`].
    ///
    /// # Cancel safety
    ///
    /// As [`Locker::with_lock`](crate::Locker::with_lock).
    pub async fn with_read<F, Fut, T>(
        &self,
        key: impl IntoLockKey,
        options: LockOptions,
        body: F,
    ) -> Result<T, LockError>
    where
        F: FnOnce(LeaseView) -> Fut,
        Fut: Future<Output = T>,
    {
        run_body(self.read(key, options).await?, body).await
    }

    /// Runs `body` while holding `key` for writing, then releases it; `Ok` only if the lease
    /// was still held when the body finished, exactly as
    /// [`Locker::with_lock`](crate::Locker::with_lock).
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write), and [`LockError::LeaseLost`].
    ///
    /// # Cancel safety
    ///
    /// As [`Locker::with_lock`](crate::Locker::with_lock).
    pub async fn with_write<F, Fut, T>(
        &self,
        key: impl IntoLockKey,
        options: LockOptions,
        body: F,
    ) -> Result<T, LockError>
    where
        F: FnOnce(LeaseView) -> Fut,
        Fut: Future<Output = T>,
    {
        run_body(self.write(key, options).await?, body).await
    }

    fn guard(
        &self,
        lease: crate::lease::Lease,
        ttl: std::time::Duration,
        options: &LockOptions,
    ) -> LockGuard {
        start_guard(
            Primitive::Rw(Arc::clone(&self.backend)),
            lease,
            ttl,
            options,
            None,
        )
    }
}
