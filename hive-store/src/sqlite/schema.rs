//! The schema, its versions, and the checks made before a file is used.
//!
//! The version lives in `PRAGMA user_version` and the file is marked as Hive's
//! with `PRAGMA application_id`. A migration runs in a `BEGIN IMMEDIATE`
//! transaction together with the version bump, so two processes opening a new
//! file at once apply it exactly once.

use std::path::Path;

use hive_core::{Error, Result};
use sqlx::{Connection, SqliteConnection};

use super::codec::{col, db, sqlite_code};

/// `PRAGMA application_id` of a Hive database ("HIVE").
const APPLICATION_ID: i64 = 0x4849_5645;

/// Migrations, in order; the schema version is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: tasks, events, consumers, nodes, records.
    r#"
CREATE TABLE hive_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO hive_meta (key, value) VALUES ('next_ord', 1);

-- Tasks that share a queue share everything eligibility depends on. Rows are
-- never changed or deleted.
CREATE TABLE queues (
    id        INTEGER PRIMARY KEY,
    tenant    TEXT NOT NULL,
    principal TEXT NOT NULL,
    agent     TEXT NOT NULL,
    labels    TEXT NOT NULL,
    UNIQUE (tenant, principal, agent, labels)
);

-- The mutable part of a task: the machine's core (JSON) and the columns the
-- claim, the sweep and the listings search on.
CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    principal    TEXT NOT NULL,
    queue        INTEGER NOT NULL,
    priority     INTEGER NOT NULL,
    idem_key     TEXT,
    created_at   INTEGER NOT NULL,
    state        INTEGER NOT NULL,
    last_seq     INTEGER NOT NULL,
    available_at INTEGER NOT NULL,
    ord          INTEGER NOT NULL,
    avoid_node   TEXT,
    lease_node   TEXT,
    deadline_at  INTEGER,
    core         TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX tasks_by_tenant ON tasks (tenant, id);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX tasks_ready ON tasks (queue, priority DESC, ord, available_at, avoid_node) WHERE state = 0;
-- Every leased (scheduled or running) task has a deadline, so this index also
-- finds a node's leases.
CREATE INDEX tasks_deadlines ON tasks (deadline_at, lease_node) WHERE deadline_at IS NOT NULL;

-- The immutable part, apart so that transitions do not rewrite it.
CREATE TABLE task_specs (
    id   TEXT PRIMARY KEY,
    spec TEXT NOT NULL
) WITHOUT ROWID;

-- Every event, once: the tenant feed by (tenant, cursor), a task's stream by
-- (task, seq).
CREATE TABLE events (
    tenant   TEXT NOT NULL,
    cursor   INTEGER NOT NULL,
    task     TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    terminal INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    PRIMARY KEY (tenant, cursor)
) WITHOUT ROWID;
CREATE UNIQUE INDEX events_by_task ON events (task, seq);
CREATE INDEX events_terminal ON events (tenant, cursor) WHERE terminal = 1;

