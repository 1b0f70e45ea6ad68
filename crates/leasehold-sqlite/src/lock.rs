//! [`SqliteLock`]: locks shared by every process on one machine through a database file.

use std::{
    fmt,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use leasehold::{
    async_trait,
    backend::{
        self, ttl,
        wait::{jitter, keep_waiting, release_abandoned, Deadline, InFlight},
        Attempt, SentAt, Wakers,
    },
    Capabilities, DistributedLock, Lease, LeaseToken, LockError, LockKey,
};
use sqlx::SqlitePool;

use crate::{
    clock::Clock,
    error::{is_busy, map},
    sql::Statements,
};

/// The default table.
pub const DEFAULT_TABLE: &str = "leasehold_locks";
/// The default busy timeout: how long a statement waits for another process's write.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiter re-checks a lock held by another process (jittered down to half).
const CROSS_PROCESS_POLL: Duration = Duration::from_millis(50);

/// Locks in a SQLite database file (WAL mode), shared by every process that opens it.
///
/// Waiters in this process are woken the moment a lock is released here; waiters in other
/// processes poll (every 25-50 ms, and exactly when the holder's lease ends). Cheap to clone.
#[derive(Clone)]
pub struct SqliteLock {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: SqlitePool,
    pub(crate) statements: Statements,
    pub(crate) path: PathBuf,
    pub(crate) table: String,
    pub(crate) wakers: Arc<Wakers>,
    pub(crate) busy_timeout: Duration,
    pub(crate) clock: Clock,
}

impl fmt::Debug for SqliteLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteLock")
            .field("path", &self.inner.path)
            .field("table", &self.inner.table)
            .finish()
    }
}

impl SqliteLock {
    /// The pool, for tests and tools.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// One attempt. `Ok(Err(left))`: held by someone else, for `left` if known.
    async fn attempt(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Result<Lease, Option<Duration>>, LockError> {
        let attempt = Attempt::start(ttl)?;
        let token = attempt.token();
        // Read after the stamp: the lease ends no earlier in the file than its validity here.
        let clock = &self.inner.clock;
        let now = clock.now_ms()?;
        // sqlx runs SQLite statements on a worker thread: a statement whose caller gave up
        // (or that failed after its write) may still have committed, so its token is released.
        // The cleanup runs on another connection and may overtake the abandoned statement (its
        // worker thread finishes it): if it found nothing, it tries once more after a busy
        // timeout, by when that statement has landed or given up.
        let cleanup = InFlight::new(|| {
            let (lock, owned_key) = (self.clone(), key.clone());
            let retry_after = Some(lock.inner.busy_timeout);
            release_abandoned(owned_key.clone(), retry_after, move || {
                let (lock, key) = (lock.clone(), owned_key.clone());
                async move {
                    let released = lock.inner.statements.release.as_str();
                    let changed = lock.update(released, &key, Some(token), None).await?;
                    Ok(changed > 0)
                }
            })
        });
        let fence: Result<Option<i64>, sqlx::Error> =
            sqlx::query_scalar(&self.inner.statements.acquire)
                .bind(key.as_str())
                .bind(now)
                .bind(clock.boot())
                .bind(token.to_bytes().as_slice())
                .bind(attempt.ttl_millis() as i64)
                .fetch_optional(&self.inner.pool)
                .await;
        // A busy database wrote nothing: no cleanup (it would only add to the contention).
        if fence.as_ref().map_or_else(is_busy, |_| true) {
            cleanup.disarm();
        }
        match fence {
            Ok(Some(fence)) => {
                let fence = u64::try_from(fence).map_err(|_| {
                    LockError::permanent(crate::error::BACKEND, format!("negative fence {fence}"))
                })?;
                Ok(Ok(attempt.won(key, fence)))
            }
            Ok(None) => Ok(Err(None)),
            // Another process held the write lock past the busy timeout: a transient failure,
            // not "held by someone else" (nobody may hold the key; a waiting acquire goes on).
            Err(error) => Err(map(error, Some(key))),
        }
    }

    async fn holder_left(&self, key: &LockKey) -> Option<Duration> {
        let clock = &self.inner.clock;
        let now = clock.now_ms().ok()?;
        let left: Option<Option<i64>> = sqlx::query_scalar(&self.inner.statements.holder_left)
            .bind(key.as_str())
            .bind(now)
            .bind(clock.boot())
            .fetch_optional(&self.inner.pool)
            .await
            .ok()
            .flatten();
        left.flatten()
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis)
    }

