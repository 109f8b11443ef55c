//! The storage contract. A backend implements [`TaskStore`]; the engine does the
//! rest. Every backend runs the same conformance suite (`hive-store`'s
//! `conformance` module), so these docs are the contract it checks.
//!
//! # Guarantees every implementation gives
//!
//! - **Atomic transitions.** Every state change is decided by
//!   [`crate::task::machine::apply`] on the task's current stored core and, in the
//!   same atomic step (one lock, one transaction, one script), stores the new core
//!   and appends exactly one event with the next `seq`. State and events can never
//!   disagree. Concurrent callers (threads, processes, machines) are serialized per
//!   task: it is a compare-and-set on state and lease.
//! - **Gapless events.** A task's events have seq 1, 2, 3… without gaps; seq 1 is
//!   `Queued`; exactly one terminal event, and nothing after it.
//! - **Tenant feed.** Every event is also appended to its tenant's feed, with a
//!   cursor 1, 2, 3… in the order the events were stored.
//! - **Eligibility in the claim.** [`TaskStore::claim`] only ever leases a task to a
//!   node that is Ready, has free capacity, whose owner may run the task
//!   ([`crate::node::eligible`]) and that serves the task's agent.
//! - **Concurrency keys.** A task whose spec names a concurrency key (per
//!   tenant, [`crate::task::TaskSpec::concurrency_key`]) holds one of the
//!   key's `max_running` slots from the moment it becomes claimable until it
//!   ends; at submission it takes a free slot only if no task of the key
//!   waits, else it waits (`Pending`, not claimable). When a holder ends, in
//!   the same atomic step, the first waiting tasks (priority, then
//!   submission) get the freed slots and join the end of their ready queue.
//!   Never more than `max_running` holders, whatever the number of
//!   processes.
//! - **Batches.** Batch methods apply each item's guarantees independently: a
//!   refused item does not refuse the others, and each gets its own result.
//! - **Errors.** Driver errors are mapped to [`crate::Error::BackendUnavailable`] (may be
//!   retried) or [`crate::Error::Backend`] (will not succeed by retrying).

mod record;

pub use record::{
    MAX_RECORD_KEY_LEN, Record, RecordEvent, RecordQuery, RecordStore, RecordWrite, RecordWritten,
};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::Result;
use crate::id::{NodeId, TaskId};
use crate::node::{Node, NodeStatus};
use crate::principal::TenantId;
use crate::scheduler::Scheduler;
use crate::task::machine::Op;
use crate::task::{
    AgentRef, FeedEvent, LeaseToken, Owner, Page, Task, TaskEvent, TaskQuery, TaskSpec, TaskState,
};

/// A task to store, already validated and authorized.
#[derive(Clone, Debug)]
pub struct NewTask {
    /// Its id (chosen by the engine).
    pub id: TaskId,
    /// Its owner.
    pub owner: Owner,
    /// What was submitted.
    pub spec: Arc<TaskSpec>,
}

/// The answer to one submitted task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// The task's id: the new one, or the existing task with the same idempotency
    /// key.
    pub id: TaskId,
    /// `false` when an existing task was returned for the idempotency key.
    pub created: bool,
    /// The task's last seq at the time of the answer: subscribe after it to miss
    /// nothing.
    pub last_seq: u64,
}

/// One transition to apply.
#[derive(Clone, Debug)]
pub struct Command {
    /// The task.
    pub task: TaskId,
    /// The op.
    pub op: Op,
}

/// The answer to an accepted transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The seq of the event the transition appended (for a duplicate report, the
    /// seq the first report appended).
    pub seq: u64,
    /// The task's state after it.
    pub state: TaskState,
}

/// A claim for work by one node.
#[derive(Clone, Copy, Debug)]
pub struct ClaimRequest<'a> {
    /// The claiming node.
    pub node: NodeId,
    /// At most this many leases (further capped by the node's free capacity).
    pub max: u32,
    /// Only tasks for these agents (any agent when empty).
    pub agents: &'a [AgentRef],
    /// Also start every claimed task (Scheduled then Running, two events) in the
    /// same atomic step; saves a round trip for in-process workers.
    pub start: bool,
    /// Orders the eligible candidates.
    pub scheduler: &'a dyn Scheduler,
    /// The current time.
    pub now: Timestamp,
}

/// One leased task.
#[derive(Clone, Debug)]
pub struct ClaimedTask {
    /// The fencing token to present with every call about this lease.
    pub token: LeaseToken,
    /// The task's owner.
    pub owner: Owner,
    /// What to run.
    pub spec: Arc<TaskSpec>,
    /// Whether the claim also started it.
    pub started: bool,
    /// The task's last seq after the claim.
    pub last_seq: u64,
}

