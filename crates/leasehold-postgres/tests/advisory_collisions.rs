//! Advisory keys that collide (forced with a custom key mapping) only cause false contention:
//! two lock keys on one advisory key are never held at once.

mod support;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use leasehold::{DistributedLock, LockError, LockKey};
use leasehold_postgres::PostgresLock;
use support::connect_shared_advisory;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_advisory_keys_contend_and_are_never_held_twice() {
    // One advisory key for every lock key, unique to this process so that other tests on the
    // shared server are not involved.
    let collision = 0x1eaf_0000_0000 + i64::from(std::process::id());
    let lock =
        connect_shared_advisory(PostgresLock::builder().advisory_keys(move |_| collision)).await;
    let ttl = Duration::from_secs(10);
    let a = LockKey::new(format!("collide/a/{collision}")).unwrap();
    let b = LockKey::new(format!("collide/b/{collision}")).unwrap();

    let held = lock.try_acquire(&a, ttl).await.unwrap().expect("a is free");
    assert!(
        lock.try_acquire(&b, ttl).await.unwrap().is_none(),
        "b shares a's advisory key: it must look held"
    );
    let started = Instant::now();
    let err = lock
        .acquire(&b, ttl, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(lock.release(held).await.unwrap());

    // 16 tasks race for a and b at once: one advisory key, so one winner.
    let winners = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (lock, winners, gate) = (lock.clone(), winners.clone(), gate.clone());
        let key = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            let won = lock.try_acquire(&key, ttl).await.unwrap();
            if won.is_some() {
                winners.fetch_add(1, Ordering::SeqCst);
            }
            won
        }));
    }
    let mut leases = Vec::new();
    for task in tasks {
        leases.extend(task.await.unwrap());
    }
    assert_eq!(
        winners.load(Ordering::SeqCst),
        1,
        "two holders of one advisory key"
    );
    for lease in leases {
        assert!(lock.release(lease).await.unwrap());
    }
    // Free again for either key.
    let lease = lock.try_acquire(&b, ttl).await.unwrap().expect("b is free");
    assert!(lock.release(lease).await.unwrap());
}
