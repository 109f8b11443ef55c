//! Waking waiters without polling: every transaction that stores events or new
//! work sends one `NOTIFY` on the schema's channel, in the same commit; one
//! `LISTEN`ing connection per store receives every notification (its own
//! process's and others') and wakes the local waiters it concerns.
//!
//! A payload names what changed: `w` (new work), `f` (tenants whose feed
//! grew), `t`/`tb` (task buckets whose events grew, as a list or a bitmap),
//! `r` (records whose stream grew); `fa`/`ta`/`ra` mean "all of them" when the
//! list would not fit in a notification. Waiters recheck the store, so a
//! spurious wake-up costs one read and a lost one costs at most their timeout.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hive_core::id::TaskId;
use hive_core::principal::TenantId;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use serde_json::{Value, json};
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, oneshot};

/// Task waiters are filed in this many buckets (by the random low bits of the
/// task id), so that a notification names buckets, not 36-byte ids.
const TASK_BUCKETS: u64 = 4096;

/// A bucket list longer than this goes as a bitmap.
const MAX_BUCKET_LIST: usize = 256;

/// PostgreSQL refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7000;

fn bucket(task: TaskId) -> u16 {
    // The low 62 bits of a UUIDv7 are random.
    (task.as_u128() as u64 % TASK_BUCKETS) as u16
}

/// What one transaction changed, for the waiters of every process.
#[derive(Debug, Default)]
pub(super) struct Signal {
    work: bool,
    feeds: BTreeSet<TenantId>,
    tasks: BTreeSet<u16>,
    records: BTreeSet<(String, String)>,
}

impl Signal {
    pub(super) fn work(&mut self) {
        self.work = true;
    }

    pub(super) fn feed(&mut self, tenant: &TenantId) {
        if !self.feeds.contains(tenant) {
            self.feeds.insert(tenant.clone());
        }
    }

    pub(super) fn task(&mut self, task: TaskId) {
        self.tasks.insert(bucket(task));
    }

    pub(super) fn record(&mut self, kind: &str, id: &str) {
        self.records.insert((kind.to_owned(), id.to_owned()));
    }

    /// The notification's payload, or `None` when there is nothing to say.
    pub(super) fn payload(&self) -> Option<String> {
        if !self.work && self.feeds.is_empty() && self.tasks.is_empty() && self.records.is_empty() {
            return None;
        }
        let mut m = serde_json::Map::new();
        if self.work {
            m.insert("w".into(), json!(1));
        }
        if !self.feeds.is_empty() {
            let f: Vec<&str> = self.feeds.iter().map(|t| t.as_str()).collect();
            m.insert("f".into(), json!(f));
        }
        if self.tasks.len() > MAX_BUCKET_LIST {
            let mut bits = vec![0u8; (TASK_BUCKETS / 8) as usize];
            for &b in &self.tasks {
                bits[usize::from(b / 8)] |= 1 << (b % 8);
            }
            let hex: String = bits.iter().map(|b| format!("{b:02x}")).collect();
            m.insert("tb".into(), Value::String(hex));
        } else if !self.tasks.is_empty() {
            m.insert("t".into(), json!(self.tasks));
        }
        if !self.records.is_empty() {
            let r: Vec<[&str; 2]> = self
                .records
                .iter()
                .map(|(k, i)| [k.as_str(), i.as_str()])
                .collect();
            m.insert("r".into(), json!(r));
        }
        let full = Value::Object(m).to_string();
        if full.len() <= MAX_PAYLOAD {
            return Some(full);
        }
        // Too long to name everything: wake every waiter of each named kind.
        let mut m = serde_json::Map::new();
        if self.work {
            m.insert("w".into(), json!(1));
        }
        for (flag, any) in [
            ("fa", !self.feeds.is_empty()),
            ("ta", !self.tasks.is_empty()),
            ("ra", !self.records.is_empty()),
        ] {
            if any {
                m.insert(flag.into(), json!(1));
            }
        }
        Some(Value::Object(m).to_string())
    }
}

type Waiters<K> = Mutex<FxHashMap<K, Vec<oneshot::Sender<()>>>>;

/// The local waiters of one store, woken by its listener.
#[derive(Debug, Default)]
pub(super) struct Hub {
    epoch: AtomicU64,
    work: Notify,
    tasks: Waiters<u16>,
    feeds: Waiters<TenantId>,
    records: Waiters<(String, String)>,
}

/// One registered waiter. Dropped — woken, timed out, or abandoned — it
/// takes its entry out of the map, and the key with it when it was the last
/// waiter there: the maps hold only live waiters, however many keys were
/// waited on.
pub(super) struct Waiter<'a, K: std::hash::Hash + Eq> {
    rx: Option<oneshot::Receiver<()>>,
    map: &'a Waiters<K>,
    key: Option<K>,
}

impl<K: std::hash::Hash + Eq> Waiter<'_, K> {
    /// Waits to be woken, at most `timeout`.
    pub(super) async fn wait(mut self, timeout: Duration) {
        if let Some(rx) = self.rx.as_mut() {
            let _ = tokio::time::timeout(timeout, rx).await;
        }
    }
}

impl<K: std::hash::Hash + Eq> Drop for Waiter<'_, K> {
    fn drop(&mut self) {
        // Our sender is closed once the receiver is gone.
        drop(self.rx.take());
        let Some(key) = self.key.take() else { return };
        let mut map = self.map.lock();
        if let Some(list) = map.get_mut(&key) {
            list.retain(|w| !w.is_closed());
            if list.is_empty() {
                map.remove(&key);
            }
        }
    }
}

