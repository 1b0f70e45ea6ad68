//! [`LockAdmin`] for the lease-table strategy: status, listing and forced release are plain
//! statements on the table. The advisory strategy keeps no per-key state (no expiry, one
//! fence sequence for all keys), so it refuses them.

use std::time::Duration;

use leasehold::{async_trait, LockAdmin, LockError, LockKey, LockStatus};
use sqlx::{postgres::PgRow, Row};

use crate::{
    error::{map, within},
    lock::PostgresLock,
};

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
}
