//! The Lua scripts, sent with EVALSHA (loaded where the lock lives on NOSCRIPT).
//!
//! Each touches only keys of one lock, which share a hash slot, so they run unchanged on
//! Redis Cluster. Data travels in KEYS and ARGV, never inside the script text.

use std::{ops::Deref, sync::LazyLock, time::Duration};

use redis::{Cmd, ErrorKind, FromRedisValue, RedisResult, Script, ServerErrorKind};

use crate::{conn::Conn, error::bounded};

/// A script and its text (to load it on one node of a cluster).
pub(crate) struct Lua {
    script: Script,
    code: &'static str,
}

impl Lua {
    fn new(code: &'static str) -> Self {
        Self {
            script: Script::new(code),
            code,
        }
    }

    /// `SCRIPT LOAD` of this script where `key` lives: the server, or the primary of the
    /// key's slot on a cluster (not every primary: one that is down must not fail the
    /// others' locks).
    pub(crate) async fn load(&self, conn: &mut Conn, key: &str) -> RedisResult<()> {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(self.code);
        conn.query_at(load, key).await.map(drop)
    }
}

impl Deref for Lua {
    type Target = Script;

    fn deref(&self) -> &Script {
        &self.script
    }
}

/// `EVALSHA` of `script` with `keys`; the caller adds the arguments.
pub(crate) fn evalsha(script: &Script, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
    cmd
}

/// Runs `eval` (an [`evalsha`] of `script` whose first key is `key`) on `conn`; a `NOSCRIPT`
/// loads the script (where `key` lives) and sends it again (nothing ran the first time).
/// Each step is bounded by `limit`.
pub(crate) async fn run<T: FromRedisValue>(
    conn: &mut Conn,
    script: &Lua,
    key: &str,
    eval: &Cmd,
    limit: Duration,
) -> RedisResult<T> {
    match bounded(limit, eval.query_async(conn)).await {
        Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            bounded(limit, script.load(conn, key)).await?;
            bounded(limit, eval.query_async(conn)).await
        }
        other => other,
    }
}

/// `TIME`, `SET NX PX`, the fence (`max(INCR, TIME in µs)`), or the holder's `PTTL`: see
/// `scripts/acquire.lua`.
pub(crate) static ACQUIRE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/acquire.lua")));

/// Compare token, then `PEXPIRE`: see `scripts/extend.lua`.
pub(crate) static EXTEND: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/extend.lua")));

/// Compare token, then `DEL`, and `PUBLISH` if a waiter marked the lock: see
/// `scripts/release.lua`.
pub(crate) static RELEASE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/release.lua")));

/// `DEL` + `PUBLISH` whoever holds the lock: see `scripts/force_release.lua`.
pub(crate) static FORCE_RELEASE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/force_release.lua")));

/// A counted waiter leaves: the mark's count down by one, a reservation nobody is left to take
/// given up: see `scripts/leave.lua`.
pub(crate) static LEAVE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/leave.lua")));
