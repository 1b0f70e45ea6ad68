//! One shared pub/sub connection per `RedisLock` that wakes the waiters of released locks.
//!
//! Waiters register a [`Watch`] on a lock's channel. The first watch of a channel subscribes,
//! the last one to leave unsubscribes. All SUBSCRIBE and UNSUBSCRIBE commands go through one
//! driver task, in order, so an unsubscribe can never overtake a later subscribe. The
//! connection is opened on the first watch, and reopened (with every watched channel
//! subscribed again) if it drops; when it drops, every waiter is woken to retry at once, since
//! messages may have been lost meanwhile.
//!
//! Holders watch the same channels ([`HolderWatch`]): a release message while they hold the
//! lock means an administrator forced it free. Each message wakes one waiter and every holder.
//!
//! On a Redis Cluster the channels are sharded (`SSUBSCRIBE`, on the node that owns the
//! channel's slot, which is the lock's), through a RESP3 cluster connection whose pushes arrive
//! on a channel of ours. The `redis` crate reconnects a lost node and subscribes again where the
//! slot now lives; a node's disconnection wakes every waiter and marks every channel as not
//! subscribed (messages may have been lost), and a server that drops a subscription (its slot
//! moved) wakes that channel's waiters, who subscribe again.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use futures_util::StreamExt;
use leasehold::{
    async_trait,
    backend::{WakeHandle, Wakers},
    ReleaseWatch,
};
use redis::{
    aio::PubSubSink, cluster::ClusterClient, cluster_async::ClusterConnection, PushInfo, PushKind,
    Value,
};
use tokio::{
    sync::{futures::OwnedNotified, mpsc, oneshot},
    task::JoinHandle,
};

/// Where the subscriber connects.
#[expect(clippy::large_enum_variant, reason = "one per lock, made once")]
pub(crate) enum Source {
    /// One server: a RESP2 pub/sub connection of its own.
    Single(redis::Client),
    /// A cluster: a RESP3 cluster client that sends its pushes to `pushes`.
    Cluster {
        client: ClusterClient,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
    },
}

impl Source {
    /// A cluster source from seed connection infos: a client of its own, RESP3, with pushes.
    pub(crate) fn cluster(
        builder: redis::cluster::ClusterClientBuilder,
    ) -> redis::RedisResult<Self> {
        let (sender, pushes) = mpsc::unbounded_channel();
        let client = builder
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(sender)
            .build()?;
        Ok(Self::Cluster { client, pushes })
    }
}

/// The live subscription connection.
enum Sink {
    Single(PubSubSink),
    Cluster(ClusterConnection),
}

impl Sink {
    async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Self::Single(sink) => sink.subscribe(channel).await,
            Self::Cluster(conn) => conn.ssubscribe(channel).await,
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Self::Single(sink) => sink.unsubscribe(channel).await,
            Self::Cluster(conn) => conn.sunsubscribe(channel).await,
        }
    }
}

/// A task that is aborted when this handle is dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The shared subscriber of one `RedisLock` (and its clones).
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    shared: Arc<Shared>,
    _driver: Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct Shared {
    /// Subscription state per channel.
    channels: Mutex<HashMap<String, Channel>>,
    /// Wake-ups per channel: one waiter and every holder per message.
    wakers: Arc<Wakers>,
    commands: mpsc::UnboundedSender<Command>,
}

#[derive(Debug, Default)]
struct Channel {
    watchers: usize,
    subscribed: bool,
    /// A subscribe was sent but not confirmed (it timed out or failed): it may still land.
    maybe: bool,
    /// Counts confirmed subscriptions, so a holder can tell a new one (messages before it may
    /// be lost) from the one it already watched.
    generation: u64,
}

#[derive(Debug)]
enum Command {
    Subscribe(String, oneshot::Sender<bool>),
    Unsubscribe(String),
    Disconnected,
}

