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
    Ack, ClaimRequest, ClaimedTask, Command, NewTask, Submitted, SweepOptions, SweepReport,
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
    heads: FxHashMap<TenantId, u64>,
    next_ord: i64,
    stored_ord: i64,
    in_flight: FxHashMap<NodeId, i64>,
    seen: Vec<NodeId>,
    new_queues: FxHashMap<QueueKey, i64>,
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
            heads: FxHashMap::default(),
            next_ord,
            stored_ord: next_ord,
            in_flight: FxHashMap::default(),
            seen: Vec::new(),
            new_queues: FxHashMap::default(),
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
            Outcome::Appended(kind) => kind,
        };
        let state = t.core.state;
        let seq = t.core.last_seq;
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

    // ----- submit ----------------------------------------------------------------------

    pub(super) async fn submit(&mut self, tasks: Vec<PreparedTask>) -> Result<Vec<Submitted>> {
        // Idempotency keys already stored.
        let mut keyed: FxHashMap<TenantId, Vec<String>> = FxHashMap::default();
        for PreparedTask { task: t, .. } in &tasks {
            if let Some(k) = &t.spec.idempotency_key {
                keyed
                    .entry(t.owner.tenant.clone())
                    .or_default()
                    .push(k.clone());
            }
        }
        let mut existing: FxHashMap<(TenantId, String), (TaskId, u64)> = FxHashMap::default();
        for (tenant, keys) in keyed {
            for chunk in keys.chunks(CHUNK) {
                let sql = format!(
                    "SELECT idem_key, id, last_seq FROM tasks WHERE tenant = ? AND idem_key IN {}",
                    tuple(chunk.len())
                );
                let mut q = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str());
                for k in chunk {
                    q = q.bind(k.as_str());
                }
                let rows = q
                    .fetch_all(self.conn())
                    .await
                    .map_err(|e| db("look up idempotency keys", e))?;
                for row in rows {
                    let key: String = col(&row, 0)?;
                    let id: String = col(&row, 1)?;
                    let seq: i64 = col(&row, 2)?;
                    existing.insert((tenant.clone(), key), (task_id(&id)?, uint(seq, "seq")?));
                }
            }
        }
        let mut out = Vec::with_capacity(tasks.len());
        let mut fresh = Vec::with_capacity(tasks.len());
        for p in tasks {
            let t = &p.task;
            if let Some(key) = &t.spec.idempotency_key {
                let k = (t.owner.tenant.clone(), key.clone());
                if let Some(&(id, last_seq)) = existing.get(&k) {
                    out.push(Submitted {
                        id,
                        created: false,
                        last_seq,
                    });
                    continue;
                }
                existing.insert(k, (t.id, 1));
            }
            out.push(Submitted {
                id: t.id,
                created: true,
                last_seq: 1,
            });
            fresh.push(p);
        }
        if fresh.is_empty() {
            return Ok(out);
        }
        let mut tenants: Vec<TenantId> = Vec::new();
        for PreparedTask { task: t, .. } in &fresh {
            if !tenants.contains(&t.owner.tenant) {
                tenants.push(t.owner.tenant.clone());
            }
        }
        self.load_heads(tenants).await?;
        // Every new task has the same core; encode it once.
        let core = TaskCore::submitted(self.now);
        let core_json = to_json!(&core, "task core")?;
        let queued = EventKind::Queued;
        let mut queues = Vec::with_capacity(fresh.len());
        let mut last: Option<(usize, i64)> = None;
        for (i, PreparedTask { task: t, .. }) in fresh.iter().enumerate() {
            let prev = last.map(|(j, q)| (&fresh[j].task, q));
            let q = match prev {
                Some((p, q))
                    if p.owner == t.owner
                        && p.spec.agent == t.spec.agent
                        && p.spec.labels == t.spec.labels =>
                {
                    q
                }
                _ => self.queue_id(&t.owner, &t.spec).await?,
            };
            last = Some((i, q));
            queues.push(q);
        }
        for (chunk, qs) in fresh.chunks(CHUNK).zip(queues.chunks(CHUNK)) {
            let sql = format!(
                "INSERT INTO tasks (id, tenant, principal, queue, priority, idem_key, created_at, \
                 state, last_seq, available_at, ord, avoid_node, lease_node, deadline_at, core) \
                 VALUES {}",
                tuples(chunk.len(), 15)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (p, queue) in chunk.iter().zip(qs) {
                let t = &p.task;
                let facts = TaskFacts {
                    id: t.id,
                    created_at: self.now,
                    spec: &t.spec,
                };
                let deadline = machine::deadline(&core, facts).map(|(at, _)| at.as_millis());
                let ord = self.next_ord;
                self.next_ord += 1;
                q = q
                    .bind(p.id.as_str())
                    .bind(t.owner.tenant.as_str())
                    .bind(t.owner.principal.as_str())
                    .bind(*queue)
                    .bind(t.spec.priority)
                    .bind(t.spec.idempotency_key.as_deref())
                    .bind(self.now.as_millis())
                    .bind(state_code(TaskState::Pending))
                    .bind(1_i64)
                    .bind(self.now.as_millis())
                    .bind(ord)
                    .bind(None::<String>)
                    .bind(None::<String>)
                    .bind(deadline)
                    .bind(core_json.as_str());
            }
            q.execute(self.conn())
                .await
                .map_err(|e| db("insert tasks", e))?;
            let sql = format!(
                "INSERT INTO task_specs (id, spec) VALUES {}",
                tuples(chunk.len(), 2)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for p in chunk {
                q = q.bind(p.id.as_str()).bind(p.spec.as_str());
            }
            q.execute(self.conn())
                .await
                .map_err(|e| db("insert task specs", e))?;
        }
        for PreparedTask { task: t, spec, .. } in fresh {
            self.append(&t.owner.tenant, t.id, 1, &queued)?;
            self.fx.specs.push((t.id, t.spec, spec.len()));
        }
        self.fx.new_work = true;
        Ok(out)
    }

    /// The queue of tasks like this one, created if new.
    async fn queue_id(&mut self, owner: &Owner, spec: &TaskSpec) -> Result<i64> {
        let key = QueueKey {
            tenant: owner.tenant.clone(),
            principal: owner.principal.clone(),
            agent: spec.agent.clone(),
            labels: to_json!(&spec.labels, "labels")?,
        };
        if let Some(&id) = self.new_queues.get(&key) {
            return Ok(id);
        }
        if let Some(&id) = self.shared.queues.lock().by_key.get(&key) {
            return Ok(id);
        }
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM queues WHERE tenant = ? AND principal = ? AND agent = ? AND labels = ?",
        )
        .bind(key.tenant.as_str())
        .bind(key.principal.as_str())
        .bind(key.agent.as_str())
        .bind(key.labels.as_str())
        .fetch_optional(self.conn())
        .await
        .map_err(|e| db("look up a queue", e))?;
        let id = match found {
            Some(id) => id,
            None => sqlx::query_scalar(
                "INSERT INTO queues (tenant, principal, agent, labels) VALUES (?, ?, ?, ?) RETURNING id",
            )
            .bind(key.tenant.as_str())
            .bind(key.principal.as_str())
            .bind(key.agent.as_str())
            .bind(key.labels.as_str())
            .fetch_one(self.conn())
            .await
            .map_err(|e| db("create a queue", e))?,
        };
        self.new_queues.insert(key.clone(), id);
        self.fx.queues.push((key, id));
        Ok(id)
    }

    // ----- apply -----------------------------------------------------------------------

    pub(super) async fn apply(&mut self, commands: Vec<Command>) -> Result<Vec<Result<Ack>>> {
        let ids: Vec<TaskId> = commands.iter().map(|c| c.task).collect();
        self.load(&ids).await?;
        let mut out = Vec::with_capacity(commands.len());
        for c in commands {
            if let Some(node) = presenter(&c.op) {
                self.touch(node);
            }
            out.push(self.transition(c.task, c.op));
        }
        Ok(out)
    }

    // ----- claim -----------------------------------------------------------------------

    async fn node(&mut self, id: NodeId) -> Result<Option<Node>> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(self.conn())
            .await
            .map_err(|e| db("read a node", e))?;
        row.as_ref().map(node).transpose()
    }

    /// Reads the queues created since the last look (by any process).
    async fn refresh_queues(&mut self) -> Result<()> {
        let after = self.shared.queues.lock().loaded_up_to;
        let rows = sqlx::query(
            "SELECT id, tenant, principal, agent, labels FROM queues WHERE id > ? ORDER BY id",
        )
        .bind(after)
        .fetch_all(self.conn())
        .await
        .map_err(|e| db("read queues", e))?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut infos = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = col(&row, 0)?;
            let tenant: String = col(&row, 1)?;
            let principal: String = col(&row, 2)?;
            let agent: String = col(&row, 3)?;
            let labels_json: String = col(&row, 4)?;
            let labels: BTreeMap<String, String> = from_json!(&labels_json, "queue labels")?;
            infos.push((
                QueueKey {
                    tenant: tenant.as_str().into(),
                    principal: principal.as_str().into(),
                    agent: AgentRef::new(&agent),
                    labels: labels_json,
                },
                QueueInfo {
                    id,
                    owner: Owner {
                        tenant: tenant.as_str().into(),
                        principal: principal.as_str().into(),
                    },
                    agent: AgentRef::new(&agent),
                    labels,
                },
            ));
        }
        let mut cache = self.shared.queues.lock();
        for (key, info) in infos {
            if info.id > cache.loaded_up_to {
                cache.loaded_up_to = info.id;
                cache.by_key.insert(key, info.id);
                cache.list.push(info);
            }
        }
        Ok(())
    }

    pub(super) async fn claim(&mut self, req: &ClaimRequest<'_>) -> Result<Vec<ClaimedTask>> {
        let node = self
            .node(req.node)
            .await?
            .ok_or_else(|| not_found("node", req.node))?;
        self.touch(node.id);
        if node.status != NodeStatus::Ready {
            return Ok(Vec::new());
        }
        let max = req.max.min(node.free()) as usize;
        if max == 0 {
            return Ok(Vec::new());
        }
        // Eligibility (owner, shares, labels, agents) per queue, inside the
        // transaction that leases.
        self.refresh_queues().await?;
        let eligible: Vec<(i64, TenantId)> = {
            let cache = self.shared.queues.lock();
            cache
                .list
                .iter()
                .filter(|q| {
                    (req.agents.is_empty() || req.agents.contains(&q.agent))
                        && owner_eligible(&node.spec.owner, &node.spec.shared_with, &q.owner)
                        && labels_eligible(&node.spec.labels, &q.labels)
                })
                .map(|q| (q.id, q.owner.tenant.clone()))
                .collect()
        };
        if eligible.is_empty() {
            return Ok(Vec::new());
        }
        // The heads of every eligible queue, up to `max` each, so that one
        // tenant's burst cannot hide another tenant's tasks from the scheduler.
        let tenants: FxHashMap<i64, TenantId> = eligible.iter().cloned().collect();
        let node_text = node.id.to_string();
        let mut candidates = Vec::new();
        for chunk in eligible.chunks(64) {
            let one = "SELECT * FROM (SELECT id, queue, priority, ord FROM tasks \
                       WHERE state = 0 AND queue = ? AND available_at <= ? \
                       AND (avoid_node IS NULL OR avoid_node <> ?) \
                       ORDER BY priority DESC, ord LIMIT ?)";
            let sql = vec![one; chunk.len()].join(" UNION ALL ");
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (queue, _) in chunk {
                q = q
                    .bind(*queue)
                    .bind(self.now.as_millis())
                    .bind(node_text.as_str())
                    .bind(max as i64);
            }
            let rows = q
                .fetch_all(self.conn())
                .await
                .map_err(|e| db("find claimable tasks", e))?;
            for row in rows {
                let id: String = col(&row, 0)?;
                let queue: i64 = col(&row, 1)?;
                let priority: i64 = col(&row, 2)?;
                let ord: i64 = col(&row, 3)?;
                let tenant = tenants
                    .get(&queue)
                    .cloned()
                    .ok_or_else(|| super::codec::corrupt(format!("unknown queue {queue}")))?;
                candidates.push(Candidate {
                    task: task_id(&id)?,
                    tenant,
                    priority: i32::try_from(priority)
                        .map_err(|_| super::codec::corrupt(format!("priority {priority}")))?,
                    order: uint(ord, "order")?,
                });
            }
        }
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let picked = req.scheduler.select(&node, &candidates, max);
        let mut taken = vec![false; candidates.len()];
        let mut ids = Vec::with_capacity(picked.len().min(max));
        for i in picked {
            if i < candidates.len() && !taken[i] && ids.len() < max {
                taken[i] = true;
                ids.push(candidates[i].task);
            }
        }
        self.load(&ids).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let lease = LeaseId::new();
            let mut ack = match self.transition(
                id,
                Op::Schedule {
                    node: node.id,
                    lease,
                },
            ) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(task = %id, error = %e, "a claimable task could not be scheduled");
                    continue;
                }
            };
            let Some(attempt) = self.tasks.get(&id).map(|t| t.core.attempt) else {
                continue;
            };
            let token = LeaseToken {
                task: id,
                attempt,
                lease,
            };
            if req.start {
                match self.transition(
                    id,
                    Op::Start {
                        token,
                        node: node.id,
                    },
                ) {
                    Ok(a) => ack = a,
                    Err(e) => {
                        tracing::error!(task = %id, error = %e, "a claimed task could not be started")
                    }
                }
            }
            let Some(t) = self.tasks.get(&id) else {
                continue;
            };
            out.push(ClaimedTask {
                token,
                owner: Owner {
                    tenant: t.tenant.clone(),
                    principal: t.principal.clone(),
                },
                spec: t.spec.clone(),
                started: ack.state == TaskState::Running,
                last_seq: ack.seq,
            });
        }
        Ok(out)
    }

    // ----- nodes and the supervisor ---------------------------------------------------

    /// Ends every lease of `node` as placement lost; returns how many.
    async fn reclaim(&mut self, node: NodeId) -> Result<usize> {
        self.flush().await?;
        // Every lease has a deadline: the deadline index holds them all.
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tasks INDEXED BY tasks_deadlines \
             WHERE deadline_at IS NOT NULL AND lease_node = ?",
        )
        .bind(node.to_string())
        .fetch_all(self.conn())
        .await
        .map_err(|e| db("find a node's leases", e))?;
        let ids = ids.iter().map(|s| task_id(s)).collect::<Result<Vec<_>>>()?;
        self.load(&ids).await?;
        let mut count = 0;
        for id in ids {
            match self.transition(id, Op::LosePlacement { node }) {
                Ok(_) => count += 1,
                Err(e) => tracing::error!(task = %id, error = %e, "reclaiming a lease failed"),
            }
        }
        Ok(count)
    }

    pub(super) async fn register_node(&mut self, n: &Node) -> Result<()> {
        let sql = format!("INSERT INTO nodes ({NODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)");
        let res = sqlx::query(AssertSqlSafe(sql))
            .bind(n.id.to_string())
            .bind(to_json!(&n.spec, "node spec")?)
            .bind(node_status_code(n.status))
            .bind(i64::from(n.in_flight))
            .bind(n.registered_at.as_millis())
            .bind(n.last_seen.as_millis())
            .execute(self.conn())
            .await;
        match res {
            Ok(_) => {
                self.fx.new_work = true;
                Ok(())
            }
            Err(sqlx::Error::Database(d))
                if d.kind() == sqlx::error::ErrorKind::UniqueViolation =>
            {
                Err(Error::Conflict {
                    message: format!("node {} already exists", n.id),
                })
            }
            Err(e) => Err(db("register a node", e)),
        }
    }

    pub(super) async fn touch_node(&mut self, id: NodeId) -> Result<Node> {
        let sql = format!(
            "UPDATE nodes SET last_seen = max(last_seen, ?), \
             status = CASE WHEN status = 2 THEN 0 ELSE status END \
             WHERE id = ? RETURNING {NODE_COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(self.now.as_millis())
            .bind(id.to_string())
            .fetch_optional(self.conn())
            .await
            .map_err(|e| db("touch a node", e))?;
        row.as_ref()
            .map(node)
            .transpose()?
            .ok_or_else(|| not_found("node", id))
    }

    pub(super) async fn set_node_status(&mut self, id: NodeId, status: NodeStatus) -> Result<Node> {
        let done =
            sqlx::query("UPDATE nodes SET status = ?, last_seen = max(last_seen, ?) WHERE id = ?")
                .bind(node_status_code(status))
                .bind(self.now.as_millis())
                .bind(id.to_string())
                .execute(self.conn())
                .await
                .map_err(|e| db("set a node's status", e))?;
        if done.rows_affected() == 0 {
            return Err(not_found("node", id));
        }
        match status {
            NodeStatus::Lost => {
                self.reclaim(id).await?;
                self.flush().await?;
            }
            NodeStatus::Ready => self.fx.new_work = true,
            NodeStatus::Draining => {}
        }
        self.node(id).await?.ok_or_else(|| not_found("node", id))
    }

    pub(super) async fn remove_node(&mut self, id: NodeId) -> Result<()> {
        if self.node(id).await?.is_none() {
            return Err(not_found("node", id));
        }
        self.reclaim(id).await?;
        self.flush().await?;
        sqlx::query("DELETE FROM nodes WHERE id = ?")
            .bind(id.to_string())
            .execute(self.conn())
            .await
            .map_err(|e| db("remove a node", e))?;
        Ok(())
    }

    pub(super) async fn sweep(&mut self, options: &SweepOptions) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let threshold = self
            .now
            .as_millis()
            .saturating_sub(ms(options.node_lost_after));
        let lost: Vec<String> =
            sqlx::query_scalar("SELECT id FROM nodes WHERE status <> 2 AND last_seen < ?")
                .bind(threshold)
                .fetch_all(self.conn())
                .await
                .map_err(|e| db("find lost nodes", e))?;
        for id in lost {
            let id = super::codec::node_id(&id)?;
            sqlx::query("UPDATE nodes SET status = 2 WHERE id = ?")
                .bind(id.to_string())
                .execute(self.conn())
                .await
                .map_err(|e| db("mark a node lost", e))?;
            tracing::info!(node = %id, "node lost");
            report.nodes_lost += 1;
            report.placements_lost += self.reclaim(id).await?;
        }
        self.flush().await?;
        let limit = i64::try_from(options.limit).unwrap_or(i64::MAX - 1);
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE deadline_at <= ? ORDER BY deadline_at LIMIT ?",
        )
        .bind(self.now.as_millis())
        .bind(limit + 1)
        .fetch_all(self.conn())
        .await
        .map_err(|e| db("find due deadlines", e))?;
        let mut due = due.iter().map(|s| task_id(s)).collect::<Result<Vec<_>>>()?;
        if due.len() > options.limit {
            report.more = true;
            due.truncate(options.limit);
        }
        self.load(&due).await?;
        for id in due {
            let Some(t) = self.tasks.get(&id) else {
                continue;
            };
            let facts = TaskFacts {
                id,
                created_at: t.created_at,
                spec: &t.spec,
            };
            let Some((at, phase)) = machine::deadline(&t.core, facts) else {
                continue;
            };
            if at > self.now {
                continue;
            }
            match self.transition(id, Op::Expire { phase }) {
                Ok(_) => report.expired += 1,
                Err(e) => tracing::error!(task = %id, error = %e, "expiring a deadline failed"),
            }
        }
        Ok(report)
    }

    // ----- terminal-event consumers --------------------------------------------------

    pub(super) async fn ack_terminal(
        &mut self,
        tenant: &TenantId,
        consumer: &str,
        tasks: &[TaskId],
    ) -> Result<()> {
        let floor: i64 =
            sqlx::query_scalar("SELECT floor FROM consumers WHERE tenant = ? AND name = ?")
                .bind(tenant.as_str())
                .bind(consumer)
                .fetch_optional(self.conn())
                .await
                .map_err(|e| db("read a consumer", e))?
                .unwrap_or(0);
        for chunk in tasks.chunks(CHUNK) {
            let sql = format!(
                "INSERT OR IGNORE INTO consumer_acks (tenant, name, cursor) \
                 SELECT ?, ?, cursor FROM events INDEXED BY events_by_task \
                 WHERE task IN {} AND terminal = 1 AND tenant = ? AND cursor > ?",
                tuple(chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql))
                .bind(tenant.as_str())
                .bind(consumer);
            for id in chunk {
                q = q.bind(id.to_string());
            }
            q.bind(tenant.as_str())
                .bind(floor)
                .execute(self.conn())
                .await
                .map_err(|e| db("acknowledge terminal events", e))?;
        }
        // Move the floor up to just below the oldest unacknowledged terminal event.
        let unacked: Option<i64> = sqlx::query_scalar(
            "SELECT min(e.cursor) FROM events e INDEXED BY events_terminal \
             WHERE e.tenant = ?1 AND e.terminal = 1 AND e.cursor > ?3 \
             AND NOT EXISTS (SELECT 1 FROM consumer_acks a \
                             WHERE a.tenant = ?1 AND a.name = ?2 AND a.cursor = e.cursor)",
        )
        .bind(tenant.as_str())
        .bind(consumer)
        .bind(floor)
        .fetch_one(self.conn())
        .await
        .map_err(|e| db("find unacknowledged terminal events", e))?;
        let new_floor = match unacked {
            Some(c) => c - 1,
            None => sqlx::query_scalar(
                "SELECT coalesce(max(cursor), 0) FROM events INDEXED BY events_terminal \
                 WHERE tenant = ? AND terminal = 1",
            )
            .bind(tenant.as_str())
            .fetch_one(self.conn())
            .await
            .map_err(|e| db("read the last terminal event", e))?,
        };
        if new_floor > floor {
            sqlx::query(
                "INSERT INTO consumers (tenant, name, floor) VALUES (?, ?, ?) \
                 ON CONFLICT (tenant, name) DO UPDATE SET floor = excluded.floor",
            )
            .bind(tenant.as_str())
            .bind(consumer)
            .bind(new_floor)
            .execute(self.conn())
            .await
            .map_err(|e| db("move a consumer's floor", e))?;
            sqlx::query("DELETE FROM consumer_acks WHERE tenant = ? AND name = ? AND cursor <= ?")
                .bind(tenant.as_str())
                .bind(consumer)
                .bind(new_floor)
                .execute(self.conn())
                .await
                .map_err(|e| db("prune acknowledgements", e))?;
        }
        Ok(())
    }
}
