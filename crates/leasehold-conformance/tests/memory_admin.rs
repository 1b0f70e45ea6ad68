//! The admin suite against the in-memory backend (which offers a release watch too).

leasehold_conformance::admin_suite!(async { leasehold::memory::MemoryLock::new() });
