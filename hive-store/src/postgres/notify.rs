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
use hive_core::retry::Backoff;
use serde_json::{Value, json};
use sqlx::postgres::PgListener;
use tokio::sync::Notify;

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

use crate::waiters::Waiters;

/// The local waiters of one store, woken by its listener.
#[derive(Debug, Default)]
pub(super) struct Hub {
    epoch: AtomicU64,
    work: Notify,
    /// Task waiters by bucket (see [`TASK_BUCKETS`]).
    pub(super) tasks: Waiters<u16>,
    pub(super) feeds: Waiters<TenantId>,
    pub(super) records: Waiters<(String, String)>,
}

/// The bucket a task's waiters are filed in.
pub(super) fn task_bucket(task: TaskId) -> u16 {
    bucket(task)
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

    fn work_arrived(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.work.notify_waiters();
    }

    /// Wakes everyone: notifications may have been missed.
    pub(super) fn wake_all(&self) {
        self.work_arrived();
        self.tasks.wake_all();
        self.feeds.wake_all();
        self.records.wake_all();
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
            self.feeds.wake_all();
        } else if let Some(Value::Array(f)) = m.get("f") {
            let tenants: Vec<TenantId> = f
                .iter()
                .filter_map(Value::as_str)
                .map(TenantId::new)
                .collect();
            self.feeds.wake(&tenants);
        }
        if m.contains_key("ta") {
            self.tasks.wake_all();
        } else if let Some(Value::Array(t)) = m.get("t") {
            let buckets: Vec<u16> = t
                .iter()
                .filter_map(Value::as_u64)
                .filter_map(|b| u16::try_from(b).ok())
                .collect();
            self.tasks.wake(&buckets);
        } else if let Some(Value::String(hex)) = m.get("tb") {
            self.wake_bitmap(hex);
        }
        if m.contains_key("ra") {
            self.records.wake_all();
        } else if let Some(Value::Array(r)) = m.get("r") {
            let keys: Vec<(String, String)> = r
                .iter()
                .filter_map(|pair| match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(k), Value::String(i)]) => Some((k.clone(), i.clone())),
                    _ => None,
                })
                .collect();
            self.records.wake(&keys);
        }
    }

    fn wake_bitmap(&self, hex: &str) {
        self.tasks.wake_matching(|&b| {
            let byte = usize::from(b / 8) * 2;
            hex.get(byte..byte + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .is_none_or(|v| v & (1 << (b % 8)) != 0)
        });
    }
}

/// Receives the schema's notifications until the store is dropped (the task is
/// aborted then). A lost connection is re-established by the listener; since
/// notifications may have been missed meanwhile, every waiter is woken.
pub(super) async fn listen(mut listener: PgListener, hub: Arc<Hub>) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                backoff.reset();
                hub.deliver(n.payload());
            }
            Ok(None) => {
                tracing::warn!("hive notification connection lost; reconnected");
                hub.wake_all();
            }
            Err(e) => {
                tracing::warn!(error = %e, "hive notification connection failed; retrying");
                hub.wake_all();
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hive_core::id::TaskId;
    use hive_core::principal::TenantId;

    use super::{Hub, task_bucket};

    /// Notifications wake the waiters they name, and only those: tenants by
    /// name, tasks by bucket (as a list and as a bitmap), records, and "all"
    /// flags; an unreadable payload wakes everyone.
    #[tokio::test]
    async fn notifications_wake_the_waiters_they_name() {
        let hub: &'static Hub = Box::leak(Box::default());
        let task = TaskId::new();
        let b = task_bucket(task);
        let mut bitmap = vec![0u8; 512];
        bitmap[usize::from(b / 8)] |= 1 << (b % 8);
        let hex: String = bitmap.iter().map(|x| format!("{x:02x}")).collect();
        let cases: Vec<(String, &str)> = vec![
            (r#"{"f":["acme"]}"#.into(), "feed"),
            (r#"{"fa":1}"#.into(), "feed"),
            (format!(r#"{{"t":[{b}]}}"#), "task"),
            (format!(r#"{{"tb":"{hex}"}}"#), "task"),
            (r#"{"ta":1}"#.into(), "task"),
            (r#"{"r":[["workflow","w1"]]}"#.into(), "record"),
            (r#"{"ra":1}"#.into(), "record"),
            ("not json".into(), "feed"),
        ];
        for (payload, what) in cases {
            let waiting = tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let never = async { Ok(false) };
                match what {
                    "feed" => {
                        hub.feeds
                            .wait(TenantId::new("acme"), Duration::from_secs(10), never)
                            .await
                    }
                    "task" => {
                        hub.tasks
                            .wait(task_bucket(task), Duration::from_secs(10), never)
                            .await
                    }
                    _ => {
                        hub.records
                            .wait(
                                ("workflow".into(), "w1".into()),
                                Duration::from_secs(10),
                                never,
                            )
                            .await
                    }
                }
                .unwrap();
                started.elapsed()
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            // A notification naming something else wakes nobody.
            hub.deliver(r#"{"f":["other"],"r":[["workflow","w2"]]}"#);
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(!waiting.is_finished(), "{payload}: woken by another key");
            hub.deliver(&payload);
            let took = waiting.await.unwrap();
            assert!(took < Duration::from_secs(5), "{payload}: {took:?}");
        }
        assert_eq!(hub.feeds.len() + hub.tasks.len() + hub.records.len(), 0);
    }
}
