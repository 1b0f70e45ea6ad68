//! [`LockAdmin`] for [`EtcdLock`]: status, listing and forced release.
//!
//! A lock key's directory is empty once nobody holds or waits for it, so each holder records
//! its fence, after winning, in `<prefix>/<encoded key>` (no lease: it outlives the hold). A
//! record write that fails leaves the previous fence there; status reports the larger of the
//! record and the current holder's fence.

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use leasehold::{backend, LockAdmin, LockError, LockKey, LockStatus};
use std::time::Duration;

use crate::{error::map, keys, lock::EtcdLock, ops};

/// The record of a key's last fence: zero-padded, so the store's byte order is numeric order.
fn padded(fence: u64) -> String {
    format!("{fence:020}")
}

fn record_of(dir: &str) -> &str {
    dir.strip_suffix('/').unwrap_or(dir)
}

impl EtcdLock {
    /// Records `fence` as the last fence of the lock whose directory is `dir`, unless a larger
    /// one is there already.
    pub(crate) async fn record_fence(&self, dir: &str, fence: u64) -> Result<(), LockError> {
        let record = record_of(dir);
        let value = padded(fence);
        let raise = Txn::new()
            .when([Compare::value(record, CompareOp::Less, value.as_str())])
            .and_then([TxnOp::put(record, value.as_str(), None)]);
        let txn = Txn::new()
            .when([Compare::create_revision(record, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(record, value.as_str(), None)])
            .or_else([TxnOp::txn(raise)]);
        self.client().kv_client().txn(txn).await.map_err(map)?;
        Ok(())
    }

    async fn status_in(&self, dir: &str) -> Result<LockStatus, LockError> {
        let client = self.client();
        let recorded = client
            .kv_client()
            .get(record_of(dir), None)
            .await
            .map_err(map)?
            .kvs()
            .first()
            .and_then(|kv| kv.value_str().ok()?.parse::<u64>().ok());
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let reply = client
            .kv_client()
            .get(dir, Some(options))
            .await
            .map_err(map)?;
        let Some(holder) = reply.kvs().first() else {
            return Ok(backend::status(recorded, None));
        };
        let fence = u64::try_from(holder.create_revision()).ok();
        let left = match client
            .lease_client()
            .time_to_live(holder.lease(), None)
            .await
        {
            Ok(ttl) if ttl.ttl() > 0 => Some(Duration::from_secs(ttl.ttl().unsigned_abs())),
            Ok(_) => None,
            Err(error) => return Err(map(error)),
        };
        let last = recorded.max(fence);
        Ok(backend::status(last, left))
    }
}

#[async_trait]
impl LockAdmin for EtcdLock {
    /// The holder's fence and time left (whole seconds, as etcd reports a lease's ttl), or the
    /// last recorded fence of a free key.
    ///
    /// # Errors
    ///
    /// A [`LockError::Backend`] when the cluster fails.
    async fn status(&self, key: &LockKey) -> Result<LockStatus, LockError> {
        self.status_in(&keys::dir(self.prefix(), key)).await
    }

    /// Every key ever locked under `prefix` (held or not), in byte order.
    ///
    /// # Errors
    ///
    /// A [`LockError::Backend`] when the cluster fails.
    async fn list(&self, prefix: &str) -> Result<Vec<(LockKey, LockStatus)>, LockError> {
        // Percent-encoding keeps byte order only up to the first encoded byte, so list the
        // records under the widest encoded prefix and filter and sort the decoded keys.
        let wide = keys::encoded_prefix(prefix);
        let scan = format!("{}/{wide}", self.prefix());
        let reply = self
            .client()
            .kv_client()
            .get(
                scan.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .map_err(map)?;
        let mut found: Vec<LockKey> = reply
            .kvs()
            .iter()
            .filter_map(|kv| keys::record_key_of(self.prefix(), kv.key()))
            .filter(|key| key.as_str().starts_with(prefix))
            .collect();
        found.sort_unstable_by(|a, b| a.as_str().as_bytes().cmp(b.as_str().as_bytes()));
        found.dedup();
        let mut out = Vec::with_capacity(found.len());
        for key in found {
            let status = self.status_in(&keys::dir(self.prefix(), &key)).await?;
            out.push((key, status));
        }
        Ok(out)
    }

    /// Revokes the holder's etcd lease (its key goes, the next in line is woken); `false` if
    /// nobody held the key.
    ///
    /// # Errors
    ///
    /// A [`LockError::Backend`] when the cluster fails.
    async fn force_release(&self, key: &LockKey) -> Result<bool, LockError> {
        let dir = keys::dir(self.prefix(), key);
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1)
            .with_keys_only();
        let reply = self
            .client()
            .kv_client()
            .get(dir.as_str(), Some(options))
            .await
            .map_err(map)?;
        match reply.kvs().first() {
            Some(holder) => ops::revoke(self.client(), holder.lease()).await,
            None => Ok(false),
        }
    }
}
