//! Backends by name for the harness, and deliberately broken ones for its negative controls.

use std::{sync::Arc, time::Duration};

use leasehold::{async_trait, Capabilities, DistributedLock, Lease, LockAdmin, LockError, LockKey};

/// A deliberately broken backend, to prove the checker sees violations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// No flaw.
    None,
    /// Extend claims success without asking the server: holders believe in leases that ended.
    ExtendBlind,
    /// Release frees the key whoever holds it (no token check).
    ReleaseAny,
    /// Redis only: acquire by `GET`, then `SET` without `NX` (see [`super::racy`]).
    GetThenSet,
    /// Redis only: a correct lock whose fences are a bare `INCR` (see [`super::racy`]), so they
    /// restart at 1 when the store loses its data.
    FencesRestartAtOne,
}

impl Broken {
    /// Parses `none`, `extend-blind`, `release-any`, `get-then-set`, `fences-restart-at-1`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "none" => Some(Self::None),
            "extend-blind" => Some(Self::ExtendBlind),
            "release-any" => Some(Self::ReleaseAny),
            "get-then-set" => Some(Self::GetThenSet),
            "fences-restart-at-1" => Some(Self::FencesRestartAtOne),
            _ => None,
        }
    }
}

/// Connects to `url`: `sqlite://PATH`, `redis://...`, `postgres://...` (lease table) or
/// `postgres+advisory://...` (advisory strategy), wrapped in `broken`'s flaw.
///
/// # Errors
///
/// When the backend cannot be reached, or the flaw needs what the backend lacks.
pub async fn connect(url: &str, broken: Broken) -> Result<Arc<dyn DistributedLock>, LockError> {
    if matches!(broken, Broken::GetThenSet | Broken::FencesRestartAtOne) {
        if !url.starts_with("redis://") {
            return Err(LockError::invalid_config(
                format!("negative control {broken:?}"),
                "needs a redis:// backend",
            ));
        }
        if broken == Broken::FencesRestartAtOne {
            return Ok(Arc::new(super::racy::Unfloored::connect(url).await?));
        }
        return Ok(Arc::new(super::racy::GetThenSet::connect(url).await?));
    }
    let (lock, admin): (Arc<dyn DistributedLock>, Option<Arc<dyn LockAdmin>>) = match url
        .split_once("://")
    {
        Some(("sqlite", path)) => {
            let lock = Arc::new(leasehold_sqlite::SqliteLock::open(path).await?);
            (lock.clone(), Some(lock))
        }
        Some(("redis" | "redis+cluster", _)) => (
            Arc::new(leasehold_redis::RedisLock::connect(url).await?),
            None,
        ),
        Some(("postgres", _)) => (
            Arc::new(leasehold_postgres::PostgresLock::connect(url).await?),
            None,
        ),
        Some(("postgres+advisory", rest)) => {
            let lock =
                leasehold_postgres::PostgresAdvisoryLock::connect(&format!("postgres://{rest}"))
                    .await?;
            (Arc::new(lock), None)
        }
        _ => {
            return Err(LockError::invalid_config(
                format!("harness URL {url:?}"),
                "unknown scheme",
            ))
        }
    };
    Ok(match broken {
        Broken::None | Broken::GetThenSet | Broken::FencesRestartAtOne => lock,
        Broken::ExtendBlind => Arc::new(Flawed {
            inner: lock,
            admin: None,
            flaw: broken,
        }),
        Broken::ReleaseAny => {
            let admin = admin.ok_or_else(|| {
                LockError::invalid_config(
                    "negative control release-any",
                    "needs a backend with LockAdmin (sqlite)",
                )
            })?;
            Arc::new(Flawed {
                inner: lock,
                admin: Some(admin),
                flaw: broken,
            })
        }
    })
}

#[derive(Debug)]
struct Flawed {
    inner: Arc<dyn DistributedLock>,
    admin: Option<Arc<dyn LockAdmin>>,
    flaw: Broken,
}

// A wrapper forwards every method, defaulted ones too: a forgotten `acquire` would poll.
#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl DistributedLock for Flawed {
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        self.inner.try_acquire(key, ttl).await
    }

    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        self.inner.acquire(key, ttl, wait).await
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        if self.flaw == Broken::ExtendBlind {
            leasehold::backend::renew(lease, ttl, std::time::Instant::now());
            return Ok(true);
        }
        self.inner.extend(lease, ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        match (&self.admin, self.flaw) {
            (Some(admin), Broken::ReleaseAny) => admin.force_release(lease.key()).await,
            _ => self.inner.release(lease).await,
        }
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn watch_releases(&self, key: &LockKey) -> Option<Box<dyn leasehold::ReleaseWatch>> {
        self.inner.watch_releases(key)
    }
}
