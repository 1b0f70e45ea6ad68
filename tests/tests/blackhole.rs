//! No call hangs on a server that stopped answering, and waiting survives a notification
//! connection that went silent: every operation of Redis and PostgreSQL (both strategies)
//! against a server black-holed by the harness's proxy returns within its request timeout
//! (plus the wait, for `acquire`) with a transient error.
//!
//! Each test prints how long every operation took to fail (`--nocapture` shows it).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use leasehold::{DistributedLock, LockAdmin, LockError, LockKey, LockOptions, Locker};
use leasehold_postgres::{PostgresLock, Strategy};
use leasehold_redis::RedisLock;
use leasehold_tests::harness::proxy::{Mode, Proxy};
use tokio::time::{sleep, Instant};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// What a failing call may take beyond its bound on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(1_500);

fn redis_url() -> String {
    leasehold_testkit::env::redis_url()
}

fn postgres_url() -> String {
    leasehold_testkit::env::postgres_url()
}

fn key(name: &str) -> LockKey {
    LockKey::new(format!("blackhole/{name}/{}", std::process::id())).unwrap()
}

/// The host and port of `url`, which must be on loopback.
fn upstream(url: &str) -> SocketAddr {
    let rest = url.split_once("://").expect("a URL").1;
    let authority = rest.split(['/', '?']).next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    let addr: SocketAddr = host_port
        .parse()
        .unwrap_or_else(|e| panic!("{host_port}: {e} (the tests need an IP:port URL)"));
    assert!(addr.ip().is_loopback(), "{addr} is not on loopback");
    addr
}

/// `url` with its host and port replaced by the proxy's.
fn through(url: &str, proxy: &Proxy) -> String {
    url.replace(&upstream(url).to_string(), &proxy.addr.to_string())
}

/// Runs `op`, which must fail transiently within `bound` (+ slack); returns how long it took.
async fn fails_within<T: std::fmt::Debug>(
    what: &str,
    bound: Duration,
    op: impl Future<Output = Result<T, LockError>>,
) -> Duration {
    let started = Instant::now();
    let outcome = tokio::time::timeout(bound + SLACK * 4, op).await;
    let took = started.elapsed();
    let outcome = outcome.unwrap_or_else(|_| panic!("{what} hung for {took:?} (bound {bound:?})"));
    match &outcome {
        Err(error) if error.is_transient() => {}
        Err(LockError::Timeout { .. }) if what.starts_with("acquire") => {}
        other => panic!("{what}: expected a transient error, got {other:?}"),
    }
    assert!(
        took <= bound + SLACK,
        "{what} took {took:?} to fail (bound {bound:?} + {SLACK:?})"
    );
    println!("{what}: failed after {took:?}");
    took
}

