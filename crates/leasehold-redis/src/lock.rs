//! [`RedisLock`]: the `DistributedLock` implementation.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::{
    conn::Conn,
    error::{is_fence_overflow, map, unexpected_reply},
    handoffs::HandOffs,
    keys::LockNames,
    replicas::Replicas,
    scripts,
    subscriber::Subscriber,
};
use leasehold::{
    async_trait,
    backend::{
        self, ttl,
        wait::{release_abandoned, Deadline, InFlight},
        Attempt, Reply, SentAt,
    },
    Capabilities, DistributedLock, Lease, LeaseToken, LockError, LockKey, ReleaseWatch,
};

/// How long a waiting attempt marks the lock as wanted (renewed by the next attempt once half
/// of it is used up): more than twice the longest gap between a subscribed waiter's attempts
/// (one fallback period of sleep plus at most one waiting for the subscription).
const WANTED_MS: u64 = 2_000;

/// How long a release that finds the lock wanted reserves it for its waiters (in ms): long
/// enough for the release message to reach them and one of them to try (well under a
/// millisecond on a quiet machine, a few on a loaded one), short, because a waiter that went
/// away without a trace (its mark lasts up to [`WANTED_MS`]) makes newcomers wait this long
/// for nobody.
pub(crate) const HANDOFF_MS: u64 = 20;

/// What an attempt tells the acquire script about its caller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asking {
    /// A waiting caller whose lock channel is subscribed: counts itself in the lock's mark if
    /// the lock is held.
    pub(crate) wanted: bool,
    /// The mark counts this caller already.
    pub(crate) counted: bool,
    /// The caller has slept since it was refused: it may take a lock reserved for waiters.
    pub(crate) waited: bool,
}

impl Asking {
    /// `try_acquire`: once, no mark.
    const ONCE: Self = Self {
        wanted: false,
        counted: false,
        waited: false,
    };
}

/// Locks in one Redis server (or Cluster-compatible layout), through the `redis` crate.
///
/// Cheap to clone: clones share one multiplexed, auto-reconnecting connection and one pub/sub
/// subscriber connection (opened on the first wait). See the crate docs for the key layout,
/// the ACL it needs and what Redis persistence means for fences.
#[derive(Clone)]
pub struct RedisLock {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) conn: Conn,
    pub(crate) namespace: String,
    pub(crate) subscriber: Option<Subscriber>,
    /// `host:port` (never credentials), for `Debug`.
    pub(crate) server: String,
    /// The bound of one call: the response timeout plus one reconnect.
    pub(crate) call_timeout: Duration,
    /// Locks this client's releases just reserved for their waiters.
    pub(crate) handoffs: HandOffs,
    /// Acquires and extends wait for this many replicas (`wait_for_replicas`).
    pub(crate) replicas: Option<Replicas>,
}

impl fmt::Debug for RedisLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLock")
            .field("server", &self.inner.server)
            .field("namespace", &self.inner.namespace)
            .field("notified_wait", &self.inner.subscriber.is_some())
            .finish()
    }
}

impl RedisLock {
    pub(crate) fn names(&self, key: &LockKey) -> LockNames {
        LockNames::new(&self.inner.namespace, key)
    }

