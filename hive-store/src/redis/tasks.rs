//! Tasks: submit, reads, events and feeds, and the compare-and-set commit of
//! transitions decided by the state machine.

use std::sync::Arc;
use std::time::Duration;

use hive_core::clock::Timestamp;
use hive_core::id::{LeaseId, NodeId, TaskId};
use hive_core::principal::{PrincipalId, TenantId};
use hive_core::store::{Ack, Command, NewTask, Submitted};
use hive_core::task::machine::{self, Op, Outcome, TaskCore, TaskFacts};
use hive_core::task::{
    EventKind, FeedEvent, Owner, Page, Task, TaskEvent, TaskQuery, TaskSpec, TaskState,
};
use hive_core::{Error, Result};
use redis::Value;
use rustc_hash::FxHashMap;

use super::decode::{
    array, bad_json, corrupt, from_json, int_of, opt_int, opt_str, parse, str_of, time_of, to_json,
    u64_of,
};
use super::keys::esc;
use super::{RedisStore, driver};

/// Records per script call: bounds how long one call holds the server.
const CHUNK: usize = 2000;
/// Compare-and-set rounds before a contended batch item gives up.
pub(super) const MAX_ROUNDS: usize = 64;
/// The most events one feed read returns.
const MAX_FEED_READ: usize = 100_000;

/// The spec as stored next to the input: everything but the input, which is a
/// field of its own so that transitions never read it. The state machine does
/// not look at the input.
fn spec_without_input(s: &TaskSpec) -> TaskSpec {
    TaskSpec {
        agent: s.agent.clone(),
        input: serde_json::Value::Null,
        labels: s.labels.clone(),
        priority: s.priority,
        timeouts: s.timeouts.clone(),
        retry: s.retry.clone(),
        idempotency_key: s.idempotency_key.clone(),
    }
}

/// Whether two specs are equal but for their input.
fn same_shape(a: &TaskSpec, b: &TaskSpec) -> bool {
    a.agent == b.agent
        && a.labels == b.labels
        && a.priority == b.priority
        && a.timeouts == b.timeouts
        && a.retry == b.retry
        && a.idempotency_key == b.idempotency_key
}

/// What submit stores for every task of one shape (owner and spec but input).
struct Shape {
    et: String,
    queue: String,
    meta: String,
    spec: String,
    deadline: String,
}

impl Shape {
    fn of(t: &NewTask, core: &TaskCore, now: Timestamp) -> Result<Shape> {
        let facts = TaskFacts {
            id: t.id,
            created_at: now,
            spec: &t.spec,
        };
        let meta = serde_json::json!({
            "tenant": t.owner.tenant.as_str(),
            "principal": t.owner.principal.as_str(),
            "agent": t.spec.agent.as_str(),
            "labels": &t.spec.labels,
        });
        Ok(Shape {
            et: esc(t.owner.tenant.as_str()),
            queue: queue_id(&t.owner, &t.spec),
            meta: to_json!(&meta)?,
            spec: to_json!(&spec_without_input(&t.spec))?,
            deadline: machine::deadline(core, facts)
                .map(|(at, _)| at.as_millis().to_string())
                .unwrap_or_default(),
        })
    }
}

