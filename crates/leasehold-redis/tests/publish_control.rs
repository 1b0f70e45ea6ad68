//! Negative control for "a release publishes only when someone may be waiting": a release that
//! never publishes (the lock deleted by hand) must fail the conformance hand-off case, so a
//! waiter whose mark the release missed would be caught the same way. `RedisLock` itself passes
//! that case in `tests/conformance.rs`.

mod support;

use std::{
    panic::{self, AssertUnwindSafe},
    time::Duration,
};

use leasehold::{async_trait, Capabilities, DistributedLock, Lease, LockError, LockKey};
use leasehold_redis::RedisLock;
use redis::aio::ConnectionManager;

/// `RedisLock`, except that release deletes the lock with a bare `DEL`: no message.
struct Silent {
    lock: RedisLock,
    conn: ConnectionManager,
}

impl std::fmt::Debug for Silent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Silent").field("lock", &self.lock).finish()
    }
}

// A wrapper forwards every method, defaulted ones too.
#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl DistributedLock for Silent {
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
        // The suite's keys have no `%`, `{` or `}`, so the name is the key as it is.
        let name = format!("{{{}:{}}}", self.lock.namespace(), lease.key().as_str());
        let mut conn = self.conn.clone();
        let deleted: i64 = redis::cmd("DEL")
            .arg(name)
            .query_async(&mut conn)
            .await
            .expect("DEL");
        Ok(deleted == 1)
    }

    fn capabilities(&self) -> Capabilities {
        self.lock.capabilities()
    }

    fn watch_releases(&self, key: &LockKey) -> Option<Box<dyn leasehold::ReleaseWatch>> {
        self.lock.watch_releases(key)
    }
}

#[test]
fn a_release_that_never_publishes_fails_the_hand_off_case() {
    let case = leasehold_conformance::all_cases()
        .iter()
        .find(|c| c.name == "waiting_acquire_gets_lock_soon_after_release")
        .expect("the hand-off case");
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        leasehold_conformance::run(
            async {
                let url = support::shared_url();
                let client = redis::Client::open(url.as_str()).expect("url");
                Silent {
                    lock: support::shared_lock().await,
                    conn: ConnectionManager::new(client)
                        .await
                        .unwrap_or_else(|e| leasehold_testkit::env::unreachable("Redis", &url, &e)),
                }
            },
            case.run,
        );
    }));
    assert!(
        outcome.is_err(),
        "a release that never publishes passed the hand-off case"
    );
}
