//! The contract of [`LockAdmin`], for backends that offer it: status, listing by prefix and
//! forced release. Separate from the cases of [`DistributedLock`] because admin support is
//! optional.

use std::time::{Duration, Instant};

use leasehold::{DistributedLock, LockAdmin};

use crate::support::{ok, unique_key};

const CASE: &str = "admin";
const TTL: Duration = Duration::from_secs(30);

/// Checks `lock`'s [`LockAdmin`] side against its own locks, on keys no other run uses (so a
/// shared server is fine): a never-locked key has no fence; a held key shows its fence and
/// nearly the whole ttl; a released key shows its fence and no holder; `list` returns exactly
/// the keys under a prefix, in byte order, taking the prefix as text (glob and `LIKE`
/// characters, braces and `%` included); a forced release frees a held key once (the second
/// returns false), the forced-out holder's extend returns false, and the next fence is higher.
/// With notified waiting, a forced release also wakes a waiter well before any fallback poll.
/// With a release watch, it also wakes the forced-out holder (see [`release_watch`]).
///
/// # Panics
///
/// With a message starting `[admin]` when the backend breaks the contract.
pub async fn check<L>(lock: &L)
where
    L: DistributedLock + LockAdmin + Clone,
{
    let a = unique_key(CASE, "jobs/a");
    let prefix = a.as_str().trim_end_matches("jobs/a").to_owned();
    let b = leasehold::LockKey::new(format!("{prefix}jobs/b")).expect("key");
    let other = leasehold::LockKey::new(format!("{prefix}other")).expect("key");
    let never = leasehold::LockKey::new(format!("{prefix}never")).expect("key");

    let status = ok(
        CASE,
        "status of a never-locked key",
        lock.status(&never).await,
    );
    assert_eq!(
        status.last_fence, None,
        "[admin] a never-locked key has a fence"
    );
    assert!(
        !status.is_held(),
        "[admin] a never-locked key shows as held"
    );

    let take = |key: leasehold::LockKey| async move {
        ok(CASE, "try_acquire", lock.try_acquire(&key, TTL).await)
            .unwrap_or_else(|| panic!("[admin] the fresh key {key} was busy"))
    };
    let lease_a = take(a.clone()).await;
    let lease_b = take(b.clone()).await;
    let fence_b = lease_b.fence();
    ok(CASE, "release", lock.release(lease_b).await);
    let _other = take(other.clone()).await;

    let status = ok(CASE, "status of a held key", lock.status(&a).await);
    assert!(status.is_held(), "[admin] a held key shows as free");
    assert_eq!(
        status.last_fence,
        Some(lease_a.fence()),
        "[admin] wrong fence for a held key"
    );
    let left = status.remaining.unwrap_or_default();
    assert!(
        left > TTL - Duration::from_secs(5) && left <= TTL,
        "[admin] a fresh {TTL:?} lease shows {left:?} left"
    );
    let status = ok(CASE, "status of a released key", lock.status(&b).await);
    assert!(!status.is_held(), "[admin] a released key shows as held");
    assert_eq!(
        status.last_fence,
        Some(fence_b),
        "[admin] a released key lost its fence"
    );

    let listed: Vec<(String, bool)> = ok(CASE, "list", lock.list(&format!("{prefix}jobs/")).await)
        .into_iter()
        .map(|(key, status)| (key.as_str().to_owned(), status.is_held()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (a.as_str().to_owned(), true),
            (b.as_str().to_owned(), false)
        ],
        "[admin] list by prefix"
    );
    let all = ok(CASE, "list", lock.list(&prefix).await);
    assert_eq!(all.len(), 3, "[admin] list of the run's prefix: {all:?}");

    assert!(
        ok(CASE, "force_release", lock.force_release(&a).await),
        "[admin] force_release of a held key returned false"
    );
    assert!(
        !ok(CASE, "force_release", lock.force_release(&a).await),
        "[admin] a second force_release returned true"
    );
    let mut stale = lease_a;
    assert!(
        !ok(CASE, "extend", lock.extend(&mut stale, TTL).await),
        "[admin] the forced-out holder could still extend"
    );
    let next = take(a.clone()).await;
    assert!(
        next.fence() > stale.fence(),
        "[admin] fences went back after a forced release"
    );

    ok(CASE, "release", lock.release(next).await);
    release_watch(lock).await;
    prefixes_are_text(lock).await;
    if lock.capabilities().notified_wait {
        // A fallback poll (a quarter second or more apart) may land soon after a forced
        // release by chance; four rounds in a row cannot all be luck.
        for _ in 0..4 {
            forced_release_wakes_a_waiter(lock, &a).await;
        }
    }
}

