//! The admin suite (status, list, forced release) on the shared etcd cluster.

mod common;

leasehold_conformance::admin_suite!(common::connect("admin"));
