//! [`LockAdmin`] for Redis: status from the fence counter and the lock's `PTTL`, listing by
//! `SCAN` over fence counters, forced release by a script.

use std::time::Duration;

use std::future::Future;

use futures_util::{StreamExt, TryStreamExt};
use leasehold::{
    async_trait, backend, LeaseKind, LockAdmin, LockError, LockKey, LockStatus, Primitive,
};
use redis::{
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
    Cmd, RedisResult,
};

use crate::{
    conn::Conn,
    error::{bounded, map},
    keys::{LockNames, FENCE, RW_FENCE, SEMAPHORE_FENCE},
    lock::RedisLock,
    scripts,
};

/// Keys asked about per pipeline while listing.
const BATCH: usize = 500;

impl RedisLock {
    /// The status of each key, in one pipelined round trip per [`BATCH`] keys (on a cluster,
    /// whose pipelines stay within one slot: one per key, [`BATCH`] at a time).
    async fn statuses(&self, keys: &[LockKey]) -> Result<Vec<LockStatus>, LockError> {
        let mut out = Vec::with_capacity(keys.len());
        if self.inner.conn.is_cluster() {
            for chunk in keys.chunks(BATCH) {
                let each = chunk
                    .iter()
                    .map(|key| self.pipelined_statuses(std::slice::from_ref(key)));
                for one in futures_util::future::try_join_all(each).await? {
                    out.extend(one);
                }
            }
            return Ok(out);
        }
        for chunk in keys.chunks(BATCH) {
            out.extend(self.pipelined_statuses(chunk).await?);
        }
        Ok(out)
    }

    /// The status of each key, in one pipeline.
    async fn pipelined_statuses(&self, chunk: &[LockKey]) -> Result<Vec<LockStatus>, LockError> {
        let mut conn = self.inner.conn.clone();
        let mut pipe = redis::pipe();
        for key in chunk {
            let names = self.names(key);
            pipe.get(names.fence()).pttl(&names.lock);
        }
        let replies: Vec<(Option<u64>, i64)> =
            bounded(self.inner.call_timeout, pipe.query_async(&mut conn))
                .await
                .map_err(map)?;
        Ok(replies
            .into_iter()
            .map(|(fence, pttl)| {
                // -2: no lock key (free); -1: a lock without a ttl, which only a hand-made
                // key can be (shown as held for ever).
                let remaining = match pttl {
                    -1 => Some(Duration::MAX),
                    ms => u64::try_from(ms).ok().map(Duration::from_millis),
                };
                backend::status(fence, remaining)
            })
            .collect())
    }
}

