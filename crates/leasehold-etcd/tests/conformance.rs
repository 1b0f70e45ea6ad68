//! The whole conformance suite against the shared 3-member etcd cluster (heartbeat 50 ms,
//! election timeout 500 ms: a 1 s minimum lease), a prefix of its own per run.

mod common;

leasehold_conformance::suite!(common::connect("conformance"));
