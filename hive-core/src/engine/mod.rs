//! The engine: [`Hive`], what a host embeds.
//!
//! Every operation takes the calling [`Principal`]; the engine checks tenancy
//! (another tenant's object is `NotFound`), asks the [`Authorizer`], validates the
//! input, and hands the state change to the [`crate::store::TaskStore`], which applies it
//! atomically with its event.

mod subscribe;
mod supervisor;
mod workflow;

pub use subscribe::{FeedSubscription, TaskSubscription};
pub use workflow::WorkflowSubscription;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::instrument;

use crate::audit::{AuditEntry, AuditOutcome, Auditor, NoAudit};
use crate::auth::{Action, Authorizer, Resource, ScopeAuthorizer};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::id::{NodeId, TaskId};
use crate::node::{Node, NodeOwner, NodeSpec, NodeStatus};
use crate::principal::{Principal, PrincipalKind, TenantId};
use crate::scheduler::{FairScheduler, Scheduler};
use crate::store::{
    Ack, ClaimRequest, ClaimResult, Command, NewTask, Store, Submitted, SweepOptions, SweepReport,
};
use crate::task::machine::Op;
use crate::task::{
    AgentRef, FeedEvent, LeaseToken, Owner, Page, Task, TaskError, TaskEvent, TaskQuery, TaskSpec,
};

/// Engine settings. The defaults suit a single host; every field is documented
/// with what it trades.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HiveConfig {
    /// Run the supervisor in this instance (safe in many processes at once).
    pub run_supervisor: bool,
    /// How often the supervisor sweeps expired deadlines. A task reaches its
    /// terminal state within its deadline plus this.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// At most this many deadlines are expired per store call of a sweep.
    pub sweep_batch: usize,
    /// At most this many store calls per sweep (default 16, so 160 000
    /// deadlines with the default batch): what is left waits for the next
    /// sweep, so a backlog — or a row that keeps coming back — never pins the
    /// supervisor.
    pub sweep_max_batches: usize,
    /// How often in-process workers heartbeat their node; a node not seen for
    /// three intervals is Lost.
    #[serde(with = "humantime_serde")]
    pub node_heartbeat_interval: Duration,
    /// The largest batch one submit call accepts.
    pub max_submit_batch: usize,
    /// How long a subscription waits for a notification before it re-reads the
    /// store (a safety net; notifications normally wake it at once).
    #[serde(with = "humantime_serde")]
    pub subscription_poll: Duration,
    /// Run the workflow driver in this instance (safe in many processes at
    /// once: every decision is a compare-and-set).
    pub run_workflows: bool,
    /// The driver passes over its running workflows whenever a task ends in this
    /// process, and at least this often (tasks ended by other processes).
    #[serde(with = "humantime_serde")]
    pub workflow_poll: Duration,
    /// How often the driver looks in the store for running workflows it does not
    /// drive yet (after a restart, or submitted by another process).
    #[serde(with = "humantime_serde")]
    pub workflow_scan: Duration,
    /// Size limits of workflow specs.
    pub workflow_limits: crate::workflow::ValidationLimits,
    /// Size limits of what workers send: outputs, error messages, log lines,
    /// progress. Enforced by the engine for every worker, in-process or remote.
    pub limits: ValueLimits,
}

/// Size limits of the values workers send, in bytes (JSON values serialized).
/// A value over its limit is refused with [`Error::TooLarge`] and nothing is
/// stored; the in-process worker turns an oversized output into a
/// non-retryable `output_too_large` failure and shortens an oversized error
/// message itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValueLimits {
    /// A success report's output. Default 4 MiB (the input's limit).
    pub max_output_bytes: usize,
    /// A failure report's error message (its code is at most 128 bytes).
    /// Default 64 KiB.
    pub max_error_message_bytes: usize,
    /// One log line. Default 64 KiB.
    pub max_log_line_bytes: usize,
    /// A heartbeat's progress. Default 64 KiB.
    pub max_progress_bytes: usize,
}

impl Default for ValueLimits {
    fn default() -> Self {
        ValueLimits {
            max_output_bytes: crate::task::TaskSpec::MAX_INPUT_BYTES,
            max_error_message_bytes: 64 << 10,
            max_log_line_bytes: 64 << 10,
            max_progress_bytes: 64 << 10,
        }
    }
}

/// The longest error code a report may carry.
const MAX_ERROR_CODE_BYTES: usize = 128;

impl ValueLimits {
    fn check(what: &str, size: usize, limit: usize) -> Result<()> {
        if size > limit {
            Err(Error::TooLarge {
                what: what.into(),
                size,
                limit,
            })
        } else {
            Ok(())
        }
    }

    /// Checks a report's output or error against the limits.
    pub fn check_report(&self, outcome: &ReportOutcome) -> Result<()> {
        match outcome {
            ReportOutcome::Success { output } => {
                Self::check("output", json_size(output), self.max_output_bytes)
            }
            ReportOutcome::Failure { error } => {
                Self::check("error.code", error.code.len(), MAX_ERROR_CODE_BYTES)?;
                Self::check(
                    "error.message",
                    error.message.len(),
                    self.max_error_message_bytes,
                )
            }
        }
    }

