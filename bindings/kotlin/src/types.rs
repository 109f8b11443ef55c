//! Records and enums of the FFI, and their conversions to and from the
//! engine's types. JSON values (inputs, outputs, details) cross as JSON text;
//! the Kotlin layer parses them with kotlinx.serialization.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::HiveError;

/// Milliseconds since the epoch → `SystemTime` (Kotlin: `java.time.Instant`).
pub(crate) fn time(t: hive::Timestamp) -> SystemTime {
    let ms = t.as_millis();
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Parses JSON text for `field`.
pub(crate) fn parse_json(field: &str, text: &str) -> Result<Value, HiveError> {
    serde_json::from_str(text).map_err(|e| HiveError::spec(field, format!("not JSON: {e}")))
}

/// The snake_case name serde gives a unit variant.
fn serde_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// A unit variant from its snake_case name, for `field`.
fn from_name<T: DeserializeOwned>(field: &str, name: &str) -> Result<T, HiveError> {
    serde_json::from_value(Value::String(name.to_owned()))
        .map_err(|e| HiveError::spec(field, e.to_string()))
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Principal {
    /// The tenant the principal belongs to.
    pub tenant: String,
    /// The principal's id within the tenant.
    pub id: String,
    /// Its role.
    pub kind: PrincipalKind,
    /// Its scopes (`task:submit`, …); empty means the role's defaults.
    #[uniffi(default = [])]
    pub scopes: Vec<String>,
}

/// A principal's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum PrincipalKind {
    /// Submits and reads its own tenant's work.
    User,
    /// Also cancels and operates nodes of its tenant.
    Operator,
    /// Everything within its tenant.
    Admin,
    /// Hive itself: every tenant, system nodes.
    System,
}

impl Principal {
    pub(crate) fn to_hive(&self) -> Result<hive::Principal, HiveError> {
        let p = match self.kind {
            PrincipalKind::System => hive::Principal::system(),
            kind => {
                let tenant = hive::TenantId::parse(&self.tenant)?;
                let id = hive::PrincipalId::parse(&self.id)?;
                match kind {
                    PrincipalKind::Operator => hive::Principal::operator(tenant, id),
                    PrincipalKind::Admin => hive::Principal::admin(tenant, id),
                    _ => hive::Principal::user(tenant, id),
                }
            }
        };
        if self.scopes.is_empty() {
            return Ok(p);
        }
        let mut scopes = Vec::with_capacity(self.scopes.len());
        for s in &self.scopes {
            scopes.push(from_name::<hive::Scope>("scopes", s)?);
        }
        Ok(p.with_scopes(scopes.into_iter().collect()))
    }
}

/// How a failed attempt is retried.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct RetryPolicy {
    /// At most this many attempts in all; `null` retries for ever.
    #[uniffi(default = Some(3))]
    pub max_attempts: Option<u32>,
    /// Wait before the second attempt.
    pub initial_interval: Duration,
    /// Each wait is the previous one times this (≥ 1).
    #[uniffi(default = 2.0)]
    pub backoff_coefficient: f64,
    /// Upper bound of one wait.
    #[uniffi(default = None)]
    pub max_interval: Option<Duration>,
    /// Random spread of each wait, 0..1.
    #[uniffi(default = 0.0)]
    pub jitter: f64,
    /// Error codes that are never retried.
    #[uniffi(default = [])]
    pub non_retryable: Vec<String>,
}

impl RetryPolicy {
    fn to_hive(&self) -> hive::RetryPolicy {
        hive::RetryPolicy {
            max_attempts: match self.max_attempts {
                Some(n) => hive::retry::MaxAttempts::Limited(n),
                None => hive::retry::MaxAttempts::Unlimited,
            },
            initial_interval: self.initial_interval,
            backoff_coefficient: self.backoff_coefficient,
            max_interval: self.max_interval,
            jitter: self.jitter,
            non_retryable: self.non_retryable.clone(),
            ..hive::RetryPolicy::default()
        }
    }
}

/// Deadlines of a task; `null` keeps the engine's default.
#[derive(Clone, Debug, Default, PartialEq, uniffi::Record)]
pub struct Timeouts {
    /// From submission (or the retry's due time) to start.
    #[uniffi(default = None)]
    pub schedule_to_start: Option<Duration>,
    /// One attempt, from start to its report.
    #[uniffi(default = None)]
    pub start_to_close: Option<Duration>,
    /// Longest silence between heartbeats.
    #[uniffi(default = None)]
    pub heartbeat: Option<Duration>,
    /// The whole task, all attempts.
    #[uniffi(default = None)]
    pub deadline: Option<Duration>,
}

