//! [`Wakers`]: per-key wake-ups for backends that learn about releases by notification.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::{futures::OwnedNotified, Notify};

/// Waiters registered per name (a key, a channel), woken when a release of that name is
/// announced, or all at once when announcements may have been missed (a reconnect).
///
/// Backends keep one per listener connection: waiters [`register`](Self::register), the
/// listener calls [`wake`](Self::wake) for each notification. A name's entry lives while it
/// has registered waiters.
#[derive(Debug, Default)]
pub struct Wakers {
    names: Mutex<HashMap<String, Entry>>,
}

/// The registrations of one name.
#[derive(Debug, Default)]
struct Entry {
    /// Registered waiters; a wake for none is not kept (it would only wake the next one for
    /// nothing).
    waiter_handles: usize,
    holder_handles: usize,
    /// Waiters: one release, one of them woken.
    waiters: Arc<Notify>,
    /// Holders watching for releases they did not make: every one woken.
    holders: Arc<Notify>,
}

impl Wakers {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn names(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Every update is a single step; a poisoned map is still consistent.
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a waiter for `name` until the returned handle is dropped.
    pub fn register(self: &Arc<Self>, name: &str) -> WakeHandle {
        self.handle(name, false)
    }

    /// Registers a holder of `name` that wants to hear of every announced release (one it did
    /// not make means the lock may be gone), until the returned handle is dropped. Unlike a
    /// waiter's, a holder's wake-up is never taken from a waiter: every announcement wakes
    /// all holders and one waiter.
    pub fn register_holder(self: &Arc<Self>, name: &str) -> WakeHandle {
        self.handle(name, true)
    }

    fn handle(self: &Arc<Self>, name: &str, holder: bool) -> WakeHandle {
        let mut names = self.names();
        let entry = names.entry(name.to_owned()).or_default();
        let notify = if holder {
            entry.holder_handles += 1;
            &entry.holders
        } else {
            entry.waiter_handles += 1;
            &entry.waiters
        };
        WakeHandle {
            wakers: Arc::clone(self),
            name: name.to_owned(),
            notify: Arc::clone(notify),
            holder,
        }
    }

    /// Wakes one waiter of `name`: the one waiting longest, or, if none is waiting at this
    /// instant (all are busy trying), the next one to wait. A woken waiter that goes away
    /// without waking up passes the wake on to the next. For a release, where only one waiter
    /// can win: the others stay asleep instead of racing (and losing) for it.
    ///
    /// Every [holder](Self::register_holder) of `name` is woken too.
    pub fn wake_one(&self, name: &str) {
        if let Some(entry) = self.names().get(name) {
            if entry.waiter_handles > 0 {
                entry.waiters.notify_one();
            }
            entry.holders.notify_waiters();
        }
    }

    /// Wakes every waiter and holder of `name`.
    pub fn wake(&self, name: &str) {
        if let Some(entry) = self.names().get(name) {
            entry.waiters.notify_waiters();
            entry.holders.notify_waiters();
        }
    }

    /// Wakes every waiter and holder of every name.
    pub fn wake_all(&self) {
        for entry in self.names().values() {
            entry.waiters.notify_waiters();
            entry.holders.notify_waiters();
        }
    }

    /// How many names have waiters.
    pub fn len(&self) -> usize {
        self.names().len()
    }

    /// Whether no one is waiting.
    pub fn is_empty(&self) -> bool {
        self.names().is_empty()
    }
}

/// One waiter's or holder's registration; see [`Wakers::register`] and
/// [`Wakers::register_holder`].
#[derive(Debug)]
pub struct WakeHandle {
    wakers: Arc<Wakers>,
    name: String,
    notify: Arc<Notify>,
    holder: bool,
}

impl WakeHandle {
    /// A future that completes at the next wake-up of this name. It counts from the moment it is
    /// created, so create it *before* trying the lock: a release right after the attempt still
    /// wakes it.
    pub fn next_wake(&self) -> OwnedNotified {
        Arc::clone(&self.notify).notified_owned()
    }
}

impl Drop for WakeHandle {
    fn drop(&mut self) {
        let mut names = self.wakers.names();
        if let Some(entry) = names.get_mut(&self.name) {
            if self.holder {
                entry.holder_handles -= 1;
            } else {
                entry.waiter_handles -= 1;
            }
            if entry.waiter_handles + entry.holder_handles == 0 {
                names.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_wake_reaches_waiters_registered_before_it_and_entries_go_with_them() {
        let wakers = Wakers::new();
        let a = wakers.register("a");
        let b = wakers.register("b");
        let woken = a.next_wake();
        let not_woken = b.next_wake();
        wakers.wake("a");
        tokio::time::timeout(Duration::from_secs(1), woken)
            .await
            .expect("a woken");
        assert!(tokio::time::timeout(Duration::from_millis(50), not_woken)
            .await
            .is_err());
        assert_eq!(wakers.len(), 2);
        drop((a, b));
        assert!(wakers.is_empty());
    }

    #[tokio::test]
    async fn wake_one_wakes_the_longest_waiting_and_passes_on_when_it_left() {
        let wakers = Wakers::new();
        let handle = wakers.register("k");
        let mut first = Box::pin(handle.next_wake());
        let mut second = Box::pin(handle.next_wake());
        first.as_mut().enable();
        second.as_mut().enable();
        wakers.wake_one("k");
        // The first was chosen; it leaves without waking up: the wake goes to the second.
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), second)
            .await
            .expect("the wake was passed on");

        // One wake, one waiter: the other keeps sleeping.
        let mut a = Box::pin(handle.next_wake());
        let mut b = Box::pin(handle.next_wake());
        a.as_mut().enable();
        b.as_mut().enable();
        wakers.wake_one("k");
        tokio::time::timeout(Duration::from_secs(1), a)
            .await
            .expect("the longest waiting is woken");
        assert!(tokio::time::timeout(Duration::from_millis(50), b)
            .await
            .is_err());

        // A wake while nobody waits (all busy trying) is kept for the next one to wait.
        wakers.wake_one("k");
        tokio::time::timeout(Duration::from_secs(1), handle.next_wake())
            .await
            .expect("the wake was kept");
    }

    #[tokio::test]
    async fn holders_hear_every_release_without_taking_it_from_a_waiter() {
        let wakers = Wakers::new();
        let waiter = wakers.register("k");
        let holders = [wakers.register_holder("k"), wakers.register_holder("k")];
        let mut waiting = Box::pin(waiter.next_wake());
        waiting.as_mut().enable();
        let heard = holders.each_ref().map(WakeHandle::next_wake);
        wakers.wake_one("k");
        for heard in heard {
            tokio::time::timeout(Duration::from_secs(1), heard)
                .await
                .expect("every holder is woken");
        }
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the waiter still gets its wake");
        drop(waiter);
        assert_eq!(wakers.len(), 1, "the holders keep the name registered");
        drop(holders);
        assert!(wakers.is_empty());
    }
}
