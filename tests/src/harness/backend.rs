//! Backends by name for the harness, and deliberately broken ones for its negative controls.

use std::{sync::Arc, time::Duration};

use leasehold::{
    async_trait, Capabilities, DistributedLock, DistributedRwLock, Lease, LockAdmin, LockError,
    LockKey,
};

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
    /// `--rw` only: a write is taken as a read, so writers share the key with each other and
    /// with readers.
    WritesShared,
    /// `--rw` only: reads are taken on another key's lock, so readers never meet writers.
    ReadsApart,
}

impl Broken {
    /// Parses `none`, `extend-blind`, `release-any`, `get-then-set`, `fences-restart-at-1`,
    /// `writes-shared`, `reads-apart`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "writes-shared" => Some(Self::WritesShared),
            "reads-apart" => Some(Self::ReadsApart),
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
    if matches!(broken, Broken::WritesShared | Broken::ReadsApart) {
        return Err(LockError::invalid_config(
            format!("negative control {broken:?}"),
            "is a read/write lock's flaw: run with --rw",
        ));
    }
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
        Some(("etcd" | "etcds", _)) => {
            let lock = Arc::new(
                leasehold_etcd::EtcdLockBuilder::from_url(url)?
                    .connect()
                    .await?,
            );
            (lock.clone(), Some(lock))
        }
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
        Broken::None
        | Broken::GetThenSet
        | Broken::FencesRestartAtOne
        | Broken::WritesShared
        | Broken::ReadsApart => lock,
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

/// Connects to `url` (as [`connect`]) as a read/write lock, wrapped in `broken`'s flaw (`none`,
/// `writes-shared`, `reads-apart`).
///
/// # Errors
///
/// When the backend cannot be reached, or the flaw is not a read/write lock's.
pub async fn connect_rw(
    url: &str,
    broken: Broken,
) -> Result<Arc<dyn DistributedRwLock>, LockError> {
    if !matches!(
        broken,
        Broken::None | Broken::WritesShared | Broken::ReadsApart
    ) {
        return Err(LockError::invalid_config(
            format!("negative control {broken:?}"),
            "is a mutex's flaw: run without --rw",
        ));
    }
    let lock: Arc<dyn DistributedRwLock> = match url.split_once("://") {
        Some(("sqlite", path)) => Arc::new(leasehold_sqlite::SqliteLock::open(path).await?),
        Some(("redis" | "redis+cluster", _)) => {
            Arc::new(leasehold_redis::RedisLock::connect(url).await?)
        }
        Some(("postgres", _)) => Arc::new(leasehold_postgres::PostgresLock::connect(url).await?),
        Some(("postgres+advisory", rest)) => Arc::new(
            leasehold_postgres::PostgresAdvisoryLock::connect(&format!("postgres://{rest}"))
                .await?,
        ),
        _ => {
            return Err(LockError::invalid_config(
                format!("harness URL {url:?}"),
                "unknown scheme",
            ))
        }
    };
    Ok(match broken {
        Broken::None => lock,
        flaw => Arc::new(FlawedRw { inner: lock, flaw }),
    })
}

/// The key a `reads-apart` reader really locks.
fn apart(key: &LockKey) -> LockKey {
    LockKey::new(format!("{}#apart", key.as_str())).unwrap_or_else(|_| key.clone())
}

#[derive(Debug)]
struct FlawedRw {
    inner: Arc<dyn DistributedRwLock>,
    flaw: Broken,
}

#[async_trait]
impl DistributedRwLock for FlawedRw {
    async fn try_acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        match self.flaw {
            Broken::ReadsApart => self.inner.try_acquire_read(&apart(key), ttl).await,
            _ => self.inner.try_acquire_read(key, ttl).await,
        }
    }

    async fn try_acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        match self.flaw {
            Broken::WritesShared => self.inner.try_acquire_read(key, ttl).await,
            _ => self.inner.try_acquire_write(key, ttl).await,
        }
    }

    async fn acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        match self.flaw {
            Broken::ReadsApart => self.inner.acquire_read(&apart(key), ttl, wait).await,
            _ => self.inner.acquire_read(key, ttl, wait).await,
        }
    }

    async fn acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        match self.flaw {
            Broken::WritesShared => self.inner.acquire_read(key, ttl, wait).await,
            _ => self.inner.acquire_write(key, ttl, wait).await,
        }
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        self.inner.extend(lease, ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        self.inner.release(lease).await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

/// The write side of a read/write lock as a mutex, so the writers run the mutex workers' loop.
#[derive(Debug)]
pub struct WriteSide(pub Arc<dyn DistributedRwLock>);

#[async_trait]
impl DistributedLock for WriteSide {
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        self.0.try_acquire_write(key, ttl).await
    }

    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        self.0.acquire_write(key, ttl, wait).await
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        self.0.extend(lease, ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        self.0.release(lease).await
    }

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
}
