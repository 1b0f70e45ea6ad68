//! Fences across store failures: the case behind [`Capabilities::durable_fences`].
//!
//! A backend claiming `durable_fences` promises that no fence is ever handed out twice, or below
//! one handed out before, across a restart of its store, a crash that rolls the store back to
//! an older state, or a failover to a replica that lagged. The suite cannot restart a store it
//! does not own, so the backend's test supplies a [`Store`]: how to stop and start the store
//! (and, for stores that can roll back, where to take the snapshot they later roll back to).
//!
//! ```ignore
//! leasehold_conformance::restart::check(
//!     || async { SqliteLock::open(&path).await.unwrap() },
//!     || async {}, // the case closes every connection before it "restarts" the store
//! )
//! .await;
//! ```
//!
//! [`Capabilities::durable_fences`]: leasehold::Capabilities::durable_fences

use std::{
    future::Future,
    time::{Duration, Instant},
};

use leasehold::{async_trait, DistributedLock, Lease, LockError, LockKey};

use crate::support::{ok, unique_key};

const CASE: &str = "restart";
/// The ttl of the lease that is still held when the store restarts: a durable store keeps it,
/// and the next holder waits it out.
const HELD_TTL: Duration = Duration::from_secs(1);
const TTL: Duration = Duration::from_secs(30);
/// How long the first acquisition after a restart may take (reconnects, recovery, the held
/// lease's ttl).
const AFTER_RESTART: Duration = Duration::from_secs(30);

/// A store the case may restart.
///
/// Any `FnMut() -> impl Future<Output = ()>` is a `Store` whose `restart` calls it and whose
/// `checkpoint` does nothing.
#[async_trait]
pub trait Store: Send {
    /// Marks the state a later [`restart`](Self::restart) may roll the store back to (e.g. for
    /// Redis: `SAVE`, and keep a copy of the snapshot). Called once, after three holders.
    /// Does nothing by default.
    async fn checkpoint(&mut self) {}

    /// Stops the store the way the test means (a crash, an immediate stop, a restart without
    /// persistence, a rollback to the checkpoint) and starts it again. Every lock the case
    /// made has been dropped before this is called; the case makes a new one afterwards and
    /// retries transient errors while the store comes back.
    async fn restart(&mut self);
}

#[async_trait]
impl<F, Fut> Store for F
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = ()> + Send,
{
    async fn restart(&mut self) {
        self().await;
    }
}

/// Checks that fences keep increasing across two restarts of the store: one between holders
/// (after seven holders, three of them before the checkpoint, the last one still holding with
/// a 1 s ttl), one right after an acquisition (the freshest fence is the one a store loses
/// first). After each restart the next holder of the key must get a fence above every fence
/// handed out before.
///
/// Backends that do not claim [`durable_fences`](leasehold::Capabilities::durable_fences) pass
/// without being restarted: they promise nothing here.
///
/// # Panics
///
/// With a message starting `[restart]` when a fence repeats or goes back, or when the key
/// cannot be taken within 30 s of a restart.
pub async fn check<L, M, Fut, S>(mut make: M, mut store: S)
where
    L: DistributedLock,
    M: FnMut() -> Fut,
    Fut: Future<Output = L>,
    S: Store,
{
    let lock = make().await;
    if !lock.capabilities().durable_fences {
        return;
    }
    let key = unique_key(CASE, "fences");
    let mut fences = Vec::new();
    hand_over(&lock, &key, 3, &mut fences).await;
    store.checkpoint().await;
    hand_over(&lock, &key, 4, &mut fences).await;
    let held = take(&lock, &key, HELD_TTL).await;
    fences.push(held.fence());
    drop(lock);
    store.restart().await;

    let lock = make().await;
    let after = after_restart(&lock, &key, &fences, "between holders").await;
    fences.push(after.fence());
    ok(CASE, "release", lock.release(after).await);
    let held = take(&lock, &key, HELD_TTL).await;
    fences.push(held.fence());
    drop(lock);
    store.restart().await;

    let lock = make().await;
    let after = after_restart(&lock, &key, &fences, "right after an acquisition").await;
    ok(CASE, "release", lock.release(after).await);
}

/// `count` holders in turn, each fence above the one before.
async fn hand_over(lock: &dyn DistributedLock, key: &LockKey, count: usize, fences: &mut Vec<u64>) {
    for _ in 0..count {
        let lease = take(lock, key, TTL).await;
        if let Some(&last) = fences.last() {
            assert!(
                lease.fence() > last,
                "[restart] fence {} after fence {last} without any restart",
                lease.fence()
            );
        }
        fences.push(lease.fence());
        ok(CASE, "release", lock.release(lease).await);
    }
}

async fn take(lock: &dyn DistributedLock, key: &LockKey, ttl: Duration) -> Lease {
    ok(CASE, "try_acquire", lock.try_acquire(key, ttl).await)
        .unwrap_or_else(|| panic!("[restart] {key} is busy, but only this case uses it"))
}

/// The key's next lease after a restart, which must be fenced above every fence before.
async fn after_restart(
    lock: &dyn DistributedLock,
    key: &LockKey,
    fences: &[u64],
    when: &str,
) -> Lease {
    let started = Instant::now();
    let lease = loop {
        let left = AFTER_RESTART.saturating_sub(started.elapsed());
        match lock.acquire(key, TTL, left).await {
            Ok(lease) => break lease,
            Err(error @ LockError::Timeout { .. }) => {
                panic!("[restart] {key} could not be taken within 30 s of a restart: {error}")
            }
            Err(error) if error.is_transient() && !left.is_zero() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("[restart] acquire after a restart failed: {error} ({error:?})"),
        }
    };
    let highest = fences.iter().copied().max().unwrap_or(0);
    // Shown with --nocapture: what the store did to the fences.
    eprintln!(
        "[restart] after a restart {when}: fence {} (before: {fences:?})",
        lease.fence()
    );
    assert!(
        lease.fence() > highest,
        "[restart] after a restart {when}, {key} got fence {} although fence {highest} was handed \
         out before (fences so far: {fences:?}): a stale holder's write would be accepted",
        lease.fence()
    );
    lease
}
