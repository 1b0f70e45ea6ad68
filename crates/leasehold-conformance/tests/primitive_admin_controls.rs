//! Negative controls of the read/write and semaphore admin cases: an admin side with one
//! deliberate flaw over the in-memory backend must fail the cases that guard against it, and
//! without a flaw pass them all.

mod controls;

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use leasehold::{
    memory::MemoryLock, DistributedLock, DistributedRwLock, DistributedSemaphore, Lease, LeaseKind,
    LockAdmin, LockError, LockKey, LockStatus, Primitive,
};
use leasehold_conformance::admin::primitives::{all_cases, run};

/// One way to get the status of a read/write lock or a semaphore wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    None,
    /// At most one holder is shown (the mutex's view of a key).
    OneHolderAtMost,
    /// Every hold is shown as exclusive.
    KindAlwaysExclusive,
    /// A semaphore's limit is not shown.
    NoLimit,
    /// Holders are counted as grants minus releases, so an expired one still counts (a table
    /// counted without its expiry).
    CountsExpired,
    /// `list_of` lists the keys of every primitive (one scan over all of a key's names).
    ListsEveryPrimitive,
}

#[derive(Debug)]
struct Flawed {
    flaw: Flaw,
    inner: MemoryLock,
    /// For `CountsExpired`: grants minus releases per primitive and key.
    granted: Mutex<HashMap<(Primitive, LockKey), u32>>,
}

impl Flawed {
    fn new(flaw: Flaw) -> Self {
        Self {
            flaw,
            inner: MemoryLock::new(),
            granted: Mutex::default(),
        }
    }

    fn count(&self, primitive: Primitive, lease: Option<&Lease>, up: bool) {
        if let Some(lease) = lease {
            let mut granted = self.granted.lock().expect("lock");
            let n = granted.entry((primitive, lease.key().clone())).or_default();
            *n = if up { *n + 1 } else { n.saturating_sub(1) };
        }
    }

    fn distort(&self, primitive: Primitive, key: &LockKey, mut status: LockStatus) -> LockStatus {
        match self.flaw {
            Flaw::OneHolderAtMost => status.holders = status.holders.min(1),
            Flaw::KindAlwaysExclusive if status.held_as.is_some() => {
                status.held_as = Some(LeaseKind::Exclusive);
            }
            Flaw::NoLimit => status.max_holders = None,
            Flaw::CountsExpired if primitive != Primitive::Mutex => {
                let granted = self.granted.lock().expect("lock");
                status.holders = granted.get(&(primitive, key.clone())).copied().unwrap_or(0);
            }
            _ => {}
        }
        status
    }
}

// A wrapper forwards every method, defaulted ones too.
#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl DistributedLock for Flawed {
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        DistributedLock::try_acquire(&self.inner, key, ttl).await
    }

    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        DistributedLock::acquire(&self.inner, key, ttl, wait).await
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        DistributedLock::extend(&self.inner, lease, ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        DistributedLock::release(&self.inner, lease).await
    }

    fn capabilities(&self) -> leasehold::Capabilities {
        DistributedLock::capabilities(&self.inner)
    }

    fn watch_releases(&self, key: &LockKey) -> Option<Box<dyn leasehold::ReleaseWatch>> {
        self.inner.watch_releases(key)
    }
}

#[async_trait]
impl DistributedRwLock for Flawed {
    async fn try_acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let lease = self.inner.try_acquire_read(key, ttl).await?;
        self.count(Primitive::RwLock, lease.as_ref(), true);
        Ok(lease)
    }

    async fn try_acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let lease = self.inner.try_acquire_write(key, ttl).await?;
        self.count(Primitive::RwLock, lease.as_ref(), true);
        Ok(lease)
    }

    async fn acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let lease = self.inner.acquire_read(key, ttl, wait).await?;
        self.count(Primitive::RwLock, Some(&lease), true);
        Ok(lease)
    }

    async fn acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let lease = self.inner.acquire_write(key, ttl, wait).await?;
        self.count(Primitive::RwLock, Some(&lease), true);
        Ok(lease)
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        DistributedRwLock::extend(&self.inner, lease, ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        self.count(Primitive::RwLock, Some(&lease), false);
        DistributedRwLock::release(&self.inner, lease).await
    }
}

