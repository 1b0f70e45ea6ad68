//! The read/write and semaphore suites against a fresh database file per case.

async fn fresh() -> leasehold_sqlite::SqliteLock {
    let dir = std::env::temp_dir().join(format!("leasehold-sqlite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(format!("{}.db", uuid_like()));
    leasehold_sqlite::SqliteLock::open(&file)
        .await
        .expect("open a temp sqlite database")
}

/// A name no other case of this run uses.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos}-{}", NEXT.fetch_add(1, Ordering::SeqCst))
}

mod rw {
    leasehold_conformance::rw_suite!(crate::fresh());
}

mod semaphore {
    leasehold_conformance::semaphore_suite!(crate::fresh());
}

mod admin {
    leasehold_conformance::primitive_admin_suite!(crate::fresh());
}
