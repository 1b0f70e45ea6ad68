//! [`LockAdmin`] for SQLite: status, listing and forced release are plain statements on the
//! table.

use std::time::Duration;

use leasehold::{async_trait, backend, LockAdmin, LockError, LockKey, LockStatus};
use sqlx::Row;

use crate::{error::map, lock::SqliteLock};

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
}
