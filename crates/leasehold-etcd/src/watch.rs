//! [`ReleaseWatch`] on etcd: a watch on the lock key's directory for deletions.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, EventType, WatchFilterType, WatchOptions};
use leasehold::ReleaseWatch;
use tokio::{sync::watch, task::JoinHandle};

/// Wakes the holder when a key in its lock's directory is deleted (its own key revoked by a
/// forced release, or a waiter leaving: a spurious wake, which costs one extend), and each
/// time the etcd watch is (re)created, since deletions may have been missed meanwhile.
#[derive(Debug)]
pub(crate) struct DirWatch {
    wakes: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl DirWatch {
    /// Starts watching `dir` on the current tokio runtime; `None` without one.
    pub(crate) fn start(client: Client, dir: String) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (tx, wakes) = watch::channel(0u64);
        let task = runtime.spawn(async move {
            loop {
                let _ = follow(&client, &dir, &tx).await;
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Some(Self { wakes, task })
    }
}

/// One etcd watch, until it fails or is cancelled.
async fn follow(
    client: &Client,
    dir: &str,
    tx: &watch::Sender<u64>,
) -> Result<(), etcd_client::Error> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_filters([WatchFilterType::NoPut]);
    let mut stream = crate::ops::sent(|| async {
        client
            .watch_client()
            .watch(dir, Some(options.clone()))
            .await
    })
    .await?;
    while let Some(reply) = stream.message().await? {
        if reply.canceled() {
            return Ok(());
        }
        let deleted = reply
            .events()
            .iter()
            .any(|event| event.event_type() == EventType::Delete);
        if reply.created() || deleted {
            tx.send_modify(|n| *n += 1);
        }
    }
    Ok(())
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl ReleaseWatch for DirWatch {
    async fn changed(&mut self) {
        if self.wakes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
