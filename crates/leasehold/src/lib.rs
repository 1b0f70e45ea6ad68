#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod admin;
pub mod backend;
mod capabilities;
pub mod clock;
mod contract;
mod error;
mod guard;
mod key;
mod lease;
pub mod memory;
pub mod redact;
mod release_watch;
mod rwlock;
mod semaphore;

mod deprecated;
pub use deprecated::{ttl, wait};

/// Moved to [`backend::Wakers`]; this path goes in the next release.
#[deprecated(since = "0.1.1", note = "moved to `leasehold::backend::Wakers`")]
pub type Wakers = backend::Wakers;

/// Moved to [`backend::WakeHandle`]; this path goes in the next release.
#[deprecated(since = "0.1.1", note = "moved to `leasehold::backend::WakeHandle`")]
pub type WakeHandle = backend::WakeHandle;

pub use async_trait::async_trait;

/// The workspace README's quickstart, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct WorkspaceReadme;

pub use crate::{
    admin::{LockAdmin, LockStatus, Primitive},
    capabilities::Capabilities,
    contract::DistributedLock,
    error::{BoxError, FailureKind, InvalidKeyReason, InvalidTtlReason, LockError},
    guard::{GuardState, LeaseView, LockGuard, LockOptions, Locker, RwLocker, SemaphoreLocker},
    key::{IntoLockKey, LockKey, MAX_KEY_LEN},
    lease::{Lease, LeaseKind, LeaseToken},
    release_watch::ReleaseWatch,
    rwlock::DistributedRwLock,
    semaphore::DistributedSemaphore,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_static<T: Send + 'static>(_: T) {}

    #[test]
    fn guard_futures_and_guards_are_send_and_static() {
        let locker = Locker::new(memory::MemoryLock::new());
        let owned = locker.clone();
        assert_send_static(async move { owned.lock("k", LockOptions::default()).await });
        let owned = locker.clone();
        assert_send_static(async move {
            owned
                .with_lock(
                    "k",
                    LockOptions::default(),
                    |lease| async move { lease.fence() },
                )
                .await
        });
        let _: Option<LockGuard> = None::<LockGuard>.inspect(|g| assert_send_static(g.view()));
    }

    #[test]
    fn guards_are_send_sync_and_static() {
        fn assert_send_sync_static<T: Send + Sync + 'static>() {}
        assert_send_sync_static::<LockGuard>();
        assert_send_sync_static::<LeaseView>();
        assert_send_sync_static::<Locker>();
    }
}
