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

/// A private PgBouncer in front of a private cluster is killed while a lease-table guard
/// holds a lock, and comes back 1 s later: the lease is a row, so nothing is lost. The guard
/// says `Unknown` while renewals fail and `Held` once they work again, with the same fence; a
/// second client cannot take the key meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooler_restart_leaves_lease_table_locks_held() {
    use std::time::Duration;

    use leasehold::{GuardState, LockOptions, Locker};
    use leasehold_testkit::{pgbouncer::PrivatePgBouncer, postgres::PrivateCluster};

    let cluster = PrivateCluster::start();
    let bouncer = PrivatePgBouncer::start(cluster.port);
    let through = PostgresLock::builder()
        .url(bouncer.url())
        .transaction_pooler(true)
        .request_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect("connect through the private pgbouncer");
    let direct = PostgresLock::connect(&cluster.url())
        .await
        .expect("connect");
    let options = LockOptions::default()
        .with_ttl(Duration::from_secs(6))
        .with_renew_every(Duration::from_millis(300));
    let guard = Locker::new(through)
        .lock("pooler-restart", options.clone())
        .await
        .unwrap();
    let fence = guard.fence();
    bouncer.kill();
    let mut saw_unknown = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        saw_unknown |= guard.state() == GuardState::Unknown;
        if saw_unknown {
            break;
        }
    }
    assert!(saw_unknown, "renewals through a dead pooler did not fail");
    let other = Locker::new(direct.clone());
    assert!(
        other
            .try_lock("pooler-restart", options.clone())
            .await
            .unwrap()
            .is_none(),
        "the key was free while its holder's pooler was down"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    bouncer.restart();
    let mut held_again = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if guard.state() == GuardState::Held {
            held_again = true;
            break;
        }
    }
    assert!(held_again, "the guard did not recover: {:?}", guard.state());
    assert_eq!(guard.fence(), fence);
    assert!(guard.release().await.unwrap(), "the lease was still held");
}
