//! Leases expire by `CLOCK_BOOTTIME`, not the wall clock: a worker process whose wall clock is
//! stepped a day forward by libfaketime (`FAKETIME_DONT_FAKE_MONOTONIC=1`) can neither take a
//! lease that is still running nor leave one behind that outlives its ttl; leases of an earlier
//! boot are void; the old format is migrated, old binaries are refused, newer formats too.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use leasehold::{DistributedLock, LockAdmin, LockError, LockKey};
use leasehold_sqlite::{sqlx, SqliteLock};

/// Set in the worker process: `DB|MODE` (see [`worker`]).
const WORKER: &str = "LEASEHOLD_SQLITE_TEST_WORKER";

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("leasehold-sqlite-clock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(format!("{name}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    file
}

fn key(name: &str) -> LockKey {
    LockKey::new(name).unwrap()
}

fn boot_ms() -> i64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).unwrap();
    i64::try_from(Duration::from(now).as_millis()).unwrap()
}

fn wall_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

/// Not a test on its own: the worker process (a no-op without `WORKER`). Prints what its
/// clocks and SQLite's read, then `take`s the key `k` for 1 s (and exits without releasing) or
/// `try`s it (and releases).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker() {
    let Ok(spec) = std::env::var(WORKER) else {
        return;
    };
    let (db, mode) = spec.split_once('|').expect("DB|MODE");
    let lock = SqliteLock::open(db).await.expect("worker open");
    let sqlite_ms: i64 =
        sqlx::query_scalar("SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)")
            .fetch_one(lock.pool())
            .await
            .unwrap();
    println!(
        "clocks boot={} wall={} sqlite={sqlite_ms}",
        boot_ms(),
        wall_ms()
    );
    let lease = lock
        .try_acquire(&key("k"), Duration::from_secs(1))
        .await
        .unwrap();
    match lease {
        None => println!("result busy"),
        Some(lease) => {
            println!("result took {}", lease.fence());
            if mode == "try" {
                lock.release(lease).await.unwrap();
            }
        }
    }
}

/// What the worker printed.
struct Report {
    boot: i64,
    wall: i64,
    sqlite: i64,
    took: bool,
}

/// Runs the worker under `faketime -f +1d` with the monotonic clocks left alone.
fn run_worker_a_day_ahead(db: &Path, mode: &str) -> Report {
    let faketime = Command::new("faketime").arg("--version").output();
    if faketime.is_err() {
        panic!(
            "faketime is missing: install it with `apt-get install faketime` (scripts/services.sh \
             does, and scripts/test.sh runs that)"
        );
    }
    let out = Command::new("faketime")
        .args(["-f", "+1d"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "worker", "--nocapture", "--test-threads", "1"])
        .env(WORKER, format!("{}|{mode}", db.display()))
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .output()
        .expect("run the worker under faketime");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "worker failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> i64 {
        let at = text
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("no {name} in {text}"));
        text[at + name.len() + 1..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    Report {
        boot: field("boot"),
        wall: field("wall"),
        sqlite: field("sqlite"),
        took: text.contains("result took"),
    }
}

