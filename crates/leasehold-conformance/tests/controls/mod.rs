//! The runner the negative-control tests share: run cases against a broken backend and see
//! which fail.

use std::panic::{self, AssertUnwindSafe};

/// Runs `run` for each of `cases` named in `only` (all of them when `only` is empty); returns
/// the names of those that panicked.
pub(crate) fn failing<C>(
    cases: &[C],
    name: fn(&C) -> &'static str,
    only: &[&str],
    run: impl Fn(&C),
) -> Vec<&'static str> {
    cases
        .iter()
        .filter(|case| only.is_empty() || only.contains(&name(case)))
        .filter(|case| panic::catch_unwind(AssertUnwindSafe(|| run(case))).is_err())
        .map(name)
        .collect()
}

/// Checks that every case in `expected` exists and fails under `flaw`.
pub(crate) fn assert_caught<C>(
    flaw: &dyn std::fmt::Debug,
    cases: &[C],
    name: fn(&C) -> &'static str,
    expected: &[&str],
    run: impl Fn(&C),
) {
    for wanted in expected {
        assert!(
            cases.iter().any(|case| name(case) == *wanted),
            "no case named {wanted}"
        );
    }
    let failed = failing(cases, name, expected, run);
    let missed: Vec<_> = expected.iter().filter(|n| !failed.contains(n)).collect();
    assert!(missed.is_empty(), "{flaw:?} slipped through {missed:?}");
}
