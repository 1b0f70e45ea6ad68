#![doc = include_str!("../README.md")]

pub mod env;
pub mod etcd_cluster;
mod os;
pub mod pgbouncer;
pub mod ports;
pub mod postgres;
pub mod proxy;
pub mod redaction;
pub mod redis;
pub mod redis_cluster;

pub use crate::os::{is_root, make_certs, signal};

/// An `io::Error` with this message.
pub(crate) fn failed(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(what.to_string())
}
