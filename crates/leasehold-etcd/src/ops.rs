//! The etcd requests the lock is made of, one function each.

use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse, WatchFilterType, WatchOptions,
};
use leasehold::LockError;

use crate::error::{is_lease_gone, map, never_sent};

/// Runs `call`, again (up to 5 more times) while it fails before its request left: the client
/// balances over every member and keeps a dead one in its set, so a request may be routed to a
/// member that refuses the connection while the others serve.
pub(crate) async fn sent<T, F, Fut>(mut call: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut retries = 5;
    loop {
        match call().await {
            Err(error) if retries > 0 && never_sent(&error) => retries -= 1,
            other => return other,
        }
    }
}

/// The position of an acquisition's key in its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Queued {
    /// The create revision of our key: the fence if it becomes the holder.
    pub(crate) mine: i64,
    /// The lowest create revision in the directory (ours included), if the reply had it.
    pub(crate) first: Option<i64>,
}

/// What an acquisition's key holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Own {
    pub(crate) lease: i64,
    pub(crate) create_revision: i64,
}

/// Grants a lease of `secs` seconds; its id.
pub(crate) async fn grant(client: &Client, secs: i64) -> Result<(i64, i64), LockError> {
    let reply = sent(|| async { client.lease_client().grant(secs, None).await })
        .await
        .map_err(map)?;
    Ok((reply.id(), reply.ttl()))
}

/// Revokes a lease (and so deletes the keys attached to it): `false` if it was already gone.
pub(crate) async fn revoke(client: &Client, lease: i64) -> Result<bool, LockError> {
    match sent(|| async { client.lease_client().revoke(lease).await }).await {
        Ok(_) => Ok(true),
        Err(error) if is_lease_gone(&error) => Ok(false),
        Err(error) => Err(map(error)),
    }
}

/// Renews a lease to its granted ttl: `false` if it was already gone.
pub(crate) async fn keep_alive(client: &Client, lease: i64) -> Result<bool, LockError> {
    match sent(|| async { client.lease_client().keep_alive(lease).await }).await {
        Ok(_) => Ok(true),
        Err(error) if is_lease_gone(&error) => Ok(false),
        Err(error) => Err(map(error)),
    }
}

/// A range read.
pub(crate) async fn get(
    client: &Client,
    key: &str,
    options: Option<GetOptions>,
) -> Result<etcd_client::GetResponse, LockError> {
    sent(|| async { client.kv_client().get(key, options.clone()).await })
        .await
        .map_err(map)
}

/// The time left on a lease (whole seconds, as etcd reports it), `None` if it is gone.
pub(crate) async fn time_left(client: &Client, lease: i64) -> Result<Option<Duration>, LockError> {
    match sent(|| async { client.lease_client().time_to_live(lease, None).await }).await {
        // etcd answers -1 for a lease it does not know, and whole seconds, truncated, for a live
        // one: 0 means under a second left.
        Ok(reply) if reply.ttl() >= 0 => Ok(Some(Duration::from_secs(reply.ttl().unsigned_abs()))),
        Ok(_) => Ok(None),
        Err(error) if is_lease_gone(&error) => Ok(None),
        Err(error) => Err(map(error)),
    }
}

/// The ttl a lease was granted with, `None` if it is gone.
pub(crate) async fn granted_ttl(client: &Client, lease: i64) -> Result<Option<i64>, LockError> {
    match sent(|| async { client.lease_client().time_to_live(lease, None).await }).await {
        Ok(reply) if reply.ttl() >= 0 => Ok(Some(reply.granted_ttl())),
        Ok(_) => Ok(None),
        Err(error) if is_lease_gone(&error) => Ok(None),
        Err(error) => Err(map(error)),
    }
}

/// The record of the lock whose directory is `dir`: `<prefix>/<encoded key>`.
pub(crate) fn record_of(dir: &str) -> &str {
    dir.strip_suffix('/').unwrap_or(dir)
}

/// The directory's first key, and whether it is `mine` (read by a key-only range read).
pub(crate) async fn first_is(client: &Client, dir: &str, mine: i64) -> Result<bool, LockError> {
    let reply = get(client, dir, Some(first_created())).await?;
    Ok(reply.kvs().first().map(|kv| kv.create_revision()) == Some(mine))
}

fn first_created() -> GetOptions {
    GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1)
        .with_keys_only()
}

/// Puts our key (`own`, holding `token`) on `lease` and reads the directory's first key, in one
/// transaction. It also touches the lock key's record (`dir` without its last `/`, no lease):
/// its mod revision is that of the last acquisition attempt, never below the last fence handed
/// out, which is what [`LockAdmin`](leasehold::LockAdmin) reports for a free key.
pub(crate) async fn enqueue(
    client: &Client,
    dir: &str,
    own: &str,
    token: &str,
    lease: i64,
) -> Result<Queued, LockError> {
    let txn = Txn::new()
        .when([Compare::create_revision(own, CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(own, token, Some(PutOptions::new().with_lease(lease))),
            TxnOp::get(dir, Some(first_created())),
            TxnOp::put(record_of(dir), "", None),
        ]);
    let reply = sent(|| async { client.kv_client().txn(txn.clone()).await })
        .await
        .map_err(|error| {
            // The lease ended between its grant and the put (a long pause): try again.
            if is_lease_gone(&error) {
                LockError::transient(crate::error::BACKEND, error)
            } else {
                map(error)
            }
        })?;
    if !reply.succeeded() {
        return Err(LockError::permanent(
            crate::error::BACKEND,
            "an acquisition's key already existed (a token drawn twice)",
        ));
    }
    let mine = reply
        .header()
        .map(|header| header.revision())
        .ok_or_else(|| LockError::transient(crate::error::BACKEND, "a reply without a header"))?;
    let first = reply.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.create_revision()),
        _ => None,
    });
    Ok(Queued { mine, first })
}

