//! What the lease-table statements cost the server: a busy attempt takes no row lock (so it
//! neither queues behind nor writes), and a release's relaxed commit stays in its transaction.

mod support;

use std::time::Duration;

use leasehold::{DistributedLock, LockKey};
use leasehold_postgres::PostgresLock;
use support::{connect_shared, shared_url};
use tokio::time::{timeout, Instant};

fn unique(name: &str) -> LockKey {
    LockKey::new(format!(
        "pg-costs/{name}/{}/{:?}",
        std::process::id(),
        Instant::now()
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_attempt_does_not_wait_for_a_row_lock() {
    let lock = connect_shared(PostgresLock::builder()).await;
    let key = unique("busy");
    let ttl = Duration::from_secs(10);
    let held = lock.try_acquire(&key, ttl).await.unwrap().unwrap();

    // Another session locks the held row, as a concurrent writer of it would.
    let mut blocker = lock.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM public.leasehold_locks WHERE key = $1 FOR UPDATE")
        .bind(key.as_str())
        .execute(&mut *blocker)
        .await
        .unwrap();
    let attempt = timeout(Duration::from_secs(2), lock.try_acquire(&key, ttl)).await;
    blocker.rollback().await.unwrap();
    let attempt = attempt.expect("a busy try_acquire queued behind a row lock");
    assert!(attempt.unwrap().is_none());
    assert!(lock.release(held).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relaxed_commit_of_a_release_does_not_leak_into_the_session() {
    let url = shared_url();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at {url}: {e}; start it with scripts/services.sh")
        });
    let lock = PostgresLock::builder()
        .pool(pool.clone())
        .notifications(false)
        .build()
        .await
        .unwrap();
    let lease = lock
        .try_acquire(&unique("relaxed"), Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert!(lock.release(lease).await.unwrap());
    // The pool's only connection ran the release: later statements on it commit durably.
    let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(setting, "on");
}
