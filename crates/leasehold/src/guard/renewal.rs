//! The background task that keeps a guard's lease alive and releases it at the end.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    sync::{oneshot, Notify},
    task::JoinHandle,
};

use super::view::{GuardState, LeaseView};
use crate::{
    backend::wait::jitter, clock::Validity, contract::DistributedLock, error::LockError,
    lease::Lease, release_watch::ReleaseWatch, rwlock::DistributedRwLock,
    semaphore::DistributedSemaphore,
};

/// The primitive a guard's lease belongs to: what its renewal extends and releases through.
#[derive(Debug, Clone)]
pub(crate) enum Primitive {
    Lock(Arc<dyn DistributedLock>),
    Rw(Arc<dyn DistributedRwLock>),
    Semaphore(Arc<dyn DistributedSemaphore>),
}

impl Primitive {
    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        match self {
            Self::Lock(lock) => lock.extend(lease, ttl).await,
            Self::Rw(lock) => lock.extend(lease, ttl).await,
            Self::Semaphore(semaphore) => semaphore.extend(lease, ttl).await,
        }
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        match self {
            Self::Lock(lock) => lock.release(lease).await,
            Self::Rw(lock) => lock.release(lease).await,
            Self::Semaphore(semaphore) => semaphore.release(lease).await,
        }
    }
}

/// A request from [`LockGuard::release`](super::LockGuard::release), answered with the
/// backend's verdict.
pub(crate) type ReleaseReply = oneshot::Sender<Result<bool, LockError>>;

pub(crate) struct Renewal {
    pub(crate) backend: Primitive,
    pub(crate) lease: Lease,
    pub(crate) view: LeaseView,
    pub(crate) ttl: Duration,
    pub(crate) renew_every: Duration,
    pub(crate) renew_until: Option<Instant>,
    /// Announces releases the guard did not make; each one brings the next renewal forward.
    pub(crate) watch: Option<Box<dyn ReleaseWatch>>,
}

/// The shortest time between two checks that a release watch asks for: a listener that keeps
/// reconnecting (or a watch that completes at once, forever) costs at most ten extends a
/// second, and never starves the renewal loop.
const MIN_KICK_GAP: Duration = Duration::from_millis(100);

/// Runs a [`ReleaseWatch`] and turns each of its wakes into a permit on `kick`, which is kept
/// until the renewal loop takes it: a wake during an extend in flight is not lost, and wakes
/// closer together than [`MIN_KICK_GAP`] make one check. Aborted when dropped.
struct Watcher {
    kick: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Watcher {
    fn start(mut watch: Box<dyn ReleaseWatch>) -> Self {
        let kick = Arc::new(Notify::new());
        let task = tokio::spawn({
            let kick = Arc::clone(&kick);
            async move {
                loop {
                    watch.changed().await;
                    kick.notify_one();
                    tokio::time::sleep(MIN_KICK_GAP).await;
                }
            }
        });
        Self { kick, task }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Renewal {
    /// Renews until told to stop (or dropped), then releases.
    ///
    /// The loop never outlives the guard: when the guard goes, `stop` resolves and the task
    /// releases and ends. Every wait is bounded by the lease's validity, so a backend that hangs
    /// cannot keep the guard reporting `Held` past it.
    pub(crate) async fn run(mut self, mut stop: oneshot::Receiver<ReleaseReply>) {
        // Counted from when the acquiring request was sent, like the validity: a slow acquire
        // renews at once rather than after a full period it may not have.
        let mut next_renewal = self.lease.sent_at() + self.renew_every;
        // Set once the backend says the token is gone: releasing is then pointless.
        let mut token_gone = false;
        let mut watcher = self.watch.take().map(Watcher::start);
        let kick = watcher.as_ref().map(|watcher| Arc::clone(&watcher.kick));
        loop {
            let renewing = !self.view.state().is_terminal()
                && self.renew_until.is_none_or(|until| next_renewal < until);
            // Re-checked at least every second: tokio's timers stop during a suspend.
            let check_at = self.lease.validity().next_check();
            tokio::select! {
                biased;
                stop = &mut stop => return self.release(token_gone, stop.ok()).await,
                () = tokio::time::sleep_until(check_at.into()), if renewing => {
                    self.view.expire_if_due();
                    continue;
                }
                () = tokio::time::sleep_until(next_renewal.into()), if renewing => {}
                () = kicked(kick.as_deref()), if renewing => {
                    tracing::debug!(key = %self.lease.key(), fence = self.lease.fence(), "release announced or watch (re)started: checking the lease now");
                }
            }
            let sent_at = Instant::now();
            let validity = self.lease.validity();
            let renewed = tokio::select! {
                biased;
                stop = &mut stop => return self.release(token_gone, stop.ok()).await,
                () = ended(validity) => {
                    self.view.expire_if_due();
                    continue;
                }
                renewed = self.backend.extend(&mut self.lease, self.ttl) => renewed,
            };
            match renewed {
                Ok(true) => {
                    tracing::trace!(key = %self.lease.key(), fence = self.lease.fence(), "lease renewed");
                    self.view
                        .update(GuardState::Held, Some(self.lease.validity()));
                    next_renewal = sent_at + self.renew_every;
                }
                Ok(false) => {
                    token_gone = true;
                    // Nothing left to watch for: end the subscription now, not at the drop.
                    drop(watcher.take());
                    if self.view.update(GuardState::Lost, None) {
                        tracing::warn!(key = %self.lease.key(), fence = self.lease.fence(), "lease no longer held: lock lost");
                    }
                }
                Err(error) => {
                    tracing::warn!(key = %self.lease.key(), fence = self.lease.fence(), %error, "lease renewal failed; retrying");
                    self.view.update(GuardState::Unknown, None);
                    let retry = jitter(self.renew_every / 4).max(Duration::from_millis(1));
                    next_renewal = Instant::now() + retry;
                }
            }
        }
    }

    async fn release(self, token_gone: bool, reply: Option<ReleaseReply>) {
        let outcome = if token_gone {
            Ok(false)
        } else {
            self.backend.release(self.lease).await
        };
        self.view.update(GuardState::Released, None);
        match &outcome {
            Ok(held) => {
                tracing::debug!(key = %self.view.key(), fence = self.view.fence(), held, "lock released")
            }
            Err(error) => {
                tracing::warn!(key = %self.view.key(), %error, "release failed; the lock ends with its ttl")
            }
        }
        if let Some(reply) = reply {
            // The caller may have stopped waiting; the release happened all the same.
            let _ = reply.send(outcome);
        }
    }
}

/// Completes when the release watch asks for a check; never without a watch.
async fn kicked(kick: Option<&Notify>) {
    match kick {
        Some(kick) => kick.notified().await,
        None => std::future::pending().await,
    }
}

/// Completes when `validity` has ended, checking at least every second.
async fn ended(validity: Validity) {
    while !validity.remaining().is_zero() {
        tokio::time::sleep_until(validity.next_check().into()).await;
    }
}
