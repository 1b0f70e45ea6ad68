//! `wait_for_replicas`: acquires and extends that wait until replicas have the write, on a
//! private primary with one replica, and on the shared cluster (conformance suite with the
//! option on). A shortfall gives a fresh lock back with an error naming the counts, makes an
//! extend report failure, and stalls only the connections kept for these writes.

mod support;

use std::time::{Duration, Instant};

use leasehold::{DistributedLock, LockAdmin, LockError, LockKey};
use leasehold_redis::RedisLock;
use support::PrivateRedis;

/// A primary and a replica of it, the link up.
fn primary_and_replica() -> (PrivateRedis, PrivateRedis) {
    let primary = PrivateRedis::start(&[]);
    let port = primary.port.to_string();
    let replica = PrivateRedis::start(&["--replicaof", "127.0.0.1", &port]);
    let started = Instant::now();
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.admin())
            .unwrap();
        if info.contains("master_link_status:up") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "replica link not up: {info}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (primary, replica)
}

async fn acking(url: &str, timeout: Duration) -> RedisLock {
    RedisLock::builder()
        .url(url)
        .wait_for_replicas(1, timeout)
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_replica_answering_locks_work_and_without_it_fresh_locks_are_given_back() {
    let (primary, replica) = primary_and_replica();
    let lock = acking(&primary.url(), Duration::from_millis(300)).await;
    let plain = RedisLock::connect(&primary.url()).await.unwrap();
    let key = LockKey::new("acked").unwrap();
    let mut lease = lock
        .try_acquire(&key, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert!(lock
        .extend(&mut lease, Duration::from_secs(10))
        .await
        .unwrap());
    let valid_until = lease.valid_until();

    replica.pause();
    // An extend the replica does not acknowledge fails (transient, counts named) and keeps
    // the old validity; the lock is still the lease's (not reported as lost).
    let error = lock
        .extend(&mut lease, Duration::from_secs(20))
        .await
        .expect_err("no replica answers the extend");
    assert!(error.is_transient(), "{error:?}");
    assert!(
        error.to_string().contains("only 0 of 1 replicas"),
        "{error}"
    );
    assert_eq!(lease.valid_until(), valid_until);
    assert!(plain.release(lease).await.unwrap());

    // A WAIT longer than the response timeout is waited out, not cut off as a timeout.
    let patient = RedisLock::builder()
        .url(primary.url())
        .response_timeout(Duration::from_millis(200))
        .wait_for_replicas(1, Duration::from_millis(700))
        .build()
        .await
        .unwrap();
    let error = patient
        .try_acquire(&key, Duration::from_secs(10))
        .await
        .expect_err("no replica answers");
    assert!(
        error.to_string().contains("only 0 of 1 replicas"),
        "a WAIT past the response timeout: {error}"
    );

    // A fresh lock the replica does not acknowledge is given back, with the counts named.
    let error = lock
        .try_acquire(&key, Duration::from_secs(10))
        .await
        .expect_err("no replica answers");
    assert!(
        matches!(error, LockError::Backend { .. }) && error.is_transient(),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("only 0 of 1 replicas"), "{message}");
    assert!(
        !plain.status(&key).await.unwrap().is_held(),
        "the unacknowledged lock was given back"
    );
    // The negative control: without the option the same write is granted.
    let unacked = plain
        .try_acquire(&key, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(unacked.is_some(), "a plain lock does not wait for replicas");
    assert!(plain.release(unacked.unwrap()).await.unwrap());

    // While one acquire waits out its WAIT, the shared connection (status, release, other
    // locks) is not held up behind it.
    let stalled = {
        let lock = lock.clone();
        tokio::spawn(async move {
            let slow = LockKey::new("stalled").unwrap();
            lock.try_acquire(&slow, Duration::from_secs(10)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let asked = Instant::now();
    lock.status(&key).await.unwrap();
    let took = asked.elapsed();
    assert!(
        took < Duration::from_millis(200),
        "a status read waited {took:?} behind another lock's WAIT"
    );
    assert!(stalled.await.unwrap().is_err());
    replica.resume();
    drop(primary);
}

#[tokio::test]
async fn bad_replica_settings_are_refused_by_name() {
    let url = support::shared_url();
    for (count, timeout, says) in [
        (0, Duration::from_secs(1), "wait_for_replicas count"),
        (1, Duration::ZERO, "wait_for_replicas timeout"),
    ] {
        let error = RedisLock::builder()
            .url(&url)
            .wait_for_replicas(count, timeout)
            .build()
            .await
            .expect_err("refused");
        assert!(
            matches!(error, LockError::InvalidConfig { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains(says), "{error}");
    }
}

/// A lock on the shared cluster that waits for one replica (1 s at most).
async fn acking_cluster() -> RedisLock {
    let url = support::cluster_url();
    RedisLock::builder()
        .url(&url)
        .wait_for_replicas(1, Duration::from_secs(1))
        .build()
        .await
        .unwrap_or_else(|e| leasehold_testkit::env::unreachable("Redis Cluster", &url, &e))
}

mod cluster_conformance {
    // Every replica of the shared cluster answers: the option changes nothing a user sees.
    leasehold_conformance::suite!(super::acking_cluster());
}