-- Terminal-event consumers: every terminal event at or below `floor` is
-- acknowledged; acknowledgements above it are rows of consumer_acks.
CREATE TABLE consumers (
    tenant TEXT NOT NULL,
    name   TEXT NOT NULL,
    floor  INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
CREATE TABLE consumer_acks (
    tenant TEXT NOT NULL,
    name   TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    PRIMARY KEY (tenant, name, cursor)
) WITHOUT ROWID;

CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    spec          TEXT NOT NULL,
    status        INTEGER NOT NULL,
    in_flight     INTEGER NOT NULL,
    registered_at INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE records (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    status     TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE INDEX records_by_tenant ON records (kind, tenant, id);
CREATE TABLE record_events (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    seq  INTEGER NOT NULL,
    at   INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, id, seq)
) WITHOUT ROWID;
"#,
    // 2: retention. `floor` is a tenant feed's earliest readable cursor: the
    // terminal events below it belong to compacted tasks; those below
    // `purged_to` are deleted with their tasks.
    r#"
CREATE TABLE retention (
    tenant    TEXT PRIMARY KEY,
    floor     INTEGER NOT NULL,
    purged_to INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"#,
    // 3: concurrency keys. `ckey` is a keyed task's key (per tenant);
    // `key_wait` is 1 while it waits for one of the key's slots (its
    // `available_at` is then the far future, so no claim sees it) and 0 once
    // it holds one.
    r#"
ALTER TABLE tasks ADD COLUMN ckey TEXT;
ALTER TABLE tasks ADD COLUMN key_wait INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_keys ON tasks (tenant, ckey, key_wait, priority DESC, ord)
    WHERE ckey IS NOT NULL AND state IN (0, 1, 2);
-- Claims read the ready index in priority and queue order: tasks waiting for
-- a slot stay out of it, so a long line of them costs a claim nothing.
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (queue, priority DESC, ord, available_at, avoid_node)
    WHERE state = 0 AND key_wait = 0;
"#,
    // 4: rate limits: each bucket's theoretical arrival time (µs, the
    // generic cell rate algorithm of `hive_core::task::RateLimit`).
    r#"
CREATE TABLE rate_buckets (
    tenant TEXT NOT NULL,
    key    TEXT NOT NULL,
    tat    INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
"#,
];

/// The schema version this build writes and understands.
pub(super) const VERSION: i64 = MIGRATIONS.len() as i64;

struct Header {
    application_id: i64,
    version: i64,
    objects: i64,
}

async fn header(conn: &mut SqliteConnection, path: &Path) -> Result<Header> {
    let row = sqlx::query(
        "SELECT (SELECT application_id FROM pragma_application_id), \
                (SELECT user_version FROM pragma_user_version), \
                (SELECT count(*) FROM sqlite_schema)",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| open_error(path, e))?;
    Ok(Header {
        application_id: col(&row, 0)?,
        version: col(&row, 1)?,
        objects: col(&row, 2)?,
    })
}

/// Refuses a file that is not Hive's (`InvalidArgument`: the caller named the
/// wrong file), or whose schema is newer than this build (`Backend`).
fn check(h: &Header, path: &Path) -> Result<()> {
    let p = path.display();
    if h.application_id != 0 && h.application_id != APPLICATION_ID {
        return Err(Error::InvalidArgument {
            message: format!(
                "{p} is a SQLite database of another application (application_id {:#x}), not a Hive store",
                h.application_id
            ),
        });
    }
    if h.version > VERSION {
        return Err(Error::Backend {
            message: format!(
                "{p} has Hive schema version {}, newer than the version {VERSION} this build knows; \
                 open it with a newer Hive (downgrades are not supported)",
                h.version
            ),
            source: None,
        });
    }
    if h.version == 0 && h.application_id == 0 && h.objects > 0 {
        return Err(Error::InvalidArgument {
            message: format!(
                "{p} is a SQLite database with {} schema objects but no Hive schema; \
                 refusing to add Hive's tables to another application's database",
                h.objects
            ),
        });
    }
    Ok(())
}

/// Checks the file, switches it to WAL and brings the schema to [`VERSION`].
/// Nothing is written to a file that fails the checks.
pub(super) async fn prepare(conn: &mut SqliteConnection, path: &Path) -> Result<()> {
    check(&header(conn, path).await?, path)?;
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&mut *conn)
        .await
        .map_err(|e| open_error(path, e))?;
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| open_error(path, e))?;
    // Again under the write lock: another process may have migrated meanwhile.
    let h = header(&mut tx, path).await?;
    check(&h, path)?;
    if h.version < VERSION {
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(h.version as usize) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await
                .map_err(|e| db(&format!("apply schema migration {}", i + 1), e))?;
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {VERSION};"
        )))
        .execute(&mut *tx)
        .await
        .map_err(|e| db("record the schema version", e))?;
        tracing::info!(path = %path.display(), from = h.version, to = VERSION, "migrated the SQLite store");
    }
    tx.commit()
        .await
        .map_err(|e| db("commit the schema migration", e))?;
    Ok(())
}

/// A clear error for a file that cannot be opened or read.
pub(super) fn open_error(path: &Path, e: sqlx::Error) -> Error {
    let p = path.display();
    match sqlite_code(&e) {
        // SQLITE_NOTADB: the caller named the wrong file.
        Some(26) => Error::InvalidArgument {
            message: format!("{p} is not a SQLite database (or it is encrypted or damaged): {e}"),
        },
        // SQLITE_CORRUPT
        Some(11) => Error::Backend {
            message: format!("the SQLite database {p} is damaged: {e}"),
            source: Some(Box::new(e)),
        },
        // SQLITE_CANTOPEN, SQLITE_READONLY, SQLITE_PERM
        Some(14) | Some(8) | Some(3) => Error::Backend {
            message: format!(
                "cannot open the SQLite database {p} for reading and writing \
                 (check that the location exists and is writable): {e}"
            ),
            source: Some(Box::new(e)),
        },
        _ => {
            let mapped = db(&format!("open {p}"), e);
            match mapped {
                Error::BackendUnavailable { message, source } => Error::BackendUnavailable {
                    message: format!("{message} (another process may hold the write lock)"),
                    source,
                },
                other => other,
            }
        }
    }
}
