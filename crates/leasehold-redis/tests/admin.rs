//! `LockAdmin` on Redis: status, listing (with keys that look like globs and hash tags),
//! forced release that wakes a waiter, and the ACL it needs.

mod support;

use std::time::{Duration, Instant};

use leasehold::{DistributedLock, LockAdmin, LockKey};
use leasehold_redis::RedisLock;
use support::{shared_url, PrivateRedis};

const TTL: Duration = Duration::from_secs(30);

fn key(name: &str) -> LockKey {
    LockKey::new(name).unwrap()
}

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
async fn status_list_and_forced_release_see_the_server() {
    let lock = lock_in_fresh_namespace("status").await;
    let (a, b, other) = (key("jobs/a"), key("jobs/b"), key("other"));
    assert_eq!(lock.status(&a).await.unwrap().last_fence, None);
    let lease_a = lock.try_acquire(&a, TTL).await.unwrap().unwrap();
    let lease_b = lock.try_acquire(&b, TTL).await.unwrap().unwrap();
    lock.release(lease_b).await.unwrap();
    let _other = lock.try_acquire(&other, TTL).await.unwrap().unwrap();

    let status = lock.status(&a).await.unwrap();
    assert!(status.is_held());
    assert_eq!(status.last_fence, Some(lease_a.fence()));
    assert!(status.remaining.unwrap() > Duration::from_secs(25));
    let b_status = lock.status(&b).await.unwrap();
    assert!(!b_status.is_held());
    assert_eq!(b_status.last_fence, Some(1));

    let listed: Vec<_> = lock
        .list("jobs/")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, s)| (k.as_str().to_owned(), s.is_held()))
        .collect();
    assert_eq!(
        listed,
        vec![("jobs/a".to_owned(), true), ("jobs/b".to_owned(), false)]
    );
    assert_eq!(lock.list("").await.unwrap().len(), 3);

    assert!(lock.force_release(&a).await.unwrap());
    assert!(!lock.force_release(&a).await.unwrap());
    let mut stale = lease_a;
    assert!(
        !lock.extend(&mut stale, TTL).await.unwrap(),
        "the forced-out holder kept its lease"
    );
    let next = lock.try_acquire(&a, TTL).await.unwrap().unwrap();
    assert!(
        next.fence() > stale.fence(),
        "fences went back after a forced release"
    );
    remove_namespace(&lock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_treats_glob_characters_and_braces_in_keys_as_text() {
    let lock = lock_in_fresh_namespace("globs").await;
    let names = ["a*", "a*b", "a?", "a[1]", "a\\", "{a}", "a}{", "a%7B", "ab"];
    for name in names {
        let lease = lock.try_acquire(&key(name), TTL).await.unwrap().unwrap();
        lock.release(lease).await.unwrap();
    }
    let listed = |prefix: &'static str| {
        let lock = lock.clone();
        async move {
            lock.list(prefix)
                .await
                .unwrap()
                .into_iter()
                .map(|(k, _)| k.as_str().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("a*").await, ["a*", "a*b"]);
    assert_eq!(listed("a?").await, ["a?"]);
    assert_eq!(listed("a[").await, ["a[1]"]);
    assert_eq!(listed("a\\").await, ["a\\"]);
    assert_eq!(listed("{").await, ["{a}"]);
    assert_eq!(listed("a}").await, ["a}{"]);
    assert_eq!(listed("a%").await, ["a%7B"]);
    let mut all = names.map(str::to_owned).to_vec();
    all.sort();
    assert_eq!(listed("").await, all);
    remove_namespace(&lock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_release_wakes_a_waiter_at_once() {
    let lock = lock_in_fresh_namespace("wake").await;
    let k = key("held");
    let _held = lock.try_acquire(&k, TTL).await.unwrap().unwrap();
    let waiter = {
        let (lock, k) = (lock.clone(), k.clone());
        tokio::spawn(async move {
            lock.acquire(&k, TTL, Duration::from_secs(20))
                .await
                .map(|_| Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let forced = Instant::now();
    assert!(lock.force_release(&k).await.unwrap());
    let got = waiter.await.unwrap().unwrap();
    // The fallback poll alone would take 250-500 ms; generous for a noisy machine.
    assert!(
        got - forced < Duration::from_millis(200),
        "the waiter got the lock {:?} after the forced release",
        got - forced
    );
    remove_namespace(&lock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_side_works_with_the_documented_acl_plus_scan() {
    let server = PrivateRedis::start(&[]);
    let mut admin = server.admin();
    let acl = [
        "operator",
        "on",
        ">op-pw",
        "resetkeys",
        "~{leasehold:*",
        "resetchannels",
        "&{leasehold:*",
        "-@all",
        "+evalsha",
        "+script|load",
        "+set",
        "+get",
        "+del",
        "+incr",
        "+pttl",
        "+pexpire",
        "+publish",
        "+subscribe",
        "+unsubscribe",
        "+ping",
        "+scan",
    ];
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&acl[..])
        .query(&mut admin)
        .unwrap();
    let lock = RedisLock::connect(&format!("redis://operator:op-pw@127.0.0.1:{}", server.port))
        .await
        .unwrap();
    let k = key("acl/a");
    let lease = lock.try_acquire(&k, TTL).await.unwrap().unwrap();
    assert!(lock.status(&k).await.unwrap().is_held());
    assert_eq!(lock.list("acl/").await.unwrap().len(), 1);
    assert!(lock.force_release(&k).await.unwrap());
    assert!(!lock.release(lease).await.unwrap());
}
