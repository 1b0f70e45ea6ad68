//! Faults on a private 3-member cluster (heartbeat 50 ms, election timeout 500 ms: a 1 s
//! minimum lease): the leader killed or paused under a held guard and a waiter, a follower
//! restarted, every member killed and restarted (fences), and the holder's client cut off
//! from the cluster by the harness's proxy. One test at a time: each runs three etcd members
//! on two shared cores.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use leasehold::{DistributedLock, GuardState, LockKey, LockOptions, Locker};
use leasehold_etcd::EtcdLock;
use leasehold_testkit::{
    etcd_cluster::{PrivateEtcdCluster, ELECTION_TIMEOUT_MS},
    proxy::{Mode, Proxy},
};

static SERIAL: Mutex<()> = Mutex::new(());

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(endpoints: &[String]) -> EtcdLock {
    let endpoints: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    EtcdLock::builder(&endpoints)
        .request_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1))
        .election_timeout(Duration::from_millis(ELECTION_TIMEOUT_MS))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot reach the private etcd cluster: {e}"))
}

fn key(name: &str) -> LockKey {
    LockKey::new(format!("faults/{name}/{}", std::process::id())).unwrap()
}

/// How long until a fresh key can be taken and given back again (the failover time seen by a
/// client).
async fn until_served(lock: &EtcdLock, within: Duration) -> Duration {
    let started = Instant::now();
    let probe = key("probe");
    while started.elapsed() < within {
        if let Ok(Some(lease)) = lock.try_acquire(&probe, Duration::from_secs(2)).await {
            let _ = lock.release(lease).await;
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the cluster served no lock within {within:?} of the fault");
}

/// A guard (5 s ttl, renewed every 500 ms) and a waiter on one key, then `fault` on the
/// cluster (it answers the member it hit), the time until locks are served again, then `heal`;
/// then the guard must still hold, the waiter must still wait, and after the release the
/// waiter gets the key with a higher fence.
fn guard_and_waiter_survive(
    name: &str,
    fault: impl FnOnce(&mut PrivateEtcdCluster) -> usize,
    heal: impl FnOnce(&mut PrivateEtcdCluster, usize),
) {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let mut cluster = PrivateEtcdCluster::start();
    runtime().block_on(async {
        let lock = Arc::new(connect(&cluster.endpoints()).await);
        let key = key(name);
        let locker = Locker::new(Arc::clone(&lock));
        let options = LockOptions::default()
            .with_ttl(Duration::from_secs(5))
            .with_renew_every(Duration::from_millis(500));
        let guard = locker.lock(&key, options).await.expect("lock");
        let waiter = {
            let (lock, key) = (Arc::clone(&lock), key.clone());
            tokio::spawn(async move {
                lock.acquire(&key, Duration::from_secs(5), Duration::from_secs(60))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let faulted = Instant::now();
        let member = fault(&mut cluster);
        let served = until_served(&lock, Duration::from_secs(20)).await;
        eprintln!("{name}: member {member} faulted; locks served again after {served:?}");
        heal(&mut cluster, member);
        // Several renewals after the cluster came back: never `Lost`, and `Held` again (a
        // renewal that failed a moment ago reads `Unknown` until the next one).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut state = guard.state();
        let settle = Instant::now();
        while state == GuardState::Unknown && settle.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            state = guard.state();
        }
        assert_eq!(
            state,
            GuardState::Held,
            "{name}: the guard did not hold through the fault ({:?} after it)",
            faulted.elapsed()
        );
        assert!(
            !waiter.is_finished(),
            "{name}: the waiter finished while the guard held the key: {:?}",
            waiter.await
        );
        let fence = guard.fence();
        assert!(guard.release().await.expect("release"));
        let released = Instant::now();
        let lease = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap_or_else(|_| {
                panic!("{name}: the waiter was not served within 10 s of the release")
            })
            .unwrap()
            .expect("the waiter's acquire");
        eprintln!(
            "{name}: release to the waiter's grant: {:?}",
            released.elapsed()
        );
        assert!(
            lease.fence() > fence,
            "{name}: fence {} after {fence}",
            lease.fence()
        );
        assert!(lock.release(lease).await.unwrap());
    });
}

#[test]
fn a_leader_killed_under_a_held_guard_and_a_waiter_fails_over_and_fences_go_on() {
    guard_and_waiter_survive(
        "leader-kill",
        |cluster| {
            let leader = cluster.wait_leader(Duration::from_secs(10)).unwrap();
            cluster.kill(leader);
            leader
        },
        |cluster, leader| cluster.restart(leader),
    );
}

#[test]
fn a_leader_paused_past_the_election_timeout_keeps_the_guard_and_the_line() {
    guard_and_waiter_survive(
        "leader-pause",
        |cluster| {
            let leader = cluster.wait_leader(Duration::from_secs(10)).unwrap();
            cluster.pause(leader);
            leader
        },
        |cluster, leader| {
            // Locks were served again (so a new leader was elected) a second ago at least:
            // back as a follower after one more election timeout.
            std::thread::sleep(Duration::from_millis(ELECTION_TIMEOUT_MS));
            cluster.resume(leader);
        },
    );
}

#[test]
fn a_restarted_follower_changes_nothing() {
    guard_and_waiter_survive(
        "follower-restart",
        |cluster| {
            let leader = cluster.wait_leader(Duration::from_secs(10)).unwrap();
            let follower = (leader + 1) % 3;
            cluster.kill(follower);
            follower
        },
        |cluster, follower| cluster.restart(follower),
    );
}

#[test]
fn fences_never_repeat_across_a_kill_and_restart_of_every_member() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let cluster = Arc::new(Mutex::new(PrivateEtcdCluster::start()));
    let endpoints = cluster.lock().unwrap().endpoints();
    runtime().block_on(async {
        let store = {
            let cluster = Arc::clone(&cluster);
            move || {
                let cluster = Arc::clone(&cluster);
                async move {
                    let mut cluster = cluster.lock().unwrap();
                    for i in 0..3 {
                        cluster.kill(i);
                    }
                    for i in 0..3 {
                        cluster.restart(i);
                    }
                    cluster.wait_healthy(Duration::from_secs(30)).unwrap();
                }
            }
        };
        leasehold_conformance::restart::check(|| connect(&endpoints), store).await;
    });
}

/// The holder's client loses the cluster (every member behind a black-holed proxy): its guard
/// reports `Lost` by the end of its validity, and another client is granted the key only after
/// that.
#[test]
fn a_partitioned_holder_reports_lost_before_anyone_else_is_granted() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let cluster = PrivateEtcdCluster::start();
    runtime().block_on(async {
        let mut proxies = Vec::new();
        for endpoint in cluster.endpoints() {
            proxies.push(Proxy::start(endpoint.parse().unwrap()).await.unwrap());
        }
        let through: Vec<String> = proxies.iter().map(|p| p.addr.to_string()).collect();
        let holder = Arc::new(connect(&through).await);
        let other = connect(&cluster.endpoints()).await;
        let key = key("partition");
        let options = LockOptions::default()
            .with_ttl(Duration::from_secs(3))
            .with_renew_every(Duration::from_millis(500));
        let guard = Locker::new(Arc::clone(&holder))
            .lock(&key, options)
            .await
            .expect("lock");
        for proxy in &proxies {
            proxy.set(Mode::BlackHole);
        }
        let cut = Instant::now();
        let valid_until = guard.valid_until();
        let waited = tokio::spawn(async move {
            other
                .acquire(&key, Duration::from_secs(5), Duration::from_secs(30))
                .await
                .map(|lease| (Instant::now(), lease))
        });
        let state = tokio::time::timeout(Duration::from_secs(10), guard.lost())
            .await
            .expect("lost() did not fire within 10 s of the partition");
        let lost_at = Instant::now();
        assert_eq!(state, GuardState::Lost);
        let (granted_at, lease) = waited.await.unwrap().expect("the other client's acquire");
        eprintln!(
            "partition: the holder's guard reported Lost {:?} after the cut ({:?} after its \
             validity); the other client was granted {:?} after the cut",
            lost_at - cut,
            lost_at.saturating_duration_since(valid_until),
            granted_at - cut
        );
        assert!(
            lost_at <= valid_until + Duration::from_millis(500),
            "Lost came {:?} after the validity ended",
            lost_at - valid_until
        );
        assert!(
            granted_at > valid_until,
            "the other client was granted the key {:?} before the holder's validity ended",
            valid_until - granted_at
        );
        assert!(lease.fence() > guard.fence());
        for proxy in &proxies {
            proxy.set(Mode::Pass);
        }
    });
}

/// A compaction of the whole history while a waiter waits: its watch goes on (or restarts
/// from a fresh read) and it gets the key as soon as the holder releases.
#[test]
fn a_compaction_during_a_wait_leaves_the_waiter_in_line() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let cluster = PrivateEtcdCluster::start();
    runtime().block_on(async {
        let lock = Arc::new(connect(&cluster.endpoints()).await);
        let key = key("compaction");
        let held = lock
            .try_acquire(&key, Duration::from_secs(10))
            .await
            .unwrap()
            .expect("a fresh key");
        let waiter = {
            let (lock, key) = (Arc::clone(&lock), key.clone());
            tokio::spawn(async move {
                lock.acquire(&key, Duration::from_secs(5), Duration::from_secs(30))
                    .await
            })
        };
        let mut client = lock.client().clone();
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Writes of its own, then everything up to now compacted away.
            client
                .put(
                    format!("faults/compaction-noise/{}", std::process::id()),
                    "x",
                    None,
                )
                .await
                .unwrap();
            let revision = client
                .get("faults/", None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision();
            client
                .compact(
                    revision,
                    Some(leasehold_etcd::etcd_client::CompactionOptions::new().with_physical()),
                )
                .await
                .unwrap();
        }
        assert!(
            !waiter.is_finished(),
            "the waiter finished while the key was held"
        );
        let fence = held.fence();
        assert!(lock.release(held).await.unwrap());
        let released = Instant::now();
        let lease = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter was not served within 5 s of the release")
            .unwrap()
            .expect("the waiter's acquire");
        eprintln!(
            "compaction: release to the waiter's grant: {:?}",
            released.elapsed()
        );
        assert!(
            released.elapsed() < Duration::from_secs(2),
            "{:?}",
            released.elapsed()
        );
        assert!(lease.fence() > fence);
        assert!(lock.release(lease).await.unwrap());
    });
}
