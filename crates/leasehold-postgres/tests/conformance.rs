//! The whole conformance suite against the shared PostgreSQL server (lease-table strategy).

async fn lock() -> leasehold_postgres::PostgresLock {
    let url = std::env::var("LEASEHOLD_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    leasehold_postgres::PostgresLock::connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {url}: {e}\n\
             start it with `scripts/services.sh` (or run the tests through `scripts/test.sh`), \
             or point LEASEHOLD_POSTGRES_URL at a running server"
            )
        })
}

leasehold_conformance::suite!(lock());