/// The answer to a claim.
#[derive(Clone, Debug, Default)]
pub struct ClaimResult {
    /// The leased tasks (possibly none).
    pub tasks: Vec<ClaimedTask>,
    /// The work epoch observed before the claim looked for work: pass it to
    /// [`TaskStore::wait_for_work`] so that work arriving in between is not missed.
    pub epoch: u64,
    /// When the earliest pending task that is not claimable yet (a retry in
    /// its backoff) becomes claimable, as far as the store knows; `None` when
    /// none waits. A worker that found too little work waits at most until
    /// then, so a retry starts when its backoff ends, not at the next idle
    /// poll. Eligibility is not considered: an early wake-up is harmless.
    pub next_due: Option<Timestamp>,
}

/// What a supervisor sweep may do.
#[derive(Clone, Copy, Debug)]
pub struct SweepOptions {
    /// Expire at most this many deadlines in one sweep.
    pub limit: usize,
    /// A node not seen for this long is Lost and its leases are reclaimed.
    pub node_lost_after: Duration,
}

/// What a sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Deadlines expired (attempts retried or tasks ended).
    pub expired: usize,
    /// Nodes marked Lost.
    pub nodes_lost: usize,
    /// Leases reclaimed from lost nodes.
    pub placements_lost: usize,
    /// Whether more deadlines are due than `limit` allowed.
    pub more: bool,
}

/// What one [`TaskStore::compact`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactReport {
    /// Tasks compacted (each kept only its terminal event).
    pub tasks: usize,
    /// Events deleted.
    pub events: usize,
    /// The tenant feed's earliest readable cursor after the call (`0`:
    /// nothing was ever compacted).
    pub feed_floor: u64,
    /// Whether more tasks were eligible than `limit` allowed.
    pub more: bool,
}

/// The tasks of one concurrency key (see [`TaskStore::key_slots`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySlots {
    /// The tasks holding a slot (claimable, leased, running or in a retry's
    /// backoff), oldest first.
    pub holding: Vec<TaskId>,
    /// How many tasks wait for a slot.
    pub waiting: u64,
}

impl KeySlots {
    /// From a key's tasks, each with whether it waits (holders sorted
    /// oldest first).
    pub fn from_tasks(tasks: impl IntoIterator<Item = (TaskId, bool)>) -> Self {
        let mut slots = KeySlots::default();
        for (id, waiting) in tasks {
            if waiting {
                slots.waiting += 1;
            } else {
                slots.holding.push(id);
            }
        }
        slots.holding.sort_unstable();
        slots
    }
}

