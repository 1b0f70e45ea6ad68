//! Fences across a crash (`leasehold_conformance::restart`), both strategies, on a private
//! cluster stopped with `pg_ctl stop -m immediate`. The cluster runs with
//! `synchronous_commit = off` (as a role's default may be) and `wal_writer_delay = 10s`, so WAL
//! that no commit flushed is still in shared memory when the server dies: only fences drawn by
//! a flushed commit survive.

mod support;

use leasehold_postgres::{PostgresLock, Strategy};
use support::PrivateCluster;

const SETTINGS: &[&str] = &["synchronous_commit=off", "wal_writer_delay=10s"];

async fn connect(url: String, strategy: Strategy) -> PostgresLock {
    PostgresLock::builder()
        .url(url)
        .strategy(strategy)
        .build()
        .await
        .expect("connect to the private cluster")
}

async fn check(strategy: Strategy) {
    let cluster = PrivateCluster::start_with_settings(SETTINGS);
    let url = cluster.url();
    leasehold_conformance::restart::check(
        || connect(url.clone(), strategy),
        || {
            cluster.restart_immediately();
            async {}
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_table_fences_increase_across_immediate_stops() {
    check(Strategy::LeaseTable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_fences_increase_across_immediate_stops() {
    check(Strategy::Advisory).await;
}

/// Advisory waiters queued in the server take every connection of the lock's pool (and the
/// server's slots); each holder in turn must still draw its fence at once (on the fence
/// pool's connection, opened when the lock was built). With fences drawn on the lock's own
/// pool, each hand-off stalls for the request timeout: this test then fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_holders_draw_fences_while_waiters_fill_the_server() {
    use std::time::Duration;

    use leasehold::{DistributedLock, LockKey};

    let cluster = PrivateCluster::start_with_settings(&["max_connections=9"]);
    let lock = PostgresLock::builder()
        .url(cluster.url())
        .strategy(Strategy::Advisory)
        .max_connections(6)
        .request_timeout(Duration::from_secs(6))
        .build()
        .await
        .expect("connect");
    let key = LockKey::new("crowded").unwrap();
    let held = lock
        .try_acquire(&key, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("free key");
    let mut waiters = Vec::new();
    for _ in 0..6 {
        let (lock, key) = (lock.clone(), key.clone());
        waiters.push(tokio::spawn(async move {
            let lease = lock
                .acquire(&key, Duration::from_secs(30), Duration::from_secs(40))
                .await?;
            let fence = lease.fence();
            tokio::time::sleep(Duration::from_millis(50)).await;
            lock.release(lease).await?;
            Ok::<u64, leasehold::LockError>(fence)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // the waiters fill the server
    let first = held.fence();
    let released_at = tokio::time::Instant::now();
    assert!(lock.release(held).await.unwrap());
    let mut fences = Vec::new();
    for waiter in waiters {
        fences.push(waiter.await.unwrap().expect("a waiter did not get the key"));
    }
    let took = released_at.elapsed();
    eprintln!("six advisory hand-offs with a full pool took {took:?}");
    assert!(
        took < Duration::from_secs(4),
        "six hand-offs took {took:?}: holders waited for a connection to draw their fences"
    );
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), 6, "fences repeated: {fences:?}");
    assert!(fences[0] > first, "{fences:?} after {first}");
}
