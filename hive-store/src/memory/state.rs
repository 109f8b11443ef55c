//! The memory backend's state and its indices. Everything here runs under the
//! store's one lock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use hive_core::clock::Timestamp;
use hive_core::id::{LeaseId, NodeId, TaskId};
use hive_core::node::{Node, NodeStatus, labels_eligible, owner_eligible};
use hive_core::principal::{PrincipalId, TenantId};
use hive_core::scheduler::Candidate;
use hive_core::store::{
    Ack, ClaimRequest, ClaimedTask, Command, CompactReport, KeySlots, NewTask, Submitted,
    SweepOptions, SweepReport,
};
use hive_core::task::machine::{self, Op, Outcome, TaskCore, TaskFacts};
use hive_core::task::{
    AgentRef, EventKind, FeedEvent, LeaseToken, Owner, Page, Task, TaskEvent, TaskQuery, TaskSpec,
    TaskState,
};
use hive_core::{Error, Result};
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::oneshot;

use super::not_found;

/// Tasks that share a queue share everything eligibility depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct QueueKey {
    tenant: TenantId,
    principal: PrincipalId,
    agent: AgentRef,
    labels: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Queue {
    key: QueueKey,
    owner: Owner,
    ready: BTreeMap<(Reverse<i32>, u64), TaskId>,
}

/// Where a pending task waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// Not waiting (not pending).
    No,
    /// In a ready queue.
    Ready {
        queue: usize,
        priority: i32,
        order: u64,
    },
    /// In the backoff index until `at`.
    Delayed { queue: usize, at: Timestamp },
    /// Waiting for a slot of its concurrency key (in the key's gate); it
    /// will join `queue`.
    Key {
        queue: usize,
        priority: i32,
        order: u64,
    },
}

/// One concurrency key of one tenant: the tasks holding its slots and those
/// waiting for one, in the order they get one.
#[derive(Debug, Default)]
struct KeyGate {
    holding: BTreeSet<TaskId>,
    waiting: BTreeMap<(Reverse<i32>, u64), TaskId>,
}

#[derive(Debug)]
struct Record {
    owner: Owner,
    spec: Arc<TaskSpec>,
    created_at: Timestamp,
    core: TaskCore,
    events: Vec<Arc<TaskEvent>>,
    /// Events dropped by retention: `events[0]` has seq `dropped + 1`.
    dropped: u64,
    waiting: Waiting,
    /// Its place among tasks of equal priority: the submission order, kept
    /// when the task goes back to the queue (a retry, a lost placement).
    order: u64,
    deadline: Option<Timestamp>,
    waiters: Vec<oneshot::Sender<()>>,
}

