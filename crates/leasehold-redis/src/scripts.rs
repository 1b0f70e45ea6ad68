//! The Lua scripts, sent with EVALSHA (loaded where the lock lives on NOSCRIPT).
//!
//! Each touches only keys of one lock, which share a hash slot, so they run unchanged on
//! Redis Cluster. Data travels in KEYS and ARGV, never inside the script text.

use std::{ops::Deref, sync::LazyLock, time::Duration};

use redis::{Cmd, ErrorKind, FromRedisValue, Pipeline, RedisResult, Script, ServerErrorKind};

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

/// `EVALSHA` of `script` with `keys`; the caller adds the arguments (at most [`ARGS`] of them,
/// [`ARGS_BYTES`] in all, fit without growing the command: it is built on every call).
pub(crate) fn evalsha(script: &Script, keys: &[&str]) -> Cmd {
    let bytes = "EVALSHA".len() + script.get_hash().len() + 4 + ARGS_BYTES;
    let bytes = keys.iter().fold(bytes, |sum, key| sum + key.len());
    let mut cmd = Cmd::with_capacity(3 + keys.len() + ARGS, bytes);
    cmd.arg("EVALSHA")
        .arg(script.get_hash())
        .arg(keys.len())
        .arg(keys);
    cmd
}

/// The most arguments a script here takes, and room for their bytes (a token is 32, a
/// channel name a key's length plus 9).
const ARGS: usize = 5;
const ARGS_BYTES: usize = 192;

/// Runs `eval` (an [`evalsha`] of `script` whose first key is `key`) on `conn`, all of it
/// bounded by `limit` once; a `NOSCRIPT` loads the script where `key` lives and sends it again
/// (nothing ran the first time). See [`send`].
pub(crate) async fn run<T: FromRedisValue>(
    conn: &mut Conn,
    script: &Lua,
    key: &str,
    eval: &Cmd,
    limit: Duration,
) -> RedisResult<T> {
    bounded(limit, send(conn, script, key, limit, Sent::Cmd(eval))).await
}

/// What carries a script: one command, or a pipeline (the script and a `WAIT`).
#[derive(Clone, Copy)]
pub(crate) enum Sent<'a> {
    Cmd(&'a Cmd),
    Pipeline(&'a Pipeline),
}

impl Sent<'_> {
    async fn query<T: FromRedisValue>(self, conn: &mut Conn) -> RedisResult<T> {
        match self {
            Self::Cmd(cmd) => cmd.query_async(conn).await,
            Self::Pipeline(pipe) => pipe.query_async(conn).await,
        }
    }
}

fn is_no_script<T>(reply: &RedisResult<T>) -> bool {
    reply
        .as_ref()
        .is_err_and(|e| e.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
}

/// `sent` (which carries `script`, whose first key is `key`), and on `NOSCRIPT` again after
/// loading it on the primary of `key`'s slot. A second `NOSCRIPT` means the script went
/// elsewhere (an `ASK` to the node a migrating slot is moving to, which the slot map does not
/// name yet): the script is then loaded on every primary the client knows (bounded by `limit`,
/// failures ignored: one that is down must not stop the others) and `sent` a third time. A
/// node the client does not know yet (a new, empty primary) answers `NOSCRIPT` until its first
/// slot has moved: a transient error.
pub(crate) async fn send<T: FromRedisValue>(
    conn: &mut Conn,
    script: &Lua,
    key: &str,
    limit: Duration,
    sent: Sent<'_>,
) -> RedisResult<T> {
    let first = sent.query(conn).await;
    if !is_no_script(&first) {
        return first;
    }
    script.load(conn, key).await?;
    let second = sent.query(conn).await;
    if !is_no_script(&second) || !conn.is_cluster() {
        return second;
    }
    let _ = bounded(limit, script.script.load_async(conn)).await;
    sent.query(conn).await
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
