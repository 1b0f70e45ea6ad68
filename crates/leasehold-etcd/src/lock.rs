//! [`EtcdLock`]: the mutex, on etcd's `concurrency.Mutex` design.

use std::{
    fmt,
    sync::{Arc, PoisonError},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use etcd_client::Client;
use leasehold::{
    backend::{
        self,
        wait::{jitter, keep_waiting, Deadline, InFlight, POLL_MAX},
        Attempt, SentAt,
    },
    Capabilities, DistributedLock, Lease, LeaseKind, LeaseToken, LockError, LockKey, ReleaseWatch,
};

use crate::{builder::EtcdLockBuilder, keys, ops};

/// A lock on an etcd cluster: each acquisition puts a key of its own, on an etcd lease of its
/// own, under the lock key's directory; the key created first holds the lock; the fence is its
/// create revision. See the crate docs for the semantics.
///
/// Cheap to clone: clones share one connection to the cluster.
#[derive(Clone)]
pub struct EtcdLock {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) prefix: String,
    pub(crate) endpoints: Vec<String>,
    pub(crate) user: Option<String>,
    pub(crate) min_lease: Duration,
    pub(crate) expiry_slack: Duration,
    pub(crate) election_timeout: Duration,
    /// A deliberately broken variant, for the negative controls (never set outside tests).
    pub(crate) broken: Broken,
    /// The etcd lease (and its granted seconds) each live acquisition of this handle holds,
    /// by token, so that release and extend need not read it back first. A miss (a lease
    /// from another handle, a pruned entry) reads the key instead.
    pub(crate) held: std::sync::Mutex<std::collections::HashMap<LeaseToken, (i64, i64)>>,
}

/// Entries of [`Inner::held`] past which it is emptied (leases dropped without a release
/// leave theirs behind).
const HELD_CACHE: usize = 4096;

impl Inner {
    fn remember(&self, token: LeaseToken, lease: i64, secs: i64) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.len() >= HELD_CACHE {
            held.clear();
        }
        held.insert(token, (lease, secs));
    }

    fn recall(&self, token: LeaseToken) -> Option<(i64, i64)> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&token).copied()
    }

    fn forget(&self, token: LeaseToken) -> Option<(i64, i64)> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.remove(&token)
    }
}

/// The deliberately broken variants the negative controls run the conformance suite on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum Broken {
    /// As built.
    No,
    /// `try_acquire` takes the lock whether or not its key is the first.
    IgnoresOrder,
    /// An acquisition that times out or is dropped leaves its key in line.
    KeepsAbandoned,
}

impl fmt::Debug for EtcdLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdLock")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.prefix)
            .field("user", &self.inner.user)
            .field("min_lease", &self.inner.min_lease)
            .field("election_timeout", &self.inner.election_timeout)
            .finish_non_exhaustive()
    }
}

/// A waiter's place in line: its key, the lease it is on, its create revision.
struct Place<'a> {
    key: &'a LockKey,
    dir: &'a str,
    own: &'a str,
    lease: i64,
    mine: i64,
    secs: i64,
    ttl: Duration,
    /// When the request that last set the lease's ttl (its grant) was sent.
    renewed: SentAt,
}

/// How a waiter's turn ended.
enum Turn {
    /// Ours, with the lease renewed by a request sent at this instant.
    Won(SentAt),
    /// Our key is gone (its lease ended while we waited): queue again.
    Requeue,
}

impl EtcdLock {
    /// Connects to the cluster at `endpoints` (`host:port`, or `http://host:port`) with the
    /// defaults of [`builder`](Self::builder).
    ///
    /// # Errors
    ///
    /// As [`EtcdLockBuilder::connect`].
    pub async fn connect(endpoints: &[&str]) -> Result<Self, LockError> {
        Self::builder(endpoints).connect().await
    }

