//! The Lua scripts, sent with EVALSHA (reloaded on NOSCRIPT by `redis::Script`).
//!
//! Each touches only keys of one lock, which share a hash slot, so they run unchanged on
//! Redis Cluster. Data travels in KEYS and ARGV, never inside the script text.

use std::sync::LazyLock;

use std::time::Duration;

use redis::{
    aio::ConnectionLike, Cmd, ErrorKind, FromRedisValue, RedisResult, Script, ServerErrorKind,
};

use crate::error::bounded;

/// `EVALSHA` of `script` with `keys`; the caller adds the arguments.
pub(crate) fn evalsha(script: &Script, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
    cmd
}

/// Runs `eval` (an [`evalsha`] of `script`) on `conn`; a `NOSCRIPT` loads the script (on every
/// primary of a cluster) and sends it again (nothing ran the first time). Each step is bounded
/// by `limit`.
pub(crate) async fn run<T: FromRedisValue>(
    conn: &mut (impl ConnectionLike + Send),
    script: &Script,
    eval: &Cmd,
    limit: Duration,
) -> RedisResult<T> {
    match bounded(limit, eval.query_async(conn)).await {
        Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            bounded(limit, script.load_async(conn)).await?;
            bounded(limit, eval.query_async(conn)).await
        }
        other => other,
    }
}

/// `TIME`, `SET NX PX`, the fence (`max(INCR, TIME in µs)`), or the holder's `PTTL`: see
/// `scripts/acquire.lua`.
pub(crate) static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/acquire.lua")));

/// Compare token, then `PEXPIRE`: see `scripts/extend.lua`.
pub(crate) static EXTEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/extend.lua")));

/// Compare token, then `DEL`, and `PUBLISH` if a waiter marked the lock: see
/// `scripts/release.lua`.
pub(crate) static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/release.lua")));

/// `DEL` + `PUBLISH` whoever holds the lock: see `scripts/force_release.lua`.
pub(crate) static FORCE_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/force_release.lua")));

/// A counted waiter leaves: the mark's count down by one, a reservation nobody is left to take
/// given up: see `scripts/leave.lua`.
pub(crate) static LEAVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/leave.lua")));
