//! Fair hand-off: a release that finds the lock wanted reserves it for the waiters, so a
//! newcomer (or the releaser asking again at once) does not cut in before them.

mod support;

use std::time::Duration;

use leasehold::{DistributedLock, LockKey};
use leasehold_redis::RedisLock;

const ACQUIRE: &str = include_str!("../scripts/acquire.lua");
const RELEASE: &str = include_str!("../scripts/release.lua");

/// A plain connection to the shared server, failing with instructions when it is not there.
async fn shared_conn() -> redis::aio::MultiplexedConnection {
    let url = support::shared_url();
    let connect = async {
        redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await
    };
    connect
        .await
        .unwrap_or_else(|e| leasehold_testkit::env::unreachable("Redis", &url, &e))
}

/// Polls the mark until it counts one waiter (up to 5 s, a loaded machine may take a while):
/// the last count read.
async fn one_waiter_counted(
    conn: &mut redis::aio::MultiplexedConnection,
    mark: &str,
) -> Option<i64> {
    let mut counted = None;
    for _ in 0..250 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        counted = redis::cmd("GET").arg(mark).query_async(conn).await.unwrap();
        if counted == Some(1) {
            break;
        }
    }
    counted
}

fn name(lock: &RedisLock, key: &LockKey) -> String {
    // The keys here have no `%`, `{` or `}`, so the name is the key as it is.
    format!("{{{}:{}}}", lock.namespace(), key.as_str())
}

/// The release (`reserve_ms` as the hand-off reservation) and a newcomer's attempt, pipelined
/// so that nothing but other clients can come between them: what the newcomer got.
async fn release_then_newcomer(
    conn: &mut redis::aio::MultiplexedConnection,
    name: &str,
    token: &str,
    reserve_ms: u64,
) -> (i64, Vec<i64>) {
    let (wanted, channel) = (format!("{name}:wanted"), format!("{name}:released"));
    let newcomer = leasehold::LeaseToken::random().unwrap().to_hex();
    let mut pipe = redis::pipe();
    pipe.cmd("EVAL")
        .arg(RELEASE)
        .arg(2)
        .arg(name)
        .arg(&wanted)
        .arg(token)
        .arg(&channel)
        .arg(reserve_ms)
        .cmd("EVAL")
        .arg(ACQUIRE)
        .arg(3)
        .arg(name)
        .arg(format!("{name}:fence"))
        .arg(&wanted)
        .arg(newcomer)
        .arg(10_000)
        .arg(0)
        .arg(0);
    pipe.query_async(conn).await.expect("the pipeline")
}

/// A waiter on another client, the holder's release and a newcomer's attempt right behind it:
/// the newcomer is refused (the lock is reserved for at most 20 ms) and the waiter gets it.
/// The negative control: the same release without a reservation lets the newcomer cut in, so
/// the assertion can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_does_not_cut_in_before_a_waiter_and_would_without_the_reservation() {
    let holder = support::shared_lock().await;
    let waiting = support::shared_lock().await;
    let mut conn = shared_conn().await;
    let ttl = Duration::from_secs(10);
    for (reserve_ms, newcomer_wins) in [(20, false), (0, true)] {
        let key = LockKey::new(format!(
            "hand-off/newcomer/{}/{reserve_ms}",
            std::process::id()
        ))
        .unwrap();
        let held = holder.try_acquire(&key, ttl).await.unwrap().expect("free");
        let waiter = {
            let (lock, key) = (waiting.clone(), key.clone());
            tokio::spawn(async move { lock.acquire(&key, ttl, Duration::from_secs(10)).await })
        };
        // Until the waiter has found it held and counted itself in (a loaded machine may
        // take a while).
        let name = name(&holder, &key);
        let counted = one_waiter_counted(&mut conn, &format!("{name}:wanted")).await;
        assert_eq!(counted, Some(1), "the waiter counted itself in");
        let (released, newcomer) =
            release_then_newcomer(&mut conn, &name, &held.token().to_hex(), reserve_ms).await;
        if newcomer_wins {
            assert_eq!(released, 1, "released without a reservation");
            assert_eq!(newcomer[0], 1, "control: the newcomer cut in: {newcomer:?}");
            // Let the waiter have it: the newcomer's lock goes by hand.
            let _: () = redis::cmd("DEL")
                .arg(&name)
                .query_async(&mut conn)
                .await
                .unwrap();
        } else {
            assert_eq!(released, 2, "released and reserved for the waiter");
            assert_eq!(newcomer[0], 0, "the newcomer cut in before the waiter");
            assert!(
                (0..=20).contains(&newcomer[1]),
                "the newcomer was told to come back in {} ms",
                newcomer[1]
            );
        }
        let lease = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter got the lock")
            .unwrap()
            .expect("the waiter got the lock");
        assert!(waiting.release(lease).await.unwrap());
    }
}

