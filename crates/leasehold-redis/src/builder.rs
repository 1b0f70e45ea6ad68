//! Connecting: [`RedisLock::connect`] and [`RedisLockBuilder`].

use std::{fmt, sync::Arc, time::Duration};

use leasehold::LockError;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
};

use crate::{
    cluster::{check_seeds, ClientSettings},
    conn::{Cluster, Conn},
    error::map,
    handoffs::HandOffs,
    keys::{check_namespace, DEFAULT_NAMESPACE},
    lock::{Inner, RedisLock},
    replicas::{Replicas, POOL, WAITS},
    subscriber::{self, Subscriber},
};

/// The default time to wait for a reply before the call fails with a transient error.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// The default time to wait for a connection to be established.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

enum Source {
    Url(String),
    Client(redis::Client),
    Connection(ConnectionManager, Option<redis::Client>),
    Cluster(Vec<String>),
    ClusterClient(ClusterClient),
}

/// Builds a [`RedisLock`] with settings beyond [`RedisLock::connect`].
///
/// ```no_run
/// # async fn demo() -> Result<(), leasehold::LockError> {
/// use std::time::Duration;
/// use leasehold_redis::RedisLock;
///
/// let locks = RedisLock::builder()
///     .url("redis://locker:secret@127.0.0.1:6379/0")
///     .namespace("billing")
///     .response_timeout(Duration::from_secs(1))
///     .build()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct RedisLockBuilder {
    source: Option<Source>,
    namespace: String,
    response_timeout: Duration,
    connect_timeout: Duration,
    check_eviction: bool,
    replicas: Option<(u32, Duration)>,
    #[cfg(feature = "tls")]
    root_certificate: Option<Vec<u8>>,
}

impl fmt::Debug for RedisLockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            None => "none".to_owned(),
            Some(Source::Url(url)) => leasehold::redact::url(url),
            Some(Source::Client(client)) => client.get_connection_info().addr().to_string(),
            Some(Source::Connection(..)) => "existing connection".to_owned(),
            Some(Source::Cluster(seeds)) => seeds
                .iter()
                .map(|seed| leasehold::redact::url(seed))
                .collect::<Vec<_>>()
                .join(","),
            Some(Source::ClusterClient(_)) => "existing cluster client".to_owned(),
        };
        f.debug_struct("RedisLockBuilder")
            .field("source", &source)
            .field("namespace", &self.namespace)
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl RedisLock {
    /// Connects to the Redis server at `url` with default settings.
    ///
    /// URL forms: `redis://[[user]:password@]host[:port][/db]`, `rediss://...` for TLS (with
    /// the default `tls` feature), `redis+unix:///path/to/socket`, and for a Redis Cluster
    /// `redis+cluster://[user:password@]host:port,host:port,...[/?options]` (see
    /// [`cluster_seeds`](crate::cluster_seeds) and [`RedisLock::connect_cluster`]).
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidConfig`] for a URL that cannot be parsed (the message never shows the
    /// password); [`LockError::Backend`] when the server cannot be reached (transient) or
    /// refuses the credentials (permanent).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the half-made connection; nothing else is left behind.
    pub async fn connect(url: &str) -> Result<Self, LockError> {
        Self::builder().url(url).build().await
    }

    /// Connects to the Redis Cluster that `nodes` belong to, with default settings: any
    /// reachable node is enough, the others are found from it.
    ///
    /// Each seed is `redis://[[user]:password@]host:port` or `rediss://...` (TLS, with the
    /// default `tls` feature); every seed must give the same credentials and the same scheme.
    /// Scripts go to the primary that owns their lock's slot; waiting uses sharded pub/sub
    /// (`SSUBSCRIBE`, Redis 7) on that node. See the crate docs' "Redis Cluster" section.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidConfig`] for no seed, a seed that cannot be parsed, is not
    /// `redis://`/`rediss://`, names a database other than 0, or differs from the first in
    /// credentials or TLS (the message names the seed, never a password);
    /// [`LockError::Backend`] when no seed can be reached (transient) or the credentials are
    /// refused (permanent).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the half-made connections; nothing else is left behind.
    pub async fn connect_cluster(nodes: &[&str]) -> Result<Self, LockError> {
        Self::builder().cluster(nodes.iter().copied()).build().await
    }

    /// A builder, to set the namespace, timeouts, or bring an existing client or connection.
    pub fn builder() -> RedisLockBuilder {
        RedisLockBuilder {
            source: None,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            check_eviction: true,
            replicas: None,
            #[cfg(feature = "tls")]
            root_certificate: None,
        }
    }
}

