//! [`PostgresLock`]: the lease-table strategy.

use std::{fmt, sync::Arc, time::Duration};

use leasehold::{
    async_trait,
    backend::{
        self, ttl,
        wait::{keep_waiting, release_abandoned, Deadline, InFlight, NotifiedWait},
        Attempt, Reply, SentAt,
    },
    Capabilities, DistributedLock, Lease, LeaseToken, LockError, LockKey, ReleaseWatch,
};
use sqlx::{PgPool, Row};

use crate::{
    advisory_lock::PostgresAdvisoryLock,
    error::{is_contention, map, within},
    ident::Ident,
    listener::Listener,
    sql::Statements,
};

/// How waiters wait: at most 0.25-0.5 s between attempts while listening (in case a
/// notification was lost), 25-50 ms without a listener.
const WAIT: NotifiedWait = NotifiedWait {
    fallback: Duration::from_millis(500),
    poll: Duration::from_millis(50),
};
/// The longest a waiting attempt marks a key as wanted.
const MAX_WANTED: Duration = Duration::from_secs(60);

/// Locks in a PostgreSQL lease table, through `sqlx`.
///
/// Cheap to clone: clones share the pool and one `LISTEN` connection. See the crate docs for
/// the table, the SQL and the trade-offs.
#[derive(Clone)]
pub struct PostgresLock {
    pub(crate) inner: Arc<Inner>,
    /// Set only on the deprecated path (`strategy(Strategy::Advisory)` on the builder): every
    /// call is handed to the advisory type.
    pub(crate) advisory: Option<PostgresAdvisoryLock>,
}

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) statements: Statements,
    /// Read/write locks and semaphores (`held.rs`).
    pub(crate) held: crate::held::HeldStatements,
    pub(crate) channel: Ident,
    pub(crate) table: String,
    pub(crate) listener: Option<Listener>,
    /// `host:port/database` (never credentials), for `Debug`.
    pub(crate) server: String,
    /// The bound of every request (see the builder).
    pub(crate) request_timeout: Duration,
    /// Whether building creates the schema and table.
    pub(crate) migrate: bool,
}

impl fmt::Debug for PostgresLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLock")
            .field("server", &self.inner.server)
            .field("table", &self.inner.table)
            .field("advisory", &self.advisory.is_some())
            .field("channel", &self.inner.channel.as_str())
            .field("notified_wait", &self.inner.listener.is_some())
            .finish()
    }
}

impl PostgresLock {
    /// The pool this lock runs its statements on.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    async fn attempt(
        &self,
        key: &LockKey,
        attempt: &Attempt,
        wanted_for: Duration,
    ) -> Result<Reply, LockError> {
        let statements = &self.inner.statements;
        let token = attempt.token();
        // Armed while the statement is in flight: a statement whose reply was lost (or whose
        // caller gave up) may still commit, so its token is released at once.
        // The cleanup runs on another connection, so it may overtake the abandoned statement
        // (sqlx lets a dropped statement finish): if it found nothing, it tries once more after
        // a request timeout, by when that statement has most likely landed or been given up.
        let cleanup = InFlight::new(|| {
            let (lock, owned_key) = (self.clone(), key.clone());
            let retry_after = Some(lock.inner.request_timeout);
            release_abandoned(owned_key.clone(), retry_after, move || {
                let (lock, key) = (lock.clone(), owned_key.clone());
                async move { lock.release_token(&key, token).await }
            })
        });
        let rows = within(self.inner.request_timeout, async {
            on_pool!(self, exec => sqlx::query(&statements.acquire)
                    .persistent(statements.persistent)
                    .bind(key.as_str())
                    .bind(token.to_bytes().as_slice())
                    .bind(attempt.ttl_millis() as f64)
                    .bind(ttl::whole_millis(wanted_for) as f64)
                    .fetch_all(exec)
                    .await)
        })
        .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) if is_contention(&error) => {
                // A serialization failure or deadlock rolled the statement back.
                cleanup.disarm();
                return Ok(Reply::Busy(None));
            }
            // No connection was had: nothing was sent.
            Err(error @ (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)) => {
                cleanup.disarm();
                return Err(map(error, Some(key)));
            }
            Err(error) => return Err(map(error, Some(key))),
        };
        cleanup.disarm();
        let Some(row) = rows.first() else {
            // The key was inserted by a concurrent winner after our snapshot was taken.
            return Ok(Reply::Busy(None));
        };
        let fence: Option<i64> = row.try_get(0).map_err(|e| map(e, Some(key)))?;
        let holder_ms: Option<i64> = row.try_get(1).map_err(|e| map(e, Some(key)))?;
        Ok(match fence {
            Some(fence) => Reply::Won(u64::try_from(fence).map_err(|_| {
                LockError::permanent(
                    crate::error::BACKEND,
                    format!("negative fence {fence} in the lease table"),
                )
            })?),
            None => Reply::Busy(
                holder_ms
                    .and_then(|ms| u64::try_from(ms).ok())
                    .map(Duration::from_millis),
            ),
        })
    }

    /// One complete attempt of a waiting acquire: never cut off by the caller's deadline (the
    /// request timeout bounds it), so its answer is always used.
    async fn wait_attempt(
        &self,
        key: &LockKey,
        ttl: Duration,
        deadline: &Deadline,
        waiting: bool,
    ) -> Result<Result<Lease, Option<Duration>>, LockError> {
        let attempt = Attempt::start(ttl)?;
        let sent_at = attempt.sent_at();
        // A waiter that listens asks for a notification for as long as it may still wait (at
        // most a minute; later attempts ask again).
        let wanted_for = if waiting && self.inner.listener.is_some() {
            deadline.at().map_or(MAX_WANTED, |at| {
                at.saturating_duration_since(sent_at.instant())
                    .min(MAX_WANTED)
            })
        } else {
            Duration::ZERO
        };
        let reply = self.attempt(key, &attempt, wanted_for).await?;
        Ok(attempt.outcome(key, reply))
    }
}

