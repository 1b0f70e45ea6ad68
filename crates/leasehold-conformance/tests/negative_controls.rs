//! Negative controls: deliberately broken backends must fail the cases that guard against
//! their flaw. A suite that passes a broken backend is worth nothing.
//!
//! The same naive backend without a flaw must pass every case, so each failure below is caused
//! by the flaw alone.

mod controls;

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use leasehold::{
    backend::ttl, Capabilities, DistributedLock, Lease, LeaseToken, LockError, LockKey,
};
use leasehold_conformance::{all_cases, run};

/// One way to get a lock backend wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    None,
    /// Release deletes the key whoever holds it.
    ReleaseWithoutTokenCheck,
    /// Extend sets the holder again without checking token or expiry.
    ExtendWithoutTokenCheck,
    /// Acquire reads, yields, then writes: two tasks can both see the key free.
    NonAtomicAcquire,
    /// The ttl is never enforced.
    NoExpiry,
    /// Fences restart at 1 whenever the key is free.
    FenceResetsWhenFree,
    /// Every acquisition gets the same token.
    FixedToken,
    /// Bad ttls are passed to the "server" instead of rejected.
    NoTtlValidation,
    /// Braces are stripped from keys (a naive hash-tag "fix"), so distinct keys collide.
    KeysLoseBraces,
    /// Claims notified waiting but polls once a second.
    SlowWaiters,
    /// An attempt first stores a lock with a 100x ttl, then fixes it: cancellation leaves a ghost.
    GhostOnCancel,
    /// The "server" expires keys at half the requested ttl.
    ShortExpiry,
    /// Attempts take 3 ms in flight and the deadline cuts them off (`timeout_at`), so a zero
    /// or 2 ms wait times out on a free key.
    DeadlineCutsAttempt,
    /// At the deadline, an attempt that was cut off lands anyway: a ghost lock.
    CutAttemptLands,
    /// Claims notified waiting and waits for release messages (or the holder's expiry as first
    /// seen) alone: a key freed without a message is missed.
    NoFallback,
    /// Extend always says the lease is gone, while the key stays held.
    ExtendAlwaysFalse,
}

#[derive(Debug, Default)]
struct Entry {
    holder: Option<(LeaseToken, Instant)>,
    fence: u64,
}

#[derive(Debug)]
struct Naive {
    flaw: Flaw,
    keys: Mutex<HashMap<String, Entry>>,
    released: tokio::sync::Notify,
}

impl Naive {
    fn new(flaw: Flaw) -> Self {
        Self {
            flaw,
            keys: Mutex::new(HashMap::new()),
            released: tokio::sync::Notify::new(),
        }
    }

    fn stored_key(&self, key: &LockKey) -> String {
        if self.flaw == Flaw::KeysLoseBraces {
            key.as_str().replace(['{', '}'], "")
        } else {
            key.as_str().to_owned()
        }
    }

    fn with_entry<T>(&self, key: &LockKey, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut keys = self.keys.lock().unwrap();
        f(keys.entry(self.stored_key(key)).or_default())
    }

    fn live(&self, entry: &Entry, now: Instant) -> Option<LeaseToken> {
        entry
            .holder
            .filter(|(_, until)| self.flaw == Flaw::NoExpiry || now < *until)
            .map(|(token, _)| token)
    }

    /// How long the "server" keeps a key given `ttl`.
    fn lifetime(&self, ttl: Duration) -> Duration {
        if self.flaw == Flaw::ShortExpiry {
            ttl / 2
        } else {
            ttl
        }
    }

    /// Takes `key` for a token nobody knows, if it is free: a landed attempt whose reply never
    /// arrived. Whether it landed.
    fn land_ghost(&self, key: &LockKey, ttl: Duration) -> bool {
        let now = Instant::now();
        self.with_entry(key, |e| {
            let free = self.live(e, now).is_none();
            if free {
                e.fence += 1;
                e.holder = Some((LeaseToken::random().unwrap(), now + ttl));
            }
            free
        })
    }

