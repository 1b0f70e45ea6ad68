//! A Redis lock written the way it must not be: acquire by `GET`, then `SET` without `NX`. Two
//! callers that both read "free" both believe they hold the lock. The harness's negative
//! control for Redis: a checker that finds nothing here is blind.

use std::time::{Duration, Instant};

use leasehold::{
    async_trait, Capabilities, DistributedLock, Lease, LeaseToken, LockError, LockKey,
};
use leasehold_redis::redis::{self, aio::MultiplexedConnection, AsyncCommands};

/// See the module docs.
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
        Ok(Some(Lease::new(key.clone(), token, fence, ttl, sent_at)))
    }

    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        leasehold::wait::poll_acquire(self, key, ttl, wait).await
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
        lease.renewed(ttl, sent_at);
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
