//! [`LockAdmin`] for SQLite: status, listing and forced release are plain statements on the
//! table.

use std::time::Duration;

use leasehold::{
    async_trait, backend, LeaseKind, LockAdmin, LockError, LockKey, LockStatus, Primitive,
};
use sqlx::{sqlite::SqliteRow, Row};

use crate::{error::map, lock::SqliteLock, primitives::Space};

/// A read/write lock's or a semaphore's key and status from a row of
/// `HolderStatements::status` or `list`.
fn holders_status_of(row: &SqliteRow, space: Space) -> Option<(LockKey, LockStatus)> {
    let key = LockKey::new(row.try_get::<String, _>(0).ok()?).ok()?;
    let fence: Option<i64> = row.try_get(1).ok();
    let holders: i64 = row.try_get(2).unwrap_or(0);
    let writer: bool = row.try_get(3).unwrap_or(false);
    let left_ms: Option<i64> = row.try_get(4).ok().flatten();
    let limit: Option<i64> = row.try_get(5).ok().flatten();
    let kind = match (space, writer) {
        (Space::Semaphore, _) => LeaseKind::Permit,
        (Space::Rw, true) => LeaseKind::Write,
        (Space::Rw, false) => LeaseKind::Read,
    };
    let status = backend::holders_status(
        fence.and_then(|f| u64::try_from(f).ok()),
        u32::try_from(holders).unwrap_or(u32::MAX),
        kind,
        left_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis),
        limit.and_then(|l| u32::try_from(l).ok()),
    );
    Some((key, status))
}

fn space_of(primitive: Primitive) -> Option<Space> {
    match primitive {
        Primitive::RwLock => Some(Space::Rw),
        Primitive::Semaphore => Some(Space::Semaphore),
        _ => None,
    }
}

impl SqliteLock {
    /// The rows of `sql` (a `HolderStatements` admin query) for `space` and `key` or prefix.
    async fn holder_rows(
        &self,
        sql: &str,
        space: Space,
        key: &str,
        for_key: Option<&LockKey>,
    ) -> Result<Vec<SqliteRow>, LockError> {
        let clock = &self.inner.clock;
        let now = clock.now_ms()?;
        sqlx::query(sql)
            .bind(space.as_str())
            .bind(key)
            .bind(now)
            .bind(clock.boot())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| map(e, for_key))
    }
}

fn status_of(fence: Option<i64>, left_ms: Option<i64>) -> LockStatus {
    backend::status(
        fence.and_then(|f| u64::try_from(f).ok()),
        left_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis),
    )
}

#[async_trait]
impl LockAdmin for SqliteLock {
    async fn status(&self, key: &LockKey) -> Result<LockStatus, LockError> {
        let clock = &self.inner.clock;
        let now = clock.now_ms()?;
        let row = sqlx::query(&self.inner.statements.status)
            .bind(key.as_str())
            .bind(now)
            .bind(clock.boot())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| map(e, Some(key)))?;
        Ok(match row {
            None => backend::status(None, None),
            Some(row) => status_of(row.try_get(0).ok(), row.try_get(1).ok().flatten()),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(LockKey, LockStatus)>, LockError> {
        let clock = &self.inner.clock;
        let now = clock.now_ms()?;
        let rows = sqlx::query(&self.inner.statements.list)
            .bind(prefix)
            .bind(now)
            .bind(clock.boot())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| map(e, None))?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let key = LockKey::new(row.try_get::<String, _>(0).ok()?).ok()?;
                Some((
                    key,
                    status_of(row.try_get(1).ok(), row.try_get(2).ok().flatten()),
                ))
            })
            .collect())
    }

    async fn force_release(&self, key: &LockKey) -> Result<bool, LockError> {
        let changed = self
            .update(&self.inner.statements.force_release, key, None, None)
            .await?;
        if changed == 1 {
            self.inner.wakers.wake(key.as_str());
        }
        Ok(changed == 1)
    }

    async fn status_of(
        &self,
        primitive: Primitive,
        key: &LockKey,
    ) -> Result<LockStatus, LockError> {
        let Some(space) = space_of(primitive) else {
            return self.status(key).await;
        };
        let sql = &self.inner.statements.holders.status;
        let rows = self
            .holder_rows(sql, space, key.as_str(), Some(key))
            .await?;
        Ok(rows
            .first()
            .and_then(|row| holders_status_of(row, space))
            .map_or(backend::status(None, None), |(_, status)| status))
    }

    async fn list_of(
        &self,
        primitive: Primitive,
        prefix: &str,
    ) -> Result<Vec<(LockKey, LockStatus)>, LockError> {
        let Some(space) = space_of(primitive) else {
            return self.list(prefix).await;
        };
        let sql = &self.inner.statements.holders.list;
        let rows = self.holder_rows(sql, space, prefix, None).await?;
        Ok(rows
            .iter()
            .filter_map(|row| holders_status_of(row, space))
            .collect())
    }
}
