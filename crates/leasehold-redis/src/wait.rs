//! A waiting acquire on Redis: its place among the lock's waiters, counted in the lock's
//! "wanted" mark so that releases publish (and reserve the lock for waiters) only while
//! someone waits.

use std::{
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    time::Duration,
};

use leasehold::{
    backend::wait::{keep_waiting, Deadline, NotifiedWait, Outcome},
    LockError, LockKey,
};

use crate::{
    error::map,
    keys::LockNames,
    lock::{Asking, RedisLock, HANDOFF_MS},
    scripts,
    subscriber::Watch,
};

/// How waiters wait: at most 0.25-0.5 s between attempts while subscribed (in case a release
/// message was lost), 25-50 ms without a working subscription.
const WAIT: NotifiedWait = NotifiedWait {
    fallback: Duration::from_millis(500),
    poll: Duration::from_millis(50),
};

/// How long a waiting acquire holds back its first attempt after its own release reserved the
/// lock for other waiters (at most the reservation): the waiter the release wakes tries
/// within a fraction of a millisecond, and an attempt sent at once would only sit in front of
/// it at the server.
const HAND_OFF_PAUSE: Duration = Duration::from_millis(1);

/// One waiting acquire's standing: whether the mark counts it (so it must take itself out
/// when it leaves without the lock), and whether a reservation for waiters is for it.
struct Place<'a> {
    lock: &'a RedisLock,
    names: &'a LockNames,
    /// Whether waiting attempts count themselves in the mark: only while the lock's channel is
    /// subscribed (without that, nobody would hear the releases the count makes publish, and
    /// reservations would only keep newcomers out), and not for a zero wait.
    joins: AtomicBool,
    /// Set before an attempt that may count it in is sent, so a reply that is lost or a
    /// future dropped in flight still takes it out again: the count can only drift low
    /// (costing waiters their wake-ups until they leave), never high (which would make releases
    /// reserve the lock for nobody).
    counted: AtomicBool,
    /// Attempts made so far: from the third on it has slept since it was refused, so a
    /// reservation for waiters is for it too.
    attempts: AtomicU32,
    deadline: &'a Deadline,
}

impl Place<'_> {
    fn asking(&self) -> Asking {
        let attempts = self.attempts.fetch_add(1, Ordering::Relaxed);
        Asking {
            wanted: self.joins.load(Ordering::Relaxed),
            counted: self.counted.load(Ordering::Relaxed),
            // The first two attempts (the first, and the loop's own right after it, so that a
            // release in between is not missed) have not slept yet.
            waited: attempts >= 2,
        }
    }

    async fn attempt(&self, key: &LockKey, ttl: Duration) -> Result<Outcome, LockError> {
        let asking = self.asking();
        if !asking.waited && !self.deadline.has_passed() {
            // Our own release just reserved the lock for the waiters that were there before
            // us: the server would refuse this attempt.
            if let Some(left) = self.lock.inner.handoffs.pending(&self.names.lock) {
                if asking.counted {
                    return Ok(Err(Some(left)));
                }
                // Not counted yet, so it must ask (to be counted); but not in front of the
                // waiter's own attempt, which the release message is waking now.
                let pause = left.min(HAND_OFF_PAUSE);
                let until = self.deadline.cap(std::time::Instant::now() + pause);
                tokio::time::sleep_until(until.into()).await;
            }
        }
        if asking.wanted {
            self.counted.store(true, Ordering::Relaxed);
        }
        let outcome = self
            .lock
            .wait_attempt(key, self.names, ttl, asking, &self.counted)
            .await;
        match outcome {
            // Won: the script took it out of the count (or never counted it in), and a
            // reservation is over.
            Ok(Ok(lease)) => {
                self.counted.store(false, Ordering::Relaxed);
                self.lock.inner.handoffs.taken(&self.names.lock);
                Ok(Ok(lease))
            }
            // Refused by a reservation or a holder alike, it waits its turn: the release
            // message that comes with a reservation wakes a waiter of this process (the longest
            // waiting, which may be this one: its wake-up was registered before this attempt),
            // and that one takes it. Taking it on an attempt that has not slept would let a
            // waiter that came later cut in before the longest waiting.
            Ok(Err(left)) => {
                if left.is_some_and(|left| left > Duration::from_millis(HANDOFF_MS)) {
                    // Held by someone (longer than any reservation): ours is over.
                    self.lock.inner.handoffs.taken(&self.names.lock);
                }
                Ok(Err(left))
            }
            Err(error) => Err(error),
        }
    }

    /// Takes this waiter out of the count (it leaves without the lock), giving up a
    /// reservation nobody is left to take. After a timeout (the server answered the last
    /// attempt) it waits for that up to [`LEAVE_WAIT`], so a caller that tries again at once
    /// finds no reservation for a waiter that is gone; after an error it does not wait (the
    /// server is failing). Past that it goes on in the background.
    async fn leave(&self, outcome: &Result<leasehold::Lease, LockError>) {
        if !self.counted.swap(false, Ordering::Relaxed) {
            return;
        }
        let leaving = spawn_leave(self.lock, self.names);
        if matches!(outcome, Err(LockError::Timeout { .. })) {
            let _ = tokio::time::timeout(LEAVE_WAIT, leaving).await;
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        // Dropped while counted (the caller gave up): leave in the background.
        if *self.counted.get_mut() && tokio::runtime::Handle::try_current().is_ok() {
            drop(spawn_leave(self.lock, self.names));
        }
    }
}