impl Shared {
    fn channels(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        // Updates are single assignments; a poisoned map is still consistent.
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One release message, one possible winner: wakes one waiter (the longest waiting, or the
    /// next to wait if all are busy trying; a woken waiter that leaves passes it on).
    fn wake(&self, channel: &str) {
        self.wakers.wake_one(channel);
    }

    fn wake_all_and_forget_subscriptions(&self) {
        for entry in self.channels().values_mut() {
            entry.subscribed = false;
        }
        self.wakers.wake_all();
    }

    /// The server dropped `channel`'s subscription (on a cluster: its slot moved): its
    /// waiters and holders are woken to subscribe again where it lives now.
    fn dropped(&self, channel: &str) {
        if let Some(entry) = self.channels().get_mut(channel) {
            entry.subscribed = false;
        }
        self.wakers.wake(channel);
    }

    /// One push of a cluster connection.
    fn push(&self, push: &PushInfo) {
        let channel = || match push.data.first() {
            Some(Value::BulkString(bytes)) => std::str::from_utf8(bytes).ok(),
            _ => None,
        };
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                if let Some(channel) = channel() {
                    self.wake(channel);
                }
            }
            PushKind::SUnsubscribe => {
                // Our own SUNSUBSCRIBE confirms with this too, for a channel nobody watches
                // any more (its entry is gone): then nothing happens.
                if let Some(channel) = channel() {
                    self.dropped(channel);
                }
            }
            PushKind::Disconnection => {
                tracing::debug!(
                    "redis cluster node connection lost; waiters retry and resubscribe"
                );
                self.wake_all_and_forget_subscriptions();
            }
            _ => {}
        }
    }
}

impl Subscriber {
    /// Starts the driver; no connection is opened until the first watch.
    pub(crate) fn new(source: Source, connect_timeout: Duration) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            channels: Mutex::new(HashMap::new()),
            wakers: Wakers::new(),
            commands,
        });
        let (client, reader) = match source {
            Source::Single(client) => (Client::Single(client), None),
            Source::Cluster { client, mut pushes } => {
                // One reader for the client's whole life: every connection made from it
                // pushes here.
                let weak = Arc::downgrade(&shared);
                let reader = tokio::spawn(async move {
                    while let Some(push) = pushes.recv().await {
                        let Some(shared) = weak.upgrade() else {
                            return;
                        };
                        shared.push(&push);
                    }
                });
                (Client::Cluster(client), Some(AbortOnDrop(reader)))
            }
        };
        let driver = Driver {
            shared: Arc::clone(&shared),
            client,
            connect_timeout,
            sink: None,
            reader,
        };
        let task = tokio::spawn(driver.run(receiver));
        Self {
            shared,
            _driver: Arc::new(AbortOnDrop(task)),
        }
    }

    /// Whether `channel` is subscribed (confirmed by the server) at this moment.
    pub(crate) fn is_subscribed(&self, channel: &str) -> bool {
        self.shared
            .channels()
            .get(channel)
            .is_some_and(|entry| entry.subscribed)
    }

    /// Registers a waiter's interest in `channel` until the returned watch is dropped.
    pub(crate) fn watch(&self, channel: &str) -> Watch {
        self.watch_as(channel, false)
    }

    /// A waiter's interest in `channel` that every message wakes, not one waiter per message:
    /// for read/write locks, where one release may let many readers in.
    pub(crate) fn watch_every(&self, channel: &str) -> Watch {
        self.watch_as(channel, true)
    }

    /// The same for a holder, whose wake-ups never take a waiter's (see
    /// [`Wakers::register_holder`]).
    pub(crate) fn watch_holder(&self, channel: &str) -> HolderWatch {
        self.watch_as(channel, true).for_holder()
    }

    fn watch_as(&self, channel: &str, holder: bool) -> Watch {
        let mut channels = self.shared.channels();
        channels.entry(channel.to_owned()).or_default().watchers += 1;
        let wakers = &self.shared.wakers;
        Watch {
            shared: Arc::clone(&self.shared),
            channel: channel.to_owned(),
            wake: if holder {
                wakers.register_holder(channel)
            } else {
                wakers.register(channel)
            },
        }
    }
}

/// A waiter's registration on one channel.
#[derive(Debug)]
pub(crate) struct Watch {
    shared: Arc<Shared>,
    channel: String,
    wake: WakeHandle,
}

impl Watch {
    /// Makes sure the channel is subscribed; true once the server confirmed it.
    ///
    /// Free when it already is; otherwise asks the driver, which may first have to connect.
    pub(crate) async fn subscribed(&self) -> bool {
        let subscribed = self
            .shared
            .channels()
            .get(&self.channel)
            .is_some_and(|entry| entry.subscribed);
        if subscribed {
            return true;
        }
        let (ack, confirmed) = oneshot::channel();
        if self
            .shared
            .commands
            .send(Command::Subscribe(self.channel.clone(), ack))
            .is_err()
        {
            return false;
        }
        confirmed.await.unwrap_or(false)
    }

