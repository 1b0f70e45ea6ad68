//! The cases, one `pub async fn` per behaviour. Each fails with a message that starts with its
//! name in brackets.

mod basic;
mod expiry;
mod guard;
mod stress;
mod waiting;

pub use self::{basic::*, expiry::*, guard::*, stress::*, waiting::*};
