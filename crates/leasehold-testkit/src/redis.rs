//! [`PrivateRedis`]: a `redis-server` of a test's own.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;

use crate::{
    failed,
    os::{signal, temp_dir},
    ports::free_port,
};

/// A private `redis-server` on a free loopback port, in a temp dir, killed and removed when
/// dropped. Without persistence unless started with [`try_start_persistent`]
/// (`appendonly yes`, `appendfsync always`).
///
/// [`try_start_persistent`]: Self::try_start_persistent
#[derive(Debug)]
pub struct PrivateRedis {
    /// Its loopback port.
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    args: Vec<String>,
    /// Serves TLS only, with certificates in `dir/tls`.
    tls: bool,
    /// Keeps an append-only file, fsynced on every write.
    aof: bool,
}

fn must<T>(result: std::io::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

impl PrivateRedis {
    /// Starts one with extra command-line arguments (e.g. `--maxmemory-policy volatile-lru`).
    ///
    /// # Panics
    ///
    /// When redis-server is missing or does not come up (the message says how to install it).
    pub fn start(extra_args: &[&str]) -> Self {
        must(Self::try_start(extra_args))
    }

    /// One that serves only TLS, with a certificate for 127.0.0.1 from a throwaway CA
    /// ([`ca_file`](Self::ca_file)).
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start), and when the certificates cannot be made.
    pub fn start_tls() -> Self {
        must(Self::try_start_with(&[], true, false))
    }

    /// [`start`](Self::start), returning what went wrong instead of panicking.
    ///
    /// # Errors
    ///
    /// When redis-server is missing or does not come up.
    pub fn try_start(extra_args: &[&str]) -> std::io::Result<Self> {
        Self::try_start_with(extra_args, false, false)
    }

    /// One that keeps an append-only file fsynced on every write, so that locks and fences
    /// survive a kill -9 (the configuration the Redis README asks for when fences matter).
    ///
    /// # Errors
    ///
    /// As [`try_start`](Self::try_start).
    pub fn try_start_persistent() -> std::io::Result<Self> {
        Self::try_start_with(&[], false, true)
    }

    /// A Redis Cluster node (`cluster-enabled`, a node timeout of 1 s, its `nodes.conf` in its
    /// own dir, so a crash-restart keeps its place in the cluster), on a port whose cluster bus
    /// port (+10000) is free too. See [`PrivateRedisCluster`](crate::redis_cluster::PrivateRedisCluster).
    ///
    /// # Errors
    ///
    /// As [`try_start`](Self::try_start).
    pub fn try_start_cluster_node() -> std::io::Result<Self> {
        let port = crate::ports::free_cluster_port()?;
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            "1000",
            "--cluster-config-file",
            "nodes.conf",
        ];
        Self::try_start_on(port, &args, false, false)
    }

    fn try_start_with(extra_args: &[&str], tls: bool, aof: bool) -> std::io::Result<Self> {
        Self::try_start_on(free_port()?, extra_args, tls, aof)
    }

    fn try_start_on(port: u16, extra_args: &[&str], tls: bool, aof: bool) -> std::io::Result<Self> {
        let mut server = Self {
            port,
            child: None,
            dir: temp_dir("redis", port)?,
            args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            tls,
            aof,
        };
        if tls {
            let certs = server.dir.join("tls");
            crate::make_certs(&certs, false)?;
            let certs = certs.display().to_string();
            let port = port.to_string();
            server.args.extend(
                [
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-cert-file",
                    &format!("{certs}/server.crt"),
                    "--tls-key-file",
                    &format!("{certs}/server.key"),
                    "--tls-ca-cert-file",
                    &format!("{certs}/ca.crt"),
                    "--tls-auth-clients",
                    "no",
                ]
                .map(str::to_owned),
            );
        }
        server.spawn(aof)?;
        Ok(server)
    }

    /// Starts redis-server on the port; with `aof` false it loads `dump.rdb` (Redis ignores
    /// the snapshot while the append-only file is on).
    fn spawn(&mut self, aof: bool) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", if aof { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                failed(format!(
                    "cannot start redis-server ({e}): install it with `apt-get install \
                     redis-server` or run `scripts/services.sh`"
                ))
            })?;
        self.child = Some(child);
        self.wait_until_ready()
    }

    fn wait_until_ready(&self) -> std::io::Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let up = if self.tls {
                // Later arguments win: `--port 0` turned plain TCP off; wait for the TLS port.
                std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                redis::Client::open(self.url())
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            };
            if up {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(failed(format!(
            "private redis-server on port {} did not start within 10 s",
            self.port
        )))
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA of a [`start_tls`](Self::start_tls) server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls/ca.crt")
    }

    /// The server's pid.
    ///
    /// # Panics
    ///
    /// When it was killed and not started again.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("the private redis-server is running")
    }

    fn pids(&self) -> Vec<i32> {
        self.child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .into_iter()
            .collect()
    }

    /// SIGSTOP: the server stops answering but keeps its connections.
    pub fn pause(&self) {
        signal(Signal::SIGSTOP, &self.pids());
    }

    /// SIGCONT.
    pub fn resume(&self) {
        signal(Signal::SIGCONT, &self.pids());
    }

    /// kill -9.
    pub fn kill(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// kill -9, then start again on the same port with no data at all, as a server without
    /// persistence comes back (every lock and fence counter gone).
    ///
    /// # Panics
    ///
    /// When it does not come back.
    pub fn restart(&mut self) {
        must(self.try_wipe_and_restart());
    }

    /// [`restart`](Self::restart), returning what went wrong.
    ///
    /// # Errors
    ///
    /// When it does not come back.
    pub fn try_wipe_and_restart(&mut self) -> std::io::Result<()> {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir.join("appendonlydir"));
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        self.spawn(self.aof)
    }

    /// kill -9, then start again with the data it has on disk (with an append-only file:
    /// every acknowledged write).
    ///
    /// # Errors
    ///
    /// When it does not come back.
    pub fn try_crash_and_restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.spawn(self.aof)
    }

    /// `SAVE`s a snapshot and keeps a copy of it, for [`restart_from`](Self::restart_from).
    ///
    /// # Panics
    ///
    /// When the server does not answer or the copy fails.
    pub fn checkpoint(&self) -> PathBuf {
        must(self.try_checkpoint())
    }

    /// [`checkpoint`](Self::checkpoint), returning what went wrong.
    ///
    /// # Errors
    ///
    /// When the server does not answer or the copy fails.
    pub fn try_checkpoint(&self) -> std::io::Result<PathBuf> {
        let mut conn = self.try_admin_conn()?;
        redis::cmd("SAVE").query::<()>(&mut conn).map_err(failed)?;
        let copy = self.dir.join("checkpoint.rdb");
        std::fs::copy(self.dir.join("dump.rdb"), &copy)?;
        Ok(copy)
    }

    /// The copy the last [`checkpoint`](Self::checkpoint) kept, if any.
    pub fn last_checkpoint(&self) -> Option<PathBuf> {
        Some(self.dir.join("checkpoint.rdb")).filter(|copy| copy.exists())
    }

    /// kill -9, then start again from `snapshot` (a crash that rolls back to an older RDB
    /// file, or a failover to a replica that lagged by as much); a persistent server turns its
    /// append-only file on again once the snapshot is loaded.
    ///
    /// # Panics
    ///
    /// When it does not come back.
    pub fn restart_from(&mut self, snapshot: &Path) {
        must(self.try_restart_from(snapshot));
    }

    /// [`restart_from`](Self::restart_from), returning what went wrong.
    ///
    /// # Errors
    ///
    /// When the snapshot cannot be restored or the server does not come back.
    pub fn try_restart_from(&mut self, snapshot: &Path) -> std::io::Result<()> {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir.join("appendonlydir"));
        std::fs::copy(snapshot, self.dir.join("dump.rdb"))?;
        self.spawn(false)?;
        if self.aof {
            redis::cmd("CONFIG")
                .arg(&["SET", "appendonly", "yes"][..])
                .query::<()>(&mut self.try_admin_conn()?)
                .map_err(failed)?;
        }
        Ok(())
    }

    /// A plain connection for administrative commands.
    ///
    /// # Panics
    ///
    /// When the server does not answer.
    pub fn admin(&self) -> redis::Connection {
        must(self.try_admin_conn())
    }

    /// Whether the server process is there (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A plain connection for administrative commands, or what went wrong.
    ///
    /// # Errors
    ///
    /// When the server does not answer within 2 s.
    pub fn try_admin_conn(&self) -> std::io::Result<redis::Connection> {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .map_err(failed)
    }

    /// Kills every client connection (`CLIENT KILL TYPE normal` and `TYPE pubsub`, sparing its
    /// own); how many were killed.
    ///
    /// # Errors
    ///
    /// When the admin connection fails.
    pub async fn kill_connections(&self) -> std::io::Result<u64> {
        let client = redis::Client::open(self.url()).map_err(failed)?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(failed)?;
        let mut killed = 0;
        for kind in ["normal", "pubsub"] {
            let n: u64 = redis::cmd("CLIENT")
                .arg(&["KILL", "TYPE", kind, "SKIPME", "yes"][..])
                .query_async(&mut conn)
                .await
                .map_err(failed)?;
            killed += n;
        }
        Ok(killed)
    }

    /// `CLIENT PAUSE <ms> WRITE`: reads go on, writes wait.
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

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