    /// A builder for the cluster at `endpoints`.
    pub fn builder(endpoints: &[&str]) -> EtcdLockBuilder {
        EtcdLockBuilder::new(endpoints)
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// The etcd client, for requests of your own (a write guarded by the holder's key, say).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The cluster's minimum lease, read at connect: shorter ttls are enforced as this long.
    pub fn min_lease(&self) -> Duration {
        self.inner.min_lease
    }

    /// The etcd key an acquisition holding `lease` put: compare its create revision (the
    /// lease's fence) in a transaction to make a write that only the holder can make.
    pub fn key_of(&self, lease: &Lease) -> String {
        keys::own(&keys::dir(&self.inner.prefix, lease.key()), lease.token())
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Extends `lease`, whose key is on the etcd lease `current` (granted `granted` seconds,
    /// if known): `Some(answer)`, or `None` when `current` holds the key no longer (it may be
    /// on another lease).
    async fn extend_on(
        &self,
        lease: &mut Lease,
        ttl: Duration,
        current: i64,
        granted: Option<i64>,
    ) -> Result<Option<bool>, LockError> {
        let client = &self.inner.client;
        let own = self.key_of(lease);
        let token = lease.token().to_hex();
        if !lease.is_valid() {
            self.inner.forget(lease.token());
            ops::revoke(client, current).await?;
            return Ok(Some(false));
        }
        let secs = self.secs(ttl);
        let granted = match granted {
            Some(granted) => Some(granted),
            None => ops::granted_ttl(client, current).await?,
        };
        let Some(granted) = granted else {
            return Ok(None);
        };
        if granted == secs {
            let sent_at = SentAt::now();
            if !ops::keep_alive(client, current).await?
                || !ops::confirm(client, &own, &token, current).await?
            {
                return Ok(None);
            }
            backend::renew(lease, ttl, sent_at);
            return Ok(Some(true));
        }
        // Forgotten before the move: if its outcome is unknown, the next call reads the key.
        self.inner.forget(lease.token());
        let sent_at = SentAt::now();
        let (new, _) = ops::grant(client, secs).await?;
        if !ops::move_to(client, &own, &token, current, new).await? {
            let _ = ops::revoke(client, new).await;
            return Ok(None);
        }
        self.inner.remember(lease.token(), new, secs);
        backend::renew(lease, ttl, sent_at);
        // The key left the old lease; revoking it deletes nothing of ours.
        let _ = ops::revoke(client, current).await;
        Ok(Some(true))
    }

    fn secs(&self, ttl: Duration) -> i64 {
        ops::lease_secs(ttl, self.inner.min_lease)
    }

    /// Revokes `lease` if this future is dropped (or fails) before it is disarmed: the
    /// transaction that put our key may land after we stopped waiting for it.
    fn revoke_on_drop(
        &self,
        key: &LockKey,
        lease: i64,
    ) -> InFlight<impl FnOnce() -> CleanupFuture, CleanupFuture> {
        let client = self.inner.client.clone();
        let key = key.clone();
        InFlight::new(move || -> CleanupFuture {
            Box::pin(backend::wait::release_abandoned(
                key,
                Some(Duration::from_millis(200)),
                move || {
                    let client = client.clone();
                    async move { ops::revoke(&client, lease).await }
                },
            ))
        })
    }

    /// Waits until our key (`mine`, on `lease`) is the first in its directory, renewing the
    /// lease meanwhile.
    async fn wait_turn(&self, place: &Place<'_>, deadline: &Deadline) -> Result<Turn, LockError> {
        let Place {
            key,
            dir,
            own,
            lease,
            mine,
            secs,
            ttl,
            mut renewed,
        } = *place;
        let client = &self.inner.client;
        let renew_every = Duration::from_secs(u64::try_from(secs).unwrap_or(1)) / 3;
        let mut renew_at = renewed.instant() + renew_every;
        let mut failure = None;
        loop {
            if deadline.has_passed() {
                return Err(failure.unwrap_or_else(|| deadline.timeout(key)));
            }
            let round = async {
                if Instant::now() >= renew_at {
                    let sent_at = SentAt::now();
                    if !ops::keep_alive(client, lease).await? {
                        return Ok(Some(Turn::Requeue));
                    }
                    renewed = sent_at;
                    renew_at = sent_at.instant() + renew_every;
                }
                if ops::first_is(client, dir, mine).await? {
                    // Our key is there, and first (no key created before it can appear
                    // later). Its lease lives at least a ttl from the last renewal: the
                    // validity counts from there, unless that is too long ago to be useful;
                    // then renew first, and check the key again (etcd 3.4.23 can report the
                    // renewal of a revoked lease as a success).
                    if renewed.instant().elapsed() <= ttl / 10 {
                        return Ok(Some(Turn::Won(renewed)));
                    }
                    let sent_at = SentAt::now();
                    if !ops::keep_alive(client, lease).await? {
                        return Ok(Some(Turn::Requeue));
                    }
                    return Ok(Some(if ops::first_is(client, dir, mine).await? {
                        Turn::Won(sent_at)
                    } else {
                        Turn::Requeue
                    }));
                }
                let (before, revision) = ops::predecessor(client, dir, mine).await?;
                let Some(before) = before else {
                    // Nobody ahead now, though somebody was a moment ago (the holder released
                    // between the two reads): look again, unless our key is gone.
                    if ops::exists(client, own).await? {
                        return Ok(None);
                    }
                    return Ok(Some(Turn::Requeue));
                };
                ops::wait_deleted(client, &before, revision + 1, deadline.cap(renew_at)).await?;
                Ok::<_, LockError>(None)
            };
            match round.await {
                Ok(Some(turn)) => return Ok(turn),
                Ok(None) => failure = None,
                Err(error) => {
                    keep_waiting(error, &mut failure)?;
                    let pause = deadline.cap(Instant::now() + jitter(POLL_MAX));
                    tokio::time::sleep_until(pause.into()).await;
                }
            }
        }
    }
}

impl EtcdLock {
    /// [`Broken::KeepsAbandoned`]: queue and wait, and leave the key in line at the deadline.
    async fn acquire_keeping_abandoned(
        &self,
        key: &LockKey,
        dir: &str,
        attempt: Attempt,
        lease: i64,
        deadline: &Deadline,
    ) -> Result<Lease, LockError> {
        let client = &self.inner.client;
        let own = keys::own(dir, attempt.token());
        let token = attempt.token().to_hex();
        let queued = ops::enqueue(client, dir, &own, &token, lease).await?;
        if queued.first == Some(queued.mine) {
            return Ok(attempt.won(key, fence(queued.mine)?));
        }
        let place = Place {
            key,
            dir,
            own: &own,
            lease,
            mine: queued.mine,
            secs: self.secs(attempt.ttl()),
            ttl: attempt.ttl(),
            renewed: attempt.sent_at(),
        };
        match self.wait_turn(&place, deadline).await? {
            Turn::Won(sent_at) => Ok(backend::lease(
                key.clone(),
                attempt.token(),
                fence(queued.mine)?,
                attempt.ttl(),
                sent_at,
            )),
            Turn::Requeue => Err(deadline.timeout(key)),
        }
    }
}

type CleanupFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

fn fence(revision: i64) -> Result<u64, LockError> {
    u64::try_from(revision)
        .ok()
        .filter(|&fence| fence > 0)
        .ok_or_else(|| LockError::permanent(crate::error::BACKEND, "a create revision below 1"))
}

#[async_trait]
impl DistributedLock for EtcdLock {
    /// # Errors
    ///
    /// [`LockError::InvalidTtl`] before anything is sent; a [`LockError::Backend`] when the
    /// cluster fails (the acquisition's lease is then revoked in the background).
    ///
    /// # Cancel safety
    ///
    /// Dropped after its lease was granted, the acquisition's lease is revoked in the
    /// background, which deletes its key if the put landed anyway.
    async fn try_acquire(&self, key: &LockKey, ttl: Duration) -> Result<Option<Lease>, LockError> {
        let attempt = Attempt::start(ttl)?;
        let client = &self.inner.client;
        let dir = keys::dir(&self.inner.prefix, key);
        let own = keys::own(&dir, attempt.token());
        let token = attempt.token().to_hex();
        let (lease, _) = ops::grant(client, self.secs(attempt.ttl())).await?;
        let cleanup = self.revoke_on_drop(key, lease);
        let queued = ops::enqueue(client, &dir, &own, &token, lease).await?;
        if queued.first == Some(queued.mine) || self.inner.broken == Broken::IgnoresOrder {
            cleanup.disarm();
            self.inner
                .remember(attempt.token(), lease, self.secs(attempt.ttl()));
            return Ok(Some(attempt.won(key, fence(queued.mine)?)));
        }
        ops::revoke(client, lease).await?;
        cleanup.disarm();
        Ok(None)
    }

    /// Waits in line: each waiter watches only the key created just before its own (first
    /// come, first served; no herd at a release).
    ///
    /// # Errors
    ///
    /// [`LockError::Timeout`] at the deadline (the last transient error instead, if the cluster
    /// was failing then); any other error of the cluster at once.
    ///
    /// # Cancel safety
    ///
    /// Dropped, or timed out, the acquisition's lease is revoked (which removes its place in
    /// line and a lock the put took after all).
    async fn acquire(
        &self,
        key: &LockKey,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        let deadline = Deadline::after(wait);
        let client = &self.inner.client;
        let dir = keys::dir(&self.inner.prefix, key);
        let mut failure = None;
        loop {
            if deadline.has_passed() {
                if let Some(error) = failure {
                    return Err(error);
                }
            }
            let attempt = Attempt::start(ttl)?;
            let own = keys::own(&dir, attempt.token());
            let token = attempt.token().to_hex();
            let secs = self.secs(attempt.ttl());
            let lease = match ops::grant(client, secs).await {
                Ok((lease, _)) => lease,
                Err(error) => {
                    keep_waiting(error, &mut failure)?;
                    if deadline.has_passed() {
                        continue;
                    }
                    let pause = deadline.cap(Instant::now() + jitter(POLL_MAX));
                    tokio::time::sleep_until(pause.into()).await;
                    continue;
                }
            };
            let cleanup = self.revoke_on_drop(key, lease);
            if self.inner.broken == Broken::KeepsAbandoned {
                cleanup.disarm();
                return self
                    .acquire_keeping_abandoned(key, &dir, attempt, lease, &deadline)
                    .await;
            }
            let queued = match ops::enqueue(client, &dir, &own, &token, lease).await {
                Ok(queued) => queued,
                Err(error) => {
                    // The put may have landed: the cleanup revokes the lease in the
                    // background, and a transient failure is retried with a new attempt.
                    drop(cleanup);
                    keep_waiting(error, &mut failure)?;
                    let pause = deadline.cap(Instant::now() + jitter(POLL_MAX));
                    tokio::time::sleep_until(pause.into()).await;
                    continue;
                }
            };
            if queued.first == Some(queued.mine) {
                cleanup.disarm();
                self.inner.remember(attempt.token(), lease, secs);
                return Ok(attempt.won(key, fence(queued.mine)?));
            }
            let place = Place {
                key,
                dir: &dir,
                own: &own,
                lease,
                mine: queued.mine,
                secs,
                ttl: attempt.ttl(),
                renewed: attempt.sent_at(),
            };
            let turn = self.wait_turn(&place, &deadline).await;
            match turn {
                Ok(Turn::Won(sent_at)) => {
                    cleanup.disarm();
                    self.inner.remember(attempt.token(), lease, secs);
                    return Ok(backend::lease(
                        key.clone(),
                        attempt.token(),
                        fence(queued.mine)?,
                        attempt.ttl(),
                        sent_at,
                    ));
                }
                Ok(Turn::Requeue) => {
                    drop(cleanup);
                    if deadline.has_passed() {
                        return Err(deadline.timeout(key));
                    }
                }
                Err(error) => {
                    // Leave the line before answering, so the key is not handed to a
                    // waiter that is gone (the background cleanup retries a failed revoke).
                    if ops::revoke(client, lease).await.is_ok() {
                        cleanup.disarm();
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Renews the acquisition's etcd lease: a keep-alive when the ttl rounds to the lease's
    /// granted seconds, a new lease moved under the key by a guarded transaction otherwise.
    /// Either way the key is confirmed afterwards. A lease whose validity has ended is never
    /// extended: it is revoked and `Ok(false)` answered.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidTtl`], [`LockError::InvalidConfig`] for another primitive's lease;
    /// a [`LockError::Backend`] when the cluster fails.
    ///
    /// # Cancel safety
    ///
    /// Dropped midway, the lease is either renewed or not; a new lease granted for a move
    /// that did not land ends with its own ttl.
    async fn extend(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, LockError> {
        backend::check_kind(lease, &[LeaseKind::Exclusive])?;
        let ttl = backend::ttl::check(ttl)?;
        // The remembered etcd lease first; when that says the hold is gone, what the key says
        // (another handle may have moved it to a lease of its own).
        if let Some((current, granted)) = self.inner.recall(lease.token()) {
            if let Some(answer) = self.extend_on(lease, ttl, current, Some(granted)).await? {
                return Ok(answer);
            }
        }
        self.inner.forget(lease.token());
        let own = self.key_of(lease);
        let Some(found) = ops::own(&self.inner.client, &own, &lease.token().to_hex()).await? else {
            return Ok(false);
        };
        Ok(self
            .extend_on(lease, ttl, found.lease, None)
            .await?
            .unwrap_or(false))
    }

    /// Revokes the acquisition's etcd lease, which deletes its key and wakes the next in line.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidConfig`] for another primitive's lease; a [`LockError::Backend`]
    /// when the cluster fails.
    ///
    /// # Cancel safety
    ///
    /// Dropped midway, the lease is either revoked or ends with its ttl.
    async fn release(&self, lease: Lease) -> Result<bool, LockError> {
        backend::check_kind(&lease, &[LeaseKind::Exclusive])?;
        let client = &self.inner.client;
        if let Some((current, _)) = self.inner.forget(lease.token()) {
            if ops::revoke(client, current).await? {
                return Ok(true);
            }
        }
        // Not remembered, or that lease is gone: the key says (it may be on another lease).
        let own = self.key_of(&lease);
        match ops::own(client, &own, &lease.token().to_hex()).await? {
            Some(found) => ops::revoke(client, found.lease).await,
            None => Ok(false),
        }
    }

    /// A watch on the lock key's directory: it wakes the holder when a key there is deleted
    /// (a forced release revokes the holder's lease), and once it is in place.
    fn watch_releases(&self, key: &LockKey) -> Option<Box<dyn ReleaseWatch>> {
        let dir = keys::dir(&self.inner.prefix, key);
        let watch = crate::watch::DirWatch::start(self.inner.client.clone(), dir)?;
        Some(Box::new(watch))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_notified_wait(true)
            .with_server_clock(true)
            .with_durable_fences(true)
            .with_expiry_slack(self.inner.expiry_slack)
    }
}

/// The negative controls: deliberately broken variants that the conformance suite must catch
/// (on the shared cluster; `scripts/services.sh` starts it).
#[cfg(test)]
mod controls {
    use std::{future::Future, sync::Arc};

    use leasehold::DistributedLock;

    use super::{Broken, EtcdLock};

    async fn broken(broken: Broken) -> EtcdLock {
        let endpoints = std::env::var("LEASEHOLD_ETCD_URL")
            .unwrap_or_else(|_| "etcd://127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793".into());
        EtcdLock::builder(&[])
            .prefix(format!("leasehold-test-controls-{}", std::process::id()))
            .endpoints_from_url(&endpoints)
            .connect_as(broken)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot reach etcd at {endpoints}: {e}; start it with `scripts/services.sh`")
            })
    }

    /// Runs `case` (named `name`) on the broken variant: it must fail with its own message (a
    /// panic that starts `[name]`), not for another reason such as an unreachable cluster.
    fn must_fail<C, Fut>(variant: Broken, name: &str, case: C)
    where
        C: FnOnce(Arc<dyn DistributedLock>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let outcome = std::thread::spawn(move || {
            leasehold_conformance::run(broken(variant), case);
        })
        .join();
        let Err(panic) = outcome else {
            panic!("the conformance case {name} passed on the broken variant {variant:?}");
        };
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        assert!(
            message.starts_with(&format!("[{name}]")),
            "{variant:?} failed {name} for another reason: {message}"
        );
    }

    #[test]
    fn a_try_acquire_that_ignores_the_order_is_caught() {
        must_fail(
            Broken::IgnoresOrder,
            "exclusive_try_acquire",
            leasehold_conformance::cases::exclusive_try_acquire,
        );
    }

    #[test]
    fn an_abandoned_waiter_left_in_line_is_caught() {
        must_fail(
            Broken::KeepsAbandoned,
            "waiter_timing_out_around_a_release_leaves_no_ghost",
            leasehold_conformance::cases::waiter_timing_out_around_a_release_leaves_no_ghost,
        );
    }

    #[test]
    fn the_variant_as_built_passes_both() {
        leasehold_conformance::run(
            broken(Broken::No),
            leasehold_conformance::cases::exclusive_try_acquire,
        );
        leasehold_conformance::run(
            broken(Broken::No),
            leasehold_conformance::cases::waiter_timing_out_around_a_release_leaves_no_ghost,
        );
    }
}