impl RedisLockBuilder {
    /// Connect to this URL (see [`RedisLock::connect`] for the forms).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.source = Some(Source::Url(url.into()));
        self
    }

    /// Use this client: the lock opens its own connections from it.
    pub fn client(mut self, client: redis::Client) -> Self {
        self.source = Some(Source::Client(client));
        self
    }

    /// Use an existing connection for commands. Waiting `acquire`s need a client for their
    /// pub/sub connection: pass it as `subscribe_with`, or they poll (every 25-50 ms).
    pub fn connection(
        mut self,
        connection: ConnectionManager,
        subscribe_with: Option<redis::Client>,
    ) -> Self {
        self.source = Some(Source::Connection(connection, subscribe_with));
        self
    }

    /// Connect to a Redis Cluster through these seed nodes (see
    /// [`RedisLock::connect_cluster`] for the forms).
    pub fn cluster<S: Into<String>>(mut self, nodes: impl IntoIterator<Item = S>) -> Self {
        self.source = Some(Source::Cluster(nodes.into_iter().map(Into::into).collect()));
        self
    }

    /// Use this cluster client for commands. Its settings (timeouts, retries, TLS) are used as
    /// they are; waiting `acquire`s poll (every 25-50 ms), since the pushes of a client built
    /// elsewhere do not reach the lock: `capabilities().notified_wait` is false. Seeds given
    /// with [`cluster`](Self::cluster) get sharded pub/sub instead.
    pub fn cluster_client(mut self, client: ClusterClient) -> Self {
        self.source = Some(Source::ClusterClient(client));
        self
    }

    /// The prefix of every Redis key (default `leasehold`; see the crate docs for the layout).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long a command may wait for its reply (default 3 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long connecting may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether to check `maxmemory-policy` at connect and warn if Redis may evict locks
    /// (default true; skipped quietly when the user may not run `CONFIG GET`).
    pub fn check_eviction_policy(mut self, check: bool) -> Self {
        self.check_eviction = check;
        self
    }

    /// After every acquire and extend, wait until `count` replicas of the lock's primary have
    /// the write (`WAIT count timeout`, on the connection that sent it, on the lock's own
    /// shard), at most `timeout`. Off by default.
    ///
    /// An acquire that too few replicas acknowledged gives the lock back and fails with a
    /// transient [`LockError::Backend`] naming both counts (a waiting `acquire` tries again
    /// until its deadline); an extend that too few acknowledged returns `Ok(false)` and leaves
    /// the lease's validity as it was. These writes use a small pool of connections of their
    /// own, since `WAIT` blocks the connection it runs on.
    ///
    /// What it promises: a lock granted with it was on `count` replicas when granted, so a
    /// failover to one of them keeps it. What it does not: Redis stays asynchronously
    /// replicated, `WAIT` does not make a write durable or roll it back when it times out, and
    /// a failover may still promote a replica that lacks it (one that was not among those that
    /// answered). It narrows the window in which an acknowledged lock is lost; it does not
    /// close it. See the crate docs.
    ///
    /// `count` must be at least 1 and `timeout` more than zero (`WAIT` with 0 would block for
    /// ever), or [`build`](Self::build) fails with [`LockError::InvalidConfig`].
    pub fn wait_for_replicas(mut self, count: u32, timeout: Duration) -> Self {
        self.replicas = Some((count, timeout));
        self
    }

    /// For a `rediss://` URL: trust only this CA certificate (PEM), instead of the system's
    /// roots, e.g. a private CA. The server's certificate must still name the URL's host.
    #[cfg(feature = "tls")]
    pub fn root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificate = Some(pem.into());
        self
    }

    /// Connects.
    ///
    /// # Errors
    ///
    /// As [`RedisLock::connect`], plus [`LockError::InvalidConfig`] for a bad namespace or when
    /// no URL, client or connection was given.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the half-made connection; nothing else is left behind.
    pub async fn build(mut self) -> Result<RedisLock, LockError> {
        check_namespace(&self.namespace)?;
        if let Some((count, timeout)) = self.replicas {
            if count == 0 {
                return Err(LockError::invalid_config(
                    "wait_for_replicas count",
                    "must be at least 1 (leave the option off for none)",
                ));
            }
            if timeout.as_millis() == 0 {
                return Err(LockError::invalid_config(
                    format!("wait_for_replicas timeout {timeout:?}"),
                    "must be at least 1 ms (WAIT with 0 blocks for ever)",
                ));
            }
        }
        // One quick reconnect attempt per call: a call never waits for a long retry chain
        // (each call is bounded by the response timeout plus one connect timeout anyway).
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.response_timeout))
            .set_connection_timeout(Some(self.connect_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let (conn, client) = match self.source.take() {
            None => {
                return Err(LockError::invalid_config(
                    "redis source",
                    "give a URL, a client or a connection",
                ))
            }
            Some(Source::Url(url)) if url.contains("+cluster://") => {
                self.source = Some(Source::Cluster(crate::cluster::cluster_seeds(&url)?));
                return Box::pin(self.build()).await;
            }
            Some(Source::Url(url)) => {
                install_tls_provider(&url);
                #[cfg(feature = "tls")]
                let client = open_with_root(&url, self.root_certificate.take());
                #[cfg(not(feature = "tls"))]
                let client = redis::Client::open(url.as_str());
                let client = client.map_err(|e| {
                    LockError::invalid_config(
                        format!("redis URL {}", leasehold::redact::url(&url)),
                        e.to_string(),
                    )
                })?;
                let client = with_keepalive(client, self.response_timeout).map_err(|e| {
                    LockError::invalid_config(
                        format!("redis URL {}", leasehold::redact::url(&url)),
                        e.to_string(),
                    )
                })?;
                let conn = manage(&client, config.clone(), self.connect_timeout).await?;
                (conn, Some(client))
            }
            Some(Source::Client(client)) => {
                let conn = manage(&client, config.clone(), self.connect_timeout).await?;
                (conn, Some(client))
            }
            Some(Source::Connection(conn, client)) => (conn, client),
            Some(Source::Cluster(seeds)) => {
                let infos = check_seeds(&seeds)?;
                if let Some(first) = seeds.first() {
                    install_tls_provider(first);
                }
                let server = crate::cluster::servers(&infos);
                let settings = self.cluster_settings(&infos, Duration::ZERO)?;
                // The subscriber's calls are idempotent: its client may time out and resend.
                let subscriber = settings
                    .builder(&infos)?
                    .response_timeout(self.response_timeout)
                    .overall_response_timeout(Some(self.response_timeout));
                let subscriber = subscriber::Source::cluster(subscriber)
                    .map_err(|e| LockError::invalid_config("redis cluster seeds", e.to_string()))?;
                let client = settings.client(&infos)?;
                let conn = self
                    .cluster_connection(&client, self.response_timeout, Some(&settings))
                    .await?;
                // Its own client: its calls wait out `WAIT`s, so its probes may too.
                let pool = match self.replicas {
                    None => Vec::new(),
                    Some((_, wait)) => {
                        let settings = self.cluster_settings(&infos, wait.saturating_mul(WAITS))?;
                        let client = settings.client(&infos)?;
                        self.cluster_pool(&client, Some(&settings)).await?
                    }
                };
                let subscriber = Subscriber::new(subscriber, self.connect_timeout);
                return self.finish(conn, Some(subscriber), server, pool).await;
            }
            Some(Source::ClusterClient(client)) => {
                let conn = self
                    .cluster_connection(&client, self.response_timeout, None)
                    .await?;
                let pool = self.cluster_pool(&client, None).await?;
                let server = "existing cluster client".to_owned();
                return self.finish(conn, None, server, pool).await;
            }
        };
        let server = client.as_ref().map_or_else(
            || "existing connection".to_owned(),
            |c| c.get_connection_info().addr().to_string(),
        );
        let mut pool = Vec::new();
        if self.replicas.is_some() {
            let Some(client) = &client else {
                return Err(LockError::invalid_config(
                    "wait_for_replicas",
                    "needs a URL or a client to open its connections (an existing connection \
                     alone is not enough)",
                ));
            };
            // A `WAIT` takes up to its timeout before it answers (each time it is sent).
            let wait = self.replicas.map_or(Duration::ZERO, |(_, timeout)| timeout);
            let wait = wait.saturating_mul(WAITS);
            let config = config
                .clone()
                .set_response_timeout(Some(self.response_timeout.saturating_add(wait)));
            for _ in 0..POOL {
                pool.push(Conn::Single(
                    manage(client, config.clone(), self.connect_timeout).await?,
                ));
            }
        }
        let subscriber = client.map(|client| {
            Subscriber::new(subscriber::Source::Single(client), self.connect_timeout)
        });
        self.finish(Conn::Single(conn), subscriber, server, pool)
            .await
    }

    /// A cluster connection whose calls count as slow (see `conn.rs`) after `slow`; with the
    /// client's `settings` (ours, not a user's client), a refresh can start from other nodes
    /// than the seeds.
    async fn cluster_connection(
        &self,
        client: &ClusterClient,
        slow: Duration,
        settings: Option<&ClientSettings>,
    ) -> Result<Conn, LockError> {
        let conn = connect_cluster(client, self.connect_timeout).await?;
        Ok(Conn::Cluster(
            Cluster::new(
                client.clone(),
                settings.cloned(),
                conn,
                slow,
                self.connect_timeout,
            ),
            None,
        ))
    }

    /// The connections for writes that wait for replicas (none without the option).
    async fn cluster_pool(
        &self,
        client: &ClusterClient,
        settings: Option<&ClientSettings>,
    ) -> Result<Vec<Conn>, LockError> {
        let mut pool = Vec::new();
        if self.replicas.is_some() {
            let wait = self.replicas.map_or(Duration::ZERO, |(_, timeout)| timeout);
            let slow = self
                .response_timeout
                .saturating_add(wait.saturating_mul(WAITS));
            for _ in 0..POOL {
                pool.push(self.cluster_connection(client, slow, settings).await?);
            }
        }
        Ok(pool)
    }

    /// The settings of cluster clients for checked seeds, whose calls may wait `extra` beyond
    /// a call's bound (the `WAIT`s of `wait_for_replicas`).
    fn cluster_settings(
        &self,
        infos: &[redis::ConnectionInfo],
        extra: Duration,
    ) -> Result<ClientSettings, LockError> {
        let Some(template) = infos.first() else {
            return Err(LockError::invalid_config(
                "redis cluster seeds",
                "give at least one node URL",
            ));
        };
        // Every caller's bound, and a second.
        let node_timeout = (self.response_timeout + self.connect_timeout)
            .saturating_add(extra)
            .saturating_add(Duration::from_secs(1));
        Ok(ClientSettings {
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
            node_timeout,
            #[cfg(feature = "tls")]
            root_certificate: self.root_certificate.clone(),
            template: template.clone(),
        })
    }

    /// The lock over a made connection; checks the eviction policy if asked.
    async fn finish(
        self,
        conn: Conn,
        subscriber: Option<Subscriber>,
        server: String,
        pool: Vec<Conn>,
    ) -> Result<RedisLock, LockError> {
        let replicas = self
            .replicas
            .map(|(count, timeout)| Replicas::new(count, timeout, pool));
        let lock = RedisLock {
            inner: Arc::new(Inner {
                conn,
                namespace: self.namespace,
                subscriber,
                server,
                call_timeout: self.response_timeout + self.connect_timeout,
                handoffs: HandOffs::default(),
                replicas,
            }),
        };

        if self.check_eviction {
            match lock.eviction_policy().await {
                Ok(EvictionPolicy::Safe) => {}
                Ok(EvictionPolicy::MayEvictLocks(policy)) => tracing::warn!(
                    policy,
                    "redis maxmemory-policy may evict lock keys under memory pressure, which can \
                     hand a lock to two holders or reset fences; set it to noeviction"
                ),
                Ok(EvictionPolicy::Unknown) => {
                    tracing::debug!("cannot read redis maxmemory-policy (CONFIG GET not permitted)")
                }
                Err(error) => return Err(error),
            }
        }
        Ok(lock)
    }
}

