//! The backend author's kit: what a [`DistributedLock`](crate::DistributedLock) implementation
//! needs and a user of one does not.
//!
//! - [`Attempt`]: the prelude every acquisition shares (checked ttl, fresh token, send
//!   stamp), and the lease it wins;
//! - [`lease`], [`renew`], [`status`]: build a lease from a reply, move its validity after a
//!   successful extend, describe a key for [`LockAdmin`](crate::LockAdmin);
//! - [`ttl`]: the shared ttl rules and the validity formula;
//! - [`wait`]: deadlines, the polling and notified wait loops, ghost cleanup of attempts whose
//!   outcome is unknown;
//! - [`Wakers`] and [`WakeHandle`]: per-key wake-ups for backends that hear of releases.
//!
//! Users never need these: nothing here asks a server anything, so a lease moved forward with
//! [`renew`] is only as true as the backend that calls it. `docs/custom-backend.md` walks
//! through writing a backend with them.

mod attempt;
pub mod ttl;
pub mod wait;
mod wakers;

use std::time::Duration;

pub use self::{
    attempt::{Attempt, Reply},
    wakers::{WakeHandle, Wakers},
};
use crate::{
    admin::LockStatus,
    key::LockKey,
    lease::{Lease, LeaseKind, LeaseToken},
};
pub use crate::{
    clock::SentAt,
    semaphore::{check_max_holders, limit_mismatch},
};

/// How long a waiting writer's mark holds new readers back once its writer stops refreshing
/// it (a writer that crashed while waiting): the backends' default. A waiting writer refreshes
/// its mark at least every [`WRITER_MARK_REFRESH`].
pub const WRITER_MARK_TTL: Duration = Duration::from_secs(2);

/// The longest a waiting writer goes without refreshing its mark: a third of
/// [`WRITER_MARK_TTL`], so two refreshes can be late before the mark lapses.
pub const WRITER_MARK_REFRESH: Duration = Duration::from_millis(660);

/// Builds the lease an acquisition won.
///
/// `sent_at` is the stamp taken with [`SentAt::now`] *before* the request that acquired the
/// lock was sent (an `Instant` converts, but a suspend between taking it and this call is then
/// not seen), and `ttl` the checked ttl (see [`ttl::check`]); the validity follows the formula
/// in [`ttl`]. [`Attempt::won`] does this for the common case.
pub fn lease(
    key: LockKey,
    token: LeaseToken,
    fence: u64,
    ttl: Duration,
    sent_at: impl Into<SentAt>,
) -> Lease {
    Lease::from_parts(key, token, fence, ttl, sent_at.into())
}

/// As [`lease`], for a hold of `kind` (a read, a write, a permit).
pub fn lease_as(
    kind: LeaseKind,
    key: LockKey,
    token: LeaseToken,
    fence: u64,
    ttl: Duration,
    sent_at: impl Into<SentAt>,
) -> Lease {
    lease(key, token, fence, ttl, sent_at).of_kind(kind)
}

/// `Ok` if `lease` is of one of the kinds `accepted` by the primitive it was handed to; the
/// [`LockError::InvalidConfig`](crate::LockError::InvalidConfig) naming both kinds otherwise.
/// Every backend's `extend` and `release` call it first, so a read lease handed to a mutex (or a
/// permit to a read/write lock) is refused before any request is sent.
///
/// # Errors
///
/// As said.
pub fn check_kind(lease: &Lease, accepted: &[LeaseKind]) -> Result<(), crate::LockError> {
    lease.check_kind(accepted)
}

/// Records a successful extend of `lease` to `ttl` by a request sent at `sent_at` (taken
/// before the request, as for [`lease`]). Call it only when the server confirmed the extend.
pub fn renew(lease: &mut Lease, ttl: Duration, sent_at: impl Into<SentAt>) {
    lease.renew(ttl, sent_at.into());
}

/// What a backend's [`LockAdmin`](crate::LockAdmin) reports for one key: the last fence handed
/// out (if it was ever locked) and the time left on the current lease (if it is held).
pub fn status(last_fence: Option<u64>, remaining: Option<Duration>) -> LockStatus {
    LockStatus::from_parts(last_fence, remaining)
}

/// The status of a key with several holders (a read/write lock, a semaphore): the last fence,
/// the number of valid leases, their kind, the time left on the one that ends last and a
/// semaphore's stored limit. With no holder (or no time left) the key reads as free: holders
/// 0, no kind, no time left, no limit.
pub fn holders_status(
    last_fence: Option<u64>,
    holders: u32,
    held_as: LeaseKind,
    remaining: Option<Duration>,
    max_holders: Option<u32>,
) -> LockStatus {
    LockStatus::of_holders(last_fence, holders, held_as, remaining, max_holders)
}
