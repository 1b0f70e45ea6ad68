//! Test support: the shared Redis of the suite; private servers come from
//! `leasehold-testkit`.

#![allow(dead_code, unreachable_pub, unused_imports)]

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
