//! The admin cases of read/write locks and semaphores: [`LockAdmin::status_of`] and
//! [`LockAdmin::list_of`] show each primitive's holders apart from the others'.
//! [`primitive_admin_suite!`](crate::primitive_admin_suite) makes one `#[test]` per case.

use std::{sync::Arc, time::Duration};

use leasehold::{
    DistributedLock, DistributedRwLock, DistributedSemaphore, Lease, LeaseKind, LockAdmin, LockKey,
    LockStatus, Primitive,
};

use crate::{
    support::{ok, unique_key},
    CaseFuture,
};

/// A backend with read/write locks, semaphores and an admin side, as these cases take it.
pub trait PrimitiveAdminLock:
    DistributedLock + DistributedRwLock + DistributedSemaphore + LockAdmin
{
}

impl<T: DistributedLock + DistributedRwLock + DistributedSemaphore + LockAdmin> PrimitiveAdminLock
    for T
{
}

/// One case: its name and how to run it.
#[derive(Debug, Clone, Copy)]
pub struct PrimitiveAdminCase {
    /// The case's name, as below.
    pub name: &'static str,
    /// Runs the case; panics with a message starting `[<name>]` on failure.
    pub run: fn(Arc<dyn PrimitiveAdminLock>) -> CaseFuture,
}