impl PostgresLock {
    /// Clears `key`'s holder if it is `token`, and notifies waiters.
    async fn release_token(&self, key: &LockKey, token: LeaseToken) -> Result<bool, LockError> {
        let statements = &self.inner.statements;
        let released = within(self.inner.request_timeout, async {
            on_pool!(self, exec => sqlx::query(&statements.release)
                .persistent(statements.persistent)
                .bind(key.as_str())
                .bind(token.to_bytes().as_slice())
                .bind(self.inner.channel.as_str())
                .fetch_optional(exec)
                .await)
        })
        .await
        .map_err(|e| map(e, Some(key)))?;
        Ok(released.is_some())
    }
}

#[async_trait]
impl DistributedLock for PostgresLock {
    /// One statement (an upsert that only takes a free or expired row).
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped after the statement reached the server, the statement may
    /// still commit; the token is then released at once in the background (as after a reply
    /// timeout or a lost connection), so no lock is left held by nobody.
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        if let Some(advisory) = &self.advisory {
            return advisory.try_acquire(key, ttl).await;
        }
        let attempt = Attempt::start(ttl)?;
        let reply = self.attempt(key, &attempt, Duration::ZERO).await?;
        Ok(attempt.outcome(key, reply).ok())
    }

    /// Tries once; if the key is held, registers for the key's release notification, tries
    /// again, then retries on each notification, when the holder's expiry passes, and on a
    /// jittered fallback timer; never past the deadline. Transient failures are retried until
    /// the deadline.
    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        if let Some(advisory) = &self.advisory {
            return advisory.acquire(key, ttl, wait).await;
        }
        let ttl = ttl::check(ttl)?;
        let deadline = Deadline::after(wait);
        let mut failure = None;
        match self.wait_attempt(key, ttl, &deadline, false).await {
            Ok(Ok(lease)) => return Ok(lease),
            Ok(Err(_)) => {}
            Err(error) => keep_waiting(error, &mut failure)?,
        }
        let listener = self.inner.listener.as_ref();
        let waiter = listener.map(|l| l.wakers.register(key.as_str()));
        let waiter = waiter.as_ref();
        WAIT.run(
            key,
            &deadline,
            failure,
            move || async move {
                match listener {
                    None => false,
                    Some(l) if l.is_listening() => true,
                    Some(l) => l.ready().await,
                }
            },
            || waiter.map(backend::WakeHandle::next_wake),
            || self.wait_attempt(key, ttl, &deadline, true),
        )
        .await
    }

    /// One `UPDATE`, only while the token holds an unexpired lease.
    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        leasehold::backend::check_kind(lease, &[leasehold::LeaseKind::Exclusive])?;
        if let Some(advisory) = &self.advisory {
            return advisory.extend(lease, ttl).await;
        }
        let ttl = ttl::check(ttl)?;
        let sent_at = SentAt::now();
        let statements = &self.inner.statements;
        let done = within(self.inner.request_timeout, async {
            on_pool!(self, exec => sqlx::query(&statements.extend)
                .persistent(statements.persistent)
                .bind(lease.key().as_str())
                .bind(lease.token().to_bytes().as_slice())
                .bind(ttl::whole_millis(ttl) as f64)
                .execute(exec)
                .await)
        })
        .await
        .map_err(|e| map(e, Some(lease.key())))?;
        let extended = done.rows_affected() == 1;
        if extended {
            backend::renew(lease, ttl, sent_at);
        }
        Ok(extended)
    }

    /// One statement: clears the holder (the row and its fence stay) and notifies waiters.
    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        leasehold::backend::check_kind(&lease, &[leasehold::LeaseKind::Exclusive])?;
        if let Some(advisory) = &self.advisory {
            return advisory.release(lease).await;
        }
        self.release_token(lease.key(), lease.token()).await
    }

    /// With notified waiting: a watch on the key's notifications (a forced release always
    /// notifies).
    fn watch_releases(&self, key: &LockKey) -> Option<Box<dyn ReleaseWatch>> {
        if let Some(advisory) = &self.advisory {
            return advisory.watch_releases(key);
        }
        let listener = self.inner.listener.as_ref()?;
        Some(Box::new(listener.watch_holder(key.as_str())))
    }

    fn capabilities(&self) -> Capabilities {
        if let Some(advisory) = &self.advisory {
            return advisory.capabilities();
        }
        Capabilities::new()
            .with_notified_wait(self.inner.listener.is_some())
            .with_server_clock(true)
            .with_durable_fences(true)
    }
}
