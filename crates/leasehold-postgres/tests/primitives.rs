//! The read/write and semaphore suites on the lease-table strategy: on the shared server, and
//! through PgBouncer in transaction mode (each attempt is a transaction of its own there).

mod support;

use leasehold_postgres::PostgresLock;

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

mod rw_through_pgbouncer {
    leasehold_conformance::rw_suite!(crate::pgbouncer_lock());
}

mod semaphore_through_pgbouncer {
    leasehold_conformance::semaphore_suite!(crate::pgbouncer_lock());
}