/// Where Hive's state lives. See the module docs for the guarantees.
#[async_trait]
pub trait TaskStore: Send + Sync + fmt::Debug + 'static {
    /// Stores new tasks with their `Queued` event (seq 1). A task whose spec has an
    /// idempotency key already used in the same tenant is not stored again: the
    /// answer names the existing task with `created: false`. Answers are in input
    /// order.
    async fn submit(&self, tasks: Vec<NewTask>, now: Timestamp) -> Result<Vec<Submitted>>;

    /// One task, by id, whatever its tenant (the engine checks visibility). The fast
    /// path: a point lookup.
    async fn get_task(&self, id: TaskId) -> Result<Option<Task>>;

    /// Several tasks by id, whatever their tenant, in the order asked; ids that do
    /// not exist are left out. One round trip (the workflow driver reads a whole
    /// fan-out at once).
    async fn get_tasks(&self, ids: &[TaskId]) -> Result<Vec<Task>>;

    /// A page of `tenant`'s tasks matching `query`, ordered by id.
    async fn list_tasks(&self, tenant: &TenantId, query: &TaskQuery) -> Result<Page<Task>>;

    /// Applies transitions, each atomically with its event (see the module docs).
    /// A missing task is `NotFound`. Ops presented by a node (start, heartbeat, log,
    /// reports) also count as a sign of life of that node.
    async fn apply(&self, commands: Vec<Command>, now: Timestamp) -> Result<Vec<Result<Ack>>>;

    /// Leases up to `req.max` eligible, available pending tasks to `req.node`
    /// (see "Eligibility in the claim"). Promotes tasks whose backoff has passed.
    /// A node that is not Ready gets nothing; an unknown node is `NotFound`. Counts
    /// as a sign of life of the node.
    async fn claim(&self, req: ClaimRequest<'_>) -> Result<ClaimResult>;

    /// Returns when work may have arrived since `epoch` (from a [`ClaimResult`]),
    /// or after `timeout`. Spurious returns are allowed. A task requeued with a
    /// backoff counts as arriving work: the waiters claim again and learn its
    /// due time from [`ClaimResult::next_due`].
    async fn wait_for_work(&self, epoch: u64, timeout: Duration) -> Result<()>;

    /// Up to `limit` events of `task` with seq > `after_seq`, in order.
    async fn read_events(
        &self,
        task: TaskId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<TaskEvent>>;

    /// Returns when `task` has an event after `after_seq`, or after `timeout`.
    /// Spurious returns are allowed.
    async fn wait_for_events(&self, task: TaskId, after_seq: u64, timeout: Duration) -> Result<()>;

    /// Up to `limit` events of `tenant`'s feed with cursor > `after`, in order. If
    /// retention dropped events after `after`, [`crate::Error::OffsetExpired`] with
    /// the earliest retained cursor.
    async fn read_feed(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>>;

    /// Returns when `tenant`'s feed has an event after `after`, or after `timeout`.
    async fn wait_for_feed(&self, tenant: &TenantId, after: u64, timeout: Duration) -> Result<()>;

    /// Records that consumer `consumer` of `tenant` handled the terminal events of
    /// `tasks`. Acknowledging twice, or a task that has not ended, is harmless.
    async fn ack_terminal(&self, tenant: &TenantId, consumer: &str, tasks: &[TaskId])
    -> Result<()>;

    /// Terminal events of `tenant` that consumer `consumer` has not acknowledged,
    /// oldest first, up to `limit`. A consumer is created on first use and sees
    /// every retained terminal event.
    async fn unacked_terminal(
        &self,
        tenant: &TenantId,
        consumer: &str,
        limit: usize,
    ) -> Result<Vec<FeedEvent>>;

    /// How many tasks are pending now (ready or waiting for a retry
    /// backoff), across tenants: the queue depth a host exports as a gauge.
    /// `None` when a backend cannot count without reading every task (the
    /// default); the built-in backends count from their pending indexes.
    async fn pending_count(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Retention: compacts up to `limit` of `tenant`'s tasks that ended
    /// before `ended_before`, oldest ended first (in the order of their
    /// terminal events in the feed, stopping at the first that ended later).
    /// A compacted task keeps its row (final state, output, `last_seq`) and
    /// its terminal event; its other events are deleted, and reading its
    /// stream from before the terminal event is
    /// [`crate::Error::OffsetExpired`] with the terminal seq as `earliest`.
    /// The tenant feed's floor moves past the terminal event of the last
    /// compacted task: reading the feed from before the floor is
    /// `OffsetExpired` with the floor, and consumers no longer list terminal
    /// events below it. Bounded: one call does at most `limit` tasks, so it
    /// never holds claims up for long. Safe in many processes at once.
    async fn compact(
        &self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<CompactReport>;

    /// Retention's second stage: deletes up to `limit` of `tenant`'s
    /// compacted tasks (those whose terminal event is below the feed floor)
    /// that ended before `ended_before`, oldest first: the task, its
    /// terminal event, its idempotency key (which may then be used again)
    /// and consumers' acknowledgements of it. Afterwards the task is
    /// `NotFound`. Returns how many were deleted and whether more are due.
    async fn purge(
        &self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<(usize, bool)>;

    /// The tasks of `tenant` holding slots of concurrency key `key`, and how
    /// many wait for one (see [`crate::task::Concurrency`]).
    async fn key_slots(&self, tenant: &TenantId, key: &str) -> Result<KeySlots>;

    /// The tenants that have stored tasks (what a retention pass walks).
    async fn tenants(&self) -> Result<Vec<TenantId>>;

    /// Stores a new node. An existing id is `Conflict`.
    async fn register_node(&self, node: Node) -> Result<()>;

    /// One node.
    async fn get_node(&self, id: NodeId) -> Result<Option<Node>>;

    /// Every node.
    async fn list_nodes(&self) -> Result<Vec<Node>>;

    /// A node heartbeat: records the sign of life; a Lost node becomes Ready again
    /// (its old leases stay gone).
    async fn touch_node(&self, id: NodeId, now: Timestamp) -> Result<Node>;

    /// Sets a node's status (drain: `Draining`, undrain: `Ready`).
    async fn set_node_status(&self, id: NodeId, status: NodeStatus, now: Timestamp)
    -> Result<Node>;

    /// Removes a node; its leases are reclaimed at once (as placement lost).
    async fn remove_node(&self, id: NodeId, now: Timestamp) -> Result<()>;

    /// The supervisor's sweep: marks nodes not seen for `node_lost_after` Lost and
    /// reclaims their leases, then expires due deadlines (see
    /// [`crate::task::machine::deadline`]) oldest first, up to `limit`. Safe to run
    /// in many processes at once: every move is a compare-and-set.
    async fn sweep(&self, now: Timestamp, options: &SweepOptions) -> Result<SweepReport>;
}

/// Everything a backend provides: tasks ([`TaskStore`]) and records
/// ([`RecordStore`]). Implemented for every type that implements both; the
/// engine holds an `Arc<dyn Store>`.
pub trait Store: TaskStore + RecordStore {}

impl<T: TaskStore + RecordStore> Store for T {}
