//! The in-memory backend: every guarantee of the store contract, in one process,
//! without durability. One lock serializes all state; every operation is a batch,
//! so the lock is taken once per batch, not once per task.

mod records;
mod state;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use hive_core::clock::Timestamp;
use hive_core::id::{NodeId, TaskId};
use hive_core::node::{Node, NodeStatus};
use hive_core::principal::TenantId;
use hive_core::store::{
    Ack, ClaimRequest, ClaimResult, Command, CompactReport, KeySlots, NewTask, Record, RecordEvent,
    RecordQuery, RecordStore, RecordWrite, RecordWritten, Submitted, SweepOptions, SweepReport,
    TaskStore,
};
use hive_core::task::{FeedEvent, Page, Task, TaskEvent, TaskQuery};
use hive_core::{Error, Result};
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use records::Records;
use state::State;

/// Settings of the memory backend.
#[derive(Clone, Debug)]
pub struct MemoryConfig {
    /// Events kept per tenant feed; older ones are dropped (reading before them is
    /// `OffsetExpired`). Task event streams are kept whole.
    pub feed_retention: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            feed_retention: 10_000_000,
        }
    }
}

/// The in-memory store.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    records: Mutex<Records>,
    work_epoch: AtomicU64,
    work: Notify,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(config: MemoryConfig) -> Self {
        MemoryStore {
            state: Mutex::new(State::new(config.feed_retention.max(1))),
            records: Mutex::new(Records::default()),
            work_epoch: AtomicU64::new(0),
            work: Notify::new(),
        }
    }

    fn signal_work(&self) {
        self.work_epoch.fetch_add(1, Ordering::SeqCst);
        self.work.notify_waiters();
    }

    fn finish(&self, new_work: bool) {
        if new_work {
            self.signal_work();
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(MemoryConfig::default())
    }
}

async fn wait(rx: Option<oneshot::Receiver<()>>, timeout: Duration) {
    if let Some(rx) = rx {
        let _ = tokio::time::timeout(timeout, rx).await;
    }
}

