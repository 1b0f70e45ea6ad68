#![doc = include_str!("../README.md")]

mod admin;
mod builder;
mod clock;
mod error;
mod holders;
mod lock;
mod primitives;
mod sql;

pub use leasehold;
pub use sqlx;

pub use crate::{
    builder::SqliteLockBuilder,
    lock::{SqliteLock, DEFAULT_BUSY_TIMEOUT, DEFAULT_TABLE},
};
