//! [`SqliteLockBuilder`]: opening a database file, creating or migrating its table.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use leasehold::{
    backend::{wait::jitter, Wakers},
    LockError,
};
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
    SqlitePool,
};

use crate::{
    clock::Clock,
    error::{is_busy, map},
    lock::{Inner, SqliteLock, DEFAULT_BUSY_TIMEOUT, DEFAULT_TABLE},
    sql::{check_table, Statements, FORMAT},
};

/// Builds a [`SqliteLock`] with a table name or busy timeout of your own.
#[derive(Debug, Clone)]
#[must_use]
pub struct SqliteLockBuilder {
    path: PathBuf,
    table: String,
    busy_timeout: Duration,
}

impl SqliteLockBuilder {
    /// The table (default `leasehold_locks`).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// How long a statement waits for another process's write before giving up (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Opens (creating the file and table if missing).
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidConfig`] for a bad table name (nothing is opened) or a path that
    /// cannot be opened; [`LockError::Backend`] for failures of SQLite itself.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may leave the file and table created; nothing else.
    pub async fn open(self) -> Result<SqliteLock, LockError> {
        check_table(&self.table)?;
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(|e| map(e, None))?
            .filename(&self.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(self.busy_timeout);
        let statements = Statements::new(&self.table);
        let clock = Clock::open()?;
        // Opening switches the file to WAL and creates the table, which needs the write lock:
        // when other processes open the same file at that moment, SQLite says busy. Retry
        // within the busy timeout.
        let started = Instant::now();
        let pool = loop {
            match self.connect(&options, &statements, &clock).await {
                Ok(pool) => break pool,
                Err(error) if is_busy(&error) && started.elapsed() < self.busy_timeout => {
                    tokio::time::sleep(jitter(Duration::from_millis(50))).await;
                }
                Err(error) if is_busy(&error) => return Err(map(error, None)),
                Err(sqlx::Error::Protocol(newer)) => {
                    return Err(LockError::invalid_config(
                        format!("sqlite database {}", self.path.display()),
                        newer,
                    ))
                }
                Err(error) => {
                    return Err(LockError::invalid_config(
                        format!("sqlite database {}", self.path.display()),
                        error.to_string(),
                    ))
                }
            }
        };
        Ok(SqliteLock {
            inner: Arc::new(Inner {
                pool,
                statements,
                path: self.path,
                table: self.table,
                wakers: Wakers::new(),
                busy_timeout: self.busy_timeout,
                clock,
            }),
        })
    }
}

impl SqliteLockBuilder {
    async fn connect(
        &self,
        options: &SqliteConnectOptions,
        statements: &Statements,
        clock: &Clock,
    ) -> Result<SqlitePool, sqlx::Error> {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        let mut conn = pool.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let migrated = self.migrate(&mut conn, statements, clock).await;
        let end = if migrated.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        let ended = sqlx::query(end).execute(&mut *conn).await;
        migrated?;
        ended?;
        Ok(pool)
    }

    /// Creates the table, or brings one of the old format to format 2, inside the caller's
    /// IMMEDIATE transaction (so two processes opening the file at once migrate it once).
    /// A file whose `user_version` is newer than this crate's format is refused.
    async fn migrate(
        &self,
        conn: &mut sqlx::SqliteConnection,
        statements: &Statements,
        clock: &Clock,
    ) -> Result<(), sqlx::Error> {
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *conn)
            .await?;
        if version > FORMAT {
            return Err(sqlx::Error::Protocol(format!(
                "the file uses lease format {version}, newer than this leasehold-sqlite's \
                 ({FORMAT}): upgrade leasehold-sqlite in every program that opens it"
            )));
        }
        let columns: Vec<String> = sqlx::query_scalar(&statements.columns)
            .bind(&self.table)
            .fetch_all(&mut *conn)
            .await?;
        if columns.is_empty() {
            sqlx::query(&statements.create_table)
                .execute(&mut *conn)
                .await?;
        } else if !columns.iter().any(|c| c == "expires_ms") {
            let now = clock
                .now_ms()
                .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
            for (n, sql) in statements.migrate.iter().enumerate() {
                let query = sqlx::query(sql);
                let query = if n == 1 {
                    query.bind(now).bind(clock.boot())
                } else {
                    query
                };
                query.execute(&mut *conn).await?;
            }
        }
        // Read/write locks and semaphores: tables of their own, created by the first binary
        // that knows them (older ones never read them).
        for create in &statements.holders.create {
            sqlx::query(create).execute(&mut *conn).await?;
        }
        if version < FORMAT {
            sqlx::query(&format!("PRAGMA user_version = {FORMAT}"))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

impl SqliteLock {
    /// Opens the database at `path` (creating it and the table if missing) with defaults.
    ///
    /// # Errors
    ///
    /// As [`SqliteLockBuilder::open`].
    ///
    /// # Cancel safety
    ///
    /// As [`SqliteLockBuilder::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, LockError> {
        Self::builder(path).open().await
    }

    /// A builder for the database at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteLockBuilder {
        SqliteLockBuilder {
            path: path.as_ref().to_path_buf(),
            table: DEFAULT_TABLE.to_owned(),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
        }
    }
}
