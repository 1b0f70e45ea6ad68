//! [`LockAdmin`] for the lease-table strategy: status, listing and forced release are plain
//! statements on the table. The advisory strategy keeps no per-key state (no expiry, one
//! fence sequence for all keys), so it refuses them.

use std::time::Duration;

use leasehold::{async_trait, LockAdmin, LockError, LockKey, LockStatus};
use sqlx::{postgres::PgRow, Row};

use crate::{error::map, lock::PostgresLock};

fn status_of(row: &PgRow, first: usize) -> LockStatus {
    let fence: Option<i64> = row.try_get(first).ok();
    let left_ms: Option<i64> = row.try_get(first + 1).ok().flatten();
    LockStatus::new(
        fence.and_then(|f| u64::try_from(f).ok()),
        left_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis),
    )
}

impl PostgresLock {
    fn lease_table_only(&self, operation: &str) -> Result<(), LockError> {
        if self.inner.advisory.is_some() {
            return Err(LockError::invalid_config(
                format!("operation `{operation}`"),
                "the advisory strategy keeps no per-key state to show or clear; use the lease table",
            ));
        }
        Ok(())
    }
}

/// Lease table only: the advisory strategy returns [`LockError::InvalidConfig`] from each.
/// Each statement runs in a transaction of its own, which keeps it on one server connection
/// behind a transaction pooler (admin calls are rare; the two extra round trips do not matter).
#[async_trait]
impl LockAdmin for PostgresLock {
    async fn status(&self, key: &LockKey) -> Result<LockStatus, LockError> {
        self.lease_table_only("status")?;
        let statements = &self.inner.statements;
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(|e| map(e, Some(key)))?;
        let row = sqlx::query(&statements.status)
            .persistent(statements.persistent)
            .bind(key.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| map(e, Some(key)))?;
        tx.commit().await.map_err(|e| map(e, Some(key)))?;
        Ok(row.map_or(LockStatus::new(None, None), |row| status_of(&row, 0)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(LockKey, LockStatus)>, LockError> {
        self.lease_table_only("list")?;
        let statements = &self.inner.statements;
        let mut tx = self.inner.pool.begin().await.map_err(|e| map(e, None))?;
        let rows = sqlx::query(&statements.list)
            .persistent(statements.persistent)
            .bind(prefix)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| map(e, None))?;
        tx.commit().await.map_err(|e| map(e, None))?;
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
        let statements = &self.inner.statements;
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(|e| map(e, Some(key)))?;
        let released = sqlx::query(&statements.force_release)
            .persistent(statements.persistent)
            .bind(key.as_str())
            .bind(self.inner.channel.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| map(e, Some(key)))?;
        tx.commit().await.map_err(|e| map(e, Some(key)))?;
        Ok(released.is_some())
    }
}
