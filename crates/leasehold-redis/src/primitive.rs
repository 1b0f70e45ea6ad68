//! What the read/write lock and the semaphore share on Redis: one script run per attempt with
//! its cleanup armed, and the notified wait.

use std::{future::Future, time::Duration};

use leasehold::{
    backend::{
        wait::{keep_waiting, Deadline, NotifiedWait, Outcome},
        Reply,
    },
    LockError, LockKey,
};
use redis::{Cmd, RedisError};

use crate::{
    conn::Conn,
    error::{is_fence_overflow, map, unexpected_reply},
    lock::RedisLock,
    scripts::{self, Lua},
    subscriber::Watch,
};

/// The wait of read/write locks and semaphores: a waiting writer refreshes its mark on every
/// attempt, and attempts are at most two fallbacks apart (one waiting for the subscription,
/// one asleep), well inside [`WRITER_MARK_REFRESH`](leasehold::backend::WRITER_MARK_REFRESH).
pub(crate) const WAIT: NotifiedWait = NotifiedWait {
    fallback: Duration::from_millis(300),
    poll: Duration::from_millis(50),
};

/// The errors of an acquire script: an overflowing fence counter, an acquire the client sent
/// twice (transient: its cleanup releases the token, and the caller may try again), the rest
/// as every Redis error.
pub(crate) fn acquire_error(key: &LockKey, error: RedisError) -> LockError {
    if is_fence_overflow(&error) {
        return LockError::FenceOverflow { key: key.clone() };
    }
    if error.to_string().contains("acquire sent twice") {
        return LockError::transient(crate::error::BACKEND, error);
    }
    map(error)
}

/// An acquire script's reply: `{1, fence}` won, `{0, ms}` busy (for that long if known).
pub(crate) fn reply(what: &str, reply: &[i64]) -> Result<Reply, LockError> {
    match reply {
        [1, fence] => u64::try_from(*fence)
            .map(Reply::Won)
            .map_err(|_| unexpected_reply(what, reply)),
        [0, ms] => Ok(Reply::Busy(
            // 0 ms: it ends now; retry at once rather than after a fallback period.
            u64::try_from(*ms)
                .ok()
                .map(|ms| Duration::from_millis(ms.max(1))),
        )),
        _ => Err(unexpected_reply(what, reply)),
    }
}

impl RedisLock {
    /// Runs `eval` (of `script`, first key `first`) on `conn`, bounded by one call's timeout.
    pub(crate) async fn run_script<T: redis::FromRedisValue>(
        &self,
        conn: &mut Conn,
        script: &Lua,
        first: &str,
        eval: &Cmd,
    ) -> Result<T, RedisError> {
        scripts::run(conn, script, first, eval, self.inner.call_timeout).await
    }

    /// The notified wait of a read/write lock or semaphore on `channel` (readers: `every`), after a first
    /// `attempt` was refused; every message wakes every waiter when `every` is set, one waiter
    /// otherwise.
    pub(crate) async fn wait_on<A, AFut>(
        &self,
        key: &LockKey,
        channel: &str,
        every: bool,
        deadline: &Deadline,
        mut attempt: A,
    ) -> Result<leasehold::Lease, LockError>
    where
        A: FnMut() -> AFut,
        AFut: Future<Output = Result<Outcome, LockError>>,
    {
        let mut failure = None;
        match attempt().await {
            Ok(Ok(lease)) => return Ok(lease),
            Ok(Err(_)) => {}
            Err(error) => keep_waiting(error, &mut failure)?,
        }
        let watch = self.inner.subscriber.as_ref().map(|subscriber| {
            if every {
                subscriber.watch_every(channel)
            } else {
                subscriber.watch(channel)
            }
        });
        let watch = watch.as_ref();
        WAIT.run(
            key,
            deadline,
            failure,
            move || async move {
                match watch {
                    Some(watch) => watch.subscribed().await,
                    None => false,
                }
            },
            || watch.map(Watch::next_wake),
            attempt,
        )
        .await
    }
}