/// A stable id for everything eligibility depends on (owner, agent, labels):
/// tasks that share it share a ready queue. FNV-1a, 128 bits, over
/// length-prefixed parts.
fn queue_id(owner: &Owner, spec: &TaskSpec) -> String {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    let mut feed = |bytes: &[u8]| {
        for chunk in [&(bytes.len() as u64).to_le_bytes()[..], bytes] {
            for &x in chunk {
                a = (a ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
                b = (b ^ u64::from(x))
                    .wrapping_mul(0x0000_0100_0000_01b3)
                    .rotate_left(7);
            }
        }
    };
    feed(owner.tenant.as_str().as_bytes());
    feed(owner.principal.as_str().as_bytes());
    feed(spec.agent.as_str().as_bytes());
    for (k, v) in &spec.labels {
        feed(k.as_bytes());
        feed(v.as_bytes());
    }
    format!("{a:016x}{b:016x}")
}

/// A task as read for a transition (no input).
#[derive(Clone)]
pub(super) struct Loaded {
    pub(super) et: String,
    pub(super) created: Timestamp,
    pub(super) spec: Arc<TaskSpec>,
    pub(super) core: TaskCore,
}

/// The cores this store committed last, per task: the next transition of a
/// task (a worker's report after its claim) starts from here instead of a
/// read. Safe because every commit is a compare-and-set on `seq`: a stale entry
/// only costs a miss and a fresh read. Answers that append nothing (errors,
/// duplicates) are never given from the cache.
#[derive(Default)]
pub(super) struct CoreCache(parking_lot::Mutex<FxHashMap<TaskId, Loaded>>);

impl CoreCache {
    const CAPACITY: usize = 65_536;

    pub(super) fn get(&self, id: TaskId) -> Option<Loaded> {
        self.0.lock().get(&id).cloned()
    }

    pub(super) fn put(&self, id: TaskId, task: Loaded) {
        let mut map = self.0.lock();
        if task.core.state.is_terminal() {
            map.remove(&id);
            return;
        }
        if map.len() >= Self::CAPACITY {
            map.clear();
        }
        map.insert(id, task);
    }

    pub(super) fn forget(&self, id: TaskId) {
        self.0.lock().remove(&id);
    }
}

impl Loaded {
    pub(super) fn facts(&self, id: TaskId) -> TaskFacts<'_> {
        TaskFacts {
            id,
            created_at: self.created,
            spec: &self.spec,
        }
    }
}

const LOAD_FIELDS: [&str; 4] = ["ten", "created", "spec", "core"];

fn loaded(vals: &[Value]) -> Result<Option<Loaded>> {
    let [ten, created, spec, core] = vals else {
        return Err(corrupt("a task read of the wrong length"));
    };
    let Some(tenant) = opt_str(ten)? else {
        return Ok(None);
    };
    Ok(Some(Loaded {
        et: esc(tenant),
        created: time_of(created, "task created_at")?,
        spec: Arc::new(from_json!(spec, "task spec")?),
        core: from_json!(core, "task core")?,
    }))
}

const SNAPSHOT_FIELDS: [&str; 6] = ["ten", "pri", "created", "spec", "input", "core"];

fn snapshot(id: TaskId, vals: &[Value]) -> Result<Option<Task>> {
    let [ten, pri, created, spec, input, core] = vals else {
        return Err(corrupt("a task read of the wrong length"));
    };
    let Some(tenant) = opt_str(ten)? else {
        return Ok(None);
    };
    let mut spec: TaskSpec = from_json!(spec, "task spec")?;
    spec.input = from_json!(input, "task input")?;
    let core: TaskCore = from_json!(core, "task core")?;
    Ok(Some(Task {
        id,
        owner: Owner {
            tenant: TenantId::new(tenant),
            principal: PrincipalId::new(str_of(pri, "task principal")?),
        },
        spec: Arc::new(spec),
        state: core.state,
        attempt: core.attempt,
        node: core.node,
        last_seq: core.last_seq,
        created_at: time_of(created, "task created_at")?,
        updated_at: core.updated_at,
        available_at: core.available_at,
        output: core.output,
        error: core.error,
    }))
}

/// What happens to a task's queue entry in a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QueueMove {
    None,
    Leave,
    Ready,
    Delayed(Timestamp),
}

/// One task's compare-and-set commit: the new core, its events and the index
/// changes, all derived from the core that was read (at `expected`).
pub(super) struct Change {
    pub(super) id: TaskId,
    et: String,
    expected: u64,
    core: TaskCore,
    pub(super) events: Vec<(u64, String, bool)>,
    queue: QueueMove,
    pub(super) deadline: Option<Option<Timestamp>>,
    avoid_changed: bool,
    old_lease_node: Option<NodeId>,
    new_lease: Option<(NodeId, LeaseId)>,
}

