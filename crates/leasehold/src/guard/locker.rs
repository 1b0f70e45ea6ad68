//! [`Locker`]: the entry point of the guard layer.

use std::{
    future::Future,
    panic::{self, AssertUnwindSafe},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tokio::sync::{oneshot, watch};

use super::{
    options::LockOptions,
    renewal::Renewal,
    view::{GuardState, LeaseView, Status},
    LockGuard,
};
use crate::{backend::DistributedLock, error::LockError, key::IntoLockKey, lease::Lease};

/// Auto-renewing locks on top of any backend.
///
/// Wraps an `Arc<dyn DistributedLock>`; cheap to clone and share.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), leasehold::LockError> {
/// use leasehold::{memory::MemoryLock, LockOptions, Locker};
///
/// let locker = Locker::new(MemoryLock::new());
/// let guard = locker.lock("nightly-report", LockOptions::default()).await?;
/// println!("holding with fence {}", guard.fence());
/// assert!(locker.try_lock("nightly-report", LockOptions::default()).await?.is_none());
/// assert!(guard.release().await?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Locker {
    backend: Arc<dyn DistributedLock>,
}

impl From<Arc<dyn DistributedLock>> for Locker {
    fn from(backend: Arc<dyn DistributedLock>) -> Self {
        Self { backend }
    }
}

impl Locker {
    /// Wraps a backend.
    pub fn new(backend: impl DistributedLock) -> Self {
        Self {
            backend: Arc::new(backend),
        }
    }

    /// Wraps a shared backend.
    pub fn from_arc(backend: Arc<dyn DistributedLock>) -> Self {
        Self { backend }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn DistributedLock> {
        &self.backend
    }

    /// Takes the lock, waiting up to `options.wait()`, and keeps it renewed.
    ///
    /// # Errors
    ///
    /// [`LockError::Timeout`] when the wait ends, [`LockError::InvalidKey`],
    /// [`LockError::InvalidTtl`] or [`LockError::InvalidConfig`] for bad input, and the backend's
    /// errors.
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedLock::acquire`]: dropping the future while it waits leaves nothing
    /// behind; dropping it during an attempt may leave a lock until its ttl ends.
    pub async fn lock(
        &self,
        key: impl IntoLockKey,
        options: LockOptions,
    ) -> Result<LockGuard, LockError> {
        let key = key.into_lock_key()?;
        let ttl = options.check()?;
        tracing::debug!(key = %key, ?ttl, wait = ?options.wait(), "acquiring lock");
        let started = Instant::now();
        let lease = self.backend.acquire(&key, ttl, options.wait()).await?;
        tracing::debug!(key = %key, fence = lease.fence(), waited = ?started.elapsed(), "lock acquired");
        Ok(self.guard(lease, ttl, &options))
    }

    /// Tries once to take the lock; `Ok(None)` when someone else holds it.
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock), without `Timeout`.
    ///
    /// # Cancel safety
    ///
    /// As [`DistributedLock::try_acquire`].
    pub async fn try_lock(
        &self,
        key: impl IntoLockKey,
        options: LockOptions,
    ) -> Result<Option<LockGuard>, LockError> {
        let key = key.into_lock_key()?;
        let ttl = options.check()?;
        let Some(lease) = self.backend.try_acquire(&key, ttl).await? else {
            tracing::debug!(key = %key, "lock busy");
            return Ok(None);
        };
        tracing::debug!(key = %key, fence = lease.fence(), "lock acquired");
        Ok(Some(self.guard(lease, ttl, &options)))
    }

    /// Runs `body` while holding the lock, then releases it.
    ///
    /// `body` gets a [`LeaseView`] (fence, state, remaining time). If the lease is lost while
    /// the body runs, the body's future is dropped at that point and
    /// [`LockError::LeaseLost`] is returned. The lock is released when the body ends, also
    /// when it panics (the panic then continues). A failed release after a successful body is
    /// logged, not returned: the body's work is done and the lock ends with its ttl.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), leasehold::LockError> {
    /// use leasehold::{memory::MemoryLock, LockOptions, Locker};
    ///
    /// let locker = Locker::new(MemoryLock::new());
    /// let fence = locker
    ///     .with_lock("migration", LockOptions::default(), |lease| async move {
    ///         // ... write to the protected resource, passing lease.fence() along ...
    ///         lease.fence()
    ///     })
    ///     .await?;
    /// assert!(fence > 0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock), and [`LockError::LeaseLost`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the body and the guard, which releases the lock in the
    /// background (see [`LockGuard`]).
    pub async fn with_lock<F, Fut, T>(
        &self,
        key: impl IntoLockKey,
        options: LockOptions,
        body: F,
    ) -> Result<T, LockError>
    where
        F: FnOnce(LeaseView) -> Fut,
        Fut: Future<Output = T>,
    {
        let guard = self.lock(key, options).await?;
        let view = guard.view();
        let outcome = tokio::select! {
            biased;
            outcome = CatchUnwind(Box::pin(body(view.clone()))) => Some(outcome),
            _ = view.lost() => None,
        };
        let key = guard.key().clone();
        let released = guard.release().await;
        match outcome {
            None => Err(LockError::LeaseLost { key }),
            Some(Err(panic)) => panic::resume_unwind(panic),
            Some(Ok(value)) => {
                if let Err(error) = released {
                    tracing::warn!(key = %key, %error, "release after with_lock failed; the lock ends with its ttl");
                }
                Ok(value)
            }
        }
    }

    fn guard(&self, lease: Lease, ttl: std::time::Duration, options: &LockOptions) -> LockGuard {
        let status = Arc::new(watch::Sender::new(Status {
            state: GuardState::Held,
            valid_until: lease.valid_until(),
        }));
        let view = LeaseView::new(lease.key().clone(), lease.fence(), status);
        let (stop, stopped) = oneshot::channel();
        let renewal = Renewal {
            backend: Arc::clone(&self.backend),
            // A cap too large to represent is no cap.
            renew_until: options
                .max_hold()
                .and_then(|cap| Instant::now().checked_add(cap)),
            renew_every: options.renew_every(),
            lease,
            view: view.clone(),
            ttl,
        };
        tokio::spawn(renewal.run(stopped));
        LockGuard {
            view,
            stop: Some(stop),
        }
    }
}

/// Turns a panic in the wrapped future into an `Err`, so the lock can be released before the
/// panic continues.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
