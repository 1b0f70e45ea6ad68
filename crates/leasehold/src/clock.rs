//! The clocks behind a lease's validity, for backend authors: [`SentAt`], the stamp taken
//! before a request that sets a ttl.
//!
//! Validity is counted on two clocks at once. `Instant` (Linux `CLOCK_MONOTONIC`) is what
//! tokio's timers and [`Lease::valid_until`](crate::Lease::valid_until) use, but it stops
//! while the machine is suspended; the servers' ttls do not. `CLOCK_BOOTTIME` counts suspend.
//! A stamp records how far apart the two clocks were when the request was sent; any growth of
//! that gap since is time the machine spent suspended, and comes off the lease's remaining
//! validity. So a process that resumes after its lease ran out on the server never reports the
//! lease as held.
//!
//! Other platforms: the gap is taken as zero, so validity follows `Instant` alone (on macOS it
//! does not count sleep, on Windows it does).

use std::time::{Duration, Instant};

/// Growth of the gap below this is read jitter (the two clocks are read one after the other),
/// not a suspend. Far below the drift allowance of every ttl (see [`crate::backend::ttl`]).
const SUSPEND_RESOLUTION: Duration = Duration::from_millis(1);

/// The instant, on both clocks, just before a request that sets a ttl was sent.
///
/// Take it with [`SentAt::now`] before sending, and pass it to
/// [`backend::lease`](crate::backend::lease) or [`backend::renew`](crate::backend::renew).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentAt {
    instant: Instant,
    /// `CLOCK_BOOTTIME - CLOCK_MONOTONIC` at the stamp, read so that it errs low (which can
    /// only shorten validity).
    gap: Duration,
}

impl SentAt {
    /// Now.
    pub fn now() -> Self {
        let gap = gap(Bias::Low);
        Self {
            instant: Instant::now(),
            gap,
        }
    }

    /// The stamp on the monotonic clock.
    pub fn instant(&self) -> Instant {
        self.instant
    }

    /// How long the machine was suspended since the stamp, as far as this platform can tell
    /// (zero below a millisecond, and on platforms without a suspend-counting clock).
    pub fn suspended_since(&self) -> Duration {
        let grown = gap(Bias::High).saturating_sub(self.gap);
        if grown < SUSPEND_RESOLUTION {
            Duration::ZERO
        } else {
            grown
        }
    }
}

/// When a lease's validity ends: the monotonic deadline and the stamp it was counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Validity {
    until: Instant,
    sent_at: SentAt,
}

/// The longest a timer waiting for the end of a validity sleeps before checking again: tokio's
/// timers do not count suspend (tokio-rs/tokio#3185), so a wait for the end re-checks the
/// suspend-counting clock at least this often.
pub(crate) const RECHECK: Duration = Duration::from_secs(1);

impl Validity {
    pub(crate) fn new(sent_at: SentAt, ttl: Duration) -> Self {
        Self {
            until: crate::backend::ttl::valid_until(sent_at.instant, ttl),
            sent_at,
        }
    }

    /// Time left, less any suspend since the stamp.
    pub(crate) fn remaining(&self) -> Duration {
        self.until
            .saturating_duration_since(Instant::now())
            .saturating_sub(self.sent_at.suspended_since())
    }

    /// The end on the monotonic clock as of now: moves earlier after a suspend.
    pub(crate) fn instant(&self) -> Instant {
        let suspended = self.sent_at.suspended_since();
        self.until
            .checked_sub(suspended)
            .unwrap_or_else(Instant::now)
    }

    /// When a timer waiting for the end should next wake: the end, or [`RECHECK`] from now
    /// if that is sooner.
    pub(crate) fn next_check(&self) -> Instant {
        self.instant().min(Instant::now() + RECHECK)
    }

    pub(crate) fn sent_at(&self) -> SentAt {
        self.sent_at
    }
}

/// An `Instant` taken just now, as a stamp. Prefer [`SentAt::now`]: a suspend between taking
/// the instant and this conversion is not seen.
impl From<Instant> for SentAt {
    fn from(instant: Instant) -> Self {
        Self {
            instant,
            gap: gap(Bias::Low),
        }
    }
}

/// Which way the gap may err: low (boot minus the later monotonic read) for a stamp, high
/// (boot minus the earlier one) for a reading compared with it, so that only a real suspend,
/// or jitter that can only shorten validity, shows up.
#[derive(Clone, Copy)]
enum Bias {
    Low,
    High,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn gap(bias: Bias) -> Duration {
    use nix::time::{clock_gettime, ClockId};
    /// A reading whose two monotonic reads lie further apart than this was preempted; it is
    /// taken again (up to three times), so jitter stays far below [`SUSPEND_RESOLUTION`].
    const TIGHT: Duration = Duration::from_micros(50);
    let read = |id| {
        clock_gettime(id)
            .map(Duration::from)
            .unwrap_or(Duration::ZERO)
    };
    let mut gap = Duration::ZERO;
    for _ in 0..3 {
        let before = read(ClockId::CLOCK_MONOTONIC);
        let boot = read(ClockId::CLOCK_BOOTTIME);
        let after = read(ClockId::CLOCK_MONOTONIC);
        gap = match bias {
            Bias::Low => boot.saturating_sub(after),
            Bias::High => boot.saturating_sub(before),
        };
        if after.saturating_sub(before) <= TIGHT {
            break;
        }
    }
    gap + testing::injected()
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn gap(_bias: Bias) -> Duration {
    testing::injected()
}

/// A suspend that never happened, for unit tests: added to the clock gap on this thread
/// (tests run the guard on a current-thread runtime, so every task sees it).
pub(crate) mod testing {
    use std::time::Duration;

    #[cfg(test)]
    thread_local! {
        static INJECTED: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
    }

    /// Pretends the machine was suspended for `duration` just now.
    #[cfg(test)]
    pub(crate) fn suspend(duration: Duration) {
        INJECTED.with(|injected| injected.set(injected.get() + duration));
    }

    pub(super) fn injected() -> Duration {
        #[cfg(test)]
        return INJECTED.with(std::cell::Cell::get);
        #[cfg(not(test))]
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_suspend_nothing_is_taken_off() {
        let stamp = SentAt::now();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(stamp.suspended_since(), Duration::ZERO);
    }

    #[test]
    fn an_injected_suspend_is_seen() {
        let stamp = SentAt::now();
        testing::suspend(Duration::from_secs(30));
        let seen = stamp.suspended_since();
        assert!(
            seen >= Duration::from_secs(30) && seen < Duration::from_secs(31),
            "{seen:?}"
        );
        // A stamp taken after the suspend does not see it.
        assert_eq!(SentAt::now().suspended_since(), Duration::ZERO);
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn the_two_clocks_are_read() {
        use nix::time::{clock_gettime, ClockId};
        let boot = Duration::from(clock_gettime(ClockId::CLOCK_BOOTTIME).unwrap());
        let monotonic = Duration::from(clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap());
        assert!(boot + Duration::from_millis(1) >= monotonic);
    }
}
