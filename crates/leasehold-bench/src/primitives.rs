//! Read/write locks and semaphores as contenders: a read acquire + release, and a permit of a
//! semaphore of 4, measured beside the same backend's mutex in the uncontended and 64-task
//! scenarios (they do not exclude, so the one-key scenarios, which count hand-offs of an
//! exclusive lock, skip them).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use leasehold::{DistributedRwLock, DistributedSemaphore, LockKey};

use crate::contenders::{Contender, Held};

const TTL: Duration = Duration::from_secs(10);

/// Read acquire + release of a read/write lock.
pub(crate) struct ReadSide {
    pub(crate) lock: Arc<dyn DistributedRwLock>,
    pub(crate) label: &'static str,
}

#[async_trait]
impl Contender for ReadSide {
    fn name(&self) -> String {
        self.label.into()
    }

    async fn try_acquire(&self, key: &str) -> Option<Held> {
        let key = LockKey::new(key).expect("bench key");
        let lease = self.lock.try_acquire_read(&key, TTL).await;
        lease
            .expect("leasehold try_acquire_read")
            .map(Held::Leasehold)
    }

    fn can_wait(&self) -> bool {
        false
    }

    async fn acquire(&self, _key: &str) -> Option<Held> {
        None
    }

    async fn release(&self, held: Held) {
        if let Held::Leasehold(lease) = held {
            self.lock
                .release(lease)
                .await
                .expect("leasehold release read");
        }
    }
}

/// One permit of a semaphore of 4.
pub(crate) struct Permit {
    pub(crate) semaphore: Arc<dyn DistributedSemaphore>,
    pub(crate) label: &'static str,
}

#[async_trait]
impl Contender for Permit {
    fn name(&self) -> String {
        self.label.into()
    }

    async fn try_acquire(&self, key: &str) -> Option<Held> {
        let key = LockKey::new(key).expect("bench key");
        let lease = self.semaphore.try_acquire(&key, 4, TTL).await;
        lease
            .expect("leasehold semaphore try_acquire")
            .map(Held::Leasehold)
    }

    fn can_wait(&self) -> bool {
        false
    }

    async fn acquire(&self, _key: &str) -> Option<Held> {
        None
    }

    async fn release(&self, held: Held) {
        if let Held::Leasehold(lease) = held {
            self.semaphore
                .release(lease)
                .await
                .expect("leasehold semaphore release");
        }
    }
}
