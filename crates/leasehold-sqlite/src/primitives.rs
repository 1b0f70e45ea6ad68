//! [`DistributedRwLock`] and [`DistributedSemaphore`] for [`SqliteLock`]: one `BEGIN
//! IMMEDIATE` transaction per acquire attempt over the holder rows of `holders.rs`.

use std::time::{Duration, Instant};

use leasehold::{
    async_trait,
    backend::{
        self, ttl,
        wait::{jitter, keep_waiting, Deadline, TaskReply},
        Attempt, SentAt, WRITER_MARK_TTL,
    },
    Capabilities, DistributedLock, DistributedRwLock, DistributedSemaphore, Lease, LeaseKind,
    LeaseToken, LockError, LockKey,
};
use sqlx::{Sqlite, Transaction};

use crate::{
    error::{is_busy, map},
    lock::SqliteLock,
};

/// How often a waiter re-checks (jittered down to half): also how often a waiting writer
/// refreshes its mark.
const POLL: Duration = Duration::from_millis(50);

/// The primitive a holder row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    Rw,
    Semaphore,
}

impl Space {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Rw => "rw",
            Self::Semaphore => "sem",
        }
    }
}

fn role(kind: LeaseKind) -> &'static str {
    match kind {
        LeaseKind::Read => "read",
        LeaseKind::Write => "write",
        _ => "permit",
    }
}

/// What one attempt asks for.
#[derive(Debug, Clone, Copy)]
enum Ask {
    Read,
    /// A write; a busy one sets or refreshes the mark if given.
    Write(Option<[u8; 16]>),
    Permit(u32),
}

/// An attempt's answer: won, busy (for that long if known), or another stored limit.
enum Answer {
    Won(u64),
    Busy(Option<Duration>),
    Limit(u32),
}

type Tx = Transaction<'static, Sqlite>;

impl SqliteLock {
    fn wake_name(space: Space, key: &LockKey) -> String {
        format!("{}:{}", space.as_str(), key.as_str())
    }

    /// Live rows of `role`: how many, and when the soonest and the latest end (ms from now).
    async fn live(
        &self,
        tx: &mut Tx,
        space: Space,
        key: &LockKey,
        now: i64,
        role: &str,
    ) -> Result<(i64, Option<i64>, Option<i64>), sqlx::Error> {
        sqlx::query_as(&self.inner.statements.holders.count)
            .bind(space.as_str())
            .bind(key.as_str())
            .bind(now)
            .bind(self.inner.clock.boot())
            .bind(role)
            .fetch_one(&mut **tx)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert(
        &self,
        tx: &mut Tx,
        space: Space,
        key: &LockKey,
        now: i64,
        role: &str,
        token: &[u8; 16],
        ends: i64,
        max_holders: Option<u32>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&self.inner.statements.holders.insert)
            .bind(space.as_str())
            .bind(key.as_str())
            .bind(now)
            .bind(self.inner.clock.boot())
            .bind(role)
            .bind(token.as_slice())
            .bind(ends)
            .bind(max_holders.map(i64::from))
            .execute(&mut **tx)
            .await
            .map(drop)
    }

