//! The whole conformance suite against the shared PostgreSQL server (lease-table strategy).

mod support;

leasehold_conformance::suite!(support::shared_lock());