    /// The namespace every key of this lock lives under.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// One run of the acquire script, with cleanup if its outcome becomes unknown.
    ///
    /// `counted` (a waiter's, see `wait.rs`) is cleared when the script took the caller out of
    /// the lock's mark, also when the lock is given back for too few replicas.
    async fn attempt(
        &self,
        key: &LockKey,
        names: &LockNames,
        attempt: &Attempt,
        asking: Asking,
        counted: Option<&AtomicBool>,
    ) -> Result<Reply, LockError> {
        let token = attempt.token();
        let mut conn = self.write_connection().pinned();
        // Armed while the script is in flight: if the caller gives up or the outcome is
        // unknown, the token-checked release, sent on the same connection (pinned: on a
        // cluster, the same node connection even if a timeout replaces the cluster
        // connection meanwhile), runs after the script, so no ghost lock outlives it.
        let same_conn = conn.clone();
        let cleanup = InFlight::new(|| {
            let (lock, names, conn) = (self.clone(), names.clone(), same_conn.clone());
            release_abandoned(key.clone(), None, move || {
                let (lock, names, conn) = (lock.clone(), names.clone(), conn.clone());
                async move { lock.release_token_via(conn, &names, token).await }
            })
        });
        let (fence, wanted) = (names.fence(), names.wanted());
        let mut eval = scripts::evalsha(&scripts::ACQUIRE, &[&names.lock, &fence, &wanted]);
        eval.arg(token.to_hex())
            .arg(attempt.ttl_millis())
            // Only a waiter whose channel is subscribed counts itself in (see `wait.rs`).
            .arg(if asking.wanted { WANTED_MS } else { 0 })
            .arg(u8::from(asking.counted))
            .arg(u8::from(asking.waited));
        let limit = self.inner.call_timeout;
        let reply: Result<(Vec<i64>, Option<u32>), redis::RedisError> = match &self.inner.replicas {
            None => scripts::run(&mut conn, &scripts::ACQUIRE, &names.lock, &eval, limit)
                .await
                .map(|reply| (reply, None)),
            Some(replicas) => replicas
                .write(&mut conn, &scripts::ACQUIRE, &names.lock, eval, limit)
                .await
                .map(|(reply, acked)| (reply, Some(acked))),
        };
        let (reply, acked) = match reply {
            Ok(reply) => reply,
            // The cleanup stays armed whatever the error: a lost reply may hide a taken lock,
            // and a script that failed after its `SET` (a refused or overflowing `INCR`, a
            // fence counter of the wrong type) has taken it. The token-checked release is
            // harmless where nothing was taken.
            Err(error) if is_fence_overflow(&error) => {
                return Err(LockError::FenceOverflow { key: key.clone() })
            }
            Err(error) => return Err(map(error)),
        };
        if let (Some(replicas), Some(acked), [1, _]) =
            (&self.inner.replicas, acked, reply.as_slice())
        {
            if acked < replicas.count {
                // The script took a counted waiter out of the mark when it won.
                if let Some(counted) = counted {
                    counted.store(false, Ordering::Relaxed);
                }
                // Taken, but too few replicas have it to survive a failover: given back, on
                // the same connection (the cleanup's, should this future be dropped now).
                self.release_token_via(conn, names, token).await?;
                cleanup.disarm();
                return Err(LockError::transient(
                    crate::error::BACKEND,
                    format!(
                        "the lock was taken but only {acked} of {} replicas acknowledged it \
                         within {:?}, so it was released again",
                        replicas.count, replicas.timeout
                    ),
                ));
            }
        }
        cleanup.disarm();
        let busy = |pttl: i64| Reply::Busy(u64::try_from(pttl).ok().map(Duration::from_millis));
        match reply.as_slice() {
            [1, fence] => u64::try_from(*fence)
                .map(Reply::Won)
                .map_err(|_| unexpected_reply("acquire (negative fence)", &reply)),
            [0, pttl] => Ok(busy(*pttl)),
            _ => Err(unexpected_reply("acquire", &reply)),
        }
    }

    /// One complete attempt of a waiting acquire: never cut off by the caller's deadline
    /// (the response timeout bounds it), so its answer is always used.
    pub(crate) async fn wait_attempt(
        &self,
        key: &LockKey,
        names: &LockNames,
        ttl: Duration,
        asking: Asking,
        counted: &AtomicBool,
    ) -> Result<Result<Lease, Option<Duration>>, LockError> {
        let attempt = Attempt::start(ttl)?;
        let reply = self
            .attempt(key, names, &attempt, asking, Some(counted))
            .await?;
        Ok(attempt.outcome(key, reply))
    }

    /// The connection for acquires and extends: one of the pool when they wait for
    /// replicas (see `replicas.rs`), else the shared one.
    fn write_connection(&self) -> Conn {
        match &self.inner.replicas {
            Some(replicas) => replicas.connection(),
            None => self.inner.conn.clone(),
        }
    }

    pub(crate) async fn release_token(
        &self,
        names: &LockNames,
        token: LeaseToken,
    ) -> Result<bool, LockError> {
        self.release_token_via(self.inner.conn.clone(), names, token)
            .await
    }

