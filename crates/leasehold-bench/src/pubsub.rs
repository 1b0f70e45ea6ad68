//! The hand-off floor: the raw baseline's `SET NX PX`, a compare-and-delete that also
//! `PUBLISH`es, and waiters that retry on every release message (one shared subscriber
//! connection, every waiter of the key woken), written by hand. No fence, no wanted mark, no
//! fairness: the least a notified hand-off can take.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::{aio::ConnectionManager, Script};
use tokio::sync::Notify;

use crate::contenders::{set_nx, Contender, Held};

const PREFIX: &str = "rawps:";
const RELEASED: &str = ":released";

pub(crate) struct RawPubSub {
    conn: ConnectionManager,
    unlock: Script,
    keys: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    _reader: tokio::task::JoinHandle<()>,
}

impl RawPubSub {
    /// Subscribes (one pattern for every key) before returning.
    pub(crate) async fn new(url: &str, conn: ConnectionManager) -> redis::RedisResult<Self> {
        let mut pubsub = redis::Client::open(url)?.get_async_pubsub().await?;
        pubsub.psubscribe(format!("{PREFIX}*{RELEASED}")).await?;
        let keys: Arc<Mutex<HashMap<String, Arc<Notify>>>> = Arc::default();
        let shared = Arc::clone(&keys);
        let reader = tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            while let Some(message) = stream.next().await {
                let channel = message.get_channel_name();
                let key = channel.strip_suffix(RELEASED).unwrap_or(channel);
                if let Some(notify) = shared.lock().unwrap().get(key) {
                    notify.notify_waiters();
                }
            }
        });
        let unlock = Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) redis.call('PUBLISH', ARGV[2], '') return 1 end return 0",
        );
        Ok(Self {
            conn,
            unlock,
            keys,
            _reader: reader,
        })
    }
}

#[async_trait]
impl Contender for RawPubSub {
    fn name(&self) -> String {
        "raw pub/sub (SET NX PX, PUBLISH on release)".into()
    }

    async fn try_acquire(&self, key: &str) -> Option<Held> {
        set_nx(&self.conn, format!("{PREFIX}{key}")).await
    }

    async fn acquire(&self, key: &str) -> Option<Held> {
        let key = format!("{PREFIX}{key}");
        let notify = Arc::clone(
            self.keys
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Notify::new())),
        );
        loop {
            // Registered before the attempt, so a release right after it still wakes us.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(held) = set_nx(&self.conn, key.clone()).await {
                return Some(held);
            }
            // A fallback in case a message was lost.
            let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
        }
    }

    async fn release(&self, held: Held) {
        let Held::Raw { key, token } = held else {
            unreachable!("raw pub/sub releases its own")
        };
        let mut conn = self.conn.clone();
        let _: i64 = self
            .unlock
            .key(&key)
            .arg(token)
            .arg(format!("{key}{RELEASED}"))
            .invoke_async(&mut conn)
            .await
            .expect("raw pub/sub unlock");
    }
}
