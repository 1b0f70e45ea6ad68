//! Leases and their tokens.

use std::{
    fmt,
    time::{Duration, Instant},
};

use crate::{
    clock::{SentAt, Validity},
    error::LockError,
    key::LockKey,
};

/// The secret that proves one acquisition: 128 random bits from the operating system's
/// generator, fresh for every acquisition.
///
/// Backends store it with the lock and compare it on every extend and release, so only the
/// holder of this acquisition can extend or release it. `Debug` shows only the first 4 hex
/// digits; there is deliberately no `Display`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken(u128);

impl LeaseToken {
    /// A fresh token from the operating system's random generator.
    ///
    /// # Errors
    ///
    /// [`LockError::Backend`] (permanent) if the operating system's generator fails.
    pub fn random() -> Result<Self, LockError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| LockError::permanent("os-random", e))?;
        Ok(Self(u128::from_be_bytes(bytes)))
    }

    /// Rebuilds a token from its 16 bytes, e.g. as read back from a server.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(u128::from_be_bytes(bytes))
    }

    /// The token's 16 bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The token as 32 lowercase hex digits, the form backends store.
    pub fn to_hex(self) -> String {
        // By hand: sent with every acquire, extend and release, and `format!` costs several
        // times as much.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let hex: Vec<u8> = (0..32)
            .map(|i| DIGITS[((self.0 >> (124 - 4 * i)) & 0xf) as usize])
            .collect();
        String::from_utf8(hex).unwrap_or_default()
    }

    /// Parses the form written by [`to_hex`](Self::to_hex).
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 32 {
            return None;
        }
        u128::from_str_radix(hex, 16).ok().map(Self)
    }
}

impl fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseToken({:04x}…)", self.0 >> 112)
    }
}

/// Which primitive a [`Lease`] holds, and how.
///
/// Each primitive's `extend` and `release` take only its own kinds: a lease handed to another
/// primitive is refused with [`LockError::InvalidConfig`] naming both kinds, before any
/// request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaseKind {
    /// A mutex, from [`DistributedLock`](crate::DistributedLock).
    Exclusive,
    /// The shared side of a [`DistributedRwLock`](crate::DistributedRwLock).
    Read,
    /// The exclusive side of a [`DistributedRwLock`](crate::DistributedRwLock).
    Write,
    /// One permit of a [`DistributedSemaphore`](crate::DistributedSemaphore).
    Permit,
}

impl LeaseKind {
    /// The kind's name, as errors show it: `"exclusive"`, `"read"`, `"write"`, `"permit"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exclusive => "exclusive",
            Self::Read => "read",
            Self::Write => "write",
            Self::Permit => "permit",
        }
    }

    /// The primitive whose `extend` and `release` take this kind.
    fn primitive(self) -> &'static str {
        match self {
            Self::Exclusive => "a mutex (DistributedLock)",
            Self::Read | Self::Write => "a read/write lock (DistributedRwLock)",
            Self::Permit => "a semaphore (DistributedSemaphore)",
        }
    }
}

impl fmt::Display for LeaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One acquisition of a lock: who holds it (the token), its fence, and until when the holder may
/// rely on it.
///
/// A `Lease` is plain data: holding one does not renew anything. See
/// [`Locker`](crate::Locker) for the auto-renewing guard.
///
/// Validity counts time the machine spends suspended (see [`clock`](crate::clock)): after a
/// resume, [`remaining`](Self::remaining) and [`is_valid`](Self::is_valid) account for the
/// suspend, and [`valid_until`](Self::valid_until) moves earlier by as much.
#[derive(Debug, Clone)]
pub struct Lease {
    key: LockKey,
    token: LeaseToken,
    fence: u64,
    ttl: Duration,
    validity: Validity,
    kind: LeaseKind,
}

impl Lease {
    /// See [`backend::lease`](crate::backend::lease).
    pub(crate) fn from_parts(
        key: LockKey,
        token: LeaseToken,
        fence: u64,
        ttl: Duration,
        sent_at: SentAt,
    ) -> Self {
        Self {
            key,
            token,
            fence,
            ttl,
            validity: Validity::new(sent_at, ttl),
            kind: LeaseKind::Exclusive,
        }
    }

    /// The same lease, of `kind`.
    pub(crate) fn of_kind(mut self, kind: LeaseKind) -> Self {
        self.kind = kind;
        self
    }

    /// `Ok` if this lease is of one of `accepted` (the kinds of the primitive it was handed
    /// to); otherwise the [`LockError::InvalidConfig`] that names both kinds.
    pub(crate) fn check_kind(&self, accepted: &[LeaseKind]) -> Result<(), LockError> {
        if accepted.contains(&self.kind) {
            return Ok(());
        }
        let wanted = accepted
            .first()
            .map_or("another primitive", |k| k.primitive());
        Err(LockError::invalid_config(
            format!("lease of {} (kind {})", self.key, self.kind),
            format!(
                "this {} lease belongs to {}; it was handed to {}, which takes only {} leases",
                self.kind,
                self.kind.primitive(),
                wanted,
                accepted
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
            ),
        ))
    }

