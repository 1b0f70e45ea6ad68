#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod admin;
mod builder;
mod cluster;
mod conn;
mod error;
mod handoffs;
mod keys;
mod lock;
mod primitive;
mod replicas;
mod rw;
mod scripts;
mod semaphore;
mod subscriber;
mod wait;

pub use leasehold;
pub use redis;

pub use crate::{
    builder::{
        EvictionPolicy, RedisLockBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT,
    },
    cluster::cluster_seeds,
    keys::DEFAULT_NAMESPACE,
    lock::RedisLock,
};