/// Through `RedisLock`: the releaser asking again at once (the bench's "8 tasks, no pause")
/// waits behind the waiter that was there first, most rounds (the reservation is 20 ms; a
/// waiter slower than that on a loaded machine loses its turn, which is why not every round).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_releaser_asking_again_at_once_waits_behind_the_waiter() {
    let releaser = support::shared_lock().await;
    let waiting = support::shared_lock().await;
    let key = LockKey::new(format!("hand-off/releaser/{}", std::process::id())).unwrap();
    let mut conn = shared_conn().await;
    let ttl = Duration::from_secs(10);
    let mut waiter_first = 0;
    for _ in 0..10 {
        let held = releaser
            .try_acquire(&key, ttl)
            .await
            .unwrap()
            .expect("free");
        let waiter = {
            let (lock, key) = (waiting.clone(), key.clone());
            tokio::spawn(async move {
                let lease = lock.acquire(&key, ttl, Duration::from_secs(10)).await?;
                let fence = lease.fence();
                lock.release(lease).await?;
                Ok::<_, leasehold::LockError>(fence)
            })
        };
        // Until the waiter is counted in; if it is not by then, the round just counts as lost.
        let _ = one_waiter_counted(&mut conn, &format!("{}:wanted", name(&releaser, &key))).await;
        assert!(releaser.release(held).await.unwrap());
        let again = releaser
            .acquire(&key, ttl, Duration::from_secs(10))
            .await
            .expect("the releaser's second acquire");
        let again_fence = again.fence();
        assert!(releaser.release(again).await.unwrap());
        let waiter_fence = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter finished")
            .unwrap()
            .expect("the waiter got the lock");
        if waiter_fence < again_fence {
            waiter_first += 1;
        }
    }
    assert!(
        waiter_first >= 7,
        "the waiter came first in only {waiter_first} of 10 rounds"
    );
}