/// What Redis does with lock keys when it runs out of memory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvictionPolicy {
    /// `noeviction`: writes fail instead, locks are never evicted.
    Safe,
    /// Any other policy: lock keys (they have a ttl) or fence counters may be evicted.
    MayEvictLocks(String),
    /// `CONFIG GET` is not permitted for this user.
    Unknown,
}

impl RedisLock {
    /// Reads `maxmemory-policy`: whether Redis may evict locks under memory pressure.
    ///
    /// # Errors
    ///
    /// [`LockError::Backend`] when the server cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Read-only; safe to drop.
    pub async fn eviction_policy(&self) -> Result<EvictionPolicy, LockError> {
        let mut conn = self.inner.conn.clone();
        let reply: Result<Vec<String>, redis::RedisError> = crate::error::bounded(
            self.inner.call_timeout,
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query_async(&mut conn),
        )
        .await;
        match reply {
            Ok(pair) => Ok(match pair.get(1).map(String::as_str) {
                Some("noeviction") => EvictionPolicy::Safe,
                Some(policy) => EvictionPolicy::MayEvictLocks(policy.to_owned()),
                None => EvictionPolicy::Unknown,
            }),
            Err(error) if crate::error::is_transient(&error) => Err(map(error)),
            Err(_) => Ok(EvictionPolicy::Unknown),
        }
    }
}

