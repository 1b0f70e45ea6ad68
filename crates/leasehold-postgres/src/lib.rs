#![doc = include_str!("../README.md")]

mod builder;
mod error;
mod ident;
mod listener;
mod lock;
mod sql;

pub use leasehold;
pub use sqlx;

pub use crate::{
    builder::{PostgresLockBuilder, DEFAULT_CHANNEL, DEFAULT_SCHEMA, DEFAULT_TABLE},
    lock::PostgresLock,
};