    /// Checks a heartbeat's progress against its limit.
    pub fn check_progress(&self, progress: Option<&serde_json::Value>) -> Result<()> {
        match progress {
            Some(p) => Self::check("progress", json_size(p), self.max_progress_bytes),
            None => Ok(()),
        }
    }

    /// Checks a log line against its limit.
    pub fn check_log_line(&self, line: &str) -> Result<()> {
        Self::check("log line", line.len(), self.max_log_line_bytes)
    }
}

/// The size of `v` serialized as JSON, without building the bytes.
pub(crate) fn json_size(v: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    match serde_json::to_writer(&mut c, v) {
        Ok(()) => c.0,
        Err(_) => usize::MAX,
    }
}

impl Default for HiveConfig {
    fn default() -> Self {
        HiveConfig {
            run_supervisor: true,
            sweep_interval: Duration::from_secs(1),
            sweep_batch: 10_000,
            sweep_max_batches: 16,
            node_heartbeat_interval: Duration::from_secs(2),
            max_submit_batch: 100_000,
            subscription_poll: Duration::from_secs(5),
            run_workflows: true,
            workflow_poll: Duration::from_millis(250),
            workflow_scan: Duration::from_secs(2),
            workflow_limits: crate::workflow::ValidationLimits::default(),
            limits: ValueLimits::default(),
        }
    }
}

impl HiveConfig {
    /// A node not seen for this long is Lost.
    pub fn node_lost_after(&self) -> Duration {
        self.node_heartbeat_interval * 3
    }
}

/// Builds a [`Hive`].
#[derive(Debug)]
pub struct HiveBuilder {
    store: Option<Arc<dyn Store>>,
    clock: Arc<dyn Clock>,
    scheduler: Arc<dyn Scheduler>,
    authorizer: Arc<dyn Authorizer>,
    auditor: Arc<dyn Auditor>,
    config: HiveConfig,
}

impl HiveBuilder {
    /// Where privileged actions and denials are recorded (default: nowhere,
    /// [`NoAudit`]; `hive::open` wires `hive-iam`'s hash-chained trail).
    pub fn auditor(mut self, auditor: Arc<dyn Auditor>) -> Self {
        self.auditor = auditor;
        self
    }

    /// The store (required). See the `hive-store` crate for backends.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The clock (default: the wall clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The placement policy (default: [`FairScheduler`]).
    pub fn scheduler(mut self, scheduler: Arc<dyn Scheduler>) -> Self {
        self.scheduler = scheduler;
        self
    }

    /// The authorization policy (default: [`ScopeAuthorizer`]).
    pub fn authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizer = authorizer;
        self
    }

    /// The settings.
    pub fn config(mut self, config: HiveConfig) -> Self {
        self.config = config;
        self
    }

    /// Builds the engine. With `run_supervisor` (the default) it must be called
    /// inside a tokio runtime, where the supervisor is spawned.
    pub fn build(self) -> Result<Hive> {
        let store = self.store.ok_or_else(|| Error::InvalidArgument {
            message: "HiveBuilder needs a store: Hive::builder().store(...)".into(),
        })?;
        if self.config.sweep_interval.is_zero()
            || self.config.node_heartbeat_interval.is_zero()
            || self.config.workflow_poll.is_zero()
            || self.config.workflow_scan.is_zero()
        {
            return Err(Error::InvalidArgument {
                message: "sweep_interval, node_heartbeat_interval, workflow_poll and \
                          workflow_scan must be greater than zero"
                    .into(),
            });
        }
        let shutdown = CancellationToken::new();
        let inner = Arc::new(Inner {
            store,
            clock: self.clock,
            scheduler: self.scheduler,
            authorizer: self.authorizer,
            auditor: self.auditor,
            config: self.config,
            shutdown: shutdown.clone(),
            workflows: workflow::Workflows::default(),
        });
        let hive = Hive {
            inner,
            _guard: Some(Arc::new(shutdown.drop_guard())),
        };
        if hive.inner.config.run_supervisor {
            let handle =
                tokio::runtime::Handle::try_current().map_err(|_| Error::InvalidArgument {
                    message: "the supervisor needs a tokio runtime: build the Hive inside one, \
                          or set run_supervisor = false"
                        .into(),
                })?;
            handle.spawn(supervisor::run(hive.detached()));
        }
        if hive.inner.config.run_workflows {
            let handle =
                tokio::runtime::Handle::try_current().map_err(|_| Error::InvalidArgument {
                    message: "the workflow driver needs a tokio runtime: build the Hive inside \
                              one, or set run_workflows = false"
                        .into(),
                })?;
            handle.spawn(workflow::run(hive.detached()));
        }
        Ok(hive)
    }
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    scheduler: Arc<dyn Scheduler>,
    authorizer: Arc<dyn Authorizer>,
    auditor: Arc<dyn Auditor>,
    config: HiveConfig,
    shutdown: CancellationToken,
    workflows: workflow::Workflows,
}

