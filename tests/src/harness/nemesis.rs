//! The nemesis: a seeded schedule of faults against the workers, the server and the network
//! between them, every fault logged with its start and end.

use std::{collections::HashMap, process::Child, time::Duration};

use nix::{sys::signal::Signal, unistd::Pid};
use serde::Serialize;

use super::{
    history::monotonic_ns,
    proxy::{Mode, Proxy},
    rng::Rng,
    servers::{Kind, PrivateServer},
};

/// Every fault the nemesis knows, with what it needs.
pub const KINDS: [(&str, Needs); 17] = [
    ("pause", Needs::Workers),
    ("kill", Needs::Workers),
    ("server-pause", Needs::Server),
    ("server-restart", Needs::Server),
    ("conn-kill", Needs::Server),
    ("pause-write", Needs::Redis),
    ("store-wipe", Needs::Redis),
    ("store-rollback", Needs::Redis),
    ("proxy-delay", Needs::Server),
    ("proxy-blackhole", Needs::Server),
    ("proxy-reset", Needs::Server),
    ("primary-kill", Needs::Cluster),
    ("primary-pause", Needs::Cluster),
    ("cluster-conn-kill", Needs::Cluster),
    ("leader-kill", Needs::Etcd),
    ("leader-pause", Needs::Etcd),
    ("follower-restart", Needs::Etcd),
];

/// Faults that end the server's side of the clients' connections (and so any lock that lives
/// in a session, like a PostgreSQL advisory lock).
pub const DROPS_SESSIONS: [&str; 8] = [
    "server-restart",
    "conn-kill",
    "proxy-reset",
    "store-wipe",
    "store-rollback",
    "primary-kill",
    "primary-pause",
    "cluster-conn-kill",
];

/// Faults after which the store has lost locks it had granted (a restart without persistence,
/// a rollback to an older snapshot, a failover to a replica that had not received them: Redis
/// replicates asynchronously): two holders may then overlap, which no lease can prevent, but no
/// fence may repeat or go back.
pub const LOSES_LOCKS: [&str; 4] = [
    "store-wipe",
    "store-rollback",
    "primary-kill",
    "primary-pause",
];

/// What a fault kind needs to be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Only the worker processes.
    Workers,
    /// A private server (and the proxy in front of it).
    Server,
    /// A private Redis server.
    Redis,
    /// A private Redis Cluster (no proxy: clients follow the nodes' own addresses).
    Cluster,
    /// A private etcd cluster (no proxy: clients balance over the members).
    Etcd,
}

/// Parses `--faults`: comma-separated kinds, `none`, or `all` (every kind `server` allows:
/// `None` for SQLite, else the kind of private server).
///
/// # Errors
///
/// Names the unknown or unsupported kind.
pub fn parse(text: &str, server: Option<Kind>) -> Result<Vec<&'static str>, String> {
    let allowed = |needs: Needs| match needs {
        Needs::Workers => true,
        Needs::Server => matches!(server, Some(Kind::Redis | Kind::Postgres)),
        Needs::Redis => server == Some(Kind::Redis),
        Needs::Cluster => server == Some(Kind::RedisCluster),
        Needs::Etcd => server == Some(Kind::Etcd),
    };
    if text == "none" {
        return Ok(Vec::new());
    }
    if text == "all" {
        return Ok(KINDS
            .iter()
            .filter(|(_, needs)| allowed(*needs))
            .map(|(kind, _)| *kind)
            .collect());
    }
    text.split(',')
        .map(|name| {
            let (kind, needs) = KINDS
                .iter()
                .find(|(kind, _)| *kind == name.trim())
                .ok_or_else(|| {
                    let known: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
                    format!(
                        "unknown fault {name:?} in --faults (known: {})",
                        known.join(", ")
                    )
                })?;
            if allowed(*needs) {
                Ok(*kind)
            } else {
                Err(format!(
                    "fault {kind:?} needs {} (this backend has no server the harness can own)",
                    match needs {
                        Needs::Redis => "Redis",
                        Needs::Cluster => "a Redis Cluster",
                        Needs::Etcd => "an etcd cluster",
                        _ => "a server",
                    }
                ))
            }
        })
        .collect()
}

/// One injected fault.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// Its kind (see [`KINDS`]).
    pub kind: &'static str,
    /// `worker N` or `server`.
    pub target: String,
    /// When it started, monotonic ns.
    pub start_ns: u64,
    /// When it ended (the server came back, the worker was continued or restarted).
    pub end_ns: u64,
    /// The keys whose locks it could lose, when not every key's: a cluster primary's fault
    /// loses only the keys of its slots (the workers' keys it owned when the fault began).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