    /// See [`backend::renew`](crate::backend::renew).
    pub(crate) fn renew(&mut self, ttl: Duration, sent_at: SentAt) {
        self.ttl = ttl;
        self.validity = Validity::new(sent_at, ttl);
    }

    /// Builds a lease.
    #[deprecated(
        since = "0.1.1",
        note = "backend authors: use `leasehold::backend::lease`"
    )]
    pub fn new(
        key: LockKey,
        token: LeaseToken,
        fence: u64,
        ttl: Duration,
        sent_at: impl Into<SentAt>,
    ) -> Self {
        Self::from_parts(key, token, fence, ttl, sent_at.into())
    }

    /// Moves the validity forward without asking any server: not for users, and going away.
    #[doc(hidden)]
    #[deprecated(
        since = "0.1.1",
        note = "backend authors: use `leasehold::backend::renew`"
    )]
    pub fn renewed(&mut self, ttl: Duration, sent_at: impl Into<SentAt>) {
        self.renew(ttl, sent_at.into());
    }

    /// When the request that acquired or last renewed the lease was sent: the guard schedules
    /// renewals from it, so a slow acquire does not push the first renewal past the validity.
    pub(crate) fn sent_at(&self) -> Instant {
        self.validity.sent_at().instant()
    }

    pub(crate) fn validity(&self) -> Validity {
        self.validity
    }

    /// The locked key.
    pub fn key(&self) -> &LockKey {
        &self.key
    }

    /// Which primitive this lease holds, and how.
    pub fn kind(&self) -> LeaseKind {
        self.kind
    }

    /// This acquisition's token.
    pub fn token(&self) -> LeaseToken {
        self.token
    }

    /// The fencing token: strictly greater than the fence of every earlier grant of this key
    /// by the same primitive (for read/write locks and semaphores, every earlier read, write or
    /// permit).
    ///
    /// Pass it to the resource you protect and have it reject writes carrying a smaller fence
    /// than one it has seen; that is what keeps a paused, stale holder from doing harm.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// The ttl last set on the server (whole milliseconds).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The instant until which the holder may rely on the lease (see [`ttl`](crate::backend::ttl)):
    /// `now + remaining()` at the time of the call, so it moves earlier after a suspend.
    pub fn valid_until(&self) -> Instant {
        self.validity.instant()
    }

    /// Time left until the validity ends, counting time the machine spent suspended; zero once
    /// it has passed.
    pub fn remaining(&self) -> Duration {
        self.validity.remaining()
    }

    /// Whether the validity has time left (see [`remaining`](Self::remaining)).
    pub fn is_valid(&self) -> bool {
        !self.remaining().is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_hides_most_of_the_token() {
        let token = LeaseToken::random().unwrap();
        let hex = token.to_hex();
        let debug = format!("{token:?}");
        assert!(!debug.contains(&hex[4..12]), "{debug} leaks {hex}");
        assert!(debug.contains(&hex[..4]));
        assert_eq!(LeaseToken::from_hex(&hex), Some(token));
        assert_eq!(LeaseToken::from_bytes(token.to_bytes()), token);
        assert_eq!(LeaseToken::from_hex("xyz"), None);
        for value in [0, 1, 0xabc, u128::MAX, u128::MAX / 3, 1 << 127] {
            assert_eq!(LeaseToken(value).to_hex(), format!("{value:032x}"));
        }
    }

    #[test]
    fn lease_validity_follows_the_formula() {
        let sent_at = Instant::now();
        let key = LockKey::new("k").unwrap();
        let lease = crate::backend::lease(
            key,
            LeaseToken::random().unwrap(),
            7,
            Duration::from_secs(1),
            sent_at,
        );
        assert_eq!(lease.valid_until(), sent_at + Duration::from_millis(988));
        assert!(lease.is_valid());
        assert!(lease.remaining() <= Duration::from_millis(988));
    }

    #[test]
    fn a_suspend_ends_the_validity_early() {
        let key = LockKey::new("k").unwrap();
        let lease = crate::backend::lease(
            key,
            LeaseToken::random().unwrap(),
            7,
            Duration::from_secs(10),
            SentAt::now(),
        );
        let before = lease.valid_until();
        crate::clock::testing::suspend(Duration::from_secs(4));
        let left = lease.remaining();
        assert!(
            left <= Duration::from_secs(6) && left > Duration::from_secs(5),
            "{left:?}"
        );
        assert!(lease.valid_until() <= before - Duration::from_secs(4));
        crate::clock::testing::suspend(Duration::from_secs(7));
        assert!(!lease.is_valid());
        assert_eq!(lease.remaining(), Duration::ZERO);
    }
}
