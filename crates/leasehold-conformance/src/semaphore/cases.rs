//! The semaphore cases, one `pub async fn` per behaviour. Each fails with a message that starts
//! with its name in brackets.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use leasehold::{DistributedSemaphore, Lease, LockError, LockKey};

use crate::support::{ok, unique_key};

const TTL: Duration = Duration::from_secs(30);
const LONG_WAIT: Duration = Duration::from_secs(20);

async fn permit(lock: &dyn DistributedSemaphore, case: &str, key: &LockKey, n: u32) -> Lease {
    ok(case, "try_acquire", lock.try_acquire(key, n, TTL).await)
        .unwrap_or_else(|| panic!("[{case}] try_acquire of {key} (limit {n}) returned None"))
}

async fn release(lock: &dyn DistributedSemaphore, case: &str, lease: Lease) {
    assert!(
        ok(case, "release", lock.release(lease).await),
        "[{case}] release of a held permit returned false"
    );
}

async fn is_full(lock: &dyn DistributedSemaphore, case: &str, key: &LockKey, n: u32) -> bool {
    match ok(
        case,
        "probing try_acquire",
        lock.try_acquire(key, n, TTL).await,
    ) {
        Some(probe) => {
            release(lock, case, probe).await;
            false
        }
        None => true,
    }
}

/// A limit of 3 admits exactly 3; a 4th waits; a released permit can be taken again.
pub async fn semaphore_admits_exactly_its_limit(lock: Arc<dyn DistributedSemaphore>) {
    let case = "semaphore_admits_exactly_its_limit";
    let key = unique_key(case, "k");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(permit(&*lock, case, &key, 3).await);
    }
    assert!(
        is_full(&*lock, case, &key, 3).await,
        "[{case}] a 4th permit was granted with a limit of 3"
    );
    let freed = held.pop().expect("3 permits");
    release(&*lock, case, freed).await;
    held.push(permit(&*lock, case, &key, 3).await);
    let tokens: std::collections::HashSet<_> = held.iter().map(Lease::token).collect();
    assert_eq!(tokens.len(), 3, "[{case}] two permits shared a token");
    for lease in held {
        release(&*lock, case, lease).await;
    }
    let one = permit(&*lock, case, &key, 1).await;
    assert!(
        is_full(&*lock, case, &key, 1).await,
        "[{case}] a limit of 1 admitted two holders"
    );
    release(&*lock, case, one).await;
}

/// 32 tasks contend for 4 permits: never more than 4 inside, and 4 at once at the peak; every
/// grant's fence is new.
pub async fn semaphore_stress_peak_is_exactly_n(lock: Arc<dyn DistributedSemaphore>) {
    let case = "semaphore_stress_peak_is_exactly_n";
    let key = unique_key(case, "k");
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let fences = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (lock, key) = (Arc::clone(&lock), key.clone());
        let (inside, peak, fences) = (inside.clone(), peak.clone(), fences.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..8 {
                let lease = ok(
                    case,
                    "acquire",
                    lock.acquire(&key, 4, TTL, LONG_WAIT * 3).await,
                );
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                fences
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(lease.fence());
                tokio::time::sleep(Duration::from_millis(25)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                ok(case, "release", lock.release(lease).await);
            }
        }));
    }
    for task in tasks {
        task.await.expect("semaphore stress task panicked");
    }
    let peak = peak.load(Ordering::SeqCst);
    assert_eq!(peak, 4, "[{case}] peak holders {peak} with a limit of 4");
    let mut fences = fences
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let granted = fences.len();
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), granted, "[{case}] two grants shared a fence");
}

