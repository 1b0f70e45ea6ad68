#![doc = include_str!("../README.md")]

mod clock;
mod error;
mod lock;
mod sql;

pub use leasehold;
pub use sqlx;

pub use crate::lock::{SqliteLock, SqliteLockBuilder, DEFAULT_BUSY_TIMEOUT, DEFAULT_TABLE};
