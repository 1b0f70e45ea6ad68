//! [`LockAdmin`] and the release watch of [`MemoryLock`].

use std::{pin::Pin, sync::Arc, time::Instant};

use async_trait::async_trait;
use tokio::sync::{futures::OwnedNotified, Notify};

use super::{MemoryLock, Slot};
use crate::{
    admin::{LockAdmin, LockStatus, Primitive},
    backend,
    error::LockError,
    key::LockKey,
    release_watch::ReleaseWatch,
};

/// Status, listing and forced release over the same in-memory map, so code that administers
/// locks can be unit-tested too. A forced release wakes waiters as a release does.
#[async_trait]
impl LockAdmin for MemoryLock {
    async fn status(&self, key: &LockKey) -> Result<LockStatus, LockError> {
        let now = Instant::now();
        Ok(self
            .slots()
            .get(key)
            .map_or(backend::status(None, None), |slot| slot_status(slot, now)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(LockKey, LockStatus)>, LockError> {
        let now = Instant::now();
        let mut listed: Vec<_> = self
            .slots()
            .iter()
            .filter(|(key, slot)| slot.fence > 0 && key.as_str().starts_with(prefix))
            .map(|(key, slot)| (key.clone(), slot_status(slot, now)))
            .collect();
        // `str` orders by bytes, as every backend lists.
        listed.sort_unstable_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
        Ok(listed)
    }

    async fn force_release(&self, key: &LockKey) -> Result<bool, LockError> {
        let now = Instant::now();
        let mut slots = self.slots();
        let Some(slot) = slots.get_mut(key) else {
            return Ok(false);
        };
        let held = slot.holder.is_some_and(|h| h.is_live(now));
        slot.holder = None;
        if held {
            slot.released.notify_waiters();
        }
        Ok(held)
    }

    async fn status_of(
        &self,
        primitive: Primitive,
        key: &LockKey,
    ) -> Result<LockStatus, LockError> {
        let now = Instant::now();
        let status = match primitive {
            Primitive::RwLock => self.rw_slots().get(key).and_then(|s| s.status(now)),
            Primitive::Semaphore => self.semaphore_slots().get(key).and_then(|s| s.status(now)),
            _ => return self.status(key).await,
        };
        Ok(status.unwrap_or_else(|| backend::status(None, None)))
    }

    async fn list_of(
        &self,
        primitive: Primitive,
        prefix: &str,
    ) -> Result<Vec<(LockKey, LockStatus)>, LockError> {
        let now = Instant::now();
        let matching = |key: &LockKey| key.as_str().starts_with(prefix);
        let mut listed: Vec<_> = match primitive {
            Primitive::RwLock => self
                .rw_slots()
                .iter()
                .filter(|(key, _)| matching(key))
                .filter_map(|(key, slot)| Some((key.clone(), slot.status(now)?)))
                .collect(),
            Primitive::Semaphore => self
                .semaphore_slots()
                .iter()
                .filter(|(key, _)| matching(key))
                .filter_map(|(key, slot)| Some((key.clone(), slot.status(now)?)))
                .collect(),
            _ => return self.list(prefix).await,
        };
        listed.sort_unstable_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
        Ok(listed)
    }
}

fn slot_status(slot: &Slot, now: Instant) -> LockStatus {
    let remaining = slot
        .holder
        .filter(|h| h.is_live(now))
        .map(|h| h.expires_at - now);
    backend::status((slot.fence > 0).then_some(slot.fence), remaining)
}

/// A holder's [`ReleaseWatch`] on a key's release notification.
#[derive(Debug)]
pub(super) struct Watch {
    released: Arc<Notify>,
    started: bool,
    /// Registered before the previous return, so a release between two calls is kept (also
    /// across a dropped call).
    pending: Option<Pin<Box<OwnedNotified>>>,
}

impl Watch {
    pub(super) fn new(released: Arc<Notify>) -> Self {
        Self {
            released,
            started: false,
            pending: None,
        }
    }
}

#[async_trait]
impl ReleaseWatch for Watch {
    async fn changed(&mut self) {
        let released = &self.released;
        let wake = self
            .pending
            .get_or_insert_with(|| Box::pin(Arc::clone(released).notified_owned()));
        if !std::mem::replace(&mut self.started, true) {
            return;
        }
        wake.as_mut().await;
        self.pending = Some(Box::pin(Arc::clone(&self.released).notified_owned()));
    }
}
