//! The semaphore contract.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::{capabilities::Capabilities, error::LockError, key::LockKey, lease::Lease};

/// A semaphore service: at most `max_holders` valid permits per key at any instant.
///
/// Users hold it as `Arc<dyn DistributedSemaphore>` and mostly reach it through
/// [`SemaphoreLocker`](crate::SemaphoreLocker). A key used as a semaphore is its own resource,
/// apart from the same key used as a mutex or as a read/write lock.
///
/// # Semantics
///
/// - Each permit is its own [`Lease`]: its own token, ttl and fence. Fences come from one
///   counter per key and increase with every grant; with several holders at once they only
///   order the grants, they do not make a holder exclusive.
/// - **The limit is stored with the semaphore** by the first permit. Asking with another
///   `max_holders` while permits are held is a [`LockError::InvalidConfig`] naming both numbers.
///   To change a limit, let every permit drain (release or expire): the next grant stores the
///   new one.
/// - `max_holders` of 0 is [`LockError::InvalidConfig`]; 1 behaves as a mutex.
/// - The cost of an operation grows with the number of current holders, not with
///   `max_holders`. A backend that has a maximum says so.
/// - Waiters are not queued: a released permit goes to whichever waiter asks first after the
///   release (they are woken by notification where the backend offers it).
/// - Ttls, keys, errors, cancel safety and the cleanup of attempts whose outcome is unknown are
///   those of [`DistributedLock`](crate::DistributedLock).
///
/// [`extend`](Self::extend) and [`release`](Self::release) take only
/// [`Permit`](crate::LeaseKind::Permit) leases; any other is refused with
/// [`LockError::InvalidConfig`] naming both kinds, before any request is sent.
#[async_trait]
pub trait DistributedSemaphore: Send + Sync + std::fmt::Debug + 'static {
    /// One permit of the semaphore `key`, which admits at most `max_holders` at once.
    ///
    /// `Ok(None)` when all `max_holders` permits are held.
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::try_acquire`](crate::DistributedLock::try_acquire), and
    /// [`LockError::InvalidConfig`] for a `max_holders` of 0 or one other than the limit
    /// stored while permits are held.
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedLock::try_acquire`](crate::DistributedLock::try_acquire).
    async fn try_acquire(
        &self,
        key: &LockKey,
        max_holders: u32,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError>;

    /// One permit, waiting up to `wait` for a holder to leave.
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::acquire`](crate::DistributedLock::acquire), and
    /// [`LockError::InvalidConfig`] as for [`try_acquire`](Self::try_acquire).
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedLock::acquire`](crate::DistributedLock::acquire).
    async fn acquire(
        &self,
        key: &LockKey,
        max_holders: u32,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError>;

    /// Extends a held permit so that it ends `ttl` from now.
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::extend`](crate::DistributedLock::extend), and
    /// [`LockError::InvalidConfig`] for a lease of another primitive.
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedLock::extend`](crate::DistributedLock::extend).
    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError>;

    /// Gives a permit back.
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::release`](crate::DistributedLock::release), and
    /// [`LockError::InvalidConfig`] for a lease of another primitive.
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedLock::release`](crate::DistributedLock::release).
    async fn release(&self, lease: Lease) -> Result<bool, LockError>;

    /// What this backend offers beyond the contract.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}

/// `Ok` for a usable `max_holders`: 1 or more. Backends call it before any request.
///
/// # Errors
///
/// [`LockError::InvalidConfig`] naming `max_holders` for 0.
pub fn check_max_holders(max_holders: u32) -> Result<u32, LockError> {
    if max_holders == 0 {
        return Err(LockError::invalid_config(
            "max_holders (0)",
            "a semaphore admits at least 1 holder",
        ));
    }
    Ok(max_holders)
}

/// The [`LockError::InvalidConfig`] for a `max_holders` of `asked` while `key`'s permits are
/// held with the limit `stored`: the same words on every backend.
pub fn limit_mismatch(key: &LockKey, asked: u32, stored: u64) -> LockError {
    LockError::invalid_config(
        format!("max_holders ({asked}) for semaphore {key}"),
        format!(
            "the semaphore's permits are held with a limit of {stored}; a new limit applies \
             once every permit has been released or has expired"
        ),
    )
}

/// Forwards every method, so `Arc<dyn DistributedSemaphore>` and `Box<dyn DistributedSemaphore>`
/// are semaphores themselves.
macro_rules! forward_impl {
    ($ptr:ident) => {
        #[deny(clippy::missing_trait_methods)]
        impl<T: DistributedSemaphore + ?Sized> DistributedSemaphore for $ptr<T> {
            fn try_acquire<'s, 'k, 'f>(
                &'s self,
                key: &'k LockKey,
                max_holders: u32,
                ttl: Duration,
            ) -> BoxFuture<'f, Result<Option<Lease>, LockError>>
            where
                's: 'f,
                'k: 'f,
                Self: 'f,
            {
                (**self).try_acquire(key, max_holders, ttl)
            }

            fn acquire<'s, 'k, 'f>(
                &'s self,
                key: &'k LockKey,
                max_holders: u32,
                ttl: Duration,
                wait: Duration,
            ) -> BoxFuture<'f, Result<Lease, LockError>>
            where
                's: 'f,
                'k: 'f,
                Self: 'f,
            {
                (**self).acquire(key, max_holders, ttl, wait)
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
        }
    };
}

/// The future type of the trait's async methods, as `#[async_trait]` makes them.
type BoxFuture<'f, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'f>>;

forward_impl!(Arc);
forward_impl!(Box);
