//! Transitions inside a transaction: tasks are loaded with their rows locked,
//! every op is decided by the state machine on the stored core, and the new
//! cores and their events are written back in one statement, together with the
//! feed cursors and the notification.

use std::sync::Arc;

use hive_core::clock::Timestamp;
use hive_core::id::TaskId;
use hive_core::principal::TenantId;
use hive_core::store::Ack;
use hive_core::task::machine::{self, Op, Outcome, TaskCore, TaskFacts};
use hive_core::task::{EventKind, TaskSpec, TaskState};
use hive_core::{Error, Result};
use rustc_hash::FxHashMap;
use sqlx::PgConnection;

use super::codec;
use super::error::db;
use super::notify::Signal;

/// The columns [`locked`] reads, for transitions that do not need the input.
macro_rules! locked_columns {
    () => {
        "id::text, tenant, created_at, spec::text, core::text"
    };
}
pub(super) use locked_columns;

/// A row of [`locked_columns!`].
pub(super) type LockedRow = (String, String, i64, String, String);

/// A task loaded for transitions (its row is locked by the transaction).
#[derive(Debug)]
pub(super) struct Loaded {
    pub(super) id: TaskId,
    pub(super) tenant: TenantId,
    pub(super) created_at: Timestamp,
    pub(super) spec: Arc<TaskSpec>,
    pub(super) core: TaskCore,
    changed: bool,
    /// Where this task's last event of the transaction is: appended
    /// (`events`) or replaced in place (`replaced`).
    pending: Option<Pending>,
}

/// Where a task's last event of a transaction waits to be written.
#[derive(Clone, Copy, Debug)]
enum Pending {
    Appended(usize),
    Replaced(usize),
}

impl Loaded {
    pub(super) fn new(
        id: TaskId,
        tenant: TenantId,
        created_at: Timestamp,
        spec: Arc<TaskSpec>,
        core: TaskCore,
    ) -> Self {
        Loaded {
            id,
            tenant,
            created_at,
            spec,
            core,
            changed: false,
            pending: None,
        }
    }
}

/// Decodes a row of [`locked_columns!`].
pub(super) fn locked(row: LockedRow) -> Result<Loaded> {
    let (id, tenant, created_at, spec, core) = row;
    Ok(Loaded::new(
        codec::task_id(&id)?,
        tenant.into(),
        Timestamp::from_millis(created_at),
        Arc::new(codec::decode_spec(&spec, None)?),
        codec::decode_core(&core)?,
    ))
}

#[derive(Debug)]
struct NewEvent {
    task: TaskId,
    seq: u64,
    tenant: usize,
    kind: EventKind,
}

/// The tasks of one transaction and what happened to them.
#[derive(Debug, Default)]
pub(super) struct Transitions {
    tasks: Vec<Loaded>,
    index: FxHashMap<TaskId, usize>,
    events: Vec<NewEvent>,
    /// Stored heartbeats replaced by a later beat (see [`Outcome::Replaced`]).
    replaced: Vec<NewEvent>,
    /// What the commit tells the waiters.
    pub(super) signal: Signal,
}

impl Transitions {
    /// Adds a loaded task; returns its index.
    pub(super) fn add(&mut self, task: Loaded) -> usize {
        let i = self.tasks.len();
        self.index.insert(task.id, i);
        self.tasks.push(task);
        i
    }

    /// The index of a loaded task.
    pub(super) fn find(&self, id: TaskId) -> Option<usize> {
        self.index.get(&id).copied()
    }

