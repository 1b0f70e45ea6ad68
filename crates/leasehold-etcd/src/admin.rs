//! [`LockAdmin`] for [`EtcdLock`]: status, listing and forced release.
//!
//! A lock key's directory is empty once nobody holds or waits for it, so every acquisition
//! attempt also touches a record, `<prefix>/<encoded key>` (no lease: it outlives the hold), in
//! the transaction that puts its key. The record's mod revision is then that attempt's
//! revision: the fence it got if it won. For a free key, status reports it as the last fence:
//! never below the last fence handed out, above it if the last attempt did not win.

use async_trait::async_trait;
use etcd_client::{GetOptions, SortOrder, SortTarget};
use leasehold::{backend, LockAdmin, LockError, LockKey, LockStatus};

use crate::{keys, lock::EtcdLock, ops};

impl EtcdLock {
    async fn status_in(&self, dir: &str) -> Result<LockStatus, LockError> {
        let client = self.client();
        let recorded = ops::get(client, ops::record_of(dir), None)
            .await?
            .kvs()
            .first()
            .and_then(|kv| u64::try_from(kv.mod_revision()).ok());
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let reply = ops::get(client, dir, Some(options)).await?;
        let Some(holder) = reply.kvs().first() else {
            return Ok(backend::status(recorded, None));
        };
        let fence = u64::try_from(holder.create_revision()).ok();
        let left = ops::time_left(client, holder.lease()).await?;
        // Held: the holder's fence (later attempts may have touched the record since).
        Ok(backend::status(fence.or(recorded), left))
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
        let options = GetOptions::new().with_prefix().with_keys_only();
        let reply = ops::get(self.client(), &scan, Some(options)).await?;
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
        let reply = ops::get(self.client(), &dir, Some(options)).await?;
        match reply.kvs().first() {
            Some(holder) => ops::revoke(self.client(), holder.lease()).await,
            None => Ok(false),
        }
    }
}
