//! The command connection: one server through a `ConnectionManager`, or a Redis Cluster through
//! the `redis` crate's cluster connection, which routes each script by its keys' slot and
//! follows `MOVED`/`ASK` and topology changes (scripts are loaded where the lock lives after a
//! `NOSCRIPT`: see `scripts.rs`).
//!
//! One gap of the cluster connection is closed here: a node that stops answering without
//! closing its connections (paused, frozen, black-holed) only times out, which the `redis`
//! crate retries on the same node and never takes as a reason to read the topology again, so
//! after the cluster has failed that node over, its slots would stay unreachable until it woke
//! up. A command that takes longer than the response timeout makes a fresh cluster connection
//! (at most one per second), which finds the new primaries.
//!
//! The cluster client sends a command again by itself after a redirect and after a dropped
//! connection (while the caller still waits). Its response timeout is set past every caller's
//! bound (see `ClientSettings::node_timeout`), because it would resend a command that timed
//! out at once: an acquire that ran, sent again, would find the lock held. The acquire script
//! answers a token that holds the lock already with that lock's fence, so a resend after a
//! dropped connection is harmless; a resent release finds the lock gone and reports it not
//! held.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use redis::{
    aio::{ConnectionLike, ConnectionManager},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
    Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value,
};

use crate::cluster::ClientSettings;

/// Where this lock's commands go. Cheap to clone: both kinds multiplex one connection (per
/// node).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    /// A cluster, and the connection to use when pinned (see [`Conn::pinned`]).
    Cluster(Arc<Cluster>, Option<ClusterConnection>),
}

/// A cluster connection that is replaced when a command times out.
pub(crate) struct Cluster {
    client: ClusterClient,
    /// How `client` was built, when by this crate: a refresh that cannot reach any seed
    /// starts from the primaries the current connection knows instead.
    settings: Option<ClientSettings>,
    current: Mutex<(ClusterConnection, Instant)>,
    refreshing: std::sync::atomic::AtomicBool,
    response_timeout: Duration,
    connect_timeout: Duration,
}

/// The least time between two fresh cluster connections.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

impl Cluster {
    pub(crate) fn new(
        client: ClusterClient,
        settings: Option<ClientSettings>,
        conn: ClusterConnection,
        response_timeout: Duration,
        connect_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            settings,
            current: Mutex::new((conn, Instant::now())),
            refreshing: std::sync::atomic::AtomicBool::new(false),
            response_timeout,
            connect_timeout,
        })
    }

    /// The current connection.
    pub(crate) fn connection(&self) -> ClusterConnection {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    /// A command timed out: makes a fresh connection in the background (not more often than
    /// [`REFRESH_EVERY`], one at a time).
    fn refresh(self: &Arc<Self>) {
        let since = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .elapsed();
        if since < REFRESH_EVERY
            || self
                .refreshing
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        // A call dropped outside a runtime (at shutdown) has nothing to refresh for.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.refreshing
                .store(false, std::sync::atomic::Ordering::Release);
            return;
        };
        let cluster = Arc::downgrade(self);
        let (client, limit) = (self.client.clone(), self.connect_timeout * 2);
        let (settings, old) = (self.settings.clone(), self.connection());
        runtime.spawn(async move {
            let mut fresh = tokio::time::timeout(limit, client.get_async_connection())
                .await
                .ok()
                .and_then(Result::ok);
            if let (None, Some(settings)) = (&fresh, settings) {
                fresh = from_known_primaries(old, &settings, limit).await;
            }
            let Some(cluster) = cluster.upgrade() else {
                return;
            };
            match fresh {
                Some(conn) => {
                    tracing::debug!("redis cluster command timed out; using a fresh connection");
                    *cluster
                        .current
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = (conn, Instant::now());
                }
                None => {
                    // Try again after the next timeout, a period from now.
                    cluster
                        .current
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .1 = Instant::now();
                }
            }
            cluster
                .refreshing
                .store(false, std::sync::atomic::Ordering::Release);
        });
    }

    /// Runs `call` on the current connection; a timeout, or the caller giving up on a call
    /// that took longer than the response timeout, starts a refresh. No timer of its own: the
    /// caller bounds the call.
    async fn run<T>(
        self: &Arc<Self>,
        pinned: Option<&ClusterConnection>,
        call: impl AsyncFnOnce(&mut ClusterConnection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let mut conn = pinned.cloned().unwrap_or_else(|| self.connection());
        let watch = SlowCall {
            cluster: self,
            started: Instant::now(),
        };
        let result = call(&mut conn).await;
        std::mem::forget(watch);
        if result.as_ref().is_err_and(RedisError::is_timeout) {
            self.refresh();
        }
        result
    }
}