impl Timeouts {
    fn to_hive(&self) -> hive::Timeouts {
        let d = hive::Timeouts::default();
        hive::Timeouts {
            schedule_to_start: self.schedule_to_start.unwrap_or(d.schedule_to_start),
            start_to_close: self.start_to_close.unwrap_or(d.start_to_close),
            heartbeat: self.heartbeat.unwrap_or(d.heartbeat),
            deadline: self.deadline.or(d.deadline),
        }
    }
}

/// What to run.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct TaskSpec {
    /// A handler name registered on a worker, or an OCI reference.
    pub agent: String,
    /// The input, as JSON text.
    #[uniffi(default = "null")]
    pub input_json: String,
    /// Labels a node must carry.
    #[uniffi(default)]
    pub labels: HashMap<String, String>,
    /// Higher runs first.
    #[uniffi(default = 0)]
    pub priority: i32,
    /// Deadlines.
    #[uniffi(default = None)]
    pub timeouts: Option<Timeouts>,
    /// Retries; `null` is the engine's default (3 attempts, exponential).
    #[uniffi(default = None)]
    pub retry: Option<RetryPolicy>,
    /// Resubmitting the same key returns the same task.
    #[uniffi(default = None)]
    pub idempotency_key: Option<String>,
    /// Not claimable before this long after submission (a delayed task).
    #[uniffi(default = None)]
    pub delay: Option<Duration>,
    /// Not claimable before this time (set this or `delay`).
    #[uniffi(default = None)]
    pub not_before: Option<SystemTime>,
    /// At most `max_running` tasks of the tenant with the same key at once.
    #[uniffi(default = None)]
    pub concurrency: Option<ConcurrencyLimit>,
    /// How fast tasks of the tenant with the same key are claimed.
    #[uniffi(default = None)]
    pub rate_limit: Option<RateLimit>,
}

/// What a task does when its concurrency key is full at submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ConcurrencyStrategy {
    /// Wait for a slot (keys take turns).
    Queue,
    /// The new task is cancelled.
    CancelNewest,
    /// The oldest running tasks are cancelled to make room.
    CancelInProgress,
}

/// A concurrency limit per key: `key`, or the value at the JSON pointer
/// `key_from` in the input.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct ConcurrencyLimit {
    /// The key itself.
    #[uniffi(default = None)]
    pub key: Option<String>,
    /// A JSON pointer into the input (`/customer/id`).
    #[uniffi(default = None)]
    pub key_from: Option<String>,
    /// Slots per key.
    #[uniffi(default = 1)]
    pub max_running: u32,
    /// What happens when the key is full.
    #[uniffi(default = None)]
    pub strategy: Option<ConcurrencyStrategy>,
}

/// A rate limit per key: `limit` tokens per `per`, `units` per task.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct RateLimit {
    /// The bucket's key.
    #[uniffi(default = None)]
    pub key: Option<String>,
    /// A JSON pointer into the input whose value is the key.
    #[uniffi(default = None)]
    pub key_from: Option<String>,
    /// Tokens per period (and the bucket's size).
    pub limit: u32,
    /// The period.
    pub per: Duration,
    /// Tokens one task takes.
    #[uniffi(default = 1)]
    pub units: u32,
}

