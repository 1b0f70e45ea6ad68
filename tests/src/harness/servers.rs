//! Private servers that the nemesis may stop, kill and restart: a `redis-server` or a
//! PostgreSQL cluster (initdb + pg_ctl as user `postgres` when run as root) on a free loopback
//! port, in a temp dir, removed when dropped.
//!
//! The backend crates' fault tests have their own copies of this (`tests/support`): a test
//! target cannot depend on this crate, which depends on them.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use leasehold_postgres::sqlx;
use leasehold_redis::redis;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `redis-server` with `appendonly yes` and `appendfsync always`, so that locks and fences
    /// survive a kill -9 (the configuration the Redis README asks for when fences matter).
    Redis,
    /// A PostgreSQL cluster (with `fsync=off`: the machine itself does not crash here), with
    /// `synchronous_commit = off` and `wal_writer_delay = 10s` as a role's defaults may be: an
    /// immediate stop then loses every commit that did not flush its WAL itself.
    Postgres,
}

/// A private server.
#[derive(Debug)]
pub struct PrivateServer {
    kind: Kind,
    /// Its loopback port.
    pub port: u16,
    dir: PathBuf,
    redis: Option<Child>,
    pg_bin: Option<PathBuf>,
}

fn free_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")?
        .local_addr()
        .map(|a| a.port())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn failed(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(what.to_string())
}

/// Runs a PostgreSQL tool, as user `postgres` when we are root (initdb refuses root).
fn run_pg(bin: &Path, tool: &str, args: &[&str]) -> std::io::Result<()> {
    let tool = bin.join(tool);
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&tool);
        c
    } else {
        Command::new(&tool)
    };
    let status = command.args(args).stdout(Stdio::null()).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(failed(format!("{} {args:?}: {status}", tool.display())))
    }
}

fn pg_bin() -> std::io::Result<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            failed(format!(
                "no /usr/lib/postgresql ({e}): run scripts/services.sh, which installs PostgreSQL"
            ))
        })?
        .filter_map(Result::ok)
        .map(|d| d.path().join("bin"))
        .find(|bin| bin.join("initdb").exists())
        .ok_or_else(|| failed("initdb not found under /usr/lib/postgresql/*/bin"))
}

impl PrivateServer {
    /// Starts one.
    ///
    /// # Errors
    ///
    /// When the server's programs are missing or it does not come up (the message says how to
    /// install them).
    pub fn start(kind: Kind) -> std::io::Result<Self> {
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("lockcheck-server-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut server = Self {
            kind,
            port,
            dir,
            redis: None,
            pg_bin: None,
        };
        match kind {
            Kind::Redis => server.spawn_redis(true)?,
            Kind::Postgres => {
                if is_root() {
                    // initdb runs as user postgres and must own its directory.
                    let status = Command::new("chown")
                        .arg("postgres:")
                        .arg(&server.dir)
                        .status()?;
                    if !status.success() {
                        return Err(failed(format!(
                            "chown postgres: {} failed: {status}",
                            server.dir.display()
                        )));
                    }
                }
                let bin = pg_bin()?;
                let data = server.dir.join("data");
                let data = data.to_string_lossy();
                run_pg(
                    &bin,
                    "initdb",
                    &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
                )?;
                server.pg_bin = Some(bin);
                server.pg_ctl_start()?;
            }
        }
        Ok(server)
    }

