//! The whole conformance suite against a fresh database file per case.

leasehold_conformance::suite!(async {
    let dir = std::env::temp_dir().join(format!("leasehold-sqlite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(
        format!("{:?}.db", std::time::Instant::now()).replace(['{', '}', ' ', ':', ','], "_"),
    );
    leasehold_sqlite::SqliteLock::open(&file)
        .await
        .expect("open a temp sqlite database")
});
