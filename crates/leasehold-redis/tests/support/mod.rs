//! Test support: the shared Redis of the suite, and private `redis-server` processes that
//! fault tests may kill, pause and restart without disturbing anyone else.

#![allow(dead_code, unreachable_pub)]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use leasehold_redis::RedisLock;

/// The URL of the shared test server, from `LEASEHOLD_REDIS_URL` (set by `scripts/test.sh`).
pub fn shared_url() -> String {
    std::env::var("LEASEHOLD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Connects to the shared server, failing with instructions when it is not there.
pub async fn shared_lock() -> RedisLock {
    let url = shared_url();
    RedisLock::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "cannot reach Redis at {url}: {e}\n\
             start it with `scripts/services.sh` (or run the tests through `scripts/test.sh`), \
             or point LEASEHOLD_REDIS_URL at a running server"
        )
    })
}

/// A free loopback port (racy in theory, fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A private `redis-server` on a free loopback port, killed when dropped.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra_args: Vec<String>,
    /// Serves TLS only, with certificates in `dir/tls`.
    tls: bool,
}

impl PrivateRedis {
    /// Starts one with extra command-line arguments (e.g. `--maxmemory-policy volatile-lru`).
    pub fn start(extra_args: &[&str]) -> Self {
        Self::start_with(extra_args, false)
    }

    /// One that serves only TLS, with a certificate for 127.0.0.1 from a throwaway CA
    /// ([`ca_file`](Self::ca_file)) made by `scripts/test-certs.sh`.
    pub fn start_tls() -> Self {
        Self::start_with(&[], true)
    }

    fn start_with(extra_args: &[&str], tls: bool) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "leasehold-redis-test-{port}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = Self {
            port,
            child: None,
            dir,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            tls,
        };
        if tls {
            make_certs(&server.dir.join("tls"));
            let certs = server.dir.join("tls").display().to_string();
            let port = server.port.to_string();
            server.extra_args.extend(
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
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it with `apt-get install redis-server` or run `scripts/services.sh`")
            });
        self.child = Some(child);
        self.wait_until_ready();
    }

    fn wait_until_ready(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self.tls {
                // Later arguments win: `--port 0` turned plain TCP off; wait for the TLS port.
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            if let Ok(mut conn) = redis::Client::open(self.url()).and_then(|c| c.get_connection()) {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "private redis-server on port {} did not start within 10 s",
            self.port
        );
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA of a [`start_tls`](Self::start_tls) server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls/ca.crt")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGSTOP: the server stops answering but keeps its connections.
    pub fn pause(&self) {
        signal("STOP", self.pid());
    }

    /// SIGCONT.
    pub fn resume(&self) {
        signal("CONT", self.pid());
    }

    /// kill -9, then start again on the same port (with no data: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        self.spawn();
    }

    /// `SAVE`s a snapshot and keeps a copy of it, for [`restart_from`](Self::restart_from).
    pub fn checkpoint(&self) -> PathBuf {
        let _: () = redis::cmd("SAVE").query(&mut self.admin()).expect("SAVE");
        let copy = self.dir.join("checkpoint.rdb");
        std::fs::copy(self.dir.join("dump.rdb"), &copy).expect("copy the snapshot");
        copy
    }

    /// kill -9, then start again from `snapshot` (a crash that rolls back to an older RDB
    /// file, or a failover to a replica that lagged by as much).
    pub fn restart_from(&mut self, snapshot: &std::path::Path) {
        self.kill();
        std::fs::copy(snapshot, self.dir.join("dump.rdb")).expect("restore the snapshot");
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A plain connection for administrative commands.
    pub fn admin(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("admin connection")
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            signal("CONT", child.id());
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes a CA and a server certificate in `dir` with `scripts/test-certs.sh`.
fn make_certs(dir: &std::path::Path) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-certs.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(status.success(), "{} failed", script.display());
}

fn signal(name: &str, pid: u32) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}