/// The worker processes, which the nemesis may pause and kill (and restart).
pub struct Workers {
    /// Each worker's process and incarnation.
    pub children: Vec<(Child, u32)>,
    /// Starts worker `n` with incarnation `life`.
    pub spawn: Box<dyn Fn(u32, u32) -> std::io::Result<Child>>,
    /// When each (worker, life) was killed.
    pub deaths: HashMap<(u32, u32), u64>,
    /// How many keys they lock (`lockcheck/0` up).
    pub keys: u32,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("children", &self.children.len())
            .field("deaths", &self.deaths.len())
            .finish_non_exhaustive()
    }
}

/// Injects faults of `kinds` until `quiet_from_ns` (monotonic), one every 1-2.5 s, each kind
/// once per round in a seeded order.
pub async fn run(
    kinds: &[&'static str],
    seed: u64,
    ttl: Duration,
    quiet_from_ns: u64,
    workers: &mut Workers,
    mut server: Option<&mut PrivateServer>,
    proxy: Option<&Proxy>,
) -> Vec<Fault> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut faults = Vec::new();
    let mut bag: Vec<&'static str> = Vec::new();
    while !kinds.is_empty() && monotonic_ns() < quiet_from_ns {
        tokio::time::sleep(Duration::from_millis(1_000 + rng.below(1_500))).await;
        if monotonic_ns() >= quiet_from_ns {
            break;
        }
        // Every kind once per round, in a seeded order, so that a run long enough for one
        // round injects each of them.
        if bag.is_empty() {
            bag = kinds.to_vec();
            for i in (1..bag.len()).rev() {
                bag.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let Some(kind) = bag.pop() else {
            break;
        };
        // A rollback goes back to the state of one fault ago, fences handed out since included.
        if kind == "store-rollback" {
            if let Some(server) = server.as_deref() {
                if let Err(error) = server.checkpoint() {
                    eprintln!("lockcheck: checkpoint failed: {error}");
                }
            }
            tokio::time::sleep(ttl * 2).await;
            if monotonic_ns() >= quiet_from_ns {
                break;
            }
        }
        let start_ns = monotonic_ns();
        let mut lost_keys = None;
        let target = match kind {
            "pause" | "kill" => {
                let n = rng.below(workers.children.len() as u64) as usize;
                worker_fault(kind, n, ttl, workers).await;
                format!("worker {n}")
            }
            "primary-kill" | "primary-pause" | "cluster-conn-kill" => {
                let Some(PrivateServer::RedisCluster(cluster)) = server.as_deref_mut() else {
                    continue;
                };
                let (n, owned) = cluster_fault(kind, &mut rng, cluster, workers.keys).await;
                if LOSES_LOCKS.contains(&kind) {
                    lost_keys = Some(owned);
                }
                format!("node {n}")
            }
            "leader-kill" | "leader-pause" | "follower-restart" => {
                let Some(PrivateServer::Etcd(cluster)) = server.as_deref_mut() else {
                    continue;
                };
                format!("member {}", etcd_fault(kind, cluster).await)
            }
            _ => {
                server_fault(kind, ttl, server.as_deref_mut(), proxy).await;
                "server".to_owned()
            }
        };
        faults.push(Fault {
            kind,
            target,
            start_ns,
            end_ns: monotonic_ns(),
            keys: lost_keys,
        });
    }
    faults
}

async fn worker_fault(kind: &str, n: usize, ttl: Duration, workers: &mut Workers) {
    let (child, life) = &mut workers.children[n];
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    if kind == "pause" {
        // Past its ttl: the worker wakes up believing it still holds its lock.
        let _ = nix::sys::signal::kill(pid, Signal::SIGSTOP);
        tokio::time::sleep(ttl * 3 / 2).await;
        let _ = nix::sys::signal::kill(pid, Signal::SIGCONT);
        return;
    }
    // Its beliefs end when the signal is sent: a lock freed by its death (advisory locks go
    // with the connection) can only be granted after that.
    workers.deaths.insert((n as u32, *life), monotonic_ns());
    let _ = child.kill();
    let _ = child.wait();
    *life += 1;
    match (workers.spawn)(n as u32, *life) {
        Ok(restarted) => *child = restarted,
        Err(error) => eprintln!("lockcheck: cannot restart worker {n}: {error}"),
    }
}

/// One fault on the etcd cluster's leader (killed, or paused past the election timeout, for
/// 1.5 s either way, then back as a follower on its data) or on a follower (killed and
/// restarted at once); returns the member. The fault ends when every member is healthy again.
async fn etcd_fault(
    kind: &str,
    cluster: &mut leasehold_testkit::etcd_cluster::PrivateEtcdCluster,
) -> usize {
    let Ok(leader) = tokio::task::block_in_place(|| cluster.wait_leader(Duration::from_secs(10)))
    else {
        eprintln!("lockcheck: the etcd cluster has no leader; skipping {kind}");
        return 0;
    };
    let out = Duration::from_millis(1_500);
    let member = match kind {
        "leader-kill" => {
            cluster.kill(leader);
            tokio::time::sleep(out).await;
            cluster.restart(leader);
            leader
        }
        "leader-pause" => {
            cluster.pause(leader);
            tokio::time::sleep(out).await;
            cluster.resume(leader);
            leader
        }
        _ => {
            let follower = (leader + 1) % 3;
            cluster.restart(follower);
            follower
        }
    };
    if let Err(error) =
        tokio::task::block_in_place(|| cluster.wait_healthy(Duration::from_secs(30)))
    {
        eprintln!("lockcheck: {error}");
    }
    member
}

/// One fault on a random primary of the cluster; returns the node and the workers' keys (of
/// `keys`) it owns. A killed primary is started again (it rejoins as a replica) and a paused
/// one continued, once its replica has taken over; the fault ends when the cluster is whole
/// again.
async fn cluster_fault(
    kind: &str,
    rng: &mut Rng,
    cluster: &mut leasehold_testkit::redis_cluster::PrivateRedisCluster,
    keys: u32,
) -> (usize, Vec<String>) {
    let primaries = cluster.primaries();
    let Some(&n) = primaries.get(rng.below(primaries.len().max(1) as u64) as usize) else {
        eprintln!("lockcheck: no primary answers; skipping {kind}");
        return (0, Vec::new());
    };
    // The workers' keys in the default namespace (their Redis names: no `%`, `{` or `}` to
    // escape) whose slots this primary owns now; a key no running primary claims (the cluster
    // not whole again after the last fault) may be lost too.
    let owned = tokio::task::block_in_place(|| {
        (0..u64::from(keys))
            .map(super::worker::key_name)
            .filter(|key| {
                let name = format!("{{leasehold:{key}}}");
                // Asked again: a failed admin connection also reads as "nobody".
                let owner = (0..3).find_map(|attempt| {
                    if attempt > 0 {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    cluster.try_primary_of(&name)
                });
                if owner.is_none() {
                    eprintln!("lockcheck: no primary claims {key}; a {kind} may lose it too");
                }
                owner.is_none_or(|owner| owner == n)
            })
            .collect()
    });
    // Past the node timeout (1 s) and the election: the replica takes over.
    let failover = Duration::from_millis(3_000);
    match kind {
        "primary-kill" => {
            cluster.nodes[n].kill();
            tokio::time::sleep(failover).await;
            if let Err(error) = cluster.nodes[n].try_crash_and_restart() {
                eprintln!("lockcheck: cannot restart cluster node {n}: {error}");
            }
        }
        "primary-pause" => {
            cluster.nodes[n].pause();
            tokio::time::sleep(failover).await;
            cluster.nodes[n].resume();
        }
        _ => {
            for node in cluster.nodes.iter().filter(|node| node.is_running()) {
                if let Err(error) = node.kill_connections().await {
                    eprintln!("lockcheck: cluster-conn-kill failed: {error}");
                }
            }
            return (n, owned);
        }
    }
    if let Err(error) =
        tokio::task::block_in_place(|| cluster.try_wait_ready(Duration::from_secs(30)))
    {
        eprintln!("lockcheck: {error}");
    }
    (n, owned)
}

async fn server_fault(
    kind: &str,
    ttl: Duration,
    server: Option<&mut PrivateServer>,
    proxy: Option<&Proxy>,
) {
    let (Some(server), Some(proxy)) = (server, proxy) else {
        return;
    };
    let outcome = match kind {
        "server-pause" => {
            server.pause();
            tokio::time::sleep(ttl * 3 / 2).await;
            server.resume();
            Ok(())
        }
        "server-restart" => server.crash_and_restart(),
        "store-wipe" => server.wipe_and_restart(),
        "store-rollback" => server.roll_back_and_restart(),
        "conn-kill" => server.kill_connections().await.map(drop),
        "pause-write" => {
            let paused = server.pause_writes(ttl).await;
            tokio::time::sleep(ttl).await;
            paused
        }
        "proxy-delay" => {
            proxy.set(Mode::Delay(ttl / 20));
            tokio::time::sleep(ttl).await;
            proxy.set(Mode::Pass);
            Ok(())
        }
        "proxy-blackhole" => {
            proxy.set(Mode::BlackHole);
            tokio::time::sleep(ttl * 3 / 2).await;
            proxy.set(Mode::Pass);
            Ok(())
        }
        "proxy-reset" => {
            proxy.reset_all();
            Ok(())
        }
        _ => Ok(()),
    };
    if let Err(error) = outcome {
        eprintln!("lockcheck: fault {kind} failed: {error}");
    }
}
