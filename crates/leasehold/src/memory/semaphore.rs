//! [`DistributedSemaphore`] for [`MemoryLock`].

use std::{
    collections::HashMap,
    sync::{Arc, MutexGuard},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use tokio::sync::{futures::OwnedNotified, Notify};

use super::MemoryLock;
use crate::{
    admin::LockStatus,
    backend::{self, ttl, wait::Deadline, SentAt},
    capabilities::Capabilities,
    contract::DistributedLock,
    error::LockError,
    key::LockKey,
    lease::{Lease, LeaseKind, LeaseToken},
    semaphore::DistributedSemaphore,
};

/// One semaphore: its permits (each with the instant it ends) and the limit they were granted
/// under.
#[derive(Debug, Default)]
pub(super) struct Slot {
    holders: HashMap<LeaseToken, Instant>,
    limit: u32,
    /// The fence of the last grant, 0 before the first.
    last_fence: u64,
    /// Woken by every release and every extend that shortens a permit.
    changed: Arc<Notify>,
}

impl Slot {
    /// What [`LockAdmin`](crate::LockAdmin) reports; `None` if never granted.
    pub(super) fn status(&self, now: Instant) -> Option<LockStatus> {
        let live = self.holders.values().filter(|e| now < **e);
        let holders = u32::try_from(live.clone().count()).unwrap_or(u32::MAX);
        let remaining = live.max().map(|ends| *ends - now);
        (self.last_fence > 0).then(|| {
            backend::holders_status(
                Some(self.last_fence),
                holders,
                LeaseKind::Permit,
                remaining,
                Some(self.limit),
            )
        })
    }
}

enum Attempt {
    Won(Lease),
    Busy {
        changed: OwnedNotified,
        /// When the first permit ends by itself.
        until: Option<Instant>,
    },
}

impl MemoryLock {
    pub(super) fn semaphore_slots(&self) -> MutexGuard<'_, HashMap<LockKey, Slot>> {
        // As `slots`: every update is consistent at every point a panic could happen.
        self.shared
            .semaphores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn attempt_permit(
        &self,
        key: &LockKey,
        max_holders: u32,
        ttl: Duration,
    ) -> Result<Attempt, LockError> {
        let stamp = SentAt::now();
        let now = stamp.instant();
        let mut slots = self.semaphore_slots();
        let slot = slots.entry(key.clone()).or_default();
        slot.holders.retain(|_, ends| now < *ends);
        if !slot.holders.is_empty() && slot.limit != max_holders {
            return Err(backend::limit_mismatch(key, max_holders, slot.limit.into()));
        }
        if slot.holders.len() >= max_holders as usize {
            return Ok(Attempt::Busy {
                changed: Arc::clone(&slot.changed).notified_owned(),
                until: slot.holders.values().copied().min(),
            });
        }
        let fence = self.next_fence(key)?;
        let token = LeaseToken::random()?;
        slot.holders.insert(token, now + ttl);
        slot.limit = max_holders;
        slot.last_fence = fence;
        Ok(Attempt::Won(
            backend::lease(key.clone(), token, fence, ttl, stamp).of_kind(LeaseKind::Permit),
        ))
    }
}

/// Semaphores beside the mutexes and read/write locks: a key's semaphore is apart from both.
#[async_trait]
impl DistributedSemaphore for MemoryLock {
    async fn try_acquire(
        &self,
        key: &LockKey,
        max_holders: u32,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let max_holders = backend::check_max_holders(max_holders)?;
        let ttl = ttl::check(ttl)?;
        Ok(match self.attempt_permit(key, max_holders, ttl)? {
            Attempt::Won(lease) => Some(lease),
            Attempt::Busy { .. } => None,
        })
    }

    async fn acquire(
        &self,
        key: &LockKey,
        max_holders: u32,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let max_holders = backend::check_max_holders(max_holders)?;
        let ttl = ttl::check(ttl)?;
        let deadline = Deadline::after(wait);
        loop {
            let (changed, until) = match self.attempt_permit(key, max_holders, ttl)? {
                Attempt::Won(lease) => return Ok(lease),
                Attempt::Busy { changed, until } => (changed, until),
            };
            if deadline.has_passed() {
                return Err(deadline.timeout(key));
            }
            match until.map(|until| deadline.cap(until)).or(deadline.at()) {
                Some(wake) => tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep_until(wake.into()) => {}
                },
                None => changed.await,
            }
        }
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        backend::check_kind(lease, &[LeaseKind::Permit])?;
        let ttl = ttl::check(ttl)?;
        let stamp = SentAt::now();
        let now = stamp.instant();
        let mut slots = self.semaphore_slots();
        let Some(slot) = slots.get_mut(lease.key()) else {
            return Ok(false);
        };
        let Some(ends) = slot
            .holders
            .get_mut(&lease.token())
            .filter(|ends| now < **ends)
        else {
            return Ok(false);
        };
        let sooner = now + ttl < *ends;
        *ends = now + ttl;
        if sooner {
            slot.changed.notify_waiters();
        }
        backend::renew(lease, ttl, stamp);
        Ok(true)
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        backend::check_kind(&lease, &[LeaseKind::Permit])?;
        let now = Instant::now();
        let mut slots = self.semaphore_slots();
        let Some(slot) = slots.get_mut(lease.key()) else {
            return Ok(false);
        };
        let Some(ends) = slot.holders.remove(&lease.token()) else {
            return Ok(false);
        };
        slot.changed.notify_waiters();
        Ok(now < ends)
    }

    fn capabilities(&self) -> Capabilities {
        DistributedLock::capabilities(self)
    }
}
