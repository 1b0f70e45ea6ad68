//! Connecting: [`PostgresLock::connect`], [`PostgresLockBuilder`] and [`PostgresLock::migrate`].

use std::{str::FromStr, sync::Arc, time::Duration};

use leasehold::LockError;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};

use crate::{
    advisory::{Advisory, KeyFn},
    advisory_lock::PostgresAdvisoryLock,
    error::{map, within, DEFAULT_REQUEST_TIMEOUT},
    ident::Ident,
    listener::Listener,
    lock::{Inner, PostgresLock},
    sql::Statements,
};

/// The default schema.
pub const DEFAULT_SCHEMA: &str = "public";
/// The default lease table.
pub const DEFAULT_TABLE: &str = "leasehold_locks";
/// The default notification channel.
pub const DEFAULT_CHANNEL: &str = "leasehold_released";

/// Serialises concurrent migrations (`CREATE TABLE IF NOT EXISTS` can race): a fixed advisory
/// key, "leasehol" in ASCII.
const MIGRATION_LOCK: i64 = 0x6c65_6173_6568_6f6c;

/// How locks are kept in PostgreSQL. See the crate docs for when to pick which. Each strategy
/// now has a type of its own, [`PostgresLock`] and [`PostgresAdvisoryLock`]; this enum serves
/// the deprecated [`PostgresLockBuilder::strategy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// A row per key with token, fence and server-clock expiry (default). Holds no connection
    /// while a lock is held; works through PgBouncer in transaction pooling.
    #[default]
    LeaseTable,
    /// `pg_advisory_xact_lock` in an open transaction on a connection of its own per held
    /// lock; the server ends an idle holder's session after the ttl. Instant, fair hand-off
    /// through the server's lock queue; costs one connection per held lock.
    Advisory,
}

enum Source {
    Url(String),
    Pool(PgPool),
}

/// Builds a [`PostgresLock`] with settings beyond [`PostgresLock::connect`].
///
/// Names are checked when [`build`](Self::build) starts, before any SQL runs.
///
/// ```no_run
/// # async fn demo() -> Result<(), leasehold::LockError> {
/// use leasehold_postgres::PostgresLock;
///
/// let locks = PostgresLock::builder()
///     .url("postgres://app@db.internal/app?sslmode=verify-full")
///     .schema("locking")
///     .table("leases")
///     .build()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct PostgresLockBuilder {
    source: Option<Source>,
    schema: String,
    table: String,
    channel: String,
    migrate: bool,
    notifications: bool,
    max_connections: u32,
    strategy: Strategy,
    prepared_statements: bool,
    advisory_keys: Option<KeyFn>,
    request_timeout: Duration,
}

impl std::fmt::Debug for PostgresLockBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLockBuilder")
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("channel", &self.channel)
            .field("migrate", &self.migrate)
            .field("notifications", &self.notifications)
            .field("strategy", &self.strategy)
            .field("custom_advisory_keys", &self.advisory_keys.is_some())
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl PostgresLock {
    /// Connects with default settings and creates the lease table if it is missing.
    ///
    /// `url`: `postgres://user[:password]@host[:port]/database[?sslmode=verify-full]`.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidConfig`] for a URL that cannot be parsed (never showing the
    /// password); [`LockError::Backend`] when the server cannot be reached (transient) or
    /// refuses (permanent).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may leave the table created; nothing else.
    pub async fn connect(url: &str) -> Result<Self, LockError> {
        Self::builder().url(url).build().await
    }

    /// A builder, for an existing pool, schema, table, channel and migration settings.
    pub fn builder() -> PostgresLockBuilder {
        PostgresLockBuilder {
            source: None,
            schema: DEFAULT_SCHEMA.to_owned(),
            table: DEFAULT_TABLE.to_owned(),
            channel: DEFAULT_CHANNEL.to_owned(),
            migrate: true,
            notifications: true,
            max_connections: 10,
            strategy: Strategy::LeaseTable,
            prepared_statements: true,
            advisory_keys: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Creates the schema (unless `public`) and the lease table if they are missing.
    /// `connect` runs it unless told not to; the SQL is [`migration_sql`](Self::migration_sql).
    ///
    /// # Errors
    ///
    /// [`LockError::Backend`] when the server cannot be reached or refuses (e.g. no `CREATE`
    /// privilege).
    ///
    /// # Cancel safety
    ///
    /// Runs in one transaction: dropping the future rolls it back.
    pub async fn migrate(&self) -> Result<(), LockError> {
        migrate(&self.inner).await
    }

    /// The SQL that [`migrate`](Self::migrate) runs, for people who manage schemas themselves.
    pub fn migration_sql(&self) -> String {
        migration_sql(&self.inner)
    }

    /// The statements of the lease-table strategy, exactly as this lock sends them, for
    /// review and for people who run them by hand (the benchmark's raw baseline does).
    pub fn lease_statements(&self) -> LeaseStatements<'_> {
        let statements = &self.inner.statements;
        LeaseStatements {
            acquire: &statements.acquire,
            extend: &statements.extend,
            release: &statements.release,
            channel: self.inner.channel.as_str(),
        }
    }
}

/// The lease-table statements of one [`PostgresLock`], from
/// [`PostgresLock::lease_statements`]. Every value is a bind parameter.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct LeaseStatements<'a> {
    /// Takes a free or expired key. Binds: `$1` key (text), `$2` token (bytea), `$3` ttl in
    /// ms (float8), `$4` how long the caller will wait in ms (float8; 0 when not waiting).
    /// Returns one row `(fence, NULL)` when taken, `(NULL, holder's remaining ms)` when busy,
    /// or no row when a concurrent first insert won.
    pub acquire: &'a str,
    /// Binds: `$1` key, `$2` token, `$3` ttl in ms (float8). Affects one row if extended.
    pub extend: &'a str,
    /// Binds: `$1` key, `$2` token, `$3` the notification channel. Returns one row if
    /// released.
    pub release: &'a str,
    /// The notification channel, for the release's `$3`.
    pub channel: &'a str,
}

