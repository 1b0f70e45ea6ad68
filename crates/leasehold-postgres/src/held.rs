//! [`DistributedRwLock`] and [`DistributedSemaphore`] for [`PostgresLock`] (the lease-table
//! strategy): one row per holder, per waiting writer's mark and per fence counter, in the
//! table `<table>_held` beside the lease table.
//!
//! `space` keeps the primitives apart (`rw`, `sem`); `role` is `read`, `write`, `mark`,
//! `permit`, or `fence` (the key's counter, token empty, never deleted). An acquire attempt is
//! one transaction: the fence row is locked first (`INSERT .. ON CONFLICT DO UPDATE`), which
//! orders every attempt on the key, then expired rows go, the live ones are counted, and a
//! grant inserts its row and counts the fence up, committed with `synchronous_commit` on (a
//! refused attempt commits without waiting for its flush: a mark or a pruned row lost in a
//! crash changes nothing that matters).
//! Expiry is by the server's `clock_timestamp()`.

use std::time::Duration;

use leasehold::{
    async_trait,
    backend::{
        self, ttl,
        wait::{keep_waiting, Deadline, NotifiedWait, TaskReply},
        Attempt, SentAt, WRITER_MARK_TTL,
    },
    Capabilities, DistributedLock, DistributedRwLock, DistributedSemaphore, Lease, LeaseKind,
    LeaseToken, LockError, LockKey,
};
use sqlx::{Postgres, Row, Transaction};

use crate::{
    error::{is_contention, map, within},
    ident::Ident,
    lock::PostgresLock,
};

/// At most 0.15-0.3 s between attempts while listening: a waiting writer's mark is refreshed by
/// every attempt, well within [`WRITER_MARK_REFRESH`](backend::WRITER_MARK_REFRESH).
const WAIT: NotifiedWait = NotifiedWait {
    fallback: Duration::from_millis(300),
    poll: Duration::from_millis(50),
};

/// The statements, built once from the validated names.
#[derive(Debug, Clone)]
pub(crate) struct HeldStatements {
    pub(crate) create: String,
    anchor: String,
    prune: String,
    count: String,
    insert: String,
    unmark: String,
    unmark_notify: String,
    fence: String,
    extend: String,
    release: String,
    /// `PostgresAdvisoryLock`'s read/write fence: the same counter row as the lease table's
    /// (space `rw`), counted up in a transaction of its own, committed and flushed. $1 key.
    pub(crate) advisory_rw_fence: String,
    /// Admin, one key: last fence (NULL before the first grant), live holders, whether one
    /// writes, ms left on the last to end, the stored limit. $1 key, $2 space.
    pub(crate) status: String,
    /// Admin: the same, with the key first, for every key starting with $1 ever granted in
    /// space $2, in byte order.
    pub(crate) list: String,
}

