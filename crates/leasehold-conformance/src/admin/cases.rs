//! The admin cases, one function each; see [`admin`](crate::admin).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use leasehold::{Lease, LeaseKind, LockKey};

use super::AdminLock;
use crate::support::{ok, unique_key};

const TTL: Duration = Duration::from_secs(30);

/// Takes a fresh key or fails the case.
async fn take(lock: &dyn AdminLock, case: &str, key: &LockKey) -> Lease {
    ok(case, "try_acquire", lock.try_acquire(key, TTL).await)
        .unwrap_or_else(|| panic!("[{case}] the fresh key {key} was busy"))
}

/// A key of this run under a prefix of its own: `(prefix, prefix + name)`.
fn keyed(case: &str, name: &str) -> (String, LockKey) {
    let key = unique_key(case, name);
    let prefix = key.as_str().trim_end_matches(name).to_owned();
    (prefix, key)
}

fn sibling(prefix: &str, name: &str) -> LockKey {
    LockKey::new(format!("{prefix}{name}")).expect("key")
}

/// A key that was never locked has no fence and no holder.
pub async fn status_of_a_never_locked_key_shows_nothing(lock: Arc<dyn AdminLock>) {
    const CASE: &str = "status_of_a_never_locked_key_shows_nothing";
    let never = unique_key(CASE, "never");
    let status = ok(CASE, "status", lock.status(&never).await);
    assert_eq!(status.last_fence, None, "[{CASE}] it has a fence");
    assert!(!status.is_held(), "[{CASE}] it shows as held");
}

/// A held key shows its holder's fence and nearly the whole ttl left.
pub async fn status_of_a_held_key_shows_its_fence_and_time_left(lock: Arc<dyn AdminLock>) {
    const CASE: &str = "status_of_a_held_key_shows_its_fence_and_time_left";
    let key = unique_key(CASE, "held");
    let lease = take(&*lock, CASE, &key).await;
    let status = ok(CASE, "status", lock.status(&key).await);
    assert!(status.is_held(), "[{CASE}] a held key shows as free");
    assert_eq!(
        status.last_fence,
        Some(lease.fence()),
        "[{CASE}] wrong fence for a held key"
    );
    assert_eq!(
        (status.holders, status.held_as),
        (1, Some(LeaseKind::Exclusive)),
        "[{CASE}] a held mutex shows the wrong holders ({status:?})"
    );
    let left = status.remaining.unwrap_or_default();
    assert!(
        left > TTL - Duration::from_secs(5) && left <= TTL,
        "[{CASE}] a fresh {TTL:?} lease shows {left:?} left"
    );
    ok(CASE, "release", lock.release(lease).await);
}

/// A released key keeps its last fence and shows no holder.
pub async fn status_of_a_released_key_keeps_its_fence(lock: Arc<dyn AdminLock>) {
    const CASE: &str = "status_of_a_released_key_keeps_its_fence";
    let key = unique_key(CASE, "released");
    let lease = take(&*lock, CASE, &key).await;
    let fence = lease.fence();
    ok(CASE, "release", lock.release(lease).await);
    let status = ok(CASE, "status", lock.status(&key).await);
    assert!(
        !status.is_held() && status.holders == 0 && status.held_as.is_none(),
        "[{CASE}] a released key shows as held ({status:?})"
    );
    assert_eq!(
        status.last_fence,
        Some(fence),
        "[{CASE}] a released key lost its fence"
    );
}

