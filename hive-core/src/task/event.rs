use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::id::{NodeId, TaskId};
use crate::principal::{PrincipalId, TenantId};

/// An error reported by a handler, or produced by the engine for a lost or
/// timed-out attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    /// A short machine-readable code (`timeout`, `lost`, `panic`, or the handler's).
    pub code: String,
    /// A human-readable message.
    pub message: String,
    /// The handler says retrying cannot help.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub non_retryable: bool,
    /// Structured details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// The handler's suggestion for the delay before the next attempt (e.g. a
    /// rate limit's `Retry-After`); clamped to the policy's `max_interval`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after: Option<std::time::Duration>,
}

impl TaskError {
    /// An error with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError {
            code: code.into(),
            message: message.into(),
            non_retryable: false,
            details: None,
            retry_after: None,
        }
    }

    /// The same error, suggesting when to try again.
    pub fn retry_after(mut self, delay: std::time::Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// The same error, marked as not worth retrying.
    pub fn non_retryable(mut self) -> Self {
        self.non_retryable = true;
        self
    }

    /// The same error with structured details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for TaskError {}

/// Which deadline expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutPhase {
    /// A task was not started in time: no node took it from the queue, or its
    /// node did not start it.
    ScheduleToStart,
    /// A running task stopped heartbeating.
    Heartbeat,
    /// A running attempt took longer than its start-to-close timeout.
    StartToClose,
    /// The task's overall deadline passed.
    Deadline,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::ScheduleToStart => "schedule_to_start",
            TimeoutPhase::Heartbeat => "heartbeat",
            TimeoutPhase::StartToClose => "start_to_close",
            TimeoutPhase::Deadline => "deadline",
        })
    }
}

/// What happened. Exactly one event is appended per transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The task was submitted (always seq 1).
    Queued,
    /// The task was leased to a node.
    Scheduled {
        /// The node.
        node: NodeId,
    },
    /// The node started an attempt.
    Started {
        /// The node.
        node: NodeId,
        /// The attempt number (1-based).
        attempt: u32,
    },
    /// The running attempt is alive.
    Heartbeat {
        /// The node.
        node: NodeId,
        /// The attempt number.
        attempt: u32,
        /// Progress reported by the handler, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        progress: Option<serde_json::Value>,
    },
    /// A line of output from the handler.
    Log {
        /// The stream (`stdout`, `stderr`, or a handler's name for it).
        stream: String,
        /// The line.
        line: String,
    },
    /// An attempt failed and the task will be retried at `retry_at`.
    AttemptFailed {
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: TaskError,
        /// When the next attempt may start.
        retry_at: Timestamp,
    },
    /// Terminal: the task succeeded.
    Succeeded {
        /// The handler's output.
        output: serde_json::Value,
    },
    /// Terminal: the task failed.
    Failed {
        /// The final error.
        error: TaskError,
    },
    /// Terminal: the task was cancelled.
    Cancelled {
        /// Who cancelled it.
        by: PrincipalId,
        /// Why.
        reason: String,
    },
    /// Terminal: a deadline expired.
    TimedOut {
        /// Which one.
        phase: TimeoutPhase,
    },
}

impl EventKind {
    /// Whether this is one of the terminal kinds.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::Succeeded { .. }
                | EventKind::Failed { .. }
                | EventKind::Cancelled { .. }
                | EventKind::TimedOut { .. }
        )
    }

    /// The kind's wire name.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Queued => "queued",
            EventKind::Scheduled { .. } => "scheduled",
            EventKind::Started { .. } => "started",
            EventKind::Heartbeat { .. } => "heartbeat",
            EventKind::Log { .. } => "log",
            EventKind::AttemptFailed { .. } => "attempt_failed",
            EventKind::Succeeded { .. } => "succeeded",
            EventKind::Failed { .. } => "failed",
            EventKind::Cancelled { .. } => "cancelled",
            EventKind::TimedOut { .. } => "timed_out",
        }
    }
}

/// One stored event of one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// The task.
    pub task: TaskId,
    /// The task's tenant.
    pub tenant: TenantId,
    /// Position in the task's stream: 1, 2, 3… without gaps.
    pub seq: u64,
    /// When it was stored.
    pub at: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// An event in a tenant's feed: the task event and its position in the feed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedEvent {
    /// Position in the tenant's feed (1, 2, 3…); resume after it.
    pub cursor: u64,
    /// The event.
    pub event: TaskEvent,
}
