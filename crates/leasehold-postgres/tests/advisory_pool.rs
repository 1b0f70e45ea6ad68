//! The advisory strategy under more concurrent holders than pool connections: callers queue
//! for connections and every connection comes back (none leaks).

use std::{sync::Arc, time::Duration};

use leasehold::{DistributedLock, LockKey};
use leasehold_postgres::{PostgresLock, Strategy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_holders_than_connections_queue_and_no_connection_leaks() {
    let url = std::env::var("LEASEHOLD_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
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
            .strategy(Strategy::Advisory)
            .build()
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