/// `list` returns exactly the keys under a prefix (held or not), in byte order; a wider
/// prefix returns them all.
pub async fn list_returns_the_keys_under_a_prefix_in_byte_order(lock: Arc<dyn AdminLock>) {
    const CASE: &str = "list_returns_the_keys_under_a_prefix_in_byte_order";
    let (prefix, b) = keyed(CASE, "jobs/b");
    let a = sibling(&prefix, "jobs/a");
    let other = sibling(&prefix, "other");
    let held_b = take(&*lock, CASE, &b).await;
    let released_a = take(&*lock, CASE, &a).await;
    ok(CASE, "release", lock.release(released_a).await);
    let held_other = take(&*lock, CASE, &other).await;
    let listed: Vec<(String, bool)> = ok(CASE, "list", lock.list(&format!("{prefix}jobs/")).await)
        .into_iter()
        .map(|(key, status)| (key.as_str().to_owned(), status.is_held()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (a.as_str().to_owned(), false),
            (b.as_str().to_owned(), true)
        ],
        "[{CASE}] list by prefix"
    );
    let all = ok(CASE, "list", lock.list(&prefix).await);
    assert_eq!(all.len(), 3, "[{CASE}] list of the run's prefix: {all:?}");
    ok(CASE, "release", lock.release(held_b).await);
    ok(CASE, "release", lock.release(held_other).await);
}

/// Keys with characters that stores give meaning to (globs, `LIKE` wildcards, hash-tag braces,
/// percent escapes, non-ASCII) list by prefix as plain text, in byte order.
pub async fn list_takes_the_prefix_as_text(lock: Arc<dyn AdminLock>) {
    const CASE: &str = "list_takes_the_prefix_as_text";
    let base = unique_key(CASE, "names/");
    let base = base.as_str();
    let mut names = [
        "a", "a%", "a%7B", "a*", "a*b", "a?", "a[1]", "a\\", "a_c", "a}{", "ab", "abc", "b", "B",
        "\u{e9}", "{a}",
    ];
    for name in names {
        let lease = take(&*lock, CASE, &sibling(base, name)).await;
        ok(CASE, "release", lock.release(lease).await);
    }
    let lock = &*lock;
    let listed = |prefix: &'static str| async move {
        ok(CASE, "list", lock.list(&format!("{base}{prefix}")).await)
            .into_iter()
            .map(|(key, _)| key.as_str()[base.len()..].to_owned())
            .collect::<Vec<_>>()
    };
    names.sort_unstable();
    assert_eq!(
        listed("").await,
        names,
        "[{CASE}] list is not in byte order"
    );
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
            "[{CASE}] list({prefix:?}) took the prefix as a pattern"
        );
    }
}

/// A forced release frees a held key (the next try gets it) and says so once: a second one
/// returns false, as does one on a key nobody holds.
pub async fn forced_release_frees_a_held_key_once(lock: Arc<dyn AdminLock>) {
    const CASE: &str = "forced_release_frees_a_held_key_once";
    let key = unique_key(CASE, "forced");
    let _held = take(&*lock, CASE, &key).await;
    assert!(
        ok(CASE, "force_release", lock.force_release(&key).await),
        "[{CASE}] force_release of a held key returned false"
    );
    assert!(
        !ok(CASE, "force_release", lock.force_release(&key).await),
        "[{CASE}] a second force_release returned true"
    );
    assert!(
        !ok(
            CASE,
            "force_release",
            lock.force_release(&unique_key(CASE, "never")).await
        ),
        "[{CASE}] force_release of a never-locked key returned true"
    );
    let status = ok(CASE, "status", lock.status(&key).await);
    assert!(
        !status.is_held(),
        "[{CASE}] still held after a forced release"
    );
    let next = take(&*lock, CASE, &key).await;
    ok(CASE, "release", lock.release(next).await);
}

