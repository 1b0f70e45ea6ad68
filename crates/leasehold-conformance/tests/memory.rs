//! The whole suite against the in-memory backend.

leasehold_conformance::suite!(async { leasehold::memory::MemoryLock::new() });