impl HeldStatements {
    pub(crate) fn new(schema: &Ident, held: &Ident) -> Self {
        let h = format!("{}.{}", schema.quoted(), held.quoted());
        let ms = "$5::float8 * interval '1 millisecond'";
        Self {
            create: format!(
                "CREATE TABLE IF NOT EXISTS {h} (
                    space       text NOT NULL,
                    key         text NOT NULL,
                    token       bytea NOT NULL,
                    role        text NOT NULL,
                    expires_at  timestamptz NOT NULL,
                    max_holders integer,
                    fence       bigint,
                    PRIMARY KEY (space, key, token)
                )"
            ),
            // $1 space, $2 key.
            anchor: format!(
                "INSERT INTO {h} AS h (space, key, token, role, expires_at, fence)
                 VALUES ($1, $2, '\\x', 'fence', 'infinity', 0)
                 ON CONFLICT (space, key, token) DO UPDATE SET fence = h.fence
                 RETURNING fence, set_config('synchronous_commit', 'off', true)"
            ),
            prune: format!(
                "DELETE FROM {h} WHERE space = $1 AND key = $2 AND role <> 'fence'
                   AND expires_at <= clock_timestamp()"
            ),
            // Per role: live rows, ms until the soonest and the latest ends, the limit.
            count: format!(
                "SELECT role, count(*),
                        (extract(epoch FROM min(expires_at) - clock_timestamp()) * 1000)::bigint,
                        (extract(epoch FROM max(expires_at) - clock_timestamp()) * 1000)::bigint,
                        max(max_holders)
                 FROM {h} WHERE space = $1 AND key = $2 AND role <> 'fence'
                 GROUP BY role"
            ),
            // $3 token, $4 role, $5 ttl ms, $6 limit.
            insert: format!(
                "INSERT INTO {h} (space, key, token, role, expires_at, max_holders)
                 VALUES ($1, $2, $3, $4, clock_timestamp() + {ms}, $6)
                 ON CONFLICT (space, key, token) DO UPDATE SET expires_at = EXCLUDED.expires_at"
            ),
            // $3 mark.
            unmark: format!(
                "DELETE FROM {h} WHERE space = $1 AND key = $2 AND token = $3 AND role = 'mark'"
            ),
            // $3 mark, $4 channel, $5 payload: notifies if there was a mark.
            unmark_notify: format!(
                "WITH gone AS (
                    DELETE FROM {h} WHERE space = $1 AND key = $2 AND token = $3 AND role = 'mark'
                    RETURNING key
                 )
                 SELECT pg_notify($4, $5) FROM gone"
            ),
            fence: format!(
                "UPDATE {h} SET fence = fence + 1
                 WHERE space = $1 AND key = $2 AND role = 'fence'
                 RETURNING fence, set_config('synchronous_commit', 'on', true)"
            ),
            // $3 token, $4 role, $5 ttl ms.
            extend: format!(
                "WITH extended AS (
                    UPDATE {h} SET expires_at = clock_timestamp() + {ms}
                    WHERE space = $1 AND key = $2 AND token = $3 AND role = $4
                      AND expires_at > clock_timestamp()
                    RETURNING key
                 )
                 SELECT set_config('synchronous_commit', 'on', true) FROM extended"
            ),
            // $3 token, $4 role, $5 channel, $6 payload: whether the row was live.
            release: format!(
                "WITH released AS (
                    DELETE FROM {h} WHERE space = $1 AND key = $2 AND token = $3 AND role = $4
                    RETURNING expires_at > clock_timestamp() AS live
                 )
                 SELECT live, pg_notify($5, $6) FROM released"
            ),
            status: admin_query(&h, "key = $1", ""),
            list: admin_query(
                &h,
                "starts_with(key, $1)",
                "GROUP BY key HAVING max(fence) FILTER (WHERE role = 'fence') > 0
                 ORDER BY key COLLATE \"C\"",
            ),
            advisory_rw_fence: format!(
                "INSERT INTO {h} AS h (space, key, token, role, expires_at, fence)
                 VALUES ('rw', $1, '\\x', 'fence', 'infinity', 1)
                 ON CONFLICT (space, key, token) DO UPDATE SET fence = h.fence + 1
                 RETURNING fence, set_config('synchronous_commit', 'on', true)"
            ),
        }
    }
}

/// See [`HeldStatements::status`]: the clock is read once, so every row is judged at the same
/// instant.
fn admin_query(h: &str, which: &str, tail: &str) -> String {
    let live = "role IN ('read', 'write', 'permit') AND expires_at > c.now";
    let key = if tail.is_empty() { "" } else { "key, " };
    format!(
        "WITH c AS (SELECT clock_timestamp() AS now)
         SELECT {key}nullif(max(fence) FILTER (WHERE role = 'fence'), 0),
                count(*) FILTER (WHERE {live}),
                coalesce(bool_or(role = 'write' AND {live}), false),
                (extract(epoch FROM max(expires_at) FILTER (WHERE {live}) - max(c.now))
                    * 1000)::bigint,
                max(max_holders) FILTER (WHERE role = 'permit' AND {live})
         FROM {h}, c WHERE space = $2 AND {which} {tail}"
    )
}

/// The primitive a row belongs to.
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

    /// The notification payload of a release: the key, prefixed (a mutex's payload is the
    /// bare key; a collision only wakes a waiter for nothing).
    fn payload(self, key: &LockKey) -> String {
        format!("{}:{}", self.as_str(), key.as_str())
    }
}

fn role(kind: LeaseKind) -> &'static str {
    match kind {
        LeaseKind::Read => "read",
        LeaseKind::Write => "write",
        _ => "permit",
    }
}

#[derive(Debug, Clone, Copy)]
enum Ask {
    Read,
    Write(Option<[u8; 16]>),
    Permit(u32),
}

impl Ask {
    fn kind(self) -> LeaseKind {
        match self {
            Self::Read => LeaseKind::Read,
            Self::Write(_) => LeaseKind::Write,
            Self::Permit(_) => LeaseKind::Permit,
        }
    }
}