impl RedisLock {
    /// Every name matching `pattern` on one node, `SCAN` by `SCAN` through `send`.
    async fn scan<F, Fut>(
        &self,
        pattern: &str,
        names: &mut Vec<String>,
        send: F,
    ) -> Result<(), LockError>
    where
        F: Fn(Cmd) -> Fut,
        Fut: Future<Output = RedisResult<(u64, Vec<String>)>>,
    {
        let mut cursor = 0u64;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .to_owned();
            let (next, found) = bounded(self.inner.call_timeout, send(scan))
                .await
                .map_err(map)?;
            names.extend(found);
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

impl RedisLock {
    /// The keys starting with `prefix` that have a counter named `...}<suffix>` (every key
    /// ever granted as that primitive), in key order.
    async fn counted_keys(&self, prefix: &str, suffix: &str) -> Result<Vec<LockKey>, LockError> {
        let namespace = &self.inner.namespace;
        let pattern = LockNames::counter_pattern(namespace, prefix, suffix);
        let mut names = Vec::new();
        match &self.inner.conn {
            Conn::Single(conn) => {
                let conn = conn.clone();
                self.scan(&pattern, &mut names, |scan| {
                    let mut conn = conn.clone();
                    async move { scan.query_async(&mut conn).await }
                })
                .await?;
            }
            Conn::Cluster(cluster, _) => {
                let conn = cluster.connection();
                // Every primary holds its own slots' keys: SCAN each, merged below.
                let primaries =
                    crate::cluster::primaries(&mut conn.clone(), self.inner.call_timeout).await?;
                for (host, port) in primaries {
                    if host.is_empty() {
                        return Err(LockError::transient(
                            crate::error::BACKEND,
                            format!(
                                "CLUSTER SLOTS names no endpoint for the primary on port \
                                 {port}, so list cannot reach its keys"
                            ),
                        ));
                    }
                    let route =
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                    self.scan(&pattern, &mut names, |scan| {
                        let (mut conn, route) = (conn.clone(), route.clone());
                        async move {
                            let reply = conn.route_command(scan, route).await?;
                            Ok(redis::from_redis_value(reply)?)
                        }
                    })
                    .await?;
                }
            }
        }
        let mut keys: Vec<LockKey> = names
            .iter()
            .filter_map(|name| LockNames::key_of_counter(namespace, name, suffix))
            .filter_map(|key| LockKey::new(key).ok())
            .collect();
        // SCAN may return a key twice; the order is the keys' bytes.
        keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        keys.dedup();
        Ok(keys)
    }

    /// The status of a read/write lock or a semaphore, from its script's `status` operation.
    async fn primitive_status(
        &self,
        primitive: Primitive,
        key: &LockKey,
    ) -> Result<LockStatus, LockError> {
        let names = self.names(key);
        let mut conn = self.inner.conn.clone();
        let (script, keys) = match primitive {
            Primitive::RwLock => (&scripts::RW, names.rw().to_vec()),
            _ => (&scripts::SEMAPHORE, names.semaphore().to_vec()),
        };
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut eval = scripts::evalsha(script, &key_refs);
        eval.arg("status");
        let reply: Vec<i64> = self
            .run_script(&mut conn, script, &keys[0], &eval)
            .await
            .map_err(map)?;
        let bad = || {
            LockError::transient(
                crate::error::BACKEND,
                format!(
                    "unexpected reply to a {} status: {reply:?}",
                    primitive.as_str()
                ),
            )
        };
        let (fence, holders, kind, left, limit) = match (primitive, reply.as_slice()) {
            (Primitive::RwLock, [fence, holders, writer, left]) => {
                let kind = if *writer == 1 {
                    LeaseKind::Write
                } else {
                    LeaseKind::Read
                };
                (*fence, *holders, kind, *left, -1)
            }
            (Primitive::Semaphore, [fence, holders, left, limit]) => {
                (*fence, *holders, LeaseKind::Permit, *left, *limit)
            }
            _ => return Err(bad()),
        };
        let remaining = match left {
            // A writer key without a ttl, which only a hand-made key can be.
            -1 => Some(Duration::MAX),
            ms => u64::try_from(ms).ok().map(Duration::from_millis),
        };
        Ok(backend::holders_status(
            u64::try_from(fence).ok(),
            u32::try_from(holders).map_err(|_| bad())?,
            kind,
            remaining,
            u32::try_from(limit).ok(),
        ))
    }
}

/// Needs, beyond the locking ACL of the README, `+scan` (for `list`); `force_release` runs a
/// script of its own (`EVALSHA`, loaded with `SCRIPT LOAD`).
#[async_trait]
impl LockAdmin for RedisLock {
    /// One pipelined round trip: `GET` of the fence counter and `PTTL` of the lock.
    async fn status(&self, key: &LockKey) -> Result<LockStatus, LockError> {
        let mut statuses = self.statuses(std::slice::from_ref(key)).await?;
        Ok(statuses.pop().unwrap_or(backend::status(None, None)))
    }

    /// Every key that was ever locked in this namespace (it has a fence counter), found with
    /// `SCAN`: it walks the whole keyspace, so it is for operators, not for hot paths.
    async fn list(&self, prefix: &str) -> Result<Vec<(LockKey, LockStatus)>, LockError> {
        let keys = self.counted_keys(prefix, FENCE).await?;
        let statuses = self.statuses(&keys).await?;
        Ok(keys.into_iter().zip(statuses).collect())
    }

    /// One script call (the read-only `status` operation of the primitive's script).
    async fn status_of(
        &self,
        primitive: Primitive,
        key: &LockKey,
    ) -> Result<LockStatus, LockError> {
        match primitive {
            Primitive::RwLock | Primitive::Semaphore => self.primitive_status(primitive, key).await,
            _ => self.status(key).await,
        }
    }

    /// `SCAN` over the primitive's fence counters, then one script call per key, at most
    /// 500 of them at once.
    async fn list_of(
        &self,
        primitive: Primitive,
        prefix: &str,
    ) -> Result<Vec<(LockKey, LockStatus)>, LockError> {
        let suffix = match primitive {
            Primitive::RwLock => RW_FENCE,
            Primitive::Semaphore => SEMAPHORE_FENCE,
            _ => return self.list(prefix).await,
        };
        let keys = self.counted_keys(prefix, suffix).await?;
        futures_util::stream::iter(keys)
            .map(|key| async move {
                let status = self.primitive_status(primitive, &key).await?;
                Ok::<_, LockError>((key, status))
            })
            .buffered(BATCH)
            .try_collect()
            .await
    }

    /// One script: `DEL` of the lock and, if it was held, `PUBLISH` to its waiters.
    async fn force_release(&self, key: &LockKey) -> Result<bool, LockError> {
        let names = self.names(key);
        let mut conn = self.inner.conn.clone();
        let mut eval = scripts::evalsha(&scripts::FORCE_RELEASE, &[&names.lock]);
        eval.arg(names.channel()).arg(conn.publish_command());
        let released: i64 = scripts::run(
            &mut conn,
            &scripts::FORCE_RELEASE,
            &names.lock,
            &eval,
            self.inner.call_timeout,
        )
        .await
        .map_err(map)?;
        Ok(released == 1)
    }
}
