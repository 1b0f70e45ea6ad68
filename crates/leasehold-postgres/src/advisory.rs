//! The advisory strategy: a held lease is an open transaction holding
//! `pg_advisory_xact_lock` on a connection of its own.
//!
//! `Lease` is plain data, so the transactions live here, in a map keyed by token. The server
//! ends a holder's session when it idles for the ttl (`idle_in_transaction_session_timeout`),
//! which frees the lock even if this process hangs or is cut off; extend runs a statement on the
//! connection (resetting that timer); release ends the transaction.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use leasehold::{
    backend::{
        self, ttl,
        wait::{jitter, keep_waiting, Deadline},
        SentAt,
    },
    Lease, LeaseToken, LockError, LockKey,
};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};

use crate::{
    error::{map, within},
    sql::Statements,
};

/// How long past its ttl a forgotten lease's connection is kept before it is dropped here (the
/// server has long ended its session by then).
const FORGOTTEN_AFTER: Duration = Duration::from_secs(5);
/// The longest one statement waits in the server's lock queue; longer waits take several, so a
/// server that stopped answering is noticed within this plus the request timeout.
pub(crate) const SERVER_WAIT: Duration = Duration::from_secs(10);
/// The pause before retrying after a transient failure (jittered down to half).
pub(crate) const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(100);

/// The 64-bit advisory key of `key`: the first 8 bytes (big-endian) of
/// SHA-256("leasehold" NUL namespace NUL key). Two keys that collide only contend with each
/// other; they can never both be held by two holders.
pub(crate) fn advisory_key(namespace: &str, key: &LockKey) -> i64 {
    let digest = Sha256::new()
        .chain_update(b"leasehold\0")
        .chain_update(namespace.as_bytes())
        .chain_update(b"\0")
        .chain_update(key.as_str().as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

struct Held {
    tx: Transaction<'static, Postgres>,
    /// Our conservative view of when the server ends the session.
    ends: Instant,
}

/// A held lease's transaction. Behind an async mutex so that an `extend` cut short (its future
/// dropped mid-statement) leaves the transaction where it is, instead of dropping it and with it
/// the lock.
type Slot = Arc<tokio::sync::Mutex<Held>>;

/// A user's own mapping from lock keys to advisory keys (see
/// [`PostgresLockBuilder::advisory_keys`](crate::PostgresLockBuilder::advisory_keys)).
pub(crate) type KeyFn = Arc<dyn Fn(&LockKey) -> i64 + Send + Sync>;

/// The transactions of the leases this process holds.
pub(crate) struct Advisory {
    held: Mutex<HashMap<LeaseToken, Slot>>,
    /// Mixed into the default key hash: the lease table's qualified name.
    namespace: String,
    custom: Option<KeyFn>,
    pub(crate) request_timeout: Duration,
    /// Where fences are drawn: a pool of its own (half the lock pool's size, at least two), so that drawing a
    /// fence never waits for the connections that holders keep.
    pub(crate) fences: PgPool,
}

impl std::fmt::Debug for Advisory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advisory")
            .field("held", &self.held().len())
            .finish()
    }
}

pub(crate) fn millis(duration: Duration) -> String {
    format!("{}ms", ttl::whole_millis(duration).max(1))
}

/// A server-side timeout that ends no earlier than `duration` from now (rounded up).
pub(crate) fn millis_at_least(duration: Duration) -> String {
    format!("{}ms", ttl::whole_millis(duration) + 1)
}

impl Advisory {
    pub(crate) fn new(
        namespace: String,
        custom: Option<KeyFn>,
        request_timeout: Duration,
        fences: PgPool,
    ) -> Self {
        Self {
            held: Mutex::default(),
            namespace,
            custom,
            request_timeout,
            fences,
        }
    }

    /// Opens the fence pool's first connection (kept open: the pool has no idle timeout).
    pub(crate) async fn warm_up(&self) -> Result<(), LockError> {
        within(self.request_timeout, self.fences.acquire())
            .await
            .map(drop)
            .map_err(|e| map(e, None))
    }

