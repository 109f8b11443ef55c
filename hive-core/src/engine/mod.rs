//! The engine: [`Hive`], what a host embeds.
//!
//! Every operation takes the calling [`Principal`]; the engine checks tenancy
//! (another tenant's object is `NotFound`), asks the [`Authorizer`], validates the
//! input, and hands the state change to the [`crate::store::TaskStore`], which applies it
//! atomically with its event.

mod diagnose;
mod nodes;
pub mod partitions;
mod schedules;
mod subscribe;
mod supervisor;
mod tasks;
mod worker_protocol;
mod workflow;

pub use diagnose::{TaskDiagnosis, Waiting};
pub use subscribe::{FeedSubscription, TaskSubscription};
pub use workflow::{DriverStats, WorkflowSubscription};

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
    /// Run the supervisor in this instance (safe in many processes at once):
    /// each `sweep_interval` it expires deadlines, reclaims lost nodes' leases
    /// and fires due schedule slots.
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
    /// How long ended tasks keep their full event streams (see
    /// [`RetentionConfig`]). Default: forever.
    pub retention: RetentionConfig,
}

/// Retention: ended tasks' events and feed entries are compacted once the
/// task has been ended for longer than its tenant's age. A compacted task
/// keeps its row (final state, output, `last_seq`) and its terminal event;
/// reading its stream or the tenant feed from before what is kept is
/// [`Error::OffsetExpired`]. The supervisor compacts every `interval`, at
/// most `batch × max_batches` tasks per tenant per pass, so it never holds
/// claims up for long (see [`crate::store::TaskStore::compact`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// The age for every tenant without its own (`None`: keep forever).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub keep_ended: Option<Duration>,
    /// Deletes compacted tasks entirely (row, terminal event, idempotency
    /// key, acknowledgements) once they have been ended this long, for every
    /// tenant with a retention age; then they are `NotFound`. Default: keep
    /// them. Only compacted tasks are deleted, so an age below the tenant's
    /// compaction age acts as that age.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub delete_ended: Option<Duration>,
    /// Per-tenant ages, overriding `keep_ended`.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tenants: std::collections::BTreeMap<TenantId, HumanDuration>,
    /// How often the supervisor compacts. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Tasks per store call. Default 1,000.
    pub batch: usize,
    /// Store calls per tenant per pass. Default 10.
    pub max_batches: usize,
}

/// A duration written like `1h` or `30m` in settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HumanDuration(#[serde(with = "humantime_serde")] pub Duration);

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_ended: None,
            delete_ended: None,
            tenants: std::collections::BTreeMap::new(),
            interval: Duration::from_secs(60),
            batch: 1_000,
            max_batches: 10,
        }
    }
}

impl RetentionConfig {
    /// How long `tenant`'s ended tasks keep their events (`None`: forever).
    pub fn age_for(&self, tenant: &TenantId) -> Option<Duration> {
        self.tenants.get(tenant).map(|d| d.0).or(self.keep_ended)
    }

    /// Whether any tenant has a retention age.
    pub fn enabled(&self) -> bool {
        self.keep_ended.is_some() || !self.tenants.is_empty()
    }
}

/// What a retention pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    /// Tenants that had a retention age.
    pub tenants: usize,
    /// Tasks compacted.
    pub tasks: usize,
    /// Events deleted.
    pub events: usize,
    /// Compacted tasks deleted (`delete_ended`).
    pub deleted: usize,
    /// Whether some tenant had more to compact than one pass does.
    pub more: bool,
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
            retention: RetentionConfig::default(),
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

    // ----- supervisor --------------------------------------------------------

    /// Runs one supervisor sweep now (the background supervisor does this every
    /// `sweep_interval`). Tests on a manual clock call it after moving time.
    pub async fn sweep(&self, p: &Principal) -> Result<SweepReport> {
        self.authorize(p, Action::Supervise, &Resource::System)
            .await?;
        self.sweep_inner().await
    }

    /// Compacts every tenant's ended tasks older than its retention age
    /// (see [`RetentionConfig`]), as the supervisor does every
    /// `retention.interval`. Needs `system.supervise`.
    pub async fn run_retention(&self, p: &Principal) -> Result<RetentionReport> {
        self.authorize(p, Action::Supervise, &Resource::System)
            .await?;
        self.run_retention_inner().await
    }

    pub(crate) async fn run_retention_inner(&self) -> Result<RetentionReport> {
        let config = &self.inner.config.retention;
        let mut report = RetentionReport::default();
        if !config.enabled() {
            return Ok(report);
        }
        let now = self.inner.clock.now();
        for tenant in self.inner.store.tenants().await? {
            let Some(age) = config.age_for(&tenant) else {
                continue;
            };
            report.tenants += 1;
            let cutoff = crate::clock::Timestamp::from_millis(
                now.as_millis()
                    .saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)),
            );
            for round in 0..config.max_batches.max(1) {
                if self.is_shut_down() {
                    return Ok(report);
                }
                let r = self
                    .inner
                    .store
                    .compact(&tenant, cutoff, config.batch.max(1))
                    .await?;
                report.tasks += r.tasks;
                report.events += r.events;
                if !r.more {
                    break;
                }
                if round + 1 == config.max_batches.max(1) {
                    report.more = true;
                }
            }
            if let Some(delete) = config.delete_ended {
                let cutoff = crate::clock::Timestamp::from_millis(
                    now.as_millis()
                        .saturating_sub(i64::try_from(delete.as_millis()).unwrap_or(i64::MAX)),
                );
                for round in 0..config.max_batches.max(1) {
                    let (n, more) = self
                        .inner
                        .store
                        .purge(&tenant, cutoff, config.batch.max(1))
                        .await?;
                    report.deleted += n;
                    if !more {
                        break;
                    }
                    if round + 1 == config.max_batches.max(1) {
                        report.more = true;
                    }
                }
            }
        }
        if report.tasks + report.deleted > 0 {
            metrics::counter!("hive_tasks_deleted_total").increment(report.deleted as u64);
            metrics::counter!("hive_tasks_compacted_total").increment(report.tasks as u64);
            metrics::counter!("hive_events_compacted_total").increment(report.events as u64);
        }
        Ok(report)
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
        metrics::counter!("hive_deadlines_expired_total").increment(total.expired as u64);
        metrics::counter!("hive_placements_lost_total").increment(total.placements_lost as u64);
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

/// Counts the tasks `acks` ended, by state, in `hive_tasks_terminal_total`,
/// and records each one's submission-to-end time in
/// `hive_task_end_to_end_seconds` (from its id, a UUIDv7 minted at
/// submission: no read). Through the `metrics` facade: a no-op until the host
/// installs a recorder. Returns how many ended.
pub(crate) fn count_terminal(acks: &[(TaskId, Ack)]) -> usize {
    let mut n = 0;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for (id, a) in acks.iter().filter(|(_, a)| a.state.is_terminal()) {
        metrics::counter!("hive_tasks_terminal_total", "state" => a.state.as_str()).increment(1);
        if let Some(ts) = id.as_uuid().get_timestamp() {
            let (secs, nanos) = ts.to_unix();
            let submitted_ms = secs * 1000 + u64::from(nanos / 1_000_000);
            let ms = now_ms.saturating_sub(submitted_ms);
            metrics::histogram!("hive_task_end_to_end_seconds").record(ms as f64 / 1000.0);
        }
        n += 1;
    }
    n
}
