//! The history every worker appends to: one JSON object per line.

use serde::{Deserialize, Serialize};

/// The host's monotonic clock in nanoseconds: the same timeline for every process on the
/// machine (CLOCK_MONOTONIC), which is what lets the checker merge histories.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// `instant` on the monotonic timeline (std's `Instant` is CLOCK_MONOTONIC on Linux).
pub fn instant_ns(instant: std::time::Instant) -> u64 {
    let now = std::time::Instant::now();
    let now_ns = monotonic_ns();
    if instant >= now {
        now_ns + u64::try_from((instant - now).as_nanos()).unwrap_or(0)
    } else {
        now_ns.saturating_sub(u64::try_from((now - instant).as_nanos()).unwrap_or(u64::MAX))
    }
}

/// What an operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A waiting acquire.
    Acquire,
    /// An extend of the held lease.
    Extend,
    /// A release of the held lease.
    Release,
    /// A fenced write to the resource.
    Write,
    /// An unfenced read-modify-write (+1) of the resource's counter.
    Increment,
    /// `--rw`: a waiting read acquire (the writers' ops are the ones above).
    ReadAcquire,
    /// `--rw`: an extend of a held read lease.
    ReadExtend,
    /// `--rw`: a release of a held read lease.
    ReadRelease,
    /// `--rw`: a reader's check over its hold: `ok` when the resource accepted no write between
    /// its first and last look, `fail` when it did (`start_ns`..`end_ns` spans the two looks).
    ReadCheck,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It did what it was asked (acquired, extended, released, write accepted).
    Ok,
    /// It definitely did not (busy, not held, write rejected).
    Fail,
    /// It is not known (an error or timeout after the request may have been sent).
    Unknown,
}

/// One line of a history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// The worker's number.
    pub worker: u32,
    /// The worker process's incarnation (a killed worker is restarted with the next one).
    pub life: u32,
    /// The lock's key.
    pub key: String,
    /// The operation.
    pub op: Op,
    /// The lease's fence (0 when there is none).
    pub fence: u64,
    /// When the operation started, monotonic ns.
    pub start_ns: u64,
    /// When it ended, monotonic ns.
    pub end_ns: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The lease's `valid_until` after the operation, monotonic ns (0 when there is none).
    pub valid_until_ns: u64,
    /// For a successful acquire: when the request that won the lock was sent, monotonic ns (0
    /// when unknown). The grant may land on the server any time after it, even while the
    /// worker is paused before it reads the reply.
    #[serde(default)]
    pub sent_ns: u64,
}
