//! [`PrivateRedisCluster`]: a Redis Cluster of a test's own, for failover tests.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use crate::{failed, redis::PrivateRedis};

/// Three primaries and three replicas from Debian's `redis-server` on free loopback ports
/// (node timeout 1 s), made with `redis-cli --cluster create`; every node is killed and removed
/// when dropped.
#[derive(Debug)]
pub struct PrivateRedisCluster {
    /// The nodes, in creation order: `redis-cli` makes the first three primaries.
    pub nodes: Vec<PrivateRedis>,
}

fn must<T>(result: std::io::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

impl PrivateRedisCluster {
    /// Starts one and waits until it is ready (see [`wait_ready`](Self::wait_ready)).
    ///
    /// # Panics
    ///
    /// When redis-server or redis-cli is missing or the cluster does not form (the message
    /// says how to install them).
    pub fn start() -> Self {
        must(Self::try_start())
    }

    /// [`start`](Self::start), returning what went wrong.
    ///
    /// # Errors
    ///
    /// When a node does not start or the cluster does not form within 30 s.
    pub fn try_start() -> std::io::Result<Self> {
        let nodes = (0..6)
            .map(|_| PrivateRedis::try_start_cluster_node())
            .collect::<std::io::Result<Vec<_>>>()?;
        let cluster = Self { nodes };
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .map_err(|e| {
                failed(format!(
                    "cannot run redis-cli ({e}): install it with `apt-get install redis-tools` \
                     or run `scripts/services.sh`"
                ))
            })?;
        if !created.status.success() {
            return Err(failed(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stdout)
            )));
        }
        cluster.try_wait_ready(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// The seed URLs of every node.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(PrivateRedis::url).collect()
    }

    /// `redis+cluster://127.0.0.1:P1,...` of every node.
    pub fn url(&self) -> String {
        let ports: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        format!("redis+cluster://{}", ports.join(","))
    }

    /// Waits until every running node sees `cluster_state:ok`, the slots are served by three
    /// primaries each with a connected replica whose link is up.
    ///
    /// # Panics
    ///
    /// When that does not happen within `timeout`.
    pub fn wait_ready(&self, timeout: Duration) {
        must(self.try_wait_ready(timeout));
    }

    /// The indexes of the running nodes that are primaries right now.
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].is_running()
                    && self.nodes[i].try_admin_conn().is_ok_and(|mut conn| {
                        redis::cmd("INFO")
                            .arg("replication")
                            .query::<String>(&mut conn)
                            .is_ok_and(|info| info.contains("role:master"))
                    })
            })
            .collect()
    }

    /// [`wait_ready`](Self::wait_ready), returning what went wrong.
    ///
    /// # Errors
    ///
    /// When the cluster is not ready within `timeout`.
    pub fn try_wait_ready(&self, timeout: Duration) -> std::io::Result<()> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < timeout {
            match self.readiness() {
                Ok(()) => return Ok(()),
                Err(why) => last = why,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(failed(format!(
            "the private Redis Cluster was not ready within {timeout:?}: {last}"
        )))
    }

    fn readiness(&self) -> Result<(), String> {
        let mut primaries = 0;
        let mut replicas_up = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.is_running() {
                continue;
            }
            let mut conn = node
                .try_admin_conn()
                .map_err(|e| format!("node {i}: {e}"))?;
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut conn)
                .map_err(|e| format!("node {i}: {e}"))?;
            if !info.contains("cluster_state:ok") {
                return Err(format!("node {i}: cluster_state not ok"));
            }
            let replication: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut conn)
                .map_err(|e| format!("node {i}: {e}"))?;
            if replication.contains("role:master") {
                primaries += 1;
            } else if replication.contains("master_link_status:up") {
                replicas_up += 1;
            }
        }
        if primaries == 3 && replicas_up == 3 {
            Ok(())
        } else {
            Err(format!(
                "{primaries} primaries, {replicas_up} replicas with a link up"
            ))
        }
    }

    /// The index of the node that is the primary for `name`'s slot right now.
    ///
    /// # Panics
    ///
    /// When no running node claims it.
    pub fn primary_of(&self, name: &str) -> usize {
        self.try_primary_of(name)
            .unwrap_or_else(|| panic!("no running primary owns the slot of {name}"))
    }

    /// [`primary_of`](Self::primary_of), or `None` when no running node claims it (during a
    /// failover).
    pub fn try_primary_of(&self, name: &str) -> Option<usize> {
        let slot = slot_of(name);
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.is_running() {
                continue;
            }
            let Ok(mut conn) = node.try_admin_conn() else {
                continue;
            };
            let role: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut conn)
                .unwrap_or_default();
            if !role.contains("role:master") {
                continue;
            }
            if claims(&mut conn, slot) {
                return Some(i);
            }
        }
        None
    }
}

