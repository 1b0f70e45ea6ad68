//! Exclusion, independence, release, tokens, keys and bad input.

use std::{collections::HashSet, sync::Arc, time::Duration};

use leasehold::{DistributedLock, InvalidTtlReason, LockError, LockKey};

use crate::support::{is_held, ok, take, unique_key};

const TTL: Duration = Duration::from_secs(10);

/// A held key cannot be taken again until it is released.
pub async fn exclusive_try_acquire(lock: Arc<dyn DistributedLock>) {
    let case = "exclusive_try_acquire";
    let key = unique_key(case, "k");
    let first = take(&*lock, case, &key, TTL).await;
    let second = ok(
        case,
        "second try_acquire",
        lock.try_acquire(&key, TTL).await,
    );
    assert!(
        second.is_none(),
        "[{case}] a held key was granted again: fences {} and {:?}",
        first.fence(),
        second.map(|l| l.fence())
    );
    assert!(
        first.is_valid(),
        "[{case}] a fresh 10 s lease is already invalid"
    );
    assert!(
        first.remaining() > Duration::from_secs(8),
        "[{case}] a fresh 10 s lease has only {:?} left",
        first.remaining()
    );
    assert_eq!(first.key(), &key, "[{case}] lease names the wrong key");
    assert_eq!(first.ttl(), TTL, "[{case}] lease reports the wrong ttl");
    ok(case, "release", lock.release(first).await);
}

/// Holding one key does not block another.
pub async fn distinct_keys_are_independent(lock: Arc<dyn DistributedLock>) {
    let case = "distinct_keys_are_independent";
    let a = unique_key(case, "a");
    let b = unique_key(case, "b");
    let lease_a = take(&*lock, case, &a, TTL).await;
    let lease_b = take(&*lock, case, &b, TTL).await;
    assert!(
        ok(case, "release a", lock.release(lease_a).await),
        "[{case}] release of a said not held"
    );
    assert!(
        is_held(&*lock, case, &b).await,
        "[{case}] releasing a freed b"
    );
    assert!(
        ok(case, "release b", lock.release(lease_b).await),
        "[{case}] release of b said not held"
    );
}

/// Release frees the key at once; a second release of the same lease says `false`.
pub async fn release_then_reacquire(lock: Arc<dyn DistributedLock>) {
    let case = "release_then_reacquire";
    let key = unique_key(case, "k");
    let lease = take(&*lock, case, &key, TTL).await;
    let again = lease.clone();
    assert!(
        ok(case, "release", lock.release(lease).await),
        "[{case}] release of a held lease returned false"
    );
    assert!(
        !ok(case, "second release", lock.release(again).await),
        "[{case}] releasing the same lease twice returned true"
    );
    let next = take(&*lock, case, &key, TTL).await;
    assert!(ok(
        case,
        "release of the next lease",
        lock.release(next).await
    ));
}

/// Every acquisition gets a fresh token.
pub async fn tokens_are_unique(lock: Arc<dyn DistributedLock>) {
    let case = "tokens_are_unique";
    let key = unique_key(case, "k");
    let mut seen = HashSet::new();
    for round in 0..200 {
        let lease = take(&*lock, case, &key, TTL).await;
        assert!(
            seen.insert(lease.token()),
            "[{case}] token repeated at acquisition {round}: {:?}",
            lease.token()
        );
        ok(case, "release", lock.release(lease).await);
    }
}

