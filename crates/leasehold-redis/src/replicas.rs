//! Optional replica acknowledgement ([`RedisLockBuilder::wait_for_replicas`]): an acquire or
//! extend followed by `WAIT` in one pipeline, on the connection that sent the write (`WAIT`
//! counts the replicas that have that connection's writes), on the lock's own shard.
//!
//! `WAIT` blocks the connection it runs on until the replicas answer or its timeout passes, so
//! these writes go over a small pool of connections of their own ([`POOL`], round robin): a
//! slow replica stalls at most these, never the main connection that releases, status reads
//! and other locks without the option use. With more than [`POOL`] such writes in flight on one
//! shard, the later ones queue behind the earlier ones' `WAIT`.
//!
//! [`RedisLockBuilder::wait_for_replicas`]: crate::RedisLockBuilder::wait_for_replicas

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use redis::{Cmd, FromRedisValue, RedisResult};

use crate::{
    conn::Conn,
    error::bounded,
    scripts::{send, Lua, Sent},
};

/// Connections per lock for writes that wait for replicas.
pub(crate) const POOL: usize = 4;

/// How many times one such write may send its `WAIT`: a `NOSCRIPT` sends the pipeline again,
/// up to twice (see `scripts::send`), and each `WAIT` in it runs. The bounds allow for each.
pub(crate) const WAITS: u32 = 3;

/// How many replicas must have a write, how long to wait for them, and the connections.
pub(crate) struct Replicas {
    pub(crate) count: u32,
    pub(crate) timeout: Duration,
    pool: Vec<Conn>,
    next: AtomicUsize,
}

impl Replicas {
    pub(crate) fn new(count: u32, timeout: Duration, pool: Vec<Conn>) -> Self {
        Self {
            count,
            timeout,
            pool,
            next: AtomicUsize::new(0),
        }
    }

    /// The next connection of the pool.
    pub(crate) fn connection(&self) -> Conn {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        self.pool[i].clone()
    }

    /// `eval` (an `EVALSHA` of `script`), then `WAIT`, pipelined on `conn`: the script's reply
    /// and how many replicas acknowledged. A `NOSCRIPT` loads the script (where `key`, the
    /// script's first key, lives) and sends both again; nothing ran the first time.
    pub(crate) async fn write<T: FromRedisValue>(
        &self,
        conn: &mut Conn,
        script: &Lua,
        key: &str,
        eval: Cmd,
        limit: Duration,
    ) -> RedisResult<(T, u32)> {
        let mut pipe = redis::pipe();
        pipe.add_command(eval)
            .cmd("WAIT")
            .arg(self.count)
            .arg(u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX));
        let limit = limit.saturating_add(self.timeout.saturating_mul(WAITS));
        bounded(limit, send(conn, script, key, limit, Sent::Pipeline(&pipe))).await
    }
}
