//! Local waiters by key, the one type the durable backends share (issue 11,
//! item 17: SQLite, PostgreSQL and Redis each had their own map).
//!
//! A key's entry lives while someone waits on it (reference counted), so the
//! map holds only live waiters however many keys were ever waited on. A waiter
//! registers before it checks the store, so a wake-up sent after the check is
//! never missed; what wakes it (a local commit, a PostgreSQL `NOTIFY`, a Redis
//! message) is the backend's business.

use std::borrow::Borrow;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use hive_core::Result;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

#[derive(Debug)]
struct Slot {
    notify: Arc<Notify>,
    count: usize,
}

/// Waiters by key.
#[derive(Debug)]
pub(crate) struct Waiters<K> {
    map: Mutex<FxHashMap<K, Slot>>,
}

impl<K> Default for Waiters<K> {
    fn default() -> Self {
        Waiters {
            map: Mutex::new(FxHashMap::default()),
        }
    }
}

/// Releases its key when dropped (woken, timed out or abandoned).
struct Registration<'a, K: Hash + Eq> {
    owner: &'a Waiters<K>,
    key: Option<K>,
}

impl<K: Hash + Eq> Drop for Registration<'_, K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.owner.release(&key);
        }
    }
}

impl<K: Hash + Eq> Waiters<K> {
    /// Counts one more waiter on `key`; returns the notify to wait on. Pair it
    /// with [`release`](Self::release).
    pub(crate) fn acquire(&self, key: K) -> Arc<Notify> {
        let mut map = self.map.lock();
        let slot = map.entry(key).or_insert_with(|| Slot {
            notify: Arc::new(Notify::new()),
            count: 0,
        });
        slot.count += 1;
        slot.notify.clone()
    }

    /// Counts one waiter less on `key`; `true` when it was the last one (the
    /// key is gone from the map).
    pub(crate) fn release<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = self.map.lock();
        match map.get_mut(key) {
            Some(slot) if slot.count > 1 => {
                slot.count -= 1;
                false
            }
            Some(_) => {
                map.remove(key);
                true
            }
            None => false,
        }
    }

    /// Whether someone waits on `key`.
    pub(crate) fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.lock().contains_key(key)
    }

    /// The keys waited on.
    pub(crate) fn keys(&self) -> Vec<K>
    where
        K: Clone,
    {
        self.map.lock().keys().cloned().collect()
    }

    /// How many keys are waited on.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Wakes everyone waiting on one of `keys`.
    pub(crate) fn wake<'k, Q>(&self, keys: impl IntoIterator<Item = &'k Q>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + 'k,
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

    /// Wakes everyone waiting on a key `pick` chooses.
    pub(crate) fn wake_matching(&self, pick: impl Fn(&K) -> bool) {
        for (k, slot) in self.map.lock().iter() {
            if pick(k) {
                slot.notify.notify_waiters();
            }
        }
    }

    /// Wakes every waiter (wake-ups may have been missed).
    pub(crate) fn wake_all(&self) {
        self.wake_matching(|_| true);
    }

    /// Registers on `key`, then runs `ready` (a read of the store): returns at
    /// once if it says so, else waits for a wake-up or `timeout`.
    pub(crate) async fn wait<F>(&self, key: K, timeout: Duration, ready: F) -> Result<()>
    where
        K: Clone,
        F: Future<Output = Result<bool>>,
    {
        let notify = self.acquire(key.clone());
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::Waiters;

    /// Waiters that time out, return at once or are abandoned leave no entry
    /// behind; one leaving does not unregister another on the same key; a
    /// wake-up sent while the store is being checked is not missed.
    #[tokio::test]
    async fn waiters_leave_no_entry_behind_and_miss_no_wake_up() {
        let w: Arc<Waiters<String>> = Arc::default();
        for i in 0..200 {
            w.wait(format!("k{i}"), Duration::from_millis(1), async {
                Ok(false)
            })
            .await
            .unwrap();
            w.wait(format!("r{i}"), Duration::from_secs(10), async { Ok(true) })
                .await
                .unwrap();
        }
        let abandoned = w.wait("gone".into(), Duration::from_secs(10), async { Ok(false) });
        drop(abandoned);
        assert_eq!(w.len(), 0);

        let stays = w.acquire("shared".to_owned());
        w.wait("shared".into(), Duration::from_millis(1), async {
            Ok(false)
        })
        .await
        .unwrap();
        assert!(w.contains("shared"), "the other waiter is still counted");
        drop(stays);
        assert!(w.release("shared"), "the last one out removes the key");
        assert_eq!(w.len(), 0);

        // Woken during its check: returns at once, not after the timeout.
        let w2 = w.clone();
        let started = tokio::time::Instant::now();
        w.wait("k".into(), Duration::from_secs(10), async move {
            w2.wake(["k"]);
            Ok(false)
        })
        .await
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));

        // Woken later by key, by predicate and all at once.
        for how in 0..3 {
            let w3 = w.clone();
            let waiting = tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                w3.wait("x1".into(), Duration::from_secs(10), async { Ok(false) })
                    .await
                    .unwrap();
                started.elapsed()
            });
            while !w.contains("x1") {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            match how {
                0 => w.wake(["x1"]),
                1 => w.wake_matching(|k| k.starts_with('x')),
                _ => w.wake_all(),
            }
            assert!(waiting.await.unwrap() < Duration::from_secs(5), "how {how}");
        }
        assert_eq!(w.len(), 0);
    }
}
