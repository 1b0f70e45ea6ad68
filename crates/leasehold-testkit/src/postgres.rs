//! [`PrivateCluster`]: a PostgreSQL cluster of a test's own.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use nix::sys::signal::Signal;

use crate::{
    failed,
    os::{chown_postgres, is_root, signal, temp_dir},
    ports::free_port,
};

/// A private PostgreSQL cluster (initdb + `pg_ctl`, as user `postgres` when run as root, with
/// `fsync=off`: the machine itself never crashes here) on a free loopback port, in a temp dir,
/// stopped and removed when dropped.
#[derive(Debug)]
pub struct PrivateCluster {
    /// Its loopback port.
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// Server options added to the defaults (TLS, settings of the test).
    extra: String,
    /// Environment of the server processes (libfaketime).
    env: Vec<(String, String)>,
}

fn must<T>(result: std::io::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn pg_bin() -> std::io::Result<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            failed(format!(
                "no /usr/lib/postgresql ({e}): install PostgreSQL with `apt-get install \
                 postgresql` or run `scripts/services.sh`"
            ))
        })?
        .filter_map(Result::ok)
        .map(|d| d.path().join("bin"))
        .find(|bin| bin.join("initdb").exists())
        .ok_or_else(|| failed("initdb not found under /usr/lib/postgresql/*/bin"))
}

/// Runs a PostgreSQL tool with environment variables for it (and the server it starts), as
/// user `postgres` when we are root (initdb refuses root).
fn run_pg(bin: &Path, tool: &str, args: &[&str], env: &[(String, String)]) -> std::io::Result<()> {
    let tool = bin.join(tool);
    let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut command = if is_root() {
        // runuser keeps the environment, but `env` makes the variables explicit.
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", "env"]);
        command
    } else {
        Command::new("env")
    };
    let status = command
        .args(&vars)
        .arg(&tool)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| failed(format!("running {}: {e}", tool.display())))?;
    if status.success() {
        Ok(())
    } else {
        Err(failed(format!("{} {args:?}: {status}", tool.display())))
    }
}

impl PrivateCluster {
    /// Starts one with the defaults.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is missing or the cluster does not come up (the message says how to
    /// install it).
    pub fn start() -> Self {
        must(Self::try_start(false, &[]))
    }

    /// One started with these extra settings (`name=value`, passed as `-c name=value`).
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn start_with_settings(settings: &[&str]) -> Self {
        must(Self::try_start(false, settings))
    }

