//! TLS with `sslmode=verify-full` against a private cluster whose certificate comes from a
//! throwaway CA: the right CA connects over TLS, another CA is refused.

mod support;

use std::{path::Path, time::Duration};

use leasehold::{DistributedLock, LockKey};
use leasehold_postgres::PostgresLock;
use support::PrivateCluster;

fn verify_full(cluster: &PrivateCluster, ca: &Path) -> String {
    format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        cluster.url(),
        ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_over_tls_with_the_right_ca_only() {
    let cluster = PrivateCluster::start_tls();
    let lock = PostgresLock::connect(&verify_full(&cluster, &cluster.ca_file()))
        .await
        .expect("verify-full with the cluster's CA");
    let tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(lock.pool())
        .await
        .unwrap();
    assert!(tls, "the connection is not encrypted");
    let key = LockKey::new("tls").unwrap();
    let lease = lock
        .try_acquire(&key, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(lock.release(lease).await.unwrap());

    // A CA that did not sign the server's certificate.
    let other = PrivateCluster::start_tls();
    let err = PostgresLock::connect(&verify_full(&cluster, &other.ca_file()))
        .await
        .expect_err("a certificate from an unknown CA must be refused");
    let message = format!("{err:#}");
    assert!(
        message.to_lowercase().contains("certificate"),
        "the error should say the certificate was refused: {message}"
    );
}