impl Change {
    /// The bookkeeping for moving `task` from `old` to its current core.
    pub(super) fn new(
        id: TaskId,
        task: &Loaded,
        old: &TaskCore,
        events: Vec<(u64, String, bool)>,
        now: Timestamp,
    ) -> Change {
        let new = &task.core;
        let facts = task.facts(id);
        let pending = TaskState::Pending;
        let queue = if old.state == pending && new.state != pending {
            QueueMove::Leave
        } else if old.state != pending && new.state == pending {
            if new.available_at <= now {
                QueueMove::Ready
            } else {
                QueueMove::Delayed(new.available_at)
            }
        } else {
            QueueMove::None
        };
        let before = machine::deadline(old, facts).map(|d| d.0);
        let after = machine::deadline(new, facts).map(|d| d.0);
        let lease = |c: &TaskCore| c.lease.as_ref().map(|l| (l.node, l.id));
        let (old_lease, new_lease) = (lease(old), lease(new));
        let moved = old_lease != new_lease;
        Change {
            id,
            et: task.et.clone(),
            expected: old.last_seq,
            core: new.clone(),
            events,
            queue,
            deadline: (before != after).then_some(after),
            avoid_changed: old.avoid_node != new.avoid_node,
            old_lease_node: if moved { old_lease.map(|l| l.0) } else { None },
            new_lease: if moved { new_lease } else { None },
        }
    }

    pub(super) fn push(&self, inv: &mut redis::ScriptInvocation<'_>, now: Timestamp) -> Result<()> {
        let (qa, qarg) = match self.queue {
            QueueMove::None => ("n", String::new()),
            QueueMove::Leave => ("x", String::new()),
            QueueMove::Ready => ("r", String::new()),
            QueueMove::Delayed(at) => ("d", at.as_millis().to_string()),
        };
        let deadline = match self.deadline {
            None => "-".to_owned(),
            Some(None) => String::new(),
            Some(Some(at)) => at.as_millis().to_string(),
        };
        let opt = |n: Option<NodeId>| n.map(|n| n.to_string()).unwrap_or_default();
        let id = self.id.to_string();
        let at = now.as_millis();
        inv.arg(&id)
            .arg(self.expected)
            .arg(&self.et)
            .arg(self.core.last_seq)
            .arg(self.core.state.as_str())
            .arg(to_json!(&self.core)?)
            .arg(if self.avoid_changed {
                opt(self.core.avoid_node)
            } else {
                "-".to_owned()
            })
            .arg(qa)
            .arg(qarg)
            .arg(deadline)
            .arg(opt(self.old_lease_node))
            .arg(opt(self.new_lease.map(|l| l.0)))
            .arg(self.new_lease.map(|l| l.1.to_string()).unwrap_or_default())
            .arg(self.events.len());
        for (seq, kind, terminal) in &self.events {
            inv.arg(format!("e{seq}"))
                .arg(format!("{at} {kind}"))
                .arg(format!("{id} {seq} {at} {kind}"))
                .arg(if *terminal { "1" } else { "0" });
        }
        Ok(())
    }
}

/// Runs one op on a loaded task; returns the answer and, when something was
/// appended, the event to store.
pub(super) fn decide(
    id: TaskId,
    task: &mut Loaded,
    op: Op,
    now: Timestamp,
) -> (Result<Ack>, Option<(u64, String, bool)>) {
    let facts = TaskFacts {
        id,
        created_at: task.created,
        spec: &task.spec,
    };
    match machine::apply(&mut task.core, facts, op, now) {
        Ok(Outcome::Appended(kind)) => {
            let ack = Ack {
                seq: task.core.last_seq,
                state: task.core.state,
            };
            match to_json!(&kind) {
                Ok(json) => (Ok(ack), Some((ack.seq, json, kind.is_terminal()))),
                Err(e) => (Err(e), None),
            }
        }
        Ok(Outcome::Duplicate { seq, state }) => (Ok(Ack { seq, state }), None),
        Err(e) => (Err(e), None),
    }
}

fn presenting_node(op: &Op) -> Option<NodeId> {
    match op {
        Op::Start { node, .. }
        | Op::Heartbeat { node, .. }
        | Op::Log { node, .. }
        | Op::Succeed { node, .. }
        | Op::Fail { node, .. } => Some(*node),
        _ => None,
    }
}

pub(super) fn not_found(kind: &'static str, id: impl ToString) -> Error {
    Error::NotFound {
        kind,
        id: id.to_string(),
    }
}

fn contended(task: TaskId) -> Error {
    Error::BackendUnavailable {
        message: format!(
            "redis: task {task} changed {MAX_ROUNDS} times while being updated; retry"
        ),
        source: None,
    }
}

