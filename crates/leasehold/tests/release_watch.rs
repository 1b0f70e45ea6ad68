//! The guard's release watch: an announced release brings the next renewal forward, so a
//! forced release is seen at once instead of a renewal period later.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use leasehold::{
    memory::MemoryLock, Capabilities, DistributedLock, GuardState, Lease, LockError, LockKey,
    LockOptions, Locker, ReleaseWatch,
};
use tokio::sync::{futures::OwnedNotified, Notify};

/// `MemoryLock`, plus an announcement channel the test drives and a switch that makes
/// extends answer "not held" (as after a forced release).
#[derive(Debug, Default)]
struct Announcing {
    inner: MemoryLock,
    announce: Arc<Notify>,
    gone: AtomicBool,
    extends: AtomicUsize,
    /// Broken variant: announcements are never passed to the watch.
    deaf: bool,
    /// A watch that wakes at once, every time.
    restless: bool,
}

#[derive(Debug)]
struct Watch {
    announce: Arc<Notify>,
    pending: Option<OwnedNotified>,
    started: bool,
    restless: bool,
}

#[async_trait]
impl ReleaseWatch for Watch {
    async fn changed(&mut self) {
        if self.restless {
            return;
        }
        let wake = self
            .pending
            .take()
            .unwrap_or_else(|| Arc::clone(&self.announce).notified_owned());
        if !self.started {
            self.started = true;
            self.pending = Some(wake);
            return;
        }
        wake.await;
        self.pending = Some(Arc::clone(&self.announce).notified_owned());
    }
}

// A wrapper forwards every method, defaulted ones too: a forgotten `acquire` would poll.
#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl DistributedLock for Announcing {
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        self.inner.try_acquire(key, ttl).await
    }

    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        self.inner.acquire(key, ttl, wait).await
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        self.extends.fetch_add(1, Ordering::SeqCst);
        if self.gone.load(Ordering::SeqCst) {
            return Ok(false);
        }
        self.inner.extend(lease, ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        self.inner.release(lease).await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn watch_releases(&self, _key: &LockKey) -> Option<Box<dyn ReleaseWatch>> {
        let announce = if self.deaf {
            Arc::new(Notify::new())
        } else {
            Arc::clone(&self.announce)
        };
        Some(Box::new(Watch {
            announce,
            pending: None,
            started: false,
            restless: self.restless,
        }))
    }
}

/// A ttl whose renewals (every 10 s) cannot explain a loss seen within the test's 2 s.
fn options(watch: bool) -> LockOptions {
    LockOptions::default()
        .with_ttl(Duration::from_secs(30))
        .with_release_watch(watch)
}

/// Waits (up to 5 s) until `backend` has seen `n` extends, then checks that no more come.
async fn extends_settle_at(backend: &Announcing, n: usize) {
    let started = Instant::now();
    while backend.extends.load(Ordering::SeqCst) < n && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(backend.extends.load(Ordering::SeqCst), n, "extends");
}

/// Forces the lease out and announces it; returns how long the guard took to say `Lost`, or
/// `None` if it still says `Held` after 2 s.
async fn time_to_lost(backend: Arc<Announcing>, watch: bool) -> Option<Duration> {
    let locker = Locker::from_arc(backend.clone());
    let guard = locker.lock("announced", options(watch)).await.unwrap();
    // The watch's first wake checks once (the time between acquiring and watching).
    extends_settle_at(&backend, usize::from(watch)).await;
    assert_eq!(guard.state(), GuardState::Held);
    backend.gone.store(true, Ordering::SeqCst);
    let forced = Instant::now();
    backend.announce.notify_waiters();
    let lost = tokio::time::timeout(Duration::from_secs(2), guard.lost()).await;
    lost.ok().map(|state| {
        assert_eq!(state, GuardState::Lost);
        forced.elapsed()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_release_makes_the_guard_lost_at_once() {
    let took = time_to_lost(Arc::new(Announcing::default()), true).await;
    let took = took.expect("the guard still says Held 2 s after an announced forced release");
    // One in-memory extend: microseconds; generous for a loaded machine.
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_the_option_or_with_a_deaf_watch_the_loss_waits_for_renewal() {
    let without = time_to_lost(Arc::new(Announcing::default()), false).await;
    assert_eq!(without, None, "the watch is off by default");
    let deaf = Arc::new(Announcing {
        deaf: true,
        ..Announcing::default()
    });
    assert_eq!(
        time_to_lost(deaf, true).await,
        None,
        "a watch that hears nothing cannot make the guard lost early"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_while_held_only_cost_an_extend_each() {
    let backend = Arc::new(Announcing::default());
    let locker = Locker::from_arc(backend.clone());
    let guard = locker.lock("announced", options(true)).await.unwrap();
    extends_settle_at(&backend, 1).await;
    for announced in 1..=3 {
        backend.announce.notify_waiters();
        extends_settle_at(&backend, 1 + announced).await;
    }
    assert_eq!(guard.state(), GuardState::Held);
    assert!(guard.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_never_stops_waking_costs_at_most_ten_extends_a_second() {
    let backend = Arc::new(Announcing {
        restless: true,
        ..Announcing::default()
    });
    let locker = Locker::from_arc(backend.clone());
    let guard = locker.lock("restless", options(true)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let extends = backend.extends.load(Ordering::SeqCst);
    assert!((1..=11).contains(&extends), "{extends} extends in 1 s");
    assert_eq!(guard.state(), GuardState::Held);
    assert!(guard.release().await.unwrap());
}
