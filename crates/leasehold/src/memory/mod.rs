//! [`MemoryLock`]: the in-process backend for tests and single-process programs.

mod admin;
mod rw;
mod semaphore;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use tokio::sync::{futures::OwnedNotified, Notify};

use crate::{
    backend::{self, ttl, wait::Deadline, SentAt},
    capabilities::Capabilities,
    contract::DistributedLock,
    error::LockError,
    key::LockKey,
    lease::{Lease, LeaseKind, LeaseToken},
    release_watch::ReleaseWatch,
};

/// Locks that live in this process's memory, with the full semantics of a real backend: ttls,
/// tokens, fences, extend and release.
///
/// Use it in unit tests of code that takes an `Arc<dyn DistributedLock>`, and in single-process
/// programs. Clones share the same locks. Waiters in [`acquire`](DistributedLock::acquire) are
/// woken by notification when a lock is released, and by a timer when the holder's ttl ends;
/// they do not poll.
///
/// Fences come from one counter shared by all keys, so they strictly increase per key (and
/// overall). Like the server backends' rows and counters, every key ever locked (or watched)
/// keeps an entry of about 150 bytes (its last fence, its wake-up), so
/// [`LockAdmin`](crate::LockAdmin) can report it: a program that locks unboundedly many
/// distinct keys grows by that much per key.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), leasehold::LockError> {
/// use std::time::Duration;
/// use leasehold::{memory::MemoryLock, DistributedLock, LockKey};
///
/// let locks = MemoryLock::new();
/// let key = LockKey::new("nightly-report")?;
/// let lease = locks.try_acquire(&key, Duration::from_secs(10)).await?.expect("free");
/// assert!(locks.try_acquire(&key, Duration::from_secs(10)).await?.is_none());
/// assert!(locks.release(lease).await?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryLock {
    shared: Arc<Shared>,
    /// See [`with_writer_mark_ttl`](Self::with_writer_mark_ttl); `None` for the default.
    writer_mark_ttl: Option<Duration>,
}

#[derive(Debug, Default)]
struct Shared {
    slots: Mutex<HashMap<LockKey, Slot>>,
    /// Read/write locks: their own key space.
    rw: Mutex<HashMap<LockKey, rw::Slot>>,
    /// Semaphores: their own key space.
    semaphores: Mutex<HashMap<LockKey, semaphore::Slot>>,
    last_fence: AtomicU64,
}

#[derive(Debug, Default)]
struct Slot {
    holder: Option<Holder>,
    /// The fence of the last acquisition.
    fence: u64,
    released: Arc<Notify>,
}

#[derive(Debug, Clone, Copy)]
struct Holder {
    token: LeaseToken,
    expires_at: Instant,
}

