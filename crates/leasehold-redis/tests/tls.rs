//! `rediss://` against a private redis-server that serves only TLS, with a certificate from a
//! throwaway CA: trusted through `root_certificate`, the lock works; without it (the system's
//! roots do not know that CA) connecting fails. Built only with the `tls` feature (the
//! default); without it, `rediss://` is refused (`tests/no_tls.rs`).

#![cfg(feature = "tls")]

mod support;

use std::time::Duration;

use leasehold::{DistributedLock, LockError, LockKey};
use leasehold_redis::RedisLock;
use support::PrivateRedis;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_works_with_the_servers_ca_and_is_refused_without_it() {
    let server = PrivateRedis::start_tls();
    let ca = std::fs::read(server.ca_file()).expect("CA file");
    let lock = RedisLock::builder()
        .url(server.url())
        .root_certificate(ca.clone())
        .build()
        .await
        .expect("rediss:// with the server's CA");
    let key = LockKey::new("tls").unwrap();
    let ttl = Duration::from_secs(5);
    let lease = lock.try_acquire(&key, ttl).await.unwrap().unwrap();
    // A waiter's pub/sub connection goes over TLS too: it is woken by the release.
    let waiter = {
        let lock = lock.clone();
        let key = key.clone();
        tokio::spawn(async move { lock.acquire(&key, ttl, Duration::from_secs(3)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let released = std::time::Instant::now();
    assert!(lock.release(lease).await.unwrap());
    let next = waiter.await.unwrap().expect("the waiter gets the lock");
    assert!(
        released.elapsed() < Duration::from_millis(200),
        "the waiter was not woken by the release (took {:?})",
        released.elapsed()
    );
    assert!(lock.release(next).await.unwrap());

    let started = std::time::Instant::now();
    let err = RedisLock::builder()
        .url(server.url())
        .connect_timeout(Duration::from_secs(1))
        .build()
        .await
        .expect_err("a certificate from an unknown CA must be refused");
    // Permanent: retrying cannot fix a certificate, so it is not retried either.
    assert!(
        matches!(err, LockError::Backend { .. }) && !err.is_transient(),
        "{err:?}"
    );
    assert!(err.to_string().contains("certificate"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refusing took {:?}",
        started.elapsed()
    );

    let err = RedisLock::builder()
        .url(server.url().replace("rediss://", "redis://"))
        .root_certificate(ca)
        .build()
        .await
        .expect_err("a root certificate without TLS is a configuration error");
    assert!(matches!(err, LockError::InvalidConfig { .. }), "{err:?}");
}