/// `client` with TCP keepalive (first probe after 10 s idle, then every 5 s, 3 probes),
/// `TCP_USER_TIMEOUT` (3 response timeouts, at least 5 s; Linux) and `TCP_NODELAY`: a peer
/// that vanished without closing (a half-open connection, a black-holed network) is found in
/// about 25 s even on a connection that only waits, such as the pub/sub subscriber's. The
/// `redis` crate leaves keepalive off.
fn with_keepalive(
    client: redis::Client,
    response_timeout: Duration,
) -> redis::RedisResult<redis::Client> {
    redis::Client::open(
        client
            .get_connection_info()
            .clone()
            .set_tcp_settings(tcp_settings(response_timeout)),
    )
}

/// TCP keepalive, `TCP_USER_TIMEOUT` and `TCP_NODELAY` (see [`with_keepalive`]).
pub(crate) fn tcp_settings(response_timeout: Duration) -> redis::io::tcp::TcpSettings {
    let keepalive = redis::io::tcp::socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    let settings = redis::io::tcp::TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    // Keepalive probes are not sent while data is unacknowledged: a connection whose peer
    // vanished with a command in flight is dropped by TCP_USER_TIMEOUT instead (then the
    // manager reconnects), rather than after the kernel's ~15 minutes of retransmissions.
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout((response_timeout * 3).max(Duration::from_secs(5)));
    #[cfg(not(target_os = "linux"))]
    let _ = response_timeout;
    settings
}

