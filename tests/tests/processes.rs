//! Mutual exclusion across OS processes on one SQLite file.

use std::process::Command;

#[test]
fn several_processes_on_one_sqlite_file_never_overlap() {
    let dir = std::env::temp_dir().join(format!("leasehold-processes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("locks.db");
    let (processes, rounds) = (4, 25);
    let children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_lockworker"))
                .args([
                    db.to_str().unwrap(),
                    "shared-key",
                    &rounds.to_string(),
                    dir.to_str().unwrap(),
                ])
                .spawn()
                .expect("start lockworker")
        })
        .collect();
    for child in children {
        let status = child.wait_with_output().expect("lockworker ran").status;
        assert!(
            status.success(),
            "a worker failed ({status}): exit 3 means two processes overlapped"
        );
    }
    let counter: u32 = std::fs::read_to_string(dir.join("counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        counter,
        processes * rounds,
        "lost updates: processes overlapped"
    );
}
