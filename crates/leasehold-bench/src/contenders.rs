//! The implementations measured side by side, behind one small interface.

use std::time::Duration;

use async_trait::async_trait;
use leasehold::{DistributedLock, Lease, LeaseToken, LockKey};
use redis::{
    aio::{ConnectionLike, ConnectionManager},
    Script,
};

/// The ttl every contender uses.
pub(crate) const TTL: Duration = Duration::from_secs(30);

/// A held lock, whatever took it.
pub(crate) enum Held {
    Raw {
        key: String,
        token: String,
    },
    Leasehold(Lease),
    Rslock(rslock::Lock),
    /// An etcd lease (raw etcd-client: revoking it releases).
    EtcdLease(i64),
    /// An etcd key (the Lock RPC's: deleting it releases).
    EtcdKey(Vec<u8>),
}

/// One implementation under test.
#[async_trait]
pub(crate) trait Contender: Send + Sync {
    /// The name in the report.
    fn name(&self) -> String;
    /// One attempt; `None` if the key is held.
    async fn try_acquire(&self, key: &str) -> Option<Held>;
    /// Whether [`acquire`](Self::acquire) can wait for a held key.
    fn can_wait(&self) -> bool {
        true
    }
    /// Waits until the key is ours (`None` if this contender cannot wait).
    async fn acquire(&self, key: &str) -> Option<Held>;
    async fn release(&self, held: Held);
}

/// The floor: `SET NX PX` and an `EVALSHA` compare-and-delete, written by hand on the same
/// multiplexed connection type leasehold uses (a `ConnectionManager`, or on a cluster the
/// cluster connection).
pub(crate) struct Raw<C = ConnectionManager> {
    pub(crate) conn: C,
    pub(crate) unlock: Script,
    label: &'static str,
}

impl Raw {
    pub(crate) fn new(conn: ConnectionManager) -> Self {
        Self::on(conn, "raw redis (SET NX PX + EVALSHA)")
    }
}

impl<C> Raw<C> {
    pub(crate) fn on(conn: C, label: &'static str) -> Self {
        let unlock = Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        );
        Self {
            conn,
            unlock,
            label,
        }
    }
}

#[async_trait]
impl<C: ConnectionLike + Clone + Send + Sync + 'static> Contender for Raw<C> {
    fn name(&self) -> String {
        self.label.into()
    }

    async fn try_acquire(&self, key: &str) -> Option<Held> {
        set_nx(&self.conn, format!("raw:{key}")).await
    }

    fn can_wait(&self) -> bool {
        false
    }

    async fn acquire(&self, _key: &str) -> Option<Held> {
        None
    }

    async fn release(&self, held: Held) {
        let Held::Raw { key, token } = held else {
            unreachable!("raw releases its own")
        };
        let mut conn = self.conn.clone();
        let _: i64 = self
            .unlock
            .key(key)
            .arg(token)
            .invoke_async(&mut conn)
            .await
            .expect("raw unlock");
    }
}

/// The raw baselines' attempt: `SET key token NX PX ttl` with a fresh token.
pub(crate) async fn set_nx<C: ConnectionLike + Clone + Send>(
    conn: &C,
    key: String,
) -> Option<Held> {
    let token = LeaseToken::random().expect("os random").to_hex();
    let mut conn = conn.clone();
    let set: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(TTL.as_millis() as u64)
        .query_async(&mut conn)
        .await
        .expect("raw SET");
    set.map(|_| Held::Raw { key, token })
}

/// A leasehold backend, through the `DistributedLock` trait object users inject.
pub(crate) struct Leasehold {
    pub(crate) lock: std::sync::Arc<dyn DistributedLock>,
    pub(crate) label: &'static str,
}

impl Leasehold {
    pub(crate) fn new(lock: impl DistributedLock, label: &'static str) -> Self {
        Self {
            lock: std::sync::Arc::new(lock),
            label,
        }
    }
}

#[async_trait]
impl Contender for Leasehold {
    fn name(&self) -> String {
        self.label.into()
    }

    async fn try_acquire(&self, key: &str) -> Option<Held> {
        let key = LockKey::new(key).expect("bench key");
        self.lock
            .try_acquire(&key, TTL)
            .await
            .expect("leasehold try_acquire")
            .map(Held::Leasehold)
    }

    async fn acquire(&self, key: &str) -> Option<Held> {
        let key = LockKey::new(key).expect("bench key");
        let lease = self
            .lock
            .acquire(&key, TTL, Duration::from_secs(60))
            .await
            .expect("leasehold acquire");
        Some(Held::Leasehold(lease))
    }

    async fn release(&self, held: Held) {
        let Held::Leasehold(lease) = held else {
            unreachable!("leasehold releases its own")
        };
        self.lock.release(lease).await.expect("leasehold release");
    }
}

/// rslock, the most used Rust Redis lock crate, with its retry settings.
pub(crate) struct Rslock {
    pub(crate) manager: rslock::LockManager,
    pub(crate) label: &'static str,
}

#[async_trait]
impl Contender for Rslock {
    fn name(&self) -> String {
        format!("rslock 0.10 ({})", self.label)
    }

    async fn try_acquire(&self, key: &str) -> Option<Held> {
        self.manager
            .lock(format!("rslock:{key}").as_str(), TTL)
            .await
            .ok()
            .map(Held::Rslock)
    }

