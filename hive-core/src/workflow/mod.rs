//! Workflows: DAGs of steps, each a task template with explicit dependencies, a
//! trigger rule, a retry policy and, for a join, an aggregation mode.
//!
//! The spec is plain serde data, so the same JSON is accepted by every binding
//! and the HTTP API:
//!
//! ```json
//! {"name": "report",
//!  "steps": [
//!    {"id": "fetch",   "agent": "fetch", "input": {"url": "…"}},
//!    {"id": "each",    "agent": "summarize", "depends_on": ["fetch"],
//!     "map": {"over": "fetch", "path": "/pages"}},
//!    {"id": "review",  "agent": "review", "depends_on": ["fetch"],
//!     "retry": {"max_attempts": 5, "initial_interval": "2s"}},
//!    {"id": "publish", "agent": "publish", "depends_on": ["each", "review"],
//!     "trigger": "all_done", "join": "collect"}]}
//! ```
//!
//! Semantics (see `ARCHITECTURE.md`, "Workflows"):
//!
//! - A step runs when its trigger rule is met by its parents' outcomes, and is
//!   `Skipped` as soon as the rule can no longer be met. Rules are decided
//!   eagerly: a step fires, or is skipped, the moment its outcome is certain.
//! - A step with parents receives `{"input": <its template input>, "parents":
//!   <aggregation>}` as its task input. Aggregations, in declared order:
//!   `collect` (the default) is an object of parent id → `{"state", "output" |
//!   "error"}`; `list` is an array of `{"step", "state", "output" | "error"}`;
//!   `merge` is the shallow merge of the succeeded parents' output objects, with
//!   the others under `"not_succeeded"`. Failed, skipped and (for a rule that
//!   fired early) unfinished parents stay in the aggregation with their state.
//! - A `map` step fans out one child task per element of a list in a parent's
//!   output (Argo's `withParam`); each child gets `{"input", "item", "index"}`.
//!   It succeeds when every child succeeded, and its output is the children's
//!   results aggregated by its `join` mode (default `list`, in index order).
//! - The workflow ends when every step has ended. It succeeds when every leaf
//!   step (one nothing depends on) succeeded or was skipped for a reason other
//!   than an upstream failure; it fails otherwise; `cancel_workflow` cancels its
//!   pending and running steps.
//! - The state lives in the store (a record of kind `workflow`), not in a
//!   process: every `Hive` drives the running workflows it sees, decisions are
//!   compare-and-set writes, step tasks have fixed ids and idempotency keys, so a
//!   host that restarts resumes its workflows and a step is never run twice.

mod plan;
mod validate;

pub use plan::{Plan, plan, task_key};
pub use validate::{ValidationLimits, validate};

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Timestamp;
use crate::id::TaskId;
use crate::principal::PrincipalId;
use crate::retry::RetryPolicy;
use crate::task::{AgentRef, Owner, TaskError, TaskState, Timeouts};

/// The record kind workflows are stored under.
pub const RECORD_KIND: &str = "workflow";
/// The record kind of workflow idempotency keys.
pub const KEY_RECORD_KIND: &str = "workflow_key";
/// The record status of a cancelled workflow whose step tasks may not all have
/// ended yet: drivers keep cancelling them until they have, then set the status
/// to `cancelled`. Its state (what readers see) is already `Cancelled`.
pub const STATUS_CANCELLING: &str = "cancelling";

/// The id of the record that holds `tenant`'s workflow idempotency key `key`:
/// the tenant's length first, so no two (tenant, key) pairs share an id
/// (`"a:b" + "c"` and `"a" + "b:c"` differ).
pub fn key_record_id(tenant: &crate::principal::TenantId, key: &str) -> String {
    format!("{}:{tenant}:{key}", tenant.as_str().len())
}

/// Identifies a workflow (UUIDv7: sorts by creation time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkflowId(Uuid);