fn register<K: std::hash::Hash + Eq + Clone>(map: &Waiters<K>, key: K) -> Waiter<'_, K> {
    let (tx, rx) = oneshot::channel();
    {
        let mut m = map.lock();
        let list = m.entry(key.clone()).or_default();
        list.retain(|w| !w.is_closed());
        list.push(tx);
    }
    Waiter {
        rx: Some(rx),
        map,
        key: Some(key),
    }
}

fn wake<K: std::hash::Hash + Eq>(map: &Waiters<K>, key: &K) {
    let list = map.lock().remove(key);
    for w in list.into_iter().flatten() {
        let _ = w.send(());
    }
}

fn wake_every<K>(map: &Waiters<K>) {
    let all = std::mem::take(&mut *map.lock());
    for w in all.into_values().flatten() {
        let _ = w.send(());
    }
}

impl Hub {
    /// The work epoch: changes whenever new work may have arrived.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Returns when the epoch moves past `epoch`, or after `timeout`.
    pub(super) async fn wait_for_work(&self, epoch: u64, timeout: Duration) {
        let notified = self.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.epoch() != epoch {
            return;
        }
        let _ = tokio::time::timeout(timeout, notified).await;
    }

    pub(super) fn task_waiter(&self, task: TaskId) -> Waiter<'_, u16> {
        register(&self.tasks, bucket(task))
    }

    pub(super) fn feed_waiter(&self, tenant: &TenantId) -> Waiter<'_, TenantId> {
        register(&self.feeds, tenant.clone())
    }

    pub(super) fn record_waiter(&self, kind: &str, id: &str) -> Waiter<'_, (String, String)> {
        register(&self.records, (kind.to_owned(), id.to_owned()))
    }

    fn work_arrived(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.work.notify_waiters();
    }

    /// Wakes everyone: notifications may have been missed.
    pub(super) fn wake_all(&self) {
        self.work_arrived();
        wake_every(&self.tasks);
        wake_every(&self.feeds);
        wake_every(&self.records);
    }

    /// Handles one notification's payload.
    pub(super) fn deliver(&self, payload: &str) {
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(payload) else {
            tracing::warn!(payload, "unreadable hive notification; waking every waiter");
            self.wake_all();
            return;
        };
        if m.contains_key("w") {
            self.work_arrived();
        }
        if m.contains_key("fa") {
            wake_every(&self.feeds);
        } else if let Some(Value::Array(f)) = m.get("f") {
            for t in f.iter().filter_map(Value::as_str) {
                wake(&self.feeds, &TenantId::new(t));
            }
        }
        if m.contains_key("ta") {
            wake_every(&self.tasks);
        } else if let Some(Value::Array(t)) = m.get("t") {
            for b in t.iter().filter_map(Value::as_u64) {
                if let Ok(b) = u16::try_from(b) {
                    wake(&self.tasks, &b);
                }
            }
        } else if let Some(Value::String(hex)) = m.get("tb") {
            self.wake_bitmap(hex);
        }
        if m.contains_key("ra") {
            wake_every(&self.records);
        } else if let Some(Value::Array(r)) = m.get("r") {
            for pair in r {
                if let Some([Value::String(k), Value::String(i)]) =
                    pair.as_array().map(Vec::as_slice)
                {
                    wake(&self.records, &(k.clone(), i.clone()));
                }
            }
        }
    }

    fn wake_bitmap(&self, hex: &str) {
        let set = |b: u16| -> bool {
            let byte = usize::from(b / 8) * 2;
            hex.get(byte..byte + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .is_none_or(|v| v & (1 << (b % 8)) != 0)
        };
        let woken: Vec<oneshot::Sender<()>> = {
            let mut map = self.tasks.lock();
            let keys: Vec<u16> = map.keys().copied().filter(|&b| set(b)).collect();
            keys.iter()
                .filter_map(|k| map.remove(k))
                .flatten()
                .collect()
        };
        for w in woken {
            let _ = w.send(());
        }
    }
}

/// Receives the schema's notifications until the store is dropped (the task is
/// aborted then). A lost connection is re-established by the listener; since
/// notifications may have been missed meanwhile, every waiter is woken.
pub(super) async fn listen(mut listener: PgListener, hub: Arc<Hub>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                backoff = Duration::from_millis(50);
                hub.deliver(n.payload());
            }
            Ok(None) => {
                tracing::warn!("hive notification connection lost; reconnected");
                hub.wake_all();
            }
            Err(e) => {
                tracing::warn!(error = %e, "hive notification connection failed; retrying");
                hub.wake_all();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hive_core::principal::TenantId;

    use super::{Hub, wake};

    /// Issue 11, item 11: waiters that time out (or are dropped) leave no
    /// entry behind, and one leaving does not unregister another on the same
    /// key.
    #[tokio::test]
    async fn timed_out_waiters_leave_the_maps_empty() {
        let hub: &'static Hub = Box::leak(Box::default());
        for i in 0..200 {
            let tenant = TenantId::new(format!("t{i}"));
            hub.feed_waiter(&tenant)
                .wait(Duration::from_millis(1))
                .await;
            drop(hub.record_waiter("workflow", &format!("w{i}")));
        }
        assert!(hub.feeds.lock().is_empty());
        assert!(hub.records.lock().is_empty());

        let t = TenantId::new("shared");
        let stays = hub.feed_waiter(&t);
        hub.feed_waiter(&t).wait(Duration::from_millis(1)).await;
        assert_eq!(hub.feeds.lock().get(&t).map(Vec::len), Some(1));
        let woken = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            stays.wait(Duration::from_secs(10)).await;
            started.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        wake(&hub.feeds, &t);
        let took = woken.await.unwrap();
        assert!(
            took < Duration::from_secs(5),
            "woken, not timed out: {took:?}"
        );
        assert!(hub.feeds.lock().is_empty());
    }
}
