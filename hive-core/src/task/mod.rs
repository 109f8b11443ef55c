//! Tasks: the spec a caller submits, the states a task moves through, the events
//! it appends, and the pure state machine that decides every transition.

mod event;
pub mod machine;
mod spec;
mod state;

pub use event::{EventKind, FeedEvent, TaskError, TaskEvent, TimeoutPhase};
pub use machine::{LeaseToken, TransitionKind};
pub use spec::{AgentRef, Concurrency, ConcurrencyStrategy, RateLimit, TaskSpec, Timeouts};
pub use state::TaskState;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::id::{NodeId, TaskId};
use crate::principal::{PrincipalId, TenantId};

/// Who a task belongs to: the submitting principal and its tenant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// The tenant.
    pub tenant: TenantId,
    /// The principal that submitted the task.
    pub principal: PrincipalId,
}

impl From<&crate::principal::Principal> for Owner {
    /// The owner of what `p` submits: its tenant and id.
    fn from(p: &crate::principal::Principal) -> Self {
        Owner {
            tenant: p.tenant.clone(),
            principal: p.id.clone(),
        }
    }
}

/// A snapshot of a task, as returned by `get_task` and `list_tasks`.
///
/// `last_seq` is the seq of the last event stored when the snapshot was taken:
/// subscribing after it misses nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The task's id.
    pub id: TaskId,
    /// Its owner.
    pub owner: Owner,
    /// What was submitted.
    pub spec: Arc<TaskSpec>,
    /// The current state.
    pub state: TaskState,
    /// The number of attempts started or scheduled so far.
    pub attempt: u32,
    /// The node of the current (or last) placement.
    pub node: Option<NodeId>,
    /// The seq of the last stored event.
    pub last_seq: u64,
    /// When the task was submitted.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When a pending task may next be claimed (the stored backoff).
    pub available_at: Timestamp,
    /// The output, once succeeded.
    pub output: Option<serde_json::Value>,
    /// The last error (of the failed task, or of the last failed attempt).
    pub error: Option<TaskError>,
}

/// Filters and pagination for `list_tasks`. Results are ordered by task id, which
/// is creation order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskQuery {
    /// Only tasks in one of these states (all states when empty).
    pub states: Vec<TaskState>,
    /// Only tasks for this agent.
    pub agent: Option<AgentRef>,
    /// Only tasks submitted by this principal.
    pub owner: Option<PrincipalId>,
    /// Only tasks with all these labels required.
    pub labels: BTreeMap<String, String>,
    /// Resume after this task id (the `next` of the previous page).
    pub after: Option<TaskId>,
    /// At most this many tasks (default 100, at most 1000).
    pub limit: Option<u32>,
}

impl TaskQuery {
    /// The default page size.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// The largest page size.
    pub const MAX_LIMIT: u32 = 1000;

    /// The effective page size.
    pub fn effective_limit(&self) -> usize {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .clamp(1, Self::MAX_LIMIT) as usize
    }

    /// Whether `task` passes the filters (not the tenant or pagination).
    pub fn matches(&self, task: &Task) -> bool {
        (self.states.is_empty() || self.states.contains(&task.state))
            && self.agent.as_ref().is_none_or(|a| *a == task.spec.agent)
            && self
                .owner
                .as_ref()
                .is_none_or(|o| *o == task.owner.principal)
            && self
                .labels
                .iter()
                .all(|(k, v)| task.spec.labels.get(k) == Some(v))
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The cursor for the next page, if there may be more.
    pub next: Option<TaskId>,
}
