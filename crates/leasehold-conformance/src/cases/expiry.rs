//! Ttls, extend, and fences across holders.

use std::{sync::Arc, time::Duration};

use leasehold::DistributedLock;
use tokio::time::sleep;

use crate::support::{expiry_slack, is_held, ok, take, unique_key};

const SHORT: Duration = Duration::from_millis(300);
/// Long enough past `SHORT` for any server to have expired the key, on a loaded machine.
const PAST_SHORT: Duration = Duration::from_millis(900);
const LONG: Duration = Duration::from_secs(10);

/// A lease nobody renews ends with its ttl, and not before.
pub async fn expiry_frees_the_key(lock: Arc<dyn DistributedLock>) {
    let case = "expiry_frees_the_key";
    let key = unique_key(case, "k");
    let _abandoned = take(&*lock, case, &key, Duration::from_secs(2)).await;
    sleep(Duration::from_millis(500)).await;
    assert!(
        is_held(&*lock, case, &key).await,
        "[{case}] a 2 s lease ended within 0.5 s"
    );
    sleep(Duration::from_millis(2_500) + expiry_slack(&*lock)).await;
    let next = ok(
        case,
        "try_acquire after expiry",
        lock.try_acquire(&key, LONG).await,
    );
    let next = next.unwrap_or_else(|| panic!("[{case}] the key is still held 3 s into a 2 s ttl"));
    ok(case, "release", lock.release(next).await);
}

/// After a lease expired and someone else took the key, the old lease can neither release nor
/// extend, and the new holder keeps the lock.
pub async fn stale_release_and_extend_leave_new_holder_untouched(lock: Arc<dyn DistributedLock>) {
    let case = "stale_release_and_extend_leave_new_holder_untouched";
    let key = unique_key(case, "k");
    let mut stale = take(&*lock, case, &key, SHORT).await;
    sleep(PAST_SHORT + expiry_slack(&*lock)).await;
    let fresh = take(&*lock, case, &key, LONG).await;
    assert!(
        !ok(case, "stale extend", lock.extend(&mut stale, LONG).await),
        "[{case}] extend of an expired lease returned true while another holder has the key"
    );
    assert!(
        !ok(case, "stale release", lock.release(stale).await),
        "[{case}] release of an expired lease returned true while another holder has the key"
    );
    assert!(
        is_held(&*lock, case, &key).await,
        "[{case}] a stale release freed the new holder's lock"
    );
    assert!(
        ok(case, "new holder's release", lock.release(fresh).await),
        "[{case}] the new holder lost its lock to a stale lease"
    );
}

/// Extend moves the end of a lease past its original ttl and updates the lease's validity.
pub async fn extend_keeps_lease_past_original_ttl(lock: Arc<dyn DistributedLock>) {
    let case = "extend_keeps_lease_past_original_ttl";
    let key = unique_key(case, "k");
    let mut lease = take(&*lock, case, &key, Duration::from_millis(800)).await;
    let before = lease.valid_until();
    sleep(Duration::from_millis(200)).await;
    assert!(
        ok(
            case,
            "extend",
            lock.extend(&mut lease, Duration::from_secs(3)).await
        ),
        "[{case}] extend of a held lease returned false"
    );
    assert_eq!(
        lease.ttl(),
        Duration::from_secs(3),
        "[{case}] extend did not update the lease's ttl"
    );
    assert!(
        lease.valid_until() > before + Duration::from_secs(1),
        "[{case}] extend did not move valid_until forward"
    );
    sleep(Duration::from_millis(1_200)).await;
    assert!(
        is_held(&*lock, case, &key).await,
        "[{case}] the lease ended at its original ttl"
    );
    assert!(
        lease.is_valid(),
        "[{case}] extended lease reports itself invalid"
    );
    assert!(
        ok(case, "release", lock.release(lease).await),
        "[{case}] release after extend returned false"
    );
}

/// Extending an expired lease fails and does not bring the lock back.
pub async fn extend_after_expiry_returns_false_and_does_not_resurrect(
    lock: Arc<dyn DistributedLock>,
) {
    let case = "extend_after_expiry_returns_false_and_does_not_resurrect";
    let key = unique_key(case, "k");
    let mut lease = take(&*lock, case, &key, SHORT).await;
    let valid_until = lease.valid_until();
    sleep(PAST_SHORT + expiry_slack(&*lock)).await;
    assert!(
        !ok(
            case,
            "extend after expiry",
            lock.extend(&mut lease, LONG).await
        ),
        "[{case}] extend of an expired lease returned true"
    );
    assert_eq!(
        lease.valid_until(),
        valid_until,
        "[{case}] a failed extend changed valid_until"
    );
    assert!(
        !is_held(&*lock, case, &key).await,
        "[{case}] a failed extend resurrected the lock"
    );
}

/// Fences strictly increase across holders: after release and after expiry.
pub async fn fences_increase_across_holders(lock: Arc<dyn DistributedLock>) {
    let case = "fences_increase_across_holders";
    let key = unique_key(case, "k");
    let other = unique_key(case, "other");
    let mut last = 0u64;
    let mut check = |fence: u64, how: &str| {
        assert!(
            fence > last,
            "[{case}] fence {fence} after {how} is not above the previous {last}"
        );
        last = fence;
    };
    for _ in 0..5 {
        let lease = take(&*lock, case, &key, LONG).await;
        check(lease.fence(), "release");
        // Activity on another key must not disturb this key's order.
        let unrelated = take(&*lock, case, &other, LONG).await;
        ok(case, "release other", lock.release(unrelated).await);
        ok(case, "release", lock.release(lease).await);
    }
    for _ in 0..2 {
        let lease = take(&*lock, case, &key, SHORT).await;
        check(lease.fence(), "expiry");
        sleep(PAST_SHORT + expiry_slack(&*lock)).await;
    }
    let lease = take(&*lock, case, &key, LONG).await;
    check(lease.fence(), "expiry");
    ok(case, "release", lock.release(lease).await);
}