    /// A future that completes on the next message on the channel (or a reconnect). It counts
    /// from the moment it is created, so create it *before* trying the lock.
    pub(crate) fn next_wake(&self) -> OwnedNotified {
        self.wake.next_wake()
    }

    /// [`next_wake`](Self::next_wake), pinned to be kept across calls.
    fn next_release(&self) -> Pin<Box<OwnedNotified>> {
        Box::pin(self.next_wake())
    }

    /// The channel's subscription generation while it is subscribed.
    fn generation(&self) -> Option<u64> {
        self.shared
            .channels()
            .get(&self.channel)
            .filter(|entry| entry.subscribed)
            .map(|entry| entry.generation)
    }

    /// This watch as a holder's [`ReleaseWatch`].
    fn for_holder(self) -> HolderWatch {
        HolderWatch {
            watch: self,
            seen: None,
            backoff: RESUBSCRIBE,
            pending: None,
        }
    }
}

/// How long a holder waits before subscribing again after a subscription failed, doubling up
/// to [`RESUBSCRIBE_MAX`] while it keeps failing. Renewals go on meanwhile; only a forced
/// release is then seen later (at the next renewal at worst).
const RESUBSCRIBE: Duration = Duration::from_secs(1);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(16);

/// A holder's watch on its lock's channel.
#[derive(Debug)]
pub(crate) struct HolderWatch {
    watch: Watch,
    /// The subscription generation this holder last checked under.
    seen: Option<u64>,
    /// The pause before the next subscription attempt after one failed.
    backoff: Duration,
    /// Registered before the previous return, so a message between two calls is kept; kept
    /// across a dropped call for the same reason.
    pending: Option<Pin<Box<OwnedNotified>>>,
}

#[async_trait]
impl ReleaseWatch for HolderWatch {
    async fn changed(&mut self) {
        loop {
            let watch = &self.watch;
            let wake = self.pending.get_or_insert_with(|| watch.next_release());
            // Bounded like a waiter's: a request the driver has not reached by then is
            // dropped, so holders do not queue up behind an outage.
            let subscribed = tokio::time::timeout(RESUBSCRIBE, watch.subscribed()).await;
            if subscribed != Ok(true) {
                // Nothing can be announced without a subscription. A plain pause: the failed
                // attempt's disconnect has woken `wake` already.
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(RESUBSCRIBE_MAX);
                self.pending = None;
                continue;
            }
            self.backoff = RESUBSCRIBE;
            let generation = watch.generation();
            if generation != self.seen {
                // A new subscription: a release before it was not announced to this holder,
                // so check once now. The wake-up registered before it may already have fired
                // (the disconnect that ended the old one): count from now instead.
                self.seen = generation;
                self.pending = Some(self.watch.next_release());
                return;
            }
            wake.as_mut().await;
            self.pending = Some(self.watch.next_release());
            return;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut channels = self.shared.channels();
        let Some(entry) = channels.get_mut(&self.channel) else {
            return;
        };
        entry.watchers = entry.watchers.saturating_sub(1);
        if entry.watchers == 0 {
            // The driver re-checks the count: a new watcher may arrive before it gets to this.
            let _ = self
                .shared
                .commands
                .send(Command::Unsubscribe(self.channel.clone()));
        }
    }
}

#[expect(clippy::large_enum_variant, reason = "one per lock, made once")]
enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

struct Driver {
    shared: Arc<Shared>,
    client: Client,
    connect_timeout: Duration,
    sink: Option<Sink>,
    /// Reads the messages (one server: of the current connection; a cluster: of every
    /// connection); aborted with the driver.
    reader: Option<AbortOnDrop>,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        while let Some(command) = commands.recv().await {
            match command {
                Command::Subscribe(channel, ack) => {
                    // A waiter stops waiting for the confirmation after one fallback period:
                    // during an outage, serving its stale requests would only queue up.
                    if ack.is_closed() {
                        continue;
                    }
                    let confirmed = self.subscribe(&channel).await;
                    let _ = ack.send(confirmed);
                }
                Command::Unsubscribe(channel) => self.unsubscribe(&channel).await,
                Command::Disconnected => {
                    tracing::debug!("redis pub/sub connection lost; waiters retry and resubscribe");
                    self.disconnect();
                }
            }
        }
    }

