//! [`DistributedRwLock`] for [`RedisLock`]: one `rw.lua` run per operation.

use std::time::Duration;

use leasehold::{
    async_trait,
    backend::{
        self, ttl,
        wait::{release_abandoned, Deadline, InFlight, Outcome},
        Attempt, SentAt, WRITER_MARK_TTL,
    },
    Capabilities, DistributedLock, DistributedRwLock, Lease, LeaseKind, LeaseToken, LockError,
    LockKey,
};

use crate::{
    conn::Conn,
    error::map,
    keys::LockNames,
    lock::RedisLock,
    primitive::{acquire_error, reply},
    scripts,
};

/// Which side an operation is on, as `rw.lua` names it.
fn side(kind: LeaseKind) -> &'static str {
    if kind == LeaseKind::Read {
        "read"
    } else {
        "write"
    }
}

impl RedisLock {
    /// One acquire attempt on `side`; a busy write sets or refreshes `mark` if given. Cleanup
    /// (a token-checked release on the same connection) stays armed until the reply is known.
    async fn rw_attempt(
        &self,
        key: &LockKey,
        names: &LockNames,
        conn: &Conn,
        kind: LeaseKind,
        ttl: Duration,
        mark: Option<&str>,
    ) -> Result<Outcome, LockError> {
        let attempt = Attempt::start(ttl)?;
        let token = attempt.token();
        // Pinned: the cleanup goes over the same connection as the script, behind it.
        let same = conn.pinned();
        let mut conn = same.clone();
        let cleanup = InFlight::new(|| {
            let (lock, names, conn) = (self.clone(), names.clone(), same.clone());
            release_abandoned(key.clone(), None, move || {
                let (lock, names, conn) = (lock.clone(), names.clone(), conn.clone());
                async move { lock.rw_release_via(conn, &names, kind, token).await }
            })
        });
        let keys = names.rw();
        let mut eval = scripts::evalsha(&scripts::RW, &[&keys[0], &keys[1], &keys[2], &keys[3]]);
        eval.arg(side(kind))
            .arg(token.to_hex())
            .arg(attempt.ttl_millis());
        if kind == LeaseKind::Write {
            eval.arg(mark.unwrap_or(""))
                .arg(ttl::whole_millis(WRITER_MARK_TTL));
        }
        let answer: Vec<i64> = self
            .run_script(&mut conn, &scripts::RW, &keys[0], &eval)
            .await
            .map_err(|error| acquire_error(key, error))?;
        cleanup.disarm();
        Ok(match reply("rw acquire", &answer)? {
            backend::Reply::Won(fence) => Ok(attempt.won_as(kind, key, fence)),
            backend::Reply::Busy(left) => Err(left),
        })
    }

    async fn rw_release_via(
        &self,
        mut conn: Conn,
        names: &LockNames,
        kind: LeaseKind,
        token: LeaseToken,
    ) -> Result<bool, LockError> {
        let keys = names.rw();
        let mut eval = scripts::evalsha(&scripts::RW, &[&keys[0], &keys[1], &keys[2], &keys[3]]);
        eval.arg("release")
            .arg(side(kind))
            .arg(token.to_hex())
            .arg(names.rw_channel())
            .arg(conn.publish_command());
        let released: i64 = self
            .run_script(&mut conn, &scripts::RW, &keys[0], &eval)
            .await
            .map_err(map)?;
        Ok(released == 1)
    }

    /// Takes a waiting writer's mark away, so readers go on at once.
    async fn rw_leave(&self, mut conn: Conn, names: &LockNames, mark: &str) {
        let keys = names.rw();
        let mut eval = scripts::evalsha(&scripts::RW, &[&keys[0], &keys[1], &keys[2], &keys[3]]);
        eval.arg("leave")
            .arg(mark)
            .arg(names.rw_channel())
            .arg(conn.publish_command());
        let left: Result<i64, _> = self
            .run_script(&mut conn, &scripts::RW, &keys[0], &eval)
            .await;
        if let Err(error) = left {
            tracing::debug!(%error, "a waiting writer's mark could not be removed; it ends with its ttl");
        }
    }

    async fn rw_wait(
        &self,
        key: &LockKey,
        kind: LeaseKind,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let ttl = ttl::check(ttl)?;
        let deadline = Deadline::after(wait);
        let names = self.names(key);
        // One connection for the attempts and the mark's removal, in that order.
        let conn = self.inner.conn.pinned();
        let mark = match kind {
            LeaseKind::Write => Some(LeaseToken::random()?.to_hex()),
            _ => None,
        };
        // Armed while the writer waits: dropped (the caller gave up, or the future was
        // dropped), it takes the mark away in the background.
        let leave = mark.as_ref().map(|mark| {
            InFlight::new(|| {
                let (lock, names, conn, mark) =
                    (self.clone(), names.clone(), conn.clone(), mark.clone());
                async move { lock.rw_leave(conn, &names, &mark).await }
            })
        });
        let outcome = self
            .wait_on(
                key,
                &names.rw_channel(),
                kind == LeaseKind::Read,
                &deadline,
                || self.rw_attempt(key, &names, &conn, kind, ttl, mark.as_deref()),
            )
            .await;
        if let (Some(leave), Ok(_)) = (leave, &outcome) {
            // The winning script removed the mark.
            leave.disarm();
        }
        outcome
    }
}

/// Readers in a sorted set scored by their end (server time), the writer in a string with a
/// ttl, waiting writers' marks in a sorted set, one fence counter; every operation one
/// `EVALSHA` of `rw.lua`. Waiting is notified (every release of the last reader or of the
/// writer, and every mark that goes, is published), with a fallback poll every 300 ms.
#[async_trait]
impl DistributedRwLock for RedisLock {
    async fn try_acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let names = self.names(key);
        let outcome = self
            .rw_attempt(key, &names, &self.inner.conn, LeaseKind::Read, ttl, None)
            .await?;
        Ok(outcome.ok())
    }

    async fn try_acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let names = self.names(key);
        let outcome = self
            .rw_attempt(key, &names, &self.inner.conn, LeaseKind::Write, ttl, None)
            .await?;
        Ok(outcome.ok())
    }

    async fn acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        self.rw_wait(key, LeaseKind::Read, ttl, wait).await
    }

    async fn acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        self.rw_wait(key, LeaseKind::Write, ttl, wait).await
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        backend::check_kind(lease, &[LeaseKind::Read, LeaseKind::Write])?;
        let ttl = ttl::check(ttl)?;
        let names = self.names(lease.key());
        let keys = names.rw();
        let sent_at = SentAt::now();
        let mut conn = self.inner.conn.clone();
        let mut eval = scripts::evalsha(&scripts::RW, &[&keys[0], &keys[1], &keys[2], &keys[3]]);
        eval.arg("extend")
            .arg(side(lease.kind()))
            .arg(lease.token().to_hex())
            .arg(ttl::whole_millis(ttl));
        let extended: i64 = self
            .run_script(&mut conn, &scripts::RW, &keys[0], &eval)
            .await
            .map_err(map)?;
        if extended == 1 {
            backend::renew(lease, ttl, sent_at);
        }
        Ok(extended == 1)
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        backend::check_kind(&lease, &[LeaseKind::Read, LeaseKind::Write])?;
        let names = self.names(lease.key());
        self.rw_release_via(self.inner.conn.clone(), &names, lease.kind(), lease.token())
            .await
    }

    fn capabilities(&self) -> Capabilities {
        DistributedLock::capabilities(self)
    }
}
