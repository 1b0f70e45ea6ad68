//! [`LockAdmin`] for the lease-table strategy: status, listing and forced release are plain
//! statements on the table. The advisory strategy keeps no per-key state (no expiry, one
//! fence sequence for all keys), so it refuses them.

use std::time::Duration;

use leasehold::{async_trait, LeaseKind, LockAdmin, LockError, LockKey, LockStatus, Primitive};
use sqlx::{postgres::PgRow, Row};

use crate::{
    error::{map, within},
    held::Space,
    lock::PostgresLock,
};

/// A read/write lock's or a semaphore's status from a row of `HeldStatements::status` or
/// `list`, whose columns start at `first`.
fn holders_status_of(row: &PgRow, first: usize, space: Space) -> LockStatus {
    let fence: Option<i64> = row.try_get(first).ok().flatten();
    let holders: i64 = row.try_get(first + 1).unwrap_or(0);
    let writer: bool = row.try_get(first + 2).unwrap_or(false);
    let left_ms: Option<i64> = row.try_get(first + 3).ok().flatten();
    let limit: Option<i32> = row.try_get(first + 4).ok().flatten();
    let kind = match (space, writer) {
        (Space::Semaphore, _) => LeaseKind::Permit,
        (Space::Rw, true) => LeaseKind::Write,
        (Space::Rw, false) => LeaseKind::Read,
    };
    leasehold::backend::holders_status(
        fence.and_then(|f| u64::try_from(f).ok()),
        u32::try_from(holders).unwrap_or(u32::MAX),
        kind,
        left_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis),
        limit.and_then(|l| u32::try_from(l).ok()),
    )
}

fn space_of(primitive: Primitive) -> Option<Space> {
    match primitive {
        Primitive::RwLock => Some(Space::Rw),
        Primitive::Semaphore => Some(Space::Semaphore),
        _ => None,
    }
}

fn status_of(row: &PgRow, first: usize) -> LockStatus {
    let fence: Option<i64> = row.try_get(first).ok();
    let left_ms: Option<i64> = row.try_get(first + 1).ok().flatten();
    leasehold::backend::status(
        fence.and_then(|f| u64::try_from(f).ok()),
        left_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis),
    )
}

impl PostgresLock {
    fn lease_table_only(&self, operation: &'static str) -> Result<(), LockError> {
        if self.advisory.is_some() {
            return Err(LockError::Unsupported {
                operation,
                backend: "the postgres advisory strategy",
                reason: "it keeps no per-key state to show or clear; use the lease table \
                         (PostgresAdvisoryLock does not offer these calls at all)",
            });
        }
        Ok(())
    }

    /// Runs an admin statement in a transaction of its own, which keeps it on one server
    /// connection behind a transaction pooler (admin calls are rare; the two extra round trips
    /// do not matter). `sql` binds `key` (or the prefix) first, then `extra` if given.
    async fn admin_rows(
        &self,
        sql: &str,
        key: &str,
        extra: Option<&str>,
        for_key: Option<&LockKey>,
    ) -> Result<Vec<PgRow>, LockError> {
        let request = async {
            let mut tx = self.inner.pool.begin().await?;
            let mut query = sqlx::query(sql)
                .persistent(self.inner.statements.persistent)
                .bind(key);
            if let Some(extra) = extra {
                query = query.bind(extra);
            }
            let rows = query.fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok(rows)
        };
        within(self.inner.request_timeout, request)
            .await
            .map_err(|e| map(e, for_key))
    }
}

/// Lease table only: a `PostgresLock` built with the deprecated advisory strategy returns
/// [`LockError::Unsupported`] from each ([`PostgresAdvisoryLock`](crate::PostgresAdvisoryLock)
/// has no `LockAdmin` at all).
#[async_trait]
impl LockAdmin for PostgresLock {
    async fn status(&self, key: &LockKey) -> Result<LockStatus, LockError> {
        self.lease_table_only("status")?;
        let sql = &self.inner.statements.status;
        let rows = self.admin_rows(sql, key.as_str(), None, Some(key)).await?;
        Ok(rows
            .first()
            .map_or(leasehold::backend::status(None, None), |row| {
                status_of(row, 0)
            }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(LockKey, LockStatus)>, LockError> {
        self.lease_table_only("list")?;
        let sql = &self.inner.statements.list;
        let rows = self.admin_rows(sql, prefix, None, None).await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let key = LockKey::new(row.try_get::<String, _>(0).ok()?).ok()?;
                Some((key, status_of(row, 1)))
            })
            .collect())
    }

    async fn force_release(&self, key: &LockKey) -> Result<bool, LockError> {
        self.lease_table_only("force_release")?;
        let sql = &self.inner.statements.force_release;
        let channel = Some(self.inner.channel.as_str());
        let rows = self
            .admin_rows(sql, key.as_str(), channel, Some(key))
            .await?;
        Ok(!rows.is_empty())
    }

    /// One statement over the key's rows of `<table>_held`.
    async fn status_of(
        &self,
        primitive: Primitive,
        key: &LockKey,
    ) -> Result<LockStatus, LockError> {
        let Some(space) = space_of(primitive) else {
            return self.status(key).await;
        };
        self.lease_table_only("status_of")?;
        let sql = &self.inner.held.status;
        let rows = self
            .admin_rows(sql, key.as_str(), Some(space.as_str()), Some(key))
            .await?;
        Ok(rows
            .first()
            .map_or(leasehold::backend::status(None, None), |row| {
                holders_status_of(row, 0, space)
            }))
    }

    /// One statement over `<table>_held`, grouped by key.
    async fn list_of(
        &self,
        primitive: Primitive,
        prefix: &str,
    ) -> Result<Vec<(LockKey, LockStatus)>, LockError> {
        let Some(space) = space_of(primitive) else {
            return self.list(prefix).await;
        };
        self.lease_table_only("list_of")?;
        let sql = &self.inner.held.list;
        let rows = self
            .admin_rows(sql, prefix, Some(space.as_str()), None)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let key = LockKey::new(row.try_get::<String, _>(0).ok()?).ok()?;
                Some((key, holders_status_of(row, 1, space)))
            })
            .collect())
    }
}
