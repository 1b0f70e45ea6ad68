//! [`Locker`]: the entry point of the guard layer.

use std::{
    future::Future,
    panic::{self, AssertUnwindSafe},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::sync::{oneshot, watch};

use super::{
    options::LockOptions,
    renewal::{Primitive, Renewal},
    view::{GuardState, LeaseView, Status},
    LockGuard,
};
use crate::{
    contract::DistributedLock, error::LockError, key::IntoLockKey, lease::Lease,
    release_watch::ReleaseWatch,
};

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
    /// `body` gets a [`LeaseView`] (fence, state, remaining time). `Ok(value)` means the lease
    /// was still held when the body finished: loss is checked while the body runs (its future
    /// is dropped at the loss), again after it finished (a body that blocked its thread, or
    /// became ready in the same poll as the loss), and by the release: a release that finds
    /// the token gone is a loss too, and so is a failed release after a body that outlived the
    /// lease's validity. In all those cases [`LockError::LeaseLost`] is returned and the body's
    /// value, if it finished, is dropped: its work ran, or may have run, without exclusion, so
    /// act on the fence you passed along, not on the value.
    ///
    /// The lock is released when the body ends, also when it panics (the panic then continues).
    /// A failed release after a body that finished within its validity is logged, not
    /// returned: the body's work is done and the lock ends with its ttl.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), leasehold::LockError> {
    /// use leasehold::{memory::MemoryLock, LockError, LockOptions, Locker};
    ///
    /// let locker = Locker::new(MemoryLock::new());
    /// match locker
    ///     .with_lock("migration", LockOptions::default(), |lease| async move {
    ///         // ... write to the protected resource, passing lease.fence() along ...
    ///         lease.fence()
    ///     })
    ///     .await
    /// {
    ///     Ok(fence) => assert!(fence > 0),
    ///     // The work may have overlapped with another holder's: check or redo it.
    ///     Err(LockError::LeaseLost { key }) => eprintln!("lost {key} while migrating"),
    ///     Err(other) => return Err(other),
    /// }
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
        run_body(guard, body).await
    }

    /// The acquire-or-skip form of [`with_lock`](Self::with_lock), for cron-style jobs: makes
    /// one attempt whatever `options.wait()` says; `Ok(None)` when someone else holds the lock
    /// (the body is not run); otherwise runs `body` exactly as `with_lock` does.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), leasehold::LockError> {
    /// use leasehold::{memory::MemoryLock, LockOptions, Locker};
    ///
    /// let locker = Locker::new(MemoryLock::new());
    /// let held = locker.lock("nightly-report", LockOptions::default()).await?;
    /// // Another replica's run is skipped while the report is being written.
    /// let skipped = locker
    ///     .try_with_lock("nightly-report", LockOptions::default(), |_| async { "wrote it" })
    ///     .await?;
    /// assert_eq!(skipped, None);
    /// held.release().await?;
    /// let ran = locker
    ///     .try_with_lock("nightly-report", LockOptions::default(), |_| async { "wrote it" })
    ///     .await?;
    /// assert_eq!(ran, Some("wrote it"));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`try_lock`](Self::try_lock), and [`LockError::LeaseLost`] as for `with_lock`.
    ///
    /// # Cancel safety
    ///
    /// As [`with_lock`](Self::with_lock).
    pub async fn try_with_lock<F, Fut, T>(
        &self,
        key: impl IntoLockKey,
        options: LockOptions,
        body: F,
    ) -> Result<Option<T>, LockError>
    where
        F: FnOnce(LeaseView) -> Fut,
        Fut: Future<Output = T>,
    {
        match self.try_lock(key, options).await? {
            Some(guard) => run_body(guard, body).await.map(Some),
            None => Ok(None),
        }
    }

    fn guard(&self, lease: Lease, ttl: Duration, options: &LockOptions) -> LockGuard {
        let watch = options
            .release_watch()
            .then(|| self.backend.watch_releases(lease.key()))
            .flatten();
        start_guard(
            Primitive::Lock(Arc::clone(&self.backend)),
            lease,
            ttl,
            options,
            watch,
        )
    }
}

/// Starts the renewal of `lease` (checked `ttl`) through `backend` and hands out its guard.
pub(crate) fn start_guard(
    backend: Primitive,
    lease: Lease,
    ttl: Duration,
    options: &LockOptions,
    watch: Option<Box<dyn ReleaseWatch>>,
) -> LockGuard {
    let status = Arc::new(watch::Sender::new(Status {
        state: GuardState::Held,
        validity: lease.validity(),
    }));
    let view = LeaseView::new(lease.key().clone(), lease.fence(), status);
    let (stop, stopped) = oneshot::channel();
    let renewal = Renewal {
        backend,
        // A cap too large to represent is no cap.
        renew_until: options
            .max_hold()
            .and_then(|cap| Instant::now().checked_add(cap)),
        renew_every: options.renew_every(),
        watch,
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

/// Runs `body` under `guard` and releases it; `Ok` only if the lease was held when the body
/// finished (see [`Locker::with_lock`]).
pub(crate) async fn run_body<F, Fut, T>(guard: LockGuard, body: F) -> Result<T, LockError>
where
    F: FnOnce(LeaseView) -> Fut,
    Fut: Future<Output = T>,
{
    let view = guard.view();
    // Loss first: when both are ready in one poll, the body may have finished after the loss.
    let outcome = tokio::select! {
        biased;
        _ = view.lost() => None,
        outcome = CatchUnwind(Box::pin(body(view.clone()))) => Some(outcome),
    };
    // A body that blocked its thread kept the renewal task (and `lost()`) from running: the
    // state and the clock say whether the lease outlived it.
    let held_at_end = matches!(view.state(), GuardState::Held | GuardState::Unknown)
        && view.remaining() > Duration::ZERO;
    let key = guard.key().clone();
    let released = guard.release().await;
    let value = match outcome {
        None => return Err(LockError::LeaseLost { key }),
        Some(Err(panic)) => panic::resume_unwind(panic),
        Some(Ok(value)) => value,
    };
    match released {
        Ok(true) if held_at_end => Ok(value),
        Err(error) if held_at_end => {
            tracing::warn!(key = %key, %error, "release after with_lock failed; the lock ends with its ttl");
            Ok(value)
        }
        Ok(_) | Err(_) => {
            tracing::warn!(key = %key, "the lease was lost before the body of with_lock finished");
            Err(LockError::LeaseLost { key })
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
