//! An acquire sent twice: the cluster client sends a command again by itself after a dropped
//! connection, so an acquire that ran may run a second time with the same token. The second
//! run answers the first one's fence and changes nothing (it writes the fence counter again,
//! unchanged): no ghost lock the caller does not know it holds, no waiter taken out of the mark
//! twice.

mod support;

use leasehold::LeaseToken;

const ACQUIRE: &str = include_str!("../scripts/acquire.lua");

/// The acquire script without its answer for a token that holds the lock already: the
/// negative control.
fn without_resend_answer() -> String {
    let branch = "if holder == ARGV[1] then";
    assert!(ACQUIRE.contains(branch), "the script has the branch");
    ACQUIRE.replace(branch, "if false then")
}

/// Runs `script` for `token` on the lock `name`: the reply.
async fn acquire(
    conn: &mut redis::aio::MultiplexedConnection,
    script: &str,
    name: &str,
    token: &str,
    counted: bool,
) -> Vec<i64> {
    redis::cmd("EVAL")
        .arg(script)
        .arg(3)
        .arg(name)
        .arg(format!("{name}:fence"))
        .arg(format!("{name}:wanted"))
        .arg(token)
        .arg(10_000)
        .arg(2_000)
        .arg(u8::from(counted))
        .arg(0)
        .query_async(conn)
        .await
        .expect("the acquire script")
}

#[tokio::test]
async fn the_same_acquire_sent_again_answers_its_fence_and_changes_nothing() {
    let url = support::shared_url();
    let mut conn = async {
        redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await
    }
    .await
    .unwrap_or_else(|e| leasehold_testkit::env::unreachable("Redis", &url, &e));
    for (script, answered) in [(ACQUIRE.to_owned(), true), (without_resend_answer(), false)] {
        let name = format!("{{leasehold-resend:{}:{answered}}}", std::process::id());
        let mark = format!("{name}:wanted");
        let _: () = redis::cmd("DEL")
            .arg(&name)
            .arg(format!("{name}:fence"))
            .query_async(&mut conn)
            .await
            .unwrap();
        // Two waiters counted; this one (counted) finds the lock free and takes it.
        let _: () = redis::cmd("SET")
            .arg(&mark)
            .arg(2)
            .arg("PX")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        let token = LeaseToken::random().unwrap().to_hex();
        let first = acquire(&mut conn, &script, &name, &token, true).await;
        assert_eq!(first[0], 1, "taken: {first:?}");
        let again = acquire(&mut conn, &script, &name, &token, true).await;
        let waiters: Option<i64> = redis::cmd("GET")
            .arg(&mark)
            .query_async(&mut conn)
            .await
            .unwrap();
        if answered {
            assert_eq!(again, first, "the resend answers the same fence");
            assert_eq!(waiters, Some(1), "the winner left the mark once");
            // Another token is still refused.
            let other = LeaseToken::random().unwrap().to_hex();
            let refused = acquire(&mut conn, &script, &name, &other, false).await;
            assert_eq!(refused[0], 0, "held: {refused:?}");
        } else {
            assert_eq!(again[0], 0, "control: the resend is refused: {again:?}");
        }
        let _: () = redis::cmd("DEL")
            .arg(&name)
            .arg(format!("{name}:fence"))
            .arg(&mark)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}