impl PostgresLockBuilder {
    /// Connect to this URL with a pool of its own.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.source = Some(Source::Url(url.into()));
        self
    }

    /// Use an existing pool. The `LISTEN` connection is taken from it and kept.
    pub fn pool(mut self, pool: PgPool) -> Self {
        self.source = Some(Source::Pool(pool));
        self
    }

    /// Schema of the lease table (default `public`).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Name of the lease table (default `leasehold_locks`).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// `NOTIFY` channel for releases (default `leasehold_released`).
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// Whether `build` runs [`PostgresLock::migrate`] (default true).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Whether waiters use `LISTEN`/`NOTIFY` (default true). Turn it off behind a transaction
    /// pooler (PgBouncer) that cannot keep a `LISTEN` session: waiters then poll.
    pub fn notifications(mut self, notifications: bool) -> Self {
        self.notifications = notifications;
        self
    }

    /// Set when the URL or pool goes through a pooler in transaction mode (PgBouncer with
    /// `pool_mode = transaction`), default false. Statements are then sent unnamed and each runs
    /// in an explicit transaction (two more round trips), so that a statement's messages stay on
    /// one server connection; and waiters poll instead of `LISTEN`ing, which needs a session.
    pub fn transaction_pooler(mut self, behind_pooler: bool) -> Self {
        self.prepared_statements = !behind_pooler;
        if behind_pooler {
            self.notifications = false;
        }
        self
    }

    /// The strategy (default [`Strategy::LeaseTable`]). Deprecated: build a
    /// [`PostgresAdvisoryLock`] instead ([`PostgresAdvisoryLock::builder`] or
    /// [`build_advisory`](Self::build_advisory)), which does not offer the admin calls the
    /// advisory strategy cannot answer. A `PostgresLock` built with [`Strategy::Advisory`] hands
    /// every call to one and answers admin calls with [`LockError::Unsupported`].
    #[deprecated(
        since = "0.1.1",
        note = "use `PostgresAdvisoryLock::builder()` or `build_advisory()` for the advisory strategy"
    )]
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Advisory strategy: map lock keys to 64-bit advisory keys with `key_of` instead of the
    /// default hash (SHA-256, see the crate docs), e.g. to share locks with code that calls
    /// `pg_advisory_lock(n)` itself. Keys that map to the same number contend with each other
    /// (false contention), and can never both be held at once.
    pub fn advisory_keys(
        mut self,
        key_of: impl Fn(&leasehold::LockKey) -> i64 + Send + Sync + 'static,
    ) -> Self {
        self.advisory_keys = Some(Arc::new(key_of));
        self
    }

    /// How long one request may take (default 5 s): taking a connection from the pool
    /// (connecting if need be), the statement and, behind a pooler, its transaction. Past it the
    /// call fails with a transient [`LockError::Backend`], so no call hangs on a server that
    /// stopped answering. An advisory wait is bounded by its own wait plus this. The pool made
    /// for a URL also waits at most this long for a connection.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Size of the pool made for a URL (default 10; the `LISTEN` connection is extra).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// Checks the names, connects, and migrates unless told not to.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidConfig`] for a bad schema, table or channel name (no SQL is run) or a
    /// bad URL; otherwise as [`PostgresLock::connect`].
    ///
    /// # Cancel safety
    ///
    /// As [`PostgresLock::connect`].
    pub async fn build(self) -> Result<PostgresLock, LockError> {
        if self.strategy == Strategy::Advisory {
            let advisory = self.build_advisory().await?;
            return Ok(PostgresLock {
                inner: Arc::clone(&advisory.inner),
                advisory: Some(advisory),
            });
        }
        let notifications = self.notifications;
        let request_timeout = self.request_timeout;
        let lock = PostgresLock {
            inner: Arc::new(
                self.open(|pool, channel| {
                    notifications
                        .then(|| Listener::start(pool.clone(), channel.to_owned(), request_timeout))
                })
                .await?,
            ),
            advisory: None,
        };
        if lock.inner.migrate {
            lock.migrate().await?;
        }
        Ok(lock)
    }

    /// Connects a [`PostgresAdvisoryLock`] with these settings (the channel and notifications
    /// do not apply: waiters queue in the server), creates the lease table for its fences
    /// unless told not to, and opens the fence pool's first connection.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    ///
    /// # Cancel safety
    ///
    /// As [`build`](Self::build).
    pub async fn build_advisory(self) -> Result<PostgresAdvisoryLock, LockError> {
        let request_timeout = self.request_timeout;
        let advisory_keys = self.advisory_keys.clone();
        let inner = Arc::new(self.open(|_, _| None).await?);
        let pool = &inner.pool;
        // Half the lock pool's size, at least two: draws are short, but every acquisition
        // makes one.
        let size = (pool.options().get_max_connections() / 2).max(2);
        let fences = PgPoolOptions::new()
            .max_connections(size)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(request_timeout)
            .connect_lazy_with((*pool.connect_options()).clone());
        let advisory = Advisory::new(inner.table.clone(), advisory_keys, request_timeout, fences);
        let lock = PostgresAdvisoryLock {
            advisory: Arc::new(advisory),
            inner,
        };
        if lock.inner.migrate {
            migrate(&lock.inner).await?;
        }
        // Open the fence connection now, while the server has room: waiters queued later may
        // fill every connection slot, and a holder must still draw its fence.
        lock.advisory.warm_up().await?;
        Ok(lock)
    }

    /// Checks the names, opens the pool and builds the shared state; `listener` starts the
    /// `LISTEN` task, if any, on the pool and channel.
    async fn open(
        self,
        listener: impl FnOnce(&PgPool, &str) -> Option<Listener>,
    ) -> Result<Inner, LockError> {
        let schema = Ident::new("schema", &self.schema)?;
        let table = Ident::new("table", &self.table)?;
        let channel = Ident::new("channel", &self.channel)?;
        let sequence = Ident::new("fence sequence", &format!("{}_fence", self.table))?;
        let held = Ident::new("holder table", &format!("{}_held", self.table))?;
        let pool = match self.source {
            None => {
                return Err(LockError::invalid_config(
                    "postgres source",
                    "give a URL or a pool",
                ))
            }
            Some(Source::Pool(pool)) => pool,
            Some(Source::Url(url)) => {
                let options = PgConnectOptions::from_str(&url).map_err(|e| {
                    LockError::invalid_config(
                        format!("postgres URL {}", leasehold::redact::url(&url)),
                        e.to_string(),
                    )
                })?;
                PgPoolOptions::new()
                    .max_connections(self.max_connections)
                    .acquire_timeout(self.request_timeout)
                    .connect_with(options)
                    .await
                    .map_err(|e| map(e, None))?
            }
        };
        let options = pool.connect_options();
        let server = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        Ok(Inner {
            statements: Statements::new(&schema, &table, &sequence, self.prepared_statements),
            held: crate::held::HeldStatements::new(&schema, &held),
            table: format!("{}.{}", schema.as_str(), table.as_str()),
            listener: listener(&pool, channel.as_str()),
            pool,
            channel,
            server,
            request_timeout: self.request_timeout,
            migrate: self.migrate,
        })
    }
}

/// The statements of [`migrate`], one per line.
pub(crate) fn migration_sql(inner: &Inner) -> String {
    let mut sql = String::new();
    for statement in inner.statements.migration().chain([&inner.held.create]) {
        sql.push_str(statement);
        sql.push_str(";\n");
    }
    sql
}

/// Creates the schema and lease table if missing, serialised by an advisory lock.
pub(crate) async fn migrate(inner: &Inner) -> Result<(), LockError> {
    let migration = async {
        let mut tx = inner.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .persistent(false)
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        for sql in inner.statements.migration().chain([&inner.held.create]) {
            sqlx::query(sql).persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await
    };
    within(inner.request_timeout, migration)
        .await
        .map_err(|e| map(e, None))
}
