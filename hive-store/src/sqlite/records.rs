//! Records: a compare-and-set on `version` and the appended events, in one
//! write transaction.

use hive_core::clock::Timestamp;
use hive_core::store::{Record, RecordEvent, RecordQuery, RecordWrite, RecordWritten};
use hive_core::{Error, Result};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Connection, QueryBuilder, Sqlite, SqliteConnection, SqlitePool};

use super::codec::{CHUNK, col, db, from_json, int, to_json, tuples, uint};

fn record_id(kind: &str, id: &str) -> String {
    format!("{kind}/{id}")
}

/// Writes one record in its own transaction; `Ok(true)` when events were
/// appended (waiters to wake).
pub(super) async fn write(
    conn: &mut SqliteConnection,
    w: RecordWrite,
) -> Result<(RecordWritten, bool)> {
    w.validate()?;
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| db("begin a write transaction", e))?;
    let current =
        sqlx::query("SELECT tenant, version, last_seq FROM records WHERE kind = ? AND id = ?")
            .bind(w.kind.as_str())
            .bind(w.id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| db("read a record", e))?;
    let body = to_json!(&w.body, "record body")?;
    let now = w.now.as_millis();
    let (version, first_seq) = match current {
        None if w.expected_version == 0 => {
            sqlx::query(
                "INSERT INTO records (kind, id, tenant, version, status, body, created_at, \
                 updated_at, last_seq) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?)",
            )
            .bind(w.kind.as_str())
            .bind(w.id.as_str())
            .bind(w.tenant.as_str())
            .bind(w.status.as_str())
            .bind(body.as_str())
            .bind(now)
            .bind(now)
            .bind(int(w.events.len() as u64))
            .execute(&mut *tx)
            .await
            .map_err(|e| db("create a record", e))?;
            (1, 1)
        }
        None => {
            return Err(Error::NotFound {
                kind: "record",
                id: record_id(&w.kind, &w.id),
            });
        }
        Some(row) => {
            let tenant: String = col(&row, 0)?;
            let version = uint(col(&row, 1)?, "version")?;
            let last_seq = uint(col(&row, 2)?, "seq")?;
            if version != w.expected_version {
                return Err(Error::Conflict {
                    message: format!(
                        "{} {} is at version {version}, not {}",
                        w.kind, w.id, w.expected_version
                    ),
                });
            }
            if tenant != w.tenant.as_str() {
                return Err(Error::InvalidArgument {
                    message: format!("{} {} belongs to another tenant", w.kind, w.id),
                });
            }
            let done = sqlx::query(
                "UPDATE records SET version = ?, status = ?, body = ?, updated_at = ?, last_seq = ? \
                 WHERE kind = ? AND id = ? AND version = ?",
            )
            .bind(int(version + 1))
            .bind(w.status.as_str())
            .bind(body.as_str())
            .bind(now)
            .bind(int(last_seq + w.events.len() as u64))
            .bind(w.kind.as_str())
            .bind(w.id.as_str())
            .bind(int(version))
            .execute(&mut *tx)
            .await
            .map_err(|e| db("update a record", e))?;
            if done.rows_affected() != 1 {
                return Err(Error::Conflict {
                    message: format!("{} {} changed during the write", w.kind, w.id),
                });
            }
            (version + 1, last_seq + 1)
        }
    };
    let appended = !w.events.is_empty();
    let mut seq = first_seq;
    for chunk in w.events.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO record_events (kind, id, seq, at, body) VALUES {}",
            tuples(chunk.len(), 5)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for body in chunk {
            q = q
                .bind(w.kind.as_str())
                .bind(w.id.as_str())
                .bind(int(seq))
                .bind(now)
                .bind(to_json!(body, "record event")?);
            seq += 1;
        }
        q.execute(&mut *tx)
            .await
            .map_err(|e| db("append record events", e))?;
    }
    tx.commit()
        .await
        .map_err(|e| db("commit a record write", e))?;
    Ok((
        RecordWritten {
            version,
            last_seq: seq - 1,
        },
        appended,
    ))
}

const RECORD_COLUMNS: &str =
    "kind, id, tenant, version, status, body, created_at, updated_at, last_seq";

fn record(row: &SqliteRow) -> Result<Record> {
    let tenant: String = col(row, 2)?;
    let body: String = col(row, 5)?;
    Ok(Record {
        kind: col(row, 0)?,
        id: col(row, 1)?,
        tenant: tenant.as_str().into(),
        version: uint(col(row, 3)?, "version")?,
        status: col(row, 4)?,
        body: from_json!(&body, "record body")?,
        created_at: Timestamp::from_millis(col(row, 6)?),
        updated_at: Timestamp::from_millis(col(row, 7)?),
        last_seq: uint(col(row, 8)?, "seq")?,
    })
}

pub(super) async fn get(pool: &SqlitePool, kind: &str, id: &str) -> Result<Option<Record>> {
    let sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE kind = ? AND id = ?");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(kind)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(|e| db("read a record", e))?;
    row.as_ref().map(record).transpose()
}

pub(super) async fn last_seq(pool: &SqlitePool, kind: &str, id: &str) -> Result<u64> {
    let seq: Option<i64> =
        sqlx::query_scalar("SELECT last_seq FROM records WHERE kind = ? AND id = ?")
            .bind(kind)
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(|e| db("read a record", e))?;
    match seq {
        Some(s) => uint(s, "seq"),
        None => Err(Error::NotFound {
            kind: "record",
            id: record_id(kind, id),
        }),
    }
}

pub(super) async fn list(pool: &SqlitePool, kind: &str, q: &RecordQuery) -> Result<Vec<Record>> {
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
        "SELECT {RECORD_COLUMNS} FROM records WHERE kind = "
    ));
    qb.push_bind(kind.to_owned());
    if let Some(tenant) = &q.tenant {
        qb.push(" AND tenant = ")
            .push_bind(tenant.as_str().to_owned());
    }
    if !q.statuses.is_empty() {
        qb.push(" AND status IN (");
        let mut sep = qb.separated(", ");
        for s in &q.statuses {
            sep.push_bind(s.clone());
        }
        qb.push(")");
    }
    if let Some(after) = &q.after {
        qb.push(" AND id > ").push_bind(after.clone());
    }
    qb.push(" ORDER BY id LIMIT ")
        .push_bind(q.effective_limit() as i64);
    let rows = qb
        .build()
        .persistent(false)
        .fetch_all(pool)
        .await
        .map_err(|e| db("list records", e))?;
    rows.iter().map(record).collect()
}

pub(super) async fn read_events(
    pool: &SqlitePool,
    kind: &str,
    id: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<RecordEvent>> {
    let rows = sqlx::query(
        "SELECT seq, at, body FROM record_events WHERE kind = ? AND id = ? AND seq > ? \
         ORDER BY seq LIMIT ?",
    )
    .bind(kind)
    .bind(id)
    .bind(int(after))
    .bind(int(limit as u64))
    .fetch_all(pool)
    .await
    .map_err(|e| db("read record events", e))?;
    if rows.is_empty() {
        // NotFound for a missing record.
        last_seq(pool, kind, id).await?;
    }
    rows.iter()
        .map(|row| {
            let body: String = col(row, 2)?;
            Ok(RecordEvent {
                seq: uint(col(row, 0)?, "seq")?,
                at: Timestamp::from_millis(col(row, 1)?),
                body: from_json!(&body, "record event")?,
            })
        })
        .collect()
}
