//! Deadlines, jitter and the polling fallback for [`DistributedLock::acquire`].
//!
//! Backend authors use these to wait the way every backend waits: never past the caller's
//! deadline, with jittered retries so contenders do not move in lockstep.

use std::{
    collections::hash_map::RandomState,
    future::Future,
    hash::{BuildHasher, Hasher},
    time::{Duration, Instant},
};

use tokio::sync::futures::OwnedNotified;

use crate::{contract::DistributedLock, error::LockError, key::LockKey, lease::Lease};

/// The first pause of [`poll_acquire`]'s backoff.
pub const POLL_FIRST: Duration = Duration::from_millis(5);
/// The longest pause of [`poll_acquire`]'s backoff.
pub const POLL_MAX: Duration = Duration::from_millis(250);

/// The end of a wait that started at [`Deadline::after`].
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    started: Instant,
    at: Option<Instant>,
}

impl Deadline {
    /// A deadline `wait` from now; `None` inside when `wait` is too large to represent ("forever").
    pub fn after(wait: Duration) -> Self {
        let started = Instant::now();
        Self {
            started,
            at: started.checked_add(wait),
        }
    }

    /// The deadline, or `None` for no deadline.
    pub fn at(&self) -> Option<Instant> {
        self.at
    }

    /// Whether the deadline has passed.
    pub fn has_passed(&self) -> bool {
        self.at.is_some_and(|at| Instant::now() >= at)
    }

    /// The earlier of `instant` and the deadline.
    pub fn cap(&self, instant: Instant) -> Instant {
        self.at.map_or(instant, |at| at.min(instant))
    }

    /// The [`LockError::Timeout`] for `key`, with the time waited so far.
    pub fn timeout(&self, key: &LockKey) -> LockError {
        LockError::Timeout {
            key: key.clone(),
            waited: self.started.elapsed(),
        }
    }
}

/// Decides what a waiting `acquire` does with a failed attempt: keep waiting through a
/// transient failure (remembered in `last_failure`, to return if the deadline passes while the
/// server is still failing), end the wait on anything else.
///
/// # Errors
///
/// `error` itself when it is not transient, or is a [`LockError::Timeout`].
pub fn keep_waiting(
    error: LockError,
    last_failure: &mut Option<LockError>,
) -> Result<(), LockError> {
    if matches!(error, LockError::Timeout { .. }) || !error.is_transient() {
        return Err(error);
    }
    tracing::debug!(%error, "lock attempt failed; retrying until the deadline");
    *last_failure = Some(error);
    Ok(())
}

/// A random duration between `base / 2` and `base`, so that retrying clients spread out.
pub fn jitter(base: Duration) -> Duration {
    // RandomState is seeded per instance from the OS generator: enough randomness for spreading
    // retries without another dependency.
    let random = RandomState::new().build_hasher().finish();
    let half = base / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(if nanos == 0 { 0 } else { random % (nanos + 1) })
}

/// Acquires by polling `try_acquire`: the default of [`DistributedLock::acquire`].
///
/// Tries at once, then after jittered pauses that double from [`POLL_FIRST`] up to
/// [`POLL_MAX`], and once more at the deadline; never sleeps past the deadline. Transient
/// failures are retried (see [`keep_waiting`]).
///
/// # Errors
///
/// [`LockError::Timeout`] when the deadline passes; the last transient error instead if the
/// deadline passes while attempts are failing; any other error of `try_acquire` at once.
///
/// # Cancel safety
///
/// As [`DistributedLock::try_acquire`]: nothing is left behind while sleeping.
pub async fn poll_acquire<L: DistributedLock + ?Sized>(
    lock: &L,
    key: &LockKey,
    ttl: Duration,
    wait: Duration,
) -> Result<Lease, LockError> {
    poll(key, wait, || lock.try_acquire(key, ttl)).await
}

