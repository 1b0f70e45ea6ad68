#![doc = include_str!("../README.md")]

mod admin;
mod advisory;
mod advisory_lock;
mod builder;
mod error;
mod ident;
mod listener;
mod lock;
mod sql;

pub use leasehold;
pub use sqlx;

pub use crate::{
    advisory_lock::{AdvisoryBuilder, PostgresAdvisoryLock},
    builder::{
        LeaseStatements, PostgresLockBuilder, Strategy, DEFAULT_CHANNEL, DEFAULT_SCHEMA,
        DEFAULT_TABLE,
    },
    lock::PostgresLock,
};
