//! [`ReleaseWatch`]: a holder's wake-up when its key may have been released by someone else.

use async_trait::async_trait;

/// Tells the holder of a key when to check its lease at once instead of at its next renewal:
/// when a release of the key was announced (an administrator's
/// [`force_release`](crate::LockAdmin::force_release)), and whenever announcements (re)start,
/// since some may have been missed before.
///
/// Made by [`DistributedLock::watch_releases`](crate::DistributedLock::watch_releases) for
/// backends that announce releases; the guard layer uses it when
/// [`LockOptions::with_release_watch`](crate::LockOptions::with_release_watch) is set. A wake
/// only means "check now": the holder then extends its lease, and a refused extend is what
/// says the lock is gone. Spurious wakes cost one extend each; a missed announcement costs
/// the time until the next renewal.
#[async_trait]
pub trait ReleaseWatch: Send + Sync + std::fmt::Debug {
    /// Completes at the next reason to check: an announced release of the key, or
    /// announcements arriving (again) after a time they may have been missed. The first call
    /// completes once announcements are arriving, so one check then covers the time between
    /// the acquisition and the watch being in place.
    ///
    /// An announcement that arrives between two calls is kept for the next call.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call loses no announcement that the next call would have seen,
    /// at worst the next call completes at once.
    async fn changed(&mut self);
}