impl WorkflowId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        WorkflowId(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for WorkflowId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for WorkflowId {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(WorkflowId)
            .map_err(|e| crate::Error::InvalidArgument {
                message: format!("invalid WorkflowId {s:?}: {e}"),
            })
    }
}

/// When a step runs, given its parents' outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Every parent succeeded (the default). Skipped as soon as one did not.
    #[default]
    AllSucceeded,
    /// Every parent ended, whatever the outcome. Never skipped.
    AllDone,
    /// At least one parent succeeded. Fires at the first success.
    AnySucceeded,
    /// Every parent failed (or was skipped because of a failure upstream): an
    /// error handler. Skipped as soon as one succeeded.
    AllFailed,
    /// At least `min_succeeded` parents succeeded. Fires as soon as they have;
    /// skipped as soon as too few can still succeed.
    Quorum {
        /// How many parents must succeed (1 ≤ n ≤ number of parents).
        min_succeeded: u32,
    },
}

/// How a join step (or a map step) aggregates its inputs. See the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinMode {
    /// An object of id → `{state, output | error}`.
    #[default]
    Collect,
    /// An array of `{step, state, output | error}` in declared order.
    List,
    /// The shallow merge of succeeded outputs; the rest under `not_succeeded`.
    Merge,
}

/// Fan-out over a list in a parent's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapSpec {
    /// The parent whose output holds the list (must be in `depends_on`).
    pub over: String,
    /// A JSON pointer to the list in that output (`""`: the output itself).
    #[serde(default)]
    pub path: String,
}

/// One step: a task template, its dependencies and rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique within the workflow: 1–128 of `[A-Za-z0-9_.-]`.
    pub id: String,
    /// The agent that runs the step's task(s).
    pub agent: AgentRef,
    /// The template input.
    #[serde(default)]
    pub input: serde_json::Value,
    /// Labels a node must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Priority of the step's tasks.
    #[serde(default)]
    pub priority: i32,
    /// Deadlines of the step's tasks.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Retry policy of the step's tasks.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// The steps this one waits for, by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// When it runs.
    #[serde(default)]
    pub trigger: Trigger,
    /// How parents' results are aggregated into its input (and, for a map step,
    /// how the children's results become its output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinMode>,
    /// Fan out over a parent's output list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<MapSpec>,
    /// A concurrency limit for the step's tasks (shared with every task of
    /// the tenant with the same key). `key_from` is resolved against each
    /// task's input; if it names nothing there, the pointer text itself is
    /// the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<crate::task::Concurrency>,
    /// A rate limit for the step's tasks (shared with every task of the
    /// tenant with the same key); `key_from` as for `concurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::task::RateLimit>,
}

impl StepSpec {
    /// A step running `agent` with `input`, no dependencies.
    pub fn new(
        id: impl Into<String>,
        agent: impl Into<AgentRef>,
        input: serde_json::Value,
    ) -> Self {
        StepSpec {
            id: id.into(),
            agent: agent.into(),
            input,
            labels: BTreeMap::new(),
            priority: 0,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            depends_on: Vec::new(),
            trigger: Trigger::default(),
            join: None,
            map: None,
            concurrency: None,
            rate_limit: None,
        }
    }

    /// Limits how fast the step's tasks (and others with the same key) are
    /// claimed.
    pub fn rate_limit(mut self, rate_limit: crate::task::RateLimit) -> Self {
        self.rate_limit = Some(rate_limit);
        self
    }

    /// Limits how many of the step's tasks (and others with the same key)
    /// run at once.
    pub fn concurrency(mut self, concurrency: crate::task::Concurrency) -> Self {
        self.concurrency = Some(concurrency);
        self
    }

    /// Adds dependencies.
    pub fn after<I, S>(mut self, parents: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.depends_on.extend(parents.into_iter().map(Into::into));
        self
    }

    /// Sets the trigger rule.
    pub fn trigger(mut self, trigger: Trigger) -> Self {
        self.trigger = trigger;
        self
    }

    /// Sets the join mode.
    pub fn join(mut self, mode: JoinMode) -> Self {
        self.join = Some(mode);
        self
    }