/// The mark counts the waiters: each waiting acquire counts itself in once, and takes itself
/// out when it gets the lock, when its deadline passes, and when it is dropped; a reservation
/// nobody is left to take is given up at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mark_counts_waiters_in_and_out() {
    let lock = support::shared_lock().await;
    let key = LockKey::new(format!("hand-off/count/{}", std::process::id())).unwrap();
    let name = name(&lock, &key);
    let mark = format!("{name}:wanted");
    let mut conn = shared_conn().await;
    let count = |conn: &redis::aio::MultiplexedConnection| {
        let (mut conn, mark) = (conn.clone(), mark.clone());
        async move {
            redis::cmd("GET")
                .arg(mark)
                .query_async::<Option<i64>>(&mut conn)
                .await
                .unwrap()
        }
    };
    let ttl = Duration::from_secs(10);
    let held = lock.try_acquire(&key, ttl).await.unwrap().expect("free");
    let spawn = |wait: Duration| {
        let (lock, key) = (lock.clone(), key.clone());
        tokio::spawn(async move { lock.acquire(&key, ttl, wait).await })
    };
    let patient = spawn(Duration::from_secs(10));
    let impatient = spawn(Duration::from_millis(1_500));
    let dropped = spawn(Duration::from_secs(10));
    assert_eq!(
        count_becomes(&count, &conn, Some(3)).await,
        Some(3),
        "three waiters counted in"
    );
    dropped.abort();
    let _ = dropped.await;
    let gone = impatient.await.unwrap();
    assert!(
        matches!(gone, Err(leasehold::LockError::Timeout { .. })),
        "{gone:?}"
    );
    // The timed-out one left before returning; the dropped one leaves in the background.
    assert_eq!(
        count_becomes(&count, &conn, Some(1)).await,
        Some(1),
        "the waiters that left are counted out"
    );
    assert!(lock.release(held).await.unwrap());
    let lease = tokio::time::timeout(Duration::from_secs(5), patient)
        .await
        .expect("the waiter got the lock")
        .unwrap()
        .expect("the waiter got the lock");
    assert_eq!(count(&conn).await, None, "the winner counted itself out");
    // No waiter left: the release frees the lock for anyone at once.
    assert!(lock.release(lease).await.unwrap());
    let free = lock
        .try_acquire(&key, ttl)
        .await
        .unwrap()
        .expect("free at once");

    // A release reserving the lock for a waiter: the waiter takes it.
    let waiter = spawn(Duration::from_secs(10));
    assert_eq!(count_becomes(&count, &conn, Some(1)).await, Some(1));
    let (mut raw, token) = (conn.clone(), free.token().to_hex());
    let released: i64 = redis::cmd("EVAL")
        .arg(RELEASE)
        .arg(2)
        .arg(&name)
        .arg(&mark)
        .arg(token)
        .arg(format!("{name}:released"))
        // Longer than the test: only the waiter can end it, by taking it.
        .arg(60_000)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(released, 2);
    // The waiter is woken, takes the reservation, and gives it back.
    let lease = waiter
        .await
        .unwrap()
        .expect("the waiter took the reservation");
    assert!(lock.release(lease).await.unwrap());
    // A reservation whose last waiter then leaves is given up at once (set by hand: a waiter
    // that would leave instead of taking it cannot be timed).
    let _: () = redis::cmd("SET")
        .arg(&mark)
        .arg(1)
        .arg("PX")
        .arg(2_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&name)
        .arg("handoff")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let left: i64 = redis::cmd("EVAL")
        .arg(include_str!("../scripts/leave.lua"))
        .arg(2)
        .arg(&name)
        .arg(&mark)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 1, "the last waiter's leave gave the reservation up");
    let lease = lock
        .try_acquire(&key, ttl)
        .await
        .unwrap()
        .expect("free after the leave");
    assert!(lock.release(lease).await.unwrap());
}

