#![doc = include_str!("../README.md")]

// Defined before the modules, so that every one of them can use it.
/// Runs `$body` (which uses `$exec` as its executor) on the pool, or, behind a transaction
/// pooler, inside an explicit transaction: sqlx describes an unnamed statement and binds it in
/// separate round trips, and only a transaction keeps both on one server connection.
macro_rules! on_pool {
    ($lock:expr, $exec:ident => $body:expr) => {{
        let inner = &$lock.inner;
        if inner.statements.persistent {
            let $exec = &inner.pool;
            $body
        } else {
            match inner.pool.begin().await {
                Err(error) => Err(error),
                Ok(mut tx) => {
                    let $exec = &mut *tx;
                    match $body {
                        Ok(out) => tx.commit().await.map(|()| out),
                        Err(error) => Err(error),
                    }
                }
            }
        }
    }};
}

mod admin;
mod advisory;
mod advisory_lock;
mod advisory_rw;
mod builder;
mod error;
mod held;
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