    /// [`release_token`](Self::release_token) on `conn`.
    pub(crate) async fn release_token_via(
        &self,
        mut conn: Conn,
        names: &LockNames,
        token: LeaseToken,
    ) -> Result<bool, LockError> {
        let mut eval = scripts::evalsha(&scripts::RELEASE, &[&names.lock, &names.wanted()]);
        eval.arg(token.to_hex())
            .arg(names.channel())
            .arg(HANDOFF_MS)
            .arg(conn.publish_command());
        let released: i64 = scripts::run(
            &mut conn,
            &scripts::RELEASE,
            &names.lock,
            &eval,
            self.inner.call_timeout,
        )
        .await
        .map_err(map)?;
        if released == 2 {
            self.inner
                .handoffs
                .note(&names.lock, Duration::from_millis(HANDOFF_MS));
        }
        Ok(released >= 1)
    }
}

#[async_trait]
impl DistributedLock for RedisLock {
    /// One `EVALSHA` round trip. See the trait for the contract.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped while the script is in flight, a token-checked release is sent
    /// in the background, so the lock does not linger until its ttl.
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let attempt = Attempt::start(ttl)?;
        let names = self.names(key);
        let reply = self
            .attempt(key, &names, &attempt, Asking::ONCE, None)
            .await?;
        Ok(attempt.outcome(key, reply).ok())
    }

    /// Tries once (one round trip when the lock is free); if it is held, subscribes to the
    /// lock's release channel, tries again (so a release in between is not missed) and then
    /// retries on every release message, when the holder's ttl runs out, and on a jittered
    /// fallback timer, never past the deadline.
    ///
    /// Transient failures (a dropped connection, a reply timeout) are retried until the
    /// deadline; if it passes while the server is still failing, the last such error is
    /// returned instead of [`LockError::Timeout`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future while it waits leaves nothing behind; an attempt in flight is
    /// cleaned up as in [`try_acquire`](Self::try_acquire).
    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let ttl = ttl::check(ttl)?;
        self.wait_for(key, ttl, &Deadline::after(wait)).await
    }

    /// One `EVALSHA` round trip: compare token, then `PEXPIRE`.
    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        leasehold::backend::check_kind(lease, &[leasehold::LeaseKind::Exclusive])?;
        let ttl = ttl::check(ttl)?;
        let names = self.names(lease.key());
        let sent_at = SentAt::now();
        let mut conn = self.write_connection();
        let mut eval = scripts::evalsha(&scripts::EXTEND, &[&names.lock]);
        eval.arg(lease.token().to_hex()).arg(ttl::whole_millis(ttl));
        let limit = self.inner.call_timeout;
        let extended: i64 = match &self.inner.replicas {
            None => scripts::run(&mut conn, &scripts::EXTEND, &names.lock, &eval, limit)
                .await
                .map_err(map)?,
            Some(replicas) => {
                let (extended, acked): (i64, u32) = replicas
                    .write(&mut conn, &scripts::EXTEND, &names.lock, eval, limit)
                    .await
                    .map_err(map)?;
                if extended == 1 && acked < replicas.count {
                    // Too few replicas have the new ttl: the lease keeps its old validity. Not
                    // `Ok(false)`: the lock is still this lease's on the primary (a guard
                    // that took it as lost would stop extending and releasing it), only not
                    // safely longer.
                    return Err(LockError::transient(
                        crate::error::BACKEND,
                        format!(
                            "the lock was extended but only {acked} of {} replicas acknowledged it \
                             within {:?}; the lease keeps its earlier validity",
                            replicas.count, replicas.timeout
                        ),
                    ));
                }
                extended
            }
        };
        if extended == 1 {
            backend::renew(lease, ttl, sent_at);
        }
        Ok(extended == 1)
    }

    /// One `EVALSHA` round trip: compare token, then `DEL` and `PUBLISH` to wake waiters.
    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        leasehold::backend::check_kind(&lease, &[leasehold::LeaseKind::Exclusive])?;
        self.release_token(&self.names(lease.key()), lease.token())
            .await
    }

    /// A watch on the lock's release channel, on the shared subscriber connection (none when
    /// notified waiting is off). Its first wake comes once the channel is subscribed.
    fn watch_releases(&self, key: &LockKey) -> Option<Box<dyn ReleaseWatch>> {
        let subscriber = self.inner.subscriber.as_ref()?;
        Some(Box::new(
            subscriber.watch_holder(&self.names(key).channel()),
        ))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_notified_wait(self.inner.subscriber.is_some())
            .with_server_clock(true)
            .with_durable_fences(true)
    }
}
