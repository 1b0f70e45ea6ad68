//! [`HandOffs`]: the locks this client's own releases just reserved for their waiters.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Past this many entries, a note first drops the expired ones.
const PRUNE_AT: usize = 64;

/// Lock names whose release by this client reserved them for waiters, with when the
/// reservation ends (measured on this process's monotonic clock from the release's reply, so
/// later than the server's own end by the reply's way back: a fraction of a millisecond, in
/// which this client may wait for a reservation already over).
///
/// A waiting acquire asks here before its first attempts: while the reservation lasts, the
/// server would refuse them anyway (only a caller that has waited may take a reserved lock),
/// so the releaser asking again at once does not spend two round trips, in front of the
/// waiter's own attempt, to hear it.
#[derive(Debug, Default)]
pub(crate) struct HandOffs {
    until: Mutex<HashMap<String, Instant>>,
}

impl HandOffs {
    /// `lock` was reserved for `reserved` from about now.
    pub(crate) fn note(&self, lock: &str, reserved: Duration) {
        let now = Instant::now();
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if until.len() >= PRUNE_AT {
            until.retain(|_, end| *end > now);
        }
        until.insert(lock.to_owned(), now + reserved);
    }

    /// `lock` was taken by one of this client's waiters: its reservation is over.
    pub(crate) fn taken(&self, lock: &str) {
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if !until.is_empty() {
            until.remove(lock);
        }
    }

    /// How much of a reservation of `lock` by this client is left, if any.
    pub(crate) fn pending(&self, lock: &str) -> Option<Duration> {
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        let end = *until.get(lock)?;
        let left = end
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero());
        if left.is_none() {
            until.remove(lock);
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_is_pending_until_it_ends_and_expired_ones_are_pruned() {
        let handoffs = HandOffs::default();
        assert!(handoffs.pending("a").is_none());
        handoffs.note("a", Duration::from_secs(60));
        assert!(handoffs
            .pending("a")
            .is_some_and(|left| left <= Duration::from_secs(60)));
        handoffs.note("c", Duration::from_secs(60));
        handoffs.taken("c");
        assert!(handoffs.pending("c").is_none(), "taken by a waiter");
        handoffs.note("b", Duration::ZERO);
        assert!(handoffs.pending("b").is_none());
        for i in 0..PRUNE_AT * 2 {
            handoffs.note(&format!("k{i}"), Duration::ZERO);
        }
        let entries = handoffs.until.lock().unwrap().len();
        assert!(entries <= PRUNE_AT + 1, "{entries} entries");
        assert!(
            handoffs.pending("a").is_some(),
            "unexpired entries are kept"
        );
    }
}
