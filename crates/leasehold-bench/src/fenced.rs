//! The fenced floor: the server work of leasehold-redis's scripts (the same Lua text: `TIME`,
//! `SET NX PX`, `INCR` of the per-key fence counter with its clock floor; then a compare-and-
//! delete that `PUBLISH`es and reserves the lock for its waiters when a waiter marked it), sent by hand on the same `ConnectionManager`, with none of
//! leasehold's client-side work (key validation, leases, ghost cleanup, tracing, trait objects).

use async_trait::async_trait;
use leasehold::LeaseToken;
use redis::{
    aio::{ConnectionLike, ConnectionManager},
    Script,
};

use crate::contenders::{Contender, Held, TTL};

/// leasehold-redis's own scripts, so the server work never drifts from the library's.
const ACQUIRE: &str = include_str!("../../leasehold-redis/scripts/acquire.lua");
const RELEASE: &str = include_str!("../../leasehold-redis/scripts/release.lua");

/// The hand-off reservation leasehold-redis passes to its release script (in ms).
const HANDOFF_MS: u64 = 20;

/// On one server through a `ConnectionManager`, or on a cluster through its connection.
pub(crate) struct FencedRaw<C = ConnectionManager> {
    conn: C,
    acquire: Script,
    release: Script,
    /// `PUBLISH`, or `SPUBLISH` on a cluster (as leasehold-redis passes).
    publish: &'static str,
    label: &'static str,
}

impl FencedRaw {
    pub(crate) fn new(conn: ConnectionManager) -> Self {
        Self::on(conn, "PUBLISH", "fenced raw (leasehold's scripts by hand)")
    }
}

impl<C: ConnectionLike + Clone + Send + Sync> FencedRaw<C> {
    pub(crate) fn on(conn: C, publish: &'static str, label: &'static str) -> Self {
        Self {
            conn,
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
            publish,
            label,
        }
    }

    /// One attempt: the fence when taken.
    pub(crate) async fn attempt(&self, lock: &str, token: &str) -> Option<u64> {
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = self
            .acquire
            .key(lock)
            .key(format!("{lock}:fence"))
            .key(format!("{lock}:wanted"))
            .arg(token)
            .arg(TTL.as_millis() as u64)
            .arg(0)
            .arg(0)
            .arg(0)
            .invoke_async(&mut conn)
            .await
            .expect("fenced acquire");
        match reply.as_slice() {
            [1, fence] => u64::try_from(*fence).ok(),
            _ => None,
        }
    }

    /// The compare-and-delete that publishes the release.
    pub(crate) async fn release_token(&self, lock: &str, token: &str) {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .release
            .key(lock)
            .key(format!("{lock}:wanted"))
            .arg(token)
            .arg(format!("{lock}:released"))
            .arg(HANDOFF_MS)
            .arg(self.publish)
            .invoke_async(&mut conn)
            .await
            .expect("fenced release");
    }
}

#[async_trait]
impl<C: ConnectionLike + Clone + Send + Sync + 'static> Contender for FencedRaw<C> {
    fn name(&self) -> String {
        self.label.into()
    }

    async fn try_acquire(&self, key: &str) -> Option<Held> {
        let token = LeaseToken::random().expect("os random").to_hex();
        let lock = format!("{{fraw:{key}}}");
        self.attempt(&lock, &token)
            .await
            .map(|_| Held::Raw { key: lock, token })
    }

    fn can_wait(&self) -> bool {
        false
    }

    async fn acquire(&self, _key: &str) -> Option<Held> {
        None
    }

    async fn release(&self, held: Held) {
        let Held::Raw { key, token } = held else {
            unreachable!("fenced raw releases its own")
        };
        self.release_token(&key, &token).await;
    }
}