    /// Fans out over the list at `path` in parent `over`'s output (and depends on
    /// it).
    pub fn map_over(mut self, over: impl Into<String>, path: impl Into<String>) -> Self {
        let over = over.into();
        if !self.depends_on.contains(&over) {
            self.depends_on.push(over.clone());
        }
        self.map = Some(MapSpec {
            over,
            path: path.into(),
        });
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the timeouts.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }
}

/// A workflow as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// A human-readable name.
    pub name: String,
    /// The steps.
    pub steps: Vec<StepSpec>,
    /// Resubmitting with the same key (in the same tenant) returns the same
    /// workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl WorkflowSpec {
    /// A workflow called `name` with `steps`.
    pub fn new(name: impl Into<String>, steps: Vec<StepSpec>) -> Self {
        WorkflowSpec {
            name: name.into(),
            steps,
            idempotency_key: None,
        }
    }
}

/// The state of a workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowState {
    /// Steps are running or waiting.
    Running,
    /// Every leaf succeeded (or was skipped as not needed).
    Succeeded,
    /// A leaf failed, or was skipped because of a failure upstream.
    Failed,
    /// Cancelled by a principal.
    Cancelled,
}

impl WorkflowState {
    /// Whether the workflow has ended.
    pub fn is_terminal(self) -> bool {
        self != WorkflowState::Running
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Running => "running",
            WorkflowState::Succeeded => "succeeded",
            WorkflowState::Failed => "failed",
            WorkflowState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for WorkflowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Waiting for its parents.
    Waiting,
    /// Its task(s) were submitted and have not all ended.
    Running,
    /// Succeeded.
    Succeeded,
    /// Failed (a task failed with no attempts left, or a map child failed).
    Failed,
    /// Its task was cancelled, or the workflow was.
    Cancelled,
    /// Its task timed out.
    TimedOut,
    /// Its trigger rule could not be met; see `skip_reason`.
    Skipped,
}

impl StepState {
    /// Whether the step has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, StepState::Waiting | StepState::Running)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Waiting => "waiting",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Cancelled => "cancelled",
            StepState::TimedOut => "timed_out",
            StepState::Skipped => "skipped",
        }
    }

    fn from_task(state: TaskState) -> StepState {
        match state {
            TaskState::Pending | TaskState::Scheduled | TaskState::Running => StepState::Running,
            TaskState::Succeeded => StepState::Succeeded,
            TaskState::Failed => StepState::Failed,
            TaskState::Cancelled => StepState::Cancelled,
            TaskState::TimedOut => StepState::TimedOut,
        }
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a step was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// A parent failed (or was itself skipped for that reason), so the rule that
    /// needed successes cannot be met. Counts as a failure for the workflow.
    UpstreamFailed,
    /// The rule cannot be met for another reason (an error handler whose parents
    /// succeeded, a parent skipped as not needed). Not a failure.
    NotNeeded,
}

/// One step as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's state.
    pub state: StepState,
    /// Its task ids: one, or one per map element in index order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskId>,
    /// The input its (non-map) task was submitted with, fixed when it fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// The output, once succeeded (a map step's aggregated children).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// The error, once failed, cancelled or timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// Why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
    /// When its task(s) were submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
}

impl StepRecord {
    fn waiting() -> Self {
        StepRecord {
            state: StepState::Waiting,
            tasks: Vec::new(),
            input: None,
            output: None,
            error: None,
            skip_reason: None,
            started_at: None,
            ended_at: None,
        }
    }
}

/// A cancellation request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    /// Who.
    pub by: PrincipalId,
    /// Why.
    pub reason: String,
}

/// A workflow as stored: the body of its record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    /// Its id.
    pub id: WorkflowId,
    /// Who submitted it.
    pub owner: Owner,
    /// What was submitted.
    pub spec: WorkflowSpec,
    /// Its state.
    pub state: WorkflowState,
    /// Step indices in a topological order (parents first).
    pub order: Vec<usize>,
    /// Each step, in spec order.
    pub steps: Vec<StepRecord>,
    /// Set when cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<Cancellation>,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
}

