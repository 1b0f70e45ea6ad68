//! The whole conformance suite against the shared PostgreSQL server (advisory strategy).

mod support;

async fn lock() -> leasehold_postgres::PostgresAdvisoryLock {
    // One connection per held lock plus one per waiter: the stress case needs 33.
    support::connect_shared_advisory(
        leasehold_postgres::PostgresLock::builder().max_connections(40),
    )
    .await
}

leasehold_conformance::suite!(lock());