/// Every operation against a black-holed server, through `lock` (and `admin`, when given).
async fn every_operation_fails_in_time(
    name: &str,
    lock: Arc<dyn DistributedLock>,
    admin: Option<&dyn LockAdmin>,
    proxy: &Proxy,
    release_bound: Duration,
) {
    let mut lease = lock
        .try_acquire(&key(&format!("{name}-held")), Duration::from_secs(30))
        .await
        .unwrap()
        .expect("a free key");
    let locker = Locker::from_arc(Arc::clone(&lock));
    let guard = locker
        .lock(
            key(&format!("{name}-guard")),
            LockOptions::default().with_ttl(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    proxy.set(Mode::BlackHole);
    let ttl = Duration::from_secs(30);
    let wait = Duration::from_millis(1_500);
    fails_within(
        &format!("{name} try_acquire"),
        REQUEST_TIMEOUT,
        lock.try_acquire(&key(&format!("{name}-try")), ttl),
    )
    .await;
    fails_within(
        &format!("acquire ({name}, 1.5 s wait)"),
        wait + REQUEST_TIMEOUT,
        lock.acquire(&key(&format!("{name}-wait")), ttl, wait),
    )
    .await;
    fails_within(&format!("{name} extend"), REQUEST_TIMEOUT, async {
        // The advisory strategy gives a lease up when its connection does not answer.
        match lock.extend(&mut lease, ttl).await {
            Ok(false) => Err(LockError::transient("test", "lease given up")),
            other => other,
        }
    })
    .await;
    if let Some(admin) = admin {
        fails_within(
            &format!("{name} admin status"),
            REQUEST_TIMEOUT,
            admin.status(lease.key()),
        )
        .await;
    }
    fails_within(&format!("{name} release"), release_bound, async {
        match lock.release(lease).await {
            Ok(false) => Err(LockError::transient("test", "lease already given up")),
            other => other,
        }
    })
    .await;
    fails_within(
        &format!("{name} guard release"),
        REQUEST_TIMEOUT,
        guard.release(),
    )
    .await;
    proxy.set(Mode::Pass);
}

async fn proxy_for(url: &str) -> Proxy {
    Proxy::start(upstream(url))
        .await
        .unwrap_or_else(|e| panic!("cannot start the proxy in front of {}: {e}", upstream(url)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_calls_against_a_black_holed_server_fail_within_the_response_timeout() {
    let proxy = proxy_for(&redis_url()).await;
    let lock = RedisLock::builder()
        .url(through(&redis_url(), &proxy))
        .response_timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .check_eviction_policy(false)
        .build()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach Redis at {}: {e}; start it with scripts/services.sh",
                redis_url()
            )
        });
    every_operation_fails_in_time(
        "redis",
        Arc::new(lock.clone()),
        Some(&lock),
        &proxy,
        REQUEST_TIMEOUT,
    )
    .await;
}

/// A lock of `strategy` on the PostgreSQL at `url` (the shared server or the proxy in front of
/// it) with the tests' request timeout. `ping_on_checkout: false` turns off sqlx's ping when a
/// connection leaves the pool, which would stall on a held-back reply before the statement
/// under test is ever sent.
// Both strategies through one helper: the deprecated `strategy` path hands every call of the
// advisory one to `PostgresAdvisoryLock`.
#[allow(deprecated)]
async fn postgres_lock(url: &str, strategy: Strategy, ping_on_checkout: bool) -> PostgresLock {
    let unreachable = |e: &dyn std::fmt::Display| -> ! {
        panic!(
            "cannot reach PostgreSQL at {}: {e}; start it with scripts/services.sh (or run \
             scripts/test.sh)",
            postgres_url()
        )
    };
    let builder = PostgresLock::builder()
        .strategy(strategy)
        .request_timeout(REQUEST_TIMEOUT);
    let builder = if ping_on_checkout {
        builder.url(url)
    } else {
        let pool = leasehold_postgres::sqlx::postgres::PgPoolOptions::new()
            .test_before_acquire(false)
            .acquire_timeout(REQUEST_TIMEOUT)
            .connect(url)
            .await
            .unwrap_or_else(|e| unreachable(&e));
        builder.pool(pool)
    };
    builder.build().await.unwrap_or_else(|e| unreachable(&e))
}

async fn postgres_through(proxy: &Proxy, strategy: Strategy) -> PostgresLock {
    postgres_lock(&through(&postgres_url(), proxy), strategy, true).await
}

/// The shared Redis, direct.
async fn redis_direct() -> RedisLock {
    RedisLock::connect(&redis_url()).await.unwrap_or_else(|e| {
        panic!(
            "cannot reach Redis at {}: {e}; start it with scripts/services.sh (or run \
             scripts/test.sh)",
            redis_url()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_calls_against_a_black_holed_server_fail_within_the_request_timeout() {
    let proxy = proxy_for(&postgres_url()).await;
    let lock = postgres_through(&proxy, Strategy::LeaseTable).await;
    every_operation_fails_in_time(
        "postgres",
        Arc::new(lock.clone()),
        Some(&lock),
        &proxy,
        REQUEST_TIMEOUT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_calls_against_a_black_holed_server_fail_within_the_request_timeout() {
    let proxy = proxy_for(&postgres_url()).await;
    let lock = postgres_through(&proxy, Strategy::Advisory).await;
    every_operation_fails_in_time(
        "postgres-advisory",
        Arc::new(lock),
        None,
        &proxy,
        REQUEST_TIMEOUT,
    )
    .await;
}

/// A waiter whose pub/sub connection is black-holed (commands still flow) gets a released key
/// within the fallback bound, whether it subscribed before the black hole or tries to after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_waiters_get_a_released_key_with_their_pub_sub_connection_black_holed() {
    let proxy = proxy_for(&redis_url()).await;
    let direct = leasehold_redis::redis::Client::open(redis_url()).unwrap();
    let commands = direct.get_connection_manager().await.unwrap_or_else(|e| {
        panic!(
            "cannot reach Redis at {}: {e}; start it with scripts/services.sh",
            redis_url()
        )
    });
    let pub_sub = leasehold_redis::redis::Client::open(through(&redis_url(), &proxy)).unwrap();
    let waiting = RedisLock::builder()
        .connection(commands, Some(pub_sub))
        .connect_timeout(REQUEST_TIMEOUT)
        .check_eviction_policy(false)
        .build()
        .await
        .unwrap();
    let holder = redis_direct().await;
    assert!(waiting.capabilities().notified_wait);
    // The documented bound: one fallback period (0.25-0.5 s) plus a round trip; doubled.
    let bound = Duration::from_millis(1_000);
    for (round, black_hole_first) in [(0, false), (1, true), (2, false)] {
        let key = key(&format!("pubsub-{round}"));
        let held = holder
            .try_acquire(&key, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        if black_hole_first {
            proxy.set(Mode::BlackHole);
        }
        let waiter = {
            let (waiting, key) = (waiting.clone(), key.clone());
            tokio::spawn(async move {
                let lease = waiting
                    .acquire(&key, Duration::from_secs(5), Duration::from_secs(20))
                    .await;
                (Instant::now(), lease)
            })
        };
        sleep(Duration::from_millis(400)).await;
        proxy.set(Mode::BlackHole);
        let released_at = Instant::now();
        assert!(holder.release(held).await.unwrap());
        let (got_at, lease) = waiter.await.unwrap();
        let lease = lease.unwrap();
        let took = got_at - released_at;
        println!("redis hand-off with pub/sub black-holed (round {round}): {took:?}");
        assert!(
            took < bound,
            "round {round}: hand-off took {took:?}, bound {bound:?}"
        );
        waiting.release(lease).await.unwrap();
        proxy.set(Mode::Pass);
        proxy.reset_all();
    }
}

/// A PostgreSQL waiter whose server (pool and `LISTEN` connection) is black-holed while the key
/// is released keeps trying, and gets the key soon after the server answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_waiters_get_a_key_released_while_their_server_was_black_holed() {
    let proxy = proxy_for(&postgres_url()).await;
    let waiting = postgres_through(&proxy, Strategy::LeaseTable).await;
    let holder = postgres_lock(&postgres_url(), Strategy::LeaseTable, true).await;
    let key = key("listen");
    let held = holder
        .try_acquire(&key, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let waiter = {
        let (waiting, key) = (waiting.clone(), key.clone());
        tokio::spawn(async move {
            let lease = waiting
                .acquire(&key, Duration::from_secs(5), Duration::from_secs(30))
                .await;
            (Instant::now(), lease)
        })
    };
    sleep(Duration::from_millis(500)).await;
    proxy.set(Mode::BlackHole);
    assert!(holder.release(held).await.unwrap());
    sleep(Duration::from_secs(3)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter got the key through a black hole"
    );
    let answering_at = Instant::now();
    proxy.set(Mode::Pass);
    let (got_at, lease) = waiter.await.unwrap();
    let lease = lease.unwrap();
    let took = got_at - answering_at;
    println!("postgres waiter got the key {took:?} after the black hole ended");
    // A request cut by its timeout, the pause after a failure, one attempt; generously.
    let bound = REQUEST_TIMEOUT + Duration::from_millis(1_500);
    assert!(took < bound, "took {took:?}, bound {bound:?}");
    waiting.release(lease).await.unwrap();
}

/// Acquires whose request lands while the reply is lost (held back by the proxy until the
/// request timeout passed), or whose future is dropped while the reply is on its way, leave no
/// lock behind: right after the failure, another client gets the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquires_whose_reply_is_lost_or_whose_future_is_dropped_leave_no_ghost() {
    let redis_proxy = proxy_for(&redis_url()).await;
    let pg_proxy = proxy_for(&postgres_url()).await;
    let redis = RedisLock::builder()
        .url(through(&redis_url(), &redis_proxy))
        .response_timeout(REQUEST_TIMEOUT)
        .check_eviction_policy(false)
        .build()
        .await
        .unwrap();
    // No ping at checkout (sqlx's default would stall on the held reply before the statement
    // is ever sent, and the test could not fail).
    let postgres = postgres_lock(
        &through(&postgres_url(), &pg_proxy),
        Strategy::LeaseTable,
        false,
    )
    .await;
    let advisory = postgres_lock(
        &through(&postgres_url(), &pg_proxy),
        Strategy::Advisory,
        false,
    )
    .await;
    let pg_admin = postgres_lock(&postgres_url(), Strategy::LeaseTable, true).await;
    let pairs: Vec<Pair<'_>> = vec![
        (
            "redis",
            Arc::new(redis),
            Arc::new(redis_direct().await),
            &redis_proxy,
        ),
        (
            "postgres",
            Arc::new(postgres),
            Arc::new(postgres_lock(&postgres_url(), Strategy::LeaseTable, true).await),
            &pg_proxy,
        ),
        (
            "postgres-advisory",
            Arc::new(advisory),
            Arc::new(postgres_lock(&postgres_url(), Strategy::Advisory, true).await),
            &pg_proxy,
        ),
    ];
    for (name, through_proxy, other, proxy) in pairs {
        for (cut, how) in [
            (None, "reply lost"),
            (Some(Duration::from_millis(300)), "future dropped"),
        ] {
            let key = key(&format!("ghost-{name}-{}", how.replace(' ', "-")));
            proxy.set(Mode::HoldReplies);
            let attempt = through_proxy.acquire(&key, Duration::from_secs(30), Duration::ZERO);
            let outcome = match cut {
                None => attempt.await.map(|_| ()),
                Some(cut) => match tokio::time::timeout(cut, attempt).await {
                    Ok(outcome) => outcome.map(|_| ()),
                    Err(_) => Err(LockError::transient("test", "dropped")),
                },
            };
            assert!(
                outcome.is_err(),
                "{name}, {how}: the acquire succeeded: {outcome:?}"
            );
            // The request reached the server; only a cleanup frees its 30 s lock in time.
            proxy.set(Mode::Pass);
            let started = Instant::now();
            let lease = loop {
                if let Some(lease) = other
                    .try_acquire(&key, Duration::from_secs(5))
                    .await
                    .unwrap()
                {
                    break lease;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(3),
                    "{name}, {how}: the key was still held 3 s after the acquire failed (ttl 30 s): a ghost lock"
                );
                sleep(Duration::from_millis(20)).await;
            };
            println!(
                "{name}, {how}: the key was free {:?} after the failure",
                started.elapsed()
            );
            if name == "postgres" {
                // The statement did run: the row and its fence exist.
                let status = pg_admin.status(&key).await.unwrap();
                assert!(
                    status.last_fence.is_some(),
                    "{name}, {how}: the acquire never reached the server"
                );
            }
            other.release(lease).await.unwrap();
        }
    }
}

/// A backend through the proxy, the same backend direct, and the proxy.
type Pair<'a> = (
    &'static str,
    Arc<dyn DistributedLock>,
    Arc<dyn DistributedLock>,
    &'a Proxy,
);
