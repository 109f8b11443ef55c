//! Records: every write is one statement (the compare-and-set on the version,
//! its events and the notification), so it is atomic without a transaction.

use std::time::Duration;

use hive_core::clock::Timestamp;
use hive_core::store::{Record, RecordEvent, RecordQuery, RecordWrite, RecordWritten};
use hive_core::{Error, Result};

use super::PostgresStore;
use super::codec;
use super::error::db;
use super::notify::Signal;

/// The columns a record is read from (a literal, for `concat!`).
macro_rules! record_columns {
    () => {
        "kind, id, tenant, version, status, body::text, created_at, updated_at, last_seq"
    };
}

fn record_not_found(kind: &str, id: &str) -> Error {
    Error::NotFound {
        kind: "record",
        id: format!("{kind}/{id}"),
    }
}

/// A row of a record read.
type RecordRow = (String, String, String, i64, String, String, i64, i64, i64);

fn record(row: RecordRow) -> Result<Record> {
    let (kind, id, tenant, version, status, body, created_at, updated_at, last_seq) = row;
    Ok(Record {
        kind,
        id,
        tenant: tenant.into(),
        version: codec::count("record version", version)?,
        status,
        body: codec::decode_value("record body", &body)?,
        created_at: Timestamp::from_millis(created_at),
        updated_at: Timestamp::from_millis(updated_at),
        last_seq: codec::count("record seq", last_seq)?,
    })
}

