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

/// The hand-off case measures against a fallback poll every 250-500 ms, so a silent release
/// still passes it by luck now and then (when the poll happens to land within 50 ms of the
/// release in three of its five rounds: about 6 % of runs). Seven runs, of which at least four
/// must fail, leave that luck about 0.04 %.
#[test]
fn a_release_that_never_publishes_fails_the_hand_off_case() {
    let case = leasehold_conformance::all_cases()
        .iter()
        .find(|c| c.name == "waiting_acquire_gets_lock_soon_after_release")
        .expect("the hand-off case");
    let failed = (0..7)
        .filter(|_| {
            panic::catch_unwind(AssertUnwindSafe(|| {
                leasehold_conformance::run(
                    async {
                        let url = support::shared_url();
                        let client = redis::Client::open(url.as_str()).expect("url");
                        Silent {
                            lock: support::shared_lock().await,
                            conn: ConnectionManager::new(client).await.unwrap_or_else(|e| {
                                leasehold_testkit::env::unreachable("Redis", &url, &e)
                            }),
                        }
                    },
                    case.run,
                );
            }))
            .is_err()
        })
        .count();
    assert!(
        failed >= 4,
        "a release that never publishes passed the hand-off case in {} of 7 runs",
        7 - failed
    );
}

/// The mark itself, on the shared server: a busy `try_acquire` sets none, a waiter sets one of
/// at most 2 s, a release without a mark sends no message, and with one it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_mark_the_lock_and_only_marked_releases_publish() {
    use futures_util::StreamExt;

    let lock = support::shared_lock().await;
    let key = LockKey::new(format!("publish-control/mark/{}", std::process::id())).unwrap();
    let name = format!("{{{}:{}}}", lock.namespace(), key.as_str());
    let (mark, channel) = (format!("{name}:wanted"), format!("{name}:released"));
    let url = support::shared_url();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let pttl = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        let mark = mark.clone();
        async move {
            redis::cmd("PTTL")
                .arg(mark)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    let _: () = redis::cmd("DEL")
        .arg(&mark)
        .query_async(&mut admin)
        .await
        .unwrap();
    let ttl = Duration::from_secs(10);
    let held = lock
        .try_acquire(&key, ttl)
        .await
        .unwrap()
        .expect("free key");
    assert!(lock.try_acquire(&key, ttl).await.unwrap().is_none());
    assert_eq!(pttl(&mut admin).await, -2, "a busy try_acquire set a mark");
    let waiter = {
        let (lock, key) = (lock.clone(), key.clone());
        tokio::spawn(async move { lock.acquire(&key, ttl, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left = pttl(&mut admin).await;
    assert!(
        (1..=2_000).contains(&left),
        "a waiter's mark has {left} ms left"
    );
    assert!(lock.release(held).await.unwrap());
    let lease = waiter.await.unwrap().expect("the waiter got the lock");

    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(&channel).await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&mark)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(lock.release(lease).await.unwrap());
    let mut messages = pubsub.on_message();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), messages.next())
            .await
            .is_err(),
        "a release nobody marked published"
    );
    let lease = lock
        .try_acquire(&key, ttl)
        .await
        .unwrap()
        .expect("free key");
    let _: () = redis::cmd("SET")
        .arg(&mark)
        .arg("1")
        .arg("PX")
        .arg(2_000)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(lock.release(lease).await.unwrap());
    tokio::time::timeout(Duration::from_secs(2), messages.next())
        .await
        .expect("a marked release published")
        .expect("a message");
}

/// A waiter that waits longer than one mark lasts (a 3 s hold against the 2 s mark) renews it,
/// so the release still wakes it at once, not at its next fallback poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_outlasts_its_first_mark_is_still_woken_at_once() {
    let lock = support::shared_lock().await;
    let key = LockKey::new(format!("publish-control/long/{}", std::process::id())).unwrap();
    let ttl = Duration::from_secs(10);
    for round in 0..2 {
        let held = lock
            .try_acquire(&key, ttl)
            .await
            .unwrap()
            .expect("free key");
        let waiter = {
            let (lock, key) = (lock.clone(), key.clone());
            tokio::spawn(async move {
                let lease = lock.acquire(&key, ttl, Duration::from_secs(20)).await;
                (std::time::Instant::now(), lease)
            })
        };
        tokio::time::sleep(Duration::from_millis(3_000)).await;
        let released = std::time::Instant::now();
        assert!(lock.release(held).await.unwrap());
        let (got, lease) = waiter.await.unwrap();
        let took = got - released;
        // Woken by the message: a few ms; a fallback poll would take 250-500 ms.
        assert!(
            took < Duration::from_millis(150),
            "round {round}: the hand-off after a long wait took {took:?}"
        );
        assert!(lock.release(lease.unwrap()).await.unwrap());
    }
}
