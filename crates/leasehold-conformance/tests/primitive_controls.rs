//! Negative controls of the read/write and semaphore suites: the in-memory backend with one
//! deliberate flaw must fail the cases that guard against it, and without a flaw pass them all.

mod controls;

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use leasehold::{
    backend::{self, Attempt, SentAt},
    memory::MemoryLock,
    DistributedRwLock, DistributedSemaphore, Lease, LeaseKind, LeaseToken, LockError, LockKey,
};
use leasehold_conformance::{rw, semaphore};

/// One way to get a read/write lock or a semaphore wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    None,
    /// Reads are taken as writes: readers exclude each other.
    ReadsExclusive,
    /// Writes are taken as reads: a writer shares the key.
    WritesShared,
    /// `acquire_write` polls `try_acquire_write` and leaves no mark: readers starve writers.
    NoWriterPreference,
    /// `acquire_write` runs on a detached task that outlives the caller's wait and future.
    GhostWaitingWriter,
    /// A waiting writer's mark lasts an hour: a crashed waiting writer blocks readers that long.
    MarkNeverLapses,
    /// Reads and permits are stored with 10x their ttl.
    TenfoldTtl,
    /// Fences are handed out per kind (reads count apart from writes), or, for permits, as the
    /// number of current holders.
    FencesPerKind,
    /// A lease of another primitive is answered `Ok(false)` instead of refused.
    NoKindCheck,
    /// The semaphore admits one more than its limit.
    OffByOne,
    /// Releasing a permit answers `true` and keeps it.
    ReleaseKeepsPermit,
    /// The first limit of a key is used for ever; other limits are not refused.
    FirstLimitWins,
}

#[derive(Debug)]
struct Flawed {
    flaw: Flaw,
    inner: MemoryLock,
    /// For `FencesPerKind`: the leases handed out (by their new token) and the real ones.
    relabelled: Mutex<HashMap<LeaseToken, Lease>>,
    counters: Mutex<HashMap<(LockKey, bool), u64>>,
    limits: Mutex<HashMap<LockKey, u32>>,
}

impl Flawed {
    fn new(flaw: Flaw) -> Self {
        let inner = MemoryLock::new();
        let inner = if flaw == Flaw::MarkNeverLapses {
            inner.with_writer_mark_ttl(Duration::from_secs(3600))
        } else {
            inner
        };
        Self {
            flaw,
            inner,
            relabelled: Mutex::new(HashMap::new()),
            counters: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
        }
    }

    fn ttl(&self, ttl: Duration) -> Duration {
        if self.flaw == Flaw::TenfoldTtl && ttl <= Duration::from_secs(60) {
            ttl * 10
        } else {
            ttl
        }
    }

    /// Under `FencesPerKind`, hands out `lease` with a fence of the flawed scheme.
    fn relabel(&self, lease: Lease) -> Lease {
        if self.flaw != Flaw::FencesPerKind {
            return lease;
        }
        let mut relabelled = self.relabelled.lock().unwrap();
        let fence = if lease.kind() == LeaseKind::Permit {
            1 + relabelled
                .values()
                .filter(|l| l.key() == lease.key())
                .count() as u64
        } else {
            let mut counters = self.counters.lock().unwrap();
            let count = counters
                .entry((lease.key().clone(), lease.kind() == LeaseKind::Read))
                .or_default();
            *count += 1;
            *count
        };
        let fake = Attempt::start(lease.ttl())
            .unwrap()
            .won_as(lease.kind(), lease.key(), fence);
        relabelled.insert(fake.token(), lease);
        fake
    }

    fn real(&self, lease: &Lease) -> Option<Lease> {
        self.relabelled.lock().unwrap().get(&lease.token()).cloned()
    }

    fn refuse_kind(&self, lease: &Lease) -> bool {
        self.flaw == Flaw::NoKindCheck && lease.kind() == LeaseKind::Exclusive
    }

    async fn extend_any(
        &self,
        lease: &mut Lease,
        ttl: Duration,
        rw: bool,
    ) -> Result<bool, LockError> {
        if self.refuse_kind(lease) {
            return Ok(false);
        }
        let extend = |mut real: Lease| async move {
            let extended = if rw {
                DistributedRwLock::extend(&self.inner, &mut real, ttl).await
            } else {
                DistributedSemaphore::extend(&self.inner, &mut real, ttl).await
            };
            (extended, real)
        };
        if let Some(real) = self.real(lease) {
            let sent_at = SentAt::now();
            let (extended, real) = extend(real).await;
            self.relabelled.lock().unwrap().insert(lease.token(), real);
            if matches!(extended, Ok(true)) {
                backend::renew(lease, ttl, sent_at);
            }
            return extended;
        }
        let (extended, real) = extend(lease.clone()).await;
        *lease = real;
        extended
    }
}

