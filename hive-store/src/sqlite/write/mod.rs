//! The write side: one `BEGIN IMMEDIATE` transaction per store call, holding the
//! tasks it touches in memory, deciding every transition with the machine, and
//! writing the changed rows and the new events with multi-row statements when
//! it flushes.

use std::collections::BTreeMap;
use std::mem;
use std::sync::Arc;

use hive_core::clock::Timestamp;
use hive_core::id::{LeaseId, NodeId, TaskId};
use hive_core::node::{Node, NodeStatus, labels_eligible, owner_eligible};
use hive_core::principal::{PrincipalId, TenantId};
use hive_core::scheduler::Candidate;
use hive_core::store::{
    Ack, ClaimRequest, ClaimedTask, Command, CompactReport, NewTask, Submitted, SweepOptions,
    SweepReport,
};
use hive_core::task::machine::{self, Op, Outcome, TaskCore, TaskFacts};
use hive_core::task::{AgentRef, EventKind, LeaseToken, Owner, TaskSpec, TaskState};
use hive_core::{Error, Result};
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use sqlx::{AssertSqlSafe, Connection, Sqlite, SqliteConnection, Transaction};

use super::codec::{
    CHUNK, NODE_COLUMNS, col, db, from_json, int, node, node_status_code, not_found, rows_for_ids,
    state_code, task_id, to_json, tuple, tuples, uint,
};

/// The `available_at` of a task waiting for a concurrency key's slot: the
/// last millisecond of year 9999, after any claim's `now`. Its core keeps
/// its own time, restored when it gets a slot.
const KEY_WAIT_AT: i64 = 253_402_300_799_999;

mod claim;
mod consumers;
mod keys;
mod nodes;
mod submit;

// ----- caches shared by the writer and the readers ------------------------------

/// What identifies a queue: everything eligibility depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct QueueKey {
    tenant: TenantId,
    principal: PrincipalId,
    agent: AgentRef,
    /// The required labels as canonical JSON (a sorted map).
    labels: String,
}

#[derive(Debug)]
struct QueueInfo {
    id: i64,
    owner: Owner,
    agent: AgentRef,
    labels: BTreeMap<String, String>,
}

/// The queues table, in memory. Queue rows never change and are never deleted,
/// so the cache is only ever behind, never wrong: the claim reads the rows it
/// has not seen, and `by_key` gets a queue only once its row is committed.
#[derive(Debug, Default)]
pub(super) struct QueueCache {
    by_key: FxHashMap<QueueKey, i64>,
    list: Vec<QueueInfo>,
    loaded_up_to: i64,
}

/// Specs by task id (specs never change): spares the JSON parse on claims and
/// reports of recently submitted tasks. Two generations, each bounded in count
/// and in (encoded) bytes, so the cache stays bounded whatever the inputs.
#[derive(Debug, Default)]
pub(super) struct SpecCache {
    current: FxHashMap<TaskId, Arc<TaskSpec>>,
    current_bytes: usize,
    previous: FxHashMap<TaskId, Arc<TaskSpec>>,
}

impl SpecCache {
    const GENERATION: usize = 50_000;
    const GENERATION_BYTES: usize = 32 << 20;

    pub(super) fn get(&self, id: &TaskId) -> Option<Arc<TaskSpec>> {
        self.current
            .get(id)
            .or_else(|| self.previous.get(id))
            .cloned()
    }

    fn put(&mut self, id: TaskId, spec: Arc<TaskSpec>, bytes: usize) {
        if bytes > Self::GENERATION_BYTES / 16 {
            return;
        }
        if self.current.len() >= Self::GENERATION
            || self.current_bytes + bytes > Self::GENERATION_BYTES
        {
            self.previous = mem::take(&mut self.current);
            self.current_bytes = 0;
        }
        self.current_bytes += bytes;
        self.current.insert(id, spec);
    }
}

/// State the store keeps next to its connections.
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) queues: Mutex<QueueCache>,
    pub(super) specs: Mutex<SpecCache>,
}

