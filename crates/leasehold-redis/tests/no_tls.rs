//! Built without the `tls` feature (`cargo test -p leasehold-redis --no-default-features`, as
//! `scripts/test.sh` runs it): a `rediss://` URL is refused with a clear configuration error
//! that names the URL without its password, before anything is sent.

#![cfg(not(feature = "tls"))]

use leasehold::LockError;
use leasehold_redis::RedisLock;

#[tokio::test]
async fn rediss_urls_are_refused_clearly_without_the_tls_feature() {
    let error = RedisLock::connect("rediss://u:hunter2@127.0.0.1:1")
        .await
        .unwrap_err();
    assert!(
        matches!(error, LockError::InvalidConfig { .. }),
        "{error:?}"
    );
    let said = error.to_string();
    assert!(said.contains("rediss://u:***@127.0.0.1:1"), "{said}");
    assert!(said.to_lowercase().contains("tls"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
}