    /// A cluster that also serves TLS with a certificate for 127.0.0.1 from a throwaway CA
    /// ([`ca_file`](Self::ca_file)).
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start), and when the certificates cannot be made.
    pub fn start_tls() -> Self {
        must(Self::try_start(true, &[]))
    }

    /// [`start_with_settings`](Self::start_with_settings) (with TLS if `tls`), returning what
    /// went wrong instead of panicking.
    ///
    /// # Errors
    ///
    /// When PostgreSQL is missing or the cluster does not come up.
    pub fn try_start(tls: bool, settings: &[&str]) -> std::io::Result<Self> {
        let port = free_port()?;
        // Made first, so its `Drop` removes the directory whatever fails after.
        let mut cluster = Self {
            port,
            dir: temp_dir("pg", port)?,
            bin: pg_bin()?,
            extra: String::new(),
            env: Vec::new(),
        };
        let dir = cluster.dir.clone();
        if is_root() {
            // initdb runs as user postgres and must own its directory.
            chown_postgres(&dir, false)?;
        }
        let data = dir.join("data");
        run_pg(
            &cluster.bin,
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
            &[],
        )?;
        if tls {
            let certs = dir.join("tls");
            crate::make_certs(&certs, true)?;
            cluster.extra = format!(
                " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                certs.display()
            );
        }
        for setting in settings {
            cluster.extra.push_str(" -c ");
            cluster.extra.push_str(setting);
        }
        cluster.try_pg_ctl_start()?;
        Ok(cluster)
    }

    fn pg_ctl(&self, args: &[&str]) -> std::io::Result<()> {
        let data = self.dir.join("data");
        let data = data.to_string_lossy();
        let mut all = vec!["-D", &data, "-w"];
        all.extend_from_slice(args);
        run_pg(&self.bin, "pg_ctl", &all, &self.env)
    }

    fn try_pg_ctl_start(&self) -> std::io::Result<()> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off{}",
            self.port,
            self.dir.display(),
            self.extra
        );
        let log = self.dir.join("server.log");
        self.pg_ctl(&["-l", &log.to_string_lossy(), "-o", &options, "start"])
    }

    /// A cluster whose wall clock libfaketime reads from a file on every call
    /// (`FAKETIME_TIMESTAMP_FILE`, `FAKETIME_NO_CACHE=1`), with the monotonic clocks left
    /// alone; [`set_clock`](Self::set_clock) steps it while the server runs.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start), and when libfaketime is missing.
    pub fn start_with_faked_clock() -> Self {
        let lib = Path::new("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1");
        assert!(
            lib.exists(),
            "{} is missing: install faketime with `apt-get install faketime` (scripts/services.sh does)",
            lib.display()
        );
        let mut cluster = Self::start();
        must(cluster.pg_ctl(&["stop"]));
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
        must(cluster.try_pg_ctl_start());
        cluster
    }

    fn clock_file(&self) -> PathBuf {
        self.dir.join("faketime")
    }

    /// Sets the faked wall clock's offset from the real one (libfaketime syntax: `+0`, `+1h`,
    /// `-30m`).
    ///
    /// # Panics
    ///
    /// When the clock file cannot be written.
    pub fn set_clock(&self, offset: &str) {
        std::fs::write(self.clock_file(), format!("{offset}\n")).expect("write the clock file");
    }

    /// The CA that signed the server certificate of a [`start_tls`](Self::start_tls) cluster.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls/ca.crt")
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The pids of the server processes serving connections with this `application_name`.
    ///
    /// # Panics
    ///
    /// When the cluster does not answer.
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

    /// Every process of the cluster: the postmaster and its children.
    pub fn pids(&self) -> Vec<i32> {
        let Ok(pid) = std::fs::read_to_string(self.dir.join("data/postmaster.pid")) else {
            return Vec::new();
        };
        let Some(postmaster) = pid
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return Vec::new();
        };
        let children = Command::new("pgrep")
            .args(["-P", &postmaster.to_string()])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        std::iter::once(postmaster)
            .chain(children.lines().filter_map(|l| l.trim().parse().ok()))
            .collect()
    }

    /// SIGSTOP of the whole cluster: it keeps its connections and answers nothing.
    pub fn pause(&self) {
        signal(Signal::SIGSTOP, &self.pids());
    }

    /// SIGCONT.
    pub fn resume(&self) {
        signal(Signal::SIGCONT, &self.pids());
    }

    /// `pg_ctl stop -m immediate` (a crash, as far as clients can tell: the postmaster
    /// SIGQUITs its backends), then start again with the same data.
    ///
    /// # Panics
    ///
    /// When it does not come back.
    pub fn restart_immediately(&self) {
        must(self.try_crash_and_restart());
    }

    /// [`restart_immediately`](Self::restart_immediately), returning what went wrong.
    ///
    /// # Errors
    ///
    /// When it does not stop or does not come back.
    pub fn try_crash_and_restart(&self) -> std::io::Result<()> {
        self.resume();
        self.pg_ctl(&["-m", "immediate", "stop"])?;
        self.try_pg_ctl_start()
    }

    /// `pg_terminate_backend` of every other client backend; how many were ended.
    ///
    /// # Errors
    ///
    /// When the admin connection fails.
    pub async fn kill_connections(&self) -> std::io::Result<u64> {
        let pool = sqlx::PgPool::connect(&self.url()).await.map_err(failed)?;
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend') AS t",
        )
        .fetch_one(&pool)
        .await
        .map_err(failed)?;
        pool.close().await;
        Ok(u64::try_from(killed).unwrap_or(0))
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.resume();
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Server processes stopped with SIGSTOP, continued (SIGCONT) when dropped, also when a test
/// fails, so that the cluster can still be stopped.
#[derive(Debug)]
pub struct Stopped(Vec<i32>);

impl Stopped {
    /// Stops `pids`.
    ///
    /// # Panics
    ///
    /// When `pids` is empty, or one of them cannot be stopped (it exited already): the test
    /// would go on without its fault.
    pub fn stop(pids: Vec<i32>) -> Self {
        assert!(!pids.is_empty(), "no server process to stop");
        for &pid in &pids {
            if let Err(error) =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGSTOP)
            {
                signal(Signal::SIGCONT, &pids);
                panic!("SIGSTOP of server process {pid} failed: {error}");
            }
        }
        Self(pids)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(Signal::SIGCONT, &self.0);
    }
}