/// The worker's wall clock (and SQLite's, which an implementation on `julianday('now')` would
/// use) is a day ahead, its `CLOCK_BOOTTIME` is the real one.
fn assert_stepped(report: &Report, boot_before: i64) {
    let day = 86_400_000;
    for (what, ms) in [
        ("wall clock", report.wall),
        ("SQLite's clock", report.sqlite),
    ] {
        let ahead = ms - wall_ms();
        assert!(
            (day - 120_000..=day + 1_000).contains(&ahead),
            "the worker's {what} is {ahead} ms ahead, not a day: libfaketime did not reach it"
        );
    }
    assert!(
        (boot_before..=boot_ms()).contains(&report.boot),
        "libfaketime moved CLOCK_BOOTTIME ({} not in {boot_before}..)",
        report.boot
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_a_day_ahead_cannot_take_a_running_lease() {
    let db = temp_db("ahead-take");
    let lock = SqliteLock::open(&db).await.unwrap();
    let held = lock
        .try_acquire(&key("k"), Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let boot_before = boot_ms();
    let report = run_worker_a_day_ahead(&db, "try");
    assert_stepped(&report, boot_before);
    assert!(
        !report.took,
        "a worker a day ahead took a lease with 30 s to run"
    );
    assert!(lock.release(held).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_taken_a_day_ahead_ends_with_its_ttl() {
    let db = temp_db("ahead-leave");
    let lock = SqliteLock::open(&db).await.unwrap();
    let boot_before = boot_ms();
    let report = run_worker_a_day_ahead(&db, "take");
    assert_stepped(&report, boot_before);
    assert!(report.took, "the worker did not get the free key");
    let started = Instant::now();
    let lease = lock
        .acquire(&key("k"), Duration::from_secs(5), Duration::from_secs(10))
        .await
        .expect("a 1 s lease written a day ahead lasted past 10 s");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    lock.release(lease).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_of_an_earlier_boot_are_void() {
    let db = temp_db("earlier-boot");
    let lock = SqliteLock::open(&db).await.unwrap();
    sqlx::query(
        "INSERT INTO leasehold_locks (key, token, fence, boot, expires_ms)
         VALUES ('k', x'00', 41, 'an-earlier-boot', 9000000000000)",
    )
    .execute(lock.pool())
    .await
    .unwrap();
    assert!(!lock.status(&key("k")).await.unwrap().is_held());
    let lease = lock
        .try_acquire(&key("k"), Duration::from_secs(5))
        .await
        .unwrap()
        .expect("a lease of an earlier boot still held the key");
    assert_eq!(lease.fence(), 42);
}

/// The table as leasehold-sqlite wrote it before format 2, and its acquire statement.
const OLD_TABLE: &str = "CREATE TABLE leasehold_locks (
    key TEXT PRIMARY KEY NOT NULL, token BLOB, fence INTEGER NOT NULL, expires_at INTEGER)";
const OLD_NOW: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

async fn old_file(db: &Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::query(OLD_TABLE).execute(&pool).await.unwrap();
    let now = wall_ms();
    for (key, token, fence, expires_at) in [
        ("free", None, 5, None),
        ("held", Some(vec![1u8; 16]), 7, Some(now + 30_000)),
        ("expired", Some(vec![2u8; 16]), 9, Some(now - 1_000)),
    ] {
        sqlx::query("INSERT INTO leasehold_locks VALUES (?1, ?2, ?3, ?4)")
            .bind(key)
            .bind(token)
            .bind(fence)
            .bind(expires_at)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_format_is_migrated_keeping_fences_and_running_leases() {
    let db = temp_db("migrate");
    let old = old_file(&db).await;
    let lock = SqliteLock::open(&db).await.unwrap();
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(lock.pool())
        .await
        .unwrap();
    assert_eq!(version, 2);
    let held = lock.status(&key("held")).await.unwrap();
    let left = held.remaining.expect("the running lease was voided");
    assert!(
        left > Duration::from_secs(25) && left <= Duration::from_secs(30),
        "{left:?}"
    );
    assert!(lock
        .try_acquire(&key("held"), Duration::from_secs(5))
        .await
        .unwrap()
        .is_none());
    for (name, fence) in [("free", 6), ("expired", 10)] {
        let lease = lock
            .try_acquire(&key(name), Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{name} was not free after the migration"));
        assert_eq!(lease.fence(), fence, "{name}");
    }

    // An old binary's acquire of a free row fails with an error naming the format; its
    // extend and status cannot see a lease, so it never takes or keeps one.
    sqlx::query("UPDATE leasehold_locks SET token = NULL, boot = NULL, expires_ms = NULL WHERE key = 'free'")
        .execute(lock.pool())
        .await
        .unwrap();
    let old_acquire = format!(
        "INSERT INTO leasehold_locks (key, token, fence, expires_at) VALUES (?1, ?2, 1, {OLD_NOW} + ?3)
         ON CONFLICT (key) DO UPDATE
             SET token = excluded.token, fence = fence + 1, expires_at = excluded.expires_at
             WHERE token IS NULL OR expires_at <= {OLD_NOW}
         RETURNING fence"
    );
    for name in ["free", "brand-new"] {
        let refused = sqlx::query_scalar::<_, i64>(&old_acquire)
            .bind(name)
            .bind(vec![3u8; 16])
            .bind(30_000)
            .fetch_optional(&old)
            .await
            .expect_err("an old binary took a lock in a format-2 file");
        assert!(
            refused
                .to_string()
                .contains("leasehold_sqlite_format_2_needs_a_newer_leasehold_sqlite"),
            "{name}: {refused}"
        );
    }
    let old_extend = format!(
        "UPDATE leasehold_locks SET expires_at = {OLD_NOW} + 30000
         WHERE key = 'held' AND token = ?1 AND expires_at > {OLD_NOW}"
    );
    let extended = sqlx::query(&old_extend)
        .bind(vec![1u8; 16])
        .execute(&old)
        .await
        .unwrap();
    assert_eq!(
        extended.rows_affected(),
        0,
        "an old binary extended a format-2 lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_format_is_refused_with_a_clear_error() {
    let db = temp_db("newer");
    let lock = SqliteLock::open(&db).await.unwrap();
    sqlx::query("PRAGMA user_version = 3")
        .execute(lock.pool())
        .await
        .unwrap();
    drop(lock);
    let err = SqliteLock::open(&db).await.unwrap_err();
    match &err {
        LockError::InvalidConfig { .. } => {}
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("lease format 3") && text.contains("newer.db"),
        "{text}"
    );
}
