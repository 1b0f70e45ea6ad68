//! The Lua scripts, sent with EVALSHA (loaded where the lock lives on NOSCRIPT).
//!
//! Each touches only keys of one lock, which share a hash slot, so they run unchanged on
//! Redis Cluster. Data travels in KEYS and ARGV, never inside the script text.

use std::{ops::Deref, sync::LazyLock, time::Duration};

use redis::{
    Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, RedisResult, Script, ServerErrorKind,
};

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
        conn.query_at(self.load_cmd(), key).await.map(drop)
    }

    /// `SCRIPT LOAD` of this script's text.
    fn load_cmd(&self) -> Cmd {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(self.code);
        load
    }

    /// `SCRIPT LOAD` on every primary of a cluster that `CLUSTER SLOTS` names, at once, each
    /// bounded by `limit`; failures ignored (a primary that is down must not hold up the
    /// others). Nothing on one server.
    async fn load_on_every_primary(&self, conn: &mut Conn, limit: Duration) {
        let Conn::Cluster(cluster, pinned) = conn else {
            return;
        };
        let mut any = pinned.clone().unwrap_or_else(|| cluster.connection());
        let Ok(primaries) = crate::cluster::primaries(&mut any, limit).await else {
            return;
        };
        let named = primaries.into_iter().filter(|(host, _)| !host.is_empty());
        let loads = named.map(|(host, port)| {
            let (mut conn, load) = (any.clone(), self.load_cmd());
            let route = redis::cluster_routing::RoutingInfo::SingleNode(
                redis::cluster_routing::SingleNodeRoutingInfo::ByAddress { host, port },
            );
            async move {
                let _ = bounded(limit, conn.route_command(load, route)).await;
            }
        });
        futures_util::future::join_all(loads).await;
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
    // The keys, and a channel among the arguments: the first key's name and a suffix.
    let bytes = "EVALSHA".len() + script.get_hash().len() + 4 + ARGS_BYTES;
    let bytes = keys.iter().fold(bytes, |sum, key| sum + key.len());
    let bytes = bytes + keys.first().map_or(0, |key| key.len() + 16);
    let mut cmd = Cmd::with_capacity(3 + keys.len() + ARGS, bytes);
    cmd.arg("EVALSHA")
        .arg(script.get_hash())
        .arg(keys.len())
        .arg(keys);
    cmd
}

/// The most arguments a script here takes, and room for their bytes besides a channel name (a
/// token is 32).
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
/// loading it on the primary of `key`'s slot. On a cluster a second `NOSCRIPT` means the
/// script went elsewhere (an `ASK` to the node a migrating slot is moving to, which the slot
/// map does not name yet): the script is then loaded on every primary `CLUSTER SLOTS` names
/// (at once, each bounded by a quarter of `limit`, failures ignored: one that is down must not
/// stop the others) and `sent` a third time. A node not named yet (a new, empty primary)
/// answers `NOSCRIPT` until its first slot has moved: then a transient error.
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
        // On one server a second `NOSCRIPT` right after the load is permanent (a proxy that
        // spreads commands over several servers).
        return second;
    }
    script.load_on_every_primary(conn, limit / 4).await;
    let third = sent.query(conn).await;
    if is_no_script(&third) {
        // Transient: the node the slot is moving to is not known to the client yet.
        return Err(RedisError::from(std::io::Error::other(
            "NOSCRIPT on the node the lock's slot is moving to, after loading the script on \
             every known primary",
        )));
    }
    third
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

/// Every operation of a read/write lock: see `scripts/rw.lua`.
pub(crate) static RW: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("../scripts/rw.lua")));

/// Every operation of a semaphore: see `scripts/semaphore.lua`.
pub(crate) static SEMAPHORE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/semaphore.lua")));
