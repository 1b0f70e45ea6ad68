//! The read/write, semaphore and their admin suites against the in-memory backend.

mod rw {
    leasehold_conformance::rw_suite!(async { leasehold::memory::MemoryLock::new() });
}

mod semaphore {
    leasehold_conformance::semaphore_suite!(async { leasehold::memory::MemoryLock::new() });
}

mod admin {
    leasehold_conformance::primitive_admin_suite!(async { leasehold::memory::MemoryLock::new() });
}
