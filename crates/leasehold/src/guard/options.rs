//! Options of the guard layer.

use std::time::Duration;

use crate::{backend::ttl, error::LockError};

/// How [`Locker`](crate::Locker) takes and keeps a lock.
///
/// ```
/// use std::time::Duration;
/// use leasehold::LockOptions;
///
/// let options = LockOptions::default()
///     .with_ttl(Duration::from_secs(9))
///     .with_wait(Duration::from_secs(2))
///     .with_max_hold(Duration::from_secs(600));
/// assert_eq!(options.renew_every(), Duration::from_secs(3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockOptions {
    ttl: Duration,
    wait: Duration,
    renew_every: Option<Duration>,
    max_hold: Option<Duration>,
    release_watch: bool,
}

impl Default for LockOptions {
    /// ttl 30 s, wait 30 s, renew every ttl / 3, no cap on holding, no release watch.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            wait: Duration::from_secs(30),
            renew_every: None,
            max_hold: None,
            release_watch: false,
        }
    }
}

impl LockOptions {
    /// The lease's ttl: how long the lock outlives a crashed holder. Default 30 s.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long [`Locker::lock`](crate::Locker::lock) waits for the lock. Default 30 s;
    /// `Duration::MAX` waits without a deadline. Ignored by `try_lock`.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// How often the guard extends the lease. Default ttl / 3, which leaves room for two failed
    /// renewals before the lease's validity ends. Must be shorter than the validity
    /// (ttl minus the [drift allowance](crate::backend::ttl)).
    pub fn with_renew_every(mut self, every: Duration) -> Self {
        self.renew_every = Some(every);
        self
    }

    /// Stop renewing once the lock has been held this long; the lease then ends with its ttl
    /// and the guard reports [`Lost`](crate::GuardState::Lost). Default: no cap.
    pub fn with_max_hold(mut self, max_hold: Duration) -> Self {
        self.max_hold = Some(max_hold);
        self
    }

    /// Check the lease at once when the backend announces a release of the key that the
    /// guard did not make (an administrator's
    /// [`force_release`](crate::LockAdmin::force_release)), instead of at the next renewal.
    /// Default off.
    ///
    /// Where the backend announces releases ([`DistributedLock::watch_releases`] gives a
    /// watch: Redis and the PostgreSQL lease table with notified waiting on; not behind a
    /// transaction pooler, which cannot `LISTEN`), the guard then reports
    /// [`Lost`](crate::GuardState::Lost) about one round trip after a forced release;
    /// elsewhere this changes nothing and a forced release is seen at the next renewal. It
    /// costs a subscription per guard (on Redis a `SUBSCRIBE` and an `UNSUBSCRIBE` on the
    /// shared pub/sub connection), one extra extend once the watch is in place, one per
    /// announcement and one or two per reconnect of the backend's listener, at most ten a
    /// second.
    ///
    /// [`DistributedLock::watch_releases`]: crate::DistributedLock::watch_releases
    pub fn with_release_watch(mut self, yes: bool) -> Self {
        self.release_watch = yes;
        self
    }

    /// Whether the guard watches for releases it did not make.
    pub fn release_watch(&self) -> bool {
        self.release_watch
    }

    /// The ttl.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The wait.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The renewal interval (ttl / 3 unless set).
    pub fn renew_every(&self) -> Duration {
        self.renew_every.unwrap_or(self.ttl / 3)
    }

    /// The cap on holding, if any.
    pub fn max_hold(&self) -> Option<Duration> {
        self.max_hold
    }

    /// Checks that these options can keep a lease alive; returns the checked ttl.
    pub(crate) fn check(&self) -> Result<Duration, LockError> {
        let ttl = ttl::check(self.ttl)?;
        let validity = ttl.saturating_sub(ttl::drift(ttl));
        let every = self.renew_every();
        if every.is_zero() || every >= validity {
            return Err(LockError::invalid_config(
                format!("renew interval {every:?}"),
                format!(
                    "must be above zero and below the lease's validity of {validity:?} \
                     (ttl {ttl:?} minus drift allowance)"
                ),
            ));
        }
        if self.max_hold.is_some_and(|m| m.is_zero()) {
            return Err(LockError::invalid_config(
                "max_hold 0ns",
                "must be above zero",
            ));
        }
        Ok(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_renewal_that_cannot_keep_the_lease() {
        let ttl = Duration::from_secs(1);
        for every in [Duration::ZERO, ttl, Duration::from_millis(988)] {
            let err = LockOptions::default()
                .with_ttl(ttl)
                .with_renew_every(every)
                .check()
                .unwrap_err();
            assert!(err.to_string().contains("renew interval"), "{err}");
        }
        let ok = LockOptions::default()
            .with_ttl(ttl)
            .with_renew_every(Duration::from_millis(987));
        assert_eq!(ok.check().unwrap(), ttl);
    }

    #[test]
    fn rejects_bad_ttl_and_zero_max_hold() {
        assert!(matches!(
            LockOptions::default().with_ttl(Duration::ZERO).check(),
            Err(LockError::InvalidTtl { .. })
        ));
        assert!(LockOptions::default()
            .with_max_hold(Duration::ZERO)
            .check()
            .is_err());
    }
}