    pub(super) fn task(&self, i: usize) -> &Loaded {
        &self.tasks[i]
    }

    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Decides `op` on task `i` with the machine and records its event.
    pub(super) fn apply(&mut self, i: usize, op: Op, now: Timestamp) -> Result<Ack> {
        let t = &mut self.tasks[i];
        let facts = TaskFacts {
            id: t.id,
            created_at: t.created_at,
            spec: &t.spec,
        };
        let was_pending = t.core.state == TaskState::Pending;
        let kind = match machine::apply(&mut t.core, facts, op, now)? {
            Outcome::Duplicate { seq, state } => return Ok(Ack { seq, state }),
            Outcome::Replaced(kind) => {
                t.changed = true;
                let (task, seq) = (t.id, t.core.last_seq);
                let ack = Ack {
                    seq,
                    state: t.core.state,
                };
                self.signal.task(task);
                // Appended by this transaction? Then it is not stored yet.
                match t.pending {
                    Some(Pending::Appended(k)) if self.events[k].seq == seq => {
                        self.events[k].kind = kind
                    }
                    Some(Pending::Replaced(k)) => self.replaced[k].kind = kind,
                    _ => {
                        t.pending = Some(Pending::Replaced(self.replaced.len()));
                        self.replaced.push(NewEvent {
                            task,
                            seq,
                            tenant: i,
                            kind,
                        });
                    }
                }
                return Ok(ack);
            }
            Outcome::Appended(kind) => kind,
        };
        t.changed = true;
        if t.core.state.is_terminal() && t.spec.concurrency_key().is_some() {
            // Its concurrency slot goes to a waiting task.
            self.signal.work();
        }
        if t.core.state == TaskState::Pending && !was_pending {
            // Requeued, keeping its place (`queue_order`). Waiting workers
            // claim again: at once if it is claimable, else they learn when
            // its backoff ends (`ClaimResult::next_due`).
            self.signal.work();
        }
        self.signal.task(t.id);
        self.signal.feed(&t.tenant);
        t.pending = Some(Pending::Appended(self.events.len()));
        self.events.push(NewEvent {
            task: t.id,
            seq: t.core.last_seq,
            tenant: i,
            kind,
        });
        Ok(Ack {
            seq: t.core.last_seq,
            state: t.core.state,
        })
    }

    /// Writes the changed cores and their events (with feed cursors), records
    /// the sign of life of the nodes `seen`, and sends the notification, in one
    /// statement of the caller's transaction. Answers `false` (and does nothing)
    /// when there is nothing to write.
    pub(super) async fn persist(
        &self,
        conn: &mut PgConnection,
        channel: &str,
        now: Timestamp,
        seen: &[String],
    ) -> Result<bool> {
        if self.events.is_empty() && self.replaced.is_empty() {
            return Ok(false);
        }
        let changed: Vec<&Loaded> = self.tasks.iter().filter(|t| t.changed).collect();
        // Concurrency keys whose holders end here: locked before the feed
        // heads (the order every writer takes them in), their free slots
        // handed on after the tasks are written.
        let mut released: Vec<(&str, &str, u32)> = changed
            .iter()
            .filter(|t| t.core.state.is_terminal())
            .filter_map(|t| {
                let (key, max) = t.spec.concurrency_key()?;
                Some((t.tenant.as_str(), key, max))
            })
            .collect();
        released.sort_unstable();
        released.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        if !released.is_empty() {
            lock_keys(&mut *conn, released.iter().map(|r| (r.0, r.1))).await?;
        }
        let n = changed.len();
        let mut ids = Vec::with_capacity(n);
        let mut states = Vec::with_capacity(n);
        let mut cores = Vec::with_capacity(n);
        let mut last_seqs = Vec::with_capacity(n);
        let mut available = Vec::with_capacity(n);
        let mut lease_nodes = Vec::with_capacity(n);
        let mut avoid_nodes = Vec::with_capacity(n);
        let mut deadlines = Vec::with_capacity(n);
        for t in changed {
            let facts = TaskFacts {
                id: t.id,
                created_at: t.created_at,
                spec: &t.spec,
            };
            ids.push(t.id.to_string());
            states.push(t.core.state.as_str());
            cores.push(codec::encode_core(&t.core)?);
            last_seqs.push(codec::big(t.core.last_seq));
            available.push(t.core.available_at.as_millis());
            lease_nodes.push(t.core.lease.as_ref().map(|l| l.node.to_string()));
            avoid_nodes.push(t.core.avoid_node.map(|n| n.to_string()));
            deadlines.push(machine::deadline(&t.core, facts).map(|(at, _)| at.as_millis()));
        }
        let m = self.events.len();
        let mut ev_tasks = Vec::with_capacity(m);
        let mut ev_seqs = Vec::with_capacity(m);
        let mut ev_tenants = Vec::with_capacity(m);
        let mut ev_kinds = Vec::with_capacity(m);
        let mut ev_terminal = Vec::with_capacity(m);
        for e in &self.events {
            ev_tasks.push(e.task.to_string());
            ev_seqs.push(codec::big(e.seq));
            ev_tenants.push(self.tasks[e.tenant].tenant.as_str());
            ev_kinds.push(codec::encode_event(&e.kind)?);
            ev_terminal.push(e.kind.is_terminal());
        }
        let r = self.replaced.len();
        let mut rep_tasks = Vec::with_capacity(r);
        let mut rep_seqs = Vec::with_capacity(r);
        let mut rep_kinds = Vec::with_capacity(r);
        for e in &self.replaced {
            rep_tasks.push(e.task.to_string());
            rep_seqs.push(codec::big(e.seq));
            rep_kinds.push(codec::encode_event(&e.kind)?);
        }
        sqlx::query(PERSIST)
            .bind(ids)
            .bind(states)
            .bind(cores)
            .bind(last_seqs)
            .bind(available)
            .bind(lease_nodes)
            .bind(avoid_nodes)
            .bind(deadlines)
            .bind(ev_tasks)
            .bind(ev_seqs)
            .bind(ev_tenants)
            .bind(ev_kinds)
            .bind(ev_terminal)
            .bind(now.as_millis())
            .bind(channel)
            .bind(self.signal.payload())
            .bind(seen)
            .bind(rep_tasks)
            .bind(rep_seqs)
            .bind(rep_kinds)
            .execute(&mut *conn)
            .await
            .map_err(|e| db("store transitions", e))?;
        if !released.is_empty() {
            admit(&mut *conn, &released).await?;
        }
        Ok(true)
    }
}

