//! In-process notifications: waiters keyed by task, tenant or record, and the
//! work epoch. Another process writing the same file is not seen here; its
//! changes reach waiters when their timeout returns.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hive_core::clock::Timestamp;
use parking_lot::Mutex;
use tokio::sync::Notify;

pub(super) use crate::waiters::Waiters;

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
