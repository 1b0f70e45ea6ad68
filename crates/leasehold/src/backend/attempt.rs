//! [`Attempt`]: the prelude shared by every backend's acquisition.

use std::time::Duration;

use super::{ttl, SentAt};
use crate::{
    error::LockError,
    key::LockKey,
    lease::{Lease, LeaseKind, LeaseToken},
};

/// One acquisition attempt, made just before its request is sent: the checked ttl, a fresh
/// random token and the send stamp. A backend sends [`token`](Self::token) and
/// [`ttl_millis`](Self::ttl_millis) to its store and, if the store says the lock was taken,
/// turns the attempt into the lease with [`won`](Self::won).
///
/// ```
/// # fn main() -> Result<(), leasehold::LockError> {
/// use std::time::Duration;
/// use leasehold::{backend::Attempt, LockKey};
///
/// let key = LockKey::new("jobs/nightly")?;
/// let attempt = Attempt::start(Duration::from_secs(30))?;
/// // ... send `attempt.token().to_hex()` and `attempt.ttl_millis()`; the store answers fence 7 ...
/// let lease = attempt.won(&key, 7);
/// assert_eq!(lease.fence(), 7);
/// assert!(lease.remaining() <= Duration::from_secs(30));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    ttl: Duration,
    token: LeaseToken,
    sent_at: SentAt,
}

impl Attempt {
    /// Checks `ttl` with [`ttl::check`], draws a token and stamps the time. Call it right
    /// before sending the request: the lease's validity counts from here.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidTtl`] for a ttl outside the accepted range; a
    /// [`LockError::Backend`] if the operating system's random source fails.
    pub fn start(ttl: Duration) -> Result<Self, LockError> {
        let ttl = ttl::check(ttl)?;
        let token = LeaseToken::random()?;
        Ok(Self {
            ttl,
            token,
            sent_at: SentAt::now(),
        })
    }

    /// The checked ttl (whole milliseconds).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The ttl as the number of milliseconds to send.
    pub fn ttl_millis(&self) -> u64 {
        ttl::whole_millis(self.ttl)
    }

    /// This attempt's token: store it with the lock, compare it in extend and release, and
    /// release with it when the attempt's outcome is unknown.
    pub fn token(&self) -> LeaseToken {
        self.token
    }

    /// When the attempt started.
    pub fn sent_at(&self) -> SentAt {
        self.sent_at
    }

    /// The lease this attempt won, with the fence the store handed out.
    pub fn won(self, key: &LockKey, fence: u64) -> Lease {
        Lease::from_parts(key.clone(), self.token, fence, self.ttl, self.sent_at)
    }

    /// The lease of `kind` this attempt won (a read, a write, a permit), with the fence the
    /// store handed out.
    pub fn won_as(self, kind: LeaseKind, key: &LockKey, fence: u64) -> Lease {
        self.won(key, fence).of_kind(kind)
    }

    /// What the store's `reply` means for a waiting acquire: the lease won, or the holder's
    /// remaining time if the store said ([`wait::Outcome`](super::wait::Outcome)). For a
    /// single try, `.ok()` of it is `try_acquire`'s answer.
    pub fn outcome(self, key: &LockKey, reply: Reply) -> Result<Lease, Option<Duration>> {
        match reply {
            Reply::Won(fence) => Ok(self.won(key, fence)),
            Reply::Busy(left) => Err(left),
        }
    }
}

/// What a store answered to one acquire request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Taken, with this fence.
    Won(u64),
    /// Held by someone else, for this long if the store said.
    Busy(Option<Duration>),
}