impl Record {
    fn facts(&self, id: TaskId) -> TaskFacts<'_> {
        TaskFacts {
            id,
            created_at: self.created_at,
            spec: &self.spec,
        }
    }

    fn snapshot(&self, id: TaskId) -> Task {
        Task {
            id,
            owner: self.owner.clone(),
            spec: self.spec.clone(),
            state: self.core.state,
            attempt: self.core.attempt,
            node: self.core.node,
            last_seq: self.core.last_seq,
            created_at: self.created_at,
            updated_at: self.core.updated_at,
            available_at: self.core.available_at,
            output: self.core.output.clone(),
            error: self.core.error.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Consumer {
    /// Every terminal event with a cursor ≤ floor is acknowledged.
    floor: u64,
    /// Acknowledged tasks whose terminal cursor is above the floor.
    acked: FxHashSet<TaskId>,
}

#[derive(Debug, Default)]
struct Feed {
    /// The cursor of `events[0]` minus one.
    base: u64,
    events: VecDeque<Arc<TaskEvent>>,
    /// Cursors and tasks of terminal events, in order.
    terminals: VecDeque<(u64, TaskId)>,
    /// Compacted tasks by terminal cursor, in order (what `purge` deletes).
    compacted: VecDeque<(u64, TaskId)>,
    waiters: Vec<oneshot::Sender<()>>,
    consumers: FxHashMap<String, Consumer>,
}

impl Feed {
    fn head(&self) -> u64 {
        self.base + self.events.len() as u64
    }

    fn get(&self, cursor: u64) -> Option<FeedEvent> {
        let idx = cursor.checked_sub(self.base + 1)? as usize;
        self.events.get(idx).map(|e| FeedEvent {
            cursor,
            event: TaskEvent::clone(e),
        })
    }
}

#[derive(Debug)]
struct NodeRecord {
    node: Node,
    leases: FxHashSet<TaskId>,
}

#[derive(Debug)]
pub(super) struct State {
    tasks: TaskMap,
    by_tenant: FxHashMap<TenantId, BTreeSet<TaskId>>,
    idempotency: FxHashMap<(TenantId, String), TaskId>,
    queues: Vec<Queue>,
    queue_ids: FxHashMap<QueueKey, usize>,
    delayed: BTreeSet<(Timestamp, TaskId)>,
    keys: FxHashMap<(TenantId, Arc<str>), KeyGate>,
    /// Rate-limit buckets: their theoretical arrival time (µs).
    buckets: FxHashMap<(TenantId, Arc<str>), i64>,
    /// Tasks waiting in a key's gate (pending, not claimable yet).
    key_waiting: usize,
    deadlines: Deadlines,
    nodes: FxHashMap<NodeId, NodeRecord>,
    feeds: FxHashMap<TenantId, Feed>,
    next_order: u64,
    feed_retention: usize,
    /// The latest time any caller passed in. Callers read their clocks before
    /// they take the lock, so their times can arrive out of order; the store's
    /// time never goes backwards.
    last_now: Timestamp,
}

/// What one transition changed, for the callers' bookkeeping.
struct Applied {
    ack: Ack,
    requeued_now: bool,
}

impl State {
    pub(super) fn new(feed_retention: usize) -> Self {
        State {
            tasks: TaskMap::default(),
            by_tenant: FxHashMap::default(),
            idempotency: FxHashMap::default(),
            queues: Vec::new(),
            queue_ids: FxHashMap::default(),
            delayed: BTreeSet::new(),
            keys: FxHashMap::default(),
            buckets: FxHashMap::default(),
            key_waiting: 0,
            deadlines: Deadlines::default(),
            nodes: FxHashMap::default(),
            feeds: FxHashMap::default(),
            next_order: 0,
            feed_retention,
            last_now: Timestamp::EPOCH,
        }
    }

    /// The store's time for an operation a caller timestamped `now`: never
    /// earlier than a time already used.
    fn now(&mut self, now: Timestamp) -> Timestamp {
        if now > self.last_now {
            self.last_now = now;
        }
        self.last_now
    }

    fn queue_for(&mut self, owner: &Owner, spec: &TaskSpec) -> usize {
        let key = QueueKey {
            tenant: owner.tenant.clone(),
            principal: owner.principal.clone(),
            agent: spec.agent.clone(),
            labels: spec.labels.clone(),
        };
        if let Some(&q) = self.queue_ids.get(&key) {
            return q;
        }
        let q = self.queues.len();
        self.queues.push(Queue {
            key: key.clone(),
            owner: owner.clone(),
            ready: BTreeMap::new(),
        });
        self.queue_ids.insert(key, q);
        q
    }

    // ----- tasks -------------------------------------------------------------

    /// Pending tasks: those in a ready queue and those in a retry backoff.
    pub(super) fn pending_count(&self) -> usize {
        self.queues.iter().map(|q| q.ready.len()).sum::<usize>()
            + self.delayed.len()
            + self.key_waiting
    }

    /// The tasks holding slots of a concurrency key and how many wait.
    pub(super) fn key_slots(&self, tenant: &TenantId, key: &str) -> KeySlots {
        match self.keys.get(&(tenant.clone(), Arc::from(key))) {
            Some(g) => KeySlots {
                holding: g.holding.iter().copied().collect(),
                waiting: g.waiting.len() as u64,
            },
            None => KeySlots::default(),
        }
    }

    /// Puts a pending task in `queue` at its order, or in the backoff index
    /// until its `available_at`.
    fn enqueue(&mut self, id: TaskId, queue: usize, now: Timestamp) {
        let Some(rec) = self.tasks.get_mut(&id) else {
            return;
        };
        let at = rec.core.available_at;
        if at <= now {
            self.make_ready(id, queue);
        } else {
            self.delayed.insert((at, id));
            rec.waiting = Waiting::Delayed { queue, at };
        }
    }

    /// Puts a pending task in ready queue `queue`, at its priority and order.
    fn make_ready(&mut self, id: TaskId, queue: usize) {
        let Some(rec) = self.tasks.get_mut(&id) else {
            return;
        };
        let (priority, order) = (rec.spec.priority, rec.order);
        self.queues[queue]
            .ready
            .insert((Reverse(priority), order), id);
        rec.waiting = Waiting::Ready {
            queue,
            priority,
            order,
        };
    }

    /// Gives free slots of a key to its first waiting tasks: each joins the
    /// end of its ready queue (a fresh order), or the backoff index if it is
    /// delayed. Returns whether any became claimable.
    fn admit(&mut self, gk: &(TenantId, Arc<str>), now: Timestamp) -> bool {
        let mut any = false;
        loop {
            let Some(gate) = self.keys.get_mut(gk) else {
                return any;
            };
            let Some((_, &id)) = gate.waiting.first_key_value() else {
                if gate.holding.is_empty() {
                    self.keys.remove(gk);
                }
                return any;
            };
            let Some(rec) = self.tasks.get(&id) else {
                gate.waiting.pop_first();
                continue;
            };
            let max = rec.spec.concurrency_key().map_or(1, |(_, m)| m) as usize;
            if gate.holding.len() >= max {
                return any;
            }
            gate.waiting.pop_first();
            gate.holding.insert(id);
            self.key_waiting -= 1;
            let queue = match rec.waiting {
                Waiting::Key { queue, .. } => queue,
                _ => {
                    let (owner, spec) = (rec.owner.clone(), rec.spec.clone());
                    self.queue_for(&owner, &spec)
                }
            };
            let order = self.next_order;
            self.next_order += 1;
            if let Some(rec) = self.tasks.get_mut(&id) {
                rec.order = order;
            }
            self.enqueue(id, queue, now);
            any = true;
        }
    }

    pub(super) fn submit(&mut self, tasks: Vec<NewTask>, now: Timestamp) -> Vec<Submitted> {
        let now = self.now(now);
        let mut out = Vec::with_capacity(tasks.len());
        let mut last_queue: Option<(Owner, AgentRef, BTreeMap<String, String>, usize)> = None;
        for t in tasks {
            if let Some(key) = &t.spec.idempotency_key {
                let k = (t.owner.tenant.clone(), key.clone());
                if let Some(&existing) = self.idempotency.get(&k) {
                    let last_seq = self.tasks.get(&existing).map_or(0, |r| r.core.last_seq);
                    out.push(Submitted {
                        id: existing,
                        created: false,
                        last_seq,
                    });
                    continue;
                }
                self.idempotency.insert(k, t.id);
            }
            let queue = match &last_queue {
                Some((o, a, l, q))
                    if *o == t.owner && *a == t.spec.agent && *l == t.spec.labels =>
                {
                    *q
                }
                _ => {
                    let q = self.queue_for(&t.owner, &t.spec);
                    last_queue = Some((
                        t.owner.clone(),
                        t.spec.agent.clone(),
                        t.spec.labels.clone(),
                        q,
                    ));
                    q
                }
            };
            let order = self.next_order;
            self.next_order += 1;
            let priority = t.spec.priority;
            let core = TaskCore::submitted_for(&t.spec, now);
            let gate = t.spec.concurrency_key().map(|(key, max)| {
                let gate = self
                    .keys
                    .entry((t.owner.tenant.clone(), Arc::from(key)))
                    .or_default();
                if gate.holding.len() < max as usize && gate.waiting.is_empty() {
                    gate.holding.insert(t.id);
                    true
                } else {
                    gate.waiting.insert((Reverse(priority), order), t.id);
                    false
                }
            });
            let waiting = if gate == Some(false) {
                self.key_waiting += 1;
                Waiting::Key {
                    queue,
                    priority,
                    order,
                }
            } else if core.available_at <= now {
                self.queues[queue]
                    .ready
                    .insert((Reverse(priority), order), t.id);
                Waiting::Ready {
                    queue,
                    priority,
                    order,
                }
            } else {
                // A delayed task waits like a retry in its backoff.
                self.delayed.insert((core.available_at, t.id));
                Waiting::Delayed {
                    queue,
                    at: core.available_at,
                }
            };
            let event = Arc::new(TaskEvent {
                task: t.id,
                tenant: t.owner.tenant.clone(),
                seq: 1,
                at: now,
                kind: EventKind::Queued,
            });
            let mut rec = Box::new(Record {
                owner: t.owner,
                spec: t.spec,
                created_at: now,
                core,
                events: Vec::with_capacity(4),
                dropped: 0,
                waiting,
                order,
                deadline: None,
                waiters: Vec::new(),
            });
            rec.deadline = machine::deadline(&rec.core, rec.facts(t.id)).map(|(at, _)| at);
            if let Some(at) = rec.deadline {
                self.deadlines.insert(at, t.id);
            }
            rec.events.push(event.clone());
            self.by_tenant
                .entry(rec.owner.tenant.clone())
                .or_default()
                .insert(t.id);
            self.tasks.insert(t.id, rec);
            feed_append(&mut self.feeds, self.feed_retention, event);
            out.push(Submitted {
                id: t.id,
                created: true,
                last_seq: 1,
            });
        }
        out
    }

    pub(super) fn snapshot(&self, id: TaskId) -> Option<Task> {
        self.tasks.get(&id).map(|r| r.snapshot(id))
    }

    pub(super) fn list(&self, tenant: &TenantId, query: &TaskQuery) -> Page<Task> {
        let limit = query.effective_limit();
        let mut items = Vec::new();
        if let Some(ids) = self.by_tenant.get(tenant) {
            let range = match query.after {
                Some(after) => {
                    ids.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                }
                None => ids.range(..),
            };
            for id in range {
                let Some(rec) = self.tasks.get(id) else {
                    continue;
                };
                let task = rec.snapshot(*id);
                if query.matches(&task) {
                    items.push(task);
                    if items.len() == limit {
                        break;
                    }
                }
            }
        }
        let next = if items.len() == limit {
            items.last().map(|t| t.id)
        } else {
            None
        };
        Page { items, next }
    }

    /// Applies one op to one task with all bookkeeping: the event, the feed, the
    /// queues, the deadline index, the node's lease count, the waiters.
    fn transition(&mut self, id: TaskId, op: Op, now: Timestamp) -> Result<Applied> {
        let rec = self
            .tasks
            .get_mut(&id)
            .ok_or_else(|| not_found("task", id))?;
        let lease_before = rec.core.lease.as_ref().map(|l| l.node);
        let facts = TaskFacts {
            id,
            created_at: rec.created_at,
            spec: &rec.spec,
        };
        let kind = match machine::apply(&mut rec.core, facts, op, now)? {
            Outcome::Duplicate { seq, state } => {
                return Ok(Applied {
                    ack: Ack { seq, state },
                    requeued_now: false,
                });
            }
            Outcome::Replaced(kind) => {
                // A heartbeat after a heartbeat: the stored one takes its place.
                let seq = rec.core.last_seq;
                let slot = usize::try_from(seq)
                    .ok()
                    .and_then(|s| s.checked_sub(1))
                    .and_then(|s| rec.events.get_mut(s))
                    .ok_or_else(|| Error::Backend {
                        message: format!("task {id}: no stored event at seq {seq} to replace"),
                        source: None,
                    })?;
                *slot = Arc::new(TaskEvent {
                    task: id,
                    tenant: rec.owner.tenant.clone(),
                    seq,
                    at: now,
                    kind,
                });
                let deadline = machine::deadline(&rec.core, rec.facts(id)).map(|(at, _)| at);
                if deadline != rec.deadline {
                    self.deadlines.moved(id, rec.deadline, deadline);
                    rec.deadline = deadline;
                }
                for w in rec.waiters.drain(..) {
                    let _ = w.send(());
                }
                return Ok(Applied {
                    ack: Ack {
                        seq,
                        state: rec.core.state,
                    },
                    requeued_now: false,
                });
            }
            Outcome::Appended(kind) => kind,
        };
        let state = rec.core.state;
        let seq = rec.core.last_seq;
        // Leave the queue if no longer pending.
        if state != TaskState::Pending {
            match std::mem::replace(&mut rec.waiting, Waiting::No) {
                Waiting::Ready {
                    queue,
                    priority,
                    order,
                } => {
                    self.queues[queue].ready.remove(&(Reverse(priority), order));
                }
                Waiting::Delayed { at, .. } => {
                    self.delayed.remove(&(at, id));
                }
                Waiting::Key {
                    priority, order, ..
                } => {
                    if let Some((key, _)) = rec.spec.concurrency_key()
                        && let Some(g) = self
                            .keys
                            .get_mut(&(rec.owner.tenant.clone(), Arc::from(key)))
                        && g.waiting.remove(&(Reverse(priority), order)).is_some()
                    {
                        self.key_waiting -= 1;
                    }
                }
                Waiting::No => {}
            }
        }
        // Re-enter a queue when requeued for a retry.
        let mut requeued_now = false;
        if state == TaskState::Pending && rec.waiting == Waiting::No {
            let key = QueueKey {
                tenant: rec.owner.tenant.clone(),
                principal: rec.owner.principal.clone(),
                agent: rec.spec.agent.clone(),
                labels: rec.spec.labels.clone(),
            };
            let queue = match self.queue_ids.get(&key) {
                Some(&q) => q,
                None => {
                    let (owner, spec) = (rec.owner.clone(), rec.spec.clone());
                    self.queue_for(&owner, &spec)
                }
            };
            // Claimable now, or waiting workers claim again and learn when
            // it is due.
            self.enqueue(id, queue, now);
            requeued_now = true;
        }
        let rec = self.tasks.get_mut(&id).expect("present above");
        // Lease bookkeeping on nodes.
        let lease_after = rec.core.lease.as_ref().map(|l| l.node);
        if lease_before != lease_after {
            if let Some(n) = lease_before.and_then(|n| self.nodes.get_mut(&n))
                && n.leases.remove(&id)
            {
                n.node.in_flight = n.node.in_flight.saturating_sub(1);
            }
            if let Some(n) = lease_after.and_then(|n| self.nodes.get_mut(&n))
                && n.leases.insert(id)
            {
                n.node.in_flight += 1;
            }
        }
        // Deadline index.
        let deadline = machine::deadline(&rec.core, rec.facts(id)).map(|(at, _)| at);
        if deadline != rec.deadline {
            self.deadlines.moved(id, rec.deadline, deadline);
            rec.deadline = deadline;
        }
        // The event, in the task's stream and the tenant's feed.
        let event = Arc::new(TaskEvent {
            task: id,
            tenant: rec.owner.tenant.clone(),
            seq,
            at: now,
            kind,
        });
        debug_assert_eq!(rec.events.len() as u64 + 1, seq);
        rec.events.push(event.clone());
        for w in rec.waiters.drain(..) {
            let _ = w.send(());
        }
        feed_append(&mut self.feeds, self.feed_retention, event);
        // An ended task gives its key's slot to the next waiting task.
        if state.is_terminal()
            && let Some((key, _)) = rec.spec.concurrency_key()
        {
            let gk = (rec.owner.tenant.clone(), Arc::from(key));
            if let Some(g) = self.keys.get_mut(&gk) {
                g.holding.remove(&id);
            }
            requeued_now |= self.admit(&gk, now);
        }
        Ok(Applied {
            ack: Ack { seq, state },
            requeued_now,
        })
    }

    pub(super) fn apply(
        &mut self,
        commands: Vec<Command>,
        now: Timestamp,
    ) -> (Vec<Result<Ack>>, bool) {
        let mut new_work = false;
        let mut seen: Option<NodeId> = None;
        let out = commands
            .into_iter()
            .map(|c| {
                let node = match &c.op {
                    Op::Start { node, .. }
                    | Op::Heartbeat { node, .. }
                    | Op::Log { node, .. }
                    | Op::Succeed { node, .. }
                    | Op::Fail { node, .. } => Some(*node),
                    _ => None,
                };
                if node.is_some() && node != seen {
                    seen = node;
                    if let Some(n) = node.and_then(|n| self.nodes.get_mut(&n)) {
                        n.node.last_seen = now;
                    }
                }
                self.transition(c.task, c.op, now).map(|a| {
                    new_work |= a.requeued_now;
                    a.ack
                })
            })
            .collect();
        (out, new_work)
    }

    fn promote_delayed(&mut self, now: Timestamp) -> bool {
        let mut any = false;
        while let Some(&(at, id)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.delayed.pop_first();
            let Some(rec) = self.tasks.get_mut(&id) else {
                continue;
            };
            if let Waiting::Delayed { queue, .. } = rec.waiting {
                self.make_ready(id, queue);
                any = true;
            }
        }
        any
    }

    /// When the earliest task in its backoff becomes claimable.
    pub(super) fn next_due(&self, now: Timestamp) -> Option<Timestamp> {
        self.delayed.iter().map(|&(at, _)| at).find(|&at| at > now)
    }

    pub(super) fn claim(&mut self, req: &ClaimRequest<'_>) -> Result<Vec<ClaimedTask>> {
        let now = self.now(req.now);
        let nrec = self
            .nodes
            .get_mut(&req.node)
            .ok_or_else(|| not_found("node", req.node))?;
        nrec.node.last_seen = now;
        if nrec.node.status != NodeStatus::Ready {
            return Ok(Vec::new());
        }
        let max = req.max.min(nrec.node.free()) as usize;
        if max == 0 {
            return Ok(Vec::new());
        }
        let node = nrec.node.clone();
        let mut out = Vec::new();
        // A rate-limited task whose tokens are not there yet moves to the
        // backoff index; the claim then looks again for the slots it left.
        for _ in 0..8 {
            let limited = self.claim_round(req, &node, max - out.len(), now, &mut out);
            if !limited || out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// One round of a claim: leases up to `max` more tasks into `out`;
    /// answers whether a rate limit held a picked task back.
    fn claim_round(
        &mut self,
        req: &ClaimRequest<'_>,
        node: &Node,
        max: usize,
        now: Timestamp,
        out: &mut Vec<ClaimedTask>,
    ) -> bool {
        self.promote_delayed(now);
        let mut limited = false;
        // Candidates: the heads of every eligible queue. Eligibility (owner, shares,
        // labels, agent) is decided here, per queue, before the scheduler sees
        // anything.
        let mut candidates = Vec::new();
        let mut keys: Vec<(usize, (Reverse<i32>, u64))> = Vec::new();
        for (qi, q) in self.queues.iter().enumerate() {
            if q.ready.is_empty()
                || (!req.agents.is_empty() && !req.agents.contains(&q.key.agent))
                || !owner_eligible(&node.spec.owner, &node.spec.shared_with, &q.owner)
                || !labels_eligible(&node.spec.labels, &q.key.labels)
            {
                continue;
            }
            let tasks = &self.tasks;
            let allowed = |task: &TaskId| {
                tasks
                    .get(task)
                    .is_none_or(|r| r.core.avoid_node != Some(node.id))
            };
            for (&k, &task) in q.ready.iter().filter(|(_, t)| allowed(t)).take(max) {
                candidates.push(Candidate {
                    task,
                    tenant: q.key.tenant.clone(),
                    priority: k.0.0,
                    order: k.1,
                });
                keys.push((qi, k));
            }
        }
        if candidates.is_empty() {
            return false;
        }
        let picked = req.scheduler.select(node, &candidates, max);
        let mut taken = vec![false; candidates.len()];
        let base = out.len();
        let mut held: FxHashMap<(TenantId, Arc<str>), u64> = FxHashMap::default();
        for i in picked {
            if i >= candidates.len() || taken[i] || out.len() - base >= max {
                continue;
            }
            taken[i] = true;
            let (qi, k) = keys[i];
            let id = candidates[i].task;
            self.queues[qi].ready.remove(&k);
            if let Some(rec) = self.tasks.get_mut(&id)
                && let Some((key, rl)) = rec.spec.rate_limit_key()
            {
                let bucket = (rec.owner.tenant.clone(), Arc::from(key));
                let tat = self.buckets.get(&bucket).copied().unwrap_or(0);
                match rl.take(tat, now.as_millis().saturating_mul(1000)) {
                    Ok(tat) => {
                        self.buckets.insert(bucket, tat);
                    }
                    Err(at_us) => {
                        // Not yet: it waits for its tokens like a backoff,
                        // in line behind those held back before it.
                        let ahead = held.entry(bucket).or_insert(0);
                        let at_us = rl.queue_at(at_us, *ahead);
                        *ahead += u64::from(rl.units);
                        let at = Timestamp::from_millis(at_us.saturating_add(999) / 1000);
                        self.delayed.insert((at, id));
                        rec.waiting = Waiting::Delayed { queue: qi, at };
                        limited = true;
                        continue;
                    }
                }
            }
            if let Some(rec) = self.tasks.get_mut(&id) {
                rec.waiting = Waiting::No;
            }
            let lease = LeaseId::new();
            let mut ack = match self.transition(
                id,
                Op::Schedule {
                    node: node.id,
                    lease,
                },
                now,
            ) {
                Ok(a) => a.ack,
                Err(e) => {
                    tracing::error!(task = %id, error = %e, "queued task could not be scheduled");
                    continue;
                }
            };
            let rec = self.tasks.get(&id).expect("just scheduled");
            let token = LeaseToken {
                task: id,
                attempt: rec.core.attempt,
                lease,
            };
            if req.start {
                match self.transition(
                    id,
                    Op::Start {
                        token,
                        node: node.id,
                    },
                    now,
                ) {
                    Ok(a) => ack = a.ack,
                    Err(e) => {
                        tracing::error!(task = %id, error = %e, "claimed task could not be started")
                    }
                }
            }
            let rec = self.tasks.get(&id).expect("just scheduled");
            out.push(ClaimedTask {
                token,
                owner: rec.owner.clone(),
                spec: rec.spec.clone(),
                started: ack.state == TaskState::Running,
                last_seq: ack.seq,
            });
        }
        limited
    }

    // ----- events ------------------------------------------------------------

    pub(super) fn read_events(
        &self,
        task: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TaskEvent>> {
        let rec = self
            .tasks
            .get(&task)
            .ok_or_else(|| not_found("task", task))?;
        if after < rec.dropped {
            return Err(Error::OffsetExpired {
                requested: after,
                earliest: rec.dropped + 1,
            });
        }
        let start = ((after - rec.dropped) as usize).min(rec.events.len());
        Ok(rec.events[start..]
            .iter()
            .take(limit)
            .map(|e| TaskEvent::clone(e))
            .collect())
    }

    pub(super) fn event_waiter(
        &mut self,
        task: TaskId,
        after: u64,
    ) -> Result<Option<oneshot::Receiver<()>>> {
        let rec = self
            .tasks
            .get_mut(&task)
            .ok_or_else(|| not_found("task", task))?;
        if rec.core.last_seq > after {
            return Ok(None);
        }
        let (tx, rx) = oneshot::channel();
        rec.waiters.retain(|w| !w.is_closed());
        rec.waiters.push(tx);
        Ok(Some(rx))
    }

    /// Retention (see `TaskStore::compact`): the feed's terminal events are
    /// the candidates, oldest first.
    pub(super) fn compact(
        &mut self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> CompactReport {
        let mut report = CompactReport::default();
        let Some(feed) = self.feeds.get_mut(tenant) else {
            return report;
        };
        let mut last = None;
        while let Some(&(cursor, task)) = feed.terminals.front() {
            if let Some(rec) = self.tasks.get_mut(&task) {
                let ended = rec.events.last().map_or(Timestamp::MAX, |e| e.at);
                if ended >= ended_before || !rec.core.state.is_terminal() {
                    break;
                }
                if report.tasks == limit {
                    report.more = true;
                    break;
                }
                let n = rec.events.len();
                if n > 1 {
                    rec.events.drain(..n - 1);
                    rec.events.shrink_to_fit();
                    rec.dropped += (n - 1) as u64;
                    report.events += n - 1;
                }
                report.tasks += 1;
                feed.compacted.push_back((cursor, task));
            }
            last = Some(cursor);
            feed.terminals.pop_front();
        }
        if let Some(c) = last {
            while feed.base < c && feed.events.pop_front().is_some() {
                feed.base += 1;
            }
        }
        report.feed_floor = if feed.base > 0 { feed.base + 1 } else { 0 };
        report
    }

    /// Retention's second stage (see `TaskStore::purge`).
    pub(super) fn purge(
        &mut self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> (usize, bool) {
        let Some(feed) = self.feeds.get_mut(tenant) else {
            return (0, false);
        };
        let mut n = 0;
        while let Some(&(_, task)) = feed.compacted.front() {
            if let Some(rec) = self.tasks.get(&task) {
                let ended = rec.events.last().map_or(Timestamp::MAX, |e| e.at);
                if ended >= ended_before {
                    break;
                }
                if n == limit {
                    return (n, true);
                }
                if let Some(rec) = self.tasks.remove(&task) {
                    if let Some(key) = &rec.spec.idempotency_key {
                        let k = (tenant.clone(), key.clone());
                        if self.idempotency.get(&k) == Some(&task) {
                            self.idempotency.remove(&k);
                        }
                    }
                    if let Some(ids) = self.by_tenant.get_mut(tenant) {
                        ids.remove(&task);
                    }
                    for c in feed.consumers.values_mut() {
                        c.acked.remove(&task);
                    }
                }
                n += 1;
            }
            feed.compacted.pop_front();
        }
        (n, false)
    }

    pub(super) fn tenants(&self) -> Vec<TenantId> {
        self.by_tenant.keys().cloned().collect()
    }

    pub(super) fn read_feed(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        let Some(feed) = self.feeds.get(tenant) else {
            return Ok(Vec::new());
        };
        if after < feed.base {
            return Err(Error::OffsetExpired {
                requested: after,
                earliest: feed.base + 1,
            });
        }
        let start = (after - feed.base) as usize;
        Ok(feed
            .events
            .iter()
            .skip(start)
            .take(limit)
            .enumerate()
            .map(|(i, e)| FeedEvent {
                cursor: after + 1 + i as u64,
                event: TaskEvent::clone(e),
            })
            .collect())
    }

    pub(super) fn feed_waiter(
        &mut self,
        tenant: &TenantId,
        after: u64,
    ) -> Option<oneshot::Receiver<()>> {
        let feed = self.feeds.entry(tenant.clone()).or_default();
        if feed.head() > after {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        feed.waiters.retain(|w| !w.is_closed());
        feed.waiters.push(tx);
        Some(rx)
    }

    pub(super) fn ack_terminal(&mut self, tenant: &TenantId, consumer: &str, tasks: &[TaskId]) {
        let feed = self.feeds.entry(tenant.clone()).or_default();
        let c = feed.consumers.entry(consumer.to_owned()).or_default();
        for id in tasks {
            let ended = self
                .tasks
                .get(id)
                .is_some_and(|r| r.core.state.is_terminal() && &r.owner.tenant == tenant);
            if ended {
                c.acked.insert(*id);
            }
        }
        // Advance the floor over acknowledged events.
        let mut i = feed.terminals.partition_point(|(cur, _)| *cur <= c.floor);
        while let Some(&(cur, id)) = feed.terminals.get(i) {
            if !c.acked.remove(&id) {
                break;
            }
            c.floor = cur;
            i += 1;
        }
    }

    pub(super) fn unacked_terminal(
        &mut self,
        tenant: &TenantId,
        consumer: &str,
        limit: usize,
    ) -> Vec<FeedEvent> {
        let feed = self.feeds.entry(tenant.clone()).or_default();
        feed.consumers.entry(consumer.to_owned()).or_default();
        let feed = &*feed;
        let c = &feed.consumers[consumer];
        let start = feed.terminals.partition_point(|(cur, _)| *cur <= c.floor);
        let mut out = Vec::new();
        for &(cur, id) in feed.terminals.iter().skip(start) {
            if out.len() == limit {
                break;
            }
            if c.acked.contains(&id) {
                continue;
            }
            if let Some(ev) = feed.get(cur) {
                out.push(ev);
            }
        }
        out
    }

    // ----- nodes -------------------------------------------------------------

    pub(super) fn register_node(&mut self, node: Node) -> Result<()> {
        if self.nodes.contains_key(&node.id) {
            return Err(Error::Conflict {
                message: format!("node {} already exists", node.id),
            });
        }
        self.nodes.insert(
            node.id,
            NodeRecord {
                node,
                leases: FxHashSet::default(),
            },
        );
        Ok(())
    }

    pub(super) fn node(&self, id: NodeId) -> Option<Node> {
        self.nodes.get(&id).map(|n| n.node.clone())
    }

    pub(super) fn nodes(&self) -> Vec<Node> {
        let mut v: Vec<Node> = self.nodes.values().map(|n| n.node.clone()).collect();
        v.sort_by_key(|n| n.id);
        v
    }

    pub(super) fn touch_node(&mut self, id: NodeId, now: Timestamp) -> Result<Node> {
        let now = self.now(now);
        let n = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| not_found("node", id))?;
        n.node.last_seen = now;
        if n.node.status == NodeStatus::Lost {
            n.node.status = NodeStatus::Ready;
        }
        Ok(n.node.clone())
    }

    pub(super) fn set_node_status(
        &mut self,
        id: NodeId,
        status: NodeStatus,
        now: Timestamp,
    ) -> Result<Node> {
        let n = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| not_found("node", id))?;
        n.node.status = status;
        n.node.last_seen = now;
        let node = n.node.clone();
        if status == NodeStatus::Lost {
            self.reclaim(id, now);
        }
        Ok(node)
    }

    /// Ends every lease of `node` as placement lost. Returns (leases, new work).
    fn reclaim(&mut self, node: NodeId, now: Timestamp) -> (usize, bool) {
        let leases: Vec<TaskId> = match self.nodes.get(&node) {
            Some(n) => n.leases.iter().copied().collect(),
            None => return (0, false),
        };
        let mut new_work = false;
        let mut count = 0;
        for id in leases {
            match self.transition(id, Op::LosePlacement { node }, now) {
                Ok(a) => {
                    count += 1;
                    new_work |= a.requeued_now;
                }
                Err(e) => tracing::error!(task = %id, error = %e, "reclaiming a lease failed"),
            }
        }
        (count, new_work)
    }

    pub(super) fn remove_node(&mut self, id: NodeId, now: Timestamp) -> Result<bool> {
        let now = self.now(now);
        if !self.nodes.contains_key(&id) {
            return Err(not_found("node", id));
        }
        let (_, new_work) = self.reclaim(id, now);
        self.nodes.remove(&id);
        Ok(new_work)
    }

    // ----- supervisor --------------------------------------------------------

    pub(super) fn sweep(&mut self, now: Timestamp, options: &SweepOptions) -> (SweepReport, bool) {
        let now = self.now(now);
        let mut report = SweepReport::default();
        let mut new_work = false;
        let lost: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| {
                n.node.status != NodeStatus::Lost
                    && n.node.last_seen.saturating_add(options.node_lost_after) < now
            })
            .map(|n| n.node.id)
            .collect();
        for id in lost {
            if let Some(n) = self.nodes.get_mut(&id) {
                n.node.status = NodeStatus::Lost;
                tracing::info!(node = %id, "node lost");
            }
            let (count, w) = self.reclaim(id, now);
            report.nodes_lost += 1;
            report.placements_lost += count;
            new_work |= w;
        }
        let due = self.deadlines.due(now);
        let mut expired = 0;
        for id in due {
            if expired == options.limit {
                report.more = true;
                break;
            }
            let Some(rec) = self.tasks.get(&id) else {
                continue;
            };
            let Some((at, phase)) = machine::deadline(&rec.core, rec.facts(id)) else {
                continue;
            };
            if at > now {
                continue;
            }
            expired += 1;
            match self.transition(id, Op::Expire { phase }, now) {
                Ok(a) => {
                    report.expired += 1;
                    new_work |= a.requeued_now;
                }
                Err(e) => tracing::error!(task = %id, error = %e, "expiring a deadline failed"),
            }
        }
        new_work |= self.promote_delayed(now);
        (report, new_work)
    }
}

/// The task records, in shards that grow independently: a resize rehashes one
/// shard (1/64 of the tasks) under the lock, not all of them at once, which keeps
/// latency flat as the store grows. Records are boxed: they are large, and a
/// rehash would otherwise move them.
#[derive(Debug)]
struct TaskMap {
    shards: Vec<FxHashMap<TaskId, Box<Record>>>,
}

impl Default for TaskMap {
    fn default() -> Self {
        TaskMap {
            shards: (0..Self::SHARDS).map(|_| FxHashMap::default()).collect(),
        }
    }
}

impl TaskMap {
    const SHARDS: usize = 64;

    fn shard(id: &TaskId) -> usize {
        // The low bits of a UUIDv7 are random.
        (id.as_u128() as usize) % Self::SHARDS
    }

    fn get(&self, id: &TaskId) -> Option<&Record> {
        self.shards[Self::shard(id)].get(id).map(|b| &**b)
    }

    fn get_mut(&mut self, id: &TaskId) -> Option<&mut Record> {
        self.shards[Self::shard(id)].get_mut(id).map(|b| &mut **b)
    }

    fn insert(&mut self, id: TaskId, rec: Box<Record>) {
        self.shards[Self::shard(&id)].insert(id, rec);
    }

    fn remove(&mut self, id: &TaskId) -> Option<Box<Record>> {
        self.shards[Self::shard(id)].remove(id)
    }
}

/// The deadline index: task ids filed in buckets of [`Deadlines::BUCKET_MS`]. A
/// transition moves a task between two hash sets instead of re-sorting a tree;
/// the sweep reads the due buckets and checks each task's exact deadline.
#[derive(Debug, Default)]
struct Deadlines {
    buckets: BTreeMap<i64, FxHashSet<TaskId>>,
}

impl Deadlines {
    const BUCKET_MS: i64 = 64;

    fn bucket(at: Timestamp) -> i64 {
        at.as_millis().div_euclid(Self::BUCKET_MS)
    }

    fn insert(&mut self, at: Timestamp, id: TaskId) {
        self.buckets.entry(Self::bucket(at)).or_default().insert(id);
    }

    fn remove(&mut self, at: Timestamp, id: TaskId) {
        let b = Self::bucket(at);
        if let Some(set) = self.buckets.get_mut(&b) {
            set.remove(&id);
            if set.is_empty() {
                self.buckets.remove(&b);
            }
        }
    }

    fn moved(&mut self, id: TaskId, from: Option<Timestamp>, to: Option<Timestamp>) {
        match (from, to) {
            (Some(a), Some(b)) if Self::bucket(a) == Self::bucket(b) => {}
            _ => {
                if let Some(a) = from {
                    self.remove(a, id);
                }
                if let Some(b) = to {
                    self.insert(b, id);
                }
            }
        }
    }

    /// Tasks filed in buckets that start at or before `now`, oldest bucket first.
    /// Some may not be due yet (later in the bucket): callers check.
    fn due(&self, now: Timestamp) -> Vec<TaskId> {
        self.buckets
            .range(..=Self::bucket(now))
            .flat_map(|(_, set)| set.iter().copied())
            .collect()
    }
}

fn feed_append(feeds: &mut FxHashMap<TenantId, Feed>, retention: usize, event: Arc<TaskEvent>) {
    let feed = match feeds.get_mut(&event.tenant) {
        Some(f) => f,
        None => feeds.entry(event.tenant.clone()).or_default(),
    };
    let terminal = event.kind.is_terminal();
    let task = event.task;
    feed.events.push_back(event);
    let cursor = feed.head();
    if terminal {
        feed.terminals.push_back((cursor, task));
    }
    while feed.events.len() > retention {
        feed.events.pop_front();
        feed.base += 1;
    }
    while feed.terminals.front().is_some_and(|(c, _)| *c <= feed.base) {
        feed.terminals.pop_front();
    }
    for w in feed.waiters.drain(..) {
        let _ = w.send(());
    }
}
