//! The read/write lock contract.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::{capabilities::Capabilities, error::LockError, key::LockKey, lease::Lease};

/// A read/write lock service: any number of readers, or one writer, per key.
///
/// Users hold it as `Arc<dyn DistributedRwLock>` and mostly reach it through
/// [`RwLocker`](crate::RwLocker). A key used as a read/write lock is its own resource, apart
/// from the same key used as a mutex or as a semaphore: its own state and its own fence counter.
///
/// # Semantics
///
/// - **Writer-preferring**: once a writer waits in [`acquire_write`](Self::acquire_write), new
///   readers wait too (their `try_acquire_read` answers `None`), so writers never starve. The
///   waiting writer's mark has a short ttl of its own, refreshed while it waits and removed when
///   it gets the lock, times out or is dropped: a writer that crashes while waiting holds
///   readers back for at most that ttl. [`try_acquire_write`](Self::try_acquire_write) leaves no
///   mark.
/// - Every holder, reader or writer, has its own [`Lease`]: its own token and ttl. A crashed
///   reader holds a writer back only until its own ttl ends.
/// - **No upgrade, downgrade or reentrancy.** A reader that asks to write waits on its own read
///   lease until its deadline (and holds new readers back meanwhile); release the read lease
///   first.
/// - **Fences**: one counter per key, increased by every grant, read or write. A resource that
///   accepts a write only with a fence at least the highest it has seen rejects a stale writer.
/// - Ttls, keys, errors, cancel safety and the cleanup of attempts whose outcome is unknown are
///   those of [`DistributedLock`](crate::DistributedLock).
///
/// [`extend`](Self::extend) and [`release`](Self::release) take [`Read`](crate::LeaseKind::Read)
/// and [`Write`](crate::LeaseKind::Write) leases; any other is refused with
/// [`LockError::InvalidConfig`] naming both kinds, before any request is sent.
///
/// # One backend, several traits
///
/// The backends implement this trait beside [`DistributedLock`](crate::DistributedLock) and
/// [`DistributedSemaphore`](crate::DistributedSemaphore). Behind `dyn` no name is ambiguous; on
/// the concrete type with several traits in scope, `extend` and `release` need the trait's
/// name:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), leasehold::LockError> {
/// use std::{sync::Arc, time::Duration};
/// use leasehold::{
///     memory::MemoryLock, DistributedLock, DistributedRwLock, DistributedSemaphore, LockKey,
/// };
///
/// let backend = MemoryLock::new();
/// let key = LockKey::new("cache/rebuild")?;
/// let ttl = Duration::from_secs(10);
///
/// // Behind `dyn`, each handle has one `release`.
/// let rw: Arc<dyn DistributedRwLock> = Arc::new(backend.clone());
/// let reader = rw.try_acquire_read(&key, ttl).await?.expect("no writer");
/// assert!(rw.release(reader).await?);
///
/// // On the concrete type, name the trait.
/// let writer = backend.try_acquire_write(&key, ttl).await?.expect("no reader");
/// assert!(DistributedRwLock::release(&backend, writer).await?);
/// let permit = DistributedSemaphore::try_acquire(&backend, &key, 3, ttl).await?.expect("free");
/// assert!(DistributedSemaphore::release(&backend, permit).await?);
/// let mutex = DistributedLock::try_acquire(&backend, &key, ttl).await?.expect("free");
/// assert!(DistributedLock::release(&backend, mutex).await?);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait DistributedRwLock: Send + Sync + std::fmt::Debug + 'static {
    /// Tries once to take `key` for reading; `Ok(None)` while a writer holds it or waits for it.
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::try_acquire`](crate::DistributedLock::try_acquire).
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedLock::try_acquire`](crate::DistributedLock::try_acquire).
    async fn try_acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError>;

    /// Tries once to take `key` for writing; `Ok(None)` while anyone holds it. Leaves no mark
    /// that holds readers back.
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::try_acquire`](crate::DistributedLock::try_acquire).
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedLock::try_acquire`](crate::DistributedLock::try_acquire).
    async fn try_acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError>;

    /// Takes `key` for reading, waiting up to `wait` while a writer holds it or waits for it.
    ///
    /// `wait` bounds the waiting as in
    /// [`DistributedLock::acquire`](crate::DistributedLock::acquire).
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::acquire`](crate::DistributedLock::acquire).
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedLock::acquire`](crate::DistributedLock::acquire).
    async fn acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError>;

    /// Takes `key` for writing, waiting up to `wait` for readers and a writer to leave; while it
    /// waits, new readers wait too.
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::acquire`](crate::DistributedLock::acquire).
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedLock::acquire`](crate::DistributedLock::acquire); the waiting mark is
    /// removed when the future is dropped (in the background, as an attempt's cleanup), and ends
    /// with its own short ttl where that cannot run.
    async fn acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError>;

    /// Extends a held read or write lease so that it ends `ttl` from now.
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

    /// Releases a read or write lease.
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

/// Forwards every method, so `Arc<dyn DistributedRwLock>` and `Box<dyn DistributedRwLock>` are
/// read/write locks themselves.
macro_rules! forward_impl {
    ($ptr:ident) => {
        #[deny(clippy::missing_trait_methods)]
        impl<T: DistributedRwLock + ?Sized> DistributedRwLock for $ptr<T> {
            fn try_acquire_read<'s, 'k, 'f>(
                &'s self,
                key: &'k LockKey,
                ttl: Duration,
            ) -> BoxFuture<'f, Result<Option<Lease>, LockError>>
            where
                's: 'f,
                'k: 'f,
                Self: 'f,
            {
                (**self).try_acquire_read(key, ttl)
            }

            fn try_acquire_write<'s, 'k, 'f>(
                &'s self,
                key: &'k LockKey,
                ttl: Duration,
            ) -> BoxFuture<'f, Result<Option<Lease>, LockError>>
            where
                's: 'f,
                'k: 'f,
                Self: 'f,
            {
                (**self).try_acquire_write(key, ttl)
            }

            fn acquire_read<'s, 'k, 'f>(
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
                (**self).acquire_read(key, ttl, wait)
            }

            fn acquire_write<'s, 'k, 'f>(
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
                (**self).acquire_write(key, ttl, wait)
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