    /// Runs an update, retrying a busy database a few times; returns the rows changed.
    pub(crate) async fn update(
        &self,
        sql: &str,
        key: &LockKey,
        token: Option<LeaseToken>,
        ttl: Option<Duration>,
    ) -> Result<u64, LockError> {
        let mut tries = 0;
        loop {
            let clock = &self.inner.clock;
            let now = clock.now_ms()?;
            let mut query = sqlx::query(sql)
                .bind(key.as_str())
                .bind(now)
                .bind(clock.boot());
            if let Some(token) = token {
                query = query.bind(token.to_bytes().to_vec());
            }
            if let Some(ttl) = ttl {
                query = query.bind(ttl::whole_millis(ttl) as i64);
            }
            match query.execute(&self.inner.pool).await {
                Ok(done) => return Ok(done.rows_affected()),
                Err(error) if is_busy(&error) && tries < 3 => tries += 1,
                Err(error) => return Err(map(error, Some(key))),
            }
        }
    }
}

#[async_trait]
impl DistributedLock for SqliteLock {
    /// One statement (an upsert that only takes a free or expired row).
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let ttl = ttl::check(ttl)?;
        Ok(self.attempt(key, ttl).await?.ok())
    }

    /// Waiters in this process are woken by releases in this process; a lock held by another
    /// process is re-checked every 25-50 ms and exactly when its lease ends; never past the
    /// deadline.
    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let ttl = ttl::check(ttl)?;
        let deadline = Deadline::after(wait);
        let waker = self.inner.wakers.register(key.as_str());
        let mut failure = None;
        loop {
            // Registered before the attempt, so a release right after it still wakes us.
            let wake = waker.next_wake();
            let busy = match self.attempt(key, ttl).await {
                Ok(Ok(lease)) => return Ok(lease),
                Ok(Err(_)) => {
                    failure = None;
                    true
                }
                Err(error) => {
                    keep_waiting(error, &mut failure)?;
                    false
                }
            };
            if deadline.has_passed() {
                return Err(failure.unwrap_or_else(|| deadline.timeout(key)));
            }
            let mut retry = jitter(CROSS_PROCESS_POLL);
            if busy {
                if let Some(left) = self.holder_left(key).await {
                    retry = retry.min(left + Duration::from_millis(1));
                }
            }
            let wake_at = deadline.cap(Instant::now() + retry);
            tokio::select! {
                () = wake => {}
                () = tokio::time::sleep_until(wake_at.into()) => {}
            }
        }
    }

    /// `now` is read before the statement, which may wait up to the busy timeout for another
    /// process's write: an extend that waited past the lease's end can still succeed if nobody
    /// took the key meanwhile (the token check keeps anyone else's lease safe). The renewed
    /// validity counts from before the wait, so the holder never believes in more time than
    /// the file gives it.
    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        leasehold::backend::check_kind(lease, &[leasehold::LeaseKind::Exclusive])?;
        let ttl = ttl::check(ttl)?;
        let sent_at = SentAt::now();
        let changed = self
            .update(
                &self.inner.statements.extend,
                lease.key(),
                Some(lease.token()),
                Some(ttl),
            )
            .await?;
        if changed == 1 {
            backend::renew(lease, ttl, sent_at);
        }
        Ok(changed == 1)
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        leasehold::backend::check_kind(&lease, &[leasehold::LeaseKind::Exclusive])?;
        let changed = self
            .update(
                &self.inner.statements.release,
                lease.key(),
                Some(lease.token()),
                None,
            )
            .await?;
        if changed == 1 {
            self.inner.wakers.wake(lease.key().as_str());
        }
        Ok(changed == 1)
    }

    fn capabilities(&self) -> Capabilities {
        // Other processes poll, so no notified_wait; one machine, one clock.
        Capabilities::new()
            .with_server_clock(true)
            .with_durable_fences(true)
    }
}
