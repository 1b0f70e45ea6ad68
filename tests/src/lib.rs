//! Cross-backend tests of leasehold: scenarios that run the same way on every backend.
//!
//! [`backends`] lists one instance of each backend the workspace has, made from the URLs that
//! `scripts/services.sh` exports; the tests in `tests/` run their scenario against each.

pub mod harness;

use std::sync::{Arc, Mutex};

use leasehold::{memory::MemoryLock, DistributedLock};

/// One instance of every backend under test, with its name.
///
/// # Panics
///
/// When a server is unreachable, with a message saying how to start it.
pub async fn backends() -> Vec<(&'static str, Arc<dyn DistributedLock>)> {
    let redis_url = leasehold_testkit::env::redis_url();
    let redis = leasehold_redis::RedisLock::connect(&redis_url).await.unwrap_or_else(|e| {
        panic!("cannot reach Redis at {redis_url}: {e}; start it with scripts/services.sh or run scripts/test.sh")
    });
    let pg_url = leasehold_testkit::env::postgres_url();
    let postgres = leasehold_postgres::PostgresLock::connect(&pg_url).await.unwrap_or_else(|e| {
        panic!("cannot reach PostgreSQL at {pg_url}: {e}; start it with scripts/services.sh or run scripts/test.sh")
    });
    vec![
        ("memory", Arc::new(MemoryLock::new())),
        ("redis", Arc::new(redis)),
        ("postgres", Arc::new(postgres)),
    ]
}

/// A resource protected by fences: it accepts a write only when the write's fence is at least
/// the highest it has seen, and counts what it accepted and rejected.
#[derive(Debug, Default)]
pub struct FencedResource {
    state: Mutex<FencedState>,
}

/// What a [`FencedResource`] has seen.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FencedState {
    /// The highest fence accepted.
    pub highest_fence: u64,
    /// Writes accepted.
    pub accepted: u64,
    /// Writes rejected for a stale fence.
    pub rejected: u64,
}

impl FencedResource {
    /// Writes with `fence`; returns whether the write was accepted.
    pub fn write(&self, fence: u64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if fence < state.highest_fence {
            state.rejected += 1;
            return false;
        }
        state.highest_fence = fence;
        state.accepted += 1;
        true
    }

    /// A snapshot of the counters.
    pub fn state(&self) -> FencedState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
