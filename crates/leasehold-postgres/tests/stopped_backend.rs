//! SIGSTOP of the server process that serves a holder's connection, on a private cluster.

mod support;

use std::time::Duration;

use leasehold::{DistributedLock, LockError, LockKey};
use leasehold_postgres::{PostgresLock, Strategy};
use support::{PrivateCluster, Stopped};
use tokio::time::{sleep, Instant};

// Both strategies through one helper: the deprecated `strategy` path hands every call of the
// advisory one to `PostgresAdvisoryLock`.
#[allow(deprecated)]
async fn connect(cluster: &PrivateCluster, app: &str, strategy: Strategy) -> PostgresLock {
    PostgresLock::builder()
        .url(format!("{}?application_name={app}", cluster.url()))
        .strategy(strategy)
        .build()
        .await
        .expect("private cluster")
}

/// Advisory: the stopped process holds the lock (its session is in it), so others time out
/// cleanly at their deadlines; once it runs again its idle timeout (the ttl, long passed) ends
/// the session at once and the lock is free. The holder's extend then returns false.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_a_stopped_holder_backend_blocks_until_it_runs_and_its_timeout_ends_it() {
    let cluster = PrivateCluster::start();
    let holder = connect(&cluster, "holder", Strategy::Advisory).await;
    let other = connect(&cluster, "other", Strategy::Advisory).await;
    let key = LockKey::new("stopped/advisory").unwrap();
    let ttl = Duration::from_secs(1);
    let mut lease = holder.try_acquire(&key, ttl).await.unwrap().unwrap();
    let pids = cluster.backend_pids("holder").await;

    let stopped = Stopped::stop(pids);
    let started = Instant::now();
    let err = other
        .acquire(&key, ttl, Duration::from_millis(2500))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, LockError::Timeout { .. }), "{err:?}");
    assert!(
        waited >= Duration::from_millis(2400) && waited < Duration::from_secs(5),
        "the waiter must give up at its deadline, gave up after {waited:?}"
    );
    drop(stopped);

    let freed = Instant::now();
    let retaken = loop {
        if let Some(lease) = other.try_acquire(&key, ttl).await.unwrap() {
            break lease;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(5),
            "the lock was not freed after SIGCONT"
        );
        sleep(Duration::from_millis(20)).await;
    };
    assert!(retaken.fence() > lease.fence());
    assert!(!holder.extend(&mut lease, ttl).await.unwrap());
    assert!(other.release(retaken).await.unwrap());
}

/// Lease table: nothing is held on the connection, so the lease simply expires on the server's
/// clock and a waiter takes it; once the holder's server process runs again, its extend returns
/// false.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_table_a_stopped_holder_backend_loses_the_lease_at_its_ttl() {
    let cluster = PrivateCluster::start();
    let holder = PostgresLock::builder()
        .url(format!("{}?application_name=holder", cluster.url()))
        .max_connections(1)
        .notifications(false)
        .build()
        .await
        .expect("private cluster");
    let other = connect(&cluster, "other", Strategy::LeaseTable).await;
    let key = LockKey::new("stopped/lease").unwrap();
    let ttl = Duration::from_secs(1);
    let mut lease = holder.try_acquire(&key, ttl).await.unwrap().unwrap();
    let stopped = Stopped::stop(cluster.backend_pids("holder").await);

    let started = Instant::now();
    let retaken = other
        .acquire(&key, ttl, Duration::from_secs(5))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "taken after {waited:?}, the ttl is 1 s"
    );
    assert!(retaken.fence() > lease.fence());
    drop(stopped);
    // Once the holder's server process runs again, its extend is refused.
    assert!(!holder.extend(&mut lease, ttl).await.unwrap());
    assert!(other.release(retaken).await.unwrap());
}
