#![doc = include_str!("../README.md")]

pub mod adapters;
pub mod admin;
pub mod cases;
pub mod restart;
pub mod rw;
pub mod semaphore;
mod support;

use std::{future::Future, pin::Pin, sync::Arc};

pub use leasehold;
use leasehold::DistributedLock;

pub use crate::support::unique_key;

/// A boxed case future.
pub type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One case of the suite: its name and how to run it.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// The case's name, as in [`cases`].
    pub name: &'static str,
    /// Runs the case against a backend; panics with a message naming the case on failure.
    pub run: fn(Arc<dyn DistributedLock>) -> CaseFuture,
}

/// Calls `$callback!` with `[$args]` and the list of every case: the one list of cases.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_cases {
    ($callback:ident, $($args:tt)*) => {
        $crate::$callback! {
            [$($args)*]
            exclusive_try_acquire,
            distinct_keys_are_independent,
            release_then_reacquire,
            tokens_are_unique,
            bad_ttls_are_rejected_alike,
            special_character_keys_work_and_do_not_collide,
            expiry_frees_the_key,
            stale_release_and_extend_leave_new_holder_untouched,
            extend_keeps_lease_past_original_ttl,
            extend_after_expiry_returns_false_and_does_not_resurrect,
            fences_increase_across_holders,
            waiting_acquire_gets_lock_soon_after_release,
            waiting_acquire_honours_deadline,
            waiting_acquire_gets_lock_when_holder_expires,
            dropped_acquire_leaves_no_lock_beyond_its_ttl,
            key_stays_held_until_valid_until,
            zero_and_short_waits_take_a_free_key,
            waiter_timing_out_around_a_release_leaves_no_ghost,
            waiter_gets_the_key_without_a_release_notification,
            stress_mutual_exclusion,
            guard_renewal_keeps_lock_for_several_ttls,
            guard_lost_fires_when_lease_taken_away,
            guard_reports_lost_when_validity_ends,
            with_lock_cancels_body_on_loss,
            with_lock_releases_after_body_and_panic,
            with_lock_reports_a_loss_after_a_blocking_body,
            try_with_lock_skips_a_held_key,
            dropping_guard_frees_lock_long_before_ttl,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __case_list {
    ([] $($case:ident,)*) => {
        &[$($crate::Case {
            name: stringify!($case),
            run: |lock| ::std::boxed::Box::pin($crate::cases::$case(lock)),
        },)*]
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __case_tests {
    ([$factory:expr] $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                $crate::run(async { $factory.await }, $crate::cases::$case);
            }
        )*
    };
}

/// Generates one `#[test]` per case, each running against a backend made by `$factory`, an
/// async block (or any future) evaluating to the backend.
///
/// ```ignore
/// leasehold_conformance::suite!(async {
///     RedisLock::connect(&std::env::var("REDIS_URL").unwrap()).await.unwrap()
/// });
/// ```
///
/// Each test builds its own multi-threaded tokio runtime, so the calling crate needs no
/// tokio dependency of its own.
#[macro_export]
macro_rules! suite {
    ($factory:expr) => {
        $crate::__with_cases!(__case_tests, $factory);
    };
}

/// Every case of the suite, for running them by hand (e.g. against a deliberately broken
/// backend that must fail some of them).
pub fn all_cases() -> &'static [Case] {
    __with_cases!(__case_list,)
}

/// Runs one case against the backend made by `factory`, on a fresh 2-thread tokio runtime.
///
/// # Panics
///
/// When the case fails (with a message naming it), or when the runtime cannot be built.
pub fn run<L, F, C, Fut>(factory: F, case: C)
where
    L: DistributedLock,
    F: Future<Output = L>,
    C: FnOnce(Arc<dyn DistributedLock>) -> Fut,
    Fut: Future<Output = ()>,
{
    runtime().block_on(async {
        let lock: Arc<dyn DistributedLock> = Arc::new(factory.await);
        case(lock).await;
    });
}

/// A fresh 2-thread tokio runtime for one case.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime for a conformance case")
}
