//! The ttl rules every backend applies, and the conservative validity formula.
//!
//! A ttl is accepted when it is at least [`MIN_TTL`] (1 ms) and at most [`MAX_TTL`] (24 h).
//! Sub-millisecond parts are **truncated**: a ttl of 1.9 ms becomes 1 ms. Truncating (never
//! rounding up) keeps the holder's own view of the lease no longer than what the server
//! enforces. [`Lease::ttl`](crate::Lease::ttl) reports the truncated value.
//!
//! # Validity
//!
//! A client cannot know exactly when the server started counting a lease's ttl, and clocks run
//! at slightly different rates. So a lease is considered valid until
//!
//! ```text
//! valid_until = sent_at + ttl - drift(ttl)
//! drift(ttl)  = ttl / 100 + 2 ms
//! ```
//!
//! where `sent_at` is the monotonic instant taken *before* the request that set the ttl was
//! sent. The server's countdown starts after that instant, so it ends after `sent_at + ttl`;
//! the drift allowance covers clock-rate differences (1 %) and expiry granularity (2 ms), the
//! same allowance Redlock uses. Very short ttls leave no validity at all (`valid_until` is
//! then `sent_at`): honest, if not useful.

use std::time::{Duration, Instant};

use crate::error::{InvalidTtlReason, LockError};

/// The shortest ttl accepted.
pub const MIN_TTL: Duration = Duration::from_millis(1);

/// The longest ttl accepted.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Checks a ttl against the rules above and returns it truncated to whole milliseconds.
///
/// Every backend calls this before talking to its server, so the same bad ttl gives the same
/// error everywhere.
///
/// # Errors
///
/// [`LockError::InvalidTtl`] if `ttl` is zero, below [`MIN_TTL`] or above [`MAX_TTL`].
pub fn check(ttl: Duration) -> Result<Duration, LockError> {
    let reason = if ttl.is_zero() {
        Some(InvalidTtlReason::Zero)
    } else if ttl < MIN_TTL {
        Some(InvalidTtlReason::TooShort { min: MIN_TTL })
    } else if ttl > MAX_TTL {
        Some(InvalidTtlReason::TooLong { max: MAX_TTL })
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LockError::InvalidTtl { ttl, reason }),
        None => Ok(Duration::from_millis(whole_millis(ttl))),
    }
}

/// A checked ttl in whole milliseconds, the unit every backend sends to its server.
pub fn whole_millis(ttl: Duration) -> u64 {
    // MAX_TTL keeps this far below u64::MAX; saturate anyway rather than wrap.
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// The allowance subtracted from a ttl for clock drift and expiry granularity.
pub fn drift(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

/// The instant until which a lease whose ttl was set by a request sent at `sent_at` is valid.
pub fn valid_until(sent_at: Instant, ttl: Duration) -> Instant {
    sent_at + ttl.saturating_sub(drift(ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_zero_short_and_long_ttls() {
        let reason = |ttl| match check(ttl) {
            Err(LockError::InvalidTtl { reason, .. }) => reason,
            other => panic!("expected InvalidTtl for {ttl:?}, got {other:?}"),
        };
        assert_eq!(reason(Duration::ZERO), InvalidTtlReason::Zero);
        assert_eq!(
            reason(Duration::from_micros(999)),
            InvalidTtlReason::TooShort { min: MIN_TTL }
        );
        assert_eq!(
            reason(MAX_TTL + Duration::from_millis(1)),
            InvalidTtlReason::TooLong { max: MAX_TTL }
        );
        assert_eq!(
            reason(Duration::MAX),
            InvalidTtlReason::TooLong { max: MAX_TTL }
        );
    }

    #[test]
    fn truncates_sub_millisecond_parts() {
        assert_eq!(check(Duration::from_micros(1_900)).unwrap(), MIN_TTL);
        assert_eq!(check(MAX_TTL).unwrap(), MAX_TTL);
    }

    #[test]
    fn validity_is_shorter_than_ttl_by_the_drift() {
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        assert_eq!(valid_until(now, ttl), now + Duration::from_millis(9_898));
        assert_eq!(valid_until(now, Duration::from_millis(1)), now);
    }
}
