//! The read/write and semaphore suites against the in-memory backend.

mod rw {
    leasehold_conformance::rw_suite!(async { leasehold::memory::MemoryLock::new() });
}

mod semaphore {
    leasehold_conformance::semaphore_suite!(async { leasehold::memory::MemoryLock::new() });
}
