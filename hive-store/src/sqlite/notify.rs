//! In-process notifications: waiters keyed by task, tenant or record, and the
//! work epoch. Another process writing the same file is not seen here; its
//! changes reach waiters when their timeout returns.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hive_core::Result;
use hive_core::clock::Timestamp;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

#[derive(Debug)]
struct Slot {
    notify: Arc<Notify>,
    count: usize,
}

/// Waiters by key. A key's entry lives while someone waits on it.
#[derive(Debug)]
pub(super) struct Waiters<K> {
    map: Mutex<FxHashMap<K, Slot>>,
}

impl<K> Default for Waiters<K> {
    fn default() -> Self {
        Waiters {
            map: Mutex::new(FxHashMap::default()),
        }
    }
}

struct Registration<'a, K: Hash + Eq> {
    owner: &'a Waiters<K>,
    key: Option<K>,
}

impl<K: Hash + Eq> Drop for Registration<'_, K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut map = self.owner.map.lock();
        if let Some(slot) = map.get_mut(&key) {
            slot.count -= 1;
            if slot.count == 0 {
                map.remove(&key);
            }
        }
    }
}

impl<K: Hash + Eq + Clone> Waiters<K> {
    /// Wakes everyone waiting on one of `keys`.
    pub(super) fn wake<'k>(&self, keys: impl IntoIterator<Item = &'k K>)
    where
        K: 'k,
    {
        let map = self.map.lock();
        if map.is_empty() {
            return;
        }
        for k in keys {
            if let Some(slot) = map.get(k) {
                slot.notify.notify_waiters();
            }
        }
    }

    /// Registers on `key`, then runs `ready` (a read of the store): returns at
    /// once if it says so, else waits for a wake-up or `timeout`. Registering
    /// first means a write committed after the read still wakes us.
    pub(super) async fn wait<F>(&self, key: K, timeout: Duration, ready: F) -> Result<()>
    where
        F: Future<Output = Result<bool>>,
    {
        let notify = {
            let mut map = self.map.lock();
            let slot = map.entry(key.clone()).or_insert_with(|| Slot {
                notify: Arc::new(Notify::new()),
                count: 0,
            });
            slot.count += 1;
            slot.notify.clone()
        };
        let _registration = Registration {
            owner: self,
            key: Some(key),
        };
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if ready.await? {
            return Ok(());
        }
        let _ = tokio::time::timeout(timeout, notified).await;
        Ok(())
    }
}

/// The work epoch: bumped whenever claimable work may have appeared.
#[derive(Debug, Default)]
pub(super) struct Work {
    epoch: AtomicU64,
    notify: Notify,
    /// When retries requeued by this process become claimable (min-heap).
    delayed: Mutex<BinaryHeap<Reverse<i64>>>,
}

impl Work {
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub(super) fn signal(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub(super) fn delay(&self, at: impl IntoIterator<Item = Timestamp>) {
        let mut heap = self.delayed.lock();
        for t in at {
            heap.push(Reverse(t.as_millis()));
        }
    }

    /// When the earliest retry requeued by this process that is not claimable
    /// at `now` becomes claimable.
    pub(super) fn next_due(&self, now: Timestamp) -> Option<Timestamp> {
        let heap = self.delayed.lock();
        heap.iter()
            .map(|Reverse(t)| *t)
            .filter(|&t| t > now.as_millis())
            .min()
            .map(Timestamp::from_millis)
    }

    /// Whether a delayed retry has become claimable by `now` (and forgets it).
    pub(super) fn due(&self, now: Timestamp) -> bool {
        let mut heap = self.delayed.lock();
        let mut any = false;
        while heap.peek().is_some_and(|Reverse(t)| *t <= now.as_millis()) {
            heap.pop();
            any = true;
        }
        any
    }

    pub(super) async fn wait(&self, epoch: u64, timeout: Duration) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.epoch() != epoch {
            return;
        }
        let _ = tokio::time::timeout(timeout, notified).await;
    }
}
