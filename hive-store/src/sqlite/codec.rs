//! Column encodings, row decoding and the mapping of driver errors.

use std::str::FromStr;
use std::sync::Arc;

use hive_core::clock::Timestamp;
use hive_core::id::{NodeId, TaskId};
use hive_core::node::{Node, NodeStatus};
use hive_core::task::machine::TaskCore;
use hive_core::task::{FeedEvent, Owner, Task, TaskEvent, TaskSpec, TaskState};
use hive_core::{Error, Result};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

/// Rows per multi-row statement: keeps every statement well under SQLite's
/// 32,766 bound parameters.
pub(super) const CHUNK: usize = 500;

pub(super) fn state_code(s: TaskState) -> i64 {
    match s {
        TaskState::Pending => 0,
        TaskState::Scheduled => 1,
        TaskState::Running => 2,
        TaskState::Succeeded => 3,
        TaskState::Failed => 4,
        TaskState::Cancelled => 5,
        TaskState::TimedOut => 6,
    }
}

pub(super) fn node_status_code(s: NodeStatus) -> i64 {
    match s {
        NodeStatus::Ready => 0,
        NodeStatus::Draining => 1,
        NodeStatus::Lost => 2,
    }
}

fn node_status(code: i64) -> Result<NodeStatus> {
    Ok(match code {
        0 => NodeStatus::Ready,
        1 => NodeStatus::Draining,
        2 => NodeStatus::Lost,
        other => return Err(corrupt(format!("unknown node status code {other}"))),
    })
}

/// A store value as a SQLite integer (saturating: only cursors and seqs passed
/// in by callers can exceed it, and nothing is stored past it).
pub(super) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn uint(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupt(format!("negative {what} {v}")))
}

pub(super) fn corrupt(message: impl Into<String>) -> Error {
    Error::Backend {
        message: format!("corrupt SQLite row: {}", message.into()),
        source: None,
    }
}

/// `serde_json::to_string`, mapped to `Error::Backend` (a macro: this crate
/// does not name serde's traits).
macro_rules! to_json {
    ($v:expr, $what:expr) => {
        serde_json::to_string($v).map_err(|e| hive_core::Error::Backend {
            message: format!("cannot encode {} as JSON: {e}", $what),
            source: Some(Box::new(e)),
        })
    };
}
pub(super) use to_json;

/// `serde_json::from_str`, mapped to a corrupt-row `Error::Backend`.
macro_rules! from_json {
    ($s:expr, $what:expr) => {
        serde_json::from_str($s).map_err(|e| hive_core::Error::Backend {
            message: format!("corrupt SQLite row: {} is not valid: {e}", $what),
            source: Some(Box::new(e)),
        })
    };
}
pub(super) use from_json;

pub(super) fn task_id(s: &str) -> Result<TaskId> {
    TaskId::from_str(s).map_err(|_| corrupt(format!("bad task id {s:?}")))
}

pub(super) fn node_id(s: &str) -> Result<NodeId> {
    NodeId::from_str(s).map_err(|_| corrupt(format!("bad node id {s:?}")))
}

/// Reads column `idx` of `row`.
pub(super) fn col<'r, T>(row: &'r SqliteRow, idx: usize) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(idx).map_err(|e| db("decode a row", e))
}

/// Maps a driver error: busy/locked, I/O and pool errors may pass (temporary);
/// everything else will not.
pub(super) fn db(context: &str, e: sqlx::Error) -> Error {
    let temporary = match &e {
        sqlx::Error::Database(d) => {
            let code = d.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(1);
            // Primary result codes: BUSY 5, LOCKED 6, IOERR 10, FULL 13, PROTOCOL 15.
            matches!(code & 0xff, 5 | 6 | 10 | 13 | 15)
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    };
    Error::from_driver(temporary, format!("SQLite: cannot {context}: {e}"), e)
}

/// The SQLite primary result code of a driver error, if it has one.
pub(super) fn sqlite_code(e: &sqlx::Error) -> Option<i32> {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff),
        _ => None,
    }
}

pub(super) fn not_found(kind: &'static str, id: impl ToString) -> Error {
    Error::NotFound {
        kind,
        id: id.to_string(),
    }
}