#[async_trait]
impl DistributedRwLock for Flawed {
    async fn try_acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let ttl = self.ttl(ttl);
        let lease = match self.flaw {
            Flaw::ReadsExclusive => self.inner.try_acquire_write(key, ttl).await?,
            _ => self.inner.try_acquire_read(key, ttl).await?,
        };
        Ok(lease.map(|l| self.relabel(l)))
    }

    async fn try_acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let lease = match self.flaw {
            Flaw::WritesShared => self.inner.try_acquire_read(key, ttl).await?,
            _ => self.inner.try_acquire_write(key, ttl).await?,
        };
        Ok(lease.map(|l| self.relabel(l)))
    }

    async fn acquire_read(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let ttl = self.ttl(ttl);
        let lease = match self.flaw {
            Flaw::ReadsExclusive => self.inner.acquire_write(key, ttl, wait).await?,
            _ => self.inner.acquire_read(key, ttl, wait).await?,
        };
        Ok(self.relabel(lease))
    }

    async fn acquire_write(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let lease = match self.flaw {
            Flaw::WritesShared => self.inner.acquire_read(key, ttl, wait).await?,
            Flaw::NoWriterPreference => {
                backend::wait::poll(key, wait, || self.inner.try_acquire_write(key, ttl)).await?
            }
            Flaw::GhostWaitingWriter => {
                let (inner, owned) = (self.inner.clone(), key.clone());
                let detached = tokio::spawn(async move {
                    inner
                        .acquire_write(&owned, ttl, wait * 4 + Duration::from_secs(20))
                        .await
                });
                match tokio::time::timeout(wait, detached).await {
                    Ok(joined) => joined.expect("detached writer")?,
                    Err(_) => {
                        return Err(LockError::Timeout {
                            key: key.clone(),
                            waited: wait,
                        })
                    }
                }
            }
            _ => self.inner.acquire_write(key, ttl, wait).await?,
        };
        Ok(self.relabel(lease))
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        self.extend_any(lease, ttl, true).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        if self.refuse_kind(&lease) {
            return Ok(false);
        }
        let real = self.relabelled.lock().unwrap().remove(&lease.token());
        DistributedRwLock::release(&self.inner, real.unwrap_or(lease)).await
    }

    fn capabilities(&self) -> leasehold::Capabilities {
        DistributedRwLock::capabilities(&self.inner)
    }
}

#[async_trait]
impl DistributedSemaphore for Flawed {
    async fn try_acquire(
        &self,
        key: &LockKey,
        max_holders: u32,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        let (max_holders, ttl) = (self.limit(key, max_holders), self.ttl(ttl));
        let lease = DistributedSemaphore::try_acquire(&self.inner, key, max_holders, ttl).await?;
        Ok(lease.map(|l| self.relabel(l)))
    }

    async fn acquire(
        &self,
        key: &LockKey,
        max_holders: u32,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let (max_holders, ttl) = (self.limit(key, max_holders), self.ttl(ttl));
        let lease = DistributedSemaphore::acquire(&self.inner, key, max_holders, ttl, wait).await?;
        Ok(self.relabel(lease))
    }

    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        self.extend_any(lease, ttl, false).await
    }

    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        if self.refuse_kind(&lease) {
            return Ok(false);
        }
        if self.flaw == Flaw::ReleaseKeepsPermit && lease.kind() == LeaseKind::Permit {
            return Ok(lease.is_valid());
        }
        let real = self.relabelled.lock().unwrap().remove(&lease.token());
        DistributedSemaphore::release(&self.inner, real.unwrap_or(lease)).await
    }

    fn capabilities(&self) -> leasehold::Capabilities {
        DistributedSemaphore::capabilities(&self.inner)
    }
}

impl Flawed {
    fn limit(&self, key: &LockKey, asked: u32) -> u32 {
        match self.flaw {
            Flaw::OffByOne if asked > 0 => asked + 1,
            Flaw::FirstLimitWins if asked > 0 => *self
                .limits
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_insert(asked),
            _ => asked,
        }
    }
}

