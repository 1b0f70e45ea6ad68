//! Workers holding guards write to a fenced resource; a paused holder's stale write is rejected.

use std::{sync::Arc, time::Duration};

use leasehold::{DistributedLock, LockKey, LockOptions, Locker};
use leasehold_tests::{backends, FencedResource};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contending_guards_never_write_with_a_stale_fence() {
    for (name, backend) in backends().await {
        let locker = Locker::from_arc(Arc::clone(&backend));
        let resource = Arc::new(FencedResource::default());
        let key = format!(
            "tests/fenced_workers/{name}/{:?}",
            std::time::Instant::now()
        );
        let mut workers = Vec::new();
        for _ in 0..8 {
            let (locker, resource, key) = (locker.clone(), resource.clone(), key.clone());
            workers.push(tokio::spawn(async move {
                for _ in 0..10 {
                    let options = LockOptions::default()
                        .with_ttl(Duration::from_secs(2))
                        .with_wait(Duration::from_secs(30));
                    let guard = locker.lock(&key, options).await.expect("lock");
                    assert!(
                        resource.write(guard.fence()),
                        "a holder's write was rejected"
                    );
                    guard.release().await.expect("release");
                }
            }));
        }
        for worker in workers {
            worker.await.expect("worker panicked");
        }
        assert_eq!(resource.state().accepted, 80, "[{name}]");
        assert_eq!(resource.state().rejected, 0, "[{name}]");

        // A holder that outlives its lease is fenced off.
        let key = LockKey::new(key).unwrap();
        let stale = backend
            .try_acquire(&key, Duration::from_millis(50))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fresh = backend
            .acquire(&key, Duration::from_secs(5), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            resource.write(fresh.fence()),
            "[{name}] the new holder was rejected"
        );
        assert!(
            !resource.write(stale.fence()),
            "[{name}] a stale holder's write was accepted"
        );
        assert_eq!(resource.state().rejected, 1, "[{name}]");
        backend.release(fresh).await.unwrap();
    }
}