#[async_trait]
impl TaskStore for MemoryStore {
    async fn submit(&self, tasks: Vec<NewTask>, now: Timestamp) -> Result<Vec<Submitted>> {
        let out = self.state.lock().submit(tasks, now);
        self.finish(out.iter().any(|s| s.created));
        Ok(out)
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<Task>> {
        Ok(self.state.lock().snapshot(id))
    }

    async fn compact(
        &self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<CompactReport> {
        Ok(self.state.lock().compact(tenant, ended_before, limit))
    }

    async fn purge(
        &self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<(usize, bool)> {
        Ok(self.state.lock().purge(tenant, ended_before, limit))
    }

    async fn tenants(&self) -> Result<Vec<TenantId>> {
        Ok(self.state.lock().tenants())
    }

    async fn key_slots(&self, tenant: &TenantId, key: &str) -> Result<KeySlots> {
        Ok(self.state.lock().key_slots(tenant, key))
    }

    async fn pending_count(&self) -> Result<Option<u64>> {
        Ok(Some(self.state.lock().pending_count() as u64))
    }

    async fn get_tasks(&self, ids: &[TaskId]) -> Result<Vec<Task>> {
        let state = self.state.lock();
        Ok(ids.iter().filter_map(|&id| state.snapshot(id)).collect())
    }

    async fn list_tasks(&self, tenant: &TenantId, query: &TaskQuery) -> Result<Page<Task>> {
        Ok(self.state.lock().list(tenant, query))
    }

    async fn apply(&self, commands: Vec<Command>, now: Timestamp) -> Result<Vec<Result<Ack>>> {
        let (out, new_work) = self.state.lock().apply(commands, now);
        self.finish(new_work);
        Ok(out)
    }

    async fn claim(&self, req: ClaimRequest<'_>) -> Result<ClaimResult> {
        let epoch = self.work_epoch.load(Ordering::SeqCst);
        let mut state = self.state.lock();
        let tasks = state.claim(&req)?;
        let next_due = state.next_due(req.now);
        Ok(ClaimResult {
            tasks,
            epoch,
            next_due,
        })
    }

    async fn wait_for_work(&self, epoch: u64, timeout: Duration) -> Result<()> {
        let notified = self.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.work_epoch.load(Ordering::SeqCst) != epoch {
            return Ok(());
        }
        let _ = tokio::time::timeout(timeout, notified).await;
        Ok(())
    }

    async fn read_events(
        &self,
        task: TaskId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<TaskEvent>> {
        self.state.lock().read_events(task, after_seq, limit)
    }

    async fn wait_for_events(&self, task: TaskId, after_seq: u64, timeout: Duration) -> Result<()> {
        let rx = self.state.lock().event_waiter(task, after_seq)?;
        wait(rx, timeout).await;
        Ok(())
    }

    async fn read_feed(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        self.state.lock().read_feed(tenant, after, limit)
    }

    async fn wait_for_feed(&self, tenant: &TenantId, after: u64, timeout: Duration) -> Result<()> {
        let rx = self.state.lock().feed_waiter(tenant, after);
        wait(rx, timeout).await;
        Ok(())
    }

    async fn ack_terminal(
        &self,
        tenant: &TenantId,
        consumer: &str,
        tasks: &[TaskId],
    ) -> Result<()> {
        self.state.lock().ack_terminal(tenant, consumer, tasks);
        Ok(())
    }

    async fn unacked_terminal(
        &self,
        tenant: &TenantId,
        consumer: &str,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        Ok(self.state.lock().unacked_terminal(tenant, consumer, limit))
    }

    async fn register_node(&self, node: Node) -> Result<()> {
        self.state.lock().register_node(node)?;
        self.signal_work();
        Ok(())
    }

    async fn get_node(&self, id: NodeId) -> Result<Option<Node>> {
        Ok(self.state.lock().node(id))
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        Ok(self.state.lock().nodes())
    }

    async fn touch_node(&self, id: NodeId, now: Timestamp) -> Result<Node> {
        self.state.lock().touch_node(id, now)
    }

    async fn set_node_status(
        &self,
        id: NodeId,
        status: NodeStatus,
        now: Timestamp,
    ) -> Result<Node> {
        let node = self.state.lock().set_node_status(id, status, now)?;
        if status == NodeStatus::Ready {
            self.signal_work();
        }
        Ok(node)
    }

    async fn remove_node(&self, id: NodeId, now: Timestamp) -> Result<()> {
        let new_work = self.state.lock().remove_node(id, now)?;
        self.finish(new_work);
        Ok(())
    }

    async fn sweep(&self, now: Timestamp, options: &SweepOptions) -> Result<SweepReport> {
        let (report, new_work) = self.state.lock().sweep(now, options);
        self.finish(new_work);
        Ok(report)
    }
}

#[async_trait]
impl RecordStore for MemoryStore {
    async fn write_record(&self, write: RecordWrite) -> Result<RecordWritten> {
        self.records.lock().write(write)
    }

    async fn get_record(&self, kind: &str, id: &str) -> Result<Option<Record>> {
        Ok(self.records.lock().get(kind, id))
    }

    async fn list_records(&self, kind: &str, query: &RecordQuery) -> Result<Vec<Record>> {
        Ok(self.records.lock().list(kind, query))
    }

    async fn read_record_events(
        &self,
        kind: &str,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<RecordEvent>> {
        self.records.lock().read_events(kind, id, after_seq, limit)
    }

    async fn wait_for_record_events(
        &self,
        kind: &str,
        id: &str,
        after_seq: u64,
        timeout: Duration,
    ) -> Result<()> {
        let rx = self.records.lock().waiter(kind, id, after_seq)?;
        wait(rx, timeout).await;
        Ok(())
    }
}

pub(crate) fn not_found(kind: &'static str, id: impl ToString) -> Error {
    Error::NotFound {
        kind,
        id: id.to_string(),
    }
}
