//! The semaphore suite: [`semaphore_suite!`](crate::semaphore_suite), its cases and how to run
//! them by hand.

pub mod cases;

use std::sync::Arc;

use leasehold::DistributedSemaphore;

use crate::CaseFuture;

/// One case of the semaphore suite: its name and how to run it.
#[derive(Debug, Clone, Copy)]
pub struct SemaphoreCase {
    /// The case's name, as in [`cases`].
    pub name: &'static str,
    /// Runs the case; panics with a message naming the case on failure.
    pub run: fn(Arc<dyn DistributedSemaphore>) -> CaseFuture,
}

/// Calls `$callback!` with `[$args]` and the list of every semaphore case.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_semaphore_cases {
    ($callback:ident, $($args:tt)*) => {
        $crate::$callback! {
            [$($args)*]
            semaphore_admits_exactly_its_limit,
            semaphore_stress_peak_is_exactly_n,
            semaphore_releases_go_to_waiters,
            semaphore_crashed_holder_frees_at_its_ttl,
            semaphore_limit_mismatch_is_refused,
            semaphore_fences_tokens_and_kinds,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __semaphore_case_list {
    ([] $($case:ident,)*) => {
        &[$($crate::semaphore::SemaphoreCase {
            name: stringify!($case),
            run: |lock| ::std::boxed::Box::pin($crate::semaphore::cases::$case(lock)),
        },)*]
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __semaphore_case_tests {
    ([$factory:expr] $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                $crate::semaphore::run(async { $factory.await }, $crate::semaphore::cases::$case);
            }
        )*
    };
}

/// Generates one `#[test]` per semaphore case against the backend made by `$factory`, and, in
/// a module `last_permit`, the whole exclusive suite against a semaphore of 3 with 2 permits
/// of every key already held, used as a mutex ([`LastPermit`](crate::adapters::LastPermit)).
///
/// ```ignore
/// leasehold_conformance::semaphore_suite!(async { leasehold::memory::MemoryLock::new() });
/// ```
#[macro_export]
macro_rules! semaphore_suite {
    ($factory:expr) => {
        $crate::__with_semaphore_cases!(__semaphore_case_tests, $factory);

        mod last_permit {
            #[allow(unused_imports)]
            use super::*;

            $crate::suite!(async { $crate::adapters::LastPermit::new($factory.await, 3) });
        }
    };
}

/// Every semaphore case, for running them by hand.
pub fn all_cases() -> &'static [SemaphoreCase] {
    crate::__with_semaphore_cases!(__semaphore_case_list,)
}

/// Runs one case against the backend made by `factory`, on a fresh 2-thread tokio runtime.
///
/// # Panics
///
/// When the case fails (with a message naming it), or when the runtime cannot be built.
pub fn run<L, F, C, Fut>(factory: F, case: C)
where
    L: DistributedSemaphore,
    F: std::future::Future<Output = L>,
    C: FnOnce(Arc<dyn DistributedSemaphore>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    crate::runtime().block_on(async {
        let lock: Arc<dyn DistributedSemaphore> = Arc::new(factory.await);
        case(lock).await;
    });
}
