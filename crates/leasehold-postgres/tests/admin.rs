//! `LockAdmin` on PostgreSQL: status, listing in byte order, forced release that wakes a
//! waiter, the advisory strategy's refusal, and the same through PgBouncer.

mod support;

use std::time::{Duration, Instant};

use leasehold::{DistributedLock, LockAdmin, LockError, LockKey};
use leasehold_postgres::PostgresLock;
use support::{connect_shared, shared_advisory_lock};

const TTL: Duration = Duration::from_secs(30);

fn key(name: &str) -> LockKey {
    LockKey::new(name).unwrap()
}

/// A table of this test's own, so listings see only its keys.
fn table(name: &str) -> String {
    format!("admin_{name}_{}", std::process::id())
}

async fn drop_table(lock: &PostgresLock, table: &str) {
    sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(lock.pool())
        .await
        .unwrap();
}

async fn check_status_list_and_forced_release(lock: &PostgresLock) {
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
    assert!(!lock.status(&b).await.unwrap().is_held());

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_list_and_forced_release_see_the_table() {
    let name = table("status");
    let lock = connect_shared(PostgresLock::builder().table(&name)).await;
    check_status_list_and_forced_release(&lock).await;
    drop_table(&lock, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_is_in_byte_order_and_treats_like_patterns_as_text() {
    let name = table("order");
    let lock = connect_shared(PostgresLock::builder().table(&name)).await;
    let names = ["b", "B", "a_c", "abc", "a%", "é", "a"];
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
    assert_eq!(listed("").await, ["B", "a", "a%", "a_c", "abc", "b", "é"]);
    assert_eq!(listed("a_").await, ["a_c"]);
    assert_eq!(listed("a%").await, ["a%"]);
    drop_table(&lock, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_release_wakes_a_waiter_at_once() {
    let name = table("wake");
    let lock = connect_shared(PostgresLock::builder().table(&name)).await;
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
    // Without the notification the fallback poll takes 250-500 ms; generous for a noisy machine.
    assert!(
        got - forced < Duration::from_millis(200),
        "the waiter got the lock {:?} after the forced release",
        got - forced
    );
    drop_table(&lock, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_advisory_strategy_refuses_admin_calls_clearly() {
    let lock = shared_advisory_lock().await;
    let k = key("advisory/admin");
    for error in [
        lock.status(&k).await.unwrap_err(),
        lock.list("").await.unwrap_err(),
        lock.force_release(&k).await.unwrap_err(),
    ] {
        assert!(
            matches!(error, LockError::InvalidConfig { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("advisory"), "{error}");
        assert!(!error.is_transient());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_work_through_pgbouncer_transaction_pooling() {
    let url = std::env::var("LEASEHOLD_PGBOUNCER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:6432/postgres".to_owned());
    let name = table("bouncer");
    let lock = PostgresLock::builder()
        .url(&url)
        .table(&name)
        .transaction_pooler(true)
        .build()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach PgBouncer at {url}: {e}\nstart it with `scripts/services.sh` (it installs and starts pgbouncer)")
        });
    check_status_list_and_forced_release(&lock).await;
    let direct = connect_shared(PostgresLock::builder().table(&name)).await;
    drop_table(&direct, &name).await;
}
