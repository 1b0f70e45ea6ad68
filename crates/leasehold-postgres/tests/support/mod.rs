//! Test support: the shared PostgreSQL of the suite, and private clusters (initdb + pg_ctl in a
//! temp dir on a free loopback port) that fault tests may restart.

#![allow(dead_code, unreachable_pub)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use leasehold_postgres::{PostgresAdvisoryLock, PostgresLock, PostgresLockBuilder, Strategy};

pub fn shared_url() -> String {
    std::env::var("LEASEHOLD_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub async fn shared_lock() -> PostgresLock {
    connect_shared(PostgresLock::builder()).await
}

/// The advisory strategy on the shared server.
pub async fn shared_advisory_lock() -> PostgresAdvisoryLock {
    let url = shared_url();
    PostgresAdvisoryLock::connect(&url)
        .await
        .unwrap_or_else(|e| unreachable(&url, &e))
}

/// The advisory strategy through the deprecated builder path (a `PostgresLock` that hands
/// every call to a `PostgresAdvisoryLock`), for the tests of that path.
#[allow(deprecated)]
pub async fn deprecated_advisory_lock() -> PostgresLock {
    connect_shared(PostgresLock::builder().strategy(Strategy::Advisory)).await
}

/// Builds `builder` against the shared server, failing with instructions when it is not there.
pub async fn connect_shared(builder: PostgresLockBuilder) -> PostgresLock {
    let url = shared_url();
    builder
        .url(&url)
        .build()
        .await
        .unwrap_or_else(|e| unreachable(&url, &e))
}

/// The same for the advisory strategy.
pub async fn connect_shared_advisory(builder: PostgresLockBuilder) -> PostgresAdvisoryLock {
    let url = shared_url();
    builder
        .url(&url)
        .build_advisory()
        .await
        .unwrap_or_else(|e| unreachable(&url, &e))
}

fn unreachable(url: &str, error: &dyn std::fmt::Display) -> ! {
    panic!(
        "cannot reach PostgreSQL at {url}: {error}\n\
         start it with `scripts/services.sh` (or run the tests through `scripts/test.sh`), \
         or point LEASEHOLD_POSTGRES_URL at a running server"
    )
}

fn pg_bin() -> PathBuf {
    let dirs = std::fs::read_dir("/usr/lib/postgresql").unwrap_or_else(|e| {
        panic!("no /usr/lib/postgresql ({e}): install PostgreSQL with `apt-get install postgresql` or run scripts/services.sh")
    });
    dirs.filter_map(Result::ok)
        .map(|d| d.path().join("bin"))
        .find(|bin| bin.join("initdb").exists())
        .expect("initdb not found under /usr/lib/postgresql/*/bin")
}

/// A private PostgreSQL cluster, stopped and removed when dropped.
pub struct PrivateCluster {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// Server options added to the defaults (TLS, settings of the test).
    extra: String,
    /// Environment of the server processes (libfaketime).
    env: Vec<(String, String)>,
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (initdb refuses root).
fn run_pg(bin: &Path, tool: &str, args: &[&str]) {
    run_pg_with(bin, tool, args, &[]);
}

/// As [`run_pg`], with environment variables for the tool (and the server it starts).
fn run_pg_with(bin: &Path, tool: &str, args: &[&str], env: &[(String, String)]) {
    let tool = bin.join(tool);
    let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let status = if nix_is_root() {
        // runuser keeps the environment, but `env` makes the variables explicit.
        Command::new("runuser")
            .arg("-u")
            .arg("postgres")
            .arg("--")
            .arg("env")
            .args(&vars)
            .arg(&tool)
            .args(args)
            .stdout(Stdio::null())
            .status()
    } else {
        Command::new("env")
            .args(&vars)
            .arg(&tool)
            .args(args)
            .stdout(Stdio::null())
            .status()
    }
    .unwrap_or_else(|e| panic!("running {}: {e}", tool.display()));
    assert!(status.success(), "{} {args:?} failed", tool.display());
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

impl PrivateCluster {
    pub fn start() -> Self {
        Self::start_with(false, &[])
    }

    /// One started with these extra settings (`name=value`, passed as `-c name=value`).
    pub fn start_with_settings(settings: &[&str]) -> Self {
        Self::start_with(false, settings)
    }

    /// A cluster that also serves TLS with a certificate for 127.0.0.1 from a throwaway CA
    /// ([`ca_file`](Self::ca_file)), made by `scripts/test-certs.sh`.
    pub fn start_tls() -> Self {
        Self::start_with(true, &[])
    }

    fn start_with(tls: bool, settings: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let dir =
            std::env::temp_dir().join(format!("leasehold-pg-test-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        if nix_is_root() {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let bin = pg_bin();
        let data = dir.join("data");
        run_pg(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        let mut extra = String::new();
        if tls {
            let certs = dir.join("tls");
            make_certs(&certs);
            extra = format!(
                " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                certs.display()
            );
        }
        for setting in settings {
            extra.push_str(" -c ");
            extra.push_str(setting);
        }
        let cluster = Self {
            port,
            dir,
            bin,
            extra,
            env: Vec::new(),
        };
        cluster.pg_ctl_start();
        cluster
    }

    fn pg_ctl_start(&self) {
        let data = self.dir.join("data");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off{}",
            self.port,
            self.dir.display(),
            self.extra
        );
        let log = self.dir.join("server.log");
        run_pg_with(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
                &options,
                "start",
            ],
            &self.env,
        );
    }

    /// A cluster whose wall clock libfaketime reads from a file on every call
    /// (`FAKETIME_TIMESTAMP_FILE`, `FAKETIME_NO_CACHE=1`), with the monotonic clocks left
    /// alone; [`set_clock`](Self::set_clock) steps it while the server runs.
    pub fn start_with_faked_clock() -> Self {
        let lib = Path::new("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1");
        assert!(
            lib.exists(),
            "{} is missing: install faketime with `apt-get install faketime` (scripts/services.sh does)",
            lib.display()
        );
        let mut cluster = Self::start();
        run_pg(
            &cluster.bin,
            "pg_ctl",
            &[
                "-D",
                cluster.dir.join("data").to_str().unwrap(),
                "-w",
                "stop",
            ],
        );
        cluster.set_clock("+0");
        cluster.env = [
            ("LD_PRELOAD", lib.display().to_string()),
            (
                "FAKETIME_TIMESTAMP_FILE",
                cluster.clock_file().display().to_string(),
            ),
            ("FAKETIME_NO_CACHE", "1".to_owned()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .to_vec();
        cluster.pg_ctl_start();
        cluster
    }

    fn clock_file(&self) -> PathBuf {
        self.dir.join("faketime")
    }

    /// Sets the faked wall clock's offset from the real one (libfaketime syntax: `+0`, `+1h`,
    /// `-30m`).
    pub fn set_clock(&self, offset: &str) {
        std::fs::write(self.clock_file(), format!("{offset}\n")).expect("write the clock file");
    }

    /// The CA that signed the server certificate of a [`start_tls`](Self::start_tls) cluster.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls/ca.crt")
    }

    /// The pids of the server processes serving connections with this `application_name`.
    pub async fn backend_pids(&self, application_name: &str) -> Vec<i32> {
        let pool = sqlx::PgPool::connect(&self.url())
            .await
            .expect("private cluster");
        let pids = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid",
        )
        .bind(application_name)
        .fetch_all(&pool)
        .await
        .expect("pg_stat_activity");
        pool.close().await;
        pids
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl stop -m immediate`: a crash, as far as clients can tell.
    fn stop_immediately(&self) {
        let data = self.dir.join("data");
        run_pg(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// Stops immediately, then starts again.
    pub fn restart_immediately(&self) {
        self.stop_immediately();
        self.pg_ctl_start();
    }
}

/// Makes a CA and a server certificate in `dir` with `scripts/test-certs.sh`, readable by the
/// server.
fn make_certs(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-certs.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(status.success(), "{} failed", script.display());
    if nix_is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(dir)
            .status()
            .expect("chown");
        assert!(status.success());
    }
}

/// Server processes stopped with SIGSTOP, continued (SIGCONT) when dropped, also when a test
/// fails, so that the cluster can still be stopped.
pub struct Stopped(Vec<i32>);

impl Stopped {
    pub fn stop(pids: Vec<i32>) -> Self {
        assert!(!pids.is_empty(), "no server process to stop");
        signal("STOP", &pids);
        Self(pids)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("CONT", &self.0);
    }
}

fn signal(name: &str, pids: &[i32]) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .args(pids.iter().map(ToString::to_string))
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pids:?} failed");
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.stop_immediately();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