/// The loop of [`poll_acquire`] around any single try (a read, a write, a permit): tries at
/// once, then after jittered, doubling pauses, and once more at the deadline.
///
/// # Errors
///
/// As [`poll_acquire`].
///
/// # Cancel safety
///
/// As `try_once`: nothing is left behind while sleeping.
pub async fn poll<T, TFut>(
    key: &LockKey,
    wait: Duration,
    mut try_once: T,
) -> Result<Lease, LockError>
where
    T: FnMut() -> TFut,
    TFut: Future<Output = Result<Option<Lease>, LockError>>,
{
    let deadline = Deadline::after(wait);
    let mut pause = POLL_FIRST;
    let mut failure = None;
    loop {
        match try_once().await {
            Ok(Some(lease)) => return Ok(lease),
            Ok(None) => failure = None,
            Err(error) => keep_waiting(error, &mut failure)?,
        }
        if deadline.has_passed() {
            return Err(failure.unwrap_or_else(|| deadline.timeout(key)));
        }
        let wake = deadline.cap(Instant::now() + jitter(pause));
        tokio::time::sleep_until(wake.into()).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// Cleans up after an acquisition whose outcome is unknown.
///
/// Arm it with the token-checked release of an attempt's token *before* the attempt is sent;
/// [`disarm`](Self::disarm) it once the reply says for sure whether the lock was taken. Dropped
/// while armed (the caller's future was dropped, or the attempt failed in a way that leaves its
/// outcome open: a reply timeout, a lost connection, a script that failed after its write), it
/// spawns the cleanup on the current tokio runtime, so a lock the request took anyway is freed
/// at once instead of lingering, held by a token nobody knows, until its ttl ends.
///
/// Where no cleanup can run (no runtime, the runtime shutting down, the process killed, the
/// server unreachable for longer than the cleanup's own request timeout), the lock ends with
/// its ttl.
pub struct InFlight<F, Fut>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    cleanup: Option<F>,
}

impl<F, Fut> std::fmt::Debug for InFlight<F, Fut>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("armed", &self.cleanup.is_some())
            .finish()
    }
}

impl<F, Fut> InFlight<F, Fut>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    /// Armed with `cleanup`, which makes the future that releases the attempt's token.
    pub fn new(cleanup: F) -> Self {
        Self {
            cleanup: Some(cleanup),
        }
    }

    /// The outcome is known: no cleanup.
    pub fn disarm(mut self) {
        self.cleanup = None;
    }
}

impl<F, Fut> Drop for InFlight<F, Fut>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn drop(&mut self) {
        let Some(cleanup) = self.cleanup.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(cleanup())),
            Err(_) => tracing::debug!(
                "no tokio runtime to clean up an abandoned acquisition; it ends with its ttl"
            ),
        }
    }
}

/// The cleanup an [`InFlight`] runs: `release` (a token-checked release of the abandoned
/// attempt's token, answering whether it freed the key) once, and, if it freed nothing and
/// `retry_after` is given, once more after that pause. The second try is for stores where the
/// cleanup runs on another connection than the abandoned request and may overtake it; a
/// request delayed even longer still ends with its ttl. Failures are logged, never returned.
pub async fn release_abandoned<R, RFut>(key: LockKey, retry_after: Option<Duration>, mut release: R)
where
    R: FnMut() -> RFut,
    RFut: Future<Output = Result<bool, LockError>>,
{
    let tries = if retry_after.is_some() { 2 } else { 1 };
    for round in 0..tries {
        if let (true, Some(pause)) = (round > 0, retry_after) {
            tokio::time::sleep(pause).await;
        }
        match release().await {
            Ok(true) => {
                tracing::debug!(key = %key, "released a lock whose acquisition was abandoned");
                return;
            }
            Ok(false) => {}
            Err(error) => {
                tracing::debug!(key = %key, %error, "cleanup of an abandoned acquisition failed; it ends with its ttl")
            }
        }
    }
}

/// The answer of an attempt that runs to its end on a task of its own (a transaction that must
/// not be cut off halfway), for the caller to wait on.
///
/// The task sends its outcome on a oneshot channel; if the caller is gone by then, the send
/// fails and the task cleans up itself. That leaves one gap, which this closes: the send
/// succeeded but the caller's future was dropped before it read the value (a timeout that
/// fired in the same instant). Dropped unread, a `TaskReply` closes the channel and hands a
/// value that did arrive to `lost` (which releases what it won), so exactly one of the two
/// sides cleans up.
pub struct TaskReply<T: Send + 'static> {
    reply: Option<tokio::sync::oneshot::Receiver<T>>,
    lost: Option<Box<dyn FnOnce(T) + Send>>,
}

impl<T: Send + 'static> std::fmt::Debug for TaskReply<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskReply")
            .field("waiting", &self.reply.is_some())
            .finish()
    }
}

impl<T: Send + 'static> TaskReply<T> {
    /// Waits on `reply`; a value left unread goes to `lost`.
    pub fn new(
        reply: tokio::sync::oneshot::Receiver<T>,
        lost: impl FnOnce(T) + Send + 'static,
    ) -> Self {
        Self {
            reply: Some(reply),
            lost: Some(Box::new(lost)),
        }
    }

    /// The task's answer; `None` if the task ended without one.
    ///
    /// # Cancel safety
    ///
    /// Dropped while waiting, the answer (if the task sends it) is cleaned up: by `lost`, or by
    /// the task when its send fails.
    pub async fn get(mut self) -> Option<T> {
        let reply = self.reply.as_mut()?;
        let answer = reply.await.ok();
        self.reply = None;
        answer
    }
}

