//! [`PostgresAdvisoryLock`]: the advisory strategy as a type of its own.

use std::{fmt, sync::Arc, time::Duration};

use leasehold::{
    async_trait,
    backend::{self, ttl},
    Capabilities, DistributedLock, Lease, LockError, LockKey, ReleaseWatch,
};
use sqlx::PgPool;

use crate::{advisory::Advisory, builder::PostgresLockBuilder, lock::Inner};

/// Locks held as `pg_advisory_xact_lock` in an open transaction, one connection per held lock,
/// through `sqlx`: instant, fair hand-off through the server's lock queue; the server frees a
/// lock the moment its holder's session ends (a crash, a cut connection) or idles for the ttl.
///
/// Fences are drawn from the lease table's key rows after the lock is granted, so they stay
/// strictly increasing across crashes (see the crate docs). There is no per-key expiry to show
/// or clear, so this type does not implement [`LockAdmin`](leasehold::LockAdmin): status,
/// listing and forced release are [`PostgresLock`](crate::PostgresLock)'s (the lease table).
///
/// Cheap to clone: clones share the pools.
///
/// ```compile_fail,E0277
/// // An advisory lock has no admin side: this does not compile.
/// fn admin(_: &dyn leasehold::LockAdmin) {}
/// fn demo(lock: &leasehold_postgres::PostgresAdvisoryLock) {
///     admin(lock);
/// }
/// ```
#[derive(Clone)]
pub struct PostgresAdvisoryLock {
    pub(crate) inner: Arc<Inner>,
    /// The transactions of held leases, the fence pool.
    pub(crate) advisory: Arc<Advisory>,
}

impl fmt::Debug for PostgresAdvisoryLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresAdvisoryLock")
            .field("server", &self.inner.server)
            .field("table", &self.inner.table)
            .field("transaction_pooler", &!self.inner.statements.persistent)
            .finish()
    }
}

impl PostgresAdvisoryLock {
    /// Connects with defaults and creates the lease table (for fences) if missing.
    ///
    /// `url`: `postgres://user[:password]@host[:port]/database[?sslmode=verify-full]`.
    ///
    /// # Errors
    ///
    /// As [`PostgresLock::connect`](crate::PostgresLock::connect).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may leave the table created; nothing else.
    pub async fn connect(url: &str) -> Result<Self, LockError> {
        Self::builder().url(url).build().await
    }

    /// A builder, with the settings of [`PostgresLock::builder`](crate::PostgresLock::builder)
    /// that apply here (not the channel or notifications).
    pub fn builder() -> AdvisoryBuilder {
        AdvisoryBuilder(crate::PostgresLock::builder())
    }

    /// The pool held leases take their connections from.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Creates the schema (unless `public`) and the lease table, which holds the fences, if
    /// they are missing; as [`PostgresLock::migrate`](crate::PostgresLock::migrate).
    ///
    /// # Errors
    ///
    /// As [`PostgresLock::migrate`](crate::PostgresLock::migrate).
    ///
    /// # Cancel safety
    ///
    /// Runs in one transaction: dropping the future rolls it back.
    pub async fn migrate(&self) -> Result<(), LockError> {
        crate::builder::migrate(&self.inner).await
    }

    /// The SQL that [`migrate`](Self::migrate) runs, for people who manage schemas themselves.
    pub fn migration_sql(&self) -> String {
        crate::builder::migration_sql(&self.inner)
    }

    fn advisory(&self) -> &Advisory {
        &self.advisory
    }
}

/// The builder of [`PostgresAdvisoryLock`]: the settings of [`PostgresLockBuilder`] that apply
/// to it, and `build` giving the advisory type.
#[derive(Debug)]
#[must_use]
pub struct AdvisoryBuilder(PostgresLockBuilder);

macro_rules! forward {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*);)*) => {
        impl AdvisoryBuilder {
            $(
                $(#[$doc])*
                pub fn $name(self, $($arg: $ty),*) -> Self {
                    Self(self.0.$name($($arg),*))
                }
            )*
        }
    };
}

forward! {
    /// See [`PostgresLockBuilder::url`].
    url(url: impl Into<String>);
    /// See [`PostgresLockBuilder::pool`].
    pool(pool: PgPool);
    /// See [`PostgresLockBuilder::schema`] (the lease table holds the fence rows).
    schema(schema: impl Into<String>);
    /// See [`PostgresLockBuilder::table`].
    table(table: impl Into<String>);
    /// See [`PostgresLockBuilder::migrate`].
    migrate(migrate: bool);
    /// See [`PostgresLockBuilder::transaction_pooler`]: waiters then poll.
    transaction_pooler(behind_pooler: bool);
    /// See [`PostgresLockBuilder::request_timeout`].
    request_timeout(timeout: Duration);
    /// See [`PostgresLockBuilder::max_connections`]: every held lock takes one.
    max_connections(max: u32);
}

impl AdvisoryBuilder {
    /// See [`PostgresLockBuilder::advisory_keys`].
    pub fn advisory_keys(self, key_of: impl Fn(&LockKey) -> i64 + Send + Sync + 'static) -> Self {
        Self(self.0.advisory_keys(key_of))
    }

    /// Connects; see [`PostgresLockBuilder::build_advisory`].
    ///
    /// # Errors
    ///
    /// As [`PostgresLockBuilder::build_advisory`].
    ///
    /// # Cancel safety
    ///
    /// As [`PostgresLockBuilder::build_advisory`].
    pub async fn build(self) -> Result<PostgresAdvisoryLock, LockError> {
        self.0.build_advisory().await
    }
}

#[async_trait]
impl DistributedLock for PostgresAdvisoryLock {
    /// `pg_try_advisory_xact_lock` in a new transaction; when granted, the fence is drawn on
    /// the fence pool and the transaction is kept open as the lease.
    ///
    /// # Cancel safety
    ///
    /// A transaction dropped unfinished is rolled back, which frees whatever it locked.
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let ttl = ttl::check(ttl)?;
        let inner = &self.inner;
        self.advisory()
            .try_acquire(&inner.pool, &inner.statements, key, ttl)
            .await
    }

    /// Waits in the server's lock queue (first come, first served), in statements bounded by
    /// the time left; behind a transaction pooler, polls instead (a waiter in the queue would
    /// pin one of the pooler's server connections, which the holder needs to draw its fence).
    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let ttl = ttl::check(ttl)?;
        let inner = &self.inner;
        if !inner.statements.persistent {
            return backend::wait::poll_acquire(self, key, ttl, wait).await;
        }
        self.advisory()
            .acquire(&inner.pool, &inner.statements, key, ttl, wait)
            .await
    }

    /// One statement on the holder's connection, which restarts the server's idle countdown.
    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        leasehold::backend::check_kind(lease, &[leasehold::LeaseKind::Exclusive])?;
        let ttl = ttl::check(ttl)?;
        self.advisory()
            .extend(&self.inner.statements, lease, ttl)
            .await
    }

    /// Ends the holder's transaction, which frees the lock and hands it to the first waiter.
    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        leasehold::backend::check_kind(&lease, &[leasehold::LeaseKind::Exclusive])?;
        self.advisory().release(&lease).await
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_notified_wait(self.inner.statements.persistent)
            .with_server_clock(true)
            .with_durable_fences(true)
            .with_lost_with_connection(true)
    }

    /// None: nothing can force an advisory lock free but ending its session.
    fn watch_releases(&self, _key: &LockKey) -> Option<Box<dyn ReleaseWatch>> {
        None
    }
}
