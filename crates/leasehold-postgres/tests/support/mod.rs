//! Test support: the shared PostgreSQL of the suite; private clusters come from
//! `leasehold-testkit`.

#![allow(dead_code, unreachable_pub, unused_imports)]

use leasehold_postgres::{PostgresAdvisoryLock, PostgresLock, PostgresLockBuilder, Strategy};
pub use leasehold_testkit::postgres::{PrivateCluster, Stopped};

pub fn shared_url() -> String {
    leasehold_testkit::env::postgres_url()
}

pub async fn shared_lock() -> PostgresLock {
    connect_shared(PostgresLock::builder()).await
}

/// The advisory strategy on the shared server.
pub async fn shared_advisory_lock() -> PostgresAdvisoryLock {
    let url = shared_url();
    PostgresAdvisoryLock::connect(&url)
        .await
        .unwrap_or_else(|e| unreachable(&url, &e))
}

/// The advisory strategy through the deprecated builder path (a `PostgresLock` that hands
/// every call to a `PostgresAdvisoryLock`), for the tests of that path.
#[allow(deprecated)]
pub async fn deprecated_advisory_lock() -> PostgresLock {
    connect_shared(PostgresLock::builder().strategy(Strategy::Advisory)).await
}

/// Builds `builder` against the shared server, failing with instructions when it is not there.
pub async fn connect_shared(builder: PostgresLockBuilder) -> PostgresLock {
    let url = shared_url();
    builder
        .url(&url)
        .build()
        .await
        .unwrap_or_else(|e| unreachable(&url, &e))
}

/// The same for the advisory strategy.
pub async fn connect_shared_advisory(builder: PostgresLockBuilder) -> PostgresAdvisoryLock {
    let url = shared_url();
    builder
        .url(&url)
        .build_advisory()
        .await
        .unwrap_or_else(|e| unreachable(&url, &e))
}

fn unreachable(url: &str, error: &dyn std::fmt::Display) -> ! {
    leasehold_testkit::env::unreachable("PostgreSQL", url, error)
}
