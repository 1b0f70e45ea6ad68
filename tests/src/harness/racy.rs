//! Redis locks written the way they must not be, the harness's negative controls for Redis: a
//! checker that finds nothing here is blind.
//!
//! - [`GetThenSet`]: acquire by `GET`, then `SET` without `NX`. Two callers that both read
//!   "free" both believe they hold the lock.
//! - [`Unfloored`]: atomic and token-checked, but its fences are a bare `INCR` (leasehold-redis
//!   before its clock floor), so they restart at 1 when the store loses its data.

use std::time::{Duration, Instant};

use leasehold::{
    async_trait, Capabilities, DistributedLock, Lease, LeaseToken, LockError, LockKey,
};
use leasehold_redis::redis::{self, aio::MultiplexedConnection, AsyncCommands};

/// Acquire by `GET`, then `SET` without `NX` (see the module docs).
#[derive(Clone)]
pub struct GetThenSet {
    conn: MultiplexedConnection,
}

impl std::fmt::Debug for GetThenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GetThenSet")
    }
}

fn transient(error: redis::RedisError) -> LockError {
    LockError::transient("racy-redis", error)
}

impl GetThenSet {
    /// Connects to `url`.
    ///
    /// # Errors
    ///
    /// When Redis cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, LockError> {
        let client = redis::Client::open(url).map_err(transient)?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(transient)?;
        Ok(Self { conn })
    }

    fn name(key: &LockKey) -> String {
        format!("racy:{}", key.as_str())
    }
}

#[async_trait]
impl DistributedLock for GetThenSet {
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let mut conn = self.conn.clone();
        let name = Self::name(key);
        let sent_at = Instant::now();
        let holder: Option<Vec<u8>> = conn.get(&name).await.map_err(transient)?;
        if holder.is_some() {
            return Ok(None);
        }
        // The flaw: someone else may have set it since the GET.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let token = LeaseToken::random()?;
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let _: () = conn
            .pset_ex(&name, token.to_hex(), ms)
            .await
            .map_err(transient)?;
        let fence: u64 = conn
            .incr(format!("{name}:fence"), 1)
            .await
            .map_err(transient)?;
        Ok(Some(leasehold::backend::lease(
            key.clone(),
            token,
            fence,
            ttl,
            sent_at,
        )))
    }

    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        leasehold::backend::wait::poll_acquire(self, key, ttl, wait).await
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        let mut conn = self.conn.clone();
        let name = Self::name(lease.key());
        let sent_at = Instant::now();
        let holder: Option<String> = conn.get(&name).await.map_err(transient)?;
        if holder.as_deref() != Some(lease.token().to_hex().as_str()) {
            return Ok(false);
        }
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let _: bool = conn.pexpire(&name, ms).await.map_err(transient)?;
        leasehold::backend::renew(lease, ttl, sent_at);
        Ok(true)
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        let mut conn = self.conn.clone();
        let name = Self::name(lease.key());
        let holder: Option<String> = conn.get(&name).await.map_err(transient)?;
        if holder.as_deref() != Some(lease.token().to_hex().as_str()) {
            return Ok(false);
        }
        let _: u64 = conn.del(&name).await.map_err(transient)?;
        Ok(true)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
    }
}

/// Atomic `SET NX PX` + `INCR` fence, token-checked extend and release: right in every way but
/// one, fences that restart at 1 after a store loses its data (see the module docs). Claims
/// `durable_fences`, as leasehold-redis did not.
#[derive(Clone)]
pub struct Unfloored {
    /// Reconnects after the store restarts.
    conn: redis::aio::ConnectionManager,
}

impl std::fmt::Debug for Unfloored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unfloored")
    }
}

const UNFLOORED_ACQUIRE: &str = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2]) end return 0";
const UNFLOORED_EXTEND: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";
const UNFLOORED_RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1]) end return 0";

impl Unfloored {
    /// Connects to `url`.
    ///
    /// # Errors
    ///
    /// When Redis cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, LockError> {
        let client = redis::Client::open(url).map_err(transient)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_connection_timeout(Some(Duration::from_secs(1)));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(transient)?;
        Ok(Self { conn })
    }

    fn name(key: &LockKey) -> String {
        format!("{{unfloored:{}}}", key.as_str())
    }

    async fn call(
        &self,
        script: &str,
        key: &LockKey,
        token: LeaseToken,
        ms: u128,
    ) -> Result<u64, LockError> {
        let name = Self::name(key);
        redis::Script::new(script)
            .key(&name)
            .key(format!("{name}:fence"))
            .arg(token.to_hex())
            .arg(ms.to_string())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(transient)
    }
}

#[async_trait]
impl DistributedLock for Unfloored {
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let ttl = leasehold::backend::ttl::check(ttl)?;
        let token = LeaseToken::random()?;
        let sent_at = Instant::now();
        let fence = self
            .call(UNFLOORED_ACQUIRE, key, token, ttl.as_millis())
            .await?;
        Ok((fence > 0).then(|| leasehold::backend::lease(key.clone(), token, fence, ttl, sent_at)))
    }

    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        leasehold::backend::wait::poll_acquire(self, key, ttl, wait).await
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        let ttl = leasehold::backend::ttl::check(ttl)?;
        let sent_at = Instant::now();
        let extended = self
            .call(
                UNFLOORED_EXTEND,
                lease.key(),
                lease.token(),
                ttl.as_millis(),
            )
            .await?
            == 1;
        if extended {
            leasehold::backend::renew(lease, ttl, sent_at);
        }
        Ok(extended)
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        Ok(self
            .call(UNFLOORED_RELEASE, lease.key(), lease.token(), 0)
            .await?
            == 1)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_server_clock(true)
            .with_durable_fences(true)
    }
}
