//! etcd contenders: leasehold-etcd beside the same requests sent by hand with `etcd-client`
//! (a lease per acquisition, a put-and-read-first transaction, a revoke) and beside etcd's own
//! Lock RPC (the server-side `concurrency.Mutex`, on one session lease, as `etcdctl lock`).

use async_trait::async_trait;
use leasehold_etcd::etcd_client::{
    Client, Compare, CompareOp, GetOptions, LockOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse,
};

use crate::contenders::{Contender, Held, RoundTrip, TTL};

fn secs() -> i64 {
    i64::try_from(TTL.as_secs()).unwrap_or(30)
}

/// The floor for one etcd acquisition: grant, one transaction (put our key on the lease, read
/// the directory's first key), and a revoke (to release, or to leave when not first). No
/// waiting (it never queues), so it runs in the uncontended scenarios only.
pub(crate) struct RawEtcd {
    pub(crate) client: Client,
}

#[async_trait]
impl Contender for RawEtcd {
    fn name(&self) -> String {
        "raw etcd-client (grant + txn + revoke)".into()
    }

    fn can_wait(&self) -> bool {
        false
    }

    async fn try_acquire(&self, key: &str) -> Option<Held> {
        let mut client = self.client.clone();
        let lease = client.lease_grant(secs(), None).await.expect("grant").id();
        let dir = format!("raw-etcd/{key}/");
        let own = format!("{dir}{lease:x}");
        let txn = Txn::new()
            .when([Compare::create_revision(own.as_str(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(own.as_str(), "t", Some(PutOptions::new().with_lease(lease))),
                TxnOp::get(
                    dir.as_str(),
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_sort(SortTarget::Create, SortOrder::Ascend)
                            .with_limit(1)
                            .with_keys_only(),
                    ),
                ),
            ]);
        let reply = client.txn(txn).await.expect("txn");
        let mine = reply.header().map_or(0, |h| h.revision());
        let first = reply.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.create_revision()),
            _ => None,
        });
        if first == Some(mine) {
            Some(Held::EtcdLease(lease))
        } else {
            client.lease_revoke(lease).await.expect("revoke");
            None
        }
    }

    async fn acquire(&self, _key: &str) -> Option<Held> {
        None
    }

    async fn release(&self, held: Held) {
        let Held::EtcdLease(lease) = held else {
            unreachable!("raw etcd releases its own")
        };
        self.client
            .clone()
            .lease_revoke(lease)
            .await
            .expect("revoke");
    }
}

/// etcd's Lock RPC on one session lease (granted once, kept alive by its ttl being long):
/// acquire is one RPC that waits in the server, release one delete.
pub(crate) struct LockRpc {
    pub(crate) client: Client,
    pub(crate) session: i64,
}

#[async_trait]
impl Contender for LockRpc {
    fn name(&self) -> String {
        "etcd Lock RPC (one session lease)".into()
    }

    fn can_wait(&self) -> bool {
        true
    }

    async fn try_acquire(&self, key: &str) -> Option<Held> {
        // The Lock RPC has no try: it always waits.
        self.acquire(key).await
    }

    async fn acquire(&self, key: &str) -> Option<Held> {
        let options = LockOptions::new().with_lease(self.session);
        let reply = self
            .client
            .clone()
            .lock(format!("lock-rpc/{key}"), Some(options))
            .await
            .expect("Lock RPC");
        Some(Held::EtcdKey(reply.key().to_vec()))
    }

    async fn release(&self, held: Held) {
        let Held::EtcdKey(key) = held else {
            unreachable!("the Lock RPC releases its own")
        };
        self.client.clone().unlock(key).await.expect("Unlock RPC");
    }
}

/// A linearizable etcd read (one Raft read index), the unit hand-off latency is compared with.
pub(crate) struct EtcdGet(pub(crate) Client);

#[async_trait]
impl RoundTrip for EtcdGet {
    fn name(&self) -> &'static str {
        "etcd linearizable GET"
    }

    async fn once(&self) {
        self.0
            .clone()
            .get("bench-round-trip", None)
            .await
            .expect("GET");
    }
}