/// The engine. Cheap to clone; every clone is the same engine. When the last
/// clone a host holds is dropped (or [`Hive::shutdown`] is called), the supervisor
/// and the in-process workers stop.
#[derive(Clone, Debug)]
pub struct Hive {
    inner: Arc<Inner>,
    _guard: Option<Arc<DropGuard>>,
}

/// A worker's answer for one lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReportOutcome {
    /// The attempt succeeded with this output.
    Success {
        /// The output.
        output: serde_json::Value,
    },
    /// The attempt failed.
    Failure {
        /// The error.
        error: TaskError,
    },
}

/// A worker's report on one lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The lease.
    pub token: LeaseToken,
    /// What happened.
    #[serde(flatten)]
    pub outcome: ReportOutcome,
}

/// What a node claims.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClaimOptions {
    /// At most this many tasks (capped by free capacity). Default 1.
    pub max: u32,
    /// Only tasks for these agents (any when empty).
    pub agents: Vec<AgentRef>,
    /// Also start the claimed tasks (Scheduled and Running in one step).
    pub start: bool,
}

impl Hive {
    /// A builder; the store is required.
    pub fn builder() -> HiveBuilder {
        HiveBuilder {
            store: None,
            clock: Arc::new(SystemClock),
            scheduler: Arc::new(FairScheduler::default()),
            authorizer: Arc::new(ScopeAuthorizer),
            auditor: Arc::new(NoAudit),
            config: HiveConfig::default(),
        }
    }