/// What a committed transaction changed, for the caches and the waiters.
#[derive(Debug, Default)]
pub(super) struct Effects {
    /// Tasks with new events.
    pub(super) tasks: Vec<TaskId>,
    /// Tenants with new feed events.
    pub(super) tenants: FxHashSet<TenantId>,
    /// Claimable work may have appeared.
    pub(super) new_work: bool,
    /// Retries that become claimable later.
    pub(super) delayed: Vec<Timestamp>,
    /// Specs read or written, with their encoded size.
    specs: Vec<(TaskId, Arc<TaskSpec>, usize)>,
    queues: Vec<(QueueKey, i64)>,
}

impl Shared {
    /// Publishes what a committed transaction learned.
    pub(super) fn publish(&self, fx: &mut Effects) {
        if !fx.specs.is_empty() {
            let mut specs = self.specs.lock();
            for (id, spec, bytes) in fx.specs.drain(..) {
                specs.put(id, spec, bytes);
            }
        }
        if !fx.queues.is_empty() {
            let mut queues = self.queues.lock();
            for (key, id) in fx.queues.drain(..) {
                queues.by_key.insert(key, id);
            }
        }
    }
}

// ----- the transaction -------------------------------------------------------------

/// A task read into the transaction.
#[derive(Debug)]
struct Loaded {
    tenant: TenantId,
    principal: PrincipalId,
    spec: Arc<TaskSpec>,
    created_at: Timestamp,
    core: TaskCore,
    ord: i64,
    dirty: bool,
}

#[derive(Debug)]
struct NewEvent {
    tenant: TenantId,
    cursor: u64,
    task: TaskId,
    seq: u64,
    at: Timestamp,
    terminal: bool,
    kind: String,
}

/// Where a task's last event of a transaction waits to be written.
#[derive(Clone, Copy, Debug)]
enum Pending {
    Appended(usize),
    Replaced(usize),
}

/// A task to submit with its encodings, made before the write lock is taken.
#[derive(Debug)]
pub(super) struct PreparedTask {
    task: NewTask,
    id: String,
    spec: String,
}

impl PreparedTask {
    pub(super) fn new(task: NewTask) -> Result<Self> {
        Ok(PreparedTask {
            id: task.id.to_string(),
            spec: to_json!(&*task.spec, "task spec")?,
            task,
        })
    }
}

/// One write transaction (`BEGIN IMMEDIATE`: the file's write lock is held
/// from the start, so every read in it sees the latest committed state and no
/// other writer, in this process or another, interleaves).
pub(super) struct Tx<'c> {
    tx: Transaction<'c, Sqlite>,
    shared: &'c Shared,
    now: Timestamp,
    tasks: FxHashMap<TaskId, Loaded>,
    dirty: Vec<TaskId>,
    events: Vec<NewEvent>,
    /// Stored heartbeats replaced by a later beat: (task, seq, kind).
    replaced: Vec<(TaskId, u64, String)>,
    /// Each task's last event of this transaction: appended (index into
    /// `events`) or replaced (index into `replaced`).
    pending: FxHashMap<TaskId, Pending>,
    heads: FxHashMap<TenantId, u64>,
    next_ord: i64,
    stored_ord: i64,
    in_flight: FxHashMap<NodeId, i64>,
    seen: Vec<NodeId>,
    new_queues: FxHashMap<QueueKey, i64>,
    /// Concurrency keys whose holders ended in this transaction: their free
    /// slots are handed on when it is written.
    released: Vec<(TenantId, String, u32)>,
    /// Set when a core changed but its event could not be recorded: the
    /// transaction must not commit.
    poisoned: Option<String>,
    fx: Effects,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The node that presents an op, if any: its sign of life.
fn presenter(op: &Op) -> Option<NodeId> {
    match op {
        Op::Start { node, .. }
        | Op::Heartbeat { node, .. }
        | Op::Log { node, .. }
        | Op::Succeed { node, .. }
        | Op::Fail { node, .. } => Some(*node),
        _ => None,
    }
}