    /// The body of one attempt, inside its transaction.
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        tx: &mut Tx,
        space: Space,
        key: &LockKey,
        ask: Ask,
        token: &[u8; 16],
        ttl_ms: i64,
        now: i64,
    ) -> Result<Answer, sqlx::Error> {
        let statements = &self.inner.statements.holders;
        let boot = self.inner.clock.boot();
        sqlx::query(&statements.prune)
            .bind(space.as_str())
            .bind(key.as_str())
            .bind(now)
            .bind(boot)
            .execute(&mut **tx)
            .await?;
        let ms = |left: Option<i64>| {
            left.and_then(|ms| u64::try_from(ms).ok())
                .map(Duration::from_millis)
        };
        let (role, max_holders) = match ask {
            Ask::Read => {
                let (writers, first, _) = self.live(tx, space, key, now, "write").await?;
                let (marks, first_mark, _) = self.live(tx, space, key, now, "mark").await?;
                if writers > 0 {
                    return Ok(Answer::Busy(ms(first)));
                }
                if marks > 0 {
                    return Ok(Answer::Busy(ms(first_mark)));
                }
                ("read", None)
            }
            Ask::Write(mark) => {
                let (writers, first, _) = self.live(tx, space, key, now, "write").await?;
                let (readers, _, last) = self.live(tx, space, key, now, "read").await?;
                if writers > 0 || readers > 0 {
                    if let Some(mark) = mark {
                        let ends = now
                            + i64::try_from(ttl::whole_millis(WRITER_MARK_TTL)).unwrap_or(i64::MAX);
                        self.insert(tx, space, key, now, "mark", &mark, ends, None)
                            .await?;
                    }
                    return Ok(Answer::Busy(ms(if writers > 0 { first } else { last })));
                }
                if let Some(mark) = mark {
                    sqlx::query(&statements.release)
                        .bind(space.as_str())
                        .bind(key.as_str())
                        .bind(now)
                        .bind(boot)
                        .bind("mark")
                        .bind(mark.as_slice())
                        .execute(&mut **tx)
                        .await?;
                }
                ("write", None)
            }
            Ask::Permit(max) => {
                let (held, first, _) = self.live(tx, space, key, now, "permit").await?;
                if held > 0 {
                    let stored: Option<i64> = sqlx::query_scalar(&statements.limit)
                        .bind(space.as_str())
                        .bind(key.as_str())
                        .bind(now)
                        .bind(boot)
                        .fetch_one(&mut **tx)
                        .await?;
                    if let Some(stored) = stored.filter(|s| *s != i64::from(max)) {
                        return Ok(Answer::Limit(u32::try_from(stored).unwrap_or(u32::MAX)));
                    }
                }
                if held >= i64::from(max) {
                    return Ok(Answer::Busy(ms(first)));
                }
                ("permit", Some(max))
            }
        };
        self.insert(tx, space, key, now, role, token, now + ttl_ms, max_holders)
            .await?;
        let fence: i64 = sqlx::query_scalar(&statements.fence)
            .bind(space.as_str())
            .bind(key.as_str())
            .fetch_one(&mut **tx)
            .await?;
        Ok(Answer::Won(u64::try_from(fence).unwrap_or_default()))
    }

    /// One attempt in one IMMEDIATE transaction, run to its end on a task of its own: a
    /// transaction is never cut off halfway (a dropped sqlx transaction leaves its connection
    /// in it for a while, holding the file's write lock). If the caller is gone by then, the
    /// task itself releases what it won and takes the mark away, on the same connection order
    /// as the transaction, so nothing lingers.
    async fn primitive_attempt(
        &self,
        space: Space,
        key: &LockKey,
        ask: Ask,
        ttl: Duration,
    ) -> Result<Result<Lease, Option<Duration>>, LockError> {
        let attempt = Attempt::start(ttl)?;
        let kind = match ask {
            Ask::Read => LeaseKind::Read,
            Ask::Write(_) => LeaseKind::Write,
            Ask::Permit(_) => LeaseKind::Permit,
        };
        let token = attempt.token();
        let ttl_ms = i64::try_from(attempt.ttl_millis()).unwrap_or(i64::MAX);
        let (answer, answered) = tokio::sync::oneshot::channel();
        let (lock, owned) = (self.clone(), key.clone());
        tokio::spawn(async move {
            let bytes = token.to_bytes();
            let decided = async {
                let mut tx = lock.inner.pool.begin_with("BEGIN IMMEDIATE").await?;
                // Read once the write lock is ours: a long busy wait must not leave the rows
                // (a mark above all) written already expired. The lease's validity counts from
                // the attempt's stamp, earlier still.
                let now = lock
                    .inner
                    .clock
                    .now_ms()
                    .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                let answer = lock
                    .decide(&mut tx, space, &owned, ask, &bytes, ttl_ms, now)
                    .await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(answer)
            }
            .await;
            let outcome_open = !decided.as_ref().map_or_else(is_busy, |_| true);
            let won = matches!(decided, Ok(Answer::Won(_)));
            if answer.send(decided).is_err() {
                if won || outcome_open {
                    let _ = lock.release_row(space, &owned, kind, token).await;
                }
                if let Ask::Write(Some(mark)) = ask {
                    let _ = lock.delete_row(space, &owned, "mark", &mark).await;
                }
            }
        });
        let (lock, owned) = (self.clone(), key.clone());
        let answered = TaskReply::new(answered, move |decided: Result<Answer, sqlx::Error>| {
            // Answered, but the caller was gone before it read the answer.
            let won = matches!(decided, Ok(Answer::Won(_)));
            if let (true, Ok(runtime)) = (won, tokio::runtime::Handle::try_current()) {
                drop(runtime.spawn(async move {
                    let _ = lock.release_row(space, &owned, kind, token).await;
                }));
            }
        });
        let decided = answered.get().await.ok_or_else(|| {
            LockError::transient(crate::error::BACKEND, "the attempt's task ended early")
        })?;
        match decided.map_err(|error| map(error, Some(key)))? {
            Answer::Won(fence) => Ok(Ok(attempt.won_as(kind, key, fence))),
            Answer::Busy(left) => Ok(Err(left)),
            Answer::Limit(stored) => Err(backend::limit_mismatch(key, ask_max(ask), stored.into())),
        }
    }

    async fn release_row(
        &self,
        space: Space,
        key: &LockKey,
        kind: LeaseKind,
        token: LeaseToken,
    ) -> Result<bool, LockError> {
        self.delete_row(space, key, role(kind), &token.to_bytes())
            .await
    }

    /// Deletes one holder row (a lease, or a mark); whether it was live. Wakes this process's
    /// waiters.
    async fn delete_row(
        &self,
        space: Space,
        key: &LockKey,
        role: &str,
        token: &[u8; 16],
    ) -> Result<bool, LockError> {
        let mut tries = 0;
        loop {
            let now = self.inner.clock.now_ms()?;
            let live: Result<Option<bool>, _> =
                sqlx::query_scalar(&self.inner.statements.holders.release)
                    .bind(space.as_str())
                    .bind(key.as_str())
                    .bind(now)
                    .bind(self.inner.clock.boot())
                    .bind(role)
                    .bind(token.as_slice())
                    .fetch_optional(&self.inner.pool)
                    .await;
            match live {
                Ok(live) => {
                    if live.is_some() {
                        self.inner.wakers.wake(&Self::wake_name(space, key));
                    }
                    return Ok(live.unwrap_or(false));
                }
                Err(error) if is_busy(&error) && tries < 3 => tries += 1,
                Err(error) => return Err(map(error, Some(key))),
            }
        }
    }

    async fn extend_row(
        &self,
        space: Space,
        lease: &mut Lease,
        ttl: Duration,
    ) -> Result<bool, LockError> {
        let ttl = ttl::check(ttl)?;
        let sent_at = SentAt::now();
        let mut tries = 0;
        loop {
            let now = self.inner.clock.now_ms()?;
            let done = sqlx::query(&self.inner.statements.holders.extend)
                .bind(space.as_str())
                .bind(lease.key().as_str())
                .bind(now)
                .bind(self.inner.clock.boot())
                .bind(role(lease.kind()))
                .bind(lease.token().to_bytes().as_slice())
                .bind(i64::try_from(ttl::whole_millis(ttl)).unwrap_or(i64::MAX))
                .execute(&self.inner.pool)
                .await;
            match done {
                Ok(done) => {
                    let extended = done.rows_affected() == 1;
                    if extended {
                        backend::renew(lease, ttl, sent_at);
                    }
                    return Ok(extended);
                }
                Err(error) if is_busy(&error) && tries < 3 => tries += 1,
                Err(error) => return Err(map(error, Some(lease.key()))),
            }
        }
    }

    /// Polls (every 25-50 ms, and when the holder's lease ends), woken at once by releases in
    /// this process; never past the deadline.
    async fn primitive_wait(
        &self,
        space: Space,
        key: &LockKey,
        ask: Ask,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let deadline = Deadline::after(wait);
        // Every release wakes every waiter of the key (one release may let many readers in).
        let waker = self
            .inner
            .wakers
            .register_holder(&Self::wake_name(space, key));
        let mut failure = None;
        loop {
            let wake = waker.next_wake();
            let left = match self.primitive_attempt(space, key, ask, ttl).await {
                Ok(Ok(lease)) => return Ok(lease),
                Ok(Err(left)) => {
                    failure = None;
                    left
                }
                Err(error) => {
                    keep_waiting(error, &mut failure)?;
                    None
                }
            };
            if deadline.has_passed() {
                return Err(failure.unwrap_or_else(|| deadline.timeout(key)));
            }
            let retry = jitter(POLL);
            let retry = left.map_or(retry, |left| retry.min(left + Duration::from_millis(1)));
            let wake_at = deadline.cap(Instant::now() + retry);
            tokio::select! {
                () = wake => {}
                () = tokio::time::sleep_until(wake_at.into()) => {}
            }
        }
    }
}