/// Decodes an event row `(task, tenant, seq, at, kind)` starting at `first`.
pub(super) fn event(row: &SqliteRow, first: usize) -> Result<TaskEvent> {
    let task: String = col(row, first)?;
    let tenant: String = col(row, first + 1)?;
    let seq: i64 = col(row, first + 2)?;
    let at: i64 = col(row, first + 3)?;
    let kind: String = col(row, first + 4)?;
    Ok(TaskEvent {
        task: task_id(&task)?,
        tenant: tenant.as_str().into(),
        seq: uint(seq, "seq")?,
        at: Timestamp::from_millis(at),
        kind: from_json!(&kind, "event")?,
    })
}

/// Decodes a feed row `(cursor, task, tenant, seq, at, kind)`.
pub(super) fn feed_event(row: &SqliteRow) -> Result<FeedEvent> {
    let cursor: i64 = col(row, 0)?;
    Ok(FeedEvent {
        cursor: uint(cursor, "cursor")?,
        event: event(row, 1)?,
    })
}

/// The columns [`node`] decodes, in order.
pub(super) const NODE_COLUMNS: &str = "id, spec, status, in_flight, registered_at, last_seen";

pub(super) fn node(row: &SqliteRow) -> Result<Node> {
    let id: String = col(row, 0)?;
    let spec: String = col(row, 1)?;
    let status: i64 = col(row, 2)?;
    let in_flight: i64 = col(row, 3)?;
    Ok(Node {
        id: node_id(&id)?,
        spec: from_json!(&spec, "node spec")?,
        status: node_status(status)?,
        in_flight: u32::try_from(in_flight)
            .map_err(|_| corrupt(format!("node {id}: in_flight {in_flight}")))?,
        registered_at: Timestamp::from_millis(col(row, 4)?),
        last_seen: Timestamp::from_millis(col(row, 5)?),
    })
}

/// The columns [`task`] decodes, in order (`t` is `tasks`, `s` is `task_specs`).
pub(super) const TASK_COLUMNS: &str = "t.id, t.tenant, t.principal, t.created_at, t.core, s.spec";

/// Decodes a task snapshot; `spec` returns a cached spec for an id, if any.
pub(super) fn task(
    row: &SqliteRow,
    spec: impl FnOnce(TaskId) -> Option<Arc<TaskSpec>>,
) -> Result<Task> {
    let id: String = col(row, 0)?;
    let id = task_id(&id)?;
    let tenant: String = col(row, 1)?;
    let principal: String = col(row, 2)?;
    let created_at: i64 = col(row, 3)?;
    let core: String = col(row, 4)?;
    let core: TaskCore = from_json!(&core, "task core")?;
    let spec = match spec(id) {
        Some(s) => s,
        None => {
            let text: String = col(row, 5)?;
            Arc::new(from_json!(&text, "task spec")?)
        }
    };
    Ok(Task {
        id,
        owner: Owner {
            tenant: tenant.as_str().into(),
            principal: principal.as_str().into(),
        },
        spec,
        state: core.state,
        attempt: core.attempt,
        node: core.node,
        last_seq: core.last_seq,
        created_at: Timestamp::from_millis(created_at),
        updated_at: core.updated_at,
        available_at: core.available_at,
        output: core.output,
        error: core.error,
    })
}

/// `(?, ?, …)` with `n` placeholders.
pub(super) fn tuple(n: usize) -> String {
    let mut s = String::with_capacity(2 + 3 * n);
    s.push('(');
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s.push(')');
    s
}

/// The rows `select` (a statement ending in `IN `) returns for `ids`, at most
/// [`CHUNK`] ids per statement; `what` names the read in errors.
pub(super) async fn rows_for_ids(
    conn: &mut sqlx::SqliteConnection,
    select: &str,
    ids: &[TaskId],
    what: &str,
) -> Result<Vec<SqliteRow>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let sql = format!("{select}{}", tuple(chunk.len()));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id.to_string());
        }
        out.extend(q.fetch_all(&mut *conn).await.map_err(|e| db(what, e))?);
    }
    Ok(out)
}

/// `rows` tuples of `cols` placeholders, comma separated.
pub(super) fn tuples(rows: usize, cols: usize) -> String {
    let one = tuple(cols);
    let mut s = String::with_capacity(rows * (one.len() + 2));
    for i in 0..rows {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&one);
    }
    s
}