/// A cluster connection, failing at once on refusals no retry can fix (as [`manage`]).
async fn connect_cluster(
    client: &ClusterClient,
    connect_timeout: Duration,
) -> Result<redis::cluster_async::ClusterConnection, LockError> {
    // The client retries unreachable seeds itself; bounded so a cluster that is down fails
    // the connect instead of hanging it.
    crate::error::bounded(connect_timeout * 2, client.get_async_connection())
        .await
        .map_err(map)
}

/// A `ConnectionManager` for `client`. It retries a failed first connection with backoff
/// (seconds); one plain attempt first makes refusals that no retry can fix (a wrong password, an
/// untrusted TLS certificate) fail at once.
async fn manage(
    client: &redis::Client,
    config: ConnectionManagerConfig,
    connect_timeout: Duration,
) -> Result<ConnectionManager, LockError> {
    let probe = redis::AsyncConnectionConfig::new().set_connection_timeout(Some(connect_timeout));
    if let Err(error) = client
        .get_multiplexed_async_connection_with_config(&probe)
        .await
    {
        let error = map(error);
        if !error.is_transient() {
            return Err(error);
        }
    }
    ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(map)
}

#[cfg(feature = "tls")]
fn install_tls_provider(url: &str) {
    if url.starts_with("rediss://") {
        // Picks ring when the process has not chosen a provider; keeps one already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(not(feature = "tls"))]
fn install_tls_provider(_url: &str) {}

/// A client for `url`, trusting only `root` (PEM) for TLS when given.
#[cfg(feature = "tls")]
fn open_with_root(url: &str, root: Option<Vec<u8>>) -> redis::RedisResult<redis::Client> {
    match root {
        None => redis::Client::open(url),
        Some(_) if !url.starts_with("rediss://") => Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "a root certificate was given for a URL without TLS (use rediss://)",
        ))),
        Some(pem) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            },
        ),
    }
}
