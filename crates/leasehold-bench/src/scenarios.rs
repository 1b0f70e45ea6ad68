//! The scenarios: each runs one contender for a fixed time and returns what it measured.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::sync::watch;

use crate::contenders::{Contender, RoundTrip};

/// What one run of one scenario measured.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Measured {
    /// Operations (pairs or critical sections) per second.
    pub(crate) per_sec: f64,
    /// Median latency in microseconds (pair latency, or hand-off latency when contended).
    pub(crate) p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub(crate) p99_us: f64,
    /// Contended only: how the lock was shared.
    pub(crate) fairness: Option<Fairness>,
}

/// How evenly a contended lock went around.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Fairness {
    /// Percent of acquisitions won by the task that had just released the lock.
    pub(crate) retaken_by_releaser_pct: f64,
    /// Fewest critical sections any task got.
    pub(crate) min_sections_per_task: u64,
    /// Most critical sections any task got.
    pub(crate) max_sections_per_task: u64,
    /// Median wait for the lock (from asking to holding), in milliseconds.
    pub(crate) wait_p50_ms: f64,
    /// 99th percentile wait, in milliseconds.
    pub(crate) wait_p99_ms: f64,
    /// Longest single wait for the lock, in milliseconds.
    pub(crate) worst_wait_ms: f64,
    /// How many hand-offs to another task the latency percentiles come from.
    pub(crate) hand_offs: u64,
}

pub(crate) fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at].as_secs_f64() * 1e6
}

pub(crate) fn measured(count: u64, elapsed: Duration, mut samples: Vec<Duration>) -> Measured {
    samples.sort_unstable();
    Measured {
        per_sec: count as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(&samples, 0.50),
        p99_us: percentile(&samples, 0.99),
        fairness: None,
    }
}

/// The server round trip: one task, back to back.
pub(crate) async fn round_trip(probe: &dyn RoundTrip, run_for: Duration) -> Measured {
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < run_for {
        let sent = Instant::now();
        probe.once().await;
        samples.push(sent.elapsed());
    }
    measured(samples.len() as u64, started.elapsed(), samples)
}

/// One task: acquire + release pairs on a free key, back to back.
pub(crate) async fn uncontended(
    contender: &dyn Contender,
    tag: &str,
    run_for: Duration,
) -> Measured {
    let key = format!("bench/{tag}/solo");
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < run_for {
        let sent = Instant::now();
        let held = contender
            .try_acquire(&key)
            .await
            .expect("a free key was busy");
        contender.release(held).await;
        samples.push(sent.elapsed());
    }
    measured(samples.len() as u64, started.elapsed(), samples)
}

