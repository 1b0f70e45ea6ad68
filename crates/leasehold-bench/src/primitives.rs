//! Read/write locks and semaphores as contenders: a read acquire + release, and a permit of a
//! semaphore of 4, measured beside the same backend's mutex in the uncontended and 64-task
//! scenarios (they do not exclude, so the one-key scenarios, which count hand-offs of an
//! exclusive lock, skip them); and their own contended scenarios: a writer's hand-off while
//! readers churn, and a semaphore of 4 shared by 16 tasks.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use leasehold::{DistributedRwLock, DistributedSemaphore, LockKey};

use crate::{
    contenders::{Contender, Held},
    scenarios::{self, spin, Fairness, Measured},
};

const TTL: Duration = Duration::from_secs(10);
/// How long a contended scenario's task waits at most.
const WAIT: Duration = Duration::from_secs(10);

/// Read acquire + release of a read/write lock.
pub(crate) struct ReadSide {
    pub(crate) lock: Arc<dyn DistributedRwLock>,
    pub(crate) label: &'static str,
}

#[async_trait]
impl Contender for ReadSide {
    fn name(&self) -> String {
        self.label.into()
    }

    async fn try_acquire(&self, key: &str) -> Option<Held> {
        let key = LockKey::new(key).expect("bench key");
        let lease = self.lock.try_acquire_read(&key, TTL).await;
        lease
            .expect("leasehold try_acquire_read")
            .map(Held::Leasehold)
    }

    fn can_wait(&self) -> bool {
        false
    }

    async fn acquire(&self, _key: &str) -> Option<Held> {
        None
    }

    async fn release(&self, held: Held) {
        if let Held::Leasehold(lease) = held {
            self.lock
                .release(lease)
                .await
                .expect("leasehold release read");
        }
    }
}

/// One permit of a semaphore of 4.
pub(crate) struct Permit {
    pub(crate) semaphore: Arc<dyn DistributedSemaphore>,
    pub(crate) label: &'static str,
}

#[async_trait]
impl Contender for Permit {
    fn name(&self) -> String {
        self.label.into()
    }

    async fn try_acquire(&self, key: &str) -> Option<Held> {
        let key = LockKey::new(key).expect("bench key");
        let lease = self.semaphore.try_acquire(&key, 4, TTL).await;
        lease
            .expect("leasehold semaphore try_acquire")
            .map(Held::Leasehold)
    }

    fn can_wait(&self) -> bool {
        false
    }

    async fn acquire(&self, _key: &str) -> Option<Held> {
        None
    }

    async fn release(&self, held: Held) {
        if let Held::Leasehold(lease) = held {
            self.semaphore
                .release(lease)
                .await
                .expect("leasehold semaphore release");
        }
    }
}

