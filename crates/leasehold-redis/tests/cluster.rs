//! `RedisLock` on the shared Redis Cluster (3 primaries, 3 replicas; `scripts/services.sh`
//! starts it): the whole conformance suite and the admin suite, keys on every primary, sharded
//! pub/sub, and the polling fallback of a cluster client brought by the user.

mod support;

use std::time::{Duration, Instant};

use leasehold::{DistributedLock, LockAdmin, LockKey};
use leasehold_redis::{cluster_seeds, RedisLock};

mod conformance {
    leasehold_conformance::suite!(super::support::cluster_lock());
}

mod admin {
    leasehold_conformance::admin_suite!(super::support::cluster_lock());
}

/// The primary (`host:port`) that owns `name`'s slot, asked of the cluster itself.
async fn owner(name: &str) -> String {
    let seeds = cluster_seeds(&support::cluster_url()).unwrap();
    let client = redis::cluster::ClusterClient::new(seeds).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(name)
        .query_async(&mut conn)
        .await
        .unwrap();
    let ranges: Vec<(u16, u16, (String, u16))> = {
        let raw: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .unwrap();
        raw.into_iter()
            .map(|range| {
                let parts: Vec<redis::Value> = redis::from_redis_value(range).unwrap();
                let start: u16 = redis::from_redis_value(parts[0].clone()).unwrap();
                let end: u16 = redis::from_redis_value(parts[1].clone()).unwrap();
                let node: Vec<redis::Value> = redis::from_redis_value(parts[2].clone()).unwrap();
                let host: String = redis::from_redis_value(node[0].clone()).unwrap();
                let port: u16 = redis::from_redis_value(node[1].clone()).unwrap();
                (start, end, (host, port))
            })
            .collect()
    };
    let (_, _, (host, port)) = ranges
        .into_iter()
        .find(|(start, end, _)| (*start..=*end).contains(&slot))
        .expect("every slot is served");
    format!("{host}:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_on_every_primary_work_and_are_listed_in_key_order() {
    let namespace = format!("cluster-spread-{}", std::process::id());
    let lock = RedisLock::builder()
        .url(support::cluster_url())
        .namespace(&namespace)
        .build()
        .await
        .unwrap();
    assert!(lock.capabilities().notified_wait, "sharded pub/sub");
    let mut owners = std::collections::BTreeSet::new();
    let mut keys = Vec::new();
    for i in 0..30 {
        let key = LockKey::new(format!("spread-{i:02}")).unwrap();
        // The lock's own name: `{namespace:key}` (the hash tag), see the crate docs.
        owners.insert(owner(&format!("{{{namespace}:{}}}", key.as_str())).await);
        let lease = lock
            .try_acquire(&key, Duration::from_secs(30))
            .await
            .unwrap()
            .expect("free");
        assert!(lock
            .try_acquire(&key, Duration::from_secs(30))
            .await
            .unwrap()
            .is_none());
        keys.push((key, lease));
    }
    assert_eq!(
        owners.len(),
        3,
        "30 keys land on all three primaries: {owners:?}"
    );
    let listed = lock.list("spread-").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|(key, _)| key.as_str()).collect();
    let expected: Vec<String> = (0..30).map(|i| format!("spread-{i:02}")).collect();
    assert_eq!(
        names, expected,
        "SCAN on every primary, merged in key order"
    );
    assert!(listed.iter().all(|(_, status)| status.is_held()));
    for (key, lease) in keys {
        let fence = lease.fence();
        assert!(lock.release(lease).await.unwrap());
        let status = lock.status(&key).await.unwrap();
        assert!(!status.is_held());
        assert_eq!(status.last_fence, Some(fence));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_a_waiter_through_sharded_pub_sub() {
    let lock = support::cluster_lock().await;
    let key = LockKey::new(format!("cluster-wake-{}", std::process::id())).unwrap();
    let seeds = leasehold_redis::cluster_seeds(&support::cluster_url()).unwrap();
    // Five rounds under 150 ms each: a waiter whose wake-ups never come still tries every
    // 250-500 ms, and lands that soon after a release in all five rounds about 1% of the time.
    for round in 0..5 {
        let lease = lock
            .try_acquire(&key, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        let waiter = support::spawn_waiter(&lock, &key, Duration::from_secs(20));
        // The waiter's subscription is on the lock's primary (without one it would poll every
        // 25-50 ms and pass the bound below too); then let it settle into its (250-500 ms)
        // fallback sleep.
        support::until_shard_subscribed(seeds.clone(), &key).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let released = Instant::now();
        assert!(lock.release(lease).await.unwrap());
        let (won, lease) = waiter.await.unwrap();
        let lease = lease.unwrap();
        let gap = won.duration_since(released);
        assert!(
            gap < Duration::from_millis(150),
            "round {round}: woken by the release message, not the fallback timer: {gap:?}"
        );
        lock.release(lease).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_client_of_the_users_own_polls() {
    let seeds = cluster_seeds(&support::cluster_url()).unwrap();
    let client = redis::cluster::ClusterClient::new(seeds).unwrap();
    let lock = RedisLock::builder()
        .cluster_client(client)
        .build()
        .await
        .unwrap();
    assert!(!lock.capabilities().notified_wait);
    let key = LockKey::new(format!("cluster-poll-{}", std::process::id())).unwrap();
    let lease = lock
        .try_acquire(&key, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let waiter = {
        let (lock, key) = (lock.clone(), key.clone());
        tokio::spawn(async move {
            lock.acquire(&key, Duration::from_secs(5), Duration::from_secs(5))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(lock.release(lease).await.unwrap());
    let lease = waiter.await.unwrap().expect("the poll finds it free");
    lock.release(lease).await.unwrap();
}
