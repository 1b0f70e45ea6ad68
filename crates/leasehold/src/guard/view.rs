//! What a guard knows about its lease, shared between the guard, its renewal task and views.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{clock::Validity, key::LockKey};

/// Where a guard's lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GuardState {
    /// The last renewal (or the acquisition) succeeded and the lease is within its validity.
    Held,
    /// A renewal failed for a transient reason; the lease is still within its validity, so it
    /// may well still be held. Goes back to `Held` on the next successful renewal, or on to
    /// `Lost` when the validity ends first.
    Unknown,
    /// The lease is gone: the backend said the token no longer holds it, or its validity passed
    /// without a successful renewal. Terminal: it never flips back.
    Lost,
    /// The guard released the lease (explicitly or on drop). Terminal.
    Released,
}

impl GuardState {
    /// Whether the state can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Lost | Self::Released)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Status {
    pub(crate) state: GuardState,
    pub(crate) validity: Validity,
}

/// A read-only, cloneable view of a guard's lease: what the body of
/// [`Locker::with_lock`](crate::Locker::with_lock) receives, and what
/// [`LockGuard::view`](crate::LockGuard::view) hands out to other tasks.
///
/// A view cannot release the lock; it stays usable after the guard is gone and then reports
/// the guard's final state.
#[derive(Clone)]
pub struct LeaseView {
    key: LockKey,
    fence: u64,
    status: Arc<watch::Sender<Status>>,
}

impl fmt::Debug for LeaseView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseView")
            .field("key", &self.key)
            .field("fence", &self.fence)
            .field("state", &self.state())
            .finish()
    }
}

impl LeaseView {
    pub(crate) fn new(key: LockKey, fence: u64, status: Arc<watch::Sender<Status>>) -> Self {
        Self { key, fence, status }
    }

    /// The locked key.
    pub fn key(&self) -> &LockKey {
        &self.key
    }

    /// The lease's fencing token (see [`Lease::fence`](crate::Lease::fence)).
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// The instant until which the lease is valid, as of the last successful renewal:
    /// `now + remaining` at the time of the call while held, so it moves earlier after a
    /// suspend (see [`Lease::valid_until`](crate::Lease::valid_until)).
    pub fn valid_until(&self) -> Instant {
        self.status.borrow().validity.instant()
    }

    /// Time left in the lease's validity, counting time the machine spent suspended; zero once
    /// lost or released.
    pub fn remaining(&self) -> Duration {
        match self.state() {
            GuardState::Held | GuardState::Unknown => self.status.borrow().validity.remaining(),
            GuardState::Lost | GuardState::Released => Duration::ZERO,
        }
    }

    /// The lease's state now. A lease whose validity has passed is `Lost`, even if the renewal
    /// task has not run yet.
    pub fn state(&self) -> GuardState {
        self.expire_if_due();
        self.status.borrow().state
    }

    /// Completes when this guard no longer holds the lease, with the final state: `Lost`, or
    /// `Released` if the guard released it (or was dropped) first.
    ///
    /// Completes at the latest at [`valid_until`](Self::valid_until) if no renewal succeeds
    /// before it, without depending on the renewal task being scheduled; after a suspend,
    /// within a second of the resume (its timer re-checks the suspend-counting clock every
    /// second, because tokio's timers stop while the machine sleeps).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn lost(&self) -> GuardState {
        let mut changes = self.status.subscribe();
        loop {
            let status = *changes.borrow_and_update();
            if status.state.is_terminal() {
                return status.state;
            }
            tokio::select! {
                // The sender lives in `self`, so this never fails.
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(status.validity.next_check().into()) => {
                    self.expire_if_due();
                }
            }
        }
    }

    /// Marks the lease lost if its validity has passed; never touches a terminal state.
    pub(crate) fn expire_if_due(&self) {
        self.status.send_if_modified(|s| {
            let due = !s.state.is_terminal() && s.validity.remaining().is_zero();
            if due {
                s.state = GuardState::Lost;
                tracing::warn!(key = %self.key, fence = self.fence, "lease validity ended without renewal: lock lost");
            }
            due
        });
    }

    /// Records a renewal outcome unless the state is already terminal. Returns false if it was.
    pub(crate) fn update(&self, state: GuardState, validity: Option<Validity>) -> bool {
        let mut applied = false;
        self.status.send_if_modified(|s| {
            if s.state.is_terminal() {
                return false;
            }
            s.state = state;
            if let Some(validity) = validity {
                s.validity = validity;
            }
            applied = true;
            true
        });
        applied
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{clock::testing::suspend, memory::MemoryLock, GuardState, LockOptions, Locker};

    fn options() -> LockOptions {
        // No renewal before the checks below: the suspend alone must end the lease.
        LockOptions::default()
            .with_ttl(Duration::from_secs(30))
            .with_renew_every(Duration::from_secs(25))
    }

    /// Tests run on a current-thread runtime, so the injected suspend (per thread) reaches the
    /// renewal task too.
    #[tokio::test]
    async fn a_suspend_past_the_validity_reports_lost_at_once() {
        let locker = Locker::new(MemoryLock::new());
        let guard = locker.lock("suspended", options()).await.unwrap();
        assert_eq!(guard.state(), GuardState::Held);
        let before = guard.valid_until();
        suspend(Duration::from_secs(10));
        let left = guard.remaining();
        assert!(
            left < Duration::from_secs(20),
            "{left:?} left after a 10 s suspend"
        );
        assert!(guard.valid_until() <= before - Duration::from_secs(10));
        assert_eq!(guard.state(), GuardState::Held);
        suspend(Duration::from_secs(25));
        assert_eq!(guard.state(), GuardState::Lost);
        assert_eq!(guard.remaining(), Duration::ZERO);
    }

    /// `lost()` and the renewal task wait on tokio timers, which do not count suspend: they
    /// must still notice within about a second (2.5 s allowed for a loaded machine; without
    /// the re-check it takes the whole 30 s validity).
    #[tokio::test]
    async fn lost_fires_within_a_second_or_so_of_a_resume() {
        let locker = Locker::new(MemoryLock::new());
        let guard = locker.lock("resumed", options()).await.unwrap();
        let view = guard.view();
        let lost = tokio::spawn(async move { view.lost().await });
        tokio::time::sleep(Duration::from_millis(50)).await; // lost() is waiting
        suspend(Duration::from_secs(60));
        let started = tokio::time::Instant::now();
        let state = tokio::time::timeout(Duration::from_secs(5), lost)
            .await
            .expect("lost() did not notice the suspend")
            .unwrap();
        assert_eq!(state, GuardState::Lost);
        assert!(
            started.elapsed() <= Duration::from_millis(2_500),
            "{:?}",
            started.elapsed()
        );
    }
}
