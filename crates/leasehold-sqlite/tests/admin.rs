//! Status, list, forced release, and a bad table name.

use std::time::Duration;

use leasehold::{DistributedLock, LockAdmin, LockError, LockKey};
use leasehold_sqlite::SqliteLock;

fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("leasehold-sqlite-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.db"))
}

#[tokio::test]
async fn status_list_and_forced_release_see_the_table() {
    let lock = SqliteLock::open(temp_db("admin")).await.unwrap();
    let a = LockKey::new("jobs/a").unwrap();
    let b = LockKey::new("jobs/b").unwrap();
    let other = LockKey::new("other").unwrap();
    assert_eq!(lock.status(&a).await.unwrap().last_fence, None);
    let lease_a = lock
        .try_acquire(&a, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let lease_b = lock
        .try_acquire(&b, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    lock.release(lease_b).await.unwrap();
    let _other = lock
        .try_acquire(&other, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();

    let status = lock.status(&a).await.unwrap();
    assert!(status.is_held());
    assert_eq!(status.last_fence, Some(lease_a.fence()));
    assert!(status.remaining.unwrap() > Duration::from_secs(25));
    let listed = lock.list("jobs/").await.unwrap();
    let keys: Vec<_> = listed
        .iter()
        .map(|(k, s)| (k.as_str().to_owned(), s.is_held()))
        .collect();
    assert_eq!(
        keys,
        vec![("jobs/a".to_owned(), true), ("jobs/b".to_owned(), false)]
    );
    assert_eq!(lock.list("").await.unwrap().len(), 3);

    assert!(lock.force_release(&a).await.unwrap());
    assert!(!lock.force_release(&a).await.unwrap());
    let mut stale = lease_a;
    assert!(
        !lock
            .extend(&mut stale, Duration::from_secs(30))
            .await
            .unwrap(),
        "the forced-out holder kept its lease"
    );
    let next = lock
        .try_acquire(&a, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(
        next.fence() > stale.fence(),
        "fences went back after a forced release"
    );
}

#[tokio::test]
async fn hostile_table_names_are_rejected_before_the_file_is_touched() {
    let path = temp_db("never-created");
    let _ = std::fs::remove_file(&path);
    for bad in ["locks; DROP TABLE x", "a\"b", "", &"t".repeat(64)] {
        let err = SqliteLock::builder(&path)
            .table(bad)
            .open()
            .await
            .unwrap_err();
        assert!(
            matches!(err, LockError::InvalidConfig { .. }),
            "{bad:?}: {err:?}"
        );
        assert!(err.to_string().contains("sqlite table name"), "{err}");
    }
    assert!(
        !path.exists(),
        "a rejected configuration created the database file"
    );
    let err = SqliteLock::open("/nonexistent-dir/locks.db")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent-dir/locks.db"),
        "{err}"
    );
}
