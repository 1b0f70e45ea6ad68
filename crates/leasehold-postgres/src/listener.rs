//! One `LISTEN` connection per `PostgresLock` that wakes the waiters of released keys.
//!
//! Release statements `pg_notify(channel, key)`; this task dispatches each notification to the
//! waiters of that key. When the connection drops, the task connects and listens anew (and
//! says so through `listening`); every waiter is then woken to retry, since notifications may
//! have been missed meanwhile.
//!
//! sqlx 0.8 turns on no TCP keepalive (transact-rs/sqlx#3540), so a half-open connection would
//! look like a quiet one forever. Every [`PROBE_EVERY`] without a notification the task runs
//! `SELECT 1` on the connection, bounded by the request timeout; connecting and `LISTEN` are
//! bounded too. On a failure the connection is dropped, every waiter is woken, and waiters poll
//! until a new `LISTEN` is in place. Waiters never depend on this task alone: they re-try on a
//! jittered fallback timer whatever its state.
//!
//! Holders watch the same notifications ([`HolderWatch`]): a forced release always notifies,
//! and each notification wakes one waiter and every holder of the key.

use std::{
    pin::Pin,
    sync::{Arc, Weak},
    time::Duration,
};

use leasehold::{
    async_trait,
    backend::{WakeHandle, Wakers},
    ReleaseWatch,
};

use crate::error::within;
use sqlx::{postgres::PgListener, PgPool};
use tokio::{
    sync::{futures::OwnedNotified, watch},
    task::JoinHandle,
};

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
    pub(crate) fn start(pool: PgPool, channel: String, request_timeout: Duration) -> Self {
        let wakers = Wakers::new();
        let (listening_tx, listening) = watch::channel(false);
        let task = tokio::spawn(listen(
            pool,
            channel,
            request_timeout,
            Arc::downgrade(&wakers),
            listening_tx,
        ));
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

    /// A holder's watch on `key`'s notifications.
    pub(crate) fn watch_holder(&self, key: &str) -> HolderWatch {
        HolderWatch {
            handle: self.wakers.register_holder(key),
            listening: self.listening.clone(),
            started: false,
            pending: None,
        }
    }
}

/// A holder's watch on its key's notifications.
#[derive(Debug)]
pub(crate) struct HolderWatch {
    handle: WakeHandle,
    /// Whether a `LISTEN` is in place; each change means notifications may have been missed.
    listening: watch::Receiver<bool>,
    started: bool,
    /// Registered before the previous return, so a notification between two calls is kept;
    /// kept across a dropped call for the same reason.
    pending: Option<Pin<Box<OwnedNotified>>>,
}

#[async_trait]
impl ReleaseWatch for HolderWatch {
    async fn changed(&mut self) {
        let handle = &self.handle;
        let wake = self
            .pending
            .get_or_insert_with(|| Box::pin(handle.next_wake()));
        let restarted = self.listening.has_changed().unwrap_or(false);
        if !*self.listening.borrow_and_update() {
            // Nothing arrives now: check again once a `LISTEN` is back in place.
            if self.listening.wait_for(|up| *up).await.is_err() {
                std::future::pending::<()>().await;
            }
            self.started = true;
            // The loss woke the old wake-up; the check now covers everything before.
            self.pending = Some(Box::pin(self.handle.next_wake()));
            return;
        }
        if restarted || !self.started {
            // The first call, or a new `LISTEN`: a release before it was not announced here.
            self.started = true;
            self.pending = Some(Box::pin(self.handle.next_wake()));
            return;
        }
        tokio::select! {
            () = wake.as_mut() => {
                self.pending = Some(Box::pin(self.handle.next_wake()));
            }
            changed = self.listening.changed() => {
                if changed.is_err() {
                    // The listener task is gone with its lock: nothing will be announced.
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// How long the `LISTEN` connection may stay quiet before it is probed.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(5);

async fn listen(
    pool: PgPool,
    channel: String,
    request_timeout: Duration,
    wakers: Weak<Wakers>,
    listening: watch::Sender<bool>,
) {
    loop {
        let connected = within(request_timeout, async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok(listener)
        })
        .await;
        let mut listener = match connected {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "postgres LISTEN failed; waiters poll meanwhile");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        listening.send_replace(true);
        let connected_at = tokio::time::Instant::now();
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => Some(received),
                () = tokio::time::sleep(PROBE_EVERY) => None,
            };
            let Some(wakers) = wakers.upgrade() else {
                return;
            };
            let lost = match received {
                // One release, one winner: wake one waiter of this process, not all of them.
                Some(Ok(Some(notification))) => {
                    wakers.wake_one(notification.payload());
                    false
                }
                // The connection dropped. `try_recv` would reconnect by itself, but without
                // saying when it listens again: reconnect here, so `listening` stays accurate.
                Some(Ok(None)) => {
                    tracing::debug!("postgres LISTEN connection dropped");
                    true
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "postgres LISTEN connection lost");
                    true
                }
                None => {
                    let probe = within(
                        request_timeout,
                        sqlx::query("SELECT 1").execute(&mut listener),
                    )
                    .await;
                    if let Err(error) = &probe {
                        tracing::warn!(%error, "postgres LISTEN connection does not answer; reconnecting, waiters poll meanwhile");
                    }
                    probe.is_err()
                }
            };
            if lost {
                listening.send_replace(false);
                wakers.wake_all();
                drop(wakers);
                // A connection that drops at once (a flapping server or proxy) is not
                // retried in a tight loop: every reconnect wakes every waiter and holder.
                tokio::time::sleep_until(connected_at + Duration::from_secs(1)).await;
                break;
            }
        }
    }
}