/// The `available_at` of a task waiting for a concurrency slot: the last
/// millisecond of year 9999, after any claim's `now`.
pub(super) const KEY_WAIT_AT: i64 = 253_402_300_799_999;

/// Takes the transaction-scoped advisory lock of each concurrency key
/// `(tenant, key)`, in one order (the hashes sorted), so writers of the same
/// keys serialize and never deadlock on them.
pub(super) async fn lock_keys<'k>(
    conn: &mut PgConnection,
    keys: impl Iterator<Item = (&'k str, &'k str)>,
) -> Result<()> {
    let (tenants, keys): (Vec<&str>, Vec<&str>) = keys.unzip();
    sqlx::query(LOCK_KEYS)
        .bind(tenants)
        .bind(keys)
        .execute(conn)
        .await
        .map_err(|e| db("lock concurrency keys", e))?;
    Ok(())
}

/// See [`lock_keys`]: `$1`, `$2` are the keys' tenants and names.
pub(super) const LOCK_KEYS: &str = "SELECT count(pg_advisory_xact_lock(h)) FROM ( \
     SELECT DISTINCT hashtextextended(t || chr(31) || k, 7) AS h \
     FROM UNNEST($1::text[], $2::text[]) AS x(t, k) ORDER BY 1) s";

/// Hands the free slots of concurrency keys `(tenant, key, max)` (`max`
/// minus the key's holders) to their first waiting tasks, by priority then
/// submission: each gets its own `available_at` back and a fresh queue order
/// (the end of the queue, so keys take turns). Waiting rows another
/// transaction holds (being cancelled) are skipped. The caller holds the
/// keys' locks. One statement for every key.
pub(super) async fn admit(conn: &mut PgConnection, keys: &[(&str, &str, u32)]) -> Result<()> {
    let tenants: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let names: Vec<&str> = keys.iter().map(|k| k.1).collect();
    let maxes: Vec<i64> = keys.iter().map(|k| i64::from(k.2)).collect();
    sqlx::query(ADMIT)
        .bind(tenants)
        .bind(names)
        .bind(maxes)
        .execute(conn)
        .await
        .map_err(|e| db("hand on concurrency slots", e))?;
    Ok(())
}

