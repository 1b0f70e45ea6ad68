//! `LockAdmin` on Redis: the admin suite (`leasehold_conformance::admin_suite!`, which also
//! lists keys that look like globs and hash tags), the release watch and its negative controls. The ACL it needs is tested in `tests/acl.rs`.

mod support;

use std::time::Duration;

use leasehold::{DistributedLock, Lease, LockAdmin, LockError, LockKey};
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

// The admin suite, one test per case, on the shared server.
leasehold_conformance::admin_suite!(support::shared_lock());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_release_wakes_the_holders_release_watch() {
    let lock = lock_in_fresh_namespace("watch").await;
    let key = leasehold::LockKey::new("offered").unwrap();
    assert!(
        lock.watch_releases(&key).is_some(),
        "RedisLock with notified waiting offers a release watch"
    );
    leasehold_conformance::admin::release_watch(&lock).await;
    remove_namespace(&lock).await;
}

/// `RedisLock` with a broken release watch: `deaf` hears nothing after its first wake, a
/// forgetful one listens only while it is called (a fresh real watch per call).
#[derive(Debug, Clone)]
struct Deaf {
    lock: RedisLock,
    forgetful: bool,
}

#[derive(Debug)]
struct DeafWatch {
    started: bool,
    /// With a lock: the forgetful variant.
    forgetful: Option<(RedisLock, LockKey)>,
}

#[leasehold::async_trait]
impl leasehold::ReleaseWatch for DeafWatch {
    async fn changed(&mut self) {
        let started = std::mem::replace(&mut self.started, true);
        match &self.forgetful {
            None if started => std::future::pending::<()>().await,
            None => {}
            Some((lock, key)) => {
                let mut fresh = lock.watch_releases(key).expect("a real watch");
                fresh.changed().await; // in place
                if started {
                    fresh.changed().await;
                }
            }
        }
    }
}

// A wrapper forwards every method, defaulted ones too: a forgotten `acquire` would poll.
#[deny(clippy::missing_trait_methods)]
#[leasehold::async_trait]
impl DistributedLock for Deaf {
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        self.lock.try_acquire(key, ttl).await
    }

    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        self.lock.acquire(key, ttl, wait).await
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        self.lock.extend(lease, ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        self.lock.release(lease).await
    }

    fn capabilities(&self) -> leasehold::Capabilities {
        self.lock.capabilities()
    }

    fn watch_releases(&self, key: &LockKey) -> Option<Box<dyn leasehold::ReleaseWatch>> {
        Some(Box::new(DeafWatch {
            started: false,
            forgetful: self.forgetful.then(|| (self.lock.clone(), key.clone())),
        }))
    }
}

#[leasehold::async_trait]
impl LockAdmin for Deaf {
    async fn status(&self, key: &LockKey) -> Result<leasehold::LockStatus, LockError> {
        self.lock.status(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(LockKey, leasehold::LockStatus)>, LockError> {
        self.lock.list(prefix).await
    }

    async fn force_release(&self, key: &LockKey) -> Result<bool, LockError> {
        self.lock.force_release(key).await
    }
}

/// Runs the release-watch check on a broken watch and returns its panic message.
async fn release_watch_failure(forgetful: bool) -> String {
    let name = if forgetful { "forgetful" } else { "deaf" };
    let lock = Deaf {
        lock: lock_in_fresh_namespace(name).await,
        forgetful,
    };
    let checked = tokio::spawn(async move {
        leasehold_conformance::admin::release_watch(&lock).await;
    })
    .await;
    let panic = checked
        .expect_err("the check passed a broken watch")
        .into_panic();
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_deaf_and_forgetful_release_watches_fail_the_admin_contract() {
    for forgetful in [false, true] {
        let message = release_watch_failure(forgetful).await;
        assert!(
            message.starts_with(
                "[forced_release_wakes_the_holders_release_watch] a forced release did not wake"
            ),
            "forgetful {forgetful}: {message}"
        );
    }
}