impl TaskSpec {
    pub(crate) fn to_hive(&self, field: &str) -> Result<hive::TaskSpec, HiveError> {
        if self.agent.trim().is_empty() {
            return Err(HiveError::spec(
                &format!("{field}agent"),
                "missing: name the agent (a handler name or an OCI reference)",
            ));
        }
        let input = parse_json(&format!("{field}input"), &self.input_json)?;
        let mut spec = hive::TaskSpec::new(self.agent.as_str(), input);
        spec.labels = self.labels.clone().into_iter().collect();
        spec.priority = self.priority;
        if let Some(t) = &self.timeouts {
            spec.timeouts = t.to_hive();
        }
        if let Some(r) = &self.retry {
            spec.retry = r.to_hive();
        }
        spec.idempotency_key = self.idempotency_key.clone();
        spec.delay = self.delay;
        if let Some(t) = self.not_before {
            let ms = t
                .duration_since(UNIX_EPOCH)
                .ok()
                .and_then(|d| i64::try_from(d.as_millis()).ok())
                .ok_or_else(|| {
                    HiveError::spec(
                        &format!("{field}not_before"),
                        "must be a time after 1970-01-01T00:00:00Z",
                    )
                })?;
            spec.not_before = Some(hive::Timestamp::from_millis(ms));
        }
        spec.concurrency = self.concurrency.as_ref().map(|c| hive::Concurrency {
            key: c.key.clone(),
            key_from: c.key_from.clone(),
            max_running: c.max_running,
            strategy: match c.strategy.unwrap_or(ConcurrencyStrategy::Queue) {
                ConcurrencyStrategy::Queue => hive::ConcurrencyStrategy::Queue,
                ConcurrencyStrategy::CancelNewest => hive::ConcurrencyStrategy::CancelNewest,
                ConcurrencyStrategy::CancelInProgress => {
                    hive::ConcurrencyStrategy::CancelInProgress
                }
            },
        });
        spec.rate_limit = self.rate_limit.as_ref().map(|r| hive::RateLimit {
            key: r.key.clone(),
            key_from: r.key_from.clone(),
            units: r.units,
            limit: r.limit,
            per: r.per,
        });
        Ok(spec)
    }
}

/// A task's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum TaskState {
    /// Waiting for a node.
    Pending,
    /// Leased to a node, not started.
    Scheduled,
    /// An attempt is running.
    Running,
    /// Ended with an output.
    Succeeded,
    /// Ended with an error.
    Failed,
    /// Cancelled.
    Cancelled,
    /// A deadline passed.
    TimedOut,
}

impl From<hive::TaskState> for TaskState {
    fn from(s: hive::TaskState) -> Self {
        match s {
            hive::TaskState::Pending => TaskState::Pending,
            hive::TaskState::Scheduled => TaskState::Scheduled,
            hive::TaskState::Running => TaskState::Running,
            hive::TaskState::Succeeded => TaskState::Succeeded,
            hive::TaskState::Failed => TaskState::Failed,
            hive::TaskState::Cancelled => TaskState::Cancelled,
            hive::TaskState::TimedOut => TaskState::TimedOut,
        }
    }
}

impl From<TaskState> for hive::TaskState {
    fn from(s: TaskState) -> Self {
        match s {
            TaskState::Pending => hive::TaskState::Pending,
            TaskState::Scheduled => hive::TaskState::Scheduled,
            TaskState::Running => hive::TaskState::Running,
            TaskState::Succeeded => hive::TaskState::Succeeded,
            TaskState::Failed => hive::TaskState::Failed,
            TaskState::Cancelled => hive::TaskState::Cancelled,
            TaskState::TimedOut => hive::TaskState::TimedOut,
        }
    }
}

/// Why an attempt or a task failed.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct TaskError {
    /// Stable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Not retried.
    pub non_retryable: bool,
    /// Details, as JSON text.
    pub details_json: Option<String>,
}

impl From<&hive::TaskError> for TaskError {
    fn from(e: &hive::TaskError) -> Self {
        TaskError {
            code: e.code.clone(),
            message: e.message.clone(),
            non_retryable: e.non_retryable,
            details_json: e.details.as_ref().map(json_text),
        }
    }
}

/// The answer to a submission.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Submitted {
    /// The task's id (the existing one for a reused idempotency key).
    pub id: String,
    /// `false` when an existing task was returned for the key.
    pub created: bool,
    /// The seq of its last event.
    pub last_seq: u64,
}

impl From<hive::store::Submitted> for Submitted {
    fn from(s: hive::store::Submitted) -> Self {
        Submitted {
            id: s.id.to_string(),
            created: s.created,
            last_seq: s.last_seq,
        }
    }
}

/// A task as stored.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Task {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// The principal that submitted it.
    pub owner: String,
    /// Its agent.
    pub agent: String,
    /// Its input (JSON text).
    pub input_json: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Its priority.
    pub priority: i32,
    /// Its idempotency key.
    pub idempotency_key: Option<String>,
    /// Its state.
    pub state: TaskState,
    /// Whether the state is terminal.
    pub is_terminal: bool,
    /// The current (or last) attempt, 1-based; 0 before the first.
    pub attempt: u32,
    /// The node holding it.
    pub node_id: Option<String>,
    /// The seq of its last event.
    pub last_seq: u64,
    /// When it was submitted.
    pub created_at: SystemTime,
    /// When it last changed.
    pub updated_at: SystemTime,
    /// When it may next be claimed.
    pub available_at: SystemTime,
    /// Its output (JSON text), once succeeded.
    pub output_json: Option<String>,
    /// Its error, once failed.
    pub error: Option<TaskError>,
}