impl Holder {
    fn is_live(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

enum Attempt {
    Won(Lease),
    Busy {
        released: OwnedNotified,
        expires_at: Instant,
    },
}

impl MemoryLock {
    /// An empty set of locks.
    pub fn new() -> Self {
        Self::default()
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<LockKey, Slot>> {
        // A panic while holding this mutex cannot leave a slot half-updated (every update is a
        // single assignment), so a poisoned mutex is still consistent.
        self.shared
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long the mark of a writer waiting in
    /// [`acquire_write`](crate::DistributedRwLock::acquire_write) holds new readers back after
    /// the writer stops refreshing it (it refreshes it several times per mark ttl while it
    /// waits, and removes it when it stops waiting). Default 2 s, as on the server backends;
    /// only a writer whose future is leaked (never polled, never dropped) leaves its mark to
    /// this ttl.
    #[must_use]
    pub fn with_writer_mark_ttl(mut self, ttl: Duration) -> Self {
        self.writer_mark_ttl = Some(ttl);
        self
    }

    fn writer_mark_ttl(&self) -> Duration {
        self.writer_mark_ttl.unwrap_or(backend::WRITER_MARK_TTL)
    }

    /// The next fence: one counter for every key and primitive, so fences strictly increase
    /// per key.
    fn next_fence(&self, key: &LockKey) -> Result<u64, LockError> {
        self.shared
            .last_fence
            .fetch_add(1, Ordering::SeqCst)
            .checked_add(1)
            .ok_or_else(|| LockError::FenceOverflow { key: key.clone() })
    }

    fn attempt(&self, key: &LockKey, ttl: Duration) -> Result<Attempt, LockError> {
        let stamp = SentAt::now();
        let sent_at = stamp.instant();
        let mut slots = self.slots();
        let slot = slots.entry(key.clone()).or_default();
        if let Some(holder) = slot.holder.filter(|h| h.is_live(sent_at)) {
            // Registered while the map is locked, so a release after this point wakes us.
            let released = slot.released.clone().notified_owned();
            return Ok(Attempt::Busy {
                released,
                expires_at: holder.expires_at,
            });
        }
        let fence = self.next_fence(key)?;
        let token = LeaseToken::random()?;
        slot.fence = fence;
        slot.holder = Some(Holder {
            token,
            expires_at: sent_at + ttl,
        });
        Ok(Attempt::Won(backend::lease(
            key.clone(),
            token,
            fence,
            ttl,
            stamp,
        )))
    }
}

#[async_trait]
impl DistributedLock for MemoryLock {
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let ttl = ttl::check(ttl)?;
        Ok(match self.attempt(key, ttl)? {
            Attempt::Won(lease) => Some(lease),
            Attempt::Busy { .. } => None,
        })
    }

    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let ttl = ttl::check(ttl)?;
        let deadline = Deadline::after(wait);
        loop {
            let (released, expires_at) = match self.attempt(key, ttl)? {
                Attempt::Won(lease) => return Ok(lease),
                Attempt::Busy {
                    released,
                    expires_at,
                } => (released, expires_at),
            };
            if deadline.has_passed() {
                return Err(deadline.timeout(key));
            }
            let wake = deadline.cap(expires_at);
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        backend::check_kind(lease, &[LeaseKind::Exclusive])?;
        let ttl = ttl::check(ttl)?;
        let stamp = SentAt::now();
        let sent_at = stamp.instant();
        let mut slots = self.slots();
        let Some(slot) = slots.get_mut(lease.key()) else {
            return Ok(false);
        };
        let Some(holder) = slot
            .holder
            .as_mut()
            .filter(|h| h.token == lease.token() && h.is_live(sent_at))
        else {
            return Ok(false);
        };
        let expires_at = sent_at + ttl;
        let sooner = expires_at < holder.expires_at;
        holder.expires_at = expires_at;
        if sooner {
            // Waiters sleep until the expiry they saw; they must see the earlier one.
            slot.released.notify_waiters();
        }
        backend::renew(lease, ttl, stamp);
        Ok(true)
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        backend::check_kind(&lease, &[LeaseKind::Exclusive])?;
        let now = Instant::now();
        let mut slots = self.slots();
        let Some(slot) = slots.get_mut(lease.key()) else {
            return Ok(false);
        };
        let Some(holder) = slot.holder.filter(|h| h.token == lease.token()) else {
            return Ok(false);
        };
        slot.holder = None;
        slot.released.notify_waiters();
        Ok(holder.is_live(now))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_notified_wait(true)
            .with_server_clock(true)
    }

    /// Woken by every release of the key (a forced one included) and by an extend that
    /// shortens its lease.
    fn watch_releases(&self, key: &LockKey) -> Option<Box<dyn ReleaseWatch>> {
        let released = Arc::clone(&self.slots().entry(key.clone()).or_default().released);
        Some(Box::new(admin::Watch::new(released)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DistributedRwLock, DistributedSemaphore};

    #[tokio::test]
    async fn each_primitive_refuses_the_others_leases_and_keys_are_apart() {
        let locks = MemoryLock::new();
        let key = LockKey::new("k").unwrap();
        let ttl = Duration::from_secs(10);
        let mutex = DistributedLock::try_acquire(&locks, &key, ttl)
            .await
            .unwrap()
            .unwrap();
        // The same key as a read/write lock and as a semaphore is free: three resources.
        let mut read = locks.try_acquire_read(&key, ttl).await.unwrap().unwrap();
        let permit = DistributedSemaphore::try_acquire(&locks, &key, 1, ttl)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.kind(), LeaseKind::Read);
        assert_eq!(permit.kind(), LeaseKind::Permit);
        assert!(mutex.fence() < read.fence() && read.fence() < permit.fence());
        let refused = DistributedLock::extend(&locks, &mut read, ttl)
            .await
            .unwrap_err();
        let text = refused.to_string();
        assert!(text.contains("read") && text.contains("mutex"), "{text}");
        let refused = DistributedLock::release(&locks, permit.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(refused, LockError::InvalidConfig { .. }),
            "{refused}"
        );
        let refused = DistributedSemaphore::release(&locks, mutex.clone())
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("exclusive"), "{refused}");
        assert!(DistributedLock::release(&locks, mutex).await.unwrap());
        assert!(DistributedRwLock::release(&locks, read).await.unwrap());
        assert!(DistributedSemaphore::release(&locks, permit).await.unwrap());
    }
}