    /// Waits for a release message or the holder's expiry as seen now, never past `deadline`.
    async fn wait_for_message(&self, key: &LockKey, deadline: &leasehold::backend::wait::Deadline) {
        let released = self.released.notified();
        let expiry = self.with_entry(key, |e| e.holder.map(|(_, until)| until));
        let wake = deadline.cap(expiry.unwrap_or_else(Instant::now));
        tokio::select! {
            () = released => {}
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }

    fn check_ttl(&self, ttl: Duration) -> Result<Duration, LockError> {
        if self.flaw == Flaw::NoTtlValidation {
            Ok(ttl.min(Duration::from_secs(3600)))
        } else {
            ttl::check(ttl)
        }
    }
}

#[async_trait]
impl DistributedLock for Naive {
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let ttl = self.check_ttl(ttl)?;
        let sent_at = Instant::now();
        let token = if self.flaw == Flaw::FixedToken {
            LeaseToken::from_bytes([7; 16])
        } else {
            LeaseToken::random()?
        };
        if self.flaw == Flaw::NonAtomicAcquire {
            let free = self.with_entry(key, |e| self.live(e, Instant::now()).is_none());
            tokio::task::yield_now().await;
            if !free {
                return Ok(None);
            }
        }
        if matches!(self.flaw, Flaw::DeadlineCutsAttempt) {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let ghost = self.flaw == Flaw::GhostOnCancel;
        let server_lifetime = self.lifetime(ttl);
        let granted = self.with_entry(key, |e| {
            if self.flaw != Flaw::NonAtomicAcquire && self.live(e, sent_at).is_some() {
                return None;
            }
            if self.flaw == Flaw::FenceResetsWhenFree && e.holder.is_none() {
                e.fence = 0;
            }
            e.fence += 1;
            let lifetime = if ghost { ttl * 100 } else { server_lifetime };
            e.holder = Some((token, sent_at + lifetime));
            Some(e.fence)
        });
        let Some(fence) = granted else {
            return Ok(None);
        };
        if ghost {
            // Longer than every cut the case makes (up to 2.85 ms, on tokio's 1 ms timer
            // ticks), so each cut lands in this window: a 1 ms window let the timer and the
            // sleep fire on the same tick, and the flaw slipped through now and then.
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.with_entry(key, |e| e.holder = Some((token, sent_at + ttl)));
        }
        Ok(Some(leasehold::backend::lease(
            key.clone(),
            token,
            fence,
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
        let deadline = leasehold::backend::wait::Deadline::after(wait);
        match self.flaw {
            Flaw::SlowWaiters => {}
            Flaw::DeadlineCutsAttempt => {
                let attempt = leasehold::backend::wait::poll_acquire(self, key, ttl, wait);
                return match deadline.at() {
                    Some(at) => tokio::time::timeout_at(at.into(), attempt)
                        .await
                        .map_err(|_| deadline.timeout(key))?,
                    None => attempt.await,
                };
            }
            Flaw::CutAttemptLands => {
                let outcome = leasehold::backend::wait::poll_acquire(self, key, ttl, wait).await;
                if matches!(outcome, Err(LockError::Timeout { .. })) {
                    // The attempt cut off at the deadline reaches the server a little later,
                    // and lands as soon as the key is free there (within 200 ms).
                    let lands_by = Instant::now() + Duration::from_millis(200);
                    while Instant::now() < lands_by && !self.land_ghost(key, ttl) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                return outcome;
            }
            Flaw::NoFallback => loop {
                if let Some(lease) = self.try_acquire(key, ttl).await? {
                    return Ok(lease);
                }
                if deadline.has_passed() {
                    return Err(deadline.timeout(key));
                }
                self.wait_for_message(key, &deadline).await;
            },
            _ => return leasehold::backend::wait::poll_acquire(self, key, ttl, wait).await,
        }
        loop {
            if let Some(lease) = self.try_acquire(key, ttl).await? {
                return Ok(lease);
            }
            if deadline.has_passed() {
                return Err(deadline.timeout(key));
            }
            let wake = deadline.cap(Instant::now() + Duration::from_secs(1));
            tokio::time::sleep_until(wake.into()).await;
        }
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        let ttl = self.check_ttl(ttl)?;
        let sent_at = Instant::now();
        if self.flaw == Flaw::ExtendAlwaysFalse {
            return Ok(false);
        }
        let unchecked = self.flaw == Flaw::ExtendWithoutTokenCheck;
        let lifetime = self.lifetime(ttl);
        let extended = self.with_entry(lease.key(), |e| {
            if !unchecked && self.live(e, sent_at) != Some(lease.token()) {
                return false;
            }
            e.holder = Some((lease.token(), sent_at + lifetime));
            true
        });
        if extended {
            leasehold::backend::renew(lease, ttl, sent_at);
        }
        Ok(extended)
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        let now = Instant::now();
        let unchecked = self.flaw == Flaw::ReleaseWithoutTokenCheck;
        // Waiters of the NoFallback flaw hear of every release.
        self.released.notify_waiters();
        Ok(self.with_entry(lease.key(), |e| {
            let held = self.live(e, now);
            if unchecked {
                e.holder = None;
                return held.is_some();
            }
            if held == Some(lease.token()) {
                e.holder = None;
                return true;
            }
            false
        }))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_notified_wait(matches!(self.flaw, Flaw::SlowWaiters | Flaw::NoFallback))
    }
}

/// The cases named in `names` (all when empty) that fail against a backend with `flaw`.
fn failing_cases(flaw: Flaw, names: &[&str]) -> Vec<&'static str> {
    controls::failing(
        all_cases(),
        |c| c.name,
        names,
        |case| {
            run(async { Naive::new(flaw) }, case.run);
        },
    )
}

fn assert_caught(flaw: Flaw, expected: &[&str]) {
    controls::assert_caught(
        &flaw,
        all_cases(),
        |c| c.name,
        expected,
        |case| {
            run(async { Naive::new(flaw) }, case.run);
        },
    );
}

#[test]
fn the_naive_backend_without_flaws_passes_every_case() {
    let failed = failing_cases(Flaw::None, &[]);
    assert!(failed.is_empty(), "the flawless control failed {failed:?}");
}

#[test]
fn release_without_token_check_is_caught() {
    assert_caught(
        Flaw::ReleaseWithoutTokenCheck,
        &["stale_release_and_extend_leave_new_holder_untouched"],
    );
}

#[test]
fn extend_without_token_check_is_caught() {
    assert_caught(
        Flaw::ExtendWithoutTokenCheck,
        &[
            "stale_release_and_extend_leave_new_holder_untouched",
            "extend_after_expiry_returns_false_and_does_not_resurrect",
            "guard_lost_fires_when_lease_taken_away",
            "with_lock_cancels_body_on_loss",
        ],
    );
}

#[test]
fn non_atomic_acquire_is_caught() {
    assert_caught(Flaw::NonAtomicAcquire, &["stress_mutual_exclusion"]);
}

#[test]
fn missing_expiry_is_caught() {
    assert_caught(
        Flaw::NoExpiry,
        &[
            "expiry_frees_the_key",
            "waiting_acquire_gets_lock_when_holder_expires",
            "guard_reports_lost_when_validity_ends",
        ],
    );
}

#[test]
fn fences_that_reset_are_caught() {
    assert_caught(
        Flaw::FenceResetsWhenFree,
        &["fences_increase_across_holders"],
    );
}

#[test]
fn repeated_tokens_are_caught() {
    assert_caught(Flaw::FixedToken, &["tokens_are_unique"]);
}

#[test]
fn unchecked_ttls_are_caught() {
    assert_caught(Flaw::NoTtlValidation, &["bad_ttls_are_rejected_alike"]);
}

#[test]
fn colliding_keys_are_caught() {
    assert_caught(
        Flaw::KeysLoseBraces,
        &["special_character_keys_work_and_do_not_collide"],
    );
}

#[test]
fn slow_waiters_claiming_notification_are_caught() {
    assert_caught(
        Flaw::SlowWaiters,
        &["waiting_acquire_gets_lock_soon_after_release"],
    );
}

#[test]
fn ghost_locks_left_by_cancellation_are_caught() {
    assert_caught(
        Flaw::GhostOnCancel,
        &["dropped_acquire_leaves_no_lock_beyond_its_ttl"],
    );
}

#[test]
fn a_store_that_expires_keys_early_is_caught() {
    assert_caught(Flaw::ShortExpiry, &["key_stays_held_until_valid_until"]);
}

#[test]
fn deadlines_that_cut_attempts_in_flight_are_caught() {
    assert_caught(
        Flaw::DeadlineCutsAttempt,
        &["zero_and_short_waits_take_a_free_key"],
    );
}

#[test]
fn cut_off_attempts_that_land_are_caught() {
    assert_caught(
        Flaw::CutAttemptLands,
        &["waiter_timing_out_around_a_release_leaves_no_ghost"],
    );
}

#[test]
fn waiting_on_release_messages_alone_is_caught() {
    assert_caught(
        Flaw::NoFallback,
        &["waiter_gets_the_key_without_a_release_notification"],
    );
}

#[test]
fn an_extend_that_always_says_lost_is_caught() {
    assert_caught(
        Flaw::ExtendAlwaysFalse,
        &[
            "extend_keeps_lease_past_original_ttl",
            "guard_renewal_keeps_lock_for_several_ttls",
            "guard_lost_fires_when_lease_taken_away",
            "key_stays_held_until_valid_until",
        ],
    );
}
