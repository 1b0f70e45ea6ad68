//! The guard layer: [`Locker`], [`LockGuard`] and background renewal.

mod locker;
mod options;
mod renewal;
mod rw_locker;
mod semaphore_locker;
mod view;

use std::{
    fmt,
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

pub use self::{
    locker::Locker,
    options::LockOptions,
    rw_locker::RwLocker,
    semaphore_locker::SemaphoreLocker,
    view::{GuardState, LeaseView},
};
use crate::{error::LockError, key::LockKey};

/// A held lock that renews itself in the background until it is released or dropped.
///
/// Owned and `'static`: move it into tasks freely. Made by [`Locker`] (a mutex),
/// [`RwLocker`] (a read or write lease) and [`SemaphoreLocker`] (a permit), which all renew,
/// report and release it the same way.
///
/// # Release
///
/// [`release`](Self::release) is the main path: it stops renewal, releases the lock and says
/// whether it was still held. Dropping the guard also stops renewal and releases the lock, but
/// in the background and on a best-effort basis: nothing blocks in `Drop`, and if the runtime
/// shuts down or the backend cannot be reached first, the lock ends with its ttl.
#[must_use = "the lock is released as soon as the guard is dropped"]
// Dropping it releases the lock: clippy's `significant_drop_*` lints then warn where a guard
// lives longer (or shorter) than a reader would think.
#[clippy::has_significant_drop]
pub struct LockGuard {
    view: LeaseView,
    stop: Option<oneshot::Sender<renewal::ReleaseReply>>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("lease", &self.view)
            .finish()
    }
}

impl LockGuard {
    /// The locked key.
    pub fn key(&self) -> &LockKey {
        self.view.key()
    }

    /// The lease's fencing token: pass it to the resource you protect.
    pub fn fence(&self) -> u64 {
        self.view.fence()
    }

    /// See [`LeaseView::state`].
    pub fn state(&self) -> GuardState {
        self.view.state()
    }

    /// See [`LeaseView::remaining`].
    pub fn remaining(&self) -> Duration {
        self.view.remaining()
    }

    /// See [`LeaseView::valid_until`].
    pub fn valid_until(&self) -> Instant {
        self.view.valid_until()
    }

    /// Completes when the lease is lost (at the latest when its validity ends without a
    /// renewal). See [`LeaseView::lost`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn lost(&self) -> GuardState {
        self.view.lost().await
    }

    /// A cloneable, read-only view of this guard's lease, for other tasks.
    pub fn view(&self) -> LeaseView {
        self.view.clone()
    }

    /// Stops renewal and releases the lock.
    ///
    /// Returns `Ok(true)` if the lock was still held and is now free, `Ok(false)` if it had
    /// already been lost.
    ///
    /// # Errors
    ///
    /// [`LockError::Backend`] when the backend cannot be reached; the lock then ends with its
    /// ttl.
    ///
    /// # Cancel safety
    ///
    /// Once polled, the release goes on in the background even if this future is dropped.
    pub async fn release(mut self) -> Result<bool, LockError> {
        let (reply, outcome) = oneshot::channel();
        let Some(stop) = self.stop.take() else {
            return Ok(false);
        };
        if stop.send(reply).is_err() {
            // The renewal task is gone (its runtime shut down): nothing left to release.
            return Ok(false);
        }
        outcome.await.unwrap_or(Ok(false))
    }
}