/// Calls `$callback!` with `[$args]` and the list of every case.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_primitive_admin_cases {
    ($callback:ident, $($args:tt)*) => {
        $crate::$callback! {
            [$($args)*]
            rw_status_counts_readers_and_the_writer,
            semaphore_status_counts_permits_and_shows_the_limit,
            primitive_status_counts_only_live_holders,
            list_of_shows_each_primitives_keys_apart_in_byte_order,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __primitive_admin_case_list {
    ([] $($case:ident,)*) => {
        &[$($crate::admin::primitives::PrimitiveAdminCase {
            name: stringify!($case),
            run: |lock| ::std::boxed::Box::pin($crate::admin::primitives::$case(lock)),
        },)*]
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __primitive_admin_case_tests {
    ([$factory:expr] $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                $crate::admin::primitives::run(
                    async { $factory.await },
                    $crate::admin::primitives::$case,
                );
            }
        )*
    };
}

/// Generates one `#[test]` per case against the backend made by `$factory` (an async block
/// evaluating to a backend with [`DistributedLock`], [`DistributedRwLock`], [`DistributedSemaphore`] and
/// [`LockAdmin`]).
///
/// ```ignore
/// leasehold_conformance::primitive_admin_suite!(async { leasehold::memory::MemoryLock::new() });
/// ```
#[macro_export]
macro_rules! primitive_admin_suite {
    ($factory:expr) => {
        $crate::__with_primitive_admin_cases!(__primitive_admin_case_tests, $factory);
    };
}

/// Every case, for running them by hand (e.g. against a deliberately broken backend).
pub fn all_cases() -> &'static [PrimitiveAdminCase] {
    crate::__with_primitive_admin_cases!(__primitive_admin_case_list,)
}

/// Runs one case against the backend made by `factory`, on a fresh 2-thread tokio runtime.
///
/// # Panics
///
/// When the case fails (with a message naming it), or when the runtime cannot be built.
pub fn run<L, F, C, Fut>(factory: F, case: C)
where
    L: DistributedLock + DistributedRwLock + DistributedSemaphore + LockAdmin,
    F: std::future::Future<Output = L>,
    C: FnOnce(Arc<dyn PrimitiveAdminLock>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    crate::runtime().block_on(async {
        let lock: Arc<dyn PrimitiveAdminLock> = Arc::new(factory.await);
        case(lock).await;
    });
}

const TTL: Duration = Duration::from_secs(30);
/// The ttl of a holder that is left to expire.
const SHORT: Duration = Duration::from_millis(500);

async fn status(
    lock: &dyn PrimitiveAdminLock,
    case: &str,
    p: Primitive,
    key: &LockKey,
) -> LockStatus {
    ok(case, "status_of", lock.status_of(p, key).await)
}

async fn read(lock: &dyn PrimitiveAdminLock, case: &str, key: &LockKey, ttl: Duration) -> Lease {
    ok(
        case,
        "try_acquire_read",
        lock.try_acquire_read(key, ttl).await,
    )
    .unwrap_or_else(|| panic!("[{case}] a read of {key} was refused"))
}

async fn permit(
    lock: &dyn PrimitiveAdminLock,
    case: &str,
    key: &LockKey,
    max: u32,
    ttl: Duration,
) -> Lease {
    ok(
        case,
        "try_acquire",
        DistributedSemaphore::try_acquire(lock, key, max, ttl).await,
    )
    .unwrap_or_else(|| panic!("[{case}] a permit of {key} was refused"))
}

/// Asserts `status` shows `holders` of `kind` (none: free), the last fence `fence` and, when
/// held, nearly `ttl` left on the last to end.
fn expect(
    case: &str,
    what: &str,
    status: &LockStatus,
    holders: u32,
    kind: LeaseKind,
    fence: Option<u64>,
    ttl: Duration,
) {
    assert_eq!(
        status.holders, holders,
        "[{case}] {what}: {} holders shown, {holders} expected ({status:?})",
        status.holders
    );
    assert_eq!(
        status.last_fence, fence,
        "[{case}] {what}: wrong last fence ({status:?})"
    );
    if holders == 0 {
        assert!(
            !status.is_held() && status.held_as.is_none() && status.max_holders.is_none(),
            "[{case}] {what}: a free key shows as held ({status:?})"
        );
        return;
    }
    assert_eq!(
        status.held_as,
        Some(kind),
        "[{case}] {what}: wrong kind ({status:?})"
    );
    let left = status.remaining.unwrap_or_default();
    assert!(
        left > ttl.saturating_sub(Duration::from_secs(5)) && left <= ttl,
        "[{case}] {what}: a fresh {ttl:?} hold shows {left:?} left ({status:?})"
    );
}

async fn release(lock: &dyn PrimitiveAdminLock, case: &str, lease: Lease) {
    let released = match lease.kind() {
        LeaseKind::Permit => DistributedSemaphore::release(lock, lease).await,
        LeaseKind::Exclusive => DistributedLock::release(lock, lease).await,
        _ => DistributedRwLock::release(lock, lease).await,
    };
    ok(case, "release", released);
}

/// Three readers show as three `Read` holders with the last fence, apart from the key's
/// mutex; once they leave the key is free with its fence kept; a writer shows as one `Write`.
pub async fn rw_status_counts_readers_and_the_writer(lock: Arc<dyn PrimitiveAdminLock>) {
    const CASE: &str = "rw_status_counts_readers_and_the_writer";
    let lock = &*lock;
    let key = unique_key(CASE, "rw");
    let rw = Primitive::RwLock;
    let fresh = status(lock, CASE, rw, &key).await;
    expect(CASE, "never granted", &fresh, 0, LeaseKind::Read, None, TTL);
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(read(lock, CASE, &key, TTL).await);
    }
    let last = readers.iter().map(Lease::fence).max();
    let shared = status(lock, CASE, rw, &key).await;
    expect(CASE, "3 readers", &shared, 3, LeaseKind::Read, last, TTL);
    let mutex = status(lock, CASE, Primitive::Mutex, &key).await;
    expect(
        CASE,
        "the mutex of a key read",
        &mutex,
        0,
        LeaseKind::Exclusive,
        None,
        TTL,
    );
    let semaphore = status(lock, CASE, Primitive::Semaphore, &key).await;
    expect(
        CASE,
        "the semaphore of a key read",
        &semaphore,
        0,
        LeaseKind::Permit,
        None,
        TTL,
    );
    for lease in readers {
        release(lock, CASE, lease).await;
    }
    let left = status(lock, CASE, rw, &key).await;
    expect(
        CASE,
        "after the readers left",
        &left,
        0,
        LeaseKind::Read,
        last,
        TTL,
    );
    let writer = ok(
        CASE,
        "try_acquire_write",
        lock.try_acquire_write(&key, TTL).await,
    )
    .unwrap_or_else(|| panic!("[{CASE}] the writer was refused on a free key"));
    let written = status(lock, CASE, rw, &key).await;
    let fence = Some(writer.fence());
    expect(CASE, "a writer", &written, 1, LeaseKind::Write, fence, TTL);
    release(lock, CASE, writer).await;
}

/// Two permits of four show as two `Permit` holders, the limit 4 and the last fence; after the
/// releases the key is free, without a limit, its fence kept.
pub async fn semaphore_status_counts_permits_and_shows_the_limit(
    lock: Arc<dyn PrimitiveAdminLock>,
) {
    const CASE: &str = "semaphore_status_counts_permits_and_shows_the_limit";
    let lock = &*lock;
    let key = unique_key(CASE, "sem");
    let sem = Primitive::Semaphore;
    let first = permit(lock, CASE, &key, 4, TTL).await;
    let second = permit(lock, CASE, &key, 4, TTL).await;
    let last = Some(second.fence().max(first.fence()));
    let held = status(lock, CASE, sem, &key).await;
    expect(
        CASE,
        "2 of 4 permits",
        &held,
        2,
        LeaseKind::Permit,
        last,
        TTL,
    );
    assert_eq!(
        held.max_holders,
        Some(4),
        "[{CASE}] the stored limit is not shown ({held:?})"
    );
    let rw = status(lock, CASE, Primitive::RwLock, &key).await;
    expect(
        CASE,
        "the rw lock of a semaphore's key",
        &rw,
        0,
        LeaseKind::Read,
        None,
        TTL,
    );
    release(lock, CASE, first).await;
    let one = status(lock, CASE, sem, &key).await;
    expect(
        CASE,
        "1 of 4 permits",
        &one,
        1,
        LeaseKind::Permit,
        last,
        TTL,
    );
    release(lock, CASE, second).await;
    let drained = status(lock, CASE, sem, &key).await;
    expect(
        CASE,
        "after the permits left",
        &drained,
        0,
        LeaseKind::Permit,
        last,
        TTL,
    );
}