impl<'c> Tx<'c> {
    pub(super) async fn begin(
        conn: &'c mut SqliteConnection,
        shared: &'c Shared,
        now: Timestamp,
    ) -> Result<Tx<'c>> {
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db("begin a write transaction", e))?;
        let next_ord: i64 =
            sqlx::query_scalar("SELECT value FROM hive_meta WHERE key = 'next_ord'")
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db("read the queue order", e))?
                .ok_or_else(|| Error::Backend {
                    message: "the SQLite store has no queue order counter (hive_meta)".into(),
                    source: None,
                })?;
        Ok(Tx {
            tx,
            shared,
            now,
            tasks: FxHashMap::default(),
            dirty: Vec::new(),
            events: Vec::new(),
            replaced: Vec::new(),
            pending: FxHashMap::default(),
            heads: FxHashMap::default(),
            next_ord,
            stored_ord: next_ord,
            in_flight: FxHashMap::default(),
            seen: Vec::new(),
            new_queues: FxHashMap::default(),
            released: Vec::new(),
            poisoned: None,
            fx: Effects::default(),
        })
    }

    /// Writes what is pending and commits; the effects are for the caller to
    /// publish once the lock is released.
    pub(super) async fn commit(mut self) -> Result<Effects> {
        if let Some(why) = self.poisoned.take() {
            return Err(Error::Backend {
                message: format!("nothing was written: {why}"),
                source: None,
            });
        }
        self.flush().await?;
        self.tx
            .commit()
            .await
            .map_err(|e| db("commit a write transaction", e))?;
        Ok(self.fx)
    }

    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    // ----- reading tasks into the transaction ----------------------------------------

    /// Reads `ids` (those not read yet; unknown ids are skipped).
    async fn load(&mut self, ids: &[TaskId]) -> Result<()> {
        let mut wanted: Vec<TaskId> = ids
            .iter()
            .filter(|id| !self.tasks.contains_key(id))
            .copied()
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut rows: Vec<(TaskId, TenantId, PrincipalId, Timestamp, i64, TaskCore)> =
            Vec::with_capacity(wanted.len());
        let found = rows_for_ids(
            self.conn(),
            "SELECT id, tenant, principal, created_at, ord, core FROM tasks WHERE id IN ",
            &wanted,
            "read tasks",
        )
        .await?;
        for row in found {
            let id: String = col(&row, 0)?;
            let tenant: String = col(&row, 1)?;
            let principal: String = col(&row, 2)?;
            let core: String = col(&row, 5)?;
            rows.push((
                task_id(&id)?,
                tenant.as_str().into(),
                principal.as_str().into(),
                Timestamp::from_millis(col(&row, 3)?),
                col(&row, 4)?,
                from_json!(&core, "task core")?,
            ));
        }
        let mut specs: FxHashMap<TaskId, Arc<TaskSpec>> = FxHashMap::default();
        let mut unknown = Vec::new();
        {
            let cache = self.shared.specs.lock();
            for r in &rows {
                match cache.get(&r.0) {
                    Some(s) => {
                        specs.insert(r.0, s);
                    }
                    None => unknown.push(r.0),
                }
            }
        }
        let found = rows_for_ids(
            self.conn(),
            "SELECT id, spec FROM task_specs WHERE id IN ",
            &unknown,
            "read task specs",
        )
        .await?;
        for row in found {
            let id: String = col(&row, 0)?;
            let id = task_id(&id)?;
            let text: String = col(&row, 1)?;
            let spec: Arc<TaskSpec> = Arc::new(from_json!(&text, "task spec")?);
            self.fx.specs.push((id, spec.clone(), text.len()));
            specs.insert(id, spec);
        }
        let mut tenants = Vec::new();
        for (id, tenant, principal, created_at, ord, core) in rows {
            let spec = specs
                .remove(&id)
                .ok_or_else(|| super::codec::corrupt(format!("task {id} has no spec row")))?;
            if !self.heads.contains_key(&tenant) && !tenants.contains(&tenant) {
                tenants.push(tenant.clone());
            }
            self.tasks.insert(
                id,
                Loaded {
                    tenant,
                    principal,
                    spec,
                    created_at,
                    core,
                    ord,
                    dirty: false,
                },
            );
        }
        self.load_heads(tenants).await
    }

    /// Reads the feed heads of `tenants` (the last cursor of each).
    async fn load_heads(&mut self, tenants: Vec<TenantId>) -> Result<()> {
        for tenant in tenants {
            if self.heads.contains_key(&tenant) {
                continue;
            }
            let head: i64 =
                sqlx::query_scalar("SELECT coalesce(max(cursor), 0) FROM events WHERE tenant = ?")
                    .bind(tenant.as_str())
                    .fetch_one(self.conn())
                    .await
                    .map_err(|e| db("read a feed head", e))?;
            self.heads.insert(tenant, uint(head, "cursor")?);
        }
        Ok(())
    }

    // ----- transitions -----------------------------------------------------------------

    /// Appends an event to the task's stream and its tenant's feed (the head was
    /// read when the task was).
    fn append(
        &mut self,
        tenant: &TenantId,
        task: TaskId,
        seq: u64,
        kind: &EventKind,
    ) -> Result<()> {
        let head = self.heads.get_mut(tenant).ok_or_else(|| Error::Backend {
            message: format!("feed head of tenant {tenant} was not read before appending"),
            source: None,
        })?;
        *head += 1;
        let cursor = *head;
        self.pending
            .insert(task, Pending::Appended(self.events.len()));
        self.events.push(NewEvent {
            tenant: tenant.clone(),
            cursor,
            task,
            seq,
            at: self.now,
            terminal: kind.is_terminal(),
            kind: to_json!(kind, "event")?,
        });
        self.fx.tasks.push(task);
        if !self.fx.tenants.contains(tenant) {
            self.fx.tenants.insert(tenant.clone());
        }
        Ok(())
    }

    /// Stores `kind` in place of the task's event at `seq` (a coalesced
    /// heartbeat): in this transaction's new events if it is one of them,
    /// else by an update at flush. The feed keeps its one entry.
    fn replace(&mut self, task: TaskId, seq: u64, kind: &EventKind) -> Result<()> {
        let json = to_json!(kind, "event")?;
        match self.pending.get(&task).copied() {
            Some(Pending::Appended(k)) if self.events[k].seq == seq => {
                self.events[k].kind = json;
                self.events[k].at = self.now;
            }
            Some(Pending::Replaced(k)) => self.replaced[k].2 = json,
            _ => {
                self.pending
                    .insert(task, Pending::Replaced(self.replaced.len()));
                self.replaced.push((task, seq, json));
            }
        }
        self.fx.tasks.push(task);
        Ok(())
    }

    /// Applies `op` to a task read into the transaction: the machine decides,
    /// the event is appended, leases are counted on their nodes.
    fn transition(&mut self, id: TaskId, op: Op) -> Result<Ack> {
        let now = self.now;
        let t = self
            .tasks
            .get_mut(&id)
            .ok_or_else(|| not_found("task", id))?;
        let state_before = t.core.state;
        let lease_before = t.core.lease.as_ref().map(|l| l.node);
        let facts = TaskFacts {
            id,
            created_at: t.created_at,
            spec: &t.spec,
        };
        let kind = match machine::apply(&mut t.core, facts, op, now)? {
            Outcome::Duplicate { seq, state } => return Ok(Ack { seq, state }),
            Outcome::Replaced(kind) => {
                let (seq, state) = (t.core.last_seq, t.core.state);
                if !t.dirty {
                    t.dirty = true;
                    self.dirty.push(id);
                }
                self.replace(id, seq, &kind)?;
                return Ok(Ack { seq, state });
            }
            Outcome::Appended(kind) => kind,
        };
        let state = t.core.state;
        let seq = t.core.last_seq;
        if state.is_terminal()
            && let Some((key, max)) = t.spec.concurrency_key()
        {
            let gk = (t.tenant.clone(), key.to_owned(), max);
            if !self.released.contains(&gk) {
                self.released.push(gk);
            }
        }
        if state == TaskState::Pending && state_before != TaskState::Pending {
            // Requeued: it keeps its place (`ord`, the submission order).
            if t.core.available_at <= now {
                self.fx.new_work = true;
            } else {
                self.fx.delayed.push(t.core.available_at);
            }
        }
        let lease_after = t.core.lease.as_ref().map(|l| l.node);
        if !t.dirty {
            t.dirty = true;
            self.dirty.push(id);
        }
        let tenant = t.tenant.clone();
        if lease_before != lease_after {
            if let Some(n) = lease_before {
                *self.in_flight.entry(n).or_default() -= 1;
            }
            if let Some(n) = lease_after {
                *self.in_flight.entry(n).or_default() += 1;
            }
        }
        if let Err(e) = self.append(&tenant, id, seq, &kind) {
            self.poisoned = Some(format!("task {id}: {e}"));
            return Err(e);
        }
        Ok(Ack { seq, state })
    }

    fn touch(&mut self, node: NodeId) {
        if !self.seen.contains(&node) {
            self.seen.push(node);
        }
    }

    // ----- writing -------------------------------------------------------------------

    /// Writes the changed tasks, the new events, lease counts, signs of life and
    /// the queue order counter.
    async fn flush(&mut self) -> Result<()> {
        // The indices point into `events` and `replaced`, emptied below.
        self.pending.clear();
        let dirty = mem::take(&mut self.dirty);
        let mut rows = Vec::with_capacity(dirty.len());
        for id in dirty {
            let Some(t) = self.tasks.get_mut(&id) else {
                return Err(Error::Backend {
                    message: format!("task {id} changed but is not in the transaction"),
                    source: None,
                });
            };
            t.dirty = false;
            let facts = TaskFacts {
                id,
                created_at: t.created_at,
                spec: &t.spec,
            };
            let deadline = machine::deadline(&t.core, facts).map(|(at, _)| at.as_millis());
            rows.push((
                id.to_string(),
                state_code(t.core.state),
                int(t.core.last_seq),
                t.core.available_at.as_millis(),
                t.ord,
                t.core.avoid_node.map(|n| n.to_string()),
                t.core.lease.as_ref().map(|l| l.node.to_string()),
                deadline,
                to_json!(&t.core, "task core")?,
            ));
        }
        for chunk in rows.chunks(CHUNK) {
            let sql = format!(
                "UPDATE tasks SET state = v.column2, last_seq = v.column3, available_at = v.column4, \
                 ord = v.column5, avoid_node = v.column6, lease_node = v.column7, \
                 deadline_at = v.column8, core = v.column9 \
                 FROM (VALUES {}) AS v WHERE tasks.id = v.column1",
                tuples(chunk.len(), 9)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(r.0.as_str())
                    .bind(r.1)
                    .bind(r.2)
                    .bind(r.3)
                    .bind(r.4)
                    .bind(r.5.as_deref())
                    .bind(r.6.as_deref())
                    .bind(r.7)
                    .bind(r.8.as_str());
            }
            q.execute(self.conn())
                .await
                .map_err(|e| db("update tasks", e))?;
        }
        for (tenant, key, max) in mem::take(&mut self.released) {
            self.admit(&tenant, &key, max).await?;
        }
        let events = mem::take(&mut self.events);
        for chunk in events.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO events (tenant, cursor, task, seq, at, terminal, kind) VALUES {}",
                tuples(chunk.len(), 7)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for e in chunk {
                q = q
                    .bind(e.tenant.as_str())
                    .bind(int(e.cursor))
                    .bind(e.task.to_string())
                    .bind(int(e.seq))
                    .bind(e.at.as_millis())
                    .bind(e.terminal)
                    .bind(e.kind.as_str());
            }
            q.execute(self.conn())
                .await
                .map_err(|e| db("append events", e))?;
        }
        let at = self.now.as_millis();
        for (task, seq, kind) in mem::take(&mut self.replaced) {
            sqlx::query("UPDATE events SET at = ?, kind = ? WHERE task = ? AND seq = ?")
                .bind(at)
                .bind(kind)
                .bind(task.to_string())
                .bind(int(seq))
                .execute(self.conn())
                .await
                .map_err(|e| db("replace a heartbeat", e))?;
        }
        let in_flight = mem::take(&mut self.in_flight);
        for (node, delta) in in_flight {
            if delta != 0 {
                sqlx::query("UPDATE nodes SET in_flight = max(in_flight + ?, 0) WHERE id = ?")
                    .bind(delta)
                    .bind(node.to_string())
                    .execute(self.conn())
                    .await
                    .map_err(|e| db("count leases", e))?;
            }
        }
        let now = self.now.as_millis();
        for node in mem::take(&mut self.seen) {
            sqlx::query("UPDATE nodes SET last_seen = max(last_seen, ?) WHERE id = ?")
                .bind(now)
                .bind(node.to_string())
                .execute(self.conn())
                .await
                .map_err(|e| db("record a node's sign of life", e))?;
        }
        if self.next_ord != self.stored_ord {
            sqlx::query("UPDATE hive_meta SET value = ? WHERE key = 'next_ord'")
                .bind(self.next_ord)
                .execute(self.conn())
                .await
                .map_err(|e| db("store the queue order", e))?;
            self.stored_ord = self.next_ord;
        }
        Ok(())
    }
}
