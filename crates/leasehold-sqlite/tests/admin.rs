//! Status, list, forced release, and a bad table name.

use leasehold::LockError;
use leasehold_sqlite::SqliteLock;

fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("leasehold-sqlite-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.db"))
}

// The admin suite, one test per case, on one file shared by the cases.
leasehold_conformance::admin_suite!(async {
    SqliteLock::open(temp_db("admin"))
        .await
        .expect("open a temp sqlite database")
});

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