/// Writer hand-off: `readers` tasks take, hold for 1 ms and release read leases of one key
/// back to back while one writer asks for the write side, holds it 1 ms and steps away 5 ms.
/// `per_sec` counts the writer's sections, `p50_us`/`p99_us` its hand-off (from the instant
/// the last reader left, or from its ask if later, to its grant); the fairness holds the
/// readers' min / max sections and the writer's whole wait (ask to grant).
pub(crate) async fn writer_hand_off(
    lock: Arc<dyn DistributedRwLock>,
    key: &str,
    readers: usize,
    run_for: Duration,
) -> Measured {
    struct Shared {
        /// Readers holding now (counted down before their release is sent).
        holding: AtomicU64,
        /// When the count last fell to 0.
        drained_at: Mutex<Instant>,
        stop: AtomicBool,
    }
    let key = LockKey::new(key).expect("bench key");
    let shared = Arc::new(Shared {
        holding: AtomicU64::new(0),
        drained_at: Mutex::new(Instant::now()),
        stop: AtomicBool::new(false),
    });
    let hold = Duration::from_millis(1);
    let mut handles = Vec::new();
    for _ in 0..readers {
        let (lock, key, shared) = (Arc::clone(&lock), key.clone(), Arc::clone(&shared));
        handles.push(tokio::spawn(async move {
            let mut sections = 0u64;
            while !shared.stop.load(Ordering::Relaxed) {
                let Ok(lease) = lock.acquire_read(&key, TTL, WAIT).await else {
                    break;
                };
                shared.holding.fetch_add(1, Ordering::SeqCst);
                sections += 1;
                spin(hold).await;
                {
                    // Under the lock, so a writer never reads a count and an instant that
                    // disagree.
                    let mut drained = shared.drained_at.lock().unwrap();
                    if shared.holding.fetch_sub(1, Ordering::SeqCst) == 1 {
                        *drained = Instant::now();
                    }
                }
                lock.release(lease).await.expect("leasehold release read");
            }
            sections
        }));
    }
    let started = Instant::now();
    let (mut hand_offs, mut waits, mut writes) = (Vec::new(), Vec::new(), 0u64);
    while started.elapsed() < run_for {
        let asked = Instant::now();
        let Ok(lease) = lock.acquire_write(&key, TTL, WAIT).await else {
            break;
        };
        let granted = Instant::now();
        let drained = *shared.drained_at.lock().unwrap();
        hand_offs.push(granted - drained.max(asked));
        waits.push(granted - asked);
        writes += 1;
        spin(hold).await;
        lock.release(lease).await.expect("leasehold release write");
        spin(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    shared.stop.store(true, Ordering::Relaxed);
    let per_task = join(handles).await;
    let mut result = scenarios::measured(writes, elapsed, hand_offs);
    result.fairness = Some(fairness(&per_task, 0, waits));
    result
}

/// A semaphore of `limit` shared by `tasks` tasks that each take a permit, hold it 1 ms and
/// release it, back to back. `per_sec` counts permits, `p50_us`/`p99_us` the hand-off from the
/// latest release to the next grant; the fairness holds min / max permits per task.
pub(crate) async fn semaphore_contended(
    semaphore: Arc<dyn DistributedSemaphore>,
    key: &str,
    tasks: usize,
    limit: u32,
    run_for: Duration,
) -> Measured {
    struct Shared {
        /// (task, when it started releasing) of the latest release.
        last_release: Mutex<Option<(usize, Instant)>>,
        hand_offs: Mutex<Vec<Duration>>,
        waits: Mutex<Vec<Duration>>,
        retaken: AtomicU64,
        stop: AtomicBool,
    }
    let key = LockKey::new(key).expect("bench key");
    let shared = Arc::new(Shared {
        last_release: Mutex::new(None),
        hand_offs: Mutex::new(Vec::new()),
        waits: Mutex::new(Vec::new()),
        retaken: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (semaphore, key, shared) = (Arc::clone(&semaphore), key.clone(), Arc::clone(&shared));
        handles.push(tokio::spawn(async move {
            let mut permits = 0u64;
            while !shared.stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let Ok(lease) = semaphore.acquire(&key, limit, TTL, WAIT).await else {
                    break;
                };
                let granted = Instant::now();
                shared.waits.lock().unwrap().push(granted - asked);
                if let Some((releaser, at)) = *shared.last_release.lock().unwrap() {
                    if releaser == task {
                        shared.retaken.fetch_add(1, Ordering::Relaxed);
                    } else if at > asked {
                        shared.hand_offs.lock().unwrap().push(granted - at);
                    }
                }
                permits += 1;
                spin(Duration::from_millis(1)).await;
                if started.elapsed() >= run_for {
                    shared.stop.store(true, Ordering::Relaxed);
                }
                *shared.last_release.lock().unwrap() = Some((task, Instant::now()));
                semaphore
                    .release(lease)
                    .await
                    .expect("leasehold semaphore release");
            }
            permits
        }));
    }
    let per_task = join(handles).await;
    let elapsed = started.elapsed();
    let total: u64 = per_task.iter().sum();
    let samples = std::mem::take(&mut *shared.hand_offs.lock().unwrap());
    let waits = std::mem::take(&mut *shared.waits.lock().unwrap());
    let mut result = scenarios::measured(total, elapsed, samples);
    let retaken = shared.retaken.load(Ordering::Relaxed);
    result.fairness = Some(fairness(&per_task, retaken, waits));
    result
}

/// Each task's count, or 0 for one that did not stop within 5 s.
async fn join(handles: Vec<tokio::task::JoinHandle<u64>>) -> Vec<u64> {
    let mut per_task = Vec::new();
    for mut handle in handles {
        match tokio::time::timeout(Duration::from_secs(5), &mut handle).await {
            Ok(Ok(n)) => per_task.push(n),
            _ => {
                handle.abort();
                per_task.push(0);
            }
        }
    }
    per_task
}

fn fairness(per_task: &[u64], retaken: u64, mut waits: Vec<Duration>) -> Fairness {
    waits.sort_unstable();
    let total: u64 = per_task.iter().sum();
    Fairness {
        retaken_by_releaser_pct: 100.0 * retaken as f64 / total.max(1) as f64,
        min_sections_per_task: per_task.iter().copied().min().unwrap_or(0),
        max_sections_per_task: per_task.iter().copied().max().unwrap_or(0),
        wait_p50_ms: scenarios::percentile(&waits, 0.50) / 1e3,
        wait_p99_ms: scenarios::percentile(&waits, 0.99) / 1e3,
        worst_wait_ms: waits.last().map_or(0.0, |w| w.as_secs_f64() * 1e3),
        hand_offs: waits.len() as u64,
    }
}
