//! [`LockAdmin`] for Redis: status from the fence counter and the lock's `PTTL`, listing by
//! `SCAN` over fence counters, forced release by a script.

use std::time::Duration;

use leasehold::{async_trait, LockAdmin, LockError, LockKey, LockStatus};

use crate::{
    error::{bounded, map},
    keys::LockNames,
    lock::RedisLock,
    scripts,
};

/// Keys asked about per pipeline while listing.
const BATCH: usize = 500;

impl RedisLock {
    /// The status of each key, in one pipelined round trip per [`BATCH`] keys.
    async fn statuses(&self, keys: &[LockKey]) -> Result<Vec<LockStatus>, LockError> {
        let mut conn = self.inner.conn.clone();
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for key in chunk {
                let names = self.names(key);
                pipe.get(names.fence()).pttl(&names.lock);
            }
            let replies: Vec<(Option<u64>, i64)> =
                bounded(self.inner.call_timeout, pipe.query_async(&mut conn))
                    .await
                    .map_err(map)?;
            out.extend(replies.into_iter().map(|(fence, pttl)| {
                // -2: no lock key (free); -1: a lock without a ttl, which only a hand-made
                // key can be (shown as held for ever).
                let remaining = match pttl {
                    -1 => Some(Duration::MAX),
                    ms => u64::try_from(ms).ok().map(Duration::from_millis),
                };
                leasehold::backend::status(fence, remaining)
            }));
        }
        Ok(out)
    }
}

/// Needs, beyond the locking ACL of the README, `+scan` (for `list`); `force_release` runs a
/// script of its own (`EVALSHA`, loaded with `SCRIPT LOAD`).
#[async_trait]
impl LockAdmin for RedisLock {
    /// One pipelined round trip: `GET` of the fence counter and `PTTL` of the lock.
    async fn status(&self, key: &LockKey) -> Result<LockStatus, LockError> {
        let mut statuses = self.statuses(std::slice::from_ref(key)).await?;
        Ok(statuses
            .pop()
            .unwrap_or(leasehold::backend::status(None, None)))
    }

    /// Every key that was ever locked in this namespace (it has a fence counter), found with
    /// `SCAN`: it walks the whole keyspace, so it is for operators, not for hot paths.
    async fn list(&self, prefix: &str) -> Result<Vec<(LockKey, LockStatus)>, LockError> {
        let namespace = &self.inner.namespace;
        let pattern = LockNames::fence_pattern(namespace, prefix);
        let mut conn = self.inner.conn.clone();
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .to_owned();
            let (next, names): (u64, Vec<String>) =
                bounded(self.inner.call_timeout, scan.query_async(&mut conn))
                    .await
                    .map_err(map)?;
            keys.extend(
                names
                    .iter()
                    .filter_map(|name| LockNames::key_of_fence(namespace, name))
                    .filter_map(|key| LockKey::new(key).ok()),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key twice; the order is the keys' bytes.
        keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        keys.dedup();
        let statuses = self.statuses(&keys).await?;
        Ok(keys.into_iter().zip(statuses).collect())
    }

    /// One script: `DEL` of the lock and, if it was held, `PUBLISH` to its waiters.
    async fn force_release(&self, key: &LockKey) -> Result<bool, LockError> {
        let names = self.names(key);
        let mut conn = self.inner.conn.clone();
        let mut script = scripts::FORCE_RELEASE.key(&names.lock);
        script.arg(names.channel());
        let released: i64 = bounded(self.inner.call_timeout, script.invoke_async(&mut conn))
            .await
            .map_err(map)?;
        Ok(released == 1)
    }
}
