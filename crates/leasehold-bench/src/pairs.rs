//! `--pairs N --pairs-of CONTENDER`: N acquire + release pairs on one key, one after another,
//! on a `current_thread` runtime, and nothing else: the run `scripts/callgrind-pairs.sh` counts
//! instructions of (two runs with different N, so connecting and start-up cancel out).

use std::time::Instant;

use leasehold::{DistributedLock, LeaseToken, LockKey};
use redis::aio::ConnectionManager;

use crate::{contenders::TTL, fenced::FencedRaw};

/// Which implementation the pairs go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PairsOf {
    /// `leasehold_redis::RedisLock` through `Arc<dyn DistributedLock>`, as users hold it.
    Leasehold,
    /// The same server work sent by hand (`FencedRaw`).
    FencedRaw,
}

/// Runs `n` pairs against the Redis at `url`.
///
/// # Errors
///
/// When Redis cannot be reached.
pub(crate) fn run(url: &str, of: PairsOf, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let key = format!("bench/pairs/{}", std::process::id());
        let started = Instant::now();
        match of {
            PairsOf::Leasehold => {
                let lock: std::sync::Arc<dyn DistributedLock> =
                    std::sync::Arc::new(leasehold_redis::RedisLock::connect(url).await?);
                let key = LockKey::new(key)?;
                for _ in 0..n {
                    let lease = lock.try_acquire(&key, TTL).await?.expect("free key");
                    assert!(lock.release(lease).await?, "held until released");
                }
            }
            PairsOf::FencedRaw => {
                let conn = ConnectionManager::new(redis::Client::open(url)?).await?;
                let raw = FencedRaw::new(conn);
                let lock = format!("{{fraw:{key}}}");
                for _ in 0..n {
                    let token = LeaseToken::random()?.to_hex();
                    raw.attempt(&lock, &token).await.expect("free key");
                    raw.release_token(&lock, &token).await;
                }
            }
        }
        let took = started.elapsed();
        eprintln!(
            "{n} pairs ({of:?}) in {took:?}: {:.0} pairs/s",
            n as f64 / took.as_secs_f64().max(f64::EPSILON)
        );
        Ok(())
    })
}