    /// The lease's fence, once `tx` holds the lock: the next value, drawn by a committed and
    /// flushed statement on the fence pool, then a statement on `tx` that proves its session
    /// (and so the lock) outlived the draw. Without that proof a holder whose session ended
    /// before its draw (killed, timed out while the draw waited) would carry a fence above
    /// the next holder's. The proof also restarts the server's idle countdown: validity counts
    /// from the returned stamp, taken before it.
    ///
    /// An error leaves `tx` to the caller, who drops it (rolling back, freeing the lock).
    async fn fence_for(
        &self,
        statements: &Statements,
        key: &LockKey,
        ttl: Duration,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<(u64, SentAt), LockError> {
        let fence = self
            .draw_fence(statements, &statements.advisory_fence, key)
            .await?;
        let touched_at = self.prove(statements, ttl, tx).await?;
        Ok((fence, touched_at))
    }

    /// The statement on `tx`, once its fence is drawn, that proves its session (and so its
    /// lock) outlived the draw and restarts the server's idle countdown: the stamp, taken
    /// before it, validity counts from.
    pub(crate) async fn prove(
        &self,
        statements: &Statements,
        ttl: Duration,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<SentAt, LockError> {
        let touched_at = SentAt::now();
        within(
            self.request_timeout,
            sqlx::query(&statements.advisory_extend)
                .persistent(statements.persistent)
                .bind(millis(ttl))
                .execute(&mut **tx),
        )
        .await
        .map_err(|e| {
            // Whatever ended the session (a timeout while the draw waited is FATAL 25P03),
            // the attempt failed, not the backend: a waiting acquire goes on.
            LockError::transient(
                crate::error::BACKEND,
                format!("the lock's session ended before its fence was handed out: {e}"),
            )
        })?;
        Ok(touched_at)
    }

    /// The next fence, by `draw` (a committed and flushed statement, `$1` the key) on the fence
    /// pool.
    pub(crate) async fn draw_fence(
        &self,
        statements: &Statements,
        draw: &str,
        key: &LockKey,
    ) -> Result<u64, LockError> {
        let query = || {
            sqlx::query_as::<_, (i64, String)>(draw)
                .persistent(statements.persistent)
                .bind(key.as_str())
        };
        let drawn = within(self.request_timeout, async {
            if statements.persistent {
                return query().fetch_one(&self.fences).await;
            }
            // Behind a transaction pooler an unnamed statement and its commit must share one
            // server connection: an explicit transaction keeps them together.
            let mut tx = self.fences.begin().await?;
            let row = query().fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(row)
        });
        let (fence, _) = drawn.await.map_err(|e| {
            // The pool may have lost its connection (a restart): open one again in the
            // background while the server has room, rather than at the next draw.
            let fences = self.fences.clone();
            tokio::spawn(async move { drop(fences.acquire().await) });
            map(e, Some(key))
        })?;
        fence_of(fence)
    }

    pub(crate) fn key_of(&self, key: &LockKey) -> i64 {
        match &self.custom {
            Some(custom) => custom(key),
            None => advisory_key(&self.namespace, key),
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<LeaseToken, Slot>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the transactions of leases that were never released and whose session the server
    /// has ended by now.
    pub(crate) fn forget_abandoned(&self) {
        let now = Instant::now();
        // A slot in use (locked) is not abandoned.
        self.held().retain(|_, slot| {
            slot.try_lock()
                .map_or(true, |held| held.ends + FORGOTTEN_AFTER > now)
        });
    }

    pub(crate) fn keep(
        &self,
        token: LeaseToken,
        tx: Transaction<'static, Postgres>,
        ends: Instant,
    ) {
        let slot = Arc::new(tokio::sync::Mutex::new(Held { tx, ends }));
        self.held().insert(token, slot);
    }

    pub(crate) async fn try_acquire(
        &self,
        pool: &PgPool,
        statements: &Statements,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        self.forget_abandoned();
        let token = LeaseToken::random()?;
        // A transaction dropped unfinished (timeout, cancelled future) is rolled back, which
        // frees whatever it locked; if even that cannot reach the server, the server ends the
        // idle session after the ttl (idle_in_transaction_session_timeout).
        let attempt = within(self.request_timeout, async {
            let mut tx = pool.begin().await?;
            let (got, _): (bool, String) = sqlx::query_as(&statements.advisory_try)
                .persistent(statements.persistent)
                .bind(self.key_of(key))
                .bind(millis(ttl))
                .fetch_one(&mut *tx)
                .await?;
            Ok((tx, got))
        });
        let (mut tx, got) = attempt.await.map_err(|e| map(e, Some(key)))?;
        if !got {
            // Ends the transaction; nothing was locked.
            return Ok(None);
        }
        // A failure drops (rolls back) the transaction, and with it the lock.
        let (fence, touched_at) = self.fence_for(statements, key, ttl, &mut tx).await?;
        let lease = backend::lease(key.clone(), token, fence, ttl, touched_at);
        self.keep(token, tx, touched_at.instant() + ttl);
        Ok(Some(lease))
    }

    /// Waits in the server's lock queue, bounded by `lock_timeout` (the time left, at most
    /// [`SERVER_WAIT`] per statement) and, for a server that does not answer, by that plus the
    /// request timeout. Transient failures (a pool timeout, a dropped connection) are retried
    /// until the deadline, as the trait says.
    ///
    /// A lock granted at the very moment `lock_timeout` fires still errors; the error aborts
    /// the transaction, and ending it releases whatever it held, so no orphan lock remains.
    pub(crate) async fn acquire(
        &self,
        pool: &PgPool,
        statements: &Statements,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        self.forget_abandoned();
        let deadline = Deadline::after(wait);
        let token = LeaseToken::random()?;
        let mut failure = None;
        loop {
            match self.queue_once(pool, statements, key, ttl, &deadline).await {
                // A failure drops (rolls back) the transaction, and with it the lock; the wait
                // goes on if the failure is transient.
                Ok(Some(mut tx)) => match self.fence_for(statements, key, ttl, &mut tx).await {
                    Ok((fence, touched_at)) => {
                        let lease = backend::lease(key.clone(), token, fence, ttl, touched_at);
                        self.keep(token, tx, touched_at.instant() + ttl);
                        return Ok(lease);
                    }
                    Err(error) => {
                        drop(tx);
                        keep_waiting(error, &mut failure)?;
                    }
                },
                // lock_timeout ended this statement's wait: the key was held all along.
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

    /// One statement in the server's lock queue: the transaction holding the lock; `None` when
    /// `lock_timeout` fired first.
    async fn queue_once(
        &self,
        pool: &PgPool,
        statements: &Statements,
        key: &LockKey,
        ttl: Duration,
        deadline: &Deadline,
    ) -> Result<Option<Transaction<'static, Postgres>>, LockError> {
        let server_wait = deadline.at().map_or(SERVER_WAIT, |at| {
            at.saturating_duration_since(Instant::now())
                .min(SERVER_WAIT)
        });
        let queued = within(server_wait + self.request_timeout, async {
            let mut tx = pool.begin().await?;
            let locked: Result<(String,), sqlx::Error> = sqlx::query_as(&statements.advisory_wait)
                .persistent(statements.persistent)
                .bind(self.key_of(key))
                .bind(millis(ttl))
                .bind(millis_at_least(server_wait))
                .fetch_one(&mut *tx)
                .await;
            Ok(locked.map(|_| tx))
        })
        .await
        .map_err(|e| map(e, Some(key)))?;
        // The server's idle countdown started when the lock was granted, somewhere during the
        // wait; the statement after the fence draw restarts it, and validity counts from then.
        match queued {
            Ok(granted) => Ok(Some(granted)),
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("55P03") => Ok(None),
            Err(error) => Err(map(error, Some(key))),
        }
    }

    /// Any failure on the lease's connection means its session (and so its lock) is gone.
    ///
    /// Cancel safe: the transaction stays in its slot if the future is dropped.
    pub(crate) async fn extend(
        &self,
        statements: &Statements,
        lease: &mut Lease,
        ttl: Duration,
    ) -> Result<bool, LockError> {
        let Some(slot) = self.held().get(&lease.token()).cloned() else {
            return Ok(false);
        };
        let mut held = slot.lock().await;
        let sent_at = SentAt::now();
        // A statement that outlives the request timeout is a transient failure: the slot (and
        // the session's lock) stay, the guard reports `Unknown` and retries; sqlx drains the
        // late reply before the connection's next statement.
        let reset = within(
            self.request_timeout,
            sqlx::query(&statements.advisory_extend)
                .persistent(statements.persistent)
                .bind(millis(ttl))
                .execute(&mut *held.tx),
        )
        .await;
        match reset {
            Ok(_) => {
                held.ends = sent_at.instant() + ttl;
                backend::renew(lease, ttl, sent_at);
                Ok(true)
            }
            Err(sqlx::Error::Io(error)) if error.kind() == std::io::ErrorKind::TimedOut => {
                Err(map(sqlx::Error::Io(error), Some(lease.key())))
            }
            Err(error) => {
                tracing::warn!(key = %lease.key(), %error, "advisory lock's connection failed: lease lost");
                drop(held);
                self.held().remove(&lease.token());
                Ok(false)
            }
        }
    }

    pub(crate) async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let Some(slot) = self.held().remove(&lease.token()) else {
            return Ok(false);
        };
        // Waits for an extend in flight on this lease, if any.
        let held = slot.lock().await;
        drop(held);
        let Some(held) = Arc::into_inner(slot) else {
            // Another task still holds the slot (an extend racing this release): the lock ends
            // when it lets go and the transaction is dropped.
            return Ok(true);
        };
        // Ending the transaction releases the xact lock; if the session is already gone, so is
        // the lock. A server that does not answer ends the idle session after the ttl.
        match within(self.request_timeout, held.into_inner().tx.rollback()).await {
            Ok(()) => Ok(true),
            Err(sqlx::Error::Io(error)) if error.kind() == std::io::ErrorKind::TimedOut => {
                Err(map(sqlx::Error::Io(error), Some(lease.key())))
            }
            Err(_) => Ok(false),
        }
    }
}

fn fence_of(fence: i64) -> Result<u64, LockError> {
    u64::try_from(fence).map_err(|_| {
        LockError::permanent(
            crate::error::BACKEND,
            format!("negative fence {fence} from the sequence"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisory_keys_are_stable_and_namespaced() {
        let key = LockKey::new("nightly-report").unwrap();
        assert_eq!(advisory_key("t", &key), advisory_key("t", &key));
        assert_ne!(advisory_key("t", &key), advisory_key("u", &key));
        // The NUL separator keeps ("ab", "c") apart from ("a", "bc").
        assert_ne!(
            advisory_key("ab", &LockKey::new("c").unwrap()),
            advisory_key("a", &LockKey::new("bc").unwrap())
        );
    }
}
