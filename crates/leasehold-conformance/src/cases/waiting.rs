//! Waiting acquires: hand-off, deadlines, cancellation.

use std::{sync::Arc, time::Duration};

use leasehold::{DistributedLock, LockError};
use tokio::time::{sleep, timeout, Instant};

use super::edges::spawn_waiter;
use crate::support::{expiry_slack, ok, take, unique_key, wait_until_free};

const LONG: Duration = Duration::from_secs(10);

/// How soon, at the median, a waiter must get a released lock: backends that claim notified
/// waiting get a tight bound (a notification and one round trip take a few ms), pollers a
/// looser one. Both are generous for a loaded 2-core machine.
fn hand_off_bound(lock: &dyn DistributedLock) -> Duration {
    if lock.capabilities().notified_wait {
        Duration::from_millis(50)
    } else {
        Duration::from_millis(1_000)
    }
}

/// A waiting `acquire` gets the lock soon after the holder releases it, round after round (the
/// median of five hand-offs is held to the bound, not the best one).
pub async fn waiting_acquire_gets_lock_soon_after_release(lock: Arc<dyn DistributedLock>) {
    let case = "waiting_acquire_gets_lock_soon_after_release";
    let key = unique_key(case, "k");
    let bound = hand_off_bound(&*lock);
    let mut hand_offs = Vec::new();
    for _ in 0..5 {
        let held = take(&*lock, case, &key, LONG).await;
        let waiter = spawn_waiter(&lock, &key, LONG);
        sleep(Duration::from_millis(300)).await;
        assert!(
            !waiter.is_finished(),
            "[{case}] acquire returned while the key was held"
        );
        let released_at = Instant::now();
        assert!(ok(case, "release", lock.release(held).await));
        let (got_at, lease) = waiter.await.expect("waiter task panicked");
        let lease = ok(case, "waiting acquire", lease);
        hand_offs.push(got_at.saturating_duration_since(released_at));
        ok(case, "release", lock.release(lease).await);
    }
    hand_offs.sort_unstable();
    let median = hand_offs[hand_offs.len() / 2];
    assert!(
        median < bound,
        "[{case}] hand-off median {median:?} over {hand_offs:?}, bound {bound:?}"
    );
}

/// A waiting `acquire` gives up at its deadline with `Timeout`, not much later.
pub async fn waiting_acquire_honours_deadline(lock: Arc<dyn DistributedLock>) {
    let case = "waiting_acquire_honours_deadline";
    let key = unique_key(case, "k");
    let held = take(&*lock, case, &key, LONG).await;
    let wait = Duration::from_millis(400);
    let started = Instant::now();
    let outcome = lock.acquire(&key, LONG, wait).await;
    let took = started.elapsed();
    match outcome {
        Err(LockError::Timeout { key: got, waited }) => {
            assert_eq!(got, key, "[{case}] Timeout names the wrong key");
            assert!(
                waited >= wait,
                "[{case}] Timeout reports waiting {waited:?} < {wait:?}"
            );
        }
        other => panic!("[{case}] expected Timeout, got {other:?}"),
    }
    assert!(
        took >= wait,
        "[{case}] gave up after {took:?}, before the {wait:?} deadline"
    );
    assert!(
        took < wait + Duration::from_millis(1_000),
        "[{case}] gave up only after {took:?} for a {wait:?} wait"
    );
    // A zero wait is one attempt.
    let started = Instant::now();
    let zero = lock.acquire(&key, LONG, Duration::ZERO).await;
    assert!(
        matches!(zero, Err(LockError::Timeout { .. })),
        "[{case}] zero wait: {zero:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "[{case}] a zero wait took {:?}",
        started.elapsed()
    );
    ok(case, "release", lock.release(held).await);
}

/// A waiter gets the lock when the holder's ttl ends, without anyone releasing it.
pub async fn waiting_acquire_gets_lock_when_holder_expires(lock: Arc<dyn DistributedLock>) {
    let case = "waiting_acquire_gets_lock_when_holder_expires";
    let key = unique_key(case, "k");
    let _abandoned = take(&*lock, case, &key, Duration::from_millis(500)).await;
    let started = Instant::now();
    let lease = ok(
        case,
        "waiting acquire",
        lock.acquire(&key, LONG, LONG).await,
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2_000) + expiry_slack(&*lock),
        "[{case}] the waiter got a lock abandoned with a 500 ms ttl only after {took:?}"
    );
    ok(case, "release", lock.release(lease).await);
}

/// Dropping `acquire` or `try_acquire` futures at any point leaves no lock held beyond its ttl.
pub async fn dropped_acquire_leaves_no_lock_beyond_its_ttl(lock: Arc<dyn DistributedLock>) {
    let case = "dropped_acquire_leaves_no_lock_beyond_its_ttl";
    let ttl = Duration::from_millis(500);
    // Dropped mid-wait: the key is free as soon as the holder releases.
    let key = unique_key(case, "waiting");
    let held = take(&*lock, case, &key, LONG).await;
    let dropped = timeout(Duration::from_millis(200), lock.acquire(&key, ttl, LONG)).await;
    assert!(
        dropped.is_err(),
        "[{case}] acquire of a held key finished: {dropped:?}"
    );
    ok(case, "release", lock.release(held).await);
    assert!(
        wait_until_free(
            &*lock,
            case,
            &key,
            ttl + Duration::from_millis(1_500) + expiry_slack(&*lock)
        )
        .await
        .is_some(),
        "[{case}] a dropped waiting acquire left the key held past its ttl"
    );
    // Dropped at assorted points of an attempt on a free key.
    let key = unique_key(case, "attempts");
    for step in 0..20u64 {
        let cut = Duration::from_micros(step * 150);
        let _ = timeout(cut, lock.try_acquire(&key, ttl)).await;
        let _ = timeout(cut, lock.acquire(&key, ttl, LONG)).await;
    }
    assert!(
        wait_until_free(
            &*lock,
            case,
            &key,
            ttl + Duration::from_millis(1_500) + expiry_slack(&*lock)
        )
        .await
        .is_some(),
        "[{case}] dropped attempts left the key held past their ttl"
    );
}
