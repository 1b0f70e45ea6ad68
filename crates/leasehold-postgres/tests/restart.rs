//! Fences across a crash (`leasehold_conformance::restart`), both strategies, on a private
//! cluster stopped with `pg_ctl stop -m immediate`. The cluster runs with
//! `synchronous_commit = off` (as a role's default may be) and `wal_writer_delay = 10s`, so WAL
//! that no commit flushed is still in shared memory when the server dies: only fences drawn by
//! a flushed commit survive.

mod support;

use leasehold_postgres::{PostgresLock, Strategy};
use support::PrivateCluster;

const SETTINGS: &[&str] = &["synchronous_commit=off", "wal_writer_delay=10s"];

// Both strategies through one helper: the deprecated `strategy` path hands every call of the
// advisory one to `PostgresAdvisoryLock`.
#[allow(deprecated)]
async fn connect(url: String, strategy: Strategy) -> PostgresLock {
    PostgresLock::builder()
        .url(url)
        .strategy(strategy)
        .build()
        .await
        .expect("connect to the private cluster")
}

async fn check(strategy: Strategy) {
    let cluster = PrivateCluster::start_with_settings(SETTINGS);
    let url = cluster.url();
    leasehold_conformance::restart::check(
        || connect(url.clone(), strategy),
        || {
            cluster.restart_immediately();
            async {}
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_table_fences_increase_across_immediate_stops() {
    check(Strategy::LeaseTable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_fences_increase_across_immediate_stops() {
    check(Strategy::Advisory).await;
}

/// Advisory waiters queued in the server take every connection of the lock's pool (and the
/// server's slots); each holder in turn must still draw its fence at once (on the fence
/// pool's connection, opened when the lock was built). With fences drawn on the lock's own
/// pool, each hand-off stalls for the request timeout: this test then fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_holders_draw_fences_while_waiters_fill_the_server() {
    use std::time::Duration;

    use leasehold::{DistributedLock, LockKey};

    let cluster = PrivateCluster::start_with_settings(&["max_connections=9"]);
    let lock = PostgresLock::builder()
        .url(cluster.url())
        .max_connections(6)
        .request_timeout(Duration::from_secs(6))
        .build_advisory()
        .await
        .expect("connect");
    let key = LockKey::new("crowded").unwrap();
    let held = lock
        .try_acquire(&key, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("free key");
    let mut waiters = Vec::new();
    for _ in 0..6 {
        let (lock, key) = (lock.clone(), key.clone());
        waiters.push(tokio::spawn(async move {
            let lease = lock
                .acquire(&key, Duration::from_secs(30), Duration::from_secs(40))
                .await?;
            let fence = lease.fence();
            tokio::time::sleep(Duration::from_millis(50)).await;
            lock.release(lease).await?;
            Ok::<u64, leasehold::LockError>(fence)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // the waiters fill the server
    let first = held.fence();
    let released_at = tokio::time::Instant::now();
    assert!(lock.release(held).await.unwrap());
    let mut fences = Vec::new();
    for waiter in waiters {
        fences.push(waiter.await.unwrap().expect("a waiter did not get the key"));
    }
    let took = released_at.elapsed();
    eprintln!("six advisory hand-offs with a full pool took {took:?}");
    assert!(
        took < Duration::from_secs(4),
        "six hand-offs took {took:?}: holders waited for a connection to draw their fences"
    );
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), 6, "fences repeated: {fences:?}");
    assert!(fences[0] > first, "{fences:?} after {first}");
}

/// A crash right after an acquisition whose `nextval` wrote no WAL of its own: another session
/// drew first, after a checkpoint, and never committed, so the record covering our value is
/// unflushed. The draw must flush a record of its own (it writes the key's row); with a bare
/// `nextval` the next fence after the crash repeats (measured: 3 -> 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_fences_survive_a_crash_after_another_session_drew_without_committing() {
    use std::time::Duration;

    use leasehold::{DistributedLock, LockKey};

    let cluster = PrivateCluster::start_with_settings(SETTINGS);
    let key = LockKey::new("uncommitted-neighbour").unwrap();
    let lock = connect(cluster.url(), Strategy::Advisory).await;
    let warm = lock
        .try_acquire(&key, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    lock.release(warm).await.unwrap();
    let side = sqlx::PgPool::connect(&cluster.url()).await.unwrap();
    sqlx::query("CHECKPOINT").execute(&side).await.unwrap();
    let mut neighbour = side.begin().await.unwrap();
    sqlx::query("SELECT nextval('public.leasehold_locks_fence')")
        .execute(&mut *neighbour)
        .await
        .unwrap();
    let lease = lock
        .try_acquire(&key, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let fence = lease.fence();
    lock.release(lease).await.unwrap();
    drop(lock);
    cluster.restart_immediately();
    drop(neighbour);
    let lock = connect(cluster.url(), Strategy::Advisory).await;
    let next = lock
        .acquire(&key, Duration::from_secs(30), Duration::from_secs(10))
        .await
        .unwrap();
    eprintln!("advisory fence {fence}, after the crash {}", next.fence());
    assert!(next.fence() > fence, "fence {} after {fence}", next.fence());
}

/// A holder whose session ends between the grant and its fence draw gets no lease: its fence
/// would come after the next holder's grant (and maybe above that holder's fence). The draw is
/// held up by a lock on the sequence while the holder's backend is terminated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisory_holder_whose_session_ends_before_its_fence_is_drawn_gets_no_lease() {
    use std::time::Duration;

    use leasehold::{DistributedLock, LockKey};

    let cluster = PrivateCluster::start();
    let key = LockKey::new("dies-before-its-fence").unwrap();
    let lock = PostgresLock::builder()
        .url(cluster.url())
        .request_timeout(Duration::from_secs(20))
        .build_advisory()
        .await
        .expect("connect");
    let side = sqlx::PgPool::connect(&cluster.url()).await.unwrap();
    let mut blocker = side.begin().await.unwrap();
    // Holds the sequence's ACCESS EXCLUSIVE lock until commit: every nextval waits.
    sqlx::query("ALTER SEQUENCE public.leasehold_locks_fence INCREMENT BY 1")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let attempt = {
        let (lock, key) = (lock.clone(), key.clone());
        tokio::spawn(async move { lock.try_acquire(&key, Duration::from_secs(30)).await })
    };
    let holder = loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted LIMIT 1",
        )
        .fetch_optional(&side)
        .await
        .unwrap();
        if let Some(pid) = pid {
            break pid;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(holder)
        .execute(&side)
        .await
        .unwrap();
    blocker.commit().await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(15), attempt)
        .await
        .expect("the attempt hung")
        .unwrap();
    assert!(
        outcome.is_err(),
        "a holder whose session ended before its fence draw got {outcome:?}"
    );
    let next = lock
        .try_acquire(&key, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the key is free");
    lock.release(next).await.unwrap();
}
