//! Fences across store failures: `leasehold_conformance::restart` with every connection closed
//! and the file reopened, and a holder process killed with SIGKILL mid-lease.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use leasehold::{DistributedLock, LockKey};
use leasehold_sqlite::SqliteLock;

/// Set in the child process of `a_holder_killed_with_sigkill_...`: the database to hold a
/// lock in.
const CHILD_DB: &str = "LEASEHOLD_SQLITE_TEST_HOLDER_DB";

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("leasehold-sqlite-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(format!("{name}.db"));
    let _ = std::fs::remove_file(&file);
    file
}

async fn open(path: PathBuf) -> SqliteLock {
    SqliteLock::open(&path).await.expect("open the database")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_increase_across_a_close_and_reopen() {
    let path = temp_db("reopen");
    // The case drops every lock (closing the pool) before it "restarts" the store.
    leasehold_conformance::restart::check(|| open(path.clone()), || async {}).await;
}

/// Not a test on its own: the holder process of the next test (a no-op without `CHILD_DB`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_process() {
    let Ok(path) = std::env::var(CHILD_DB) else {
        return;
    };
    let lock = open(path.into()).await;
    let lease = lock
        .try_acquire(&LockKey::new("killed").unwrap(), Duration::from_secs(2))
        .await
        .expect("child acquire")
        .expect("child: the key is free");
    println!("holding fence {}", lease.fence());
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_with_sigkill_leaves_a_higher_fence_for_the_next_holder() {
    let path = temp_db("killed");
    let lock = open(path.clone()).await;
    let key = LockKey::new("killed").unwrap();
    for _ in 0..3 {
        let lease = lock
            .try_acquire(&key, Duration::from_secs(2))
            .await
            .unwrap()
            .unwrap();
        lock.release(lease).await.unwrap();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "holder_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DB, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the holder process");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let child_fence: u64 = loop {
        let line = lines
            .next()
            .expect("the holder process ended before holding")
            .unwrap();
        // libtest may print `test holder_process ... ` on the same line first.
        if let Some((_, fence)) = line.split_once("holding fence ") {
            break fence.trim().parse().unwrap();
        }
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        lock.try_acquire(&key, Duration::from_secs(2))
            .await
            .unwrap()
            .is_none(),
        "a killed holder's lease ended before its ttl"
    );
    let next = lock
        .acquire(&key, Duration::from_secs(2), Duration::from_secs(10))
        .await
        .expect("the killed holder's lease expires");
    assert!(
        next.fence() > child_fence && child_fence > 3,
        "fence {} after the killed holder's {child_fence}",
        next.fence()
    );
}

/// Another connection holding the write lock past the busy timeout: `try_acquire` fails with a
/// transient error (nobody may hold the key; "held" would be a lie), and a waiting acquire
/// keeps trying until its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_past_the_busy_timeout_is_a_transient_error_not_contention() {
    let path = temp_db("busy");
    let lock = SqliteLock::builder(&path)
        .busy_timeout(Duration::from_millis(200))
        .open()
        .await
        .unwrap();
    let mut other = lock.pool().acquire().await.unwrap();
    leasehold_sqlite::sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut *other)
        .await
        .unwrap();
    let key = LockKey::new("busy").unwrap();
    let err = lock
        .try_acquire(&key, Duration::from_secs(5))
        .await
        .expect_err("a locked database said the key is held or free");
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("locked"), "{err}");
    leasehold_sqlite::sqlx::query("ROLLBACK")
        .execute(&mut *other)
        .await
        .unwrap();
    drop(other);
    assert!(lock
        .try_acquire(&key, Duration::from_secs(5))
        .await
        .unwrap()
        .is_some());
}