/// A cluster connection made through the primaries that `old` (the current connection) reads
/// from `CLUSTER SLOTS`: for when no seed answers (the user gave one seed, and that is the
/// node that stopped). Up to three tries (each asks a random node, which may be the stopped
/// one), each bounded by `limit`.
async fn from_known_primaries(
    mut old: ClusterConnection,
    settings: &ClientSettings,
    limit: Duration,
) -> Option<ClusterConnection> {
    for _ in 0..3 {
        let Ok(primaries) = crate::cluster::primaries(&mut old, limit).await else {
            continue;
        };
        // A primary without an endpoint (see `primaries`) names no node to connect to.
        let infos: Vec<_> = primaries
            .into_iter()
            .filter(|(host, _)| !host.is_empty())
            .map(|(host, port)| settings.at(host, port))
            .collect();
        if infos.is_empty() {
            return None;
        }
        let client = settings.client(&infos).ok()?;
        if let Ok(Ok(conn)) = tokio::time::timeout(limit, client.get_async_connection()).await {
            return Some(conn);
        }
    }
    None
}

/// Armed while a cluster call is in flight: dropped there (the caller's bound ran out) after
/// the response timeout, it starts a refresh.
struct SlowCall<'a> {
    cluster: &'a Arc<Cluster>,
    started: Instant,
}

impl Drop for SlowCall<'_> {
    fn drop(&mut self) {
        if self.started.elapsed() >= self.cluster.response_timeout {
            self.cluster.refresh();
        }
    }
}

impl Conn {
    /// The publish command of this deployment: sharded on a cluster, where a plain `PUBLISH`
    /// would reach every node.
    pub(crate) fn publish_command(&self) -> &'static str {
        match self {
            Self::Single(_) => "PUBLISH",
            Self::Cluster(..) => "SPUBLISH",
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(..))
    }

    /// `cmd`, which names no key, sent where `key` lives: to the server, or to the primary of
    /// the key's slot on a cluster.
    pub(crate) async fn query_at(&mut self, cmd: Cmd, key: &str) -> RedisResult<Value> {
        match self {
            Self::Single(conn) => cmd.query_async(conn).await,
            Self::Cluster(cluster, pinned) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                ));
                cluster
                    .run(pinned.as_ref(), async |conn| {
                        conn.route_command(cmd, route).await
                    })
                    .await
            }
        }
    }

    /// This connection, kept on the cluster connection of now even if a timeout replaces
    /// that: an attempt's cleanup release then goes over the same node connection as the
    /// script it cleans up after, behind it (a fresh connection could overtake it).
    pub(crate) fn pinned(&self) -> Self {
        match self {
            Self::Single(_) | Self::Cluster(_, Some(_)) => self.clone(),
            Self::Cluster(cluster, None) => {
                Self::Cluster(Arc::clone(cluster), Some(cluster.connection()))
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(cluster, pinned) => Box::pin(async move {
                cluster
                    .run(pinned.as_ref(), async |conn| {
                        conn.req_packed_command(cmd).await
                    })
                    .await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(cluster, pinned) => Box::pin(async move {
                cluster
                    .run(pinned.as_ref(), async |conn| {
                        conn.req_packed_commands(pipeline, offset, count).await
                    })
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}
