//! The read/write lock cases, one `pub async fn` per behaviour. Each fails with a message that
//! starts with its name in brackets.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use leasehold::{DistributedRwLock, Lease, LockError, LockKey};

use crate::support::{ok, unique_key};

const TTL: Duration = Duration::from_secs(30);
const LONG_WAIT: Duration = Duration::from_secs(20);

async fn read(lock: &dyn DistributedRwLock, case: &str, key: &LockKey) -> Lease {
    ok(
        case,
        "try_acquire_read",
        lock.try_acquire_read(key, TTL).await,
    )
    .unwrap_or_else(|| panic!("[{case}] try_acquire_read of {key} returned None"))
}

async fn write(lock: &dyn DistributedRwLock, case: &str, key: &LockKey) -> Lease {
    ok(
        case,
        "try_acquire_write",
        lock.try_acquire_write(key, TTL).await,
    )
    .unwrap_or_else(|| panic!("[{case}] try_acquire_write of {key} returned None"))
}

async fn release(lock: &dyn DistributedRwLock, case: &str, lease: Lease) {
    assert!(
        ok(case, "release", lock.release(lease).await),
        "[{case}] release of a held lease returned false"
    );
}

/// Polls `try_acquire_read` until it succeeds (the lease is released at once) or `within`
/// passes; how long it took.
async fn read_gets_in(
    lock: &dyn DistributedRwLock,
    case: &str,
    key: &LockKey,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some(lease) = ok(case, "probing read", lock.try_acquire_read(key, TTL).await) {
            release(lock, case, lease).await;
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Waits until a writer waiting in `acquire_write` holds new readers back (its mark is set).
async fn until_readers_held_back(lock: &dyn DistributedRwLock, case: &str, key: &LockKey) {
    let started = Instant::now();
    loop {
        match ok(case, "probing read", lock.try_acquire_read(key, TTL).await) {
            None => return,
            Some(lease) => release(lock, case, lease).await,
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "[{case}] a writer waiting in acquire_write did not hold new readers back within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 8 readers hold one key at once; while they do, a writer cannot get it; once they all left,
/// it can.
pub async fn rw_readers_share_and_exclude_writers(lock: Arc<dyn DistributedRwLock>) {
    let case = "rw_readers_share_and_exclude_writers";
    let key = unique_key(case, "k");
    let mut readers = Vec::new();
    for _ in 0..8 {
        readers.push(read(&*lock, case, &key).await);
    }
    let tokens: std::collections::HashSet<_> = readers.iter().map(Lease::token).collect();
    assert_eq!(tokens.len(), 8, "[{case}] readers shared a token");
    assert!(
        ok(
            case,
            "try_acquire_write",
            lock.try_acquire_write(&key, TTL).await
        )
        .is_none(),
        "[{case}] a writer got the key while 8 readers held it"
    );
    let last = readers.pop().expect("8 readers");
    for lease in readers {
        release(&*lock, case, lease).await;
    }
    assert!(
        ok(
            case,
            "try_acquire_write",
            lock.try_acquire_write(&key, TTL).await
        )
        .is_none(),
        "[{case}] a writer got the key while a reader still held it"
    );
    release(&*lock, case, last).await;
    let writer = write(&*lock, case, &key).await;
    release(&*lock, case, writer).await;
}

/// A writer keeps readers and other writers out, and a released write lets both in again.
pub async fn rw_writer_excludes_readers_and_writers(lock: Arc<dyn DistributedRwLock>) {
    let case = "rw_writer_excludes_readers_and_writers";
    let key = unique_key(case, "k");
    let writer = write(&*lock, case, &key).await;
    assert!(
        ok(
            case,
            "try_acquire_read",
            lock.try_acquire_read(&key, TTL).await
        )
        .is_none(),
        "[{case}] a reader got the key while a writer held it"
    );
    assert!(
        ok(
            case,
            "try_acquire_write",
            lock.try_acquire_write(&key, TTL).await
        )
        .is_none(),
        "[{case}] a second writer got the key"
    );
    let waited = Instant::now();
    let timed_out = lock
        .acquire_read(&key, TTL, Duration::from_millis(300))
        .await;
    assert!(
        matches!(timed_out, Err(LockError::Timeout { .. })),
        "[{case}] acquire_read under a writer with a 300 ms wait gave {timed_out:?}"
    );
    assert!(
        waited.elapsed() >= Duration::from_millis(300),
        "[{case}] acquire_read gave up after {:?}, before its 300 ms wait",
        waited.elapsed()
    );
    release(&*lock, case, writer).await;
    let reader = read(&*lock, case, &key).await;
    release(&*lock, case, reader).await;
}

/// 16 tasks on one key, 4 of them writers, 10 rounds each: a writer is never inside with anyone, readers are
/// inside together at least once, and every grant's fence is new.
pub async fn rw_stress_writers_exclude_everyone(lock: Arc<dyn DistributedRwLock>) {
    let case = "rw_stress_writers_exclude_everyone";
    let key = unique_key(case, "k");
    // Readers inside, and writers inside, right now; the most readers seen together.
    let readers = Arc::new(AtomicUsize::new(0));
    let writers = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let peak_readers = Arc::new(AtomicUsize::new(0));
    let fences = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for task in 0..16 {
        let lock = Arc::clone(&lock);
        let key = key.clone();
        let (readers, writers, overlaps) = (readers.clone(), writers.clone(), overlaps.clone());
        let (peak_readers, fences) = (peak_readers.clone(), fences.clone());
        tasks.push(tokio::spawn(async move {
            let writer = task % 4 == 0;
            for _ in 0..10 {
                let lease = if writer {
                    ok(
                        case,
                        "acquire_write",
                        lock.acquire_write(&key, TTL, LONG_WAIT * 3).await,
                    )
                } else {
                    ok(
                        case,
                        "acquire_read",
                        lock.acquire_read(&key, TTL, LONG_WAIT * 3).await,
                    )
                };
                fences
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(lease.fence());
                if writer {
                    if writers.fetch_add(1, Ordering::SeqCst) != 0
                        || readers.load(Ordering::SeqCst) != 0
                    {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    let inside = readers.fetch_add(1, Ordering::SeqCst) + 1;
                    peak_readers.fetch_max(inside, Ordering::SeqCst);
                    if writers.load(Ordering::SeqCst) != 0 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                }
                // Long enough for a backend whose grants take several round trips (a
                // transaction through a pooler) to let a second reader in meanwhile.
                tokio::time::sleep(Duration::from_millis(25)).await;
                if writer {
                    writers.fetch_sub(1, Ordering::SeqCst);
                } else {
                    readers.fetch_sub(1, Ordering::SeqCst);
                }
                ok(case, "release", lock.release(lease).await);
            }
        }));
    }
    for task in tasks {
        task.await.expect("rw stress task panicked");
    }
    let overlaps = overlaps.load(Ordering::SeqCst);
    assert_eq!(
        overlaps, 0,
        "[{case}] {overlaps} grants overlapped a writer"
    );
    let peak = peak_readers.load(Ordering::SeqCst);
    assert!(
        peak >= 2,
        "[{case}] readers were never inside together (peak {peak})"
    );
    let mut fences = fences
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let granted = fences.len();
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), granted, "[{case}] two grants shared a fence");
}

/// Writer-preferring: a reader holds, a writer waits; new readers are held back while it
/// waits, the writer gets the key when the reader leaves, before a reader that asked after it.
pub async fn rw_waiting_writer_goes_before_new_readers(lock: Arc<dyn DistributedRwLock>) {
    let case = "rw_waiting_writer_goes_before_new_readers";
    let key = unique_key(case, "k");
    let first = read(&*lock, case, &key).await;
    let order = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn({
        let (lock, key, order) = (Arc::clone(&lock), key.clone(), order.clone());
        async move {
            let lease = ok(
                case,
                "acquire_write",
                lock.acquire_write(&key, TTL, LONG_WAIT).await,
            );
            let at = order.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            release(&*lock, case, lease).await;
            at
        }
    });
    until_readers_held_back(&*lock, case, &key).await;
    let reader = tokio::spawn({
        let (lock, key, order) = (Arc::clone(&lock), key.clone(), order.clone());
        async move {
            let lease = ok(
                case,
                "acquire_read",
                lock.acquire_read(&key, TTL, LONG_WAIT).await,
            );
            let at = order.fetch_add(1, Ordering::SeqCst);
            release(&*lock, case, lease).await;
            at
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !reader.is_finished(),
        "[{case}] a new reader got in while a writer was waiting"
    );
    release(&*lock, case, first).await;
    let writer_at = writer.await.expect("writer task");
    let reader_at = reader.await.expect("reader task");
    assert!(
        writer_at < reader_at,
        "[{case}] the reader that asked after a waiting writer got the key first"
    );
}

/// A waiting writer that gives up (its deadline) or is dropped stops holding readers back at
/// once: no ghost mark.
pub async fn rw_writer_that_stops_waiting_leaves_no_mark(lock: Arc<dyn DistributedRwLock>) {
    let case = "rw_writer_that_stops_waiting_leaves_no_mark";
    let key = unique_key(case, "k");
    let reader = read(&*lock, case, &key).await;
    let timed_out = lock
        .acquire_write(&key, TTL, Duration::from_millis(300))
        .await;
    assert!(
        matches!(timed_out, Err(LockError::Timeout { .. })),
        "[{case}] acquire_write under a reader with a 300 ms wait gave {timed_out:?}"
    );
    let took = read_gets_in(&*lock, case, &key, Duration::from_secs(5)).await;
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(1500)),
        "[{case}] a writer that timed out held new readers back for {took:?} (at most 1.5 s)"
    );
    let dropped = tokio::spawn({
        let (lock, key) = (Arc::clone(&lock), key.clone());
        async move { lock.acquire_write(&key, TTL, LONG_WAIT).await }
    });
    until_readers_held_back(&*lock, case, &key).await;
    dropped.abort();
    let took = read_gets_in(&*lock, case, &key, Duration::from_secs(5)).await;
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(1500)),
        "[{case}] a dropped waiting writer held new readers back for {took:?} (at most 1.5 s)"
    );
    release(&*lock, case, reader).await;
    let writer = write(&*lock, case, &key).await;
    release(&*lock, case, writer).await;
}

/// A waiting writer whose future is leaked (as if its process froze or died: nothing refreshes
/// or removes its mark) holds readers back no longer than its mark's short ttl.
pub async fn rw_crashed_waiting_writer_blocks_readers_briefly(lock: Arc<dyn DistributedRwLock>) {
    let case = "rw_crashed_waiting_writer_blocks_readers_briefly";
    let key = unique_key(case, "k");
    let reader = read(&*lock, case, &key).await;
    let mut waiting = Box::pin({
        let (lock, key) = (Arc::clone(&lock), key.clone());
        async move { lock.acquire_write(&key, TTL, LONG_WAIT).await }
    });
    // Polled until its mark is set, then never again, and never dropped.
    let _ = tokio::time::timeout(Duration::from_millis(400), &mut waiting).await;
    until_readers_held_back(&*lock, case, &key).await;
    let frozen = Instant::now();
    std::mem::forget(waiting);
    let bound = leasehold::backend::WRITER_MARK_TTL + Duration::from_secs(4);
    let took = read_gets_in(&*lock, case, &key, bound + Duration::from_secs(5)).await;
    assert!(
        took.is_some_and(|_| frozen.elapsed() < bound),
        "[{case}] a crashed waiting writer held readers back for {:?} (at most {bound:?})",
        frozen.elapsed()
    );
    release(&*lock, case, reader).await;
}

/// A reader that never releases (dropped lease, 1 s ttl) holds a waiting writer back only until
/// its own ttl ends.
pub async fn rw_crashed_reader_blocks_writer_until_its_ttl(lock: Arc<dyn DistributedRwLock>) {
    let case = "rw_crashed_reader_blocks_writer_until_its_ttl";
    let key = unique_key(case, "k");
    let long = read(&*lock, case, &key).await;
    release(&*lock, case, long).await;
    let crashed = ok(
        case,
        "try_acquire_read",
        lock.try_acquire_read(&key, Duration::from_secs(1)).await,
    )
    .unwrap_or_else(|| panic!("[{case}] no read lease"));
    drop(crashed);
    let started = Instant::now();
    let writer = ok(
        case,
        "acquire_write",
        lock.acquire_write(&key, TTL, LONG_WAIT).await,
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(3500),
        "[{case}] a crashed reader with a 1 s ttl held the writer back for {took:?}"
    );
    release(&*lock, case, writer).await;
}

/// Every grant, read or write, takes a fence above every earlier one of the key, and extends
/// and releases check the token: a stale lease changes nothing.
pub async fn rw_fences_increase_and_tokens_are_checked(lock: Arc<dyn DistributedRwLock>) {
    let case = "rw_fences_increase_and_tokens_are_checked";
    let key = unique_key(case, "k");
    let mut last = 0;
    for round in 0..3 {
        let a = read(&*lock, case, &key).await;
        let b = read(&*lock, case, &key).await;
        let mut stale = a.clone();
        release(&*lock, case, a.clone()).await;
        assert!(
            !ok(
                case,
                "release of a released read",
                lock.release(a.clone()).await
            ),
            "[{case}] a released read lease was released again"
        );
        assert!(
            !ok(
                case,
                "extend of a released read",
                lock.extend(&mut stale, TTL).await
            ),
            "[{case}] a released read lease was extended"
        );
        release(&*lock, case, b.clone()).await;
        let w = write(&*lock, case, &key).await;
        for fence in [a.fence(), b.fence(), w.fence()] {
            assert!(
                fence > last,
                "[{case}] round {round}: fence {fence} after {last} (a {}, b {}, write {})",
                a.fence(),
                b.fence(),
                w.fence()
            );
            last = fence;
        }
        let mut held = w.clone();
        assert!(
            ok(
                case,
                "extend of a held write",
                lock.extend(&mut held, TTL).await
            ),
            "[{case}] a held write lease could not be extended"
        );
        release(&*lock, case, w.clone()).await;
        let mut stale = w;
        assert!(
            !ok(
                case,
                "extend of a released write",
                lock.extend(&mut stale, TTL).await
            ),
            "[{case}] a released write lease was extended"
        );
    }
}

/// A bad ttl is refused as on the mutex, and a lease of another primitive is refused with
/// `InvalidConfig` naming both kinds.
pub async fn rw_bad_input_is_refused(lock: Arc<dyn DistributedRwLock>) {
    let case = "rw_bad_input_is_refused";
    let key = unique_key(case, "k");
    for ttl in [
        Duration::ZERO,
        Duration::from_micros(500),
        leasehold::backend::ttl::MAX_TTL + Duration::from_secs(1),
    ] {
        let refused = lock.try_acquire_read(&key, ttl).await;
        assert!(
            matches!(refused, Err(LockError::InvalidTtl { .. })),
            "[{case}] try_acquire_read with ttl {ttl:?} gave {refused:?}"
        );
        let refused = lock.try_acquire_write(&key, ttl).await;
        assert!(
            matches!(refused, Err(LockError::InvalidTtl { .. })),
            "[{case}] try_acquire_write with ttl {ttl:?} gave {refused:?}"
        );
    }
    let mutex_lease = leasehold::backend::lease(
        key.clone(),
        leasehold::LeaseToken::random().expect("a token"),
        1,
        TTL,
        Instant::now(),
    );
    let mut extended = mutex_lease.clone();
    for refused in [
        lock.extend(&mut extended, TTL).await,
        lock.release(mutex_lease).await,
    ] {
        match refused {
            Err(LockError::InvalidConfig { input, reason })
                if (input.contains("exclusive") || reason.contains("exclusive"))
                    && reason.contains("read") =>
            {
                continue
            }
            other => panic!(
                "[{case}] an exclusive lease handed to the read/write lock gave {other:?}, \
                 not InvalidConfig naming both kinds"
            ),
        }
    }
}
