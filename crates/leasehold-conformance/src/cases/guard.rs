//! The guard layer on top of the backend: renewal, loss, `with_lock`, drop.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use leasehold::{DistributedLock, GuardState, LockError, LockOptions, Locker};
use tokio::time::{sleep, timeout, Instant};

use crate::support::{expiry_slack, is_held, ok, unique_key, wait_until_free, Spy};

fn short_options() -> LockOptions {
    LockOptions::default()
        .with_ttl(Duration::from_millis(600))
        .with_renew_every(Duration::from_millis(150))
        .with_wait(Duration::from_secs(5))
}

/// A guard keeps its lock across several ttls by renewing it.
pub async fn guard_renewal_keeps_lock_for_several_ttls(lock: Arc<dyn DistributedLock>) {
    let case = "guard_renewal_keeps_lock_for_several_ttls";
    let key = unique_key(case, "k");
    let locker = Locker::from_arc(Arc::clone(&lock));
    let guard = ok(case, "lock", locker.lock(&key, short_options()).await);
    for _ in 0..6 {
        sleep(Duration::from_millis(400)).await;
        assert!(
            is_held(&*lock, case, &key).await,
            "[{case}] the lock ended while the guard renewed it"
        );
        assert_eq!(guard.state(), GuardState::Held, "[{case}] guard state");
        assert!(
            guard.remaining() > Duration::ZERO,
            "[{case}] a held guard has no time left"
        );
    }
    assert!(
        ok(case, "release", guard.release().await),
        "[{case}] release of a renewed guard returned false"
    );
    assert!(
        !is_held(&*lock, case, &key).await,
        "[{case}] released guard's key still held"
    );
}

/// `lost()` fires soon after the lease is taken away, well before its validity would end.
pub async fn guard_lost_fires_when_lease_taken_away(lock: Arc<dyn DistributedLock>) {
    let case = "guard_lost_fires_when_lease_taken_away";
    let key = unique_key(case, "k");
    let spy = Spy::new(Arc::clone(&lock));
    let locker = Locker::from_arc(spy.clone());
    let options = LockOptions::default()
        .with_ttl(Duration::from_secs(5))
        .with_renew_every(Duration::from_millis(200));
    let guard = ok(case, "lock", locker.lock(&key, options).await);
    // Renewals that succeed keep the guard held: a loss must come from an extend saying so.
    sleep(Duration::from_millis(500)).await;
    assert_eq!(
        guard.state(),
        GuardState::Held,
        "[{case}] the guard lost a lease nobody took"
    );
    assert_eq!(
        spy.refused_extends(),
        0,
        "[{case}] an extend of a held lease said it was gone"
    );
    // Take the lease away behind the guard's back, and let someone else take the key.
    assert!(ok(
        case,
        "stealing release",
        lock.release(spy.last_lease(case)).await
    ));
    let thief = ok(
        case,
        "thief acquire",
        lock.try_acquire(&key, Duration::from_secs(10)).await,
    )
    .unwrap_or_else(|| panic!("[{case}] the key is still held after the stealing release"));
    let started = Instant::now();
    let state = timeout(Duration::from_secs(3), guard.lost())
        .await
        .unwrap_or_else(|_| {
            panic!("[{case}] lost() did not fire within 3 s of the lease being taken")
        });
    assert_eq!(
        state,
        GuardState::Lost,
        "[{case}] lost() reported {state:?}"
    );
    assert_eq!(guard.state(), GuardState::Lost, "[{case}] state after loss");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        spy.refused_extends() > 0,
        "[{case}] the guard reported the loss without an extend saying so"
    );
    assert!(
        !ok(case, "release of the lost guard", guard.release().await),
        "[{case}] releasing a lost guard returned true"
    );
    assert!(
        is_held(&*lock, case, &key).await,
        "[{case}] releasing the lost guard freed the thief's lock"
    );
    ok(case, "release", lock.release(thief).await);
}

/// Without renewal (max_hold reached), `lost()` fires at the latest when validity ends.
pub async fn guard_reports_lost_when_validity_ends(lock: Arc<dyn DistributedLock>) {
    let case = "guard_reports_lost_when_validity_ends";
    let key = unique_key(case, "k");
    let locker = Locker::from_arc(Arc::clone(&lock));
    let options = short_options().with_max_hold(Duration::from_millis(100));
    let guard = ok(case, "lock", locker.lock(&key, options).await);
    let valid_until = guard.valid_until();
    let state = timeout(Duration::from_secs(3), guard.lost())
        .await
        .unwrap_or_else(|_| panic!("[{case}] lost() did not fire after renewal stopped"));
    let late = Instant::now()
        .into_std()
        .saturating_duration_since(valid_until);
    assert_eq!(state, GuardState::Lost);
    assert!(
        late < Duration::from_millis(250),
        "[{case}] lost() fired {late:?} after valid_until"
    );
    assert!(
        wait_until_free(
            &*lock,
            case,
            &key,
            Duration::from_secs(2) + expiry_slack(&*lock)
        )
        .await
        .is_some(),
        "[{case}] the key stayed held after the guard stopped renewing"
    );
    drop(guard);
}

