//! Least-privilege ACL users, credentials in URLs, and what `Debug` and errors show.

mod support;

use std::{sync::Arc, time::Duration};

use leasehold::{DistributedLock, FailureKind, LockAdmin, LockError, LockKey};
use leasehold_redis::{EvictionPolicy, RedisLock};
use support::{PrivateRedis, LOCKER_ACL};

fn server_with_users() -> PrivateRedis {
    let server = PrivateRedis::start(&[]);
    let mut admin = server.admin();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(LOCKER_ACL)
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&["powerless", "on", ">pw", "resetkeys", "-@all", "+ping"][..])
        .query(&mut admin)
        .unwrap();
    server
}

fn locker_url(server: &PrivateRedis) -> String {
    format!("redis://locker:s3cret-pw@127.0.0.1:{}", server.port)
}

#[test]
fn core_cases_pass_as_the_least_privilege_user() {
    let server = server_with_users();
    let url = locker_url(&server);
    let core = [
        "exclusive_try_acquire",
        "release_then_reacquire",
        "stale_release_and_extend_leave_new_holder_untouched",
        "extend_keeps_lease_past_original_ttl",
        "fences_increase_across_holders",
        "waiting_acquire_gets_lock_soon_after_release",
        "waiting_acquire_honours_deadline",
        "special_character_keys_work_and_do_not_collide",
        "stress_mutual_exclusion",
        "guard_lost_fires_when_lease_taken_away",
    ];
    for case in leasehold_conformance::all_cases()
        .iter()
        .filter(|c| core.contains(&c.name))
    {
        let url = url.clone();
        leasehold_conformance::run(
            async move { RedisLock::connect(&url).await.expect("connect as locker") },
            case.run,
        );
    }
}