/// A reader and a permit left to expire are no longer counted, beside one that is still live.
pub async fn primitive_status_counts_only_live_holders(lock: Arc<dyn PrimitiveAdminLock>) {
    const CASE: &str = "primitive_status_counts_only_live_holders";
    let lock = &*lock;
    let rw_key = unique_key(CASE, "rw");
    let sem_key = unique_key(CASE, "sem");
    let held = [
        read(lock, CASE, &rw_key, TTL).await,
        permit(lock, CASE, &sem_key, 3, TTL).await,
    ];
    let _expiring = [
        read(lock, CASE, &rw_key, SHORT).await,
        permit(lock, CASE, &sem_key, 3, SHORT).await,
    ];
    tokio::time::sleep(SHORT * 4).await;
    let rw = status(lock, CASE, Primitive::RwLock, &rw_key).await;
    expect(
        CASE,
        "1 live reader, 1 expired",
        &rw,
        1,
        LeaseKind::Read,
        rw.last_fence,
        TTL,
    );
    let sem = status(lock, CASE, Primitive::Semaphore, &sem_key).await;
    expect(
        CASE,
        "1 live permit, 1 expired",
        &sem,
        1,
        LeaseKind::Permit,
        sem.last_fence,
        TTL,
    );
    for lease in held {
        release(lock, CASE, lease).await;
    }
}

/// `list_of` finds a primitive's keys under a prefix, held or not, in byte order, and never a
/// key granted only as another primitive.
pub async fn list_of_shows_each_primitives_keys_apart_in_byte_order(
    lock: Arc<dyn PrimitiveAdminLock>,
) {
    const CASE: &str = "list_of_shows_each_primitives_keys_apart_in_byte_order";
    let lock = &*lock;
    let base = unique_key(CASE, "x");
    let prefix = base.as_str().trim_end_matches('x').to_owned();
    let named = |name: &str| LockKey::new(format!("{prefix}{name}")).expect("key");
    let (a, b, s, m) = (named("a"), named("b"), named("s"), named("m"));
    let reader = read(lock, CASE, &b, TTL).await;
    let writer = ok(
        CASE,
        "try_acquire_write",
        lock.try_acquire_write(&a, TTL).await,
    )
    .unwrap_or_else(|| panic!("[{CASE}] the writer was refused on a free key"));
    release(lock, CASE, writer).await;
    let held = permit(lock, CASE, &s, 2, TTL).await;
    let mutex = ok(
        CASE,
        "try_acquire",
        DistributedLock::try_acquire(lock, &m, TTL).await,
    )
    .unwrap_or_else(|| panic!("[{CASE}] the mutex {m} was busy"));
    let keys = |listed: &[(LockKey, LockStatus)]| {
        listed
            .iter()
            .map(|(k, _)| k.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let rws = ok(
        CASE,
        "list_of",
        lock.list_of(Primitive::RwLock, &prefix).await,
    );
    assert_eq!(
        keys(&rws),
        [a.as_str(), b.as_str()],
        "[{CASE}] the read/write locks under {prefix:?}"
    );
    assert_eq!(
        (rws[0].1.holders, rws[1].1.holders, rws[1].1.held_as),
        (0, 1, Some(LeaseKind::Read)),
        "[{CASE}] the read/write locks' holders: {rws:?}"
    );
    let sems = ok(
        CASE,
        "list_of",
        lock.list_of(Primitive::Semaphore, &prefix).await,
    );
    assert_eq!(
        keys(&sems),
        [s.as_str()],
        "[{CASE}] the semaphores under {prefix:?}"
    );
    assert_eq!(
        (sems[0].1.holders, sems[0].1.max_holders),
        (1, Some(2)),
        "[{CASE}] the semaphore's holders: {sems:?}"
    );
    let mutexes = ok(
        CASE,
        "list_of",
        lock.list_of(Primitive::Mutex, &prefix).await,
    );
    assert_eq!(
        keys(&mutexes),
        [m.as_str()],
        "[{CASE}] the mutexes under {prefix:?}"
    );
    release(lock, CASE, mutex).await;
    let narrow = ok(
        CASE,
        "list_of",
        lock.list_of(Primitive::RwLock, b.as_str()).await,
    );
    assert_eq!(
        keys(&narrow),
        [b.as_str()],
        "[{CASE}] the read/write locks under {b}"
    );
    release(lock, CASE, reader).await;
    release(lock, CASE, held).await;
}
