//! One `LISTEN` connection per `PostgresLock` that wakes the waiters of released keys.
//!
//! Release statements `pg_notify(channel, key)`; this task dispatches each notification to the
//! waiters of that key. `PgListener` reconnects by itself; after a reconnect every waiter is
//! woken to retry, since notifications may have been missed meanwhile.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use leasehold::Wakers;
use sqlx::{postgres::PgListener, PgPool};
use tokio::{sync::watch, task::JoinHandle};

/// The listener task, aborted when the last `PostgresLock` clone goes.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) wakers: Arc<Wakers>,
    /// True while a `LISTEN` is in place.
    listening: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    pub(crate) fn start(pool: PgPool, channel: String) -> Self {
        let wakers = Wakers::new();
        let (listening_tx, listening) = watch::channel(false);
        let task = tokio::spawn(listen(pool, channel, Arc::downgrade(&wakers), listening_tx));
        Self {
            wakers,
            listening,
            task,
        }
    }

    /// Whether notifications are arriving now; waits (up to the caller's deadline) for the
    /// first connection.
    pub(crate) async fn ready(&self) -> bool {
        let mut listening = self.listening.clone();
        // `wait_for` fails only if the task is gone.
        let ready = listening.wait_for(|up| *up).await.is_ok();
        ready
    }

    pub(crate) fn is_listening(&self) -> bool {
        *self.listening.borrow()
    }
}

async fn listen(
    pool: PgPool,
    channel: String,
    wakers: Weak<Wakers>,
    listening: watch::Sender<bool>,
) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "postgres LISTEN connection failed; waiters poll meanwhile");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(&channel).await {
            tracing::warn!(%error, "postgres LISTEN failed; waiters poll meanwhile");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        listening.send_replace(true);
        loop {
            let received = listener.try_recv().await;
            let Some(wakers) = wakers.upgrade() else {
                return;
            };
            match received {
                // One release, one winner: wake one waiter of this process, not all of them.
                Ok(Some(notification)) => wakers.wake_one(notification.payload()),
                // The connection dropped; the next `try_recv` reconnects and listens again.
                Ok(None) => wakers.wake_all(),
                Err(error) => {
                    tracing::debug!(%error, "postgres LISTEN connection lost");
                    listening.send_replace(false);
                    wakers.wake_all();
                    break;
                }
            }
        }
    }
}