fn ask_max(ask: Ask) -> u32 {
    match ask {
        Ask::Permit(max) => max,
        _ => 0,
    }
}

/// Removes a waiting writer's mark when dropped (the writer got the lock, gave up, or its
/// future was dropped): in the background, as an attempt's cleanup.
struct Mark {
    lock: SqliteLock,
    key: LockKey,
    token: [u8; 16],
}

impl Drop for Mark {
    fn drop(&mut self) {
        let (lock, key, token) = (self.lock.clone(), self.key.clone(), self.token);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(runtime.spawn(async move {
                if let Err(error) = lock.delete_row(Space::Rw, &key, "mark", &token).await {
                    tracing::debug!(%error, "a waiting writer's mark could not be removed; it ends with its ttl");
                }
            }));
        }
    }
}

/// Holder rows in `<table>__holders`, fences in `<table>__fences`: a key's read/write lock is
/// apart from its mutex and its semaphore. Waiters poll every 25-50 ms (woken at once by
/// releases in this process); a waiting writer's mark lasts 2 s past its last refresh.
#[async_trait]
impl DistributedRwLock for SqliteLock {
    async fn try_acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        Ok(self
            .primitive_attempt(Space::Rw, key, Ask::Read, ttl)
            .await?
            .ok())
    }

    async fn try_acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        Ok(self
            .primitive_attempt(Space::Rw, key, Ask::Write(None), ttl)
            .await?
            .ok())
    }

    async fn acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let ttl = ttl::check(ttl)?;
        self.primitive_wait(Space::Rw, key, Ask::Read, ttl, wait)
            .await
    }

    async fn acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let ttl = ttl::check(ttl)?;
        let mark = Mark {
            lock: self.clone(),
            key: key.clone(),
            token: LeaseToken::random()?.to_bytes(),
        };
        let token = mark.token;
        self.primitive_wait(Space::Rw, key, Ask::Write(Some(token)), ttl, wait)
            .await
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        backend::check_kind(lease, &[LeaseKind::Read, LeaseKind::Write])?;
        self.extend_row(Space::Rw, lease, ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        backend::check_kind(&lease, &[LeaseKind::Read, LeaseKind::Write])?;
        self.release_row(Space::Rw, lease.key(), lease.kind(), lease.token())
            .await
    }

    fn capabilities(&self) -> Capabilities {
        DistributedLock::capabilities(self)
    }
}

/// Permit rows in `<table>__holders` with the limit they were granted under; the cost of an
/// attempt grows with the holders. Waiting as for the read/write lock.
#[async_trait]
impl DistributedSemaphore for SqliteLock {
    async fn try_acquire(
        &self,
        key: &LockKey,
        max_holders: u32,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let max_holders = backend::check_max_holders(max_holders)?;
        Ok(self
            .primitive_attempt(Space::Semaphore, key, Ask::Permit(max_holders), ttl)
            .await?
            .ok())
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
        self.primitive_wait(Space::Semaphore, key, Ask::Permit(max_holders), ttl, wait)
            .await
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        backend::check_kind(lease, &[LeaseKind::Permit])?;
        self.extend_row(Space::Semaphore, lease, ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        backend::check_kind(&lease, &[LeaseKind::Permit])?;
        self.release_row(Space::Semaphore, lease.key(), lease.kind(), lease.token())
            .await
    }

    fn capabilities(&self) -> Capabilities {
        DistributedLock::capabilities(self)
    }
}
