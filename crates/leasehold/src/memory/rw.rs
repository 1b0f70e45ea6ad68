//! [`DistributedRwLock`] for [`MemoryLock`].

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
    backend::{self, ttl, wait::Deadline, SentAt, WRITER_MARK_REFRESH},
    capabilities::Capabilities,
    contract::DistributedLock,
    error::LockError,
    key::LockKey,
    lease::{Lease, LeaseKind, LeaseToken},
    rwlock::DistributedRwLock,
};

/// One read/write lock: its readers, its writer and the marks of writers waiting for it, each
/// with the instant it ends.
#[derive(Debug, Default)]
pub(super) struct Slot {
    readers: HashMap<LeaseToken, Instant>,
    writer: Option<(LeaseToken, Instant)>,
    marks: HashMap<LeaseToken, Instant>,
    /// The fence of the last grant, 0 before the first.
    last_fence: u64,
    /// Woken by every release, every mark that goes and every extend that shortens a lease.
    changed: Arc<Notify>,
}

impl Slot {
    /// What [`LockAdmin`](crate::LockAdmin) reports; `None` if never granted.
    pub(super) fn status(&self, now: Instant) -> Option<LockStatus> {
        let (held_as, ends): (_, Vec<Instant>) = match self.writer.filter(|(_, e)| now < *e) {
            Some((_, ends)) => (LeaseKind::Write, vec![ends]),
            None => (
                LeaseKind::Read,
                self.readers
                    .values()
                    .copied()
                    .filter(|e| now < *e)
                    .collect(),
            ),
        };
        let remaining = ends.iter().max().map(|ends| *ends - now);
        let holders = u32::try_from(ends.len()).unwrap_or(u32::MAX);
        (self.last_fence > 0).then(|| {
            backend::holders_status(Some(self.last_fence), holders, held_as, remaining, None)
        })
    }

    fn prune(&mut self, now: Instant) {
        self.readers.retain(|_, ends| now < *ends);
        self.marks.retain(|_, ends| now < *ends);
        self.writer = self.writer.filter(|(_, ends)| now < *ends);
    }

    /// The end of the lease `token` of `kind`, if it is held.
    fn held(&mut self, kind: LeaseKind, token: LeaseToken) -> Option<&mut Instant> {
        match kind {
            LeaseKind::Read => self.readers.get_mut(&token),
            _ => self
                .writer
                .as_mut()
                .filter(|(held, _)| *held == token)
                .map(|(_, ends)| ends),
        }
    }
}

enum Attempt {
    Won(Lease),
    /// Busy: wake on a change, or at `until` (when what holds us back ends by itself).
    Busy {
        changed: OwnedNotified,
        until: Option<Instant>,
    },
}

/// A waiting writer's mark, removed when dropped: when the writer gets the lock, times out or
/// its future is dropped.
struct Mark<'a> {
    lock: &'a MemoryLock,
    key: &'a LockKey,
    token: LeaseToken,
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        let mut slots = self.lock.rw_slots();
        if let Some(slot) = slots.get_mut(self.key) {
            if slot.marks.remove(&self.token).is_some() {
                slot.changed.notify_waiters();
            }
        }
    }
}

impl MemoryLock {
    pub(super) fn rw_slots(&self) -> MutexGuard<'_, HashMap<LockKey, Slot>> {
        // As `slots`: every update is consistent at every point a panic could happen.
        self.shared
            .rw
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn attempt_read(&self, key: &LockKey, ttl: Duration) -> Result<Attempt, LockError> {
        let stamp = SentAt::now();
        let now = stamp.instant();
        let mut slots = self.rw_slots();
        let slot = slots.entry(key.clone()).or_default();
        slot.prune(now);
        if slot.writer.is_some() || !slot.marks.is_empty() {
            let until = slot
                .writer
                .map(|(_, ends)| ends)
                .into_iter()
                .chain(slot.marks.values().copied())
                .min();
            return Ok(Attempt::Busy {
                changed: Arc::clone(&slot.changed).notified_owned(),
                until,
            });
        }
        let fence = self.next_fence(key)?;
        let token = LeaseToken::random()?;
        slot.last_fence = fence;
        slot.readers.insert(token, now + ttl);
        Ok(Attempt::Won(
            backend::lease(key.clone(), token, fence, ttl, stamp).of_kind(LeaseKind::Read),
        ))
    }