/// Whether the node behind `conn` lists `slot` among its own in `CLUSTER NODES`.
fn claims(conn: &mut redis::Connection, slot: u16) -> bool {
    {
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(conn)
            .unwrap_or_default();
        nodes
            .lines()
            .find(|line| line.contains("myself"))
            .is_some_and(|line| {
                line.split_whitespace().skip(8).any(|range| {
                    let (start, end) = range.split_once('-').unwrap_or((range, range));
                    match (start.parse::<u16>(), end.parse::<u16>()) {
                        (Ok(start), Ok(end)) => (start..=end).contains(&slot),
                        _ => false,
                    }
                })
            })
    }
}

impl PrivateRedisCluster {
    /// The index of a replica of the primary `primary` (a node index).
    ///
    /// # Panics
    ///
    /// When it has none that runs.
    pub fn replica_of(&self, primary: usize) -> usize {
        let id = self.node_id(primary);
        for (i, node) in self.nodes.iter().enumerate() {
            if i == primary || !node.is_running() {
                continue;
            }
            let Ok(mut conn) = node.try_admin_conn() else {
                continue;
            };
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut conn)
                .unwrap_or_default();
            let mine = nodes.lines().find(|line| line.contains("myself"));
            if mine.is_some_and(|line| line.contains("slave") && line.contains(&id)) {
                return i;
            }
        }
        panic!("node {primary} has no running replica")
    }

    /// The cluster node id of node `i`.
    ///
    /// # Panics
    ///
    /// When it does not answer.
    pub fn node_id(&self, i: usize) -> String {
        let mut conn = self.nodes[i].admin();
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut conn)
            .expect("CLUSTER MYID")
    }
}

impl PrivateRedisCluster {
    /// Moves `name`'s slot, with its keys, from its primary to the primary `to` (a node
    /// index), as `redis-cli --cluster reshard` does: `IMPORTING`/`MIGRATING`, `MIGRATE` of
    /// every key in it, then `SETSLOT NODE` on every primary.
    ///
    /// # Panics
    ///
    /// When a step fails.
    pub fn migrate_slot(&self, name: &str, to: usize) {
        let slot = slot_of(name);
        let from = self.primary_of(name);
        assert_ne!(from, to, "{name} is on node {to} already");
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let mut source = self.nodes[from].admin();
        let mut target = self.nodes[to].admin();
        let setslot = |conn: &mut redis::Connection, state: &str, id: &str| {
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(id)
                .query::<()>(conn)
                .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {state}: {e}"));
        };
        setslot(&mut target, "IMPORTING", &from_id);
        setslot(&mut source, "MIGRATING", &to_id);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut source)
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query::<()>(&mut source)
                .unwrap_or_else(|e| panic!("MIGRATE {keys:?}: {e}"));
        }
        setslot(&mut target, "NODE", &to_id);
        setslot(&mut source, "NODE", &to_id);
        for (i, node) in self.nodes.iter().enumerate() {
            if i == from || i == to || !node.is_running() {
                continue;
            }
            let mut conn = node.admin();
            let role: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut conn)
                .unwrap_or_default();
            if role.contains("role:master") {
                setslot(&mut conn, "NODE", &to_id);
            }
        }
    }
}

/// The cluster hash slot of `name` (CRC16 of its hash tag, or of all of it, mod 16384).
pub fn slot_of(name: &str) -> u16 {
    let bytes = name.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    crc16(tagged.unwrap_or(bytes)) % 16384
}

/// CRC16/XMODEM, the one Redis Cluster uses.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::slot_of;

    #[test]
    fn slots_match_redis() {
        // From the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot_of("123456789"), 0x31C3);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        // An empty tag hashes the whole name.
        assert_ne!(slot_of("foo{}{bar}"), slot_of("bar"));
        assert_eq!(slot_of("foo"), 12182);
    }
}
