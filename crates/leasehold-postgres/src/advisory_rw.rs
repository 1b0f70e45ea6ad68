//! [`DistributedRwLock`] for [`PostgresAdvisoryLock`]: a reader holds
//! `pg_advisory_xact_lock_shared`, a writer `pg_advisory_xact_lock`, each in an open
//! transaction of its own, as the mutex does.
//!
//! The lock is the key's 64 advisory bits in PostgreSQL's two-key form (`(int4, int4)`), a lock
//! space apart from the single-`bigint` one the mutex uses, so a key's read/write lock and its
//! mutex never meet. PostgreSQL's lock queue is first come, first served: a request that
//! conflicts with one already waiting waits behind it (and a `try` of it fails), so a waiting
//! writer holds new readers back. That place in the queue is the writer's mark: a writer waits
//! in statements of at most [`WRITER_MARK_TTL`], so a writer whose process froze leaves the
//! queue within that; a dropped wait is cancelled at once (`pg_cancel_backend`).

use std::time::{Duration, Instant};

use leasehold::{
    async_trait,
    backend::{
        self, ttl,
        wait::{jitter, keep_waiting, Deadline},
        WRITER_MARK_TTL,
    },
    DistributedRwLock, Lease, LeaseKind, LeaseToken, LockError, LockKey,
};
use sqlx::{PgPool, Postgres, Transaction};

use crate::{
    advisory::{millis, millis_at_least, RETRY_AFTER_FAILURE, SERVER_WAIT},
    advisory_lock::PostgresAdvisoryLock,
    error::{map, within},
};

/// Cancels the statement of backend `$1` if it waits for an advisory lock (and only then: the
/// connection may have moved on).
const CANCEL: &str = "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
     WHERE pid = $1 AND wait_event_type = 'Lock' AND wait_event = 'advisory'";

/// Which side of the lock an attempt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Read,
    Write,
}

impl Side {
    fn kind(self) -> LeaseKind {
        match self {
            Self::Read => LeaseKind::Read,
            Self::Write => LeaseKind::Write,
        }
    }

    /// `$1`, `$2` the two halves of the advisory key, `$3` the ttl: whether the lock was taken,
    /// and the backend's pid (to cancel a wait that follows).
    fn try_sql(self) -> &'static str {
        match self {
            Self::Read => {
                "SELECT pg_try_advisory_xact_lock_shared($1, $2),
                        set_config('idle_in_transaction_session_timeout', $3, true),
                        pg_backend_pid()"
            }
            Self::Write => {
                "SELECT pg_try_advisory_xact_lock($1, $2),
                        set_config('idle_in_transaction_session_timeout', $3, true),
                        pg_backend_pid()"
            }
        }
    }

    /// As `try_sql`, waiting in the queue for at most lock_timeout (`$4`); the innermost
    /// subquery runs first.
    fn wait_sql(self) -> &'static str {
        match self {
            Self::Read => {
                "SELECT set_config('idle_in_transaction_session_timeout', $3, true)
                 FROM (SELECT pg_advisory_xact_lock_shared($1, $2)
                       FROM (SELECT set_config('lock_timeout', $4, true)) AS limited) AS locked"
            }
            Self::Write => {
                "SELECT set_config('idle_in_transaction_session_timeout', $3, true)
                 FROM (SELECT pg_advisory_xact_lock($1, $2)
                       FROM (SELECT set_config('lock_timeout', $4, true)) AS limited) AS locked"
            }
        }
    }

    /// The longest one statement waits: a writer's place in the queue is its mark, so it is
    /// given up (and taken again) within the mark's ttl.
    fn longest_wait(self) -> Duration {
        match self {
            Self::Read => SERVER_WAIT,
            Self::Write => WRITER_MARK_TTL,
        }
    }
}

/// Cancels, when dropped armed, the waiting statement of backend `pid`: a dropped waiting
/// writer then leaves the queue at once instead of at its lock_timeout.
struct CancelOnDrop {
    fences: PgPool,
    pid: Option<i32>,
    timeout: Duration,
}

