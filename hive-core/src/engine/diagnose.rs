//! Why a task is not running yet.

use serde::{Deserialize, Serialize};

use super::*;
use crate::clock::Timestamp;
use crate::node::eligible;
use crate::task::TaskState;

/// What keeps a task from running, as [`Hive::diagnose_task`] sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Waiting {
    /// Nothing: it is running (or leased and about to start).
    NotWaiting,
    /// It ended.
    Ended,
    /// A retry waits for its backoff to pass.
    Backoff {
        /// When it becomes claimable.
        until: Timestamp,
    },
    /// No node is registered and ready (every node is draining or lost, or
    /// none exists).
    NoReadyNode,
    /// Ready nodes exist, but none may run it: a user node runs only its
    /// owner's tasks and those it is shared with, and a node must carry every
    /// label the task requires.
    NoEligibleNode {
        /// Ready nodes that the task's owner may not use.
        wrong_owner: usize,
        /// Ready nodes the owner may use that lack a required label.
        missing_labels: usize,
    },
    /// Every eligible ready node is full.
    NodesAtCapacity {
        /// The eligible ready nodes.
        eligible: usize,
    },
    /// Eligible nodes have free slots: a worker on one of them claims it at
    /// its next claim (if it serves the task's agent; nodes do not declare
    /// their agents).
    Claimable {
        /// The eligible ready nodes with a free slot.
        eligible_free: usize,
    },
}

/// The answer of [`Hive::diagnose_task`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDiagnosis {
    /// The task.
    pub task: TaskId,
    /// Its state.
    pub state: TaskState,
    /// What it waits for.
    pub waiting: Waiting,
    /// The same, in a sentence.
    pub message: String,
}

impl Hive {
    /// Why a task is not running yet: a retry backoff, no ready node, no
    /// eligible node (owner or labels), every eligible node at capacity — or
    /// that it is claimable now. Needs `task:read`; another tenant's task is
    /// `NotFound`. Node counts cover every node (system nodes and the task's
    /// tenant's), not only those the caller may list; no node is named.
    ///
    /// A workflow step whose dependencies have not ended has no task yet: its
    /// state is in [`Hive::get_workflow`].
    pub async fn diagnose_task(&self, p: &Principal, id: TaskId) -> Result<TaskDiagnosis> {
        let task = self.get_task(p, id).await?;
        let now = self.inner.clock.now();
        let waiting = match task.state {
            s if s.is_terminal() => Waiting::Ended,
            TaskState::Scheduled | TaskState::Running => Waiting::NotWaiting,
            _ if task.available_at > now => Waiting::Backoff {
                until: task.available_at,
            },
            _ => {
                let nodes = self.inner.store.list_nodes().await?;
                let ready: Vec<&Node> = nodes
                    .iter()
                    .filter(|n| n.status == NodeStatus::Ready)
                    .collect();
                let owner_ok: Vec<&&Node> = ready
                    .iter()
                    .filter(|n| {
                        crate::node::owner_eligible(&n.spec.owner, &n.spec.shared_with, &task.owner)
                    })
                    .collect();
                let fit: Vec<&&Node> = ready
                    .iter()
                    .filter(|n| eligible(&n.spec, &task.owner, &task.spec.labels))
                    .collect();
                let free = fit.iter().filter(|n| n.free() > 0).count();
                if ready.is_empty() {
                    Waiting::NoReadyNode
                } else if fit.is_empty() {
                    Waiting::NoEligibleNode {
                        wrong_owner: ready.len() - owner_ok.len(),
                        missing_labels: owner_ok.len(),
                    }
                } else if free == 0 {
                    Waiting::NodesAtCapacity {
                        eligible: fit.len(),
                    }
                } else {
                    Waiting::Claimable {
                        eligible_free: free,
                    }
                }
            }
        };
        let message = match &waiting {
            Waiting::NotWaiting => format!("it is {} (not waiting)", task.state),
            Waiting::Ended => format!("it ended ({})", task.state),
            Waiting::Backoff { until } => format!(
                "attempt {} failed; the retry waits for its backoff ({} ms more)",
                task.attempt,
                until.as_millis().saturating_sub(now.as_millis())
            ),
            Waiting::NoReadyNode => {
                "no node is ready (none registered, or all draining or lost)".into()
            }
            Waiting::NoEligibleNode {
                wrong_owner,
                missing_labels,
            } => format!(
                "no ready node may run it: {wrong_owner} belong to other principals and are not shared with its owner, {missing_labels} lack a required label ({})",
                labels_text(&task.spec.labels)
            ),
            Waiting::NodesAtCapacity { eligible } => format!(
                "all {eligible} eligible ready nodes are at capacity; it runs when one frees a slot"
            ),
            Waiting::Claimable { eligible_free } => format!(
                "claimable now: {eligible_free} eligible nodes have a free slot; if it stays pending, no worker there serves agent {}",
                task.spec.agent
            ),
        };
        Ok(TaskDiagnosis {
            task: id,
            state: task.state,
            waiting,
            message,
        })
    }
}

fn labels_text(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "none required".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
