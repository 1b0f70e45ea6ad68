//! The contract of [`LockAdmin`], for backends that offer it: status, listing by prefix and
//! forced release, as named cases like the main suite's. Separate from the cases of
//! [`DistributedLock`] because admin support is optional.
//!
//! [`admin_suite!`](crate::admin_suite) makes one `#[test]` per case; [`check`] runs them all
//! in one call. Every case works on keys no other run uses, so a shared server is fine, and
//! fails with a message starting with `[<case name>]`. Cases for what only some backends offer
//! (a waiter woken by a forced release, a holder's release watch) pass trivially where the
//! backend does not claim it; a backend's own tests should assert that it offers what it
//! claims.

pub mod cases;
pub mod primitives;

use std::{future::Future, sync::Arc};

use leasehold::{DistributedLock, LockAdmin};

use crate::CaseFuture;

pub use self::cases::release_watch;

/// A backend with its admin side, as the admin cases take it.
pub trait AdminLock: DistributedLock + LockAdmin {}

impl<T: DistributedLock + LockAdmin> AdminLock for T {}

/// One admin case: its name and how to run it.
#[derive(Debug, Clone, Copy)]
pub struct AdminCase {
    /// The case's name, as in [`cases`].
    pub name: &'static str,
    /// Runs the case; panics with a message starting `[<name>]` on failure.
    pub run: fn(Arc<dyn AdminLock>) -> CaseFuture,
}

/// Calls `$callback!` with `[$args]` and the list of every admin case: the one list.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_admin_cases {
    ($callback:ident, $($args:tt)*) => {
        $crate::$callback! {
            [$($args)*]
            status_of_a_never_locked_key_shows_nothing,
            status_of_a_held_key_shows_its_fence_and_time_left,
            status_of_a_released_key_keeps_its_fence,
            list_returns_the_keys_under_a_prefix_in_byte_order,
            list_takes_the_prefix_as_text,
            forced_release_frees_a_held_key_once,
            forced_out_holder_cannot_extend_and_fences_go_on,
            forced_release_wakes_a_waiter,
            forced_release_wakes_the_holders_release_watch,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __admin_case_list {
    ([] $($case:ident,)*) => {
        &[$($crate::admin::AdminCase {
            name: stringify!($case),
            run: |lock| ::std::boxed::Box::pin($crate::admin::cases::$case(lock)),
        },)*]
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __admin_case_tests {
    ([$factory:expr] $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                $crate::admin::run(async { $factory.await }, $crate::admin::cases::$case);
            }
        )*
    };
}

/// Generates one `#[test]` per admin case, each against a backend made by `$factory` (an async
/// block evaluating to a backend that implements both [`DistributedLock`] and [`LockAdmin`]).
///
/// ```ignore
/// leasehold_conformance::admin_suite!(async {
///     RedisLock::connect(&std::env::var("REDIS_URL").unwrap()).await.unwrap()
/// });
/// ```
#[macro_export]
macro_rules! admin_suite {
    ($factory:expr) => {
        $crate::__with_admin_cases!(__admin_case_tests, $factory);
    };
}

/// Every admin case, for running them by hand (e.g. against a deliberately broken backend).
pub fn all_cases() -> &'static [AdminCase] {
    __with_admin_cases!(__admin_case_list,)
}

/// Runs one admin case against the backend made by `factory`, on a fresh 2-thread tokio
/// runtime.
///
/// # Panics
///
/// When the case fails (with a message naming it), or when the runtime cannot be built.
pub fn run<L, F, C, Fut>(factory: F, case: C)
where
    L: DistributedLock + LockAdmin,
    F: Future<Output = L>,
    C: FnOnce(Arc<dyn AdminLock>) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime for an admin case");
    runtime.block_on(async {
        let lock: Arc<dyn AdminLock> = Arc::new(factory.await);
        case(lock).await;
    });
}

/// Runs every admin case, one after the other, against `lock` (and its clones), from a test
/// that already has a tokio runtime.
///
/// # Panics
///
/// At the first case that fails, with a message starting `[<case name>]`.
pub async fn check<L>(lock: &L)
where
    L: DistributedLock + LockAdmin + Clone,
{
    let shared: Arc<dyn AdminLock> = Arc::new(lock.clone());
    for case in all_cases() {
        (case.run)(Arc::clone(&shared)).await;
    }
}