impl From<hive::Task> for Task {
    fn from(t: hive::Task) -> Self {
        Task {
            id: t.id.to_string(),
            tenant: t.owner.tenant.to_string(),
            owner: t.owner.principal.to_string(),
            agent: t.spec.agent.to_string(),
            input_json: json_text(&t.spec.input),
            labels: t.spec.labels.clone().into_iter().collect(),
            priority: t.spec.priority,
            idempotency_key: t.spec.idempotency_key.clone(),
            state: t.state.into(),
            is_terminal: t.state.is_terminal(),
            attempt: t.attempt,
            node_id: t.node.map(|n| n.to_string()),
            last_seq: t.last_seq,
            created_at: time(t.created_at),
            updated_at: time(t.updated_at),
            available_at: time(t.available_at),
            output_json: t.output.as_ref().map(json_text),
            error: t.error.as_ref().map(TaskError::from),
        }
    }
}

/// One page of tasks.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct TaskPage {
    /// The tasks, oldest first.
    pub items: Vec<Task>,
    /// The cursor of the next page, if any.
    pub next: Option<String>,
}

/// Which tasks to list.
#[derive(Clone, Debug, Default, PartialEq, uniffi::Record)]
pub struct TaskQuery {
    /// Only these states (any when empty).
    #[uniffi(default = [])]
    pub states: Vec<TaskState>,
    /// Only this agent.
    #[uniffi(default = None)]
    pub agent: Option<String>,
    /// Only tasks submitted by this principal.
    #[uniffi(default = None)]
    pub owner: Option<String>,
    /// After this task id (the previous page's `next`).
    #[uniffi(default = None)]
    pub after: Option<String>,
    /// At most this many (1..=1000; default 100).
    #[uniffi(default = None)]
    pub limit: Option<u32>,
}

impl TaskQuery {
    pub(crate) fn to_hive(&self) -> Result<hive::TaskQuery, HiveError> {
        let after = match &self.after {
            Some(a) => Some(
                a.parse::<hive::TaskId>()
                    .map_err(|_| HiveError::argument(format!("after: not a task id: {a:?}")))?,
            ),
            None => None,
        };
        Ok(hive::TaskQuery {
            states: self.states.iter().map(|s| (*s).into()).collect(),
            agent: self.agent.as_deref().map(hive::AgentRef::from),
            owner: self.owner.as_deref().map(hive::PrincipalId::from),
            after,
            limit: self.limit,
            ..hive::TaskQuery::default()
        })
    }
}

/// One event of a task's stream: `kind` is the event's type (`queued`,
/// `scheduled`, `started`, `heartbeat`, `log`, `attempt_failed`, then one
/// terminal `succeeded`, `failed`, `cancelled` or `timed_out`) and
/// `data_json` its fields.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct TaskEvent {
    /// The task.
    pub task_id: String,
    /// Its tenant.
    pub tenant: String,
    /// Position in the task's stream, from 1, gapless.
    pub seq: u64,
    /// When it was stored.
    pub at: SystemTime,
    /// The event's type.
    pub kind: String,
    /// The event's fields (JSON object text, without `type`).
    pub data_json: String,
    /// Whether this is the task's one terminal event.
    pub is_terminal: bool,
    /// The attempt it is about, when it is about one.
    pub attempt: Option<u32>,
    /// The output of a `succeeded` event (JSON text).
    pub output_json: Option<String>,
    /// The error of an `attempt_failed` or `failed` event.
    pub error: Option<TaskError>,
}

