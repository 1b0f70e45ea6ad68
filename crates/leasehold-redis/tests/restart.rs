//! Fences across store failures (`leasehold_conformance::restart`) on private `redis-server`
//! processes: a restart without persistence, and a crash that rolls back to an older snapshot.

mod support;

use std::path::PathBuf;

use leasehold::async_trait;
use leasehold_conformance::restart::{self, Store};
use leasehold_redis::RedisLock;
use support::PrivateRedis;

async fn connect(url: String) -> RedisLock {
    RedisLock::connect(&url)
        .await
        .expect("connect to private redis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_increase_across_restarts_without_persistence() {
    let mut server = PrivateRedis::start(&[]);
    let url = server.url();
    restart::check(
        || connect(url.clone()),
        || {
            server.restart();
            async {}
        },
    )
    .await;
}

/// Rolls back to the snapshot taken at the checkpoint on every restart.
struct RollBack<'a> {
    server: &'a mut PrivateRedis,
    snapshot: Option<PathBuf>,
}

#[async_trait]
impl Store for RollBack<'_> {
    async fn checkpoint(&mut self) {
        self.snapshot = Some(self.server.checkpoint());
    }

    async fn restart(&mut self) {
        let snapshot = self.snapshot.as_ref().expect("checkpoint before restart");
        self.server.restart_from(snapshot);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_increase_across_a_rollback_to_an_older_snapshot() {
    let mut server = PrivateRedis::start(&[]);
    let url = server.url();
    let store = RollBack {
        server: &mut server,
        snapshot: None,
    };
    restart::check(|| connect(url.clone()), store).await;
}