/// A feed entry as stored: `{task} {seq} {at} {kind JSON}`.
fn feed_event(tenant: &TenantId, cursor: u64, packed: &Value) -> Result<FeedEvent> {
    let packed = str_of(packed, "feed entry")?;
    let mut parts = packed.splitn(4, ' ');
    let (Some(task), Some(seq), Some(at), Some(kind)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(corrupt("a feed entry of the wrong shape"));
    };
    Ok(FeedEvent {
        cursor,
        event: TaskEvent {
            task: parse(task, "task id")?,
            tenant: tenant.clone(),
            seq: parse(seq, "feed seq")?,
            at: Timestamp::from_millis(parse(at, "event time")?),
            kind: serde_json::from_str(kind).map_err(|e| bad_json("event kind", e))?,
        },
    })
}

impl RedisStore {
    // ----- reads --------------------------------------------------------------

    pub(super) async fn load(&self, ids: &[TaskId]) -> Result<Vec<Option<Loaded>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.keys.task(*id))
                .arg(&LOAD_FIELDS[..]);
        }
        let rows: Vec<Value> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(driver("reading tasks"))?;
        if rows.len() != ids.len() {
            return Err(corrupt("a pipeline answered the wrong number of replies"));
        }
        rows.iter().map(|r| loaded(array(r)?)).collect()
    }

    pub(super) async fn snapshots(&self, ids: &[TaskId]) -> Result<Vec<Option<Task>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.keys.task(*id))
                .arg(&SNAPSHOT_FIELDS[..]);
        }
        let rows: Vec<Value> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(driver("reading tasks"))?;
        if rows.len() != ids.len() {
            return Err(corrupt("a pipeline answered the wrong number of replies"));
        }
        ids.iter()
            .zip(&rows)
            .map(|(id, r)| snapshot(*id, array(r)?))
            .collect()
    }

    pub(super) async fn list(&self, tenant: &TenantId, query: &TaskQuery) -> Result<Page<Task>> {
        let limit = query.effective_limit();
        let key = self.keys.tenant_tasks(&esc(tenant.as_str()));
        let mut start = match query.after {
            Some(after) => format!("({after}"),
            None => "-".to_owned(),
        };
        let mut items = Vec::new();
        let page = limit.max(100);
        'scan: loop {
            let ids: Vec<String> = redis::cmd("ZRANGEBYLEX")
                .arg(&key)
                .arg(&start)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(page)
                .query_async(&mut self.conn())
                .await
                .map_err(driver("listing tasks"))?;
            let Some(last) = ids.last() else { break };
            start = format!("({last}");
            let ids: Vec<TaskId> = ids
                .iter()
                .map(|s| parse(s, "task id"))
                .collect::<Result<_>>()?;
            for task in self.snapshots(&ids).await?.into_iter().flatten() {
                if query.matches(&task) {
                    items.push(task);
                    if items.len() == limit {
                        break 'scan;
                    }
                }
            }
            if ids.len() < page {
                break;
            }
        }
        let next = if items.len() == limit {
            items.last().map(|t| t.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    pub(super) async fn events(
        &self,
        task: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TaskEvent>> {
        let mut inv = self.scripts.read_events.prepare_invoke();
        inv.arg(&self.keys.prefix)
            .arg(0)
            .arg(task.to_string())
            .arg(after)
            .arg(limit.min(MAX_FEED_READ));
        let reply: Value = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver("reading events"))?;
        let rows = array(&reply)?;
        let Some((tenant, events)) = rows.split_first() else {
            return Err(not_found("task", task));
        };
        let tenant = TenantId::new(str_of(tenant, "task tenant")?);
        events
            .iter()
            .zip(after.saturating_add(1)..)
            .map(|(e, seq)| {
                let e = str_of(e, "task event")?;
                let (at, kind) = e
                    .split_once(' ')
                    .ok_or_else(|| corrupt("a task event of the wrong shape"))?;
                Ok(TaskEvent {
                    task,
                    tenant: tenant.clone(),
                    seq,
                    at: Timestamp::from_millis(parse(at, "event time")?),
                    kind: serde_json::from_str(kind).map_err(|e| bad_json("event kind", e))?,
                })
            })
            .collect()
    }

    pub(super) async fn wait_events(
        &self,
        task: TaskId,
        after: u64,
        timeout: Duration,
    ) -> Result<()> {
        let waiter = self.notifier.task_waiter(task.to_string()).await;
        let notified = waiter.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let seq: Value = redis::cmd("HGET")
            .arg(self.keys.task(task))
            .arg("seq")
            .query_async(&mut self.conn())
            .await
            .map_err(driver("reading a task"))?;
        match opt_int(&seq)? {
            None => return Err(not_found("task", task)),
            Some(s) if s > after as i64 => return Ok(()),
            Some(_) => {}
        }
        let _ = tokio::time::timeout(timeout, notified).await;
        Ok(())
    }

    pub(super) async fn feed(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let first = isize::try_from(after).unwrap_or(isize::MAX);
        let last = first.saturating_add(limit.min(MAX_FEED_READ) as isize - 1);
        let entries: Value = redis::cmd("LRANGE")
            .arg(self.keys.feed(&esc(tenant.as_str())))
            .arg(first)
            .arg(last)
            .query_async(&mut self.conn())
            .await
            .map_err(driver("reading a feed"))?;
        array(&entries)?
            .iter()
            .zip(after.saturating_add(1)..)
            .map(|(packed, cursor)| feed_event(tenant, cursor, packed))
            .collect()
    }

    pub(super) async fn wait_feed(
        &self,
        tenant: &TenantId,
        after: u64,
        timeout: Duration,
    ) -> Result<()> {
        let et = esc(tenant.as_str());
        let waiter = self
            .notifier
            .channel_waiter(self.keys.channel_feed(&et))
            .await;
        let notified = waiter.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let head: Value = redis::cmd("LLEN")
            .arg(self.keys.feed(&et))
            .query_async(&mut self.conn())
            .await
            .map_err(driver("reading a feed"))?;
        if opt_int(&head)?.unwrap_or(0) > after as i64 {
            return Ok(());
        }
        let _ = tokio::time::timeout(timeout, notified).await;
        Ok(())
    }

    pub(super) async fn ack(
        &self,
        tenant: &TenantId,
        consumer: &str,
        tasks: &[TaskId],
    ) -> Result<()> {
        let mut inv = self.scripts.ack_terminal.prepare_invoke();
        inv.arg(&self.keys.prefix)
            .arg(0)
            .arg(esc(tenant.as_str()))
            .arg(tenant.as_str())
            .arg(esc(consumer))
            .arg(consumer);
        for t in tasks {
            inv.arg(t.to_string());
        }
        let _: Value = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver("acknowledging terminal events"))?;
        Ok(())
    }

    pub(super) async fn unacked(
        &self,
        tenant: &TenantId,
        consumer: &str,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut inv = self.scripts.unacked_terminal.prepare_invoke();
        inv.arg(&self.keys.prefix)
            .arg(0)
            .arg(esc(tenant.as_str()))
            .arg(esc(consumer))
            .arg(consumer)
            .arg(limit.min(MAX_FEED_READ));
        let out: Value = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver("listing unacknowledged events"))?;
        array(&out)?
            .chunks(2)
            .map(|c| match c {
                [cursor, packed] => feed_event(tenant, u64_of(cursor, "cursor")?, packed),
                _ => Err(corrupt("an unacknowledged event of the wrong length")),
            })
            .collect()
    }

    // ----- submit -------------------------------------------------------------

    pub(super) async fn submit_tasks(
        &self,
        tasks: Vec<NewTask>,
        now: Timestamp,
    ) -> Result<Vec<Submitted>> {
        let queued = to_json!(&EventKind::Queued)?;
        let core = TaskCore::submitted(now);
        let core_json = to_json!(&core)?;
        let mut out = Vec::with_capacity(tasks.len());
        for chunk in tasks.chunks(CHUNK) {
            if chunk.iter().any(|t| t.spec.idempotency_key.is_some()) {
                self.submit_scripted(chunk, now, &queued, &core, &core_json, &mut out)
                    .await?;
            } else {
                self.submit_plain(chunk, now, &queued, &core, &core_json)
                    .await?;
                out.extend(chunk.iter().map(|t| Submitted {
                    id: t.id,
                    created: true,
                    last_seq: 1,
                }));
            }
        }
        if out.len() != tasks.len() {
            return Err(corrupt("submit answered the wrong number of tasks"));
        }
        Ok(out)
    }

    /// Submits tasks that carry idempotency keys: one script call decides, per
    /// key, whether the task already exists.
    async fn submit_scripted(
        &self,
        chunk: &[NewTask],
        now: Timestamp,
        queued: &str,
        core: &TaskCore,
        core_json: &str,
        out: &mut Vec<Submitted>,
    ) -> Result<()> {
        let mut inv = self.scripts.submit.prepare_invoke();
        inv.arg(&self.keys.prefix)
            .arg(now.as_millis())
            .arg(queued)
            .arg(chunk.len());
        // Tasks of a batch mostly share one shape: encode it once per run.
        let mut shape: Option<(&NewTask, Shape)> = None;
        for t in chunk {
            let same = shape
                .as_ref()
                .is_some_and(|(p, _)| p.owner == t.owner && same_shape(&p.spec, &t.spec));
            if !same {
                shape = Some((t, Shape::of(t, core, now)?));
            }
            let Some((_, sh)) = &shape else { continue };
            inv.arg(t.id.to_string())
                .arg(&sh.et)
                .arg(t.owner.tenant.as_str())
                .arg(t.owner.principal.as_str())
                .arg(t.spec.idempotency_key.as_deref().unwrap_or(""))
                .arg(&sh.queue)
                .arg(&sh.meta)
                .arg(t.spec.priority)
                .arg(&sh.spec)
                .arg(to_json!(&t.spec.input)?)
                .arg(core_json)
                .arg(&sh.deadline);
        }
        let reply: Value = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver("submitting tasks"))?;
        for row in array(&reply)?.chunks(3) {
            let [id, created, seq] = row else {
                return Err(corrupt("a submit answer of the wrong length"));
            };
            out.push(Submitted {
                id: parse(str_of(id, "task id")?, "task id")?,
                created: int_of(created, "created")? == 1,
                last_seq: u64_of(seq, "seq")?,
            });
        }
        Ok(())
    }

    /// Submits tasks without idempotency keys: nothing to decide, so one
    /// MULTI/EXEC transaction of plain commands stores them (no script: bulk
    /// writes cost the server far less as commands than inside Lua). The
    /// transaction is the atomic step: task records with their `Queued` events,
    /// ready queues and feed entries appear together, in commit order. Enqueue
    /// orders are taken first with one `INCRBY` (a range lost to a crash in
    /// between is only a gap in the order, which nothing reads as gapless).
    async fn submit_plain(
        &self,
        chunk: &[NewTask],
        now: Timestamp,
        queued: &str,
        core: &TaskCore,
        core_json: &str,
    ) -> Result<()> {
        let n = chunk.len() as u64;
        let last: u64 = redis::cmd("INCRBY")
            .arg(self.keys.order())
            .arg(n)
            .query_async(&mut self.conn())
            .await
            .map_err(driver("submitting tasks"))?;
        let first = last + 1 - n;
        let at = now.as_millis().to_string();
        let event = format!("{at} {queued}");
        let mut pipe = redis::pipe();
        pipe.atomic();
        // Per tenant: task ids and feed entries; per queue: members.
        let mut tenants: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
        let mut queues: Vec<(String, Vec<(i64, String)>)> = Vec::new();
        let mut metas: Vec<(String, String)> = Vec::new();
        let mut deadlines: Vec<(String, String)> = Vec::new();
        let mut shape: Option<(&NewTask, Shape)> = None;
        for (k, t) in chunk.iter().enumerate() {
            let same = shape
                .as_ref()
                .is_some_and(|(p, _)| p.owner == t.owner && same_shape(&p.spec, &t.spec));
            if !same {
                shape = Some((t, Shape::of(t, core, now)?));
            }
            let Some((_, sh)) = &shape else { continue };
            let id = t.id.to_string();
            let member = format!("{:016}{id}", first + k as u64);
            pipe.cmd("HSET")
                .arg(self.keys.task(t.id))
                .arg("ten")
                .arg(t.owner.tenant.as_str())
                .arg("pri")
                .arg(t.owner.principal.as_str())
                .arg("created")
                .arg(&at)
                .arg("spec")
                .arg(&sh.spec)
                .arg("input")
                .arg(to_json!(&t.spec.input)?)
                .arg("core")
                .arg(core_json)
                .arg("seq")
                .arg("1")
                .arg("state")
                .arg("pending")
                .arg("q")
                .arg(&sh.queue)
                .arg("prio")
                .arg(t.spec.priority)
                .arg("qm")
                .arg(&member)
                .arg("e1")
                .arg(&event)
                .ignore();
            let ti = match tenants.iter().position(|(et, _, _)| *et == sh.et) {
                Some(i) => i,
                None => {
                    tenants.push((sh.et.clone(), Vec::new(), Vec::new()));
                    tenants.len() - 1
                }
            };
            tenants[ti].2.push(format!("{id} 1 {at} {queued}"));
            tenants[ti].1.push(id.clone());
            let qi = match queues.iter().position(|(q, _)| *q == sh.queue) {
                Some(i) => i,
                None => {
                    queues.push((sh.queue.clone(), Vec::new()));
                    metas.push((sh.queue.clone(), sh.meta.clone()));
                    queues.len() - 1
                }
            };
            queues[qi].1.push((-i64::from(t.spec.priority), member));
            if !sh.deadline.is_empty() {
                deadlines.push((sh.deadline.clone(), id));
            }
        }
        for (et, ids, _) in &tenants {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(self.keys.tenant_tasks(et));
            for id in ids {
                cmd.arg(0).arg(id);
            }
            pipe.add_command(cmd).ignore();
        }
        for (q, meta) in &metas {
            pipe.cmd("HSETNX")
                .arg(self.keys.queue_meta())
                .arg(q)
                .arg(meta)
                .ignore();
        }
        for (q, members) in &queues {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(self.keys.queue(q));
            for (score, m) in members {
                cmd.arg(*score).arg(m);
            }
            pipe.add_command(cmd).ignore();
        }
        let mut ready = redis::cmd("SADD");
        ready.arg(self.keys.queues_ready());
        for (q, _) in &queues {
            ready.arg(q);
        }
        pipe.add_command(ready).ignore();
        if !deadlines.is_empty() {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(self.keys.deadlines());
            for (at, id) in &deadlines {
                cmd.arg(at).arg(id);
            }
            pipe.add_command(cmd).ignore();
        }
        for (et, _, entries) in &tenants {
            let mut cmd = redis::cmd("RPUSH");
            cmd.arg(self.keys.feed(et));
            for e in entries {
                cmd.arg(e);
            }
            pipe.add_command(cmd).ignore();
        }
        // The wake-ups need the new epoch and feed heads: a tiny script, sent
        // with its body (EVAL) so that it can never be missing inside EXEC.
        let mut wake = redis::cmd("EVAL");
        wake.arg(super::lua::WAKE).arg(0).arg(&self.keys.prefix);
        for (et, _, _) in &tenants {
            wake.arg(et);
        }
        pipe.add_command(wake).ignore();
        let _: Value = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(driver("submitting tasks"))?;
        Ok(())
    }

    // ----- transitions ----------------------------------------------------------

    /// Commits changes with one script call per chunk; answers one status per
    /// change (1 stored, 0 compare-and-set miss, -1 no such task).
    pub(super) async fn commit(
        &self,
        changes: &[Change],
        touch: &[NodeId],
        stale: &[(TaskId, &str)],
        now: Timestamp,
    ) -> Result<Vec<i64>> {
        let mut out = Vec::with_capacity(changes.len());
        let chunks: Vec<&[Change]> = if changes.is_empty() {
            vec![&[]]
        } else {
            changes.chunks(CHUNK).collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut inv = self.scripts.commit.prepare_invoke();
            inv.arg(&self.keys.prefix).arg(now.as_millis());
            let (touch, stale) = if i == 0 {
                (touch, stale)
            } else {
                (&[][..], &[][..])
            };
            inv.arg(touch.len());
            for n in touch {
                inv.arg(n.to_string());
            }
            inv.arg(chunk.len());
            for c in chunk {
                c.push(&mut inv, now)?;
            }
            inv.arg(stale.len());
            for (task, entry) in stale {
                inv.arg(task.to_string()).arg(*entry);
            }
            let reply: Value = inv
                .invoke_async(&mut self.conn())
                .await
                .map_err(driver("committing transitions"))?;
            for s in array(&reply)? {
                out.push(int_of(s, "commit status")?);
            }
        }
        if out.len() != changes.len() {
            return Err(corrupt("a commit answered the wrong number of statuses"));
        }
        Ok(out)
    }

    pub(super) async fn apply_commands(
        &self,
        commands: Vec<Command>,
        now: Timestamp,
    ) -> Result<Vec<Result<Ack>>> {
        let mut answers: Vec<Option<Result<Ack>>> = (0..commands.len()).map(|_| None).collect();
        let mut task_of = Vec::with_capacity(commands.len());
        let mut touch: Vec<NodeId> = Vec::new();
        // Each task's ops, in order: they are decided one after the other on the
        // same core and committed together.
        let mut index: FxHashMap<TaskId, usize> = FxHashMap::default();
        let mut groups: Vec<(TaskId, Vec<(usize, Op)>)> = Vec::new();
        for (i, c) in commands.into_iter().enumerate() {
            if let Some(node) = presenting_node(&c.op)
                && !touch.contains(&node)
            {
                touch.push(node);
            }
            task_of.push(c.task);
            let g = *index.entry(c.task).or_insert_with(|| {
                groups.push((c.task, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push((i, c.op));
        }
        let mut pending: Vec<usize> = (0..groups.len()).collect();
        for round in 0..MAX_ROUNDS {
            // The first round starts from cached cores where there are any.
            let mut tasks: Vec<Option<(Loaded, bool)>> = Vec::with_capacity(pending.len());
            let mut misses = Vec::new();
            for (k, &g) in pending.iter().enumerate() {
                match (round == 0).then(|| self.cache.get(groups[g].0)).flatten() {
                    Some(t) => tasks.push(Some((t, true))),
                    None => {
                        tasks.push(None);
                        misses.push(k);
                    }
                }
            }
            let ids: Vec<TaskId> = misses.iter().map(|&k| groups[pending[k]].0).collect();
            for (k, t) in misses.into_iter().zip(self.load(&ids).await?) {
                tasks[k] = t.map(|t| (t, false));
            }
            let mut changes = Vec::new();
            let mut staged = Vec::new();
            let mut again = Vec::new();
            for (&g, task) in pending.iter().zip(tasks) {
                let (id, ops) = &groups[g];
                let Some((mut task, cached)) = task else {
                    for (i, _) in ops {
                        answers[*i] = Some(Err(not_found("task", id)));
                    }
                    continue;
                };
                let old = task.core.clone();
                let mut events = Vec::new();
                let mut results = Vec::with_capacity(ops.len());
                for (i, op) in ops {
                    let (r, event) = decide(*id, &mut task, op.clone(), now);
                    results.push((*i, r));
                    events.extend(event);
                }
                if events.is_empty() && cached {
                    // Nothing to compare-and-set: decide again on a fresh read.
                    again.push(g);
                } else if events.is_empty() {
                    for (i, r) in results {
                        answers[i] = Some(r);
                    }
                } else {
                    changes.push(Change::new(*id, &task, &old, events, now));
                    staged.push((g, task, results));
                }
            }
            let touch_now: &[NodeId] = if round == 0 { &touch } else { &[] };
            let statuses = if changes.is_empty() && touch_now.is_empty() {
                Vec::new()
            } else {
                self.commit(&changes, touch_now, &[], now).await?
            };
            pending = again;
            for ((g, task, results), status) in staged.into_iter().zip(statuses) {
                let id = groups[g].0;
                match status {
                    1 => {
                        self.cache.put(id, task);
                        for (i, r) in results {
                            answers[i] = Some(r);
                        }
                    }
                    0 => {
                        self.cache.forget(id);
                        pending.push(g);
                    }
                    _ => {
                        self.cache.forget(id);
                        for (i, _) in results {
                            answers[i] = Some(Err(not_found("task", id)));
                        }
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
        }
        Ok(answers
            .into_iter()
            .zip(task_of)
            .map(|(a, task)| a.unwrap_or_else(|| Err(contended(task))))
            .collect())
    }
}