impl From<hive::TaskEvent> for TaskEvent {
    fn from(e: hive::TaskEvent) -> Self {
        let (attempt, output_json, error) = match &e.kind {
            hive::EventKind::Started { attempt, .. }
            | hive::EventKind::Heartbeat { attempt, .. } => (Some(*attempt), None, None),
            hive::EventKind::AttemptFailed { attempt, error, .. } => {
                (Some(*attempt), None, Some(TaskError::from(error)))
            }
            hive::EventKind::Succeeded { output } => (None, Some(json_text(output)), None),
            hive::EventKind::Failed { error } => (None, None, Some(TaskError::from(error))),
            _ => (None, None, None),
        };
        let mut data = serde_json::to_value(&e.kind).unwrap_or(Value::Null);
        let kind = match data.as_object_mut().and_then(|m| m.remove("type")) {
            Some(Value::String(s)) => s,
            _ => e.kind.name().to_owned(),
        };
        TaskEvent {
            task_id: e.task.to_string(),
            tenant: e.tenant.to_string(),
            seq: e.seq,
            at: time(e.at),
            is_terminal: e.kind.is_terminal(),
            kind,
            data_json: json_text(&data),
            attempt,
            output_json,
            error,
        }
    }
}

/// An event of the tenant's feed: every task event of the tenant, in one
/// order, with a cursor to resume from.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct FeedEvent {
    /// Resume after this.
    pub cursor: u64,
    /// The task event.
    pub event: TaskEvent,
}

impl From<hive::FeedEvent> for FeedEvent {
    fn from(f: hive::FeedEvent) -> Self {
        FeedEvent {
            cursor: f.cursor,
            event: f.event.into(),
        }
    }
}

/// One step of a workflow.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct StepSpec {
    /// Unique within the workflow: 1–128 of `[A-Za-z0-9_.-]`.
    pub id: String,
    /// The agent that runs it.
    pub agent: String,
    /// The template input (JSON text).
    #[uniffi(default = "null")]
    pub input_json: String,
    /// The steps it waits for.
    #[uniffi(default = [])]
    pub depends_on: Vec<String>,
    /// When it runs: `all_succeeded` (default), `all_done`, `any_succeeded`,
    /// `all_failed`.
    #[uniffi(default = None)]
    pub trigger: Option<String>,
    /// How its parents' outputs become its input: `collect` (default),
    /// `list`, `merge`.
    #[uniffi(default = None)]
    pub join: Option<String>,
    /// Labels a node must carry.
    #[uniffi(default)]
    pub labels: HashMap<String, String>,
    /// Priority of its tasks.
    #[uniffi(default = 0)]
    pub priority: i32,
    /// Retries of its tasks.
    #[uniffi(default = None)]
    pub retry: Option<RetryPolicy>,
    /// Deadlines of its tasks.
    #[uniffi(default = None)]
    pub timeouts: Option<Timeouts>,
}

/// A workflow: a DAG of steps.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct WorkflowSpec {
    /// Its name.
    pub name: String,
    /// Its steps.
    pub steps: Vec<StepSpec>,
    /// Resubmitting the same key returns the same workflow.
    #[uniffi(default = None)]
    pub idempotency_key: Option<String>,
}

impl WorkflowSpec {
    pub(crate) fn to_hive(&self) -> Result<hive::WorkflowSpec, HiveError> {
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, s) in self.steps.iter().enumerate() {
            let field = format!("steps[{i}]");
            let input = parse_json(&format!("{field}.input"), &s.input_json)?;
            let mut step = hive::StepSpec::new(s.id.as_str(), s.agent.as_str(), input)
                .after(s.depends_on.iter().map(String::as_str));
            if let Some(t) = &s.trigger {
                step.trigger = from_name(&format!("{field}.trigger"), t)?;
            }
            if let Some(j) = &s.join {
                step.join = Some(from_name(&format!("{field}.join"), j)?);
            }
            step.labels = s.labels.clone().into_iter().collect();
            step.priority = s.priority;
            if let Some(r) = &s.retry {
                step.retry = r.to_hive();
            }
            if let Some(t) = &s.timeouts {
                step.timeouts = t.to_hive();
            }
            steps.push(step);
        }
        let mut spec = hive::WorkflowSpec::new(self.name.as_str(), steps);
        spec.idempotency_key = self.idempotency_key.clone();
        Ok(spec)
    }
}

/// The answer to a workflow submission.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct WorkflowSubmitted {
    /// The workflow's id.
    pub id: String,
    /// `false` when an existing workflow was returned for the key.
    pub created: bool,
}

/// A workflow's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum WorkflowState {
    /// Steps are still to run.
    Running,
    /// Every step that had to succeed did.
    Succeeded,
    /// A step failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl From<hive::WorkflowState> for WorkflowState {
    fn from(s: hive::WorkflowState) -> Self {
        match s {
            hive::WorkflowState::Running => WorkflowState::Running,
            hive::WorkflowState::Succeeded => WorkflowState::Succeeded,
            hive::WorkflowState::Failed => WorkflowState::Failed,
            hive::WorkflowState::Cancelled => WorkflowState::Cancelled,
        }
    }
}

