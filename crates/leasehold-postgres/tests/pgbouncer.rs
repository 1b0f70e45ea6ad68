//! Both strategies pass the core conformance cases through PgBouncer in transaction pooling
//! (started by `scripts/services.sh`, URL in `LEASEHOLD_PGBOUNCER_URL`).

use leasehold_postgres::{PostgresLock, Strategy};

const CORE: &[&str] = &[
    "exclusive_try_acquire",
    "distinct_keys_are_independent",
    "release_then_reacquire",
    "stale_release_and_extend_leave_new_holder_untouched",
    "extend_keeps_lease_past_original_ttl",
    "extend_after_expiry_returns_false_and_does_not_resurrect",
    "expiry_frees_the_key",
    "fences_increase_across_holders",
    "waiting_acquire_gets_lock_soon_after_release",
    "waiting_acquire_honours_deadline",
    "stress_mutual_exclusion",
    "key_stays_held_until_valid_until",
    "zero_and_short_waits_take_a_free_key",
    "waiter_timing_out_around_a_release_leaves_no_ghost",
    "with_lock_reports_a_loss_after_a_blocking_body",
    "try_with_lock_skips_a_held_key",
];

fn bouncer_url() -> String {
    leasehold_testkit::env::pgbouncer_url()
}

// Both strategies through one helper: the deprecated `strategy` path hands every call of the
// advisory one to `PostgresAdvisoryLock`.
#[allow(deprecated)]
async fn through_pgbouncer(strategy: Strategy) -> PostgresLock {
    let url = bouncer_url();
    PostgresLock::builder()
        .url(&url)
        .strategy(strategy)
        .transaction_pooler(true)
        .max_connections(40)
        .build()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach PgBouncer at {url}: {e}\nstart it with `scripts/services.sh` (it installs and starts pgbouncer)")
        })
}

fn run_core(strategy: Strategy) {
    for case in leasehold_conformance::all_cases()
        .iter()
        .filter(|c| CORE.contains(&c.name))
    {
        leasehold_conformance::run(through_pgbouncer(strategy), case.run);
    }
}

#[test]
fn the_lease_table_strategy_works_through_pgbouncer_transaction_pooling() {
    run_core(Strategy::LeaseTable);
}

#[test]
fn the_advisory_strategy_works_through_pgbouncer_transaction_pooling() {
    run_core(Strategy::Advisory);
}
