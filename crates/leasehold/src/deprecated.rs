//! The kit's old paths, kept for one release so that backends written against the old
//! `docs/custom-backend.md` still compile. Each item is deprecated itself (a deprecated module
//! alone would not warn on `use leasehold::wait::Deadline`), pointing to its new path in
//! [`backend`](crate::backend).

/// Moved to [`backend::wait`](crate::backend::wait); this path goes in the next release.
///
/// Every use warns:
///
/// ```compile_fail
/// #![deny(deprecated)]
/// use leasehold::wait::Deadline;
///
/// let _ = Deadline::after(std::time::Duration::ZERO);
/// ```
///
/// ```compile_fail
/// #![deny(deprecated)]
/// let _ = leasehold::ttl::check(std::time::Duration::from_secs(1));
/// ```
pub mod wait {
    use std::{future::Future, time::Duration};

    use crate::{
        backend::wait, contract::DistributedLock, error::LockError, key::LockKey, lease::Lease,
    };

    /// Moved to [`backend::wait::POLL_FIRST`](crate::backend::wait::POLL_FIRST).
    #[deprecated(
        since = "0.1.1",
        note = "moved to `leasehold::backend::wait::POLL_FIRST`"
    )]
    pub const POLL_FIRST: Duration = wait::POLL_FIRST;

    /// Moved to [`backend::wait::POLL_MAX`](crate::backend::wait::POLL_MAX).
    #[deprecated(
        since = "0.1.1",
        note = "moved to `leasehold::backend::wait::POLL_MAX`"
    )]
    pub const POLL_MAX: Duration = wait::POLL_MAX;

    /// Moved to [`backend::wait::Deadline`](crate::backend::wait::Deadline).
    #[deprecated(
        since = "0.1.1",
        note = "moved to `leasehold::backend::wait::Deadline`"
    )]
    pub type Deadline = wait::Deadline;

    /// Moved to [`backend::wait::InFlight`](crate::backend::wait::InFlight).
    #[deprecated(
        since = "0.1.1",
        note = "moved to `leasehold::backend::wait::InFlight`"
    )]
    pub type InFlight<F, Fut> = wait::InFlight<F, Fut>;

    /// Moved to [`backend::wait::NotifiedWait`](crate::backend::wait::NotifiedWait).
    #[deprecated(
        since = "0.1.1",
        note = "moved to `leasehold::backend::wait::NotifiedWait`"
    )]
    pub type NotifiedWait = wait::NotifiedWait;

    /// Moved to [`backend::wait::Outcome`](crate::backend::wait::Outcome).
    #[deprecated(since = "0.1.1", note = "moved to `leasehold::backend::wait::Outcome`")]
    pub type Attempt = wait::Outcome;

    /// Moved to [`backend::wait::keep_waiting`](crate::backend::wait::keep_waiting).
    ///
    /// # Errors
    ///
    /// As the new path.
    #[deprecated(
        since = "0.1.1",
        note = "moved to `leasehold::backend::wait::keep_waiting`"
    )]
    pub fn keep_waiting(
        error: LockError,
        last_failure: &mut Option<LockError>,
    ) -> Result<(), LockError> {
        wait::keep_waiting(error, last_failure)
    }

    /// Moved to [`backend::wait::jitter`](crate::backend::wait::jitter).
    #[deprecated(since = "0.1.1", note = "moved to `leasehold::backend::wait::jitter`")]
    pub fn jitter(base: Duration) -> Duration {
        wait::jitter(base)
    }

    /// Moved to [`backend::wait::poll_acquire`](crate::backend::wait::poll_acquire).
    ///
    /// # Errors
    ///
    /// As the new path.
    #[deprecated(
        since = "0.1.1",
        note = "moved to `leasehold::backend::wait::poll_acquire`"
    )]
    pub async fn poll_acquire<L: DistributedLock + ?Sized>(
        lock: &L,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        wait::poll_acquire(lock, key, ttl, wait).await
    }

    /// Moved to [`backend::wait::release_abandoned`](crate::backend::wait::release_abandoned).
    #[deprecated(
        since = "0.1.1",
        note = "moved to `leasehold::backend::wait::release_abandoned`"
    )]
    pub async fn release_abandoned<R, RFut>(key: LockKey, retry_after: Option<Duration>, release: R)
    where
        R: FnMut() -> RFut,
        RFut: Future<Output = Result<bool, LockError>>,
    {
        wait::release_abandoned(key, retry_after, release).await;
    }
}

/// Moved to [`backend::ttl`](crate::backend::ttl); this path goes in the next release.
pub mod ttl {
    use std::time::{Duration, Instant};

    use crate::{backend::ttl, error::LockError};

    /// Moved to [`backend::ttl::MIN_TTL`](crate::backend::ttl::MIN_TTL).
    #[deprecated(since = "0.1.1", note = "moved to `leasehold::backend::ttl::MIN_TTL`")]
    pub const MIN_TTL: Duration = ttl::MIN_TTL;

    /// Moved to [`backend::ttl::MAX_TTL`](crate::backend::ttl::MAX_TTL).
    #[deprecated(since = "0.1.1", note = "moved to `leasehold::backend::ttl::MAX_TTL`")]
    pub const MAX_TTL: Duration = ttl::MAX_TTL;

    /// Moved to [`backend::ttl::check`](crate::backend::ttl::check).
    ///
    /// # Errors
    ///
    /// As the new path.
    #[deprecated(since = "0.1.1", note = "moved to `leasehold::backend::ttl::check`")]
    pub fn check(value: Duration) -> Result<Duration, LockError> {
        ttl::check(value)
    }

    /// Moved to [`backend::ttl::whole_millis`](crate::backend::ttl::whole_millis).
    #[deprecated(
        since = "0.1.1",
        note = "moved to `leasehold::backend::ttl::whole_millis`"
    )]
    pub fn whole_millis(value: Duration) -> u64 {
        ttl::whole_millis(value)
    }

    /// Moved to [`backend::ttl::drift`](crate::backend::ttl::drift).
    #[deprecated(since = "0.1.1", note = "moved to `leasehold::backend::ttl::drift`")]
    pub fn drift(value: Duration) -> Duration {
        ttl::drift(value)
    }

    /// Moved to [`backend::ttl::valid_until`](crate::backend::ttl::valid_until).
    #[deprecated(
        since = "0.1.1",
        note = "moved to `leasehold::backend::ttl::valid_until`"
    )]
    pub fn valid_until(sent_at: Instant, value: Duration) -> Instant {
        ttl::valid_until(sent_at, value)
    }
}