/// A step's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum StepState {
    /// Its parents have not ended.
    Waiting,
    /// Its task(s) run.
    Running,
    /// Succeeded.
    Succeeded,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Timed out.
    TimedOut,
    /// Not run (see `skip_reason`).
    Skipped,
}

impl From<hive::workflow::StepState> for StepState {
    fn from(s: hive::workflow::StepState) -> Self {
        use hive::workflow::StepState as S;
        match s {
            S::Waiting => StepState::Waiting,
            S::Running => StepState::Running,
            S::Succeeded => StepState::Succeeded,
            S::Failed => StepState::Failed,
            S::Cancelled => StepState::Cancelled,
            S::TimedOut => StepState::TimedOut,
            S::Skipped => StepState::Skipped,
        }
    }
}

/// A step of a workflow, as it stands.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct StepView {
    /// Its id.
    pub id: String,
    /// Its state.
    pub state: StepState,
    /// Its tasks (one per attempt of the step; several for a map step).
    pub task_ids: Vec<String>,
    /// How many times it ran.
    pub attempts: u32,
    /// When it started.
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub ended_at: Option<SystemTime>,
    /// Its output (JSON text).
    pub output_json: Option<String>,
    /// Its error.
    pub error: Option<TaskError>,
    /// Why it was skipped (`upstream_failed`, `not_needed`).
    pub skip_reason: Option<String>,
    /// The steps it waited for.
    pub depends_on: Vec<String>,
}

/// A workflow, with every step.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct WorkflowView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its tenant.
    pub tenant: String,
    /// Who submitted it.
    pub owner: String,
    /// Its state.
    pub state: WorkflowState,
    /// Whether it has ended.
    pub is_terminal: bool,
    /// When it was submitted.
    pub created_at: SystemTime,
    /// When it ended.
    pub ended_at: Option<SystemTime>,
    /// The seq of its last event.
    pub last_seq: u64,
    /// Its steps, in the spec's order.
    pub steps: Vec<StepView>,
}

impl From<hive::WorkflowView> for WorkflowView {
    fn from(w: hive::WorkflowView) -> Self {
        WorkflowView {
            id: w.id.to_string(),
            name: w.name,
            tenant: w.owner.tenant.to_string(),
            owner: w.owner.principal.to_string(),
            state: w.state.into(),
            is_terminal: w.state.is_terminal(),
            created_at: time(w.created_at),
            ended_at: w.ended_at.map(time),
            last_seq: w.last_seq,
            steps: w
                .steps
                .into_iter()
                .map(|s| StepView {
                    id: s.id,
                    state: s.state.into(),
                    task_ids: s.tasks.iter().map(ToString::to_string).collect(),
                    attempts: s.attempts,
                    started_at: s.started_at.map(time),
                    ended_at: s.ended_at.map(time),
                    output_json: s.output.as_ref().map(json_text),
                    error: s.error.as_ref().map(TaskError::from),
                    skip_reason: s.skip_reason.as_ref().map(serde_name),
                    depends_on: s.depends_on,
                })
                .collect(),
        }
    }
}

/// One event of a workflow's stream: `started`, `step` (a step changed
/// state) or the one terminal `finished`.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct WorkflowEvent {
    /// The workflow.
    pub workflow_id: String,
    /// Position in its stream, from 1, gapless.
    pub seq: u64,
    /// When it was stored.
    pub at: SystemTime,
    /// `started`, `step` or `finished`.
    pub kind: String,
    /// The step, for `step` events.
    pub step: Option<String>,
    /// The step's new state, for `step` events.
    pub step_state: Option<StepState>,
    /// The step's tasks, for `step` events.
    pub task_ids: Vec<String>,
    /// The workflow's final state, for `finished`.
    pub workflow_state: Option<WorkflowState>,
    /// Whether this is the workflow's one terminal event.
    pub is_terminal: bool,
}