#[test]
fn read_write_locks_and_semaphores_work_as_the_least_privilege_user() {
    let server = server_with_users();
    let url = locker_url(&server);
    for case in leasehold_conformance::rw::all_cases() {
        let url = url.clone();
        leasehold_conformance::rw::run(
            async move { RedisLock::connect(&url).await.expect("connect as locker") },
            case.run,
        );
    }
    for case in leasehold_conformance::semaphore::all_cases() {
        let url = url.clone();
        leasehold_conformance::semaphore::run(
            async move { RedisLock::connect(&url).await.expect("connect as locker") },
            case.run,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_privilege_user_cannot_touch_other_keys_and_skips_the_eviction_check() {
    let server = server_with_users();
    let lock = RedisLock::connect(&locker_url(&server)).await.unwrap();
    assert_eq!(
        lock.eviction_policy().await.unwrap(),
        EvictionPolicy::Unknown
    );
    let mut conn = redis::Client::open(locker_url(&server))
        .unwrap()
        .get_connection()
        .unwrap();
    let denied: redis::RedisResult<()> = redis::cmd("SET").arg("other:a").arg(1).query(&mut conn);
    assert!(
        denied.is_err(),
        "the documented ACL lets the user write outside the namespace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_rights_gets_a_clear_permanent_error() {
    let server = server_with_users();
    let lock = RedisLock::connect(&format!("redis://powerless:pw@127.0.0.1:{}", server.port))
        .await
        .expect("connecting needs no rights");
    let err = lock
        .try_acquire(&LockKey::new("k").unwrap(), Duration::from_secs(1))
        .await
        .unwrap_err();
    match &err {
        LockError::Backend { kind, .. } => assert_eq!(*kind, FailureKind::Permanent, "{err}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(
        err.to_string().contains("NOPERM") || err.to_string().to_lowercase().contains("permission"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_permanent_error_that_hides_the_password() {
    let server = server_with_users();
    let url = format!("redis://locker:wrong-hunter2@127.0.0.1:{}", server.port);
    let err = RedisLock::connect(&url).await.unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    let err = RedisLock::connect("redis://u:hunter2@[bad")
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::InvalidConfig { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_shows_neither_password_nor_token() {
    let server = server_with_users();
    let lock = RedisLock::connect(&locker_url(&server)).await.unwrap();
    let lease = lock
        .try_acquire(&LockKey::new("k").unwrap(), Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let shown = format!(
        "{lock:?} {lease:?} {:?}",
        Arc::new(lock.clone()) as Arc<dyn DistributedLock>
    );
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(!shown.contains(&lease.token().to_hex()[4..]), "{shown}");
    assert!(
        shown.contains(&format!("127.0.0.1:{}", server.port)),
        "{shown}"
    );
    let builder = RedisLock::builder().url(locker_url(&server));
    assert!(!format!("{builder:?}").contains("s3cret-pw"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_side_works_with_the_documented_acl_plus_scan() {
    use leasehold::{DistributedRwLock, DistributedSemaphore, Primitive};
    let server = PrivateRedis::start(&[]);
    let mut admin = server.admin();
    let mut acl = LOCKER_ACL.to_vec();
    acl[0] = "operator";
    acl.push("+scan");
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&acl[..])
        .query(&mut admin)
        .unwrap();
    let url = format!("redis://operator:s3cret-pw@127.0.0.1:{}", server.port);
    let lock = RedisLock::connect(&url).await.unwrap();
    let k = LockKey::new("acl/a").unwrap();
    let ttl = Duration::from_secs(30);
    let lease = DistributedLock::try_acquire(&lock, &k, ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(lock.status(&k).await.unwrap().is_held());
    assert_eq!(lock.list("acl/").await.unwrap().len(), 1);
    let reader = lock.try_acquire_read(&k, ttl).await.unwrap().unwrap();
    let permit = DistributedSemaphore::try_acquire(&lock, &k, 2, ttl)
        .await
        .unwrap()
        .unwrap();
    for primitive in [Primitive::RwLock, Primitive::Semaphore] {
        assert_eq!(lock.status_of(primitive, &k).await.unwrap().holders, 1);
        assert_eq!(lock.list_of(primitive, "acl/").await.unwrap().len(), 1);
    }
    assert!(DistributedRwLock::release(&lock, reader).await.unwrap());
    assert!(DistributedSemaphore::release(&lock, permit).await.unwrap());
    assert!(lock.force_release(&k).await.unwrap());
    assert!(!DistributedLock::release(&lock, lease).await.unwrap());
}

#[test]
fn the_readme_documents_the_acl_line_these_tests_use() {
    assert_eq!(
        support::documented_acl(false),
        LOCKER_ACL,
        "README and tests disagree on the ACL"
    );
}

/// The acquire script reads `TIME` (the fence floor) before its `SET`: without `+time` the
/// acquire fails with a permanent error and leaves no lock behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_time_the_acquire_fails_before_it_writes_anything() {
    let server = server_with_users();
    let mut admin = server.admin();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "locker", "-time"][..])
        .query(&mut admin)
        .unwrap();
    let lock = RedisLock::connect(&locker_url(&server))
        .await
        .expect("connect as locker");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut admin)
        .unwrap();
    let err = lock
        .try_acquire(&LockKey::new("no-time").unwrap(), Duration::from_secs(30))
        .await
        .unwrap_err();
    // Not only no lock left (the cleanup would remove one): no SET ran at all.
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut admin)
        .unwrap();
    assert!(
        !stats.contains("cmdstat_set:"),
        "the script ran SET before TIME was refused:\n{stats}"
    );
    let text = err.to_string();
    assert!(
        text.contains("NOPERM") || text.contains("can't run this command"),
        "{err}"
    );
    assert!(!err.is_transient(), "{err:?}");
    tokio::time::sleep(Duration::from_millis(200)).await; // any cleanup has run
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut admin).unwrap();
    assert!(keys.is_empty(), "the failed acquire wrote {keys:?}");
}