    /// The URL workers use (before any proxy).
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
            Kind::Postgres => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
        }
    }

    /// Starts redis-server on the port; with `aof` false it loads `dump.rdb` (Redis ignores
    /// the snapshot when the append-only file is on), and the caller turns the AOF on after.
    fn spawn_redis(&mut self, aof: bool) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", if aof { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                failed(format!(
                    "cannot start redis-server ({e}): run scripts/services.sh, which installs it"
                ))
            })?;
        self.redis = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let ping = redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(failed(format!(
            "private redis-server on port {} did not start",
            self.port
        )))
    }

    fn pg_ctl(&self, args: &[&str]) -> std::io::Result<()> {
        let bin = self
            .pg_bin
            .as_deref()
            .ok_or_else(|| failed("not a PostgreSQL server"))?;
        let data = self.dir.join("data");
        let mut all = vec!["-D", data.to_str().unwrap_or_default(), "-w"];
        all.extend_from_slice(args);
        run_pg(bin, "pg_ctl", &all)
    }

    fn pg_ctl_start(&self) -> std::io::Result<()> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200 \
             -c synchronous_commit=off -c wal_writer_delay=10s",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        self.pg_ctl(&[
            "-l",
            log.to_str().unwrap_or_default(),
            "-o",
            &options,
            "start",
        ])
    }

    /// The pids to signal to stop the whole server: redis-server, or every process of the
    /// cluster (postmaster and backends).
    fn pids(&self) -> Vec<i32> {
        match self.kind {
            Kind::Redis => self
                .redis
                .as_ref()
                .and_then(|c| i32::try_from(c.id()).ok())
                .into_iter()
                .collect(),
            Kind::Postgres => {
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
                // The postmaster and its children.
                let children = Command::new("pgrep")
                    .args(["-P", &postmaster.to_string()])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                std::iter::once(postmaster)
                    .chain(children.lines().filter_map(|l| l.trim().parse().ok()))
                    .collect()
            }
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// SIGSTOP of the whole server: it keeps its connections and answers nothing.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// kill -9 (Redis) or `pg_ctl stop -m immediate` (PostgreSQL, which then SIGQUITs its
    /// backends), then start again on the same port with the same data.
    ///
    /// # Errors
    ///
    /// When it does not come back.
    pub fn crash_and_restart(&mut self) -> std::io::Result<()> {
        match self.kind {
            Kind::Redis => {
                self.kill_redis();
                self.spawn_redis(true)
            }
            Kind::Postgres => {
                self.pg_ctl(&["-m", "immediate", "stop"])?;
                self.pg_ctl_start()
            }
        }
    }

    fn kill_redis(&mut self) {
        if let Some(mut child) = self.redis.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Redis only: kill -9, then start again with no data at all, as a server without
    /// persistence comes back (every lock and fence counter gone).
    ///
    /// # Errors
    ///
    /// When it does not come back.
    pub fn wipe_and_restart(&mut self) -> std::io::Result<()> {
        self.kill_redis();
        let _ = std::fs::remove_dir_all(self.dir.join("appendonlydir"));
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        self.spawn_redis(true)
    }

    /// Redis only: `SAVE`s a snapshot and keeps a copy, for
    /// [`roll_back_and_restart`](Self::roll_back_and_restart).
    ///
    /// # Errors
    ///
    /// When the server does not answer or the copy fails.
    pub fn checkpoint(&self) -> std::io::Result<()> {
        let mut conn = redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .map_err(failed)?;
        redis::cmd("SAVE").query::<()>(&mut conn).map_err(failed)?;
        std::fs::copy(self.dir.join("dump.rdb"), self.dir.join("checkpoint.rdb")).map(drop)
    }

    /// Redis only: kill -9, then start again from the last [`checkpoint`](Self::checkpoint)
    /// (a crash that rolls back to an older snapshot, or a failover to a replica that lagged
    /// by as much), with the append-only file turned on again once it is loaded.
    ///
    /// # Errors
    ///
    /// When there is no checkpoint or the server does not come back.
    pub fn roll_back_and_restart(&mut self) -> std::io::Result<()> {
        let checkpoint = self.dir.join("checkpoint.rdb");
        if !checkpoint.exists() {
            return Err(failed("no checkpoint to roll back to"));
        }
        self.kill_redis();
        let _ = std::fs::remove_dir_all(self.dir.join("appendonlydir"));
        std::fs::copy(&checkpoint, self.dir.join("dump.rdb"))?;
        self.spawn_redis(false)?;
        let mut conn = redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .map_err(failed)?;
        redis::cmd("CONFIG")
            .arg(&["SET", "appendonly", "yes"][..])
            .query::<()>(&mut conn)
            .map_err(failed)
    }

    /// Kills every client connection: `CLIENT KILL TYPE normal` and `TYPE pubsub`, or
    /// `pg_terminate_backend` of every other client backend. Returns how many were killed.
    ///
    /// # Errors
    ///
    /// When the admin connection fails.
    pub async fn kill_connections(&self) -> std::io::Result<u64> {
        match self.kind {
            Kind::Redis => {
                let client = redis::Client::open(self.url()).map_err(failed)?;
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(failed)?;
                let mut killed = 0;
                for kind in ["normal", "pubsub"] {
                    // Our own admin connection is `normal` too: skip it.
                    let n: u64 = redis::cmd("CLIENT")
                        .arg(&["KILL", "TYPE", kind, "SKIPME", "yes"][..])
                        .query_async(&mut conn)
                        .await
                        .map_err(failed)?;
                    killed += n;
                }
                Ok(killed)
            }
            Kind::Postgres => {
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
    }

    /// Redis only: `CLIENT PAUSE <ms> WRITE` (reads go on, writes wait).
    ///
    /// # Errors
    ///
    /// When the admin connection fails.
    pub async fn pause_writes(&self, duration: Duration) -> std::io::Result<()> {
        let client = redis::Client::open(self.url()).map_err(failed)?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(failed)?;
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(duration.as_millis().to_string())
            .arg("WRITE")
            .query_async::<()>(&mut conn)
            .await
            .map_err(failed)
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.resume();
        if let Some(mut child) = self.redis.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.pg_bin.is_some() {
            let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