impl From<hive::workflow::WorkflowEvent> for WorkflowEvent {
    fn from(e: hive::workflow::WorkflowEvent) -> Self {
        use hive::workflow::WorkflowEventKind as K;
        let is_terminal = e.kind.is_terminal();
        let (kind, step, step_state, task_ids, workflow_state) = match e.kind {
            K::Started => ("started", None, None, Vec::new(), None),
            K::Step { step, state, tasks } => (
                "step",
                Some(step),
                Some(state.into()),
                tasks.iter().map(ToString::to_string).collect(),
                None,
            ),
            K::Finished { state } => ("finished", None, None, Vec::new(), Some(state.into())),
        };
        WorkflowEvent {
            workflow_id: e.workflow.to_string(),
            seq: e.seq,
            at: time(e.at),
            kind: kind.to_owned(),
            step,
            step_state,
            task_ids,
            workflow_state,
            is_terminal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(agent: &str, input: &str) -> TaskSpec {
        TaskSpec {
            agent: agent.into(),
            input_json: input.into(),
            labels: HashMap::new(),
            priority: 0,
            timeouts: None,
            retry: None,
            idempotency_key: None,
            delay: None,
            not_before: None,
            concurrency: None,
            rate_limit: None,
        }
    }

    #[test]
    fn bad_specs_name_the_field() {
        let e = spec(" ", "null").to_hive("").unwrap_err();
        assert!(
            matches!(e, HiveError::InvalidSpec(ref m) if m.contains("agent")),
            "{e}"
        );
        let e = spec("echo", "{oops").to_hive("[3].").unwrap_err();
        assert!(
            matches!(e, HiveError::InvalidSpec(ref m) if m.contains("[3].input")),
            "{e}"
        );
        let ok = spec("echo", r#"{"a":1}"#).to_hive("").expect("valid");
        assert_eq!(ok.input, serde_json::json!({"a": 1}));
        assert_eq!(ok.retry, hive::RetryPolicy::default());
    }

    #[test]
    fn principals_are_checked() {
        let p = Principal {
            tenant: "acme".into(),
            id: "alice".into(),
            kind: PrincipalKind::User,
            scopes: vec!["task:read".into()],
        };
        let h = p.to_hive().expect("valid");
        assert_eq!(h.tenant.as_str(), "acme");
        assert!(h.scopes.contains(hive::Scope::TaskRead));
        assert!(!h.scopes.contains(hive::Scope::TaskSubmit));
        let bad = Principal {
            tenant: "".into(),
            ..p.clone()
        };
        assert!(bad.to_hive().is_err());
        let unknown = Principal {
            scopes: vec!["task:fly".into()],
            ..p
        };
        assert!(
            matches!(unknown.to_hive(), Err(HiveError::InvalidSpec(m)) if m.contains("scopes"))
        );
    }

    #[test]
    fn workflow_steps_parse_trigger_and_join_names() {
        let step = |trigger: Option<&str>, join: Option<&str>| StepSpec {
            id: "s".into(),
            agent: "a".into(),
            input_json: "null".into(),
            depends_on: vec![],
            trigger: trigger.map(Into::into),
            join: join.map(Into::into),
            labels: HashMap::new(),
            priority: 0,
            retry: None,
            timeouts: None,
        };
        let wf = |s: StepSpec| WorkflowSpec {
            name: "w".into(),
            steps: vec![s],
            idempotency_key: None,
        };
        let ok = wf(step(Some("all_done"), Some("list")))
            .to_hive()
            .expect("valid");
        assert_eq!(ok.steps[0].trigger, hive::workflow::Trigger::AllDone);
        let e = wf(step(Some("sometimes"), None)).to_hive().unwrap_err();
        assert!(
            matches!(e, HiveError::InvalidSpec(ref m) if m.contains("steps[0].trigger")),
            "{e}"
        );
    }

    #[test]
    fn events_carry_kind_data_and_terminal_flag() {
        let event = hive::TaskEvent {
            task: hive::TaskId::new(),
            tenant: "acme".into(),
            seq: 7,
            at: hive::Timestamp::from_millis(1_000),
            kind: hive::EventKind::Succeeded {
                output: serde_json::json!({"ok": true}),
            },
        };
        let e = TaskEvent::from(event);
        assert_eq!(e.kind, "succeeded");
        assert!(e.is_terminal);
        assert_eq!(e.output_json.as_deref(), Some(r#"{"ok":true}"#));
        assert_eq!(e.data_json, r#"{"output":{"ok":true}}"#);
        assert_eq!(e.at, UNIX_EPOCH + Duration::from_secs(1));
    }
}
