//! Negative controls for the admin suite: deliberately broken admin sides must fail the cases
//! that guard against their flaw, and the same wrapper without a flaw passes every case.

mod controls;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use leasehold::{
    backend::wait::Deadline, memory::MemoryLock, Capabilities, DistributedLock, Lease, LockAdmin,
    LockError, LockKey, LockStatus, ReleaseWatch,
};
use leasehold_conformance::admin::{all_cases, run};
use tokio::sync::Notify;

/// One way to get an admin side wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    None,
    /// A forced release frees the key but wakes no waiter.
    SilentForcedRelease,
    /// `list` takes the prefix as a pattern (`*`, `%`: any run; `?`, `_`: any character).
    ListAsPattern,
    /// A forced release says it freed the key and leaves the holder in place.
    ForcedReleaseLeavesHolder,
    /// The status of a released key forgets its fence.
    ReleasedKeysLoseTheirFence,
    /// The status of a held key counts no holder.
    HoldersNotCounted,
}

/// `MemoryLock` with waiters of its own, woken by releases (and, without the flaw, by forced
/// releases), and an admin side that may be broken.
#[derive(Debug)]
struct Flawed {
    inner: MemoryLock,
    flaw: Flaw,
    released: Notify,
}

impl Flawed {
    fn new(flaw: Flaw) -> Self {
        Self {
            inner: MemoryLock::new(),
            flaw,
            released: Notify::new(),
        }
    }
}

// A wrapper forwards every method, defaulted ones too.
#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl DistributedLock for Flawed {
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        self.inner.try_acquire(key, ttl).await
    }

    /// Waits for this wrapper's own release notification, with a 1 s fallback poll.
    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let deadline = Deadline::after(wait);
        loop {
            // Registered before the attempt: a release right after it still wakes this.
            let released = self.released.notified();
            if let Some(lease) = self.inner.try_acquire(key, ttl).await? {
                return Ok(lease);
            }
            if deadline.has_passed() {
                return Err(deadline.timeout(key));
            }
            let wake = deadline.cap(Instant::now() + Duration::from_secs(1));
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        self.inner.extend(lease, ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        let released = self.inner.release(lease).await;
        self.released.notify_waiters();
        released
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new().with_notified_wait(true)
    }

    fn watch_releases(&self, _key: &LockKey) -> Option<Box<dyn ReleaseWatch>> {
        None
    }
}

/// Whether `text` starts with something `pattern` matches, taking `*`/`%` and `?`/`_` as
/// wildcards: the mistake of a listing built on `KEYS`, `SCAN MATCH` or `LIKE` unescaped.
fn pattern_prefix(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => true,
        Some(('*' | '%', rest)) => (0..=text.len()).any(|skip| pattern_prefix(rest, &text[skip..])),
        Some((&c, rest)) => text.split_first().is_some_and(|(&t, tail)| {
            (c == t || c == '?' || c == '_') && pattern_prefix(rest, tail)
        }),
    }
}

#[async_trait]
impl LockAdmin for Flawed {
    async fn status(&self, key: &LockKey) -> Result<LockStatus, LockError> {
        let status = self.inner.status(key).await?;
        if self.flaw == Flaw::ReleasedKeysLoseTheirFence && !status.is_held() {
            return Ok(leasehold::backend::status(None, None));
        }
        if self.flaw == Flaw::HoldersNotCounted {
            let mut uncounted = status;
            uncounted.holders = 0;
            return Ok(uncounted);
        }
        Ok(status)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(LockKey, LockStatus)>, LockError> {
        if self.flaw != Flaw::ListAsPattern {
            return self.inner.list(prefix).await;
        }
        let pattern: Vec<char> = prefix.chars().collect();
        let mut listed = self.inner.list("").await?;
        listed
            .retain(|(key, _)| pattern_prefix(&pattern, &key.as_str().chars().collect::<Vec<_>>()));
        Ok(listed)
    }

    async fn force_release(&self, key: &LockKey) -> Result<bool, LockError> {
        if self.flaw == Flaw::ForcedReleaseLeavesHolder {
            return Ok(self.inner.status(key).await?.is_held());
        }
        let freed = self.inner.force_release(key).await?;
        if self.flaw != Flaw::SilentForcedRelease {
            self.released.notify_waiters();
        }
        Ok(freed)
    }
}

/// The admin cases named in `names` (all when empty) that fail against `flaw`.
fn failing_cases(flaw: Flaw, names: &[&str]) -> Vec<&'static str> {
    controls::failing(
        all_cases(),
        |c| c.name,
        names,
        |case| {
            run(async { Flawed::new(flaw) }, case.run);
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
            run(async { Flawed::new(flaw) }, case.run);
        },
    );
}

#[test]
fn the_wrapper_without_flaws_passes_every_admin_case() {
    let failed = failing_cases(Flaw::None, &[]);
    assert!(failed.is_empty(), "the flawless control failed {failed:?}");
}

#[test]
fn a_forced_release_that_wakes_no_waiter_is_caught() {
    assert_caught(
        Flaw::SilentForcedRelease,
        &["forced_release_wakes_a_waiter"],
    );
}

#[test]
fn a_listing_that_takes_the_prefix_as_a_pattern_is_caught() {
    assert_caught(Flaw::ListAsPattern, &["list_takes_the_prefix_as_text"]);
}

#[test]
fn a_forced_release_that_leaves_the_holder_is_caught() {
    assert_caught(
        Flaw::ForcedReleaseLeavesHolder,
        &[
            "forced_release_frees_a_held_key_once",
            "forced_out_holder_cannot_extend_and_fences_go_on",
        ],
    );
}

#[test]
fn released_keys_that_lose_their_fence_are_caught() {
    assert_caught(
        Flaw::ReleasedKeysLoseTheirFence,
        &["status_of_a_released_key_keeps_its_fence"],
    );
}

#[test]
fn a_status_that_counts_no_holder_is_caught() {
    assert_caught(
        Flaw::HoldersNotCounted,
        &["status_of_a_held_key_shows_its_fence_and_time_left"],
    );
}
