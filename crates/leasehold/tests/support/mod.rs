//! A test backend shared by the guard tests.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64},
        Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use leasehold::{memory::MemoryLock, Capabilities, DistributedLock, Lease, LockError, LockKey};

/// Passes through to `MemoryLock`, except that extend fails with a transient error while
/// `failing` is set.
#[derive(Debug, Default)]
pub(crate) struct Flaky {
    inner: MemoryLock,
    pub(crate) failing: AtomicBool,
    /// How long each acquire's reply takes to arrive, in ms.
    pub(crate) acquire_delay_ms: AtomicU64,
    pub(crate) last_token: Mutex<Option<String>>,
}

// A wrapper forwards every method, defaulted ones too: a forgotten `acquire` would poll.
#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl DistributedLock for Flaky {
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let lease = self.inner.try_acquire(key, ttl).await?;
        let delay = self
            .acquire_delay_ms
            .load(std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if let Some(lease) = &lease {
            *self.last_token.lock().unwrap() = Some(lease.token().to_hex());
        }
        Ok(lease)
    }

    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let lease = self.inner.acquire(key, ttl, wait).await?;
        let delay = self
            .acquire_delay_ms
            .load(std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        *self.last_token.lock().unwrap() = Some(lease.token().to_hex());
        Ok(lease)
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
            return Err(LockError::transient("flaky", refused));
        }
        self.inner.extend(lease, ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        self.inner.release(lease).await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn watch_releases(&self, key: &LockKey) -> Option<Box<dyn leasehold::ReleaseWatch>> {
        self.inner.watch_releases(key)
    }
}
