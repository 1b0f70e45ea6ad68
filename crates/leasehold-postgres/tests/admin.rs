//! `LockAdmin` on PostgreSQL: the admin suite (`leasehold_conformance::admin_suite!`) on the
//! shared server and through PgBouncer, the release watch, and the advisory strategy's refusal.

mod support;

use leasehold::{DistributedLock, LockAdmin, LockError, LockKey};
use leasehold_postgres::PostgresLock;
use support::{connect_shared, deprecated_advisory_lock, shared_advisory_lock};

fn key(name: &str) -> LockKey {
    LockKey::new(name).unwrap()
}

/// A table of this test's own, so listings see only its keys.
fn table(name: &str) -> String {
    format!("admin_{name}_{}", std::process::id())
}

async fn drop_table(lock: &PostgresLock, table: &str) {
    sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(lock.pool())
        .await
        .unwrap();
}

/// The admin suite, one test per case, on the shared server's default table.
mod direct {
    leasehold_conformance::admin_suite!(super::support::shared_lock());
}

/// The same through PgBouncer in transaction mode: each admin statement runs in a transaction
/// of its own there.
mod through_pgbouncer {
    leasehold_conformance::admin_suite!(super::pgbouncer_lock());
}

async fn pgbouncer_lock() -> PostgresLock {
    let url = leasehold_testkit::env::pgbouncer_url();
    PostgresLock::builder()
        .url(&url)
        .transaction_pooler(true)
        .build()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach PgBouncer at {url}: {e}\nstart it with `scripts/services.sh` (it installs and starts pgbouncer)")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deprecated_advisory_path_refuses_admin_calls_clearly() {
    // `PostgresAdvisoryLock` has no `LockAdmin` (a compile_fail doctest shows it); a
    // `PostgresLock` built with the deprecated advisory strategy refuses at run time.
    let lock = deprecated_advisory_lock().await;
    let k = key("advisory/admin");
    for error in [
        lock.status(&k).await.unwrap_err(),
        lock.list("").await.unwrap_err(),
        lock.force_release(&k).await.unwrap_err(),
    ] {
        assert!(matches!(error, LockError::Unsupported { .. }), "{error:?}");
        assert!(error.to_string().contains("advisory"), "{error}");
        assert!(!error.is_transient());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_release_wakes_the_holders_release_watch_on_the_lease_table_only() {
    let name = table("watch");
    let lock = connect_shared(PostgresLock::builder().table(&name)).await;
    assert!(
        lock.watch_releases(&key("offered")).is_some(),
        "the lease table with notified waiting offers a release watch"
    );
    leasehold_conformance::admin::release_watch(&lock).await;
    drop_table(&lock, &name).await;
    let advisory = shared_advisory_lock().await;
    assert!(
        advisory.watch_releases(&key("offered")).is_none(),
        "the advisory strategy has no forced release to announce"
    );
}
