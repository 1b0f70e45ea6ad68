//! The read/write lock suite: [`rw_suite!`](crate::rw_suite), its cases and how to run them by
//! hand.

pub mod cases;

use std::sync::Arc;

use leasehold::DistributedRwLock;

use crate::CaseFuture;

/// One case of the read/write suite: its name and how to run it.
#[derive(Debug, Clone, Copy)]
pub struct RwCase {
    /// The case's name, as in [`cases`].
    pub name: &'static str,
    /// Runs the case; panics with a message naming the case on failure.
    pub run: fn(Arc<dyn DistributedRwLock>) -> CaseFuture,
}

/// Calls `$callback!` with `[$args]` and the list of every read/write case.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_rw_cases {
    ($callback:ident, $($args:tt)*) => {
        $crate::$callback! {
            [$($args)*]
            rw_readers_share_and_exclude_writers,
            rw_writer_excludes_readers_and_writers,
            rw_stress_writers_exclude_everyone,
            rw_waiting_writer_goes_before_new_readers,
            rw_writer_that_stops_waiting_leaves_no_mark,
            rw_crashed_waiting_writer_blocks_readers_briefly,
            rw_crashed_reader_blocks_writer_until_its_ttl,
            rw_fences_increase_and_tokens_are_checked,
            rw_bad_input_is_refused,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __rw_case_list {
    ([] $($case:ident,)*) => {
        &[$($crate::rw::RwCase {
            name: stringify!($case),
            run: |lock| ::std::boxed::Box::pin($crate::rw::cases::$case(lock)),
        },)*]
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __rw_case_tests {
    ([$factory:expr] $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                $crate::rw::run(async { $factory.await }, $crate::rw::cases::$case);
            }
        )*
    };
}

/// Generates one `#[test]` per read/write case against the backend made by `$factory`, and,
/// in a module `write_side`, the whole exclusive suite against the write side of the same
/// backend used as a mutex ([`WriteSide`](crate::adapters::WriteSide)).
///
/// ```ignore
/// leasehold_conformance::rw_suite!(async { leasehold::memory::MemoryLock::new() });
/// ```
#[macro_export]
macro_rules! rw_suite {
    ($factory:expr) => {
        $crate::__with_rw_cases!(__rw_case_tests, $factory);

        mod write_side {
            #[allow(unused_imports)]
            use super::*;

            $crate::suite!(async { $crate::adapters::WriteSide::new($factory.await) });
        }
    };
}

/// Every read/write case, for running them by hand.
pub fn all_cases() -> &'static [RwCase] {
    crate::__with_rw_cases!(__rw_case_list,)
}

/// Runs one case against the backend made by `factory`, on a fresh 2-thread tokio runtime.
///
/// # Panics
///
/// When the case fails (with a message naming it), or when the runtime cannot be built.
pub fn run<L, F, C, Fut>(factory: F, case: C)
where
    L: DistributedRwLock,
    F: std::future::Future<Output = L>,
    C: FnOnce(Arc<dyn DistributedRwLock>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    crate::runtime().block_on(async {
        let lock: Arc<dyn DistributedRwLock> = Arc::new(factory.await);
        case(lock).await;
    });
}