    /// A handle that does not keep the engine alive (for its own tasks).
    pub(crate) fn detached(&self) -> Hive {
        Hive {
            inner: self.inner.clone(),
            _guard: None,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The settings.
    pub fn config(&self) -> &HiveConfig {
        &self.inner.config
    }

    /// Stops the supervisor and every in-process worker of this engine.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Whether [`Hive::shutdown`] was called (or every owning handle dropped).
    pub fn is_shut_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Asks the authorizer whether `p` may do `action` on `resource`; audits a
    /// denial, and (fail closed) an allowed privileged action. The engine calls it
    /// before every operation; crates built on the engine (`hive-iam`,
    /// `hive-registry`, hosts) call it for their own actions.
    pub async fn authorize(
        &self,
        p: &Principal,
        action: Action,
        resource: &Resource,
    ) -> Result<()> {
        self.authorize_with(p, action, resource, || serde_json::Value::Null)
            .await
    }

    /// [`Hive::authorize`] with details for the audit entry of a privileged
    /// action (computed only when it is recorded).
    pub async fn authorize_with(
        &self,
        p: &Principal,
        action: Action,
        resource: &Resource,
        details: impl FnOnce() -> serde_json::Value,
    ) -> Result<()> {
        // A caller whose tenant or id is malformed cannot even be audited.
        p.validate()?;
        match self.inner.authorizer.authorize(p, action, resource) {
            Ok(()) if action.is_privileged() => {
                self.audit(p, action, resource, AuditOutcome::Allowed, details())
                    .await
            }
            Ok(()) => Ok(()),
            Err(e) => Err(self.denied(p, action, resource, e).await),
        }
    }

    /// [`Hive::authorize_with`] for a request that must also pass `check`
    /// (validation): a caller who may not act is denied (audited `Denied`); a
    /// request that fails `check` is audited `Refused` with the reason and its
    /// error returned; a valid one is audited `Allowed` (fail closed) and
    /// `check`'s value returned. Nothing is audited as allowed that is then
    /// refused.
    pub async fn authorize_checked<T>(
        &self,
        p: &Principal,
        action: Action,
        resource: &Resource,
        details: impl FnOnce() -> serde_json::Value,
        check: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        p.validate()?;
        if let Err(e) = self.inner.authorizer.authorize(p, action, resource) {
            return Err(self.denied(p, action, resource, e).await);
        }
        match check() {
            Ok(value) => {
                if action.is_privileged() {
                    self.audit(p, action, resource, AuditOutcome::Allowed, details())
                        .await?;
                }
                Ok(value)
            }
            Err(e) => {
                if action.is_privileged() {
                    let mut d = details();
                    let reason = serde_json::Value::String(e.to_string());
                    match d.as_object_mut() {
                        Some(map) => {
                            map.insert("reason".into(), reason);
                        }
                        None => d = serde_json::json!({ "reason": reason }),
                    }
                    if let Err(audit) = self
                        .audit(p, action, resource, AuditOutcome::Refused, d)
                        .await
                    {
                        tracing::warn!(error = %audit, "could not audit a refused request");
                    }
                }
                Err(e)
            }
        }
    }

    /// Refuses `action` with `reason`: audits the denial and returns the
    /// `Forbidden` error to hand back to the caller.
    pub async fn deny(
        &self,
        p: &Principal,
        action: Action,
        resource: &Resource,
        reason: &str,
    ) -> Error {
        let e = Error::Forbidden {
            action: action.as_str().into(),
            reason: reason.into(),
        };
        self.denied(p, action, resource, e).await
    }

    async fn denied(&self, p: &Principal, action: Action, resource: &Resource, e: Error) -> Error {
        tracing::info!(tenant = %p.tenant, actor = %p.id, %action, %resource, error = %e, "denied");
        let reason = match &e {
            Error::Forbidden { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        let details = serde_json::json!({ "reason": reason });
        if let Err(audit) = self
            .audit(p, action, resource, AuditOutcome::Denied, details)
            .await
        {
            tracing::warn!(error = %audit, "could not audit a denial");
        }
        e
    }

    /// Audits the per-item `Forbidden` answers of a worker batch (a lease held
    /// by another node) and hands the answers back.
    async fn audit_refusals(
        &self,
        p: &Principal,
        tasks: &[TaskId],
        out: Vec<Result<Ack>>,
    ) -> Vec<Result<Ack>> {
        if !out
            .iter()
            .any(|r| matches!(r, Err(Error::Forbidden { .. })))
        {
            return out;
        }
        let mut answers = Vec::with_capacity(out.len());
        for (r, task) in out.into_iter().zip(tasks) {
            answers.push(match r {
                Err(e @ Error::Forbidden { .. }) => Err(self.refused_on_task(p, *task, e).await),
                other => other,
            });
        }
        answers
    }

    async fn refused_on_task(&self, p: &Principal, task: TaskId, e: Error) -> Error {
        let resource = Resource::Named {
            kind: "task",
            id: task.to_string(),
            tenant: p.tenant.clone(),
        };
        self.denied(p, Action::WorkNode, &resource, e).await
    }

    async fn audit(
        &self,
        p: &Principal,
        action: Action,
        resource: &Resource,
        outcome: AuditOutcome,
        details: serde_json::Value,
    ) -> Result<()> {
        let entry = AuditEntry {
            at: self.inner.clock.now(),
            tenant: p.tenant.clone(),
            actor: p.id.clone(),
            actor_kind: p.kind.name().into(),
            action: action.as_str().into(),
            resource: resource.to_string(),
            outcome,
            details,
        };
        self.inner.auditor.record(vec![entry]).await
    }

    fn check_live(&self) -> Result<()> {
        if self.inner.shutdown.is_cancelled() {
            Err(Error::Shutdown)
        } else {
            Ok(())
        }
    }

    // ----- tasks -------------------------------------------------------------

    /// Submits one task; see [`Hive::submit_batch`].
    pub async fn submit(&self, p: &Principal, spec: TaskSpec) -> Result<Submitted> {
        let mut out = self.submit_batch(p, vec![spec]).await?;
        out.pop().ok_or_else(|| Error::Backend {
            message: "store answered an empty batch".into(),
            source: None,
        })
    }

    /// Submits tasks owned by `p`. Every spec is validated first: one invalid spec
    /// refuses the whole batch and stores nothing. A spec whose idempotency key
    /// was used before in the tenant returns the existing task.
    #[instrument(level = "debug", skip_all, fields(tenant = %p.tenant, n = specs.len()))]
    pub async fn submit_batch(
        &self,
        p: &Principal,
        specs: Vec<TaskSpec>,
    ) -> Result<Vec<Submitted>> {
        self.check_live()?;
        let n = specs.len();
        let max = self.inner.config.max_submit_batch;
        self.authorize_checked(
            p,
            Action::SubmitTask,
            &Resource::Tenant(p.tenant.clone()),
            || serde_json::json!({ "tasks": n }),
            || {
                if n > max {
                    return Err(Error::InvalidArgument {
                        message: format!("batch of {n} tasks exceeds max_submit_batch {max}"),
                    });
                }
                for (i, spec) in specs.iter().enumerate() {
                    spec.validate().map_err(|e| match e {
                        Error::InvalidSpec { field, message } if n > 1 => Error::InvalidSpec {
                            field: format!("[{i}].{field}"),
                            message,
                        },
                        e => e,
                    })?;
                }
                Ok(())
            },
        )
        .await?;
        let owner = Owner {
            tenant: p.tenant.clone(),
            principal: p.id.clone(),
        };
        let tasks = specs
            .into_iter()
            .map(|spec| NewTask {
                id: TaskId::new(),
                owner: owner.clone(),
                spec: Arc::new(spec),
            })
            .collect();
        self.inner.store.submit(tasks, self.inner.clock.now()).await
    }

    /// One task. Another tenant's task is `NotFound`.
    #[instrument(level = "debug", skip_all, fields(task = %id))]
    pub async fn get_task(&self, p: &Principal, id: TaskId) -> Result<Task> {
        let task = self.visible_task(p, id).await?;
        self.authorize(p, Action::ReadTask, &task_resource(&task))
            .await?;
        Ok(task)
    }

    async fn visible_task(&self, p: &Principal, id: TaskId) -> Result<Task> {
        match self.inner.store.get_task(id).await? {
            Some(t) if p.can_see_tenant(&t.owner.tenant) => Ok(t),
            _ => Err(Error::not_found("task", id)),
        }
    }

    /// A page of the caller's tenant's tasks.
    #[instrument(level = "debug", skip_all, fields(tenant = %p.tenant))]
    pub async fn list_tasks(&self, p: &Principal, query: &TaskQuery) -> Result<Page<Task>> {
        self.authorize(p, Action::ReadTask, &Resource::Tenant(p.tenant.clone()))
            .await?;
        self.inner.store.list_tasks(&p.tenant, query).await
    }

    /// Cancels a task that has not ended. Its lease, if any, is lost: the worker's
    /// late report gets `LeaseLost`.
    #[instrument(level = "debug", skip_all, fields(task = %id))]
    pub async fn cancel(
        &self,
        p: &Principal,
        id: TaskId,
        reason: impl Into<String>,
    ) -> Result<Ack> {
        let task = self.visible_task(p, id).await?;
        self.authorize(p, Action::CancelTask, &task_resource(&task))
            .await?;
        let op = Op::Cancel {
            by: p.id.clone(),
            reason: reason.into(),
        };
        let ack = self.apply_one(id, op).await?;
        self.wake_workflows();
        Ok(ack)
    }

    async fn apply_one(&self, task: TaskId, op: Op) -> Result<Ack> {
        let mut out = self
            .inner
            .store
            .apply(vec![Command { task, op }], self.inner.clock.now())
            .await?;
        out.pop().unwrap_or_else(|| {
            Err(Error::Backend {
                message: "store answered an empty batch".into(),
                source: None,
            })
        })
    }

    /// The events of a task after `after_seq`, then live ones as they are stored;
    /// the subscription ends right after the terminal event.
    #[instrument(level = "debug", skip_all, fields(task = %id, after_seq))]
    pub async fn subscribe(
        &self,
        p: &Principal,
        id: TaskId,
        after_seq: u64,
    ) -> Result<TaskSubscription> {
        let task = self.visible_task(p, id).await?;
        self.authorize(p, Action::ReadTask, &task_resource(&task))
            .await?;
        Ok(TaskSubscription::new(self.detached(), id, after_seq))
    }

    /// Up to `limit` (1..=10 000) events of a task after `after_seq`, in order,
    /// without waiting for more: what is stored now. Another tenant's task is
    /// `NotFound`. To follow live events, [`Hive::subscribe`].
    #[instrument(level = "debug", skip_all, fields(task = %id, after_seq))]
    pub async fn read_events(
        &self,
        p: &Principal,
        id: TaskId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<TaskEvent>> {
        let task = self.visible_task(p, id).await?;
        self.authorize(p, Action::ReadTask, &task_resource(&task))
            .await?;
        self.inner
            .store
            .read_events(id, after_seq, limit.clamp(1, 10_000))
            .await
    }

    /// Waits until a task ends and returns it in its terminal state (at once if
    /// it has ended). Another tenant's task is `NotFound`. See
    /// [`Hive::wait_timeout`] to bound the wait.
    #[instrument(level = "debug", skip_all, fields(task = %id))]
    pub async fn wait(&self, p: &Principal, id: TaskId) -> Result<Task> {
        let task = self.get_task(p, id).await?;
        if task.state.is_terminal() {
            return Ok(task);
        }
        let mut sub = TaskSubscription::new(self.detached(), id, task.last_seq);
        while let Some(event) = sub.next().await {
            event?;
        }
        self.visible_task(p, id).await
    }

    /// [`Hive::wait`], giving up with [`Error::Timeout`] after `timeout` (the
    /// task goes on).
    pub async fn wait_timeout(&self, p: &Principal, id: TaskId, timeout: Duration) -> Result<Task> {
        tokio::time::timeout(timeout, self.wait(p, id))
            .await
            .unwrap_or(Err(Error::Timeout(timeout)))
    }

    /// The caller's tenant's feed after `cursor`, then live; never ends by itself.
    pub async fn feed(&self, p: &Principal, cursor: u64) -> Result<FeedSubscription> {
        self.authorize(p, Action::ReadTask, &Resource::Tenant(p.tenant.clone()))
            .await?;
        Ok(FeedSubscription::new(
            self.detached(),
            p.tenant.clone(),
            cursor,
        ))
    }

    /// One page of the caller's tenant's feed after `cursor` (for pollers).
    pub async fn read_feed(
        &self,
        p: &Principal,
        cursor: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        self.authorize(p, Action::ReadTask, &Resource::Tenant(p.tenant.clone()))
            .await?;
        self.inner
            .store
            .read_feed(&p.tenant, cursor, limit.clamp(1, 10_000))
            .await
    }

    /// Acknowledges, as consumer `consumer`, the terminal events of `tasks`.
    /// Acknowledging twice, or a task that has not ended, is harmless; a task
    /// id of another tenant (or none) is `NotFound` and acknowledges nothing.
    pub async fn ack_terminal(
        &self,
        p: &Principal,
        consumer: &str,
        tasks: &[TaskId],
    ) -> Result<()> {
        self.authorize(p, Action::ConsumeFeed, &Resource::Tenant(p.tenant.clone()))
            .await?;
        validate_consumer(consumer)?;
        // Like every other call, another tenant's (or an unknown) task id is
        // `NotFound`, and nothing is acknowledged.
        let found = self.inner.store.get_tasks(tasks).await?;
        let known: rustc_hash::FxHashSet<TaskId> = found
            .iter()
            .filter(|t| t.owner.tenant == p.tenant)
            .map(|t| t.id)
            .collect();
        if let Some(missing) = tasks.iter().find(|id| !known.contains(id)) {
            return Err(Error::not_found("task", missing));
        }
        self.inner
            .store
            .ack_terminal(&p.tenant, consumer, tasks)
            .await
    }

    /// Terminal events consumer `consumer` has not acknowledged yet, oldest first.
    pub async fn unacked_terminal(
        &self,
        p: &Principal,
        consumer: &str,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        self.authorize(p, Action::ConsumeFeed, &Resource::Tenant(p.tenant.clone()))
            .await?;
        validate_consumer(consumer)?;
        self.inner
            .store
            .unacked_terminal(&p.tenant, consumer, limit.clamp(1, 10_000))
            .await
    }

    // ----- nodes -------------------------------------------------------------

    /// Registers a node. A user may register nodes owned by itself; a `System`
    /// node needs `system:admin`. Returns the node; its worker acts as
    /// [`Principal::worker`]`(node.tenant(), node.id)`.
    #[instrument(level = "debug", skip_all, fields(tenant = %p.tenant, name = %spec.name))]
    pub async fn register_node(&self, p: &Principal, spec: NodeSpec) -> Result<Node> {
        self.check_live()?;
        let id = NodeId::new();
        let resource = Resource::Node {
            id,
            tenant: node_tenant(&spec.owner),
            owner: node_principal(&spec.owner),
        };
        let refusal = match &spec.owner {
            NodeOwner::System if !p.is_cross_tenant() && p.kind != PrincipalKind::System => {
                Some("a system node needs system:admin")
            }
            NodeOwner::User { tenant, principal }
                if !p.is_cross_tenant() && (tenant != &p.tenant || principal != &p.id) =>
            {
                Some("a user may only register nodes it owns")
            }
            _ => None,
        };
        if let Some(reason) = refusal {
            if matches!(p.kind, PrincipalKind::Worker { .. }) {
                // A worker gets the policy's own answer (and its audit entry).
                self.authorize(p, Action::RegisterNode, &resource).await?;
            }
            return Err(self.deny(p, Action::RegisterNode, &resource, reason).await);
        }
        self.authorize_checked(
            p,
            Action::RegisterNode,
            &resource,
            || serde_json::json!({ "name": spec.name, "capacity": spec.capacity }),
            || spec.validate(),
        )
        .await?;
        let now = self.inner.clock.now();
        let node = Node {
            id,
            spec,
            status: NodeStatus::Ready,
            in_flight: 0,
            registered_at: now,
            last_seen: now,
        };
        self.inner.store.register_node(node.clone()).await?;
        tracing::info!(node = %node.id, "node registered");
        Ok(node)
    }

    async fn visible_node(&self, p: &Principal, id: NodeId) -> Result<Node> {
        match self.inner.store.get_node(id).await? {
            Some(n) if node_visible(p, &n) => Ok(n),
            _ => Err(Error::not_found("node", id)),
        }
    }

    /// One node: system nodes and the caller's tenant's nodes are visible.
    pub async fn get_node(&self, p: &Principal, id: NodeId) -> Result<Node> {
        let node = self.visible_node(p, id).await?;
        self.authorize(p, Action::ReadNode, &node_resource(&node))
            .await?;
        Ok(node)
    }

    /// The nodes visible to the caller.
    pub async fn list_nodes(&self, p: &Principal) -> Result<Vec<Node>> {
        self.authorize(p, Action::ReadNode, &Resource::Tenant(p.tenant.clone()))
            .await?;
        let mut nodes = self.inner.store.list_nodes().await?;
        nodes.retain(|n| node_visible(p, n));
        Ok(nodes)
    }

    /// Drains a node: it keeps its leases but claims nothing new.
    pub async fn drain_node(&self, p: &Principal, id: NodeId) -> Result<Node> {
        let node = self.visible_node(p, id).await?;
        self.authorize(p, Action::DrainNode, &node_resource(&node))
            .await?;
        self.inner
            .store
            .set_node_status(id, NodeStatus::Draining, self.inner.clock.now())
            .await
    }

    /// Removes a node; its leases are reclaimed at once (as placement lost).
    /// Its owner, an operator or an admin may, and its own worker (as it shuts
    /// down); every removal is authorized and audited as `node.remove`.
    pub async fn remove_node(&self, p: &Principal, id: NodeId) -> Result<()> {
        let node = match self.worker_node(p) {
            // A worker sees no nodes, but its own it may remove.
            Some(own) if own == id => self
                .inner
                .store
                .get_node(id)
                .await?
                .ok_or_else(|| Error::not_found("node", id))?,
            _ => self.visible_node(p, id).await?,
        };
        self.authorize(p, Action::RemoveNode, &node_resource(&node))
            .await?;
        self.inner
            .store
            .remove_node(node.id, self.inner.clock.now())
            .await
    }

    /// A node's heartbeat, by its own worker.
    pub async fn node_heartbeat(&self, p: &Principal, id: NodeId) -> Result<Node> {
        self.check_worker(p, id).await?;
        self.inner
            .store
            .touch_node(id, self.inner.clock.now())
            .await
    }

    // ----- worker protocol ---------------------------------------------------

    fn worker_node(&self, p: &Principal) -> Option<NodeId> {
        p.worker_node()
    }

    async fn check_worker(&self, p: &Principal, node: NodeId) -> Result<()> {
        let resource = Resource::Node {
            id: node,
            tenant: None,
            owner: None,
        };
        let reason = match p.kind {
            PrincipalKind::Worker { node: own } if own == node => None,
            PrincipalKind::System => None,
            PrincipalKind::Worker { .. } => Some("a worker may only work its own node"),
            _ => Some("only the node's worker may work it"),
        };
        if let Some(reason) = reason {
            return Err(self.deny(p, Action::WorkNode, &resource, reason).await);
        }
        self.authorize(p, Action::WorkNode, &resource).await
    }

    async fn acting_node(&self, p: &Principal) -> Result<NodeId> {
        match p.worker_node() {
            Some(node) => Ok(node),
            None => Err(self
                .deny(
                    p,
                    Action::WorkNode,
                    &Resource::System,
                    "only a worker principal bound to a node may work tasks",
                )
                .await),
        }
    }

    /// Leases eligible pending tasks to the caller's node.
    #[instrument(level = "debug", skip_all, fields(node = %node, max = options.max))]
    pub async fn claim(
        &self,
        p: &Principal,
        node: NodeId,
        options: &ClaimOptions,
    ) -> Result<ClaimResult> {
        self.check_live()?;
        self.check_worker(p, node).await?;
        self.inner
            .store
            .claim(ClaimRequest {
                node,
                max: options.max.max(1),
                agents: &options.agents,
                start: options.start,
                scheduler: &*self.inner.scheduler,
                now: self.inner.clock.now(),
            })
            .await
    }

    /// Starts claimed tasks (Scheduled → Running).
    pub async fn start(&self, p: &Principal, tokens: &[LeaseToken]) -> Result<Vec<Result<Ack>>> {
        let node = self.acting_node(p).await?;
        self.check_worker(p, node).await?;
        let cmds: Vec<Command> = tokens
            .iter()
            .map(|&token| Command {
                task: token.task,
                op: Op::Start { token, node },
            })
            .collect();
        let tasks: Vec<TaskId> = cmds.iter().map(|c| c.task).collect();
        let out = self.inner.store.apply(cmds, self.inner.clock.now()).await?;
        Ok(self.audit_refusals(p, &tasks, out).await)
    }

    /// Heartbeats running tasks, with optional progress. A `LeaseLost` answer
    /// tells the worker to stop that attempt.
    pub async fn heartbeat(
        &self,
        p: &Principal,
        beats: Vec<(LeaseToken, Option<serde_json::Value>)>,
    ) -> Result<Vec<Result<Ack>>> {
        let node = self.acting_node(p).await?;
        self.check_worker(p, node).await?;
        let limits = &self.inner.config.limits;
        let checked: Vec<Result<Command>> = beats
            .into_iter()
            .map(|(token, progress)| {
                limits.check_progress(progress.as_ref())?;
                Ok(Command {
                    task: token.task,
                    op: Op::Heartbeat {
                        token,
                        node,
                        progress,
                    },
                })
            })
            .collect();
        self.apply_checked(p, checked).await
    }

    /// Applies the commands that passed their checks, and answers each item in
    /// order: the check's error, or the store's answer.
    async fn apply_checked(
        &self,
        p: &Principal,
        checked: Vec<Result<Command>>,
    ) -> Result<Vec<Result<Ack>>> {
        let mut refused: Vec<Option<Error>> = Vec::with_capacity(checked.len());
        let mut cmds = Vec::with_capacity(checked.len());
        for c in checked {
            match c {
                Ok(cmd) => {
                    refused.push(None);
                    cmds.push(cmd);
                }
                Err(e) => refused.push(Some(e)),
            }
        }
        let tasks: Vec<TaskId> = cmds.iter().map(|c| c.task).collect();
        let out = if cmds.is_empty() {
            Vec::new()
        } else {
            let out = self.inner.store.apply(cmds, self.inner.clock.now()).await?;
            self.audit_refusals(p, &tasks, out).await
        };
        let mut applied = out.into_iter();
        Ok(refused
            .into_iter()
            .map(|r| match r {
                Some(e) => Err(e),
                None => applied.next().unwrap_or_else(empty_batch),
            })
            .collect())
    }

    /// Appends a log line to a task the caller's node holds.
    pub async fn log(
        &self,
        p: &Principal,
        token: LeaseToken,
        stream: &str,
        line: &str,
    ) -> Result<Ack> {
        let node = self.acting_node(p).await?;
        self.check_worker(p, node).await?;
        if stream.is_empty() || stream.len() > 64 || stream.chars().any(char::is_control) {
            return Err(Error::InvalidArgument {
                message: "log stream names are 1 to 64 bytes with no control characters".into(),
            });
        }
        self.inner.config.limits.check_log_line(line)?;
        let ack = self
            .apply_one(
                token.task,
                Op::Log {
                    token,
                    node,
                    stream: stream.to_owned(),
                    line: line.to_owned(),
                },
            )
            .await;
        match ack {
            Err(e @ Error::Forbidden { .. }) => Err(self.refused_on_task(p, token.task, e).await),
            other => other,
        }
    }

    /// Reports the outcome of leases. Each answer is the [`Ack`] with the seq of the
    /// stored terminal (or `AttemptFailed`) event; a duplicate of an accepted report
    /// gets the same answer; a report on a lease that was taken away gets
    /// `LeaseLost`; an output or error over [`HiveConfig::limits`] gets
    /// [`Error::TooLarge`] and stores nothing. Retry on an `Err` of the whole
    /// call until an answer arrives.
    #[instrument(level = "debug", skip_all, fields(n = reports.len()))]
    pub async fn report(&self, p: &Principal, reports: Vec<Report>) -> Result<Vec<Result<Ack>>> {
        let node = self.acting_node(p).await?;
        self.check_worker(p, node).await?;
        let limits = &self.inner.config.limits;
        let checked: Vec<Result<Command>> = reports
            .into_iter()
            .map(|r| {
                limits.check_report(&r.outcome)?;
                Ok(Command {
                    task: r.token.task,
                    op: match r.outcome {
                        ReportOutcome::Success { output } => Op::Succeed {
                            token: r.token,
                            node,
                            output,
                        },
                        ReportOutcome::Failure { error } => Op::Fail {
                            token: r.token,
                            node,
                            error,
                        },
                    },
                })
            })
            .collect();
        let out = self.apply_checked(p, checked).await?;
        if out
            .iter()
            .any(|a| a.as_ref().is_ok_and(|a| a.state.is_terminal()))
        {
            self.wake_workflows();
        }
        Ok(out)
    }

    /// Reports one success.
    pub async fn report_success(
        &self,
        p: &Principal,
        token: LeaseToken,
        output: serde_json::Value,
    ) -> Result<Ack> {
        let outcome = ReportOutcome::Success { output };
        self.report(p, vec![Report { token, outcome }])
            .await?
            .pop()
            .unwrap_or_else(empty_batch)
    }

    /// Reports one failure.
    pub async fn report_failure(
        &self,
        p: &Principal,
        token: LeaseToken,
        error: TaskError,
    ) -> Result<Ack> {
        let outcome = ReportOutcome::Failure { error };
        self.report(p, vec![Report { token, outcome }])
            .await?
            .pop()
            .unwrap_or_else(empty_batch)
    }

    // ----- supervisor --------------------------------------------------------

    /// Runs one supervisor sweep now (the background supervisor does this every
    /// `sweep_interval`). Tests on a manual clock call it after moving time.
    pub async fn sweep(&self, p: &Principal) -> Result<SweepReport> {
        self.authorize(p, Action::Supervise, &Resource::System)
            .await?;
        self.sweep_inner().await
    }

    pub(crate) async fn sweep_inner(&self) -> Result<SweepReport> {
        let opts = SweepOptions {
            limit: self.inner.config.sweep_batch,
            node_lost_after: self.inner.config.node_lost_after(),
        };
        let mut total = SweepReport::default();
        let rounds = self.inner.config.sweep_max_batches.max(1);
        for _ in 0..rounds {
            let r = self
                .inner
                .store
                .sweep(self.inner.clock.now(), &opts)
                .await?;
            total.expired += r.expired;
            total.nodes_lost += r.nodes_lost;
            total.placements_lost += r.placements_lost;
            total.more = r.more;
            if !r.more {
                break;
            }
        }
        if total.more {
            tracing::warn!(
                rounds,
                expired = total.expired,
                "sweep stopped after sweep_max_batches store calls with more due; \
                 the rest waits for the next sweep"
            );
        }
        if total.expired + total.placements_lost > 0 {
            self.wake_workflows();
        }
        Ok(total)
    }
}

fn empty_batch<T>() -> Result<T> {
    Err(Error::Backend {
        message: "store answered an empty batch".into(),
        source: None,
    })
}

fn validate_consumer(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 128 {
        return Err(Error::InvalidArgument {
            message: "consumer names are 1 to 128 bytes".into(),
        });
    }
    Ok(())
}

fn task_resource(t: &Task) -> Resource {
    Resource::Task {
        id: t.id,
        tenant: t.owner.tenant.clone(),
        owner: t.owner.principal.clone(),
    }
}

fn node_tenant(o: &NodeOwner) -> Option<TenantId> {
    match o {
        NodeOwner::System => None,
        NodeOwner::User { tenant, .. } => Some(tenant.clone()),
    }
}

fn node_principal(o: &NodeOwner) -> Option<crate::principal::PrincipalId> {
    match o {
        NodeOwner::System => None,
        NodeOwner::User { principal, .. } => Some(principal.clone()),
    }
}

fn node_resource(n: &Node) -> Resource {
    Resource::Node {
        id: n.id,
        tenant: node_tenant(&n.spec.owner),
        owner: node_principal(&n.spec.owner),
    }
}

fn node_visible(p: &Principal, n: &Node) -> bool {
    match &n.spec.owner {
        NodeOwner::System => true,
        NodeOwner::User { tenant, .. } => p.can_see_tenant(tenant),
    }
}
