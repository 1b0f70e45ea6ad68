//! The Lua scripts, sent with EVALSHA (reloaded on NOSCRIPT by `redis::Script`).
//!
//! Each touches only keys of one lock, which share a hash slot, so they run unchanged on
//! Redis Cluster. Data travels in KEYS and ARGV, never inside the script text.

use std::sync::LazyLock;

use redis::Script;

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
