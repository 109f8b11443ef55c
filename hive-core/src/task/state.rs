use std::fmt;

use serde::{Deserialize, Serialize};

/// The state of a task. See the transition table in [`super::machine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a node (possibly until a stored backoff has passed).
    Pending,
    /// Leased to a node that has not started it yet.
    Scheduled,
    /// Being executed by a node.
    Running,
    /// Ended with an output.
    Succeeded,
    /// Ended with an error, no attempts left.
    Failed,
    /// Cancelled by a principal.
    Cancelled,
    /// A deadline expired with no attempts left.
    TimedOut,
}

impl TaskState {
    /// Every state.
    pub const ALL: [TaskState; 7] = [
        TaskState::Pending,
        TaskState::Scheduled,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::TimedOut,
    ];

    /// Whether the state is terminal (absorbing).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::TimedOut
        )
    }

    /// The wire name (`timed_out`).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Scheduled => "scheduled",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::TimedOut => "timed_out",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TaskState {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| crate::Error::InvalidArgument {
                message: format!("unknown task state {s:?}"),
            })
    }
}