/// The forced-out holder's extend and release return false, and the next holder's fence is
/// higher.
pub async fn forced_out_holder_cannot_extend_and_fences_go_on(lock: Arc<dyn AdminLock>) {
    const CASE: &str = "forced_out_holder_cannot_extend_and_fences_go_on";
    let key = unique_key(CASE, "forced");
    let mut stale = take(&*lock, CASE, &key).await;
    assert!(ok(CASE, "force_release", lock.force_release(&key).await));
    assert!(
        !ok(CASE, "extend", lock.extend(&mut stale, TTL).await),
        "[{CASE}] the forced-out holder could still extend"
    );
    let next = take(&*lock, CASE, &key).await;
    assert!(
        next.fence() > stale.fence(),
        "[{CASE}] fences went back after a forced release"
    );
    assert!(
        !ok(CASE, "release", lock.release(stale).await),
        "[{CASE}] the forced-out holder's release freed the next holder's lock"
    );
    assert!(
        ok(CASE, "release", lock.release(next).await),
        "[{CASE}] the next holder lost its lock to the stale release"
    );
}

/// With notified waiting: a forced release wakes a waiter well before any fallback poll, in
/// four rounds (a fallback poll, a quarter second or more apart, may land soon after a forced
/// release by chance; four in a row cannot all be luck).
pub async fn forced_release_wakes_a_waiter(lock: Arc<dyn AdminLock>) {
    const CASE: &str = "forced_release_wakes_a_waiter";
    if !lock.capabilities().notified_wait {
        return;
    }
    let key = unique_key(CASE, "waited");
    for _ in 0..4 {
        let _held = take(&*lock, CASE, &key).await;
        let waiter = {
            let (lock, key) = (Arc::clone(&lock), key.clone());
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
        assert!(ok(CASE, "force_release", lock.force_release(&key).await));
        let (got, at) = waiter
            .await
            .unwrap_or_else(|_| panic!("[{CASE}] the waiter panicked"));
        ok(CASE, "waiting acquire after a forced release", got);
        // Woken by the release, the waiter needs a few ms; generous for noisy machines.
        assert!(
            at - forced < Duration::from_millis(100),
            "[{CASE}] the waiter got the key {:?} after a forced release (not woken by it?)",
            at - forced
        );
    }
}

/// Where [`watch_releases`](leasehold::DistributedLock::watch_releases) gives a watch: see
/// [`release_watch`].
pub async fn forced_release_wakes_the_holders_release_watch(lock: Arc<dyn AdminLock>) {
    release_watch(&*lock).await;
}

/// For backends whose [`watch_releases`](leasehold::DistributedLock::watch_releases) gives a
/// watch on a held key: its first wake comes once it is in place (within 10 s), it then stays
/// quiet while nothing happens (300 ms), and a forced release wakes it within 1 s, also when
/// the call that was waiting was dropped before the release and the next call starts only
/// after the announcement arrived. Backends without a watch pass trivially.
///
/// # Panics
///
/// With a message starting `[forced_release_wakes_the_holders_release_watch]` when the watch
/// breaks that contract.
pub async fn release_watch<L>(lock: &L)
where
    L: AdminLock + ?Sized,
{
    const CASE: &str = "forced_release_wakes_the_holders_release_watch";
    let key = unique_key(CASE, "watched");
    let lease = ok(CASE, "try_acquire", lock.try_acquire(&key, TTL).await)
        .unwrap_or_else(|| panic!("[{CASE}] the fresh key {key} was busy"));
    let Some(mut watch) = lock.watch_releases(&key) else {
        ok(CASE, "release", lock.release(lease).await);
        return;
    };
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .unwrap_or_else(|_| {
            panic!("[{CASE}] the watch's first wake (once it is in place) did not come in 10 s")
        });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), watch.changed())
            .await
            .is_err(),
        "[{CASE}] the watch woke with nothing released"
    );
    assert!(ok(CASE, "force_release", lock.force_release(&key).await));
    // The announcement arrives while no call is waiting: a watch that registers only when
    // called would miss it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(Duration::from_secs(1), watch.changed())
        .await
        .unwrap_or_else(|_| {
            panic!("[{CASE}] a forced release did not wake the holder's release watch within 1 s")
        });
    let mut stale = lease;
    assert!(
        !ok(CASE, "extend", lock.extend(&mut stale, TTL).await),
        "[{CASE}] the forced-out holder could still extend"
    );
}