/// For backends whose [`DistributedLock::watch_releases`] gives a watch on a held key: its first
/// wake comes once it is in place (within 10 s), it then stays quiet while nothing happens
/// (300 ms), and a forced release wakes it within 1 s, also when the call that was waiting
/// was dropped before the release and the next call starts only after the announcement
/// arrived. Backends without a watch pass trivially; their own tests
/// should assert that they offer one where they claim to.
///
/// # Panics
///
/// With a message starting `[admin]` when the watch breaks that contract.
pub async fn release_watch<L>(lock: &L)
where
    L: DistributedLock + LockAdmin,
{
    let key = unique_key(CASE, "watched");
    let lease = ok(CASE, "try_acquire", lock.try_acquire(&key, TTL).await)
        .unwrap_or_else(|| panic!("[admin] the fresh key {key} was busy"));
    let Some(mut watch) = lock.watch_releases(&key) else {
        ok(CASE, "release", lock.release(lease).await);
        return;
    };
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "[admin] the release watch's first wake (once it is in place) did not come in 10 s"
            )
        });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), watch.changed())
            .await
            .is_err(),
        "[admin] the release watch woke with nothing released"
    );
    assert!(ok(CASE, "force_release", lock.force_release(&key).await));
    // The announcement arrives while no call is waiting: a watch that registers only when
    // called would miss it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(Duration::from_secs(1), watch.changed())
        .await
        .unwrap_or_else(|_| {
            panic!("[admin] a forced release did not wake the holder's release watch within 1 s")
        });
    let mut stale = lease;
    assert!(
        !ok(CASE, "extend", lock.extend(&mut stale, TTL).await),
        "[admin] the forced-out holder could still extend"
    );
}

async fn forced_release_wakes_a_waiter<L>(lock: &L, key: &leasehold::LockKey)
where
    L: DistributedLock + LockAdmin + Clone,
{
    let _held = ok(CASE, "try_acquire", lock.try_acquire(key, TTL).await)
        .unwrap_or_else(|| panic!("[admin] {key} was busy before a round"));
    let waiter = {
        let (lock, key) = (lock.clone(), key.clone());
        tokio::spawn(async move {
            let lease = lock.acquire(&key, TTL, Duration::from_secs(20)).await;
            let at = Instant::now();
            let freed = match lease {
                // Free the key for the next round.
                Ok(lease) => lock.release(lease).await.map(|_| ()),
                Err(error) => Err(error),
            };
            (freed, at)
        })
    };
    // Let the waiter find the key busy and start waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let forced = Instant::now();
    assert!(ok(CASE, "force_release", lock.force_release(key).await));
    let (got, at) = waiter.await.expect("[admin] the waiter panicked");
    ok(CASE, "waiting acquire after a forced release", got);
    // Woken by the release, the waiter needs a few ms; generous for noisy machines.
    assert!(
        at - forced < Duration::from_millis(100),
        "[admin] the waiter got the key {:?} after a forced release (not woken by it?)",
        at - forced
    );
}

/// Keys with characters that stores give meaning to (globs, `LIKE` wildcards, hash-tag braces,
/// percent escapes, non-ASCII) list by prefix as plain text, in byte order.
async fn prefixes_are_text<L>(lock: &L)
where
    L: DistributedLock + LockAdmin,
{
    let base = unique_key(CASE, "names/");
    let base = base.as_str();
    let mut names = [
        "a", "a%", "a%7B", "a*", "a*b", "a?", "a[1]", "a\\", "a_c", "a}{", "ab", "abc", "b", "B",
        "\u{e9}", "{a}",
    ];
    for name in names {
        let key = leasehold::LockKey::new(format!("{base}{name}")).expect("key");
        let lease = ok(CASE, "try_acquire", lock.try_acquire(&key, TTL).await)
            .unwrap_or_else(|| panic!("[admin] the fresh key {key} was busy"));
        ok(CASE, "release", lock.release(lease).await);
    }
    let listed = |prefix: &'static str| async move {
        ok(CASE, "list", lock.list(&format!("{base}{prefix}")).await)
            .into_iter()
            .map(|(key, _)| key.as_str()[base.len()..].to_owned())
            .collect::<Vec<_>>()
    };
    names.sort_unstable();
    assert_eq!(listed("").await, names, "[admin] list is not in byte order");
    for (prefix, expected) in [
        ("a*", &["a*", "a*b"][..]),
        ("a?", &["a?"]),
        ("a[", &["a[1]"]),
        ("a\\", &["a\\"]),
        ("{", &["{a}"]),
        ("a}", &["a}{"]),
        ("a%", &["a%", "a%7B"]),
        ("a_", &["a_c"]),
    ] {
        assert_eq!(
            listed(prefix).await,
            expected,
            "[admin] list({prefix:?}) took the prefix as a pattern"
        );
    }
}