/// Polls `count` until it reads `want` (up to 5 s): the last value read.
async fn count_becomes<F, Fut>(
    count: &F,
    conn: &redis::aio::MultiplexedConnection,
    want: Option<i64>,
) -> Option<i64>
where
    F: Fn(&redis::aio::MultiplexedConnection) -> Fut,
    Fut: std::future::Future<Output = Option<i64>>,
{
    let mut last = None;
    for _ in 0..250 {
        last = count(conn).await;
        if last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last
}

/// A waiting acquire dropped while its first attempt is in flight (held up by a write pause
/// on a private server, so the script runs, counting it in, only after the drop) is counted
/// out again, next to a waiter that stays. Counting a waiter in only once its reply said so
/// (the broken variant) leaves it counted for as long as the other keeps the mark alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_dropped_in_flight_is_counted_out() {
    let server = support::PrivateRedis::start(&[]);
    let lock = RedisLock::connect(&server.url())
        .await
        .expect("private server");
    let key = LockKey::new("dropped").unwrap();
    let (name, ttl) = (name(&lock, &key), Duration::from_secs(30));
    let mark = format!("{name}:wanted");
    let held = lock.try_acquire(&key, ttl).await.unwrap().expect("free");
    let mut admin = server.admin();
    // A waiter that stays: it subscribes the lock's channel (so the next waiter counts itself
    // in from its first attempt) and keeps the mark alive.
    let stays = {
        let (lock, key) = (lock.clone(), key.clone());
        tokio::spawn(async move { lock.acquire(&key, ttl, Duration::from_secs(20)).await })
    };
    let mut count: Option<i64> = None;
    for _ in 0..250 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        count = redis::cmd("GET").arg(&mark).query(&mut admin).unwrap();
        if count == Some(1) {
            break;
        }
    }
    assert_eq!(count, Some(1), "the waiter that stays is counted in");
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_000)
        .arg("WRITE")
        .query(&mut admin)
        .unwrap();
    let paused = std::time::Instant::now();
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        lock.acquire(&key, ttl, Duration::from_secs(10)),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "the acquire finished during a write pause"
    );
    // The paused attempt runs when the pause ends (counting it in), the leave behind it on
    // the same connection counts it out.
    let mut settled = 0;
    for _ in 0..250 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        count = redis::cmd("GET").arg(&mark).query(&mut admin).unwrap();
        // Both ran once it reads 1 a while after the pause, not before it ended.
        settled = if count == Some(1) { settled + 1 } else { 0 };
        if settled == 25 && paused.elapsed() > Duration::from_millis(1_500) {
            break;
        }
    }
    assert_eq!(count, Some(1), "a dropped waiter is still counted");
    let fence: Option<i64> = redis::cmd("GET")
        .arg(format!("{name}:fence"))
        .query(&mut admin)
        .unwrap();
    assert!(fence.is_some(), "the lock was taken before the pause");
    assert!(lock.release(held).await.unwrap());
    let lease = tokio::time::timeout(Duration::from_secs(5), stays)
        .await
        .expect("the waiter that stays got the lock")
        .unwrap()
        .expect("the waiter that stays got the lock");
    assert!(lock.release(lease).await.unwrap());
    let again = lock.try_acquire(&key, ttl).await.unwrap();
    assert!(
        again.is_some(),
        "the lock was reserved for a dropped waiter"
    );
}

/// Waiters counted in the mark but nobody subscribed to hear the release (their subscriptions
/// went with a failed-over node): the release reserves nothing, so the lock is not kept from
/// everyone for nobody. The control: the same release with a subscriber reserves it.
#[tokio::test]
async fn a_release_nobody_hears_reserves_nothing() {
    let mut conn = shared_conn().await;
    let url = support::shared_url();
    for subscribed in [false, true] {
        let name = format!("{{leasehold-unheard:{}:{subscribed}}}", std::process::id());
        let (mark, channel) = (format!("{name}:wanted"), format!("{name}:released"));
        let token = leasehold::LeaseToken::random().unwrap().to_hex();
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(&name)
            .arg(&token)
            .arg("PX")
            .arg(10_000)
            .ignore()
            .cmd("SET")
            .arg(&mark)
            .arg(1)
            .arg("PX")
            .arg(10_000)
            .ignore()
            .query_async(&mut conn)
            .await
            .unwrap();
        let listener = if subscribed {
            let mut pubsub = redis::Client::open(url.as_str())
                .unwrap()
                .get_async_pubsub()
                .await
                .unwrap();
            pubsub.subscribe(&channel).await.unwrap();
            Some(pubsub)
        } else {
            None
        };
        let released: i64 = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(2)
            .arg(&name)
            .arg(&mark)
            .arg(&token)
            .arg(&channel)
            .arg(20)
            .query_async(&mut conn)
            .await
            .unwrap();
        let expected = if subscribed { 2 } else { 1 };
        assert_eq!(released, expected, "subscribed: {subscribed}");
        drop(listener);
        let _: () = redis::cmd("DEL")
            .arg(&name)
            .arg(&mark)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}