/// `tasks` tasks, each on its own key, sharing the contender.
pub(crate) async fn distinct_keys(
    contender: Arc<dyn Contender>,
    tag: &str,
    tasks: usize,
    run_for: Duration,
) -> Measured {
    let pairs = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (contender, pairs) = (Arc::clone(&contender), Arc::clone(&pairs));
        let key = format!("bench/{tag}/distinct/{task}");
        handles.push(tokio::spawn(async move {
            while started.elapsed() < run_for {
                let held = contender
                    .try_acquire(&key)
                    .await
                    .expect("a free key was busy");
                contender.release(held).await;
                pairs.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for handle in handles {
        handle.await.expect("bench task");
    }
    measured(pairs.load(Ordering::Relaxed), started.elapsed(), Vec::new())
}

/// What a contending task does after releasing the lock.
#[derive(Debug, Clone, Copy)]
pub(crate) enum After {
    /// Stays away this long, then asks again (zero: asks again at once, racing the waiters).
    Away(Duration),
    /// Asks again only once another task has taken the lock, so every release is a hand-off
    /// to a task that is already waiting: the "queue of replicas" case.
    TakeTurns,
}

/// `tasks` tasks contending for one key, each holding it for `hold`, then doing `after`.
/// Latency is the hand-off to another task: from the moment a holder starts releasing to the
/// moment a *different* task has the lock. The releaser taking the lock straight back is
/// counted in `fairness` instead. With [`After::Away`] > 0 the releaser cannot retake the lock
/// at once, so every hand-off counts, not only those of waiters that happened to retry in the
/// instant between a release and the releaser's next attempt; with [`After::TakeTurns`] it
/// never competes with the waiters at all.
pub(crate) async fn contended(
    contender: Arc<dyn Contender>,
    tag: &str,
    tasks: usize,
    hold: Duration,
    after: After,
    run_for: Duration,
) -> Measured {
    struct Shared {
        /// (task, when it started releasing) of the last release.
        last_release: Mutex<Option<(usize, Instant)>>,
        hand_offs: Mutex<Vec<Duration>>,
        retaken: AtomicU64,
        waits: Mutex<Vec<Duration>>,
        stop: AtomicBool,
        /// Acquisitions so far, for tasks that wait for their turn.
        taken: watch::Sender<u64>,
    }
    let key = format!("bench/{tag}/contended/{after:?}");
    let shared = Arc::new(Shared {
        last_release: Mutex::new(None),
        hand_offs: Mutex::new(Vec::new()),
        retaken: AtomicU64::new(0),
        waits: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        taken: watch::Sender::new(0),
    });
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (contender, key, shared) = (Arc::clone(&contender), key.clone(), Arc::clone(&shared));
        handles.push(tokio::spawn(async move {
            let mut sections = 0u64;
            while !shared.stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let Some(held) = contender.acquire(&key).await else {
                    shared.stop.store(true, Ordering::Relaxed);
                    break;
                };
                shared.waits.lock().unwrap().push(asked.elapsed());
                shared.taken.send_modify(|n| *n += 1);
                let mut taken = shared.taken.subscribe();
                taken.borrow_and_update();
                match shared.last_release.lock().unwrap().take() {
                    Some((releaser, _)) if releaser == task => {
                        shared.retaken.fetch_add(1, Ordering::Relaxed);
                    }
                    Some((_, at)) => shared.hand_offs.lock().unwrap().push(at.elapsed()),
                    None => {}
                }
                sections += 1;
                // Hold it like a short critical section (a busy wait: tokio's timer is 1 ms coarse).
                spin(hold).await;
                if started.elapsed() >= run_for {
                    shared.stop.store(true, Ordering::Relaxed);
                }
                *shared.last_release.lock().unwrap() = Some((task, Instant::now()));
                contender.release(held).await;
                match after {
                    After::Away(away) => spin(away).await,
                    After::TakeTurns => {
                        // Until someone else has taken it (or the run stops).
                        while !shared.stop.load(Ordering::Relaxed) {
                            let wait = Duration::from_millis(50);
                            if tokio::time::timeout(wait, taken.changed()).await.is_ok() {
                                break;
                            }
                        }
                    }
                }
            }
            sections
        }));
    }
    let elapsed = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if shared.stop.load(Ordering::Relaxed) {
            break started.elapsed();
        }
    };
    // Pollers' waiters may be asleep for a while: give them time to notice `stop`.
    let mut per_task = Vec::new();
    for mut handle in handles {
        match tokio::time::timeout(Duration::from_secs(5), &mut handle).await {
            Ok(Ok(sections)) => per_task.push(sections),
            _ => {
                handle.abort();
                per_task.push(0);
            }
        }
    }
    let total: u64 = per_task.iter().sum();
    let samples = std::mem::take(&mut *shared.hand_offs.lock().unwrap());
    let hand_offs = samples.len() as u64;
    let mut waits = std::mem::take(&mut *shared.waits.lock().unwrap());
    waits.sort_unstable();
    let mut result = measured(total, elapsed, samples);
    result.fairness = Some(Fairness {
        retaken_by_releaser_pct: 100.0 * shared.retaken.load(Ordering::Relaxed) as f64
            / total.max(1) as f64,
        min_sections_per_task: per_task.iter().copied().min().unwrap_or(0),
        max_sections_per_task: per_task.iter().copied().max().unwrap_or(0),
        wait_p50_ms: percentile(&waits, 0.50) / 1e3,
        wait_p99_ms: percentile(&waits, 0.99) / 1e3,
        worst_wait_ms: waits.last().map_or(0.0, |w| w.as_secs_f64() * 1e3),
        hand_offs,
    });
    result
}

/// Waits `duration` without tokio's 1 ms timer granularity, yielding to other tasks.
pub(crate) async fn spin(duration: Duration) {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        tokio::task::yield_now().await;
    }
}
