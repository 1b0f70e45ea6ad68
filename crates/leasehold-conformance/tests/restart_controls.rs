//! Negative controls of `restart::check`: stores whose fences repeat after a restart or a
//! rollback must fail it; the same store with a clock-floored counter (the Redis design) and one
//! that keeps its counter must pass.

use std::{
    collections::HashMap,
    panic::{self, AssertUnwindSafe},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use leasehold::{
    backend::ttl, Capabilities, DistributedLock, Lease, LeaseToken, LockError, LockKey,
};
use leasehold_conformance::restart::{self, Store};

/// What a restart does to the store's fence counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    /// They survive (a durable store).
    Keeps,
    /// They are gone (no persistence).
    Forgets,
    /// They go back to the checkpoint (an older snapshot, a lagging replica).
    RollsBack,
    /// Forgotten, but every fence is floored at a clock that survives restarts.
    ForgetsWithClockFloor,
}

#[derive(Debug, Default, Clone)]
struct State {
    holders: HashMap<String, (LeaseToken, Instant)>,
    fences: HashMap<String, u64>,
    checkpoint: HashMap<String, u64>,
}

#[derive(Debug, Clone)]
struct Toy {
    restart: Restart,
    state: Arc<Mutex<State>>,
    /// The clock of the floor: microseconds since this instant.
    epoch: Instant,
}

impl Toy {
    fn new(restart: Restart) -> Self {
        Self {
            restart,
            state: Arc::default(),
            epoch: Instant::now(),
        }
    }

    fn restart_store(&self) {
        let mut state = self.state.lock().unwrap();
        state.holders.clear();
        match self.restart {
            Restart::Keeps => {}
            Restart::Forgets | Restart::ForgetsWithClockFloor => state.fences.clear(),
            Restart::RollsBack => state.fences = state.checkpoint.clone(),
        }
    }
}

#[async_trait]
impl Store for Toy {
    async fn checkpoint(&mut self) {
        let mut state = self.state.lock().unwrap();
        state.checkpoint = state.fences.clone();
    }

    async fn restart(&mut self) {
        self.restart_store();
    }
}

#[async_trait]
impl DistributedLock for Toy {
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let ttl = ttl::check(ttl)?;
        let sent_at = Instant::now();
        let token = LeaseToken::random()?;
        let mut state = self.state.lock().unwrap();
        let name = key.as_str().to_owned();
        if state
            .holders
            .get(&name)
            .is_some_and(|(_, until)| *until > sent_at)
        {
            return Ok(None);
        }
        state.holders.insert(name.clone(), (token, sent_at + ttl));
        let counter = state.fences.entry(name).or_default();
        *counter += 1;
        if self.restart == Restart::ForgetsWithClockFloor {
            let floor = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
            *counter = (*counter).max(floor);
        }
        Ok(Some(leasehold::backend::lease(
            key.clone(),
            token,
            *counter,
            ttl,
            sent_at,
        )))
    }

    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        leasehold::backend::wait::poll_acquire(self, key, ttl, wait).await
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        let ttl = ttl::check(ttl)?;
        let sent_at = Instant::now();
        let mut state = self.state.lock().unwrap();
        match state.holders.get_mut(lease.key().as_str()) {
            Some((token, until)) if *token == lease.token() && *until > sent_at => {
                *until = sent_at + ttl;
                leasehold::backend::renew(lease, ttl, sent_at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        let mut state = self.state.lock().unwrap();
        let ours = state
            .holders
            .get(lease.key().as_str())
            .is_some_and(|(token, until)| *token == lease.token() && *until > Instant::now());
        if ours {
            state.holders.remove(lease.key().as_str());
        }
        Ok(ours)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new().with_durable_fences(true)
    }
}

fn block_on(future: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(future);
}

/// Whether `restart::check` passes a toy store restarting as `restart` says.
fn passes(restart: Restart) -> bool {
    panic::catch_unwind(AssertUnwindSafe(|| {
        block_on(async move {
            let toy = Toy::new(restart);
            let make = {
                let toy = toy.clone();
                move || {
                    let toy = toy.clone();
                    async move { toy }
                }
            };
            restart::check(make, toy).await;
        });
    }))
    .is_ok()
}

#[test]
fn a_store_that_keeps_its_fences_passes() {
    assert!(passes(Restart::Keeps));
}

#[test]
fn a_store_that_floors_fences_at_a_clock_passes_although_it_forgets_them() {
    assert!(passes(Restart::ForgetsWithClockFloor));
}

#[test]
fn fences_restarting_at_one_are_caught() {
    assert!(!passes(Restart::Forgets), "fences restarting at 1 passed");
}

#[test]
fn fences_rolled_back_to_a_checkpoint_are_caught() {
    assert!(!passes(Restart::RollsBack), "rolled-back fences passed");
}

#[test]
fn a_backend_not_claiming_durable_fences_is_not_held_to_it() {
    #[derive(Debug)]
    struct Modest(Toy);
    #[async_trait]
    impl DistributedLock for Modest {
        async fn try_acquire(&self, k: &LockKey, t: Duration) -> Result<Option<Lease>, LockError> {
            self.0.try_acquire(k, t).await
        }
        async fn acquire(&self, k: &LockKey, t: Duration, w: Duration) -> Result<Lease, LockError> {
            self.0.acquire(k, t, w).await
        }
        async fn extend(&self, lease: &mut Lease, t: Duration) -> Result<bool, LockError> {
            self.0.extend(lease, t).await
        }
        async fn release(&self, lease: Lease) -> Result<bool, LockError> {
            self.0.release(lease).await
        }
    }
    block_on(async move {
        let toy = Toy::new(Restart::Forgets);
        let make = {
            let toy = toy.clone();
            move || {
                let toy = toy.clone();
                async move { Modest(toy) }
            }
        };
        restart::check(make, toy).await;
    });
}
