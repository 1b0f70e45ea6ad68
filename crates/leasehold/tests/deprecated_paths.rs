//! A backend written against the old `docs/custom-backend.md` keeps compiling for one release:
//! the old paths of the kit still work (with deprecation warnings, allowed here) and mean the
//! same as the new ones.
#![allow(deprecated)]

use std::time::{Duration, Instant};

use leasehold::{backend, Lease, LeaseToken, LockKey, LockStatus};

#[test]
fn the_old_paths_still_work_and_agree_with_the_kit() {
    let key = LockKey::new("old/paths").unwrap();
    let token = LeaseToken::random().unwrap();
    let ttl = leasehold::ttl::check(Duration::from_millis(1_500)).unwrap();
    assert_eq!(
        ttl,
        backend::ttl::check(Duration::from_millis(1_500)).unwrap()
    );
    let sent_at = Instant::now();
    let mut old = Lease::new(key.clone(), token, 3, ttl, sent_at);
    let new = backend::lease(key, token, 3, ttl, sent_at);
    assert_eq!(old.valid_until(), new.valid_until());
    let later = sent_at + Duration::from_millis(100);
    old.renewed(ttl, later);
    let mut renewed = new;
    backend::renew(&mut renewed, ttl, later);
    assert_eq!(old.valid_until(), renewed.valid_until());
    assert_eq!(
        LockStatus::new(Some(3), None),
        backend::status(Some(3), None)
    );
    let wakers: std::sync::Arc<leasehold::Wakers> = leasehold::Wakers::new();
    let _handle: leasehold::WakeHandle = wakers.register("k");
    let _deadline = leasehold::wait::Deadline::after(Duration::from_secs(1));
}