enum Answer {
    Won(u64),
    Busy(Option<Duration>),
    Limit(i64),
}

/// Live rows of one role.
#[derive(Default, Clone, Copy)]
struct Live {
    count: i64,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    limit: Option<i32>,
}

fn left(ms: Option<i64>) -> Option<Duration> {
    ms.and_then(|ms| u64::try_from(ms).ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

impl PostgresLock {
    async fn decide(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        space: Space,
        key: &LockKey,
        ask: Ask,
        token: &[u8; 16],
        ttl_ms: u64,
    ) -> Result<Answer, sqlx::Error> {
        let held = &self.inner.held;
        let persistent = self.inner.statements.persistent;
        let (s, k) = (space.as_str(), key.as_str());
        sqlx::query(&held.anchor)
            .persistent(persistent)
            .bind(s)
            .bind(k)
            .execute(&mut **tx)
            .await?;
        sqlx::query(&held.prune)
            .persistent(persistent)
            .bind(s)
            .bind(k)
            .execute(&mut **tx)
            .await?;
        let rows = sqlx::query(&held.count)
            .persistent(persistent)
            .bind(s)
            .bind(k)
            .fetch_all(&mut **tx)
            .await?;
        let mut live = std::collections::HashMap::new();
        for row in rows {
            let role: String = row.try_get(0)?;
            live.insert(
                role,
                Live {
                    count: row.try_get(1)?,
                    first_ms: row.try_get(2)?,
                    last_ms: row.try_get(3)?,
                    limit: row.try_get(4)?,
                },
            );
        }
        let of = |role: &str| live.get(role).copied().unwrap_or_default();
        let (role, limit) = match ask {
            Ask::Read => {
                let (writer, marks) = (of("write"), of("mark"));
                if writer.count > 0 {
                    return Ok(Answer::Busy(left(writer.first_ms)));
                }
                if marks.count > 0 {
                    return Ok(Answer::Busy(left(marks.first_ms)));
                }
                ("read", None)
            }
            Ask::Write(mark) => {
                let (writer, readers) = (of("write"), of("read"));
                if writer.count > 0 || readers.count > 0 {
                    if let Some(mark) = mark {
                        sqlx::query(&held.insert)
                            .persistent(persistent)
                            .bind(s)
                            .bind(k)
                            .bind(mark.as_slice())
                            .bind("mark")
                            .bind(ttl::whole_millis(WRITER_MARK_TTL) as f64)
                            .bind(None::<i32>)
                            .execute(&mut **tx)
                            .await?;
                    }
                    let until = if writer.count > 0 {
                        writer.first_ms
                    } else {
                        readers.last_ms
                    };
                    return Ok(Answer::Busy(left(until)));
                }
                if let Some(mark) = mark {
                    sqlx::query(&held.unmark)
                        .persistent(persistent)
                        .bind(s)
                        .bind(k)
                        .bind(mark.as_slice())
                        .execute(&mut **tx)
                        .await?;
                }
                ("write", None)
            }
            Ask::Permit(max) => {
                let permits = of("permit");
                if let Some(stored) = permits
                    .limit
                    .filter(|l| permits.count > 0 && i64::from(*l) != i64::from(max))
                {
                    return Ok(Answer::Limit(stored.into()));
                }
                if permits.count >= i64::from(max) {
                    return Ok(Answer::Busy(left(permits.first_ms)));
                }
                ("permit", Some(i32::try_from(max).unwrap_or(i32::MAX)))
            }
        };
        sqlx::query(&held.insert)
            .persistent(persistent)
            .bind(s)
            .bind(k)
            .bind(token.as_slice())
            .bind(role)
            .bind(ttl_ms as f64)
            .bind(limit)
            .execute(&mut **tx)
            .await?;
        let fence: i64 = sqlx::query(&held.fence)
            .persistent(persistent)
            .bind(s)
            .bind(k)
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
        Ok(Answer::Won(u64::try_from(fence).unwrap_or_default()))
    }

    /// One attempt in one transaction, run to its end on a task of its own (never cut off
    /// halfway, so no transaction is left open on a pooled connection); if the caller is gone
    /// by then, the task releases what it won and takes the mark away.
    async fn held_attempt(
        &self,
        space: Space,
        key: &LockKey,
        ask: Ask,
        ttl: Duration,
    ) -> Result<Result<Lease, Option<Duration>>, LockError> {
        let attempt = Attempt::start(ttl)?;
        let (kind, token, ttl_ms) = (ask.kind(), attempt.token(), attempt.ttl_millis());
        let (answer, answered) = tokio::sync::oneshot::channel();
        let (lock, owned) = (self.clone(), key.clone());
        tokio::spawn(async move {
            let bytes = token.to_bytes();
            // Bounded generously: the caller gives up after one request timeout, and the
            // cleanup below must come after the commit, not race it.
            let decided = within(lock.inner.request_timeout * 4, async {
                let mut tx = lock.inner.pool.begin().await?;
                let answer = lock
                    .decide(&mut tx, space, &owned, ask, &bytes, ttl_ms)
                    .await?;
                tx.commit().await?;
                Ok(answer)
            })
            .await;
            let open = decided.is_err();
            let won = matches!(decided, Ok(Answer::Won(_)));
            if answer.send(decided).is_err() {
                if won || open {
                    let _ = lock.release_row(space, &owned, kind, token).await;
                }
                if let Ask::Write(Some(mark)) = ask {
                    let _ = lock.delete_mark(space, &owned, &mark).await;
                }
            }
        });
        let (lock, owned) = (self.clone(), key.clone());
        let answered = TaskReply::new(answered, move |decided: Result<Answer, sqlx::Error>| {
            // Answered, but the caller was gone before it read the answer.
            let open = matches!(decided, Ok(Answer::Won(_)) | Err(_));
            if let (true, Ok(runtime)) = (open, tokio::runtime::Handle::try_current()) {
                drop(runtime.spawn(async move {
                    let _ = lock.release_row(space, &owned, kind, token).await;
                }));
            }
        });
        // The caller waits one request timeout; the task finishes its transaction anyway and
        // cleans up after it if nobody is left to read its answer.
        let decided = tokio::time::timeout(self.inner.request_timeout, answered.get())
            .await
            .map_err(|_| {
                LockError::transient(
                    crate::error::BACKEND,
                    format!(
                        "no answer from PostgreSQL within the request timeout of {:?}",
                        self.inner.request_timeout
                    ),
                )
            })?
            .ok_or_else(|| {
                LockError::transient(crate::error::BACKEND, "the attempt's task ended early")
            })?;
        let decided = match decided {
            Err(error) if is_contention(&error) => return Ok(Err(None)),
            Err(error) => {
                // The transaction may have committed before its reply was lost.
                let _ = self.release_row(space, key, kind, token).await;
                return Err(map(error, Some(key)));
            }
            Ok(answer) => answer,
        };
        match decided {
            Answer::Won(fence) => Ok(Ok(attempt.won_as(kind, key, fence))),
            Answer::Busy(left) => Ok(Err(left)),
            Answer::Limit(stored) => {
                let asked = match ask {
                    Ask::Permit(max) => max,
                    _ => 0,
                };
                Err(backend::limit_mismatch(
                    key,
                    asked,
                    u64::try_from(stored).unwrap_or_default(),
                ))
            }
        }
    }

    async fn release_row(
        &self,
        space: Space,
        key: &LockKey,
        kind: LeaseKind,
        token: LeaseToken,
    ) -> Result<bool, LockError> {
        let held = &self.inner.held;
        let row = within(self.inner.request_timeout, async {
            on_pool!(self, exec => sqlx::query(&held.release)
                .persistent(self.inner.statements.persistent)
                .bind(space.as_str())
                .bind(key.as_str())
                .bind(token.to_bytes().as_slice())
                .bind(role(kind))
                .bind(self.inner.channel.as_str())
                .bind(space.payload(key))
                .fetch_optional(exec)
                .await)
        })
        .await
        .map_err(|e| map(e, Some(key)))?;
        match row {
            Some(row) => Ok(row.try_get::<bool, _>(0).map_err(|e| map(e, Some(key)))?),
            None => Ok(false),
        }
    }

    async fn delete_mark(
        &self,
        space: Space,
        key: &LockKey,
        mark: &[u8; 16],
    ) -> Result<(), LockError> {
        let held = &self.inner.held;
        // Readers held back by the mark go on at once: the removal notifies.
        within(self.inner.request_timeout, async {
            on_pool!(self, exec => sqlx::query(&held.unmark_notify)
                .persistent(self.inner.statements.persistent)
                .bind(space.as_str())
                .bind(key.as_str())
                .bind(mark.as_slice())
                .bind(self.inner.channel.as_str())
                .bind(space.payload(key))
                .fetch_optional(exec)
                .await)
        })
        .await
        .map_err(|e| map(e, Some(key)))?;
        Ok(())
    }

    async fn extend_row(
        &self,
        space: Space,
        lease: &mut Lease,
        ttl: Duration,
    ) -> Result<bool, LockError> {
        let ttl = ttl::check(ttl)?;
        let sent_at = SentAt::now();
        let held = &self.inner.held;
        let key = lease.key().clone();
        let (token, role) = (lease.token().to_bytes(), role(lease.kind()));
        let rows = within(self.inner.request_timeout, async {
            on_pool!(self, exec => sqlx::query(&held.extend)
                .persistent(self.inner.statements.persistent)
                .bind(space.as_str())
                .bind(key.as_str())
                .bind(token.as_slice())
                .bind(role)
                .bind(ttl::whole_millis(ttl) as f64)
                .fetch_all(exec)
                .await)
        })
        .await
        .map_err(|e| map(e, Some(&key)))?;
        let extended = rows.len() == 1;
        if extended {
            backend::renew(lease, ttl, sent_at);
        }
        Ok(extended)
    }

    async fn held_wait(
        &self,
        space: Space,
        key: &LockKey,
        ask: Ask,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let deadline = Deadline::after(wait);
        let mut failure = None;
        match self.held_attempt(space, key, ask, ttl).await {
            Ok(Ok(lease)) => return Ok(lease),
            Ok(Err(_)) => {}
            Err(error) => keep_waiting(error, &mut failure)?,
        }
        let listener = self.inner.listener.as_ref();
        // Readers are all woken by every release (one may let many in); writers and permits
        // one per release.
        let waiter = listener.map(|l| {
            if matches!(ask, Ask::Read) {
                l.wakers.register_holder(&space.payload(key))
            } else {
                l.wakers.register(&space.payload(key))
            }
        });
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
            || self.held_attempt(space, key, ask, ttl),
        )
        .await
    }
}

/// A waiting writer's mark, taken away when dropped (the writer got the lock, gave up, or its
/// future was dropped), in the background.
struct Mark {
    lock: PostgresLock,
    key: LockKey,
    token: [u8; 16],
}

impl Drop for Mark {
    fn drop(&mut self) {
        let (lock, key, token) = (self.lock.clone(), self.key.clone(), self.token);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(runtime.spawn(async move {
                if let Err(error) = lock.delete_mark(Space::Rw, &key, &token).await {
                    tracing::debug!(%error, "a waiting writer's mark could not be removed; it ends with its ttl");
                }
            }));
        }
    }
}

