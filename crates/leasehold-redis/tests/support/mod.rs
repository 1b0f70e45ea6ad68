//! Test support: the shared Redis of the suite; private servers come from
//! `leasehold-testkit`.

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::time::{Duration, Instant};

use leasehold::{DistributedLock, Lease, LockError, LockKey};
use leasehold_redis::RedisLock;
pub use leasehold_testkit::redis::PrivateRedis;

/// The URL of the shared test server, from `LEASEHOLD_REDIS_URL` (set by `scripts/test.sh`).
pub fn shared_url() -> String {
    leasehold_testkit::env::redis_url()
}

/// Connects to the shared server, failing with instructions when it is not there.
pub async fn shared_lock() -> RedisLock {
    let url = shared_url();
    RedisLock::connect(&url)
        .await
        .unwrap_or_else(|e| leasehold_testkit::env::unreachable("Redis", &url, &e))
}

/// A free loopback port (racy in theory, fine for tests).
pub fn free_port() -> u16 {
    leasehold_testkit::ports::free_port().expect("free port")
}

/// The URL of the shared test cluster, from `LEASEHOLD_REDIS_CLUSTER_URL`.
pub fn cluster_url() -> String {
    leasehold_testkit::env::redis_cluster_url()
}

/// Connects to the shared cluster, failing with instructions when it is not there.
pub async fn cluster_lock() -> RedisLock {
    let url = cluster_url();
    RedisLock::connect(&url)
        .await
        .unwrap_or_else(|e| leasehold_testkit::env::unreachable("Redis Cluster", &url, &e))
}

/// A task that waits up to `wait` for `key` (ttl 30 s) and ends with the moment it got an
/// answer and the answer.
pub fn spawn_waiter(
    lock: &RedisLock,
    key: &LockKey,
    wait: Duration,
) -> tokio::task::JoinHandle<(Instant, Result<Lease, LockError>)> {
    let (lock, key) = (lock.clone(), key.clone());
    tokio::spawn(async move {
        let lease = lock.acquire(&key, Duration::from_secs(30), wait).await;
        (Instant::now(), lease)
    })
}

/// Waits until the primary of `key`'s lock (default namespace) counts a subscriber on the
/// lock's shard channel (5 s at most), through the cluster seeds `seeds` (no credentials): so
/// that a quick wake-up after it is the release message's, not a poll's.
pub async fn until_shard_subscribed(seeds: Vec<String>, key: &LockKey) {
    use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
    // The keys here have no `%`, `{` or `}`, so the name is the key as it is.
    let channel = format!("{{leasehold:{}}}:released", key.as_str());
    let mut conn = redis::cluster::ClusterClient::new(seeds)
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
        &channel,
        SlotAddr::Master,
    )));
    let mut last = redis::Value::Nil;
    for _ in 0..250 {
        let mut ask = redis::cmd("PUBSUB");
        ask.arg("SHARDNUMSUB").arg(&channel);
        last = conn.route_command(ask, route.clone()).await.unwrap();
        let counts: Vec<(String, i64)> = redis::from_redis_value(last.clone()).unwrap();
        if counts.first().is_some_and(|(_, n)| *n >= 1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no subscriber on {channel} after 5 s: {last:?}");
}

/// The ACL line documented in the README, for user `locker` with password `s3cret-pw`.
pub const LOCKER_ACL: &[&str] = &[
    "locker",
    "on",
    ">s3cret-pw",
    "resetkeys",
    "~{leasehold:*",
    "resetchannels",
    "&{leasehold:*",
    "-@all",
    "+evalsha",
    "+time",
    "+script|load",
    "+set",
    "+get",
    "+del",
    "+incr",
    "+pttl",
    "+pexpire",
    "+pexpireat",
    "+zadd",
    "+zrem",
    "+zrange",
    "+zremrangebyscore",
    "+zcard",
    "+zscore",
    "+publish",
    "+subscribe",
    "+unsubscribe",
    "+ping",
];

/// The README's cluster ACL line for the same user: sharded pub/sub instead of pub/sub, and the
/// topology command the cluster client sends.
pub fn cluster_locker_acl() -> Vec<&'static str> {
    LOCKER_ACL
        .iter()
        .map(|word| match *word {
            "+publish" => "+spublish",
            "+subscribe" => "+ssubscribe",
            "+unsubscribe" => "+sunsubscribe",
            other => other,
        })
        .chain(["+cluster|slots"])
        .collect()
}

/// The ACL line the README documents (the cluster one when `cluster`), with `>PASSWORD` as
/// `>s3cret-pw`.
pub fn documented_acl(cluster: bool) -> Vec<&'static str> {
    let readme = include_str!("../../README.md");
    let line = readme
        .lines()
        .find(|l| l.starts_with("ACL SETUSER locker ") && l.contains("+spublish") == cluster)
        .expect("the README's ACL line");
    line.trim_start_matches("ACL SETUSER ")
        .split(' ')
        .map(|word| {
            if word == ">PASSWORD" {
                ">s3cret-pw"
            } else {
                word
            }
        })
        .collect()
}