impl PostgresStore {
    pub(super) async fn write(&self, w: RecordWrite) -> Result<RecordWritten> {
        w.validate()?;
        let body = codec::encode_value("record body", &w.body)?;
        let events = w
            .events
            .iter()
            .map(|e| codec::encode_value("record event", e))
            .collect::<Result<Vec<_>>>()?;
        let n = codec::limit(events.len());
        let payload = if events.is_empty() {
            None
        } else {
            let mut s = Signal::default();
            s.record(&w.kind, &w.id);
            s.payload()
        };
        let create = w.expected_version == 0;
        let query = sqlx::query_as(if create { CREATE } else { REPLACE })
            .bind(&w.kind)
            .bind(&w.id)
            .bind(w.tenant.as_str())
            .bind(&w.status)
            .bind(body)
            .bind(w.now.as_millis())
            .bind(n)
            .bind(events)
            .bind(&self.channel)
            .bind(payload);
        let query = if create {
            query
        } else {
            query.bind(codec::big(w.expected_version))
        };
        let written: Option<(i64, i64)> = query
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db("write record", e))?;
        if let Some((version, last_seq)) = written {
            return Ok(RecordWritten {
                version: codec::count("record version", version)?,
                last_seq: codec::count("record seq", last_seq)?,
            });
        }
        // Nothing written: say why.
        let found: Option<(i64, String)> =
            sqlx::query_as("SELECT version, tenant FROM records WHERE kind = $1 AND id = $2")
                .bind(&w.kind)
                .bind(&w.id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| db("read record", e))?;
        match found {
            None => Err(record_not_found(&w.kind, &w.id)),
            Some((version, _)) if w.expected_version == 0 => Err(Error::Conflict {
                message: format!("{} {} already exists at version {version}", w.kind, w.id),
            }),
            Some((version, _)) if version != codec::big(w.expected_version) => {
                Err(Error::Conflict {
                    message: format!(
                        "{} {} is at version {version}, not {}",
                        w.kind, w.id, w.expected_version
                    ),
                })
            }
            Some(_) => Err(Error::InvalidArgument {
                message: format!("{} {} belongs to another tenant", w.kind, w.id),
            }),
        }
    }

    pub(super) async fn record(&self, kind: &str, id: &str) -> Result<Option<Record>> {
        let row: Option<RecordRow> = sqlx::query_as(concat!(
            "SELECT ",
            record_columns!(),
            " FROM records WHERE kind = $1 AND id = $2"
        ))
        .bind(kind)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db("read record", e))?;
        row.map(record).transpose()
    }

    pub(super) async fn records(&self, kind: &str, q: &RecordQuery) -> Result<Vec<Record>> {
        let rows: Vec<RecordRow> = sqlx::query_as(concat!(
            "SELECT ",
            record_columns!(),
            " FROM records WHERE kind = $1 \
               AND ($2::text IS NULL OR tenant = $2) \
               AND (cardinality($3::text[]) = 0 OR status = ANY($3::text[])) \
               AND ($4::text IS NULL OR id > $4) \
             ORDER BY id LIMIT $5"
        ))
        .bind(kind)
        .bind(q.tenant.as_ref().map(|t| t.as_str()))
        .bind(&q.statuses)
        .bind(q.after.as_deref())
        .bind(codec::limit(q.effective_limit()))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db("list records", e))?;
        rows.into_iter().map(record).collect()
    }

    pub(super) async fn record_events(
        &self,
        kind: &str,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RecordEvent>> {
        let rows: Vec<(Option<i64>, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT e.seq, e.at, e.body::text FROM records r \
             LEFT JOIN LATERAL (SELECT seq, at, body FROM record_events \
                 WHERE kind = r.kind AND id = r.id AND seq > $3 ORDER BY seq LIMIT $4) e ON true \
             WHERE r.kind = $1 AND r.id = $2 ORDER BY e.seq",
        )
        .bind(kind)
        .bind(id)
        .bind(codec::big(after))
        .bind(codec::limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db("read record events", e))?;
        if rows.is_empty() {
            return Err(record_not_found(kind, id));
        }
        let mut out = Vec::with_capacity(rows.len());
        for (seq, at, body) in rows {
            let (Some(seq), Some(at), Some(body)) = (seq, at, body) else {
                continue;
            };
            out.push(RecordEvent {
                seq: codec::count("record seq", seq)?,
                at: Timestamp::from_millis(at),
                body: codec::decode_value("record event", &body)?,
            });
        }
        Ok(out)
    }

    pub(super) async fn wait_record(
        &self,
        kind: &str,
        id: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<()> {
        self.hub
            .records
            .wait((kind.to_owned(), id.to_owned()), timeout, async {
                let last: Option<i64> =
                    sqlx::query_scalar("SELECT last_seq FROM records WHERE kind = $1 AND id = $2")
                        .bind(kind)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(|e| db("read record seq", e))?;
                let last = last.ok_or_else(|| record_not_found(kind, id))?;
                Ok(codec::count("record seq", last)? > after)
            })
            .await
    }
}

/// Creates the record unless it exists, with its events as seq 1..n.
/// Parameters: kind, id, tenant, status, body, now, event count, event bodies,
/// channel, payload.
const CREATE: &str = r#"
WITH w AS (
    INSERT INTO records (kind, id, tenant, version, status, body, created_at, updated_at, last_seq)
    VALUES ($1, $2, $3, 1, $4, $5::json, $6, $6, $7)
    ON CONFLICT (kind, id) DO NOTHING
    RETURNING version, last_seq
), ev AS (
    INSERT INTO record_events (kind, id, seq, at, body)
    SELECT $1, $2, e.ord, $6, e.body::json
    FROM w, UNNEST($8::text[]) WITH ORDINALITY AS e(body, ord)
)
SELECT w.version, w.last_seq FROM w
LEFT JOIN LATERAL (SELECT pg_notify($9, $10) WHERE $10::text IS NOT NULL) n ON true
"#;

/// Replaces the record if it is at the expected version ($11) and belongs to
/// the tenant, appending its events after `last_seq`. Otherwise the parameters
/// of [`CREATE`].
const REPLACE: &str = r#"
WITH w AS (
    UPDATE records
    SET version = version + 1, status = $4, body = $5::json, updated_at = $6,
        last_seq = last_seq + $7
    WHERE kind = $1 AND id = $2 AND tenant = $3 AND version = $11
    RETURNING version, last_seq
), ev AS (
    INSERT INTO record_events (kind, id, seq, at, body)
    SELECT $1, $2, w.last_seq - $7 + e.ord, $6, e.body::json
    FROM w, UNNEST($8::text[]) WITH ORDINALITY AS e(body, ord)
)
SELECT w.version, w.last_seq FROM w
LEFT JOIN LATERAL (SELECT pg_notify($9, $10) WHERE $10::text IS NOT NULL) n ON true
"#;
