//! Helpers shared by the cases.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use leasehold::{async_trait, Capabilities, DistributedLock, Lease, LockError, LockKey};

/// A key no other case or run uses: `conformance/<case>/<random>/<suffix>`.
pub fn unique_key(case: &str, suffix: &str) -> LockKey {
    let run = uuid::Uuid::new_v4().simple();
    LockKey::new(format!("conformance/{case}/{run}/{suffix}"))
        .unwrap_or_else(|e| panic!("[{case}] building a test key failed: {e}"))
}

/// Unwraps a backend result, failing the case with a message that names it.
pub(crate) fn ok<T>(case: &str, what: &str, result: Result<T, LockError>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("[{case}] {what} failed: {error} ({error:?})"),
    }
}

/// How much longer than its ttl an abandoned lease may keep its key on this backend
/// ([`Capabilities::expiry_slack`]): every wait for an expiry adds it.
pub(crate) fn expiry_slack(lock: &dyn DistributedLock) -> Duration {
    lock.capabilities().expiry_slack
}

/// Takes a free key or fails the case.
pub(crate) async fn take(
    lock: &dyn DistributedLock,
    case: &str,
    key: &LockKey,
    ttl: Duration,
) -> Lease {
    ok(
        case,
        "try_acquire on a free key",
        lock.try_acquire(key, ttl).await,
    )
    .unwrap_or_else(|| panic!("[{case}] try_acquire on free key {key} returned None"))
}

/// Whether someone holds `key` right now, found out by trying to take it (and giving it back).
pub(crate) async fn is_held(lock: &dyn DistributedLock, case: &str, key: &LockKey) -> bool {
    match ok(
        case,
        "probing try_acquire",
        lock.try_acquire(key, Duration::from_secs(5)).await,
    ) {
        Some(probe) => {
            ok(case, "releasing the probe", lock.release(probe).await);
            false
        }
        None => true,
    }
}

/// Polls `is_held` until the key is free or `within` passes; returns how long it took.
pub(crate) async fn wait_until_free(
    lock: &dyn DistributedLock,
    case: &str,
    key: &LockKey,
    within: Duration,
) -> Option<Duration> {
    let started = tokio::time::Instant::now();
    while started.elapsed() < within {
        if !is_held(lock, case, key).await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// A pass-through backend that remembers the last lease it handed out, so a case can take a
/// guard's lease away behind its back.
#[derive(Debug)]
pub(crate) struct Spy {
    inner: Arc<dyn DistributedLock>,
    last: Mutex<Option<Lease>>,
    /// Extends that answered `Ok(false)`.
    refused_extends: std::sync::atomic::AtomicUsize,
}

impl Spy {
    pub(crate) fn new(inner: Arc<dyn DistributedLock>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            last: Mutex::new(None),
            refused_extends: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The last lease handed out by `try_acquire` or `acquire`.
    pub(crate) fn last_lease(&self, case: &str) -> Lease {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| panic!("[{case}] no lease was handed out"))
    }

    /// How many extends answered `Ok(false)`.
    pub(crate) fn refused_extends(&self) -> usize {
        self.refused_extends
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn record(&self, lease: &Lease) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(lease.clone());
    }
}

// A wrapper forwards every method, defaulted ones too: a forgotten `acquire` would poll.
#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl DistributedLock for Spy {
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let lease = self.inner.try_acquire(key, ttl).await?;
        if let Some(lease) = &lease {
            self.record(lease);
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
        self.record(&lease);
        Ok(lease)
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        let extended = self.inner.extend(lease, ttl).await;
        if matches!(extended, Ok(false)) {
            self.refused_extends
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        extended
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