impl<T: Send + 'static> Drop for TaskReply<T> {
    fn drop(&mut self) {
        let Some(mut reply) = self.reply.take() else {
            return;
        };
        reply.close();
        if let (Ok(answer), Some(lost)) = (reply.try_recv(), self.lost.take()) {
            lost(answer);
        }
    }
}

/// One attempt of a waiting acquire: the lease, or the holder's remaining time when known.
pub type Outcome = Result<Lease, Option<Duration>>;

/// The wait loop of backends that learn about releases by notification (a pub/sub channel,
/// `LISTEN`), shared so that every such backend waits the same way.
///
/// Each round: make sure notifications are flowing (bounded by the deadline and by `fallback`,
/// so a subscription that hangs never stops the polling), create the wake-up
/// future *before* the attempt (so a release right after it still wakes us), attempt, then sleep
/// until a notification, the holder's remaining time, or a jittered timer: `fallback` while
/// notifications flow (in case one is lost), `poll` while they do not or attempts are failing.
/// Never past the deadline; transient failures are retried as [`keep_waiting`] decides.
#[derive(Debug, Clone, Copy)]
pub struct NotifiedWait {
    /// The longest sleep between attempts while notifications flow (jittered down to half),
    /// and the longest a round waits for a subscription to be confirmed.
    pub fallback: Duration,
    /// The sleep between attempts without notifications (jittered down to half).
    pub poll: Duration,
}

impl NotifiedWait {
    /// Runs the loop after a first attempt found `key` busy (or failed transiently: pass that
    /// error as `failure`).
    ///
    /// `listening` says whether notifications flow (it may wait to find out); `next_wake`
    /// registers for the next notification (`None` without a notification source); `attempt`
    /// tries once.
    ///
    /// # Errors
    ///
    /// [`LockError::Timeout`] at the deadline, the last transient error instead if attempts were
    /// failing then, and any other error of `attempt` at once.
    ///
    /// # Cancel safety
    ///
    /// As the backend's `attempt`: nothing is left behind while sleeping.
    pub async fn run<L, LFut, A, AFut>(
        &self,
        key: &LockKey,
        deadline: &Deadline,
        mut failure: Option<LockError>,
        mut listening: L,
        next_wake: impl Fn() -> Option<OwnedNotified>,
        mut attempt: A,
    ) -> Result<Lease, LockError>
    where
        L: FnMut() -> LFut,
        LFut: Future<Output = bool>,
        A: FnMut() -> AFut,
        AFut: Future<Output = Result<Outcome, LockError>>,
    {
        // Whether the last round had notifications flowing.
        let mut flowing = true;
        loop {
            if deadline.has_passed() {
                return Err(failure.unwrap_or_else(|| deadline.timeout(key)));
            }
            // Bounded, so a subscription that cannot be made (a half-open connection, a server
            // that does not answer) delays no attempt by more than one fallback period, and by
            // no more than one poll period once it has failed.
            let confirm_for = if flowing { self.fallback } else { self.poll };
            let confirm_by = deadline.cap(Instant::now() + confirm_for);
            let notified = tokio::time::timeout_at(confirm_by.into(), listening())
                .await
                .unwrap_or(false);
            flowing = notified;
            let wake = next_wake();
            let holder_left = match attempt().await {
                Ok(Ok(lease)) => return Ok(lease),
                Ok(Err(left)) => {
                    failure = None;
                    left
                }
                Err(error) => {
                    keep_waiting(error, &mut failure)?;
                    None
                }
            };
            if deadline.has_passed() {
                return Err(failure.unwrap_or_else(|| deadline.timeout(key)));
            }
            let healthy = notified && failure.is_none();
            let retry = jitter(if healthy { self.fallback } else { self.poll });
            let retry =
                holder_left.map_or(retry, |left| retry.min(left + Duration::from_millis(1)));
            let wake_at = deadline.cap(Instant::now() + retry);
            match wake {
                Some(wake) if healthy => tokio::select! {
                    () = wake => {}
                    () = tokio::time::sleep_until(wake_at.into()) => {}
                },
                _ => tokio::time::sleep_until(wake_at.into()).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_full() {
        let base = Duration::from_millis(100);
        for _ in 0..1000 {
            let j = jitter(base);
            assert!(j >= base / 2 && j <= base, "{j:?}");
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn huge_waits_mean_no_deadline() {
        let deadline = Deadline::after(Duration::MAX);
        assert!(deadline.at().is_none());
        assert!(!deadline.has_passed());
        assert!(Deadline::after(Duration::ZERO).has_passed());
    }
}
