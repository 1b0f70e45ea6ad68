//! The read/write, semaphore and their admin suites against the shared Redis server and the shared Redis
//! Cluster, and the three primitives of one key kept apart.

mod support;

mod rw {
    leasehold_conformance::rw_suite!(crate::support::shared_lock());
}

mod semaphore {
    leasehold_conformance::semaphore_suite!(crate::support::shared_lock());
}

mod cluster_rw {
    leasehold_conformance::rw_suite!(crate::support::cluster_lock());
}

mod cluster_semaphore {
    leasehold_conformance::semaphore_suite!(crate::support::cluster_lock());
}

mod admin {
    leasehold_conformance::primitive_admin_suite!(crate::support::shared_lock());
}

mod cluster_admin {
    leasehold_conformance::primitive_admin_suite!(crate::support::cluster_lock());
}