    async fn subscribe(&mut self, channel: &str) -> bool {
        let already = match self.shared.channels().get(channel) {
            None => return false, // every watcher left meanwhile
            Some(entry) => entry.subscribed,
        };
        if already {
            return true;
        }
        if self.sink.is_none() {
            self.connect().await;
        }
        let Some(sink) = self.sink.as_mut() else {
            return false;
        };
        // Bounded: on a half-open connection the confirmation never comes, and this driver
        // serves every subscription, so a hang here would stop them all.
        let confirmed = tokio::time::timeout(self.connect_timeout, sink.subscribe(channel)).await;
        if let Some(entry) = self.shared.channels().get_mut(channel) {
            match confirmed {
                Ok(Ok(())) => {
                    entry.subscribed = true;
                    entry.generation += 1;
                }
                _ => entry.maybe = true,
            }
        }
        match confirmed {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::warn!(%error, "redis SUBSCRIBE failed; waiters fall back to polling");
                false
            }
            Err(_) if matches!(self.client, Client::Cluster(_)) => {
                // One node is slow (paused, failing over); the other nodes' subscriptions are
                // fine, so the connection stays. A node that drops its connection is reported
                // by the client (`Disconnected`), one that gives its slots away sends
                // SUNSUBSCRIBE; its waiters meanwhile poll at the fallback period.
                tracing::warn!("redis SSUBSCRIBE timed out; its waiters poll meanwhile");
                false
            }
            Err(_) => {
                tracing::warn!("redis SUBSCRIBE timed out; reconnecting, waiters poll meanwhile");
                self.disconnect();
                false
            }
        }
    }

    /// Drops the connection: the next subscription opens a new one, and every waiter is woken
    /// to retry (messages may have been lost).
    fn disconnect(&mut self) {
        self.sink = None;
        if matches!(self.client, Client::Single(_)) {
            self.reader = None;
        }
        self.shared.wake_all_and_forget_subscriptions();
    }

    async fn unsubscribe(&mut self, channel: &str) {
        let cluster = matches!(self.client, Client::Cluster(_));
        let was_subscribed = {
            let mut channels = self.shared.channels();
            match channels.get(channel) {
                // On a cluster also when sent but never confirmed: an SSUBSCRIBE that timed out
                // may have landed later (and the client subscribes again what it saw
                // confirmed), and a subscription left behind would make releases believe
                // someone hears them.
                Some(entry) if entry.watchers == 0 => channels
                    .remove(channel)
                    .is_some_and(|entry| entry.subscribed || (cluster && entry.maybe)),
                _ => return,
            }
        };
        if let (true, Some(sink)) = (was_subscribed, self.sink.as_mut()) {
            match tokio::time::timeout(self.connect_timeout, sink.unsubscribe(channel)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "redis UNSUBSCRIBE failed"),
                Err(_) if matches!(self.client, Client::Cluster(_)) => {
                    tracing::debug!("redis SUNSUBSCRIBE timed out");
                }
                Err(_) => {
                    tracing::debug!("redis UNSUBSCRIBE timed out; reconnecting");
                    self.disconnect();
                }
            }
        }
    }

    async fn connect(&mut self) {
        let client = match &self.client {
            Client::Single(client) => client.clone(),
            Client::Cluster(client) => {
                let connecting =
                    tokio::time::timeout(self.connect_timeout, client.get_async_connection());
                match connecting.await {
                    Ok(Ok(conn)) => self.sink = Some(Sink::Cluster(conn)),
                    Ok(Err(error)) => tracing::warn!(
                        %error,
                        "redis cluster pub/sub connection failed; waiters fall back to polling"
                    ),
                    Err(_) => tracing::warn!(
                        "redis cluster pub/sub connection timed out; waiters fall back to polling"
                    ),
                }
                return;
            }
        };
        let connecting = tokio::time::timeout(self.connect_timeout, client.get_async_pubsub());
        let pubsub = match connecting.await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => {
                tracing::warn!(%error, "redis pub/sub connection failed; waiters fall back to polling");
                return;
            }
            Err(_) => {
                tracing::warn!("redis pub/sub connection timed out; waiters fall back to polling");
                return;
            }
        };
        let (sink, mut stream) = pubsub.split();
        let shared = Arc::downgrade(&self.shared);
        let reader = tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.wake(message.get_channel_name());
            }
            if let Some(shared) = shared.upgrade() {
                let _ = shared.commands.send(Command::Disconnected);
            }
        });
        self.sink = Some(Sink::Single(sink));
        self.reader = Some(AbortOnDrop(reader));
    }
}
