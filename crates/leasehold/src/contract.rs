//! The backend contract.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::{
    backend::wait, capabilities::Capabilities, error::LockError, key::LockKey, lease::Lease,
    release_watch::ReleaseWatch,
};

/// A lock service: the contract every backend implements.
///
/// Users hold it as `Arc<dyn DistributedLock>` and mostly reach it through
/// [`Locker`](crate::Locker), the auto-renewing guard layer. Backend authors implement the
/// methods below and run `leasehold-conformance` against their backend.
///
/// Every method validates its ttl with [`ttl::check`](crate::backend::ttl::check), so the same bad ttl
/// gives the same [`LockError::InvalidTtl`] on every backend.
///
/// # Wrappers
///
/// A type that wraps a backend (to count calls, inject faults, add metrics) must forward
/// **every** method, the defaulted ones too: a wrapper that leaves out
/// [`acquire`](Self::acquire) gets the default, which polls, and silently loses the inner
/// backend's notified waiting; one that leaves out [`capabilities`](Self::capabilities) or
/// [`watch_releases`](Self::watch_releases) hides what the backend offers. Put
/// `#[deny(clippy::missing_trait_methods)]` on the impl, as the `Arc` and `Box` forwarding
/// impls here and the workspace's test wrappers do, and clippy names any method left out,
/// including ones added later.
#[async_trait]
pub trait DistributedLock: Send + Sync + std::fmt::Debug + 'static {
    /// Tries once to take `key` for `ttl`.
    ///
    /// Returns `Ok(None)` when someone else holds the key: contention is not an error.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidTtl`] for a ttl outside the accepted range; [`LockError::Backend`]
    /// when the server cannot be reached or refuses.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped after the request was sent, the lock may have been taken on
    /// the server with a token nobody knows. Backends then release that token at once in the
    /// background ([`wait::InFlight`]), as they do after any failure that leaves the outcome
    /// open (a reply timeout, a lost connection); only where that cleanup cannot run (the
    /// runtime shuts down, the process dies, the server stays unreachable) is the lock held
    /// until its ttl ends.
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError>;

    /// Takes `key` for `ttl`, waiting up to `wait` for the current holder to let go.
    ///
    /// `wait` bounds the *waiting*, never an attempt in flight: at least one complete attempt
    /// is made and its answer used, and the deadline only stops further attempts (a request
    /// that was sent may still land, so cutting it off would leave a lock nobody knows of).
    /// Each attempt is bounded by the backend's own request timeout, so `acquire` returns within
    /// `wait` plus one request timeout. A `wait` of zero makes exactly one complete attempt. A
    /// `wait` too large to add to the current instant (such as `Duration::MAX`) means "no
    /// deadline": transient failures are then retried for as long as it takes.
    ///
    /// The default polls [`try_acquire`](Self::try_acquire) with jittered exponential backoff
    /// (see [`wait::poll_acquire`]); backends override it with notification-based waiting.
    ///
    /// Transient backend failures during the wait (a dropped connection, a reply timeout) are
    /// retried until the deadline, as [`wait::keep_waiting`] decides.
    ///
    /// # Errors
    ///
    /// [`LockError::Timeout`] when `wait` has passed without getting the lock; the last
    /// transient [`LockError::Backend`] instead if the deadline passed while attempts were
    /// failing; other errors of [`try_acquire`](Self::try_acquire) at once.
    ///
    /// # Cancel safety
    ///
    /// As for [`try_acquire`](Self::try_acquire): dropping the future while it waits leaves no
    /// lock behind; dropping it during an attempt triggers the attempt's cleanup.
    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        wait::poll_acquire(self, key, ttl, wait).await
    }

    /// Extends a held lease so that it ends `ttl` from now, and updates `lease`'s validity.
    ///
    /// Returns `Ok(false)` if the lease is no longer held (expired, released, or taken by
    /// someone else); an expired lease is never brought back.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidTtl`] and [`LockError::Backend`] as for
    /// [`try_acquire`](Self::try_acquire).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not have extended the lease on the server; `lease` is
    /// then left with its old, shorter validity, which is the conservative side.
    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError>;

    /// Releases a lease.
    ///
    /// Returns `Ok(true)` if it was held and is now free, `Ok(false)` if it had already expired
    /// or been taken by another holder, who is left undisturbed.
    ///
    /// # Errors
    ///
    /// [`LockError::Backend`] when the server cannot be reached; the lock then ends with its ttl.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not have released the lock; at worst it ends with its ttl.
    async fn release(&self, lease: Lease) -> Result<bool, LockError>;

    /// What this backend offers beyond the contract.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Watches `key` for releases its holder did not make (an administrator's forced release),
    /// so a holder can notice them at once instead of at its next renewal.
    ///
    /// Returns `None` (the default) where the backend announces no releases; holders then
    /// notice a forced release when their next extend is refused. Backends that announce
    /// releases to wake waiters (Redis pub/sub, PostgreSQL `NOTIFY`) return a watch on the
    /// same announcements. Registering is local and cheap; any subscription it needs is made
    /// by the watch's first [`changed`](ReleaseWatch::changed).
    fn watch_releases(&self, key: &LockKey) -> Option<Box<dyn ReleaseWatch>> {
        let _ = key;
        None
    }
}

/// Forwards every method, so `Arc<dyn DistributedLock>` and `Box<dyn DistributedLock>` are
/// locks themselves.
macro_rules! forward_impl {
    ($ptr:ident) => {
        // Written out (what `#[async_trait]` would generate) to hand back the inner backend's
        // boxed future as it is: `#[async_trait]` here would box it a second time, an
        // allocation and a copy of the future on every call through `Arc<dyn DistributedLock>`.
        #[deny(clippy::missing_trait_methods)]
        impl<T: DistributedLock + ?Sized> DistributedLock for $ptr<T> {
            fn try_acquire<'s, 'k, 'f>(
                &'s self,
                key: &'k LockKey,
                ttl: Duration,
            ) -> BoxFuture<'f, Result<Option<Lease>, LockError>>
            where
                's: 'f,
                'k: 'f,
                Self: 'f,
            {
                (**self).try_acquire(key, ttl)
            }

            fn acquire<'s, 'k, 'f>(
                &'s self,
                key: &'k LockKey,
                ttl: Duration,
                wait: Duration,
            ) -> BoxFuture<'f, Result<Lease, LockError>>
            where
                's: 'f,
                'k: 'f,
                Self: 'f,
            {
                (**self).acquire(key, ttl, wait)
            }

            fn extend<'s, 'l, 'f>(
                &'s self,
                lease: &'l mut Lease,
                ttl: Duration,
            ) -> BoxFuture<'f, Result<bool, LockError>>
            where
                's: 'f,
                'l: 'f,
                Self: 'f,
            {
                (**self).extend(lease, ttl)
            }

            fn release<'s, 'f>(&'s self, lease: Lease) -> BoxFuture<'f, Result<bool, LockError>>
            where
                's: 'f,
                Self: 'f,
            {
                (**self).release(lease)
            }

            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }

            fn watch_releases(&self, key: &LockKey) -> Option<Box<dyn ReleaseWatch>> {
                (**self).watch_releases(key)
            }
        }
    };
}

/// The future type of the trait's async methods, as `#[async_trait]` makes them.
type BoxFuture<'f, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'f>>;

forward_impl!(Arc);
forward_impl!(Box);
