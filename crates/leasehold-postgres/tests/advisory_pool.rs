//! The advisory strategy under more concurrent holders than pool connections: callers queue
//! for connections and every connection comes back (none leaks).

use std::{sync::Arc, time::Duration};

use leasehold::{DistributedLock, LockKey};
use leasehold_postgres::PostgresLock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_holders_than_connections_queue_and_no_connection_leaks() {
    let url = leasehold_testkit::env::postgres_url();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at {url}: {e}; start it with scripts/services.sh")
        });
    let lock = Arc::new(
        PostgresLock::builder()
            .pool(pool.clone())
            .build_advisory()
            .await
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for task in 0..64 {
        let lock = Arc::clone(&lock);
        tasks.push(tokio::spawn(async move {
            let key = LockKey::new(format!("pool-test/{}/{task}", std::process::id())).unwrap();
            for _ in 0..50 {
                let lease = lock
                    .try_acquire(&key, Duration::from_secs(30))
                    .await
                    .unwrap()
                    .expect("own key");
                assert!(lock.release(lease).await.unwrap());
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("stuck: connections leak")
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        pool.size() as usize - pool.num_idle(),
        0,
        "connections still checked out"
    );
}

/// An advisory wait retries transient failures until its deadline, as the trait says: with
/// the pool's one connection held by another lease, every attempt times out taking a
/// connection (`PoolTimedOut`, transient), and the waiter still gets the key once it is
/// released, instead of giving up at the first failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_waits_retry_pool_timeouts_until_the_deadline() {
    let url = leasehold_testkit::env::postgres_url();
    let lock = PostgresLock::builder()
        .url(&url)
        .max_connections(1)
        .request_timeout(Duration::from_millis(300))
        .build_advisory()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at {url}: {e}; start it with scripts/services.sh")
        });
    let held_key = LockKey::new(format!("pool-retry/{}/held", std::process::id())).unwrap();
    let wanted = LockKey::new(format!("pool-retry/{}/wanted", std::process::id())).unwrap();
    // Holds the pool's only connection.
    let held = lock
        .try_acquire(&held_key, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("a free key");
    let waiter = {
        let (lock, wanted) = (lock.clone(), wanted.clone());
        tokio::spawn(async move {
            lock.acquire(&wanted, Duration::from_secs(5), Duration::from_secs(10))
                .await
        })
    };
    // Several pool timeouts of 300 ms pass before the connection comes back.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter gave up: {:?}",
        waiter.await
    );
    assert!(lock.release(held).await.unwrap());
    let lease = waiter
        .await
        .unwrap()
        .expect("the waiter retried its pool timeouts and got the key");
    assert!(lock.release(lease).await.unwrap());
}