impl WorkflowRecord {
    /// A new workflow, every step waiting. `order` comes from [`validate`].
    pub fn new(
        id: WorkflowId,
        owner: Owner,
        spec: WorkflowSpec,
        order: Vec<usize>,
        now: Timestamp,
    ) -> Self {
        let steps = spec.steps.iter().map(|_| StepRecord::waiting()).collect();
        WorkflowRecord {
            id,
            owner,
            spec,
            state: WorkflowState::Running,
            order,
            steps,
            cancelled: None,
            created_at: now,
            ended_at: None,
        }
    }
}

/// What happened to a workflow; its record's event stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkflowEventKind {
    /// The workflow was submitted (always seq 1).
    Started,
    /// A step changed state.
    Step {
        /// The step's id.
        step: String,
        /// Its new state.
        state: StepState,
        /// Its tasks, when it started running.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tasks: Vec<TaskId>,
    },
    /// Terminal: the workflow ended.
    Finished {
        /// How.
        state: WorkflowState,
    },
}

impl WorkflowEventKind {
    /// Whether this is the terminal event.
    pub fn is_terminal(&self) -> bool {
        matches!(self, WorkflowEventKind::Finished { .. })
    }
}

/// One stored workflow event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowEvent {
    /// The workflow.
    pub workflow: WorkflowId,
    /// Position in its stream: 1, 2, 3… without gaps; 1 is `Started`.
    pub seq: u64,
    /// When it was stored.
    pub at: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub kind: WorkflowEventKind,
}

/// The answer to a workflow submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowSubmitted {
    /// The workflow's id (the existing one for a reused idempotency key).
    pub id: WorkflowId,
    /// `false` when an existing workflow was returned for the key.
    pub created: bool,
}

/// One step, as [`crate::Hive::get_workflow`] shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    /// Its id.
    pub id: String,
    /// Its state.
    pub state: StepState,
    /// Its task ids.
    pub tasks: Vec<TaskId>,
    /// Attempts started across its tasks.
    pub attempts: u32,
    /// When its task(s) were submitted.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
    /// The output, once succeeded.
    pub output: Option<serde_json::Value>,
    /// The error, once failed.
    pub error: Option<TaskError>,
    /// Why it was skipped.
    pub skip_reason: Option<SkipReason>,
    /// The agent of its task(s).
    pub agent: AgentRef,
    /// The steps it waits for, by id (the edges of the DAG).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// When it runs.
    #[serde(default)]
    pub trigger: Trigger,
    /// How its parents' results are aggregated into its input, for a join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinMode>,
    /// The input its (non-map) task was submitted with, fixed when it fired:
    /// for a join, the aggregated parents' results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
}

/// A workflow with every step, as [`crate::Hive::get_workflow`] returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowView {
    /// Its id.
    pub id: WorkflowId,
    /// Its name.
    pub name: String,
    /// Who submitted it.
    pub owner: Owner,
    /// Its state.
    pub state: WorkflowState,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
    /// The seq of its last event: subscribe after it to miss nothing.
    pub last_seq: u64,
    /// Every step, in spec order.
    pub steps: Vec<StepView>,
}

/// A workflow in a listing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowSummary {
    /// Its id.
    pub id: WorkflowId,
    /// Its name.
    pub name: String,
    /// Who submitted it.
    pub owner: Owner,
    /// Its state.
    pub state: WorkflowState,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
}

/// Filters and pagination for [`crate::Hive::list_workflows`], ordered by id
/// (creation order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkflowQuery {
    /// Only workflows in one of these states (all when empty).
    pub states: Vec<WorkflowState>,
    /// Resume after this id.
    pub after: Option<WorkflowId>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// A page of workflows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowPage {
    /// The workflows.
    pub items: Vec<WorkflowSummary>,
    /// The cursor of the next page, if there may be more.
    pub next: Option<WorkflowId>,
}
