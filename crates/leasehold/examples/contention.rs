//! Several workers contend for one lock, the main job of leasehold: only one of them runs the
//! "nightly report" at a time, and the report store rejects writes with stale fences.
//!
//! ```sh
//! cargo run -p leasehold --example contention
//! ```

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use leasehold::{memory::MemoryLock, DistributedLock, LockError, LockOptions, Locker};

/// The protected resource: accepts a write only with a fence at least as high as any it saw.
#[derive(Debug, Default)]
struct ReportStore {
    highest_fence: Mutex<u64>,
}

impl ReportStore {
    fn write(&self, worker: usize, fence: u64) -> bool {
        let mut highest = self.highest_fence.lock().unwrap_or_else(|e| e.into_inner());
        if fence < *highest {
            println!(
                "  store: rejected stale write from worker {worker} (fence {fence} < {highest})"
            );
            return false;
        }
        *highest = fence;
        true
    }
}

#[tokio::main]
async fn main() -> Result<(), LockError> {
    // Swap in leasehold-redis or leasehold-postgres here; nothing else changes.
    let backend: Arc<dyn DistributedLock> = Arc::new(MemoryLock::new());
    let locker = Locker::from_arc(backend);
    let store = Arc::new(ReportStore::default());

    let mut workers = Vec::new();
    for worker in 1..=4 {
        let (locker, store) = (locker.clone(), store.clone());
        workers.push(tokio::spawn(async move {
            let options = LockOptions::default()
                .with_ttl(Duration::from_secs(2))
                .with_wait(Duration::from_secs(10));
            locker
                .with_lock("nightly-report", options, |lease| async move {
                    println!("worker {worker}: holds the lock (fence {})", lease.fence());
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let written = store.write(worker, lease.fence());
                    println!("worker {worker}: report written: {written}; releasing");
                })
                .await
        }));
    }
    for worker in workers {
        worker.await.expect("worker panicked")?;
    }

    // A holder that cannot tell it was paused past its lease: the fence saves the store.
    let stale = locker
        .backend()
        .try_acquire(&"nightly-report".try_into()?, Duration::from_millis(50))
        .await?;
    let stale = stale.expect("the lock is free after the workers");
    tokio::time::sleep(Duration::from_millis(100)).await; // "paused" past its ttl
    let fresh = locker
        .lock("nightly-report", LockOptions::default())
        .await?;
    println!("worker 5: holds the lock (fence {})", fresh.fence());
    store.write(5, fresh.fence());
    println!(
        "worker 6 wakes up from a pause, still believing it holds fence {}",
        stale.fence()
    );
    store.write(6, stale.fence());
    fresh.release().await?;
    Ok(())
}