/// Bad ttls give the same errors on every backend, from every method.
pub async fn bad_ttls_are_rejected_alike(lock: Arc<dyn DistributedLock>) {
    let case = "bad_ttls_are_rejected_alike";
    let key = unique_key(case, "k");
    let bad = [
        (Duration::ZERO, "zero"),
        (Duration::from_micros(999), "below 1 ms"),
        (Duration::from_secs(24 * 3600 + 1), "above 24 h"),
        (Duration::MAX, "Duration::MAX"),
    ];
    let expect = |ttl: Duration, what: &str, op: &str, result: Result<(), LockError>| {
        let reason = match result {
            Err(LockError::InvalidTtl { ttl: got, reason }) => {
                assert_eq!(
                    got, ttl,
                    "[{case}] {op} with {what} ttl reports the wrong ttl"
                );
                reason
            }
            other => panic!("[{case}] {op} with a {what} ttl: expected InvalidTtl, got {other:?}"),
        };
        let expected_kind = match what {
            "zero" => matches!(reason, InvalidTtlReason::Zero),
            "below 1 ms" => matches!(reason, InvalidTtlReason::TooShort { .. }),
            _ => matches!(reason, InvalidTtlReason::TooLong { .. }),
        };
        assert!(
            expected_kind,
            "[{case}] {op} with a {what} ttl gave reason {reason:?}"
        );
    };
    for (ttl, what) in bad {
        expect(
            ttl,
            what,
            "try_acquire",
            lock.try_acquire(&key, ttl).await.map(drop),
        );
        expect(
            ttl,
            what,
            "acquire",
            lock.acquire(&key, ttl, Duration::ZERO).await.map(drop),
        );
    }
    let mut lease = take(&*lock, case, &key, TTL).await;
    for (ttl, what) in bad {
        expect(
            ttl,
            what,
            "extend",
            lock.extend(&mut lease, ttl).await.map(drop),
        );
    }
    assert!(
        ok(
            case,
            "release after rejected extends",
            lock.release(lease).await
        ),
        "[{case}] a rejected extend disturbed the lease"
    );
    // Sub-millisecond parts are truncated, not rejected.
    let lease = take(&*lock, case, &key, Duration::from_micros(5_000_900)).await;
    assert_eq!(
        lease.ttl(),
        Duration::from_secs(5),
        "[{case}] sub-millisecond part not truncated"
    );
    ok(case, "release", lock.release(lease).await);
}

/// Keys with characters that mean something to some backend work and never collide.
pub async fn special_character_keys_work_and_do_not_collide(lock: Arc<dyn DistributedLock>) {
    let case = "special_character_keys_work_and_do_not_collide";
    let base = unique_key(case, "");
    let suffixes = [
        "{",
        "}",
        "{}",
        "{tag}",
        "}{",
        "a:b",
        "a:b:fence",
        ":",
        "::",
        "*",
        "?",
        "[ab]",
        "'",
        "\"",
        "\\",
        "%",
        "_",
        "'; DROP TABLE x;--",
        "with space",
        " ",
        "🔒",
        "\u{fc}",
        "u\u{308}",
        "\u{e9}",
        "e\u{301}",
        "leasehold",
        "leasehold:x",
        "{leasehold:x}",
        "x}:fence",
        "$1",
        "$$",
        "\u{a0}",
    ];
    let mut keys: Vec<LockKey> = suffixes
        .iter()
        .map(|s| LockKey::new(format!("{}{s}", base.as_str())).expect("printable key"))
        .collect();
    // Two keys at exactly MAX_KEY_LEN bytes: one ASCII, one mostly 4-byte characters.
    let room = leasehold::MAX_KEY_LEN - base.as_str().len();
    let ascii = format!("{}{}", base.as_str(), "x".repeat(room));
    let emoji = format!(
        "{}{}{}",
        base.as_str(),
        "y".repeat(room % 4),
        "🔒".repeat(room / 4)
    );
    keys.push(LockKey::new(ascii).expect("512-byte key"));
    keys.push(LockKey::new(emoji).expect("512-byte key"));
    let distinct: HashSet<&LockKey> = keys.iter().collect();
    assert_eq!(
        distinct.len(),
        keys.len(),
        "[{case}] test keys are not distinct"
    );
    let mut leases = Vec::new();
    for key in &keys {
        let lease = ok(case, "try_acquire", lock.try_acquire(key, TTL).await);
        let lease =
            lease.unwrap_or_else(|| panic!("[{case}] key {key} collided with an earlier key"));
        assert_eq!(lease.key(), key, "[{case}] lease names the wrong key");
        leases.push(lease);
    }
    for key in &keys {
        assert!(
            is_held(&*lock, case, key).await,
            "[{case}] key {key} is not held after acquire"
        );
    }
    for lease in leases {
        let key = lease.key().clone();
        assert!(
            ok(case, "release", lock.release(lease).await),
            "[{case}] release of {key} returned false"
        );
    }
    for key in &keys {
        assert!(
            !is_held(&*lock, case, key).await,
            "[{case}] released key {key} still held"
        );
    }
}
