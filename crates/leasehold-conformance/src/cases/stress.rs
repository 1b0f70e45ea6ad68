//! Many tasks on one key.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use leasehold::DistributedLock;

use crate::support::{ok, unique_key};

const TASKS: usize = 32;
const ROUNDS: usize = 50;

/// 32 tasks x 50 critical sections on one key: never two inside at once, every increment kept,
/// fences strictly increasing in the order the critical sections ran.
pub async fn stress_mutual_exclusion(lock: Arc<dyn DistributedLock>) {
    let case = "stress_mutual_exclusion";
    let key = unique_key(case, "k");
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    // A non-atomic read-modify-write: exact only under mutual exclusion.
    let counter = Arc::new(AtomicU64::new(0));
    let last_fence = Arc::new(AtomicU64::new(0));
    let fence_regressions = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (lock, key) = (Arc::clone(&lock), key.clone());
        let (inside, overlaps, counter) = (inside.clone(), overlaps.clone(), counter.clone());
        let (last_fence, fence_regressions) = (last_fence.clone(), fence_regressions.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let lease = ok(
                    case,
                    "acquire",
                    lock.acquire(&key, Duration::from_secs(10), Duration::from_secs(60))
                        .await,
                );
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                if last_fence.swap(lease.fence(), Ordering::SeqCst) >= lease.fence() {
                    fence_regressions.fetch_add(1, Ordering::SeqCst);
                }
                let seen = counter.load(Ordering::SeqCst);
                tokio::task::yield_now().await;
                counter.store(seen + 1, Ordering::SeqCst);
                inside.fetch_sub(1, Ordering::SeqCst);
                assert!(
                    ok(case, "release", lock.release(lease).await),
                    "[{case}] release of a held lease returned false"
                );
            }
        }));
    }
    for task in tasks {
        task.await.expect("stress task panicked");
    }
    let overlaps = overlaps.load(Ordering::SeqCst);
    let regressions = fence_regressions.load(Ordering::SeqCst);
    let total = counter.load(Ordering::SeqCst);
    assert_eq!(
        overlaps, 0,
        "[{case}] {overlaps} critical sections overlapped"
    );
    assert_eq!(
        regressions, 0,
        "[{case}] {regressions} fences did not increase in grant order"
    );
    assert_eq!(
        total,
        (TASKS * ROUNDS) as u64,
        "[{case}] lost updates: counter {total}"
    );
}
