//! What a step of the server's wall clock does to leases, measured on a private cluster whose
//! wall clock libfaketime steps while it runs (`FAKETIME_TIMESTAMP_FILE`, `FAKETIME_NO_CACHE=1`;
//! the monotonic clocks are left alone). `docs/guarantees.md` reports these numbers.

mod support;

use std::time::Duration;

use leasehold::{DistributedLock, LockKey};
use leasehold_postgres::{PostgresLock, Strategy};
use support::PrivateCluster;
use tokio::time::Instant;

// Both strategies through one helper: the deprecated `strategy` path hands every call of the
// advisory one to `PostgresAdvisoryLock`.
#[allow(deprecated)]
async fn connect(cluster: &PrivateCluster, strategy: Strategy) -> PostgresLock {
    PostgresLock::builder()
        .url(cluster.url())
        .strategy(strategy)
        .build()
        .await
        .expect("connect to the private cluster")
}

/// How far the server's `clock_timestamp()` is ahead of ours, in seconds.
async fn server_ahead(lock: &PostgresLock) -> f64 {
    let server: f64 = sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8")
        .fetch_one(lock.pool())
        .await
        .unwrap();
    let ours = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    server - ours
}

/// Steps the server's clock and checks that the server sees it.
async fn step(cluster: &PrivateCluster, lock: &PostgresLock, offset: &str, seconds: f64) {
    cluster.set_clock(offset);
    let ahead = server_ahead(lock).await;
    assert!(
        (ahead - seconds).abs() < 30.0,
        "the server's clock is {ahead:.0} s off ours after stepping it {offset}: libfaketime did not reach it"
    );
}

/// How long until `lock` gets `key`, within `wait`; `None` when it timed out.
async fn time_to_take(lock: &PostgresLock, key: &LockKey, wait: Duration) -> Option<Duration> {
    let started = Instant::now();
    let lease = match lock.acquire(key, Duration::from_secs(30), wait).await {
        Ok(lease) => lease,
        Err(leasehold::LockError::Timeout { .. }) => return None,
        Err(error) => panic!("acquire failed (not a timeout): {error} ({error:?})"),
    };
    let took = started.elapsed();
    lock.release(lease).await.unwrap();
    Some(took)
}

/// Lease table, server clock stepped an hour forward: a lease with 30 s left ends at once
/// (`expires_at` is the server's wall clock), while its holder still counts 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_table_leases_end_at_once_when_the_server_clock_steps_forward() {
    let cluster = PrivateCluster::start_with_faked_clock();
    let holder = connect(&cluster, Strategy::LeaseTable).await;
    let other = connect(&cluster, Strategy::LeaseTable).await;
    let key = LockKey::new("forward").unwrap();
    let held = holder
        .try_acquire(&key, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    step(&cluster, &other, "+1h", 3600.0).await;
    let took = time_to_take(&other, &key, Duration::from_secs(5)).await;
    eprintln!("lease table, +1h: held lease (30 s left, holder sees {:?}) taken by another after {took:?}", held.remaining());
    assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "{took:?}");
    assert!(
        held.is_valid(),
        "the holder's own view does not follow the server's clock"
    );
    cluster.set_clock("+0");
}

/// Lease table, server clock stepped an hour back: a 2 s lease (its holder gone) keeps the key
/// for the hour instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_table_leases_last_longer_when_the_server_clock_steps_back() {
    let cluster = PrivateCluster::start_with_faked_clock();
    let holder = connect(&cluster, Strategy::LeaseTable).await;
    let other = connect(&cluster, Strategy::LeaseTable).await;
    let key = LockKey::new("back").unwrap();
    let _abandoned = holder
        .try_acquire(&key, Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap();
    step(&cluster, &other, "-1h", -3600.0).await;
    let took = time_to_take(&other, &key, Duration::from_secs(6)).await;
    eprintln!("lease table, -1h: abandoned 2 s lease taken by another after {took:?} (None: not within 6 s)");
    assert_eq!(took, None);
    cluster.set_clock("+0");
    let took = time_to_take(&other, &key, Duration::from_secs(3)).await;
    assert!(
        took.is_some(),
        "the key stayed held after the clock came back"
    );
}

/// A 3 s advisory holder idles while the server's clock is stepped by `offset`: whether (and
/// how long after the holder's acquisition) another client got the key within 10 s.
///
/// The idle timeout never ended a lease early, whichever way the clock was stepped (measured:
/// 3.00 s forward in every run; 3.00 s back in most runs, but twice, under the load of the
/// whole suite, the key stayed held past the 10 s wait: PostgreSQL's timeouts compare
/// wall-clock timestamps, so a backward step can prolong an abandoned lease).
async fn idle_holder_under_a_step(offset: &str, seconds: f64) -> Option<Duration> {
    let cluster = PrivateCluster::start_with_faked_clock();
    let holder = connect(&cluster, Strategy::Advisory).await;
    let other = connect(&cluster, Strategy::Advisory).await;
    let key = LockKey::new("advisory-idle").unwrap();
    let _idle = holder
        .try_acquire(&key, Duration::from_secs(3))
        .await
        .unwrap()
        .unwrap();
    let started = Instant::now();
    step(&cluster, &other, offset, seconds).await;
    let took = time_to_take(&other, &key, Duration::from_secs(10)).await;
    let after = started.elapsed();
    eprintln!(
        "advisory, {offset}: 3 s idle holder's key taken after {after:?} (acquire took {took:?})"
    );
    cluster.set_clock("+0");
    if took.is_some() {
        assert!(
            after >= Duration::from_millis(2_500),
            "the 3 s idle timeout ended the lease after {after:?}"
        );
    }
    took.map(|_| after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_idle_timeout_when_the_server_clock_steps_forward() {
    let ended = idle_holder_under_a_step("+1h", 3600.0).await;
    assert!(ended.is_some(), "the idle holder kept the key past 10 s");
}

/// Asserts only that the lease did not end early: a backward step may prolong it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_idle_timeout_when_the_server_clock_steps_back() {
    idle_holder_under_a_step("-1h", -3600.0).await;
}
