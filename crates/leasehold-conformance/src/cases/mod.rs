//! The cases, one `pub async fn` per behaviour. Each fails with a message that starts with its
//! name in brackets.

mod basic;
mod edges;
mod expiry;
mod guard;
mod stress;
mod waiting;

pub use self::{basic::*, edges::*, expiry::*, guard::*, stress::*, waiting::*};
