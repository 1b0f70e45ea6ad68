//! `leasehold_conformance::restart::check` on a real Redis (the harness's private server)
//! restarted with no data and rolled back to an older snapshot: leasehold-redis passes, the
//! negative control whose fences are a bare `INCR` (leasehold-redis before its clock floor)
//! fails both.

use std::{
    panic::{self, AssertUnwindSafe},
    sync::{Arc, Mutex},
};

use leasehold::{async_trait, DistributedLock};
use leasehold_conformance::restart::{self, Store};
use leasehold_tests::harness::{
    racy::Unfloored,
    servers::{Kind, PrivateServer},
};

/// How a restart treats the data.
#[derive(Clone, Copy)]
enum Loss {
    Wipe,
    RollBack,
}

struct Redis {
    server: Arc<Mutex<PrivateServer>>,
    loss: Loss,
}

#[async_trait]
impl Store for Redis {
    async fn checkpoint(&mut self) {
        if matches!(self.loss, Loss::RollBack) {
            self.server
                .lock()
                .unwrap()
                .checkpoint()
                .expect("checkpoint");
        }
    }

    async fn restart(&mut self) {
        let mut server = self.server.lock().unwrap();
        match self.loss {
            Loss::Wipe => server.wipe_and_restart(),
            Loss::RollBack => server.roll_back_and_restart(),
        }
        .expect("restart the private redis");
    }
}

/// `restart::check` on the backend `make` builds, on a fresh private Redis: `Err` with the
/// case's message when it fails.
fn check<L, F, Fut>(loss: Loss, make: F) -> Result<(), String>
where
    L: DistributedLock,
    F: Fn(String) -> Fut + Copy,
    Fut: std::future::Future<Output = L>,
{
    let server = PrivateServer::start(Kind::Redis).unwrap_or_else(|e| {
        panic!("cannot start redis-server: {e} (scripts/services.sh installs it)")
    });
    let url = server.url();
    let store = Redis {
        server: Arc::new(Mutex::new(server)),
        loss,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(restart::check(|| make(url.clone()), store));
    }))
    .map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default()
    })
}

async fn leasehold_redis(url: String) -> leasehold_redis::RedisLock {
    leasehold_redis::RedisLock::connect(&url)
        .await
        .expect("connect")
}

async fn unfloored(url: String) -> Unfloored {
    Unfloored::connect(&url).await.expect("connect")
}

#[test]
fn leasehold_redis_keeps_fences_through_a_wipe_and_a_rollback() {
    check(Loss::Wipe, leasehold_redis).unwrap();
    check(Loss::RollBack, leasehold_redis).unwrap();
}

#[test]
fn fences_that_restart_at_one_are_caught_on_a_real_redis() {
    for (loss, repeated) in [
        (Loss::Wipe, "got fence 1 "),
        (Loss::RollBack, "got fence 4 "),
    ] {
        let failure = check(loss, unfloored).expect_err("repeated fences slipped through");
        assert!(
            failure.contains("[restart] after a restart") && failure.contains(repeated),
            "failed for another reason: {failure}"
        );
    }
}
