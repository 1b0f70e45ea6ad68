//! The contract at its edges: validity honoured to its last moment, waits that never cut an
//! attempt short, no ghost after a timeout, waiting that survives a lost notification.

use std::{sync::Arc, time::Duration};

use leasehold::{DistributedLock, Lease, LockError, LockKey};
use tokio::time::{sleep, sleep_until, Instant};

use crate::support::{ok, take, unique_key};

const LONG: Duration = Duration::from_secs(10);

/// How long before `valid_until` a probe must still find the key held.
fn probe_margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(150))
}

/// Probes `key` from the caller's side just before `lease` ends: it must be held. `false` when
/// the probe could not be sent in time (a stalled scheduler), so the caller tries again.
async fn held_until_end(lock: &dyn DistributedLock, case: &str, lease: &Lease, what: &str) -> bool {
    let margin = probe_margin(lease.ttl());
    let probe_at = lease.valid_until() - margin;
    sleep_until(probe_at.into()).await;
    let sent = std::time::Instant::now();
    let probe = ok(
        case,
        "probing try_acquire",
        lock.try_acquire(lease.key(), LONG).await,
    );
    let in_time = sent + margin / 2 <= lease.valid_until();
    if let Some(probe) = probe {
        ok(case, "releasing the probe", lock.release(probe).await);
        if !in_time {
            return false;
        }
        let early = lease.valid_until().saturating_duration_since(sent);
        panic!("[{case}] the key was free {early:?} before the lease's valid_until ({what})");
    }
    in_time
}

/// The key stays held until just before the lease's own `valid_until`, also after an extend:
/// the store enforces at least the ttl the lease promises.
pub async fn key_stays_held_until_valid_until(lock: Arc<dyn DistributedLock>) {
    let case = "key_stays_held_until_valid_until";
    let ttl = Duration::from_millis(1_200);
    // A probe that could not be sent in time proves nothing: try again, a few times.
    for round in 0..3 {
        let key = unique_key(case, &format!("r{round}"));
        let mut lease = take(&*lock, case, &key, ttl).await;
        let mut in_time = held_until_end(&*lock, case, &lease, "after acquire").await;
        if in_time {
            assert!(
                ok(case, "extend", lock.extend(&mut lease, ttl).await),
                "[{case}] extend of a held lease returned false"
            );
            in_time = held_until_end(&*lock, case, &lease, "after extend").await;
        }
        ok(case, "release", lock.release(lease).await);
        if in_time {
            return;
        }
    }
    panic!("[{case}] no probe could be sent in time in 3 rounds: the machine is too loaded");
}

/// `acquire` on a free key succeeds every time with a zero wait (exactly one complete attempt)
/// and with a 2 ms wait: a deadline bounds the waiting, never an attempt in flight.
pub async fn zero_and_short_waits_take_a_free_key(lock: Arc<dyn DistributedLock>) {
    let case = "zero_and_short_waits_take_a_free_key";
    const ROUNDS: usize = 50;
    for wait in [Duration::ZERO, Duration::from_millis(2)] {
        let mut timeouts = 0;
        for round in 0..ROUNDS {
            let key = unique_key(case, &format!("{}ms-{round}", wait.as_millis()));
            match lock.acquire(&key, LONG, wait).await {
                Ok(lease) => {
                    ok(case, "release", lock.release(lease).await);
                }
                Err(LockError::Timeout { .. }) => timeouts += 1,
                Err(error) => panic!("[{case}] acquire with a {wait:?} wait failed: {error}"),
            }
        }
        assert_eq!(
            timeouts, 0,
            "[{case}] {timeouts} of {ROUNDS} acquires of a free key with a {wait:?} wait timed out"
        );
    }
}

/// A waiter whose deadline falls around the holder's release either gets the lock or times out
/// leaving nothing behind: right after its `Timeout`, another client gets the key.
pub async fn waiter_timing_out_around_a_release_leaves_no_ghost(lock: Arc<dyn DistributedLock>) {
    let case = "waiter_timing_out_around_a_release_leaves_no_ghost";
    let wait = Duration::from_millis(150);
    let (mut timeouts, mut ghosts) = (0, Vec::new());
    for round in 0..24u64 {
        let key = unique_key(case, &format!("r{round}"));
        let held = take(&*lock, case, &key, LONG).await;
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let waiter = {
            let (lock, key) = (Arc::clone(&lock), key.clone());
            tokio::spawn(async move {
                let _ = started_tx.send(Instant::now());
                lock.acquire(&key, LONG, wait).await
            })
        };
        // Releases from 12 ms before the waiter's deadline to 12 ms after it, counted from
        // when the waiter really started (a loaded machine may start it late).
        let started = started.await.expect("waiter task ended before it started");
        sleep_until(started + wait - Duration::from_millis(12) + Duration::from_millis(round))
            .await;
        ok(case, "release", lock.release(held).await);
        match waiter.await.expect("waiter task panicked") {
            Ok(lease) => {
                ok(case, "release", lock.release(lease).await);
            }
            Err(LockError::Timeout { .. }) => {
                timeouts += 1;
                match ok(
                    case,
                    "try_acquire after the timeout",
                    lock.try_acquire(&key, LONG).await,
                ) {
                    Some(lease) => {
                        ok(case, "release", lock.release(lease).await);
                    }
                    None => ghosts.push(round),
                }
            }
            Err(error) => panic!("[{case}] waiting acquire failed: {error}"),
        }
    }
    assert!(
        ghosts.is_empty(),
        "[{case}] after {timeouts} timeouts, the key was still held right after the timeout in \
         rounds {ghosts:?}: a cut-off attempt landed as a lock nobody knows"
    );
}

/// A waiter gets the key when it becomes free without any release message: here the holder
/// shortens its lease by an extend and lets it run out, so only the waiter's own fallback
/// (polling, or re-checking at the holder's new expiry) can find it.
pub async fn waiter_gets_the_key_without_a_release_notification(lock: Arc<dyn DistributedLock>) {
    let case = "waiter_gets_the_key_without_a_release_notification";
    let key = unique_key(case, "k");
    let mut held = take(&*lock, case, &key, Duration::from_secs(30)).await;
    let waiter = spawn_waiter(&lock, &key, Duration::from_secs(20));
    sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "[{case}] acquire returned while the key was held"
    );
    let short = Duration::from_millis(300);
    assert!(
        ok(
            case,
            "shortening extend",
            lock.extend(&mut held, short).await
        ),
        "[{case}] extend of a held lease returned false"
    );
    let free_from = Instant::now() + short;
    let (got_at, lease) = waiter.await.expect("waiter task panicked");
    let lease = ok(case, "waiting acquire", lease);
    let late = got_at.saturating_duration_since(free_from);
    let bound = Duration::from_millis(2_500);
    assert!(
        late < bound,
        "[{case}] the waiter got the key {late:?} after it became free (bound {bound:?}): \
         waiting relies on release messages alone"
    );
    ok(case, "release", lock.release(lease).await);
}

/// A waiting `acquire` of `key`, and when it returned.
pub(crate) fn spawn_waiter(
    lock: &Arc<dyn DistributedLock>,
    key: &LockKey,
    wait: Duration,
) -> tokio::task::JoinHandle<(Instant, Result<Lease, LockError>)> {
    let (lock, key) = (Arc::clone(lock), key.clone());
    tokio::spawn(async move {
        let lease = lock.acquire(&key, LONG, wait).await;
        (Instant::now(), lease)
    })
}
