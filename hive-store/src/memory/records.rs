//! The memory backend's records: one lock, separate from the task state so that
//! workflow and audit writes never contend with the task hot path.

use std::collections::BTreeMap;

use hive_core::store::{Record, RecordEvent, RecordQuery, RecordWrite, RecordWritten};
use hive_core::{Error, Result};
use tokio::sync::oneshot;

#[derive(Debug)]
struct Entry {
    record: Record,
    events: Vec<RecordEvent>,
    waiters: Vec<oneshot::Sender<()>>,
}

/// Every record, by kind then id (ordered, for listings).
#[derive(Debug, Default)]
pub(super) struct Records {
    kinds: BTreeMap<String, BTreeMap<String, Entry>>,
}

impl Records {
    pub(super) fn write(&mut self, w: RecordWrite) -> Result<RecordWritten> {
        w.validate()?;
        let kind = self.kinds.entry(w.kind.clone()).or_default();
        match kind.get_mut(&w.id) {
            None if w.expected_version == 0 => {
                let events: Vec<RecordEvent> = w
                    .events
                    .into_iter()
                    .enumerate()
                    .map(|(i, body)| RecordEvent {
                        seq: i as u64 + 1,
                        at: w.now,
                        body,
                    })
                    .collect();
                let last_seq = events.len() as u64;
                kind.insert(
                    w.id.clone(),
                    Entry {
                        record: Record {
                            kind: w.kind,
                            id: w.id,
                            tenant: w.tenant,
                            version: 1,
                            status: w.status,
                            body: w.body,
                            created_at: w.now,
                            updated_at: w.now,
                            last_seq,
                        },
                        events,
                        waiters: Vec::new(),
                    },
                );
                Ok(RecordWritten {
                    version: 1,
                    last_seq,
                })
            }
            None => Err(Error::NotFound {
                kind: "record",
                id: format!("{}/{}", w.kind, w.id),
            }),
            Some(e) if e.record.version != w.expected_version => Err(Error::Conflict {
                message: format!(
                    "{} {} is at version {}, not {}",
                    w.kind, w.id, e.record.version, w.expected_version
                ),
            }),
            Some(e) if e.record.tenant != w.tenant => Err(Error::InvalidArgument {
                message: format!("{} {} belongs to another tenant", w.kind, w.id),
            }),
            Some(e) => {
                let appended = !w.events.is_empty();
                for body in w.events {
                    e.record.last_seq += 1;
                    e.events.push(RecordEvent {
                        seq: e.record.last_seq,
                        at: w.now,
                        body,
                    });
                }
                e.record.version += 1;
                e.record.status = w.status;
                e.record.body = w.body;
                e.record.updated_at = w.now;
                if appended {
                    for tx in e.waiters.drain(..) {
                        let _ = tx.send(());
                    }
                }
                Ok(RecordWritten {
                    version: e.record.version,
                    last_seq: e.record.last_seq,
                })
            }
        }
    }

    pub(super) fn get(&self, kind: &str, id: &str) -> Option<Record> {
        self.kinds.get(kind)?.get(id).map(|e| e.record.clone())
    }

    pub(super) fn list(&self, kind: &str, q: &RecordQuery) -> Vec<Record> {
        let Some(kind) = self.kinds.get(kind) else {
            return Vec::new();
        };
        let range = match &q.after {
            Some(after) => kind
                .range::<String, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => kind.range::<String, _>(..),
        };
        range
            .map(|(_, e)| &e.record)
            .filter(|r| q.matches(r))
            .take(q.effective_limit())
            .cloned()
            .collect()
    }

    fn entry(&self, kind: &str, id: &str) -> Result<&Entry> {
        self.kinds
            .get(kind)
            .and_then(|k| k.get(id))
            .ok_or_else(|| Error::NotFound {
                kind: "record",
                id: format!("{kind}/{id}"),
            })
    }

    pub(super) fn read_events(
        &self,
        kind: &str,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RecordEvent>> {
        let e = self.entry(kind, id)?;
        let start = (after as usize).min(e.events.len());
        Ok(e.events[start..].iter().take(limit).cloned().collect())
    }

    pub(super) fn waiter(
        &mut self,
        kind: &str,
        id: &str,
        after: u64,
    ) -> Result<Option<oneshot::Receiver<()>>> {
        self.entry(kind, id)?;
        let e = self
            .kinds
            .get_mut(kind)
            .and_then(|k| k.get_mut(id))
            .expect("checked above");
        if e.record.last_seq > after {
            return Ok(None);
        }
        let (tx, rx) = oneshot::channel();
        e.waiters.retain(|w| !w.is_closed());
        e.waiters.push(tx);
        Ok(Some(rx))
    }
}