impl CancelOnDrop {
    fn disarm(mut self) {
        self.pid = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(pid) = self.pid.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (fences, timeout) = (self.fences.clone(), self.timeout);
        runtime.spawn(async move {
            let cancelled = within(timeout, sqlx::query(CANCEL).bind(pid).execute(&fences)).await;
            if let Err(error) = cancelled {
                tracing::debug!(%error, "could not cancel a dropped advisory wait");
            }
        });
    }
}

fn refuse_pooler(operation: &'static str) -> LockError {
    LockError::Unsupported {
        operation,
        backend: "the postgres advisory strategy behind a transaction pooler",
        reason: "a waiting writer's place is a statement waiting in the server's lock queue, \
                 which a pooler cannot keep; use PostgresLock (the lease table) there",
    }
}

impl PostgresAdvisoryLock {
    /// The two halves of the key's advisory bits.
    fn rw_key(&self, key: &LockKey) -> (i32, i32) {
        let bits = self.advisory.key_of(key);
        #[allow(clippy::cast_possible_truncation)]
        ((bits >> 32) as i32, bits as i32)
    }

    /// One try and, while the deadline allows, one wait in the queue: the transaction holding
    /// the lock, or `None`.
    async fn rw_once(
        &self,
        side: Side,
        key: &LockKey,
        ttl: Duration,
        deadline: &Deadline,
    ) -> Result<Option<Transaction<'static, Postgres>>, LockError> {
        let (inner, advisory) = (&self.inner, &self.advisory);
        let persistent = inner.statements.persistent;
        let (high, low) = self.rw_key(key);
        // A transaction dropped unfinished (timeout, cancelled future) is rolled back, which
        // frees whatever it locked.
        let tried = within(advisory.request_timeout, async {
            let mut tx = inner.pool.begin().await?;
            let (got, _, pid): (bool, String, i32) = sqlx::query_as(side.try_sql())
                .persistent(persistent)
                .bind(high)
                .bind(low)
                .bind(millis(ttl))
                .fetch_one(&mut *tx)
                .await?;
            Ok((tx, got, pid))
        });
        let (mut tx, got, pid) = tried.await.map_err(|e| map(e, Some(key)))?;
        if got {
            return Ok(Some(tx));
        }
        let left = match deadline.at() {
            None => side.longest_wait(),
            Some(at) => at.saturating_duration_since(Instant::now()),
        };
        if left.is_zero() {
            return Ok(None);
        }
        let server_wait = left.min(side.longest_wait());
        let cancel = CancelOnDrop {
            fences: advisory.fences.clone(),
            pid: Some(pid),
            timeout: advisory.request_timeout,
        };
        let waited = within(
            server_wait + advisory.request_timeout,
            sqlx::query(side.wait_sql())
                .persistent(persistent)
                .bind(high)
                .bind(low)
                .bind(millis(ttl))
                .bind(millis_at_least(server_wait))
                .execute(&mut *tx),
        )
        .await;
        cancel.disarm();
        match waited {
            Ok(_) => Ok(Some(tx)),
            // lock_timeout (55P03) or a cancel (57014): the lock stayed held.
            Err(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("55P03" | "57014")) =>
            {
                Ok(None)
            }
            Err(error) => Err(map(error, Some(key))),
        }
    }

    /// The lease, once `tx` holds the lock: the fence drawn from the key's read/write counter,
    /// then the proof that the session outlived the draw (see the mutex's `fence_for`).
    async fn rw_lease(
        &self,
        side: Side,
        key: &LockKey,
        token: LeaseToken,
        ttl: Duration,
        mut tx: Transaction<'static, Postgres>,
    ) -> Result<Lease, LockError> {
        let (inner, advisory) = (&self.inner, &self.advisory);
        let fence = advisory
            .draw_fence(&inner.statements, &inner.held.advisory_rw_fence, key)
            .await?;
        let touched_at = advisory.prove(&inner.statements, ttl, &mut tx).await?;
        let lease = backend::lease_as(side.kind(), key.clone(), token, fence, ttl, touched_at);
        advisory.keep(token, tx, touched_at.instant() + ttl);
        Ok(lease)
    }

    async fn rw_try(
        &self,
        side: Side,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let ttl = ttl::check(ttl)?;
        if !self.inner.statements.persistent {
            return Err(refuse_pooler("try_acquire_read/try_acquire_write"));
        }
        self.advisory.forget_abandoned();
        let token = LeaseToken::random()?;
        match self
            .rw_once(side, key, ttl, &Deadline::after(Duration::ZERO))
            .await?
        {
            // A failure drops (rolls back) the transaction, and with it the lock.
            Some(tx) => self.rw_lease(side, key, token, ttl, tx).await.map(Some),
            None => Ok(None),
        }
    }

    /// Transient failures (a pool timeout, a dropped connection) are retried until the
    /// deadline, as the trait says.
    async fn rw_wait(
        &self,
        side: Side,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let ttl = ttl::check(ttl)?;
        if !self.inner.statements.persistent {
            return Err(refuse_pooler("acquire_read/acquire_write"));
        }
        self.advisory.forget_abandoned();
        let deadline = Deadline::after(wait);
        let token = LeaseToken::random()?;
        let mut failure = None;
        loop {
            let attempt = match self.rw_once(side, key, ttl, &deadline).await {
                Ok(Some(tx)) => self.rw_lease(side, key, token, ttl, tx).await.map(Some),
                other => other.map(|_| None),
            };
            match attempt {
                Ok(Some(lease)) => return Ok(lease),
                // The key was held all along.
                Ok(None) => failure = None,
                Err(error) => keep_waiting(error, &mut failure)?,
            }
            if deadline.has_passed() {
                return Err(failure.unwrap_or_else(|| deadline.timeout(key)));
            }
            if failure.is_some() {
                let pause = deadline.cap(Instant::now() + jitter(RETRY_AFTER_FAILURE));
                tokio::time::sleep_until(pause.into()).await;
            }
        }
    }
}

