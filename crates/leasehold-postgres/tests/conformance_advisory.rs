//! The whole conformance suite against the shared PostgreSQL server (advisory strategy).

mod support;

async fn lock() -> leasehold_postgres::PostgresLock {
    let url = support::shared_url();
    leasehold_postgres::PostgresLock::builder()
        .url(&url)
        .strategy(leasehold_postgres::Strategy::Advisory)
        // One connection per held lock plus one per waiter: the stress case needs 33.
        .max_connections(40)
        .build()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at {url}: {e}\nstart it with `scripts/services.sh`")
        })
}

leasehold_conformance::suite!(lock());
