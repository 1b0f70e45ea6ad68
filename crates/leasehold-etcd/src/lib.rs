#![doc = include_str!("../README.md")]

mod admin;
mod builder;
mod error;
mod keys;
mod lock;
mod ops;
mod watch;

pub use etcd_client;
pub use leasehold;

pub use crate::{
    builder::{
        EtcdLockBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_ELECTION_TIMEOUT, DEFAULT_PREFIX,
        DEFAULT_REQUEST_TIMEOUT,
    },
    lock::EtcdLock,
};