/// The key created last before `mine` in `dir` (the one to wait for), and the revision the
/// answer was read at.
pub(crate) async fn predecessor(
    client: &Client,
    dir: &str,
    mine: i64,
) -> Result<(Option<Vec<u8>>, i64), LockError> {
    let options = GetOptions::new()
        .with_prefix()
        .with_max_create_revision(mine - 1)
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(1)
        .with_keys_only();
    let reply = client
        .kv_client()
        .get(dir, Some(options))
        .await
        .map_err(map)?;
    let revision = reply.header().map_or(0, |header| header.revision());
    Ok((reply.kvs().first().map(|kv| kv.key().to_vec()), revision))
}

/// Whether `key` exists (a key-only read).
pub(crate) async fn exists(client: &Client, key: &str) -> Result<bool, LockError> {
    let reply = get(client, key, Some(GetOptions::new().with_keys_only())).await?;
    Ok(!reply.kvs().is_empty())
}

/// Our key's lease and create revision, if it still holds `token`.
pub(crate) async fn own(client: &Client, own: &str, token: &str) -> Result<Option<Own>, LockError> {
    let reply = sent(|| async { client.kv_client().get(own, None).await })
        .await
        .map_err(map)?;
    Ok(reply
        .kvs()
        .first()
        .filter(|kv| kv.value() == token.as_bytes())
        .map(|kv| Own {
            lease: kv.lease(),
            create_revision: kv.create_revision(),
        }))
}

/// Whether our key still holds `token` on `lease` (read after a renewal: etcd 3.4.23 can
/// report a renewal of a revoked lease as a success, etcd-io/etcd#20813).
pub(crate) async fn confirm(
    client: &Client,
    own: &str,
    token: &str,
    lease: i64,
) -> Result<bool, LockError> {
    let txn = Txn::new().when([
        Compare::value(own, CompareOp::Equal, token),
        Compare::lease(own, CompareOp::Equal, lease),
    ]);
    let reply = sent(|| async { client.kv_client().txn(txn.clone()).await });
    Ok(reply.await.map_err(map)?.succeeded())
}

/// Moves our key from lease `old` to lease `new`, if it still holds `token` on `old`.
pub(crate) async fn move_to(
    client: &Client,
    own: &str,
    token: &str,
    old: i64,
    new: i64,
) -> Result<bool, LockError> {
    let txn = Txn::new()
        .when([
            Compare::value(own, CompareOp::Equal, token),
            Compare::lease(own, CompareOp::Equal, old),
        ])
        .and_then([TxnOp::put(
            own,
            token,
            Some(PutOptions::new().with_lease(new)),
        )]);
    let reply = sent(|| async { client.kv_client().txn(txn.clone()).await });
    Ok(reply.await.map_err(map)?.succeeded())
}

/// Waits until `key` is deleted at a revision from `from` on, the watch is cancelled (a
/// compacted revision), or `until`: the caller reads the directory again in every case.
pub(crate) async fn wait_deleted(
    client: &Client,
    key: &[u8],
    from: i64,
    until: Instant,
) -> Result<(), LockError> {
    let options = WatchOptions::new()
        .with_start_revision(from)
        .with_filters([WatchFilterType::NoPut]);
    let watch = async {
        let mut stream = sent(|| async {
            client
                .watch_client()
                .watch(key, Some(options.clone()))
                .await
        })
        .await
        .map_err(map)?;
        while let Some(reply) = stream.message().await.map_err(map)? {
            if reply.canceled() || reply.compact_revision() != 0 {
                return Ok(());
            }
            if reply
                .events()
                .iter()
                .any(|event| event.event_type() == EventType::Delete)
            {
                return Ok(());
            }
        }
        Ok(())
    };
    tokio::time::timeout_at(until.into(), watch)
        .await
        .unwrap_or(Ok(()))
}

/// Whole seconds for a ttl: rounded up, and at least the server's minimum.
pub(crate) fn lease_secs(ttl: Duration, min: Duration) -> i64 {
    let secs = ttl
        .as_millis()
        .div_ceil(1000)
        .max(min.as_secs().into())
        .max(1);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use leasehold_testkit::etcd_cluster::PrivateEtcdCluster;

    /// A wait whose start revision was compacted away returns at once (the caller reads the
    /// directory again) instead of sleeping until its deadline.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wait_from_a_compacted_revision_returns_at_once() {
        let cluster = PrivateEtcdCluster::start();
        let mut client = etcd_client::Client::connect(cluster.endpoints(), None)
            .await
            .unwrap();
        let first = client.put("k", "1", None).await.unwrap();
        let old = first.header().unwrap().revision();
        for n in 0..3 {
            client.put("other", n.to_string(), None).await.unwrap();
        }
        let now = client
            .get("k", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        client.compact(now, None).await.unwrap();
        let started = Instant::now();
        super::wait_deleted(&client, b"k", old, started + Duration::from_secs(10))
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a wait from compacted revision {old} (compacted to {now}) took {:?}",
            started.elapsed()
        );
    }
}
