//! Processes, signals, users and certificates.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

/// Whether this process runs as root (initdb then runs as user `postgres`).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Sends `signal` to each of `pids`; a process that is gone already is skipped.
pub fn signal(signal: Signal, pids: &[i32]) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Makes a throwaway CA and a certificate for 127.0.0.1 in `dir` with `scripts/test-certs.sh`
/// (`ca.crt`, `server.crt`, `server.key`); owned by user `postgres` when `for_postgres` and we
/// are root, so the server can read its key.
///
/// # Errors
///
/// When the script fails or cannot run (it needs `openssl`: `scripts/services.sh` installs it).
pub fn make_certs(dir: &Path, for_postgres: bool) -> std::io::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-certs.sh");
    let status = Command::new("bash").arg(&script).arg(dir).status()?;
    if !status.success() {
        return Err(crate::failed(format!(
            "{} failed: {status}",
            script.display()
        )));
    }
    if for_postgres && is_root() {
        chown_postgres(dir, true)?;
    }
    Ok(())
}

/// `chown [-R] postgres: path`.
pub(crate) fn chown_postgres(path: &Path, recursive: bool) -> std::io::Result<()> {
    let mut command = Command::new("chown");
    if recursive {
        command.arg("-R");
    }
    let status = command.arg("postgres:").arg(path).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(crate::failed(format!(
            "chown postgres: {} failed: {status}",
            path.display()
        )))
    }
}

/// A new, empty directory for one private server: `<tmp>/leasehold-<what>-<port>-<pid>-<n>`,
/// unique within this process too (two servers may draw the same free port in turn).
pub(crate) fn temp_dir(what: &str, port: u16) -> std::io::Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "leasehold-{what}-{port}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
