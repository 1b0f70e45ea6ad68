//! The whole conformance suite against the shared Redis server.

mod support;

leasehold_conformance::suite!(support::shared_lock());