    async fn acquire(&self, key: &str) -> Option<Held> {
        // rslock's own "loop until acquired": lock() with its retries, again and again.
        let resource = format!("rslock:{key}");
        loop {
            if let Ok(lock) = self.manager.lock(resource.as_str(), TTL).await {
                return Some(Held::Rslock(lock));
            }
        }
    }

    async fn release(&self, held: Held) {
        let Held::Rslock(lock) = held else {
            unreachable!("rslock releases its own")
        };
        self.manager.unlock(&lock).await;
    }
}

/// One server round trip, the unit hand-off latency is compared with.
#[async_trait]
pub(crate) trait RoundTrip: Send + Sync {
    fn name(&self) -> &'static str;
    async fn once(&self);
}

/// Redis `PING`.
pub(crate) struct Ping(pub(crate) ConnectionManager);

#[async_trait]
impl RoundTrip for Ping {
    fn name(&self) -> &'static str {
        "redis PING"
    }

    async fn once(&self) {
        let mut conn = self.0.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .expect("PING");
    }
}

/// PostgreSQL `SELECT 1` (one statement).
pub(crate) struct SelectOne(pub(crate) sqlx::PgPool);

#[async_trait]
impl RoundTrip for SelectOne {
    fn name(&self) -> &'static str {
        "postgres SELECT 1"
    }

    async fn once(&self) {
        let _: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&self.0)
            .await
            .expect("SELECT 1");
    }
}

/// PostgreSQL by hand with sqlx, on a pool of the same size as leasehold's.
pub(crate) struct RawSqlx {
    pool: sqlx::PgPool,
    sql: RawSql,
}

enum RawSql {
    /// leasehold's own lease-table statements, sent by hand: what is left is the library's
    /// own overhead.
    Same {
        acquire: String,
        release: String,
        channel: String,
    },
    /// The smallest upsert and release one would write: no wait marks, no notifications.
    Minimal,
}

impl RawSqlx {
    /// The statements of `lock` (keys prefixed `raw:` in its table).
    pub(crate) fn same_as(lock: &leasehold_postgres::PostgresLock, pool: sqlx::PgPool) -> Self {
        let sql = lock.lease_statements();
        let sql = RawSql::Same {
            acquire: sql.acquire.to_owned(),
            release: sql.release.to_owned(),
            channel: sql.channel.to_owned(),
        };
        Self { pool, sql }
    }

    /// The minimal statements, on their own table.
    pub(crate) async fn minimal(pool: sqlx::PgPool) -> Self {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS bench_raw_locks (key text PRIMARY KEY, token bytea, fence bigint NOT NULL, expires_at timestamptz)",
        )
        .execute(&pool)
        .await
        .expect("create bench_raw_locks");
        Self {
            pool,
            sql: RawSql::Minimal,
        }
    }
}

#[async_trait]
impl Contender for RawSqlx {
    fn name(&self) -> String {
        match self.sql {
            RawSql::Same { .. } => "raw sqlx (leasehold's statements by hand)".into(),
            RawSql::Minimal => "raw sqlx (minimal upsert + token-checked update)".into(),
        }
    }

    fn can_wait(&self) -> bool {
        false
    }

    async fn try_acquire(&self, key: &str) -> Option<Held> {
        let token = LeaseToken::random().expect("os random");
        let key = format!("raw:{key}");
        let bytes = token.to_bytes();
        let fence: Option<i64> = match &self.sql {
            RawSql::Same { acquire, .. } => sqlx::query_scalar(acquire)
                .bind(&key)
                .bind(bytes.as_slice())
                .bind(TTL.as_millis() as f64)
                .bind(0.0_f64)
                .fetch_optional(&self.pool)
                .await
                .expect("raw acquire")
                .flatten(),
            RawSql::Minimal => sqlx::query_scalar(
                "INSERT INTO bench_raw_locks AS l (key, token, fence, expires_at)
                 VALUES ($1, $2, 1, clock_timestamp() + interval '30 seconds')
                 ON CONFLICT (key) DO UPDATE SET token = EXCLUDED.token, fence = l.fence + 1, expires_at = EXCLUDED.expires_at
                 WHERE l.token IS NULL OR l.expires_at <= clock_timestamp()
                 RETURNING fence",
            )
            .bind(&key)
            .bind(bytes.as_slice())
            .fetch_optional(&self.pool)
            .await
            .expect("raw upsert"),
        };
        fence.map(|_| Held::Raw {
            key,
            token: token.to_hex(),
        })
    }

    async fn acquire(&self, _key: &str) -> Option<Held> {
        None
    }

    async fn release(&self, held: Held) {
        let Held::Raw { key, token } = held else {
            unreachable!("raw releases its own")
        };
        let token = LeaseToken::from_hex(&token).expect("hex token").to_bytes();
        match &self.sql {
            RawSql::Same {
                release, channel, ..
            } => sqlx::query(release)
                .bind(key)
                .bind(token.as_slice())
                .bind(channel)
                .execute(&self.pool)
                .await
                .expect("raw release"),
            RawSql::Minimal => sqlx::query(
                "UPDATE bench_raw_locks SET token = NULL, expires_at = NULL
                 WHERE key = $1 AND token = $2 AND expires_at > clock_timestamp()
                 RETURNING set_config('synchronous_commit', 'off', true)",
            )
            .bind(key)
            .bind(token.as_slice())
            .execute(&self.pool)
            .await
            .expect("raw release"),
        };
    }
}
