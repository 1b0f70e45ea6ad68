//! What a backend offers beyond the contract.

/// What a backend offers beyond the [`DistributedLock`](crate::DistributedLock) contract.
///
/// The conformance suite reads it to tighten its checks (a backend that claims notified waiting
/// must hand a released lock to a waiter quickly), and backend docs show the same list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// Waiters are woken when the lock is released instead of polling.
    pub notified_wait: bool,
    /// Expiry is measured by the server's clock, not by each client's.
    pub server_clock: bool,
    /// Fences never repeat across a store restart or a rollback; the mechanism and its
    /// assumptions per backend are in `docs/guarantees.md`. Claimed only by backends that pass
    /// `leasehold_conformance::restart::check`.
    pub durable_fences: bool,
    /// The lock is lost at once when the holder's connection breaks (session-bound locks).
    pub lost_with_connection: bool,
    /// How much longer than its ttl an abandoned lease may keep its key, at most, while the
    /// store runs normally: zero for stores that expire to the millisecond; on a store whose
    /// leases are whole seconds with a minimum (etcd), the rounding plus its expiry tick. The
    /// holder's own validity never includes it; the conformance suite waits this much longer
    /// in its expiry cases.
    pub expiry_slack: std::time::Duration,
}

impl Capabilities {
    /// No capabilities beyond the contract.
    pub const fn new() -> Self {
        Self {
            notified_wait: false,
            server_clock: false,
            durable_fences: false,
            lost_with_connection: false,
            expiry_slack: std::time::Duration::ZERO,
        }
    }

    /// Sets [`notified_wait`](Self::notified_wait).
    pub const fn with_notified_wait(mut self, yes: bool) -> Self {
        self.notified_wait = yes;
        self
    }

    /// Sets [`server_clock`](Self::server_clock).
    pub const fn with_server_clock(mut self, yes: bool) -> Self {
        self.server_clock = yes;
        self
    }

    /// Sets [`durable_fences`](Self::durable_fences).
    pub const fn with_durable_fences(mut self, yes: bool) -> Self {
        self.durable_fences = yes;
        self
    }

    /// Sets [`lost_with_connection`](Self::lost_with_connection).
    pub const fn with_lost_with_connection(mut self, yes: bool) -> Self {
        self.lost_with_connection = yes;
        self
    }

    /// Sets [`expiry_slack`](Self::expiry_slack).
    pub const fn with_expiry_slack(mut self, slack: std::time::Duration) -> Self {
        self.expiry_slack = slack;
        self
    }
}
