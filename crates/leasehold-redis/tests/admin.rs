//! `LockAdmin` on Redis: the admin contract (`leasehold_conformance::admin::check`, which also
//! lists keys that look like globs and hash tags). The ACL it needs is tested in `tests/acl.rs`.

mod support;

use leasehold_redis::RedisLock;
use support::shared_url;

/// A lock on the shared server in a namespace of this test run's own.
async fn lock_in_fresh_namespace(name: &str) -> RedisLock {
    let namespace = format!("leasehold-admin-{name}-{}", std::process::id());
    RedisLock::builder()
        .url(shared_url())
        .namespace(namespace)
        .build()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach Redis at {}: {e}\nstart it with `scripts/services.sh` (or run \
                 the tests through `scripts/test.sh`)",
                shared_url()
            )
        })
}

/// Deletes every name of a namespace (the fence counters outlive the test by design).
async fn remove_namespace(lock: &RedisLock) {
    let mut conn = redis::Client::open(shared_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let names: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{}:*", lock.namespace()))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !names.is_empty() {
        let () = redis::cmd("DEL")
            .arg(names)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_contract_holds() {
    let lock = lock_in_fresh_namespace("contract").await;
    leasehold_conformance::admin::check(&lock).await;
    remove_namespace(&lock).await;
}
