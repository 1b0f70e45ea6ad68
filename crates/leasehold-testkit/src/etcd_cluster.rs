//! [`PrivateEtcdCluster`]: a 3-member etcd cluster of a test's own, for fault tests.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;

use crate::{failed, ports::free_port, signal};

/// Heartbeat and election timeout of a private cluster (etcd's flags, in ms): a 1 s minimum
/// lease, and a new leader within about a second of losing one.
pub const HEARTBEAT_MS: u64 = 50;
/// See [`HEARTBEAT_MS`].
pub const ELECTION_TIMEOUT_MS: u64 = 500;

/// One member: its ports, data directory and process.
#[derive(Debug)]
pub struct Member {
    /// Its name in the cluster (`m0`, `m1`, `m2`).
    pub name: String,
    /// Where clients connect.
    pub client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// Three members from Debian's `etcd` on free loopback ports, data in a temp directory
/// (heartbeat [`HEARTBEAT_MS`], election timeout [`ELECTION_TIMEOUT_MS`]). Every member is
/// killed and its data removed when dropped.
#[derive(Debug)]
pub struct PrivateEtcdCluster {
    /// The members, in start order.
    pub members: Vec<Member>,
    initial: String,
}

impl PrivateEtcdCluster {
    /// Starts one and waits until every member is healthy.
    ///
    /// # Panics
    ///
    /// When `etcd` is missing or the cluster does not form in 30 s (the message says how to
    /// install it).
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`start`](Self::start), returning what went wrong.
    ///
    /// # Errors
    ///
    /// As said.
    pub fn try_start() -> std::io::Result<Self> {
        let base = std::env::temp_dir().join(format!(
            "leasehold-etcd-{}-{}",
            std::process::id(),
            free_port()?
        ));
        let mut members = Vec::new();
        for i in 0..3 {
            members.push(Member {
                name: format!("m{i}"),
                client_port: free_port()?,
                peer_port: free_port()?,
                dir: base.join(format!("m{i}")),
                child: None,
            });
        }
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self { members, initial };
        for i in 0..3 {
            cluster.spawn(i)?;
        }
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let initial = self.initial.clone();
        let member = &mut self.members[i];
        std::fs::create_dir_all(&member.dir)?;
        let log = std::fs::File::create(member.dir.with_extension("log"))?;
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let child = Command::new("etcd")
            .args(["--name", &member.name, "--data-dir"])
            .arg(&member.dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
            ])
            .args(["--initial-cluster-token", "leasehold-private"])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_TIMEOUT_MS.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                failed(format!(
                    "cannot run etcd ({e}): install it with `apt-get install etcd-server \
                     etcd-client` or run `scripts/services.sh`"
                ))
            })?;
        member.child = Some(child);
        Ok(())
    }

    /// `host:port` of every member, for the client.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    fn status(&self, i: usize) -> Option<(u64, u64)> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!(
                "--endpoints=127.0.0.1:{}",
                self.members[i].client_port
            ))
            .args(["--command-timeout=1s", "endpoint", "status", "-w", "fields"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("\"{name}\" :")))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        };
        Some((field("MemberID")?, field("Leader")?))
    }

    /// The index of the member that is leader now, as the running members agree.
    pub fn leader(&self) -> Option<usize> {
        let ids: Vec<Option<(u64, u64)>> = (0..3)
            .map(|i| self.is_running(i).then(|| self.status(i)).flatten())
            .collect();
        let leader_id = ids
            .iter()
            .flatten()
            .map(|(_, leader)| *leader)
            .find(|&l| l != 0)?;
        ids.iter()
            .position(|s| s.is_some_and(|(member, _)| member == leader_id))
    }

    /// Waits until a running member reports a leader that is running; its index.
    ///
    /// # Errors
    ///
    /// When none turns up within `within`.
    pub fn wait_leader(&self, within: Duration) -> std::io::Result<usize> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(leader) = self.leader() {
                return Ok(leader);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(failed("the private etcd cluster has no leader"))
    }

    /// Waits until every running member answers `endpoint health`.
    ///
    /// # Errors
    ///
    /// When they do not within `within` (the members' logs are beside their data).
    pub fn wait_healthy(&self, within: Duration) -> std::io::Result<()> {
        let endpoints: Vec<String> = (0..3)
            .filter(|&i| self.is_running(i))
            .map(|i| format!("127.0.0.1:{}", self.members[i].client_port))
            .collect();
        let started = Instant::now();
        while started.elapsed() < within {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", endpoints.join(",")))
                .args(["--command-timeout=1s", "endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(failed(format!(
            "the private etcd cluster was not healthy in {within:?}: see {}",
            self.members[0].dir.with_extension("log").display()
        )))
    }

    /// Whether member `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    fn pid(&self, i: usize) -> Vec<i32> {
        self.members[i]
            .child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .into_iter()
            .collect()
    }

    /// kill -9 member `i`.
    pub fn kill(&mut self, i: usize) {
        self.resume(i);
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data (after [`kill`](Self::kill)).
    ///
    /// # Panics
    ///
    /// When it cannot be started.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i).unwrap_or_else(|e| panic!("{e}"));
    }

    /// SIGSTOP member `i`.
    pub fn pause(&self, i: usize) {
        signal(Signal::SIGSTOP, &self.pid(i));
    }

    /// SIGCONT member `i`.
    pub fn resume(&self, i: usize) {
        signal(Signal::SIGCONT, &self.pid(i));
    }
}

impl Drop for PrivateEtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if let Some(base) = self.members.first().and_then(|m| m.dir.parent()) {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}
