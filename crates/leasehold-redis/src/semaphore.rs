//! [`DistributedSemaphore`] for [`RedisLock`]: one `semaphore.lua` run per operation.

use std::time::Duration;

use leasehold::{
    async_trait,
    backend::{
        self, ttl,
        wait::{release_abandoned, Deadline, InFlight, Outcome},
        Attempt, SentAt,
    },
    Capabilities, DistributedLock, DistributedSemaphore, Lease, LeaseKind, LeaseToken, LockError,
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

impl RedisLock {
    /// One acquire attempt, with its cleanup armed until the reply is known.
    async fn permit_attempt(
        &self,
        key: &LockKey,
        names: &LockNames,
        conn: &Conn,
        max_holders: u32,
        ttl: Duration,
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
                async move { lock.permit_release_via(conn, &names, token).await }
            })
        });
        let keys = names.semaphore();
        let mut eval = scripts::evalsha(&scripts::SEMAPHORE, &[&keys[0], &keys[1], &keys[2]]);
        eval.arg("acquire")
            .arg(token.to_hex())
            .arg(attempt.ttl_millis())
            .arg(max_holders);
        let answer: Vec<i64> = self
            .run_script(&mut conn, &scripts::SEMAPHORE, &keys[0], &eval)
            .await
            .map_err(|error| acquire_error(key, error))?;
        cleanup.disarm();
        if let [2, stored] = answer.as_slice() {
            return Err(backend::limit_mismatch(
                key,
                max_holders,
                u64::try_from(*stored).unwrap_or_default(),
            ));
        }
        Ok(match reply("semaphore acquire", &answer)? {
            backend::Reply::Won(fence) => Ok(attempt.won_as(LeaseKind::Permit, key, fence)),
            backend::Reply::Busy(left) => Err(left),
        })
    }

    async fn permit_release_via(
        &self,
        mut conn: Conn,
        names: &LockNames,
        token: LeaseToken,
    ) -> Result<bool, LockError> {
        let keys = names.semaphore();
        let mut eval = scripts::evalsha(&scripts::SEMAPHORE, &[&keys[0], &keys[1], &keys[2]]);
        eval.arg("release")
            .arg(token.to_hex())
            .arg(names.semaphore_channel())
            .arg(conn.publish_command());
        let released: i64 = self
            .run_script(&mut conn, &scripts::SEMAPHORE, &keys[0], &eval)
            .await
            .map_err(map)?;
        Ok(released == 1)
    }
}

/// Permits in a sorted set scored by their end (server time), the limit beside it, one fence
/// counter; every operation one `EVALSHA` of `semaphore.lua`, whose cost grows with the
/// holders (a sorted set), not with the limit. Waiting is notified: each release wakes one
/// waiter, with a fallback poll every 300 ms.
#[async_trait]
impl DistributedSemaphore for RedisLock {
    async fn try_acquire(
        &self,
        key: &LockKey,
        max_holders: u32,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let max_holders = backend::check_max_holders(max_holders)?;
        let names = self.names(key);
        let outcome = self
            .permit_attempt(key, &names, &self.inner.conn, max_holders, ttl)
            .await?;
        Ok(outcome.ok())
    }

    async fn acquire(
        &self,
        key: &LockKey,
        max_holders: u32,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let max_holders = backend::check_max_holders(max_holders)?;
        let ttl = ttl::check(ttl)?;
        let deadline = Deadline::after(wait);
        let names = self.names(key);
        let conn = self.inner.conn.pinned();
        self.wait_on(key, &names.semaphore_channel(), false, &deadline, || {
            self.permit_attempt(key, &names, &conn, max_holders, ttl)
        })
        .await
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        backend::check_kind(lease, &[LeaseKind::Permit])?;
        let ttl = ttl::check(ttl)?;
        let names = self.names(lease.key());
        let keys = names.semaphore();
        let sent_at = SentAt::now();
        let mut conn = self.inner.conn.clone();
        let mut eval = scripts::evalsha(&scripts::SEMAPHORE, &[&keys[0], &keys[1], &keys[2]]);
        eval.arg("extend")
            .arg(lease.token().to_hex())
            .arg(ttl::whole_millis(ttl));
        let extended: i64 = self
            .run_script(&mut conn, &scripts::SEMAPHORE, &keys[0], &eval)
            .await
            .map_err(map)?;
        if extended == 1 {
            backend::renew(lease, ttl, sent_at);
        }
        Ok(extended == 1)
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        backend::check_kind(&lease, &[LeaseKind::Permit])?;
        let names = self.names(lease.key());
        self.permit_release_via(self.inner.conn.clone(), &names, lease.token())
            .await
    }

    fn capabilities(&self) -> Capabilities {
        DistributedLock::capabilities(self)
    }
}
