//! A worker process for cross-process tests: takes a lock on a SQLite file again and again and,
//! while holding it, does a slow read-modify-write of a counter file. Overlapping holders show
//! up as an `inside` marker that already exists (exit code 3) or as lost increments.
//!
//! ```text
//! lockworker SQLITE_PATH KEY ROUNDS WORK_DIR
//! ```

use std::{fs, io::ErrorKind, path::Path, process::ExitCode, time::Duration};

use leasehold::{DistributedLock, LockKey};
use leasehold_sqlite::SqliteLock;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, key, rounds, dir] = args.as_slice() else {
        eprintln!("usage: lockworker SQLITE_PATH KEY ROUNDS WORK_DIR");
        return ExitCode::from(2);
    };
    let (Ok(key), Ok(rounds)) = (LockKey::new(key.as_str()), rounds.parse::<u32>()) else {
        eprintln!("lockworker: bad KEY or ROUNDS");
        return ExitCode::from(2);
    };
    let lock = match SqliteLock::open(db).await {
        Ok(lock) => lock,
        Err(error) => {
            eprintln!("lockworker: {error}");
            return ExitCode::from(1);
        }
    };
    let dir = Path::new(dir);
    for _ in 0..rounds {
        let lease = match lock
            .acquire(&key, Duration::from_secs(10), Duration::from_secs(60))
            .await
        {
            Ok(lease) => lease,
            Err(error) => {
                eprintln!("lockworker: acquire failed: {error}");
                return ExitCode::from(1);
            }
        };
        let inside = dir.join("inside");
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&inside)
        {
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                eprintln!("lockworker: another process is inside the critical section");
                return ExitCode::from(3);
            }
            Err(error) => {
                eprintln!("lockworker: {error}");
                return ExitCode::from(1);
            }
        }
        let counter = dir.join("counter");
        let seen: u64 = fs::read_to_string(&counter)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(2)).await;
        if fs::write(&counter, (seen + 1).to_string())
            .and_then(|()| fs::remove_file(&inside))
            .is_err()
        {
            eprintln!("lockworker: cannot write in {}", dir.display());
            return ExitCode::from(1);
        }
        if !matches!(lock.release(lease).await, Ok(true)) {
            eprintln!("lockworker: release did not find the lease held");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