/// `with_lock` drops its body when the lease is lost and returns `LeaseLost`.
pub async fn with_lock_cancels_body_on_loss(lock: Arc<dyn DistributedLock>) {
    let case = "with_lock_cancels_body_on_loss";
    let key = unique_key(case, "k");
    let spy = Spy::new(Arc::clone(&lock));
    let locker = Locker::from_arc(spy.clone());
    let options = LockOptions::default()
        .with_ttl(Duration::from_secs(5))
        .with_renew_every(Duration::from_millis(200));
    let body_dropped = Arc::new(AtomicBool::new(false));
    let thief = {
        let (spy, lock) = (spy.clone(), Arc::clone(&lock));
        tokio::spawn(async move {
            sleep(Duration::from_millis(300)).await;
            lock.release(spy.last_lease("with_lock_cancels_body_on_loss"))
                .await
        })
    };
    let started = Instant::now();
    let outcome = {
        let flag = DropFlag(body_dropped.clone());
        timeout(
            Duration::from_secs(4),
            locker.with_lock(&key, options, move |_lease| async move {
                let _flag = flag;
                sleep(Duration::from_secs(60)).await;
            }),
        )
        .await
    };
    let outcome = outcome
        .unwrap_or_else(|_| panic!("[{case}] with_lock kept running after the lease was taken"));
    match &outcome {
        Err(LockError::LeaseLost { key: lost }) => {
            assert_eq!(lost, &key, "[{case}] LeaseLost names the wrong key")
        }
        other => panic!("[{case}] expected LeaseLost, got {other:?}"),
    }
    assert!(
        body_dropped.load(Ordering::SeqCst),
        "[{case}] the body was not dropped"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "[{case}] loss noticed after {:?}",
        started.elapsed()
    );
    thief
        .await
        .expect("thief panicked")
        .expect("stealing release");
}

/// `with_lock` releases the lock when its body ends, and when its body panics.
pub async fn with_lock_releases_after_body_and_panic(lock: Arc<dyn DistributedLock>) {
    let case = "with_lock_releases_after_body_and_panic";
    let key = unique_key(case, "k");
    let locker = Locker::from_arc(Arc::clone(&lock));
    let fence = ok(
        case,
        "with_lock",
        locker
            .with_lock(&key, short_options(), |lease| async move { lease.fence() })
            .await,
    );
    assert!(fence > 0, "[{case}] fence 0 handed to the body");
    assert!(
        !is_held(&*lock, case, &key).await,
        "[{case}] with_lock left the key held"
    );
    let panicking = {
        let (locker, key) = (locker.clone(), key.clone());
        tokio::spawn(async move {
            locker
                .with_lock(&key, short_options(), |_| async {
                    panic!("body panics on purpose")
                })
                .await
        })
    };
    let joined = panicking.await;
    assert!(
        joined.is_err_and(|e| e.is_panic()),
        "[{case}] the body's panic did not propagate"
    );
    assert!(
        !is_held(&*lock, case, &key).await,
        "[{case}] a panicking body left the key held"
    );
}

/// `with_lock` returns `LeaseLost` when the lease was lost while the body blocked its thread
/// (so neither the renewal nor `lost()` could interrupt it), not the body's value.
pub async fn with_lock_reports_a_loss_after_a_blocking_body(lock: Arc<dyn DistributedLock>) {
    let case = "with_lock_reports_a_loss_after_a_blocking_body";
    let key = unique_key(case, "k");
    let spy = Spy::new(Arc::clone(&lock));
    let locker = Locker::from_arc(spy.clone());
    let options = LockOptions::default()
        .with_ttl(Duration::from_secs(5))
        .with_renew_every(Duration::from_millis(100));
    let outcome = {
        let (spy, lock) = (spy.clone(), Arc::clone(&lock));
        locker
            .with_lock(&key, options, move |_lease| async move {
                // Taken away behind the body's back; then the body blocks its thread through
                // several renewal periods and finishes in the same poll.
                let stolen = lock.release(spy.last_lease(case)).await;
                std::thread::sleep(Duration::from_millis(500));
                stolen
            })
            .await
    };
    match outcome {
        Err(LockError::LeaseLost { key: lost }) => {
            assert_eq!(lost, key, "[{case}] LeaseLost names the wrong key")
        }
        other => panic!("[{case}] expected LeaseLost after the loss, got {other:?}"),
    }
}

/// `try_with_lock` skips a held key without running the body, and runs it on a free one.
pub async fn try_with_lock_skips_a_held_key(lock: Arc<dyn DistributedLock>) {
    let case = "try_with_lock_skips_a_held_key";
    let key = unique_key(case, "k");
    let locker = Locker::from_arc(Arc::clone(&lock));
    let held = ok(case, "lock", locker.lock(&key, short_options()).await);
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let skipped = locker
        .try_with_lock(
            &key,
            short_options().with_wait(Duration::from_secs(5)),
            |_| async move {
                flag.store(true, Ordering::SeqCst);
            },
        )
        .await;
    assert!(
        matches!(skipped, Ok(None)),
        "[{case}] try_with_lock on a held key: {skipped:?}"
    );
    assert!(
        !ran.load(Ordering::SeqCst),
        "[{case}] the body ran although the key was held"
    );
    ok(case, "release", held.release().await);
    let fence = ok(
        case,
        "try_with_lock",
        locker
            .try_with_lock(&key, short_options(), |lease| async move { lease.fence() })
            .await,
    );
    assert!(
        fence.is_some_and(|f| f > 0),
        "[{case}] body not run on a free key: {fence:?}"
    );
    assert!(
        !is_held(&*lock, case, &key).await,
        "[{case}] try_with_lock left the key held"
    );
}

/// Dropping a guard frees its lock long before its ttl.
pub async fn dropping_guard_frees_lock_long_before_ttl(lock: Arc<dyn DistributedLock>) {
    let case = "dropping_guard_frees_lock_long_before_ttl";
    let key = unique_key(case, "k");
    let locker = Locker::from_arc(Arc::clone(&lock));
    let options = LockOptions::default().with_ttl(Duration::from_secs(30));
    let guard = ok(case, "lock", locker.lock(&key, options).await);
    drop(guard);
    let took = wait_until_free(&*lock, case, &key, Duration::from_secs(5)).await;
    assert!(
        took.is_some(),
        "[{case}] a dropped guard's 30 s lock was still held after 5 s"
    );
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
