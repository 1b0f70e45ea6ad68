//! The shared servers' URLs, from the environment that `scripts/services.sh` sets up.

/// The shared Redis: `LEASEHOLD_REDIS_URL`, default `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    var("LEASEHOLD_REDIS_URL", "redis://127.0.0.1:6379")
}

/// The shared Redis Cluster (3 primaries, 3 replicas): `LEASEHOLD_REDIS_CLUSTER_URL`, default
/// `redis+cluster://127.0.0.1:30001,...,127.0.0.1:30006`.
pub fn redis_cluster_url() -> String {
    var(
        "LEASEHOLD_REDIS_CLUSTER_URL",
        "redis+cluster://127.0.0.1:30001,127.0.0.1:30002,127.0.0.1:30003,127.0.0.1:30004,\
         127.0.0.1:30005,127.0.0.1:30006",
    )
}

/// The shared PostgreSQL: `LEASEHOLD_POSTGRES_URL`, default
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn postgres_url() -> String {
    var(
        "LEASEHOLD_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    )
}

/// The shared PgBouncer (transaction pooling): `LEASEHOLD_PGBOUNCER_URL`, default
/// `postgres://postgres@127.0.0.1:6432/postgres`.
pub fn pgbouncer_url() -> String {
    var(
        "LEASEHOLD_PGBOUNCER_URL",
        "postgres://postgres@127.0.0.1:6432/postgres",
    )
}

/// The shared etcd cluster (3 members, heartbeat 50 ms, election timeout 500 ms):
/// `LEASEHOLD_ETCD_URL`, default `etcd://127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793`.
pub fn etcd_url() -> String {
    var(
        "LEASEHOLD_ETCD_URL",
        "etcd://127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793",
    )
}

/// The endpoints of [`etcd_url`], as `host:port` strings.
pub fn etcd_endpoints() -> Vec<String> {
    let url = etcd_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    rest.split(',').map(str::to_owned).collect()
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Fails a test that cannot reach the shared `server` (e.g. `"Redis"`) at `url`, saying how
/// to start it. Tests never skip: a missing server is a failure.
///
/// # Panics
///
/// Always.
pub fn unreachable(server: &str, url: &str, error: &dyn std::fmt::Display) -> ! {
    panic!(
        "cannot reach {server} at {url}: {error}\n\
         start it with `scripts/services.sh` (or run the tests through `scripts/test.sh`), \
         or point the LEASEHOLD_*_URL variables at running servers"
    )
}
