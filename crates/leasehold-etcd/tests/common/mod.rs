//! Connecting the tests to the shared etcd cluster.

#![allow(dead_code, unreachable_pub)]

use leasehold_etcd::EtcdLock;
use leasehold_testkit::env;

/// An `EtcdLock` on the shared cluster, under a prefix unique to this process and `what`.
pub async fn connect(what: &str) -> EtcdLock {
    let endpoints = env::etcd_endpoints();
    let endpoints: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    EtcdLock::builder(&endpoints)
        .prefix(format!("leasehold-test-{what}-{}", std::process::id()))
        .election_timeout(std::time::Duration::from_millis(500))
        .connect()
        .await
        .unwrap_or_else(|e| env::unreachable("etcd", &env::etcd_url(), &e))
}
