//! Other primitives used as mutexes, so the exclusive suite can run against them: the write
//! side of a read/write lock, and the last free permit of a semaphore.

use std::{collections::HashMap, time::Duration};

use leasehold::{
    async_trait, Capabilities, DistributedLock, DistributedRwLock, DistributedSemaphore, Lease,
    LockError, LockKey, ReleaseWatch,
};

/// The write side of a read/write lock as a mutex: `try_acquire` is `try_acquire_write`,
/// `acquire` is `acquire_write`, and extends and releases go to the read/write lock.
#[derive(Debug)]
pub struct WriteSide<L> {
    inner: L,
}

impl<L: DistributedRwLock> WriteSide<L> {
    /// Wraps a read/write lock.
    pub fn new(inner: L) -> Self {
        Self { inner }
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<L: DistributedRwLock> DistributedLock for WriteSide<L> {
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        self.inner.try_acquire_write(key, ttl).await
    }

    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        self.inner.acquire_write(key, ttl, wait).await
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        self.inner.extend(lease, ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        self.inner.release(lease).await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn watch_releases(&self, _key: &LockKey) -> Option<Box<dyn ReleaseWatch>> {
        None
    }
}

/// How long the permits that [`LastPermit`] holds back are held: longer than any case.
const HELD_BACK_TTL: Duration = Duration::from_secs(600);

/// How long [`LastPermit`] waits for each permit it holds back.
const FILL_WAIT: Duration = Duration::from_secs(10);

/// A semaphore of `n` as a mutex: before a key is first used, `n - 1` of its permits are taken
/// (for 10 minutes) and kept, so only the last one is contested.
#[derive(Debug)]
pub struct LastPermit<S> {
    inner: S,
    n: u32,
    filled: tokio::sync::Mutex<HashMap<LockKey, u32>>,
}

impl<S: DistributedSemaphore> LastPermit<S> {
    /// Wraps a semaphore, used with a limit of `n` (2 or more).
    pub fn new(inner: S, n: u32) -> Self {
        Self {
            inner,
            n,
            filled: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Takes `n - 1` permits of `key` the first time it is seen. Cancel safe: each permit is
    /// counted as soon as it is taken (one whose attempt is cut off is cleaned up by the
    /// backend), so a fill dropped halfway goes on where it stopped.
    async fn fill(&self, key: &LockKey) -> Result<(), LockError> {
        let mut filled = self.filled.lock().await;
        let taken = filled.entry(key.clone()).or_insert(0);
        while *taken < self.n - 1 {
            // Waiting, not a single try: a permit whose attempt was cut off just before may
            // still be held for a moment, until the backend's cleanup gives it back.
            let filled = self
                .inner
                .acquire(key, self.n, HELD_BACK_TTL, FILL_WAIT)
                .await;
            if let Err(LockError::Timeout { .. }) = filled {
                panic!(
                    "[last_permit] permit {} of {} of the fresh key {key} was not granted within \
                     {FILL_WAIT:?}",
                    *taken + 1,
                    self.n
                );
            }
            filled?;
            *taken += 1;
        }
        Ok(())
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<S: DistributedSemaphore> DistributedLock for LastPermit<S> {
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        self.fill(key).await?;
        self.inner.try_acquire(key, self.n, ttl).await
    }

    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        self.fill(key).await?;
        self.inner.acquire(key, self.n, ttl, wait).await
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        self.inner.extend(lease, ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        self.inner.release(lease).await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn watch_releases(&self, _key: &LockKey) -> Option<Box<dyn ReleaseWatch>> {
        None
    }
}
