//! The safety harness behind the `lockcheck` binary: histories, the fenced resource, backends
//! (and broken ones), and the checker.

pub mod backend;
pub mod checker;
pub mod history;
pub mod nemesis;
pub use leasehold_testkit::proxy;
pub mod racy;
pub mod resource;
pub mod rng;
pub mod servers;
pub mod worker;
