//! The read/write and semaphore suites on the lease-table strategy: on the shared server, and
//! through PgBouncer in transaction mode (each attempt is a transaction of its own there); the
//! read/write suite on the advisory strategy, which refuses to run behind a pooler.

mod support;

use std::time::Duration;

use leasehold::{DistributedRwLock, LockError, LockKey};
use leasehold_postgres::{PostgresAdvisoryLock, PostgresLock};

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

mod rw {
    leasehold_conformance::rw_suite!(crate::support::shared_lock());
}

mod semaphore {
    leasehold_conformance::semaphore_suite!(crate::support::shared_lock());
}

mod admin {
    leasehold_conformance::primitive_admin_suite!(crate::support::shared_lock());
}

mod admin_through_pgbouncer {
    leasehold_conformance::primitive_admin_suite!(crate::pgbouncer_lock());
}

mod rw_through_pgbouncer {
    leasehold_conformance::rw_suite!(crate::pgbouncer_lock());
}

mod semaphore_through_pgbouncer {
    leasehold_conformance::semaphore_suite!(crate::pgbouncer_lock());
}

/// One connection per held lease plus one per waiter: the write side's stress case needs 33.
async fn advisory_lock() -> PostgresAdvisoryLock {
    support::connect_shared_advisory(PostgresLock::builder().max_connections(40)).await
}

mod rw_advisory {
    leasehold_conformance::rw_suite!(crate::advisory_lock());
}

#[tokio::test]
async fn advisory_read_write_lock_refuses_a_transaction_pooler() {
    let url = leasehold_testkit::env::pgbouncer_url();
    let lock = PostgresAdvisoryLock::builder()
        .url(&url)
        .transaction_pooler(true)
        .build()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach PgBouncer at {url}: {e}\nstart it with `scripts/services.sh` (it installs and starts pgbouncer)")
        });
    let key = LockKey::new("advisory-rw-behind-pooler").unwrap();
    let ttl = Duration::from_secs(5);
    let refused = [
        lock.try_acquire_read(&key, ttl).await.map(|_| ()),
        lock.acquire_write(&key, ttl, Duration::from_secs(1))
            .await
            .map(|_| ()),
    ];
    for outcome in refused {
        assert!(
            matches!(outcome, Err(LockError::Unsupported { .. })),
            "the advisory read/write lock behind a pooler gave {outcome:?}"
        );
    }
}