fn rw_caught(flaw: Flaw, expected: &[&str]) {
    controls::assert_caught(
        &flaw,
        rw::all_cases(),
        |c| c.name,
        expected,
        |case| {
            rw::run(async { Flawed::new(flaw) }, case.run);
        },
    );
}

fn semaphore_caught(flaw: Flaw, expected: &[&str]) {
    controls::assert_caught(
        &flaw,
        semaphore::all_cases(),
        |c| c.name,
        expected,
        |case| {
            semaphore::run(async { Flawed::new(flaw) }, case.run);
        },
    );
}

#[test]
fn the_wrapper_without_flaws_passes_every_case() {
    let failed = controls::failing(
        rw::all_cases(),
        |c| c.name,
        &[],
        |case| {
            rw::run(async { Flawed::new(Flaw::None) }, case.run);
        },
    );
    assert!(
        failed.is_empty(),
        "the flawless read/write control failed {failed:?}"
    );
    let failed = controls::failing(
        semaphore::all_cases(),
        |c| c.name,
        &[],
        |case| {
            semaphore::run(async { Flawed::new(Flaw::None) }, case.run);
        },
    );
    assert!(
        failed.is_empty(),
        "the flawless semaphore control failed {failed:?}"
    );
}

#[test]
fn exclusive_reads_are_caught() {
    rw_caught(
        Flaw::ReadsExclusive,
        &[
            "rw_readers_share_and_exclude_writers",
            "rw_stress_writers_exclude_everyone",
        ],
    );
}

#[test]
fn shared_writes_are_caught() {
    rw_caught(
        Flaw::WritesShared,
        &[
            "rw_readers_share_and_exclude_writers",
            "rw_writer_excludes_readers_and_writers",
            "rw_stress_writers_exclude_everyone",
        ],
    );
}

#[test]
fn writers_that_do_not_hold_readers_back_are_caught() {
    rw_caught(
        Flaw::NoWriterPreference,
        &["rw_waiting_writer_goes_before_new_readers"],
    );
}

#[test]
fn ghost_waiting_writers_are_caught() {
    rw_caught(
        Flaw::GhostWaitingWriter,
        &["rw_writer_that_stops_waiting_leaves_no_mark"],
    );
}

#[test]
fn marks_that_never_lapse_are_caught() {
    rw_caught(
        Flaw::MarkNeverLapses,
        &["rw_crashed_waiting_writer_blocks_readers_briefly"],
    );
}

#[test]
fn long_lived_reads_and_permits_are_caught() {
    rw_caught(
        Flaw::TenfoldTtl,
        &["rw_crashed_reader_blocks_writer_until_its_ttl"],
    );
    semaphore_caught(
        Flaw::TenfoldTtl,
        &["semaphore_crashed_holder_frees_at_its_ttl"],
    );
}

#[test]
fn fences_per_kind_are_caught() {
    rw_caught(
        Flaw::FencesPerKind,
        &["rw_fences_increase_and_tokens_are_checked"],
    );
    semaphore_caught(
        Flaw::FencesPerKind,
        &[
            "semaphore_stress_peak_is_exactly_n",
            "semaphore_fences_tokens_and_kinds",
        ],
    );
}

#[test]
fn unchecked_lease_kinds_are_caught() {
    rw_caught(Flaw::NoKindCheck, &["rw_bad_input_is_refused"]);
    semaphore_caught(Flaw::NoKindCheck, &["semaphore_fences_tokens_and_kinds"]);
}

#[test]
fn a_semaphore_over_its_limit_is_caught() {
    semaphore_caught(
        Flaw::OffByOne,
        &[
            "semaphore_admits_exactly_its_limit",
            "semaphore_stress_peak_is_exactly_n",
        ],
    );
}

#[test]
fn releases_that_keep_the_permit_are_caught() {
    semaphore_caught(
        Flaw::ReleaseKeepsPermit,
        &[
            "semaphore_releases_go_to_waiters",
            "semaphore_admits_exactly_its_limit",
        ],
    );
}

#[test]
fn limits_that_are_not_checked_are_caught() {
    semaphore_caught(
        Flaw::FirstLimitWins,
        &["semaphore_limit_mismatch_is_refused"],
    );
}
