//! Bad configuration, a race on one free key, killed connections and a server crash.

mod support;

use std::{collections::HashSet, sync::Arc, time::Duration};

use leasehold::{DistributedLock, GuardState, LockError, LockKey, LockOptions, Locker};
use leasehold_postgres::PostgresLock;
use support::{shared_lock, shared_url, PrivateCluster};
use tokio::time::{sleep, timeout, Instant};

fn unique(name: &str) -> LockKey {
    LockKey::new(format!("pg-tests/{name}/{:?}", Instant::now())).unwrap()
}

#[tokio::test]
async fn hostile_names_are_rejected_before_any_sql_runs() {
    // An unreachable server: a connection attempt would fail differently, so an InvalidConfig
    // error proves the name was refused before connecting.
    let nowhere = "postgres://postgres:hunter2@127.0.0.1:1/postgres";
    let long = "t".repeat(64);
    for (schema, table, channel) in [
        ("public", "locks; DROP TABLE x", "c"),
        ("public", "locks\"", "c"),
        ("public", "lo'cks", "c"),
        ("public", long.as_str(), "c"),
        ("bad schema", "locks", "c"),
        ("public", "locks", "chan; NOTIFY x"),
    ] {
        let err = PostgresLock::builder()
            .url(nowhere)
            .schema(schema)
            .table(table)
            .channel(channel)
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(err, LockError::InvalidConfig { .. }),
            "{schema}.{table}/{channel}: {err:?}"
        );
        assert!(!err.to_string().contains("hunter2"));
    }
    let err = PostgresLock::connect("postgres://u:hunter2@h:notaport/db")
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::InvalidConfig { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_schema_and_table_are_created_and_used() {
    let table = format!("t_{}", std::process::id());
    let lock = PostgresLock::builder()
        .url(shared_url())
        .schema("leasehold_test")
        .table(&table)
        .build()
        .await
        .unwrap();
    assert!(lock
        .migration_sql()
        .contains(&format!("\"leasehold_test\".\"{table}\"")));
    lock.migrate().await.unwrap(); // idempotent
    let lease = lock
        .try_acquire(&unique("schema"), Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM leasehold_test.\"{table}\""))
        .fetch_one(lock.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1);
    assert!(lock.release(lease).await.unwrap());
    sqlx::query(&format!("DROP TABLE leasehold_test.\"{table}\""))
        .execute(lock.pool())
        .await
        .unwrap();
    assert!(!format!("{lock:?}").contains("password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_race_of_many_tasks_on_one_free_key_has_exactly_one_winner() {
    let lock: Arc<dyn DistributedLock> = Arc::new(shared_lock().await);
    let mut fences = Vec::new();
    for round in 0..5 {
        let key = unique(&format!("race{round}"));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (lock, key) = (Arc::clone(&lock), key.clone());
            tasks.push(tokio::spawn(async move {
                lock.try_acquire(&key, Duration::from_secs(30)).await
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            if let Some(lease) = task.await.unwrap().expect("no errors under contention") {
                winners.push(lease);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        let lease = winners.pop().unwrap();
        fences.push(lease.fence());
        lock.release(lease).await.unwrap();
    }
    // Each key is new, so each first fence is 1; the same key again must go up.
    assert!(fences.iter().all(|f| *f == 1), "{fences:?}");
    let key = unique("race-again");
    let mut seen = HashSet::new();
    let mut last = 0;
    for _ in 0..5 {
        let lease = lock
            .try_acquire(&key, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert!(lease.fence() > last && seen.insert(lease.fence()));
        last = lease.fence();
        lock.release(lease).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_do_not_disturb_lease_table_guards() {
    // A pool of its own, tagged, so only its connections (and its LISTEN connection) are killed.
    let tag = format!("leasehold-terminate-{}", std::process::id());
    let options: sqlx::postgres::PgConnectOptions = shared_url().parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.application_name(&tag))
        .await
        .unwrap();
    let lock = PostgresLock::builder().pool(pool).build().await.unwrap();
    let locker = Locker::new(lock.clone());
    let options = LockOptions::default()
        .with_ttl(Duration::from_secs(2))
        .with_renew_every(Duration::from_millis(200));
    let key = unique("terminate");
    let guard = locker.lock(&key, options).await.unwrap();
    sleep(Duration::from_millis(300)).await; // the LISTEN connection is up
    let admin = sqlx::PgPool::connect(&shared_url()).await.unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&tag)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(
        killed >= 2,
        "expected the pool's and the LISTEN connection, killed {killed}"
    );
    sleep(Duration::from_millis(2_500)).await; // longer than the ttl: renewals had to work
    assert_eq!(
        guard.state(),
        GuardState::Held,
        "a lease-table guard lost its lease to killed connections"
    );
    assert!(guard.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_restart_keeps_leases_and_fences_and_nothing_panics() {
    let cluster = PrivateCluster::start();
    let lock = PostgresLock::connect(&cluster.url()).await.unwrap();
    let locker = Locker::new(lock.clone());
    let options = LockOptions::default()
        .with_ttl(Duration::from_secs(4))
        .with_renew_every(Duration::from_millis(300));
    let key = LockKey::new("restart").unwrap();
    let guard = locker.lock(&key, options.clone()).await.unwrap();
    let fence = guard.fence();
    cluster.restart_immediately();
    sleep(Duration::from_secs(2)).await;
    // The row survived (committed before the crash) and renewals resumed after reconnecting.
    assert_eq!(
        guard.state(),
        GuardState::Held,
        "the lease did not survive an immediate restart"
    );
    assert!(
        locker
            .try_lock(&key, options.clone())
            .await
            .unwrap()
            .is_none(),
        "the key was free while held"
    );
    assert!(guard.release().await.unwrap());
    let next = timeout(Duration::from_secs(5), locker.lock(&key, options))
        .await
        .unwrap()
        .unwrap();
    assert!(
        next.fence() > fence,
        "fence went back after a restart: {} <= {fence}",
        next.fence()
    );
    next.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_holders_whose_backend_is_terminated_lose_the_lock_at_once() {
    let tag = format!("leasehold-advisory-terminate-{}", std::process::id());
    let options: sqlx::postgres::PgConnectOptions = shared_url().parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.application_name(&tag))
        .await
        .unwrap();
    let lock = PostgresLock::builder()
        .pool(pool)
        .build_advisory()
        .await
        .unwrap();
    let other = support::shared_advisory_lock().await;
    let locker = Locker::new(lock.clone());
    let options = LockOptions::default()
        .with_ttl(Duration::from_secs(30))
        .with_renew_every(Duration::from_millis(300));
    let key = unique("advisory-terminate");
    let guard = locker.lock(&key, options).await.unwrap();
    assert!(other
        .try_acquire(&key, Duration::from_secs(5))
        .await
        .unwrap()
        .is_none());
    let admin = sqlx::PgPool::connect(&shared_url()).await.unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = $1 AND state = 'idle in transaction'",
    )
    .bind(&tag)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(
        killed, 1,
        "the holder's connection is the one idle in transaction"
    );
    // Free at once for others, long before the 30 s ttl ...
    let started = Instant::now();
    let taken = other
        .acquire(&key, Duration::from_secs(5), Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    // ... and the guard sees the loss at its next renewal.
    let state = timeout(Duration::from_secs(2), guard.lost())
        .await
        .expect("the guard did not see the loss");
    assert_eq!(state, GuardState::Lost);
    assert!(!guard.release().await.unwrap());
    assert!(other.release(taken).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_waiters_are_served_first_come_first_served() {
    let lock = Arc::new(support::shared_advisory_lock().await);
    let key = unique("fifo");
    let held = lock
        .try_acquire(&key, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for n in 0..4 {
        let (lock, key, order) = (Arc::clone(&lock), key.clone(), Arc::clone(&order));
        waiters.push(tokio::spawn(async move {
            let lease = lock
                .acquire(&key, Duration::from_secs(10), Duration::from_secs(10))
                .await
                .unwrap();
            order.lock().unwrap().push(n);
            lock.release(lease).await.unwrap();
        }));
        sleep(Duration::from_millis(150)).await; // queue up in a known order
    }
    lock.release(held).await.unwrap();
    for waiter in waiters {
        waiter.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisory_lease_won_after_a_long_wait_still_has_its_validity() {
    let lock = Arc::new(support::shared_advisory_lock().await);
    let key = unique("long-wait");
    let held = lock
        .try_acquire(&key, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    let releaser = {
        let lock = Arc::clone(&lock);
        tokio::spawn(async move {
            sleep(Duration::from_millis(1_500)).await;
            lock.release(held).await.unwrap();
        })
    };
    // Waits 1.5 s, longer than the ttl it asks for.
    let lease = lock
        .acquire(&key, Duration::from_secs(1), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        lease.remaining() > Duration::from_millis(800),
        "a 1 s lease won after a 1.5 s wait has only {:?} left",
        lease.remaining()
    );
    releaser.await.unwrap();
    assert!(lock.release(lease).await.unwrap());
}
