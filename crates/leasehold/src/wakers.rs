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
    names: Mutex<HashMap<String, (usize, Arc<Notify>)>>,
}

impl Wakers {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn names(&self) -> MutexGuard<'_, HashMap<String, (usize, Arc<Notify>)>> {
        // Every update is a single step; a poisoned map is still consistent.
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a waiter for `name` until the returned handle is dropped.
    pub fn register(self: &Arc<Self>, name: &str) -> WakeHandle {
        let mut names = self.names();
        let entry = names
            .entry(name.to_owned())
            .or_insert_with(|| (0, Arc::new(Notify::new())));
        entry.0 += 1;
        WakeHandle {
            wakers: Arc::clone(self),
            name: name.to_owned(),
            notify: Arc::clone(&entry.1),
        }
    }

    /// Wakes one waiter of `name`: the one waiting longest, or, if none is waiting at this
    /// instant (all are busy trying), the next one to wait. A woken waiter that goes away
    /// without waking up passes the wake on to the next. For a release, where only one waiter
    /// can win: the others stay asleep instead of racing (and losing) for it.
    pub fn wake_one(&self, name: &str) {
        if let Some((_, notify)) = self.names().get(name) {
            notify.notify_one();
        }
    }

    /// Wakes every waiter of `name`.
    pub fn wake(&self, name: &str) {
        if let Some((_, notify)) = self.names().get(name) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter of every name.
    pub fn wake_all(&self) {
        for (_, notify) in self.names().values() {
            notify.notify_waiters();
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

/// One waiter's registration; see [`Wakers::register`].
#[derive(Debug)]
pub struct WakeHandle {
    wakers: Arc<Wakers>,
    name: String,
    notify: Arc<Notify>,
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
            entry.0 -= 1;
            if entry.0 == 0 {
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
}