/// Holder rows in `<table>_held`: a key's read/write lock is apart from its mutex and its
/// semaphore. Waiting is notified (`LISTEN` on the lock's channel) with a 300 ms fallback.
#[async_trait]
impl DistributedRwLock for PostgresLock {
    async fn try_acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        Ok(self
            .held_attempt(Space::Rw, key, Ask::Read, ttl)
            .await?
            .ok())
    }

    async fn try_acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        Ok(self
            .held_attempt(Space::Rw, key, Ask::Write(None), ttl)
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
        self.held_wait(Space::Rw, key, Ask::Read, ttl, wait).await
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
        self.held_wait(Space::Rw, key, Ask::Write(Some(token)), ttl, wait)
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

/// Permit rows in `<table>_held` with the limit they were granted under; an attempt's cost
/// grows with the holders.
#[async_trait]
impl DistributedSemaphore for PostgresLock {
    async fn try_acquire(
        &self,
        key: &LockKey,
        max_holders: u32,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let max_holders = check_limit(max_holders)?;
        Ok(self
            .held_attempt(Space::Semaphore, key, Ask::Permit(max_holders), ttl)
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
        let max_holders = check_limit(max_holders)?;
        let ttl = ttl::check(ttl)?;
        self.held_wait(Space::Semaphore, key, Ask::Permit(max_holders), ttl, wait)
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

/// `max_holders` as the column stores it: 1 to `i32::MAX`.
fn check_limit(max_holders: u32) -> Result<u32, LockError> {
    let max_holders = backend::check_max_holders(max_holders)?;
    if i32::try_from(max_holders).is_err() {
        return Err(LockError::invalid_config(
            format!("max_holders ({max_holders})"),
            format!("PostgreSQL semaphores admit at most {} holders", i32::MAX),
        ));
    }
    Ok(max_holders)
}