#[async_trait]
impl DistributedSemaphore for Flawed {
    async fn try_acquire(
        &self,
        key: &LockKey,
        max_holders: u32,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let lease = DistributedSemaphore::try_acquire(&self.inner, key, max_holders, ttl).await?;
        self.count(Primitive::Semaphore, lease.as_ref(), true);
        Ok(lease)
    }

    async fn acquire(
        &self,
        key: &LockKey,
        max_holders: u32,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let lease = DistributedSemaphore::acquire(&self.inner, key, max_holders, ttl, wait).await?;
        self.count(Primitive::Semaphore, Some(&lease), true);
        Ok(lease)
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        DistributedSemaphore::extend(&self.inner, lease, ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        self.count(Primitive::Semaphore, Some(&lease), false);
        DistributedSemaphore::release(&self.inner, lease).await
    }
}

#[async_trait]
impl LockAdmin for Flawed {
    async fn status(&self, key: &LockKey) -> Result<LockStatus, LockError> {
        self.inner.status(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(LockKey, LockStatus)>, LockError> {
        self.inner.list(prefix).await
    }

    async fn force_release(&self, key: &LockKey) -> Result<bool, LockError> {
        self.inner.force_release(key).await
    }

    async fn status_of(
        &self,
        primitive: Primitive,
        key: &LockKey,
    ) -> Result<LockStatus, LockError> {
        let status = self.inner.status_of(primitive, key).await?;
        Ok(self.distort(primitive, key, status))
    }

    async fn list_of(
        &self,
        primitive: Primitive,
        prefix: &str,
    ) -> Result<Vec<(LockKey, LockStatus)>, LockError> {
        let mut listed = self.inner.list_of(primitive, prefix).await?;
        if self.flaw == Flaw::ListsEveryPrimitive {
            for other in [Primitive::Mutex, Primitive::RwLock, Primitive::Semaphore] {
                if other != primitive {
                    listed.extend(self.inner.list_of(other, prefix).await?);
                }
            }
            listed.sort_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
            listed.dedup_by(|(a, _), (b, _)| a == b);
        }
        Ok(listed
            .into_iter()
            .map(|(key, status)| {
                let status = self.distort(primitive, &key, status);
                (key, status)
            })
            .collect())
    }
}

fn assert_caught(flaw: Flaw, expected: &[&str]) {
    controls::assert_caught(
        &flaw,
        all_cases(),
        |c| c.name,
        expected,
        |case| run(async { Flawed::new(flaw) }, case.run),
    );
}

#[test]
fn the_wrapper_without_flaws_passes_every_primitive_admin_case() {
    let failed = controls::failing(
        all_cases(),
        |c| c.name,
        &[],
        |case| {
            run(async { Flawed::new(Flaw::None) }, case.run);
        },
    );
    assert!(failed.is_empty(), "the flawless control failed {failed:?}");
}

#[test]
fn a_status_that_shows_one_holder_at_most_is_caught() {
    assert_caught(
        Flaw::OneHolderAtMost,
        &[
            "rw_status_counts_readers_and_the_writer",
            "semaphore_status_counts_permits_and_shows_the_limit",
        ],
    );
}

#[test]
fn a_status_that_shows_every_hold_as_exclusive_is_caught() {
    assert_caught(
        Flaw::KindAlwaysExclusive,
        &[
            "rw_status_counts_readers_and_the_writer",
            "semaphore_status_counts_permits_and_shows_the_limit",
        ],
    );
}

#[test]
fn a_status_without_the_limit_is_caught() {
    assert_caught(
        Flaw::NoLimit,
        &[
            "semaphore_status_counts_permits_and_shows_the_limit",
            "list_of_shows_each_primitives_keys_apart_in_byte_order",
        ],
    );
}

#[test]
fn a_status_that_counts_expired_holders_is_caught() {
    assert_caught(
        Flaw::CountsExpired,
        &["primitive_status_counts_only_live_holders"],
    );
}

#[test]
fn a_listing_of_every_primitives_keys_is_caught() {
    assert_caught(
        Flaw::ListsEveryPrimitive,
        &["list_of_shows_each_primitives_keys_apart_in_byte_order"],
    );
}