    /// A write attempt; a busy one sets or refreshes `mark` if given.
    fn attempt_write(
        &self,
        key: &LockKey,
        ttl: Duration,
        mark: Option<LeaseToken>,
    ) -> Result<Attempt, LockError> {
        let stamp = SentAt::now();
        let now = stamp.instant();
        let mut slots = self.rw_slots();
        let slot = slots.entry(key.clone()).or_default();
        slot.prune(now);
        if slot.writer.is_some() || !slot.readers.is_empty() {
            if let Some(mark) = mark {
                slot.marks.insert(mark, now + self.writer_mark_ttl());
            }
            // Until the writer's lease ends, or the last reader's.
            let until = slot
                .writer
                .map(|(_, ends)| ends)
                .or_else(|| slot.readers.values().copied().max());
            return Ok(Attempt::Busy {
                changed: Arc::clone(&slot.changed).notified_owned(),
                until,
            });
        }
        let fence = self.next_fence(key)?;
        let token = LeaseToken::random()?;
        if let Some(mark) = mark {
            slot.marks.remove(&mark);
        }
        slot.last_fence = fence;
        slot.writer = Some((token, now + ttl));
        Ok(Attempt::Won(
            backend::lease(key.clone(), token, fence, ttl, stamp).of_kind(LeaseKind::Write),
        ))
    }
}

/// Waits for a change or `until`, never past the deadline or `refresh`.
async fn pause(
    deadline: &Deadline,
    changed: OwnedNotified,
    until: Option<Instant>,
    refresh: Option<Duration>,
) {
    let refresh = refresh.map(|every| Instant::now() + every);
    let wake = [until, refresh].into_iter().flatten().min();
    let wake = wake.map_or_else(|| deadline.at(), |wake| Some(deadline.cap(wake)));
    match wake {
        Some(wake) => tokio::select! {
            () = changed => {}
            () = tokio::time::sleep_until(wake.into()) => {}
        },
        None => changed.await,
    }
}

/// Read/write locks in the same map's sibling: a key's read/write lock is apart from its
/// mutex and its semaphore. Writer-preferring, with marks as on the server backends (see
/// [`with_writer_mark_ttl`](MemoryLock::with_writer_mark_ttl)).
#[async_trait]
impl DistributedRwLock for MemoryLock {
    async fn try_acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let ttl = ttl::check(ttl)?;
        Ok(match self.attempt_read(key, ttl)? {
            Attempt::Won(lease) => Some(lease),
            Attempt::Busy { .. } => None,
        })
    }

    async fn try_acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let ttl = ttl::check(ttl)?;
        Ok(match self.attempt_write(key, ttl, None)? {
            Attempt::Won(lease) => Some(lease),
            Attempt::Busy { .. } => None,
        })
    }

    async fn acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let ttl = ttl::check(ttl)?;
        let deadline = Deadline::after(wait);
        loop {
            let (changed, until) = match self.attempt_read(key, ttl)? {
                Attempt::Won(lease) => return Ok(lease),
                Attempt::Busy { changed, until } => (changed, until),
            };
            if deadline.has_passed() {
                return Err(deadline.timeout(key));
            }
            pause(&deadline, changed, until, None).await;
        }
    }

    async fn acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let ttl = ttl::check(ttl)?;
        let deadline = Deadline::after(wait);
        let mark = Mark {
            lock: self,
            key,
            token: LeaseToken::random()?,
        };
        let refresh = WRITER_MARK_REFRESH.min(self.writer_mark_ttl() / 3);
        loop {
            let (changed, until) = match self.attempt_write(key, ttl, Some(mark.token))? {
                Attempt::Won(lease) => return Ok(lease),
                Attempt::Busy { changed, until } => (changed, until),
            };
            if deadline.has_passed() {
                return Err(deadline.timeout(key));
            }
            pause(&deadline, changed, until, Some(refresh)).await;
        }
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        backend::check_kind(lease, &[LeaseKind::Read, LeaseKind::Write])?;
        let ttl = ttl::check(ttl)?;
        let stamp = SentAt::now();
        let now = stamp.instant();
        let mut slots = self.rw_slots();
        let Some(slot) = slots.get_mut(lease.key()) else {
            return Ok(false);
        };
        let changed = Arc::clone(&slot.changed);
        let Some(ends) = slot
            .held(lease.kind(), lease.token())
            .filter(|ends| now < **ends)
        else {
            return Ok(false);
        };
        let sooner = now + ttl < *ends;
        *ends = now + ttl;
        if sooner {
            changed.notify_waiters();
        }
        backend::renew(lease, ttl, stamp);
        Ok(true)
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        backend::check_kind(&lease, &[LeaseKind::Read, LeaseKind::Write])?;
        let now = Instant::now();
        let mut slots = self.rw_slots();
        let Some(slot) = slots.get_mut(lease.key()) else {
            return Ok(false);
        };
        let ended = match lease.kind() {
            LeaseKind::Read => slot.readers.remove(&lease.token()),
            _ => match slot.writer {
                Some((token, ends)) if token == lease.token() => {
                    slot.writer = None;
                    Some(ends)
                }
                _ => None,
            },
        };
        let Some(ends) = ended else {
            return Ok(false);
        };
        slot.changed.notify_waiters();
        Ok(now < ends)
    }

    fn capabilities(&self) -> Capabilities {
        DistributedLock::capabilities(self)
    }
}
