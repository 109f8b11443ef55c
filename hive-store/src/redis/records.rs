//! Records: a hash per record, a stream of its events, an index per kind.

use std::time::Duration;

use hive_core::principal::TenantId;
use hive_core::store::{Record, RecordEvent, RecordQuery, RecordWrite, RecordWritten};
use hive_core::{Error, Result};
use redis::Value;

use super::decode::{
    array, corrupt, field, from_json, int_of, opt_int, opt_str, past, str_of, stream_entries,
    time_of, to_json, u64_of,
};
use super::keys::esc;
use super::{RedisStore, driver};

/// Ids one listing call scans at most before answering (and being called again).
const SCAN_BUDGET: usize = 1000;

fn not_found(kind: &str, id: &str) -> Error {
    Error::NotFound {
        kind: "record",
        id: format!("{kind}/{id}"),
    }
}

fn record_of(kind: &str, id: &str, f: &[Value]) -> Result<Option<Record>> {
    let [ten, ver, status, body, created, updated, seq] = f else {
        return Err(corrupt("a record read of the wrong length"));
    };
    let Some(tenant) = opt_str(ten)? else {
        return Ok(None);
    };
    Ok(Some(Record {
        kind: kind.to_owned(),
        id: id.to_owned(),
        tenant: TenantId::new(tenant),
        version: u64_of(ver, "record version")?,
        status: str_of(status, "record status")?.to_owned(),
        body: from_json!(body, "record body")?,
        created_at: time_of(created, "record created_at")?,
        updated_at: time_of(updated, "record updated_at")?,
        last_seq: u64_of(seq, "record seq")?,
    }))
}

const FIELDS: [&str; 7] = ["ten", "ver", "status", "body", "created", "updated", "seq"];

impl RedisStore {
    pub(super) async fn write(&self, w: RecordWrite) -> Result<RecordWritten> {
        w.validate()?;
        let (ek, eid) = (esc(&w.kind), esc(&w.id));
        let mut inv = self.scripts.write_record.prepare_invoke();
        inv.arg(&self.keys.prefix)
            .arg(w.now.as_millis())
            .arg(&ek)
            .arg(&eid)
            .arg(&w.id)
            .arg(w.tenant.as_str())
            .arg(w.expected_version)
            .arg(&w.status)
            .arg(to_json!(&w.body)?);
        for e in &w.events {
            inv.arg(to_json!(e)?);
        }
        let reply: Value = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver("writing a record"))?;
        let [code, version, seq] = array(&reply)? else {
            return Err(corrupt("a record write answer of the wrong length"));
        };
        let (version, last_seq) = (u64_of(version, "version")?, u64_of(seq, "seq")?);
        match int_of(code, "record write status")? {
            1 => Ok(RecordWritten { version, last_seq }),
            -1 => Err(not_found(&w.kind, &w.id)),
            -2 => Err(Error::InvalidArgument {
                message: format!("{} {} belongs to another tenant", w.kind, w.id),
            }),
            -3 => Err(Error::Conflict {
                message: format!("{} {} already exists", w.kind, w.id),
            }),
            _ => Err(Error::Conflict {
                message: format!(
                    "{} {} is at version {version}, not {}",
                    w.kind, w.id, w.expected_version
                ),
            }),
        }
    }

    pub(super) async fn record(&self, kind: &str, id: &str) -> Result<Option<Record>> {
        let f: Value = redis::cmd("HMGET")
            .arg(self.keys.record(&esc(kind), &esc(id)))
            .arg(&FIELDS[..])
            .query_async(&mut self.conn())
            .await
            .map_err(driver("reading a record"))?;
        record_of(kind, id, array(&f)?)
    }

    pub(super) async fn records(&self, kind: &str, query: &RecordQuery) -> Result<Vec<Record>> {
        let limit = query.effective_limit();
        let ek = esc(kind);
        let mut after = query.after.clone().unwrap_or_default();
        let mut out = Vec::new();
        while out.len() < limit {
            let mut inv = self.scripts.list_records.prepare_invoke();
            inv.arg(&self.keys.prefix)
                .arg(0)
                .arg(&ek)
                .arg(&after)
                .arg(query.tenant.as_ref().map_or("", |t| t.as_str()))
                .arg(limit - out.len())
                .arg(SCAN_BUDGET);
            for s in &query.statuses {
                inv.arg(s);
            }
            let reply: Value = inv
                .invoke_async(&mut self.conn())
                .await
                .map_err(driver("listing records"))?;
            let rows = array(&reply)?;
            let Some(last) = rows.first() else {
                return Err(corrupt("an empty record listing answer"));
            };
            let last = str_of(last, "last scanned id")?.to_owned();
            for row in rows[1..].chunks(8) {
                let [id, rest @ ..] = row else {
                    return Err(corrupt("a record listing row of the wrong length"));
                };
                let id = str_of(id, "record id")?;
                if let Some(r) = record_of(kind, id, rest)? {
                    out.push(r);
                }
            }
            if last.is_empty() {
                break;
            }
            after = last;
        }
        out.truncate(limit);
        Ok(out)
    }

    pub(super) async fn record_events(
        &self,
        kind: &str,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RecordEvent>> {
        let (ek, eid) = (esc(kind), esc(id));
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(self.keys.record(&ek, &eid));
        pipe.cmd("XRANGE")
            .arg(self.keys.record_events(&ek, &eid))
            .arg(format!("{}-0", after.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(limit.clamp(1, 100_000));
        let (exists, entries): (i64, Value) = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(driver("reading record events"))?;
        if exists == 0 {
            return Err(not_found(kind, id));
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        stream_entries(&entries)?
            .into_iter()
            .map(|(seq, f)| {
                Ok(RecordEvent {
                    seq,
                    at: time_of(field(&f, "at")?, "event time")?,
                    body: from_json!(field(&f, "b")?, "record event")?,
                })
            })
            .collect()
    }

    pub(super) async fn wait_record(
        &self,
        kind: &str,
        id: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<()> {
        let (ek, eid) = (esc(kind), esc(id));
        let waiter = self
            .notifier
            .channel_waiter(self.keys.channel_record(&ek, &eid))
            .await;
        let notified = waiter.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let seq: Value = redis::cmd("HGET")
            .arg(self.keys.record(&ek, &eid))
            .arg("seq")
            .query_async(&mut self.conn())
            .await
            .map_err(driver("reading a record"))?;
        match opt_int(&seq)? {
            None => return Err(not_found(kind, id)),
            Some(s) if past(s, after) => return Ok(()),
            Some(_) => {}
        }
        let _ = tokio::time::timeout(timeout, notified).await;
        Ok(())
    }
}
