//! The whole conformance suite against the shared PostgreSQL server (advisory strategy).

mod support;

async fn lock() -> leasehold_postgres::PostgresLock {
    // One connection per held lock plus one per waiter: the stress case needs 33.
    support::connect_shared(
        leasehold_postgres::PostgresLock::builder()
            .strategy(leasehold_postgres::Strategy::Advisory)
            .max_connections(40),
    )
    .await
}

leasehold_conformance::suite!(lock());