/// How long a waiter that leaves without the lock waits for its leave to land.
const LEAVE_WAIT: Duration = Duration::from_millis(250);

/// Runs `scripts/leave.lua` on a task of its own (on the current runtime, which the caller
/// makes sure exists); failures are logged: the mark then lasts until it expires.
fn spawn_leave(lock: &RedisLock, names: &LockNames) -> tokio::task::JoinHandle<()> {
    let (lock, names) = (lock.clone(), names.clone());
    tokio::spawn(async move {
        let mut conn = lock.inner.conn.clone();
        let eval = scripts::evalsha(&scripts::LEAVE, &[&names.lock, &names.wanted()]);
        let left: Result<i64, _> = scripts::run(
            &mut conn,
            &scripts::LEAVE,
            &names.lock,
            &eval,
            lock.inner.call_timeout,
        )
        .await;
        if let Err(error) = left.map_err(map) {
            tracing::debug!(%error, "a waiter could not take itself out of the lock's mark; it lasts until it expires");
        }
    })
}

impl RedisLock {
    /// The body of [`acquire`](leasehold::DistributedLock::acquire): see there.
    pub(crate) async fn wait_for(
        &self,
        key: &LockKey,
        ttl: Duration,
        deadline: &Deadline,
    ) -> Result<leasehold::Lease, LockError> {
        let names = self.names(key);
        let place = Place {
            lock: self,
            names: &names,
            // Counted in from the first attempt made while the lock's channel is subscribed
            // (already, for another waiter of this client; or once the loop has subscribed):
            // a release before that could not wake this waiter, so it must not reserve the
            // lock for it either. A zero wait counts no one.
            joins: AtomicBool::new(
                !deadline.has_passed()
                    && self
                        .inner
                        .subscriber
                        .as_ref()
                        .is_some_and(|s| s.is_subscribed(&names.channel())),
            ),
            counted: AtomicBool::new(false),
            attempts: AtomicU32::new(0),
            deadline,
        };
        let mut failure = None;
        match place.attempt(key, ttl).await {
            Ok(Ok(lease)) => return Ok(lease),
            Ok(Err(_)) => {}
            Err(error) => {
                if let Err(error) = keep_waiting(error, &mut failure) {
                    let outcome = Err(error);
                    place.leave(&outcome).await;
                    return outcome;
                }
            }
        }
        tracing::trace!(key = %key, "lock busy; waiting for its release");
        let watch = self
            .inner
            .subscriber
            .as_ref()
            .map(|s| s.watch(&names.channel()));
        let watch = watch.as_ref();
        let place = &place;
        let outcome = WAIT
            .run(
                key,
                deadline,
                failure,
                move || async move {
                    let subscribed = match watch {
                        Some(watch) => watch.subscribed().await,
                        None => false,
                    };
                    place.joins.store(subscribed, Ordering::Relaxed);
                    subscribed
                },
                || watch.map(Watch::next_wake),
                || place.attempt(key, ttl),
            )
            .await;
        if outcome.is_err() {
            place.leave(&outcome).await;
        }
        outcome
    }
}
