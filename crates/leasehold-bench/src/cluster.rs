//! Redis Cluster contenders: the raw baselines (`contenders::Raw`, `fenced::FencedRaw`) through
//! the `redis` crate's cluster connection, the one leasehold-redis uses, a round trip to a
//! primary, and the cluster's contender list.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use redis::{
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
};

use crate::{
    contenders::{Contender, Leasehold, Raw, RoundTrip, Rslock},
    fenced::FencedRaw,
};

/// `PING` to a random primary.
pub(crate) struct ClusterPing(pub(crate) ClusterConnection);

#[async_trait]
impl RoundTrip for ClusterPing {
    fn name(&self) -> &'static str {
        "redis cluster PING (a primary)"
    }

    async fn once(&self) {
        let mut conn = self.0.clone();
        conn.route_command(
            redis::cmd("PING"),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
        )
        .await
        .expect("PING");
    }
}

/// Every cluster contender, the raw baseline first; leasehold-redis on the single server
/// beside them, for its hand-off as the reference.
pub(crate) async fn contenders(
    cluster_url: &str,
    single_url: &str,
) -> Result<(Vec<Arc<dyn Contender>>, ClusterConnection), Box<dyn std::error::Error>> {
    let seeds = leasehold_redis::cluster_seeds(cluster_url)?;
    let client = ClusterClient::new(seeds.clone())?;
    let conn = client.get_async_connection().await?;
    let leasehold = leasehold_redis::RedisLock::connect(cluster_url).await?;
    let single = leasehold_redis::RedisLock::connect(single_url).await?;
    let mut tuned = rslock::LockManager::new_cluster(seeds.clone())?;
    tuned.set_retry(3, Duration::from_millis(1));
    let contenders: Vec<Arc<dyn Contender>> = vec![
        Arc::new(Raw::on(
            conn.clone(),
            "raw redis cluster (SET NX PX + EVALSHA)",
        )),
        Arc::new(FencedRaw::on(
            conn.clone(),
            "SPUBLISH",
            "fenced raw cluster (leasehold's scripts by hand)",
        )),
        Arc::new(Leasehold::new(leasehold, "leasehold-redis (cluster)")),
        Arc::new(Leasehold::new(single, "leasehold-redis (single server)")),
        Arc::new(Rslock {
            manager: rslock::LockManager::new_cluster(seeds)?,
            label: "cluster, default retry: 3 x 200 ms",
        }),
        Arc::new(Rslock {
            manager: tuned,
            label: "cluster, tuned retry: 3 x 1 ms",
        }),
    ];
    Ok((contenders, conn))
}