/// Shared and exclusive advisory locks in the server's lock queue (first come, first served,
/// so writer-preferring: see the crate docs). Not behind a transaction pooler
/// ([`LockError::Unsupported`]): a waiting writer's place in the queue is a statement the
/// pooler cannot keep. No semaphore: PostgreSQL has no counted advisory lock.
///
/// # Cancel safety
///
/// A dropped attempt's transaction is rolled back, freeing whatever it locked; a dropped wait
/// is cancelled on the server, so a waiting writer's place goes with it.
#[async_trait]
impl DistributedRwLock for PostgresAdvisoryLock {
    async fn try_acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        self.rw_try(Side::Read, key, ttl).await
    }

    async fn try_acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        self.rw_try(Side::Write, key, ttl).await
    }

    async fn acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        self.rw_wait(Side::Read, key, ttl, wait).await
    }

    async fn acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        self.rw_wait(Side::Write, key, ttl, wait).await
    }

    /// One statement on the holder's connection, as for the mutex.
    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        backend::check_kind(lease, &[LeaseKind::Read, LeaseKind::Write])?;
        let ttl = ttl::check(ttl)?;
        self.advisory
            .extend(&self.inner.statements, lease, ttl)
            .await
    }

    /// Ends the holder's transaction, which frees its hold.
    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        backend::check_kind(&lease, &[LeaseKind::Read, LeaseKind::Write])?;
        self.advisory.release(&lease).await
    }

    fn capabilities(&self) -> leasehold::Capabilities {
        leasehold::Capabilities::new()
            .with_notified_wait(true)
            .with_server_clock(true)
            .with_durable_fences(true)
            .with_lost_with_connection(true)
    }
}