/// See [`admit`]: `$1`, `$2`, `$3` are the keys' tenants, names and slots.
pub(super) const ADMIT: &str = r#"
WITH k AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS k(tenant, ckey, max)
), w AS (
    SELECT c.id FROM k CROSS JOIN LATERAL (
        SELECT t.id FROM tasks t
        WHERE t.tenant = k.tenant AND t.ckey = k.ckey AND t.key_wait IS NOT NULL
          AND t.state IN ('pending', 'scheduled', 'running')
        ORDER BY t.priority DESC, t.queue_order
        LIMIT greatest(0, k.max - (
            SELECT count(*) FROM tasks h
            WHERE h.tenant = k.tenant AND h.ckey = k.ckey AND h.key_wait IS NULL
              AND h.state IN ('pending', 'scheduled', 'running')))
        FOR UPDATE OF t SKIP LOCKED
    ) c
), o AS (
    SELECT w.id, nextval('task_order') AS queue_order FROM w
)
UPDATE tasks t
SET available_at = t.key_wait, key_wait = NULL, queue_order = o.queue_order
FROM o WHERE t.id = o.id
"#;

/// The new cores (`u`, written by `upd`), the nodes' sign of life (`seen`),
/// the replaced heartbeats (`rep`), the events (`ev`), the feed heads
/// moved by the number of events per tenant (`heads`: the row lock orders
/// appends by commit), the notification (`note`, sent at commit), then the
/// events with their cursors.
const PERSIST: &str = r#"
WITH u AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                         $6::text[], $7::text[], $8::int8[])
        AS u(id, state, core, last_seq, available_at, lease_node, avoid_node, deadline_at)
), upd AS (
    UPDATE tasks t
    SET state = u.state, core = u.core::json, last_seq = u.last_seq,
        available_at = u.available_at, lease_node = u.lease_node::uuid,
        avoid_node = u.avoid_node::uuid, deadline_at = u.deadline_at
    FROM u
    WHERE t.id = u.id::uuid
    RETURNING 1
), ev AS (
    SELECT * FROM UNNEST($9::text[], $10::int8[], $11::text[], $12::text[], $13::bool[])
        WITH ORDINALITY AS e(task, seq, tenant, kind, terminal, ord)
), seen AS (
    UPDATE nodes SET last_seen = greatest(last_seen, $14)
    WHERE id IN (SELECT id FROM nodes WHERE id = ANY($17::text[]::uuid[]) ORDER BY id FOR UPDATE)
    RETURNING 1
), counts AS (
    -- Reading `upd` and `seen` makes them finish before the feed heads are
    -- locked: the lock order stays tasks, nodes, feeds, and the feed lock is
    -- held only for the event inserts and the commit.
    SELECT tenant, count(*) AS n
    FROM ev, (SELECT count(*) FROM upd) AS updated, (SELECT count(*) FROM seen) AS touched
    GROUP BY tenant
), heads AS (
    INSERT INTO feeds AS f (tenant, head)
    SELECT tenant, n FROM counts ORDER BY tenant
    ON CONFLICT (tenant) DO UPDATE SET head = f.head + EXCLUDED.head
    RETURNING f.tenant, f.head
), rep AS (
    -- Coalesced heartbeats: the stored event takes the new beat's time and
    -- progress in place; no feed cursor, so no feed-head lock.
    UPDATE task_events e SET at = $14, kind = r.kind::json
    FROM UNNEST($18::text[], $19::int8[], $20::text[]) AS r(task, seq, kind)
    WHERE e.task = r.task::uuid AND e.seq = r.seq
    RETURNING 1
), note AS (
    SELECT pg_notify($15, $16) WHERE $16::text IS NOT NULL
)
INSERT INTO task_events (task, seq, tenant, feed_cursor, at, terminal, kind)
SELECT ev.task::uuid, ev.seq, ev.tenant,
       h.head - c.n + row_number() OVER (PARTITION BY ev.tenant ORDER BY ev.ord),
       $14, ev.terminal, ev.kind::json
FROM ev
JOIN counts c ON c.tenant = ev.tenant
JOIN heads h ON h.tenant = ev.tenant
LEFT JOIN note ON true
"#;

/// `NotFound` for a task id.
pub(super) fn task_not_found(id: TaskId) -> Error {
    Error::NotFound {
        kind: "task",
        id: id.to_string(),
    }
}
