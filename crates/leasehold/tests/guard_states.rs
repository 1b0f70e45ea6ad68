//! Guard states under a backend whose renewals fail.

mod support;

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use leasehold::{memory::MemoryLock, GuardState, LockError, LockOptions, Locker};
use support::Flaky;

fn options() -> LockOptions {
    LockOptions::default()
        .with_ttl(Duration::from_millis(1_000))
        .with_renew_every(Duration::from_millis(100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_renewals_make_the_state_unknown_then_held_again() {
    let backend = Arc::new(Flaky::default());
    let locker = Locker::from_arc(backend.clone());
    let guard = locker.lock("flaky", options()).await.unwrap();
    backend.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(guard.state(), GuardState::Unknown);
    assert!(guard.remaining() > Duration::ZERO);
    backend.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(guard.state(), GuardState::Held);
    assert!(guard.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_failing_until_validity_ends_make_the_lease_lost_for_good() {
    let backend = Arc::new(Flaky::default());
    let locker = Locker::from_arc(backend.clone());
    let guard = locker.lock("flaky", options()).await.unwrap();
    let valid_until = guard.valid_until();
    backend.failing.store(true, Ordering::SeqCst);
    let state = tokio::time::timeout(Duration::from_secs(3), guard.lost())
        .await
        .unwrap();
    assert_eq!(state, GuardState::Lost);
    let late = std::time::Instant::now().saturating_duration_since(valid_until);
    assert!(
        late < Duration::from_millis(250),
        "lost() fired {late:?} after valid_until"
    );
    assert_eq!(guard.remaining(), Duration::ZERO);
    // Renewals that succeed again must not flip a lost lease back.
    backend.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(guard.state(), GuardState::Lost);
    // The server may still hold it: release still sends the token-checked release.
    let _ = guard.release().await.unwrap();
    assert!(locker.try_lock("flaky", options()).await.unwrap().is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn lost_completes_with_released_after_release() {
    let locker = Locker::new(MemoryLock::new());
    let guard = locker.lock("k", LockOptions::default()).await.unwrap();
    let view = guard.view();
    assert!(guard.release().await.unwrap());
    assert_eq!(view.lost().await, GuardState::Released);
    assert_eq!(view.state(), GuardState::Released);
}

#[tokio::test(flavor = "current_thread")]
async fn bad_keys_and_options_are_rejected_before_any_backend_call() {
    let locker = Locker::new(MemoryLock::new());
    let err = locker
        .lock("bad\nkey", LockOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::InvalidKey { .. }), "{err:?}");
    let opts = LockOptions::default()
        .with_ttl(Duration::from_secs(3))
        .with_renew_every(Duration::from_secs(3));
    let err = locker.try_lock("k", opts).await.unwrap_err();
    assert!(matches!(err, LockError::InvalidConfig { .. }), "{err:?}");
    assert!(err.to_string().contains("renew interval 3s"), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn huge_waits_and_caps_are_accepted_without_panicking() {
    let locker = Locker::new(MemoryLock::new());
    let options = LockOptions::default()
        .with_wait(Duration::MAX)
        .with_max_hold(Duration::MAX);
    let guard = locker.lock("huge", options).await.unwrap();
    assert_eq!(guard.state(), GuardState::Held);
    assert!(guard.release().await.unwrap());
}

/// Renewals are scheduled from the acquiring request's send, like the validity: after an
/// acquire whose reply took 450 ms of a 600 ms ttl, the first renewal comes at once, not a full
/// 200 ms period after the guard was made (which would be after the validity ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_acquire_is_renewed_at_once_not_a_full_period_later() {
    let backend = Arc::new(Flaky::default());
    backend.acquire_delay_ms.store(450, Ordering::SeqCst);
    let locker = Locker::from_arc(backend.clone());
    let options = LockOptions::default()
        .with_ttl(Duration::from_millis(600))
        .with_renew_every(Duration::from_millis(200))
        .with_wait(Duration::ZERO);
    let guard = locker.lock("slow", options).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        guard.state(),
        GuardState::Held,
        "the first renewal came too late for the lease's validity"
    );
    assert!(guard.release().await.unwrap());
}
