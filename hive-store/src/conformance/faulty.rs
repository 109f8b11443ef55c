//! A store that fails on demand, for the tests of what the engine does when a
//! call fails half-way through an operation (the same failure a crash between
//! two writes leaves behind).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use hive_core::node::{Node, NodeStatus};
use hive_core::principal::TenantId;
use hive_core::store::{
    Ack, ClaimRequest, ClaimResult, Command, KeySlots, NewTask, Record, RecordEvent, RecordQuery,
    RecordStore, RecordWrite, RecordWritten, Store, Submitted, SweepOptions, SweepReport,
    TaskStore,
};
use hive_core::task::{FeedEvent, Page, Task, TaskEvent, TaskQuery};
use hive_core::{Error, NodeId, Result, TaskId, Timestamp};

/// Delegates to a backend; while `fail_apply` is set, every `apply` answers
/// `BackendUnavailable` without reaching it; while `endless_sweep` is set,
/// every `sweep` says more is due (a row that keeps coming back).
#[derive(Debug)]
pub struct FailingApply {
    inner: Arc<dyn Store>,
    /// Whether `apply` fails.
    pub fail_apply: AtomicBool,
    /// Whether `sweep` always answers `more`.
    pub endless_sweep: AtomicBool,
    /// How many times `sweep` was called.
    pub sweeps: AtomicUsize,
}

impl FailingApply {
    /// Wraps `inner`, failing nothing yet.
    pub fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(FailingApply {
            inner,
            fail_apply: AtomicBool::new(false),
            endless_sweep: AtomicBool::new(false),
            sweeps: AtomicUsize::new(0),
        })
    }

    /// Makes `apply` fail (or not).
    pub fn fail(&self, on: bool) {
        self.fail_apply.store(on, Ordering::SeqCst);
    }
}

#[async_trait]
impl TaskStore for FailingApply {
    async fn submit(&self, tasks: Vec<NewTask>, now: Timestamp) -> Result<Vec<Submitted>> {
        self.inner.submit(tasks, now).await
    }
    async fn get_task(&self, id: TaskId) -> Result<Option<Task>> {
        self.inner.get_task(id).await
    }
    async fn get_tasks(&self, ids: &[TaskId]) -> Result<Vec<Task>> {
        self.inner.get_tasks(ids).await
    }
    async fn list_tasks(&self, tenant: &TenantId, query: &TaskQuery) -> Result<Page<Task>> {
        self.inner.list_tasks(tenant, query).await
    }
    async fn apply(&self, commands: Vec<Command>, now: Timestamp) -> Result<Vec<Result<Ack>>> {
        if self.fail_apply.load(Ordering::SeqCst) {
            return Err(Error::BackendUnavailable {
                message: "injected failure".into(),
                source: None,
            });
        }
        self.inner.apply(commands, now).await
    }
    async fn claim(&self, req: ClaimRequest<'_>) -> Result<ClaimResult> {
        self.inner.claim(req).await
    }
    async fn wait_for_work(&self, epoch: u64, timeout: Duration) -> Result<()> {
        self.inner.wait_for_work(epoch, timeout).await
    }
    async fn read_events(
        &self,
        task: TaskId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<TaskEvent>> {
        self.inner.read_events(task, after_seq, limit).await
    }
    async fn wait_for_events(&self, task: TaskId, after_seq: u64, timeout: Duration) -> Result<()> {
        self.inner.wait_for_events(task, after_seq, timeout).await
    }
    async fn read_feed(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        self.inner.read_feed(tenant, after, limit).await
    }
    async fn wait_for_feed(&self, tenant: &TenantId, after: u64, timeout: Duration) -> Result<()> {
        self.inner.wait_for_feed(tenant, after, timeout).await
    }
    async fn ack_terminal(
        &self,
        tenant: &TenantId,
        consumer: &str,
        tasks: &[TaskId],
    ) -> Result<()> {
        self.inner.ack_terminal(tenant, consumer, tasks).await
    }
    async fn unacked_terminal(
        &self,
        tenant: &TenantId,
        consumer: &str,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        self.inner.unacked_terminal(tenant, consumer, limit).await
    }
    async fn compact(
        &self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<hive_core::store::CompactReport> {
        self.inner.compact(tenant, ended_before, limit).await
    }

    async fn purge(
        &self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<(usize, bool)> {
        self.inner.purge(tenant, ended_before, limit).await
    }

    async fn tenants(&self) -> Result<Vec<TenantId>> {
        self.inner.tenants().await
    }
    async fn key_slots(&self, tenant: &TenantId, key: &str) -> Result<KeySlots> {
        self.inner.key_slots(tenant, key).await
    }

    async fn register_node(&self, node: Node) -> Result<()> {
        self.inner.register_node(node).await
    }
    async fn get_node(&self, id: NodeId) -> Result<Option<Node>> {
        self.inner.get_node(id).await
    }
    async fn list_nodes(&self) -> Result<Vec<Node>> {
        self.inner.list_nodes().await
    }
    async fn touch_node(&self, id: NodeId, now: Timestamp) -> Result<Node> {
        self.inner.touch_node(id, now).await
    }
    async fn set_node_status(
        &self,
        id: NodeId,
        status: NodeStatus,
        now: Timestamp,
    ) -> Result<Node> {
        self.inner.set_node_status(id, status, now).await
    }
    async fn remove_node(&self, id: NodeId, now: Timestamp) -> Result<()> {
        self.inner.remove_node(id, now).await
    }
    async fn sweep(&self, now: Timestamp, options: &SweepOptions) -> Result<SweepReport> {
        self.sweeps.fetch_add(1, Ordering::SeqCst);
        let mut report = self.inner.sweep(now, options).await?;
        if self.endless_sweep.load(Ordering::SeqCst) {
            report.more = true;
        }
        Ok(report)
    }
}

#[async_trait]
impl RecordStore for FailingApply {
    async fn write_record(&self, write: RecordWrite) -> Result<RecordWritten> {
        self.inner.write_record(write).await
    }
    async fn get_record(&self, kind: &str, id: &str) -> Result<Option<Record>> {
        self.inner.get_record(kind, id).await
    }
    async fn list_records(&self, kind: &str, query: &RecordQuery) -> Result<Vec<Record>> {
        self.inner.list_records(kind, query).await
    }
    async fn read_record_events(
        &self,
        kind: &str,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<RecordEvent>> {
        self.inner
            .read_record_events(kind, id, after_seq, limit)
            .await
    }
    async fn wait_for_record_events(
        &self,
        kind: &str,
        id: &str,
        after_seq: u64,
        timeout: Duration,
    ) -> Result<()> {
        self.inner
            .wait_for_record_events(kind, id, after_seq, timeout)
            .await
    }
}
