//! Private servers that the nemesis may stop, kill and restart, from `leasehold-testkit`: a
//! `redis-server` with an fsynced append-only file, or a PostgreSQL cluster whose commits are
//! not flushed by default, as a role's defaults may be.

use std::time::Duration;

use leasehold_testkit::{
    etcd_cluster::PrivateEtcdCluster, postgres::PrivateCluster, redis::PrivateRedis,
    redis_cluster::PrivateRedisCluster,
};

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
    /// A Redis Cluster of 3 primaries and 3 replicas (node timeout 1 s), without persistence:
    /// what survives a primary's failure is what its replica had received.
    RedisCluster,
    /// A 3-member etcd cluster (heartbeat 50 ms, election timeout 500 ms): the nemesis kills
    /// or pauses its leader and restarts a follower.
    Etcd,
}

/// A private server.
#[derive(Debug)]
pub enum PrivateServer {
    /// A private `redis-server`.
    Redis(PrivateRedis),
    /// A private PostgreSQL cluster.
    Postgres(PrivateCluster),
    /// A private Redis Cluster.
    RedisCluster(PrivateRedisCluster),
    /// A private etcd cluster.
    Etcd(PrivateEtcdCluster),
}

fn redis_only() -> std::io::Error {
    std::io::Error::other("a single-Redis fault on another server")
}

impl PrivateServer {
    /// Starts one.
    ///
    /// # Errors
    ///
    /// When the server's programs are missing or it does not come up (the message says how to
    /// install them).
    pub fn start(kind: Kind) -> std::io::Result<Self> {
        Ok(match kind {
            Kind::Redis => Self::Redis(PrivateRedis::try_start_persistent()?),
            Kind::Postgres => Self::Postgres(PrivateCluster::try_start(
                false,
                &[
                    "max_connections=200",
                    "synchronous_commit=off",
                    "wal_writer_delay=10s",
                ],
            )?),
            Kind::RedisCluster => Self::RedisCluster(PrivateRedisCluster::try_start()?),
            Kind::Etcd => Self::Etcd(PrivateEtcdCluster::try_start()?),
        })
    }

    /// The URL workers use (before any proxy).
    pub fn url(&self) -> String {
        match self {
            Self::Redis(redis) => redis.url(),
            Self::Postgres(cluster) => cluster.url(),
            Self::RedisCluster(cluster) => cluster.url(),
            Self::Etcd(cluster) => format!("etcd://{}", cluster.endpoints().join(",")),
        }
    }

    /// Its loopback port (a cluster's first node's).
    pub fn port(&self) -> u16 {
        match self {
            Self::Redis(redis) => redis.port,
            Self::Postgres(cluster) => cluster.port,
            Self::RedisCluster(cluster) => cluster.nodes[0].port,
            Self::Etcd(cluster) => cluster.members[0].client_port,
        }
    }

    /// SIGSTOP of the whole server: it keeps its connections and answers nothing.
    pub fn pause(&self) {
        match self {
            Self::Redis(redis) => redis.pause(),
            Self::Postgres(cluster) => cluster.pause(),
            Self::RedisCluster(cluster) => cluster.nodes.iter().for_each(PrivateRedis::pause),
            Self::Etcd(cluster) => (0..3).for_each(|i| cluster.pause(i)),
        }
    }

    /// SIGCONT.
    pub fn resume(&self) {
        match self {
            Self::Redis(redis) => redis.resume(),
            Self::Postgres(cluster) => cluster.resume(),
            Self::RedisCluster(cluster) => cluster.nodes.iter().for_each(PrivateRedis::resume),
            Self::Etcd(cluster) => (0..3).for_each(|i| cluster.resume(i)),
        }
    }

    /// kill -9 (Redis) or `pg_ctl stop -m immediate` (PostgreSQL, which then SIGQUITs its
    /// backends), then start again on the same port with the same data.
    ///
    /// # Errors
    ///
    /// When it does not come back.
    pub fn crash_and_restart(&mut self) -> std::io::Result<()> {
        match self {
            Self::Redis(redis) => redis.try_crash_and_restart(),
            Self::Postgres(cluster) => cluster.try_crash_and_restart(),
            Self::RedisCluster(_) | Self::Etcd(_) => Err(redis_only()),
        }
    }

    /// Redis only: kill -9, then start again with no data at all, as a server without
    /// persistence comes back (every lock and fence counter gone).
    ///
    /// # Errors
    ///
    /// When it does not come back.
    pub fn wipe_and_restart(&mut self) -> std::io::Result<()> {
        match self {
            Self::Redis(redis) => redis.try_wipe_and_restart(),
            Self::Postgres(_) | Self::RedisCluster(_) | Self::Etcd(_) => Err(redis_only()),
        }
    }

    /// Redis only: `SAVE`s a snapshot and keeps a copy, for
    /// [`roll_back_and_restart`](Self::roll_back_and_restart).
    ///
    /// # Errors
    ///
    /// When the server does not answer or the copy fails.
    pub fn checkpoint(&self) -> std::io::Result<()> {
        match self {
            Self::Redis(redis) => redis.try_checkpoint().map(drop),
            Self::Postgres(_) | Self::RedisCluster(_) | Self::Etcd(_) => Err(redis_only()),
        }
    }

    /// Redis only: kill -9, then start again from the last [`checkpoint`](Self::checkpoint)
    /// (a crash that rolls back to an older snapshot, or a failover to a replica that lagged
    /// by as much), with the append-only file turned on again once it is loaded.
    ///
    /// # Errors
    ///
    /// When there is no checkpoint or the server does not come back.
    pub fn roll_back_and_restart(&mut self) -> std::io::Result<()> {
        match self {
            Self::Redis(redis) => match redis.last_checkpoint() {
                Some(checkpoint) => redis.try_restart_from(&checkpoint),
                None => Err(std::io::Error::other("no checkpoint to roll back to")),
            },
            Self::Postgres(_) | Self::RedisCluster(_) | Self::Etcd(_) => Err(redis_only()),
        }
    }

    /// Kills every client connection: `CLIENT KILL TYPE normal` and `TYPE pubsub`, or
    /// `pg_terminate_backend` of every other client backend. Returns how many were killed.
    ///
    /// # Errors
    ///
    /// When the admin connection fails.
    pub async fn kill_connections(&self) -> std::io::Result<u64> {
        match self {
            Self::Redis(redis) => redis.kill_connections().await,
            Self::Postgres(cluster) => cluster.kill_connections().await,
            Self::RedisCluster(cluster) => {
                let mut killed = 0;
                for node in cluster.nodes.iter().filter(|node| node.is_running()) {
                    killed += node.kill_connections().await?;
                }
                Ok(killed)
            }
            Self::Etcd(_) => Err(redis_only()),
        }
    }

    /// Redis only: `CLIENT PAUSE <ms> WRITE` (reads go on, writes wait).
    ///
    /// # Errors
    ///
    /// When the admin connection fails.
    pub async fn pause_writes(&self, duration: Duration) -> std::io::Result<()> {
        match self {
            Self::Redis(redis) => redis.pause_writes(duration).await,
            Self::Postgres(_) | Self::RedisCluster(_) | Self::Etcd(_) => Err(redis_only()),
        }
    }
}