/// With the semaphore full, N waiters wait; N releases let all N through, each soon after a
/// release.
pub async fn semaphore_releases_go_to_waiters(lock: Arc<dyn DistributedSemaphore>) {
    let case = "semaphore_releases_go_to_waiters";
    let key = unique_key(case, "k");
    let n = 3;
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(permit(&*lock, case, &key, n).await);
    }
    let through = Arc::new(AtomicUsize::new(0));
    let mut waiters = Vec::new();
    for _ in 0..n {
        let (lock, key, through) = (Arc::clone(&lock), key.clone(), through.clone());
        waiters.push(tokio::spawn(async move {
            let lease = ok(case, "acquire", lock.acquire(&key, n, TTL, LONG_WAIT).await);
            through.fetch_add(1, Ordering::SeqCst);
            lease
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        through.load(Ordering::SeqCst),
        0,
        "[{case}] a waiter got a permit of a full semaphore"
    );
    for (released, lease) in held.into_iter().enumerate() {
        release(&*lock, case, lease).await;
        let started = Instant::now();
        while through.load(Ordering::SeqCst) <= released {
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "[{case}] release {} did not reach a waiter within 3 s",
                released + 1
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for waiter in waiters {
        let lease = waiter.await.expect("waiter task");
        release(&*lock, case, lease).await;
    }
}

/// A permit that is never released (dropped lease, 1 s ttl) frees its place when its ttl ends,
/// and a waiter's deadline is honoured.
pub async fn semaphore_crashed_holder_frees_at_its_ttl(lock: Arc<dyn DistributedSemaphore>) {
    let case = "semaphore_crashed_holder_frees_at_its_ttl";
    let key = unique_key(case, "k");
    let crashed = ok(
        case,
        "try_acquire",
        lock.try_acquire(&key, 1, Duration::from_secs(1)).await,
    )
    .unwrap_or_else(|| panic!("[{case}] no permit"));
    drop(crashed);
    let started = Instant::now();
    let timed_out = lock.acquire(&key, 1, TTL, Duration::from_millis(200)).await;
    assert!(
        matches!(timed_out, Err(LockError::Timeout { .. })),
        "[{case}] acquire of a full semaphore with a 200 ms wait gave {timed_out:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "[{case}] acquire gave up after {:?}, before its 200 ms wait",
        started.elapsed()
    );
    let lease = ok(case, "acquire", lock.acquire(&key, 1, TTL, LONG_WAIT).await);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(3500),
        "[{case}] a crashed holder with a 1 s ttl kept its permit for {took:?}"
    );
    release(&*lock, case, lease).await;
}

/// Another limit while permits are held is refused naming both numbers; once they drained, the
/// new limit applies. A limit of 0 is refused.
pub async fn semaphore_limit_mismatch_is_refused(lock: Arc<dyn DistributedSemaphore>) {
    let case = "semaphore_limit_mismatch_is_refused";
    let key = unique_key(case, "k");
    let held = permit(&*lock, case, &key, 3).await;
    for refused in [
        lock.try_acquire(&key, 4, TTL).await,
        lock.acquire(&key, 4, TTL, Duration::from_secs(1))
            .await
            .map(Some),
    ] {
        match refused {
            Err(LockError::InvalidConfig { input, reason })
                if input.contains("max_holders (4)") && reason.contains("limit of 3") => {}
            other => panic!(
                "[{case}] a limit of 4 while permits are held with 3 gave {other:?}, not \
                 InvalidConfig naming both"
            ),
        }
    }
    release(&*lock, case, held).await;
    let mut four = Vec::new();
    for _ in 0..4 {
        four.push(permit(&*lock, case, &key, 4).await);
    }
    for lease in four {
        release(&*lock, case, lease).await;
    }
    let zero = lock.try_acquire(&key, 0, TTL).await;
    assert!(
        matches!(zero, Err(LockError::InvalidConfig { .. })),
        "[{case}] a limit of 0 gave {zero:?}"
    );
}

/// Fences increase across every grant, also after the semaphore drained; extends and releases
/// check the token; a lease of another primitive is refused with `InvalidConfig`; bad ttls are
/// refused.
pub async fn semaphore_fences_tokens_and_kinds(lock: Arc<dyn DistributedSemaphore>) {
    let case = "semaphore_fences_tokens_and_kinds";
    let key = unique_key(case, "k");
    let mut last = 0;
    for round in 0..3 {
        let a = permit(&*lock, case, &key, 2).await;
        let b = permit(&*lock, case, &key, 2).await;
        for fence in [a.fence(), b.fence()] {
            assert!(
                fence > last,
                "[{case}] round {round}: fence {fence} after {last}"
            );
            last = fence;
        }
        let mut held = a.clone();
        assert!(
            ok(
                case,
                "extend of a held permit",
                lock.extend(&mut held, TTL).await
            ),
            "[{case}] a held permit could not be extended"
        );
        release(&*lock, case, a.clone()).await;
        release(&*lock, case, b).await;
        let mut stale = a.clone();
        assert!(
            !ok(
                case,
                "extend of a released permit",
                lock.extend(&mut stale, TTL).await
            ),
            "[{case}] a released permit was extended"
        );
        assert!(
            !ok(case, "release of a released permit", lock.release(a).await),
            "[{case}] a released permit was released again"
        );
    }
    for ttl in [
        Duration::ZERO,
        Duration::from_micros(500),
        leasehold::backend::ttl::MAX_TTL + Duration::from_secs(1),
    ] {
        let refused = lock.try_acquire(&key, 2, ttl).await;
        assert!(
            matches!(refused, Err(LockError::InvalidTtl { .. })),
            "[{case}] try_acquire with ttl {ttl:?} gave {refused:?}"
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
                    && reason.contains("semaphore") => {}
            other => panic!(
                "[{case}] an exclusive lease handed to the semaphore gave {other:?}, not \
                 InvalidConfig naming both kinds"
            ),
        }
    }
}
