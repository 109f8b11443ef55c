//! The one public error type of the engine and every store.

use std::time::Duration;

use crate::id::TaskId;
use crate::task::{TaskState, TransitionKind};

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong. Backends map their driver errors into these variants at their
/// edge (a driver error never appears in a signature); the source is kept for
/// `Display` and [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist, or it belongs to another tenant (reads never
    /// reveal another tenant's objects).
    #[error("{kind} {id} not found")]
    NotFound {
        /// What kind of object ("task", "node", …).
        kind: &'static str,
        /// Its id, as given.
        id: String,
    },
    /// The caller is not allowed to do this.
    #[error("forbidden: {action}: {reason}")]
    Forbidden {
        /// The action that was refused.
        action: String,
        /// Why.
        reason: String,
    },
    /// A task, node or workflow spec is invalid; nothing was stored.
    #[error("invalid spec: {field}: {message}")]
    InvalidSpec {
        /// The offending field, as a path (`retry.backoff_coefficient`).
        field: String,
        /// What is wrong with it and what is allowed.
        message: String,
    },
    /// An argument other than a spec is invalid (a malformed id, a bad limit).
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What is wrong.
        message: String,
    },
    /// The transition is not allowed from the task's current state.
    #[error("task {task}: cannot {op} a task that is {from}")]
    InvalidTransition {
        /// The task.
        task: TaskId,
        /// Its current state.
        from: TaskState,
        /// The refused operation.
        op: TransitionKind,
    },
    /// The task already ended; a second, different terminal report is refused.
    #[error("task {task} already ended as {state} (terminal event seq {seq})")]
    AlreadyTerminal {
        /// The task.
        task: TaskId,
        /// Its terminal state.
        state: TaskState,
        /// The seq of its terminal event.
        seq: u64,
    },
    /// The caller's lease was taken away (the task was requeued, cancelled or timed
    /// out); its result is discarded.
    #[error("lease lost on task {task}")]
    LeaseLost {
        /// The task.
        task: TaskId,
    },
    /// A conflicting object exists or a precondition failed.
    #[error("conflict: {message}")]
    Conflict {
        /// What conflicted.
        message: String,
    },
    /// The requested offset was dropped by retention; resume from `earliest`.
    #[error("offset {requested} expired; earliest retained is {earliest}")]
    OffsetExpired {
        /// The offset asked for.
        requested: u64,
        /// The earliest offset still retained.
        earliest: u64,
    },
    /// The backend cannot be reached right now; the operation may be retried.
    #[error("backend unavailable: {message}")]
    BackendUnavailable {
        /// What failed.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The backend failed in a way retrying will not fix (corrupt data, schema
    /// mismatch, a bug).
    #[error("backend error: {message}")]
    Backend {
        /// What failed.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A value is larger than its configured limit (a worker's output, error
    /// message, log line or progress: see `HiveConfig::limits`); nothing was
    /// stored.
    #[error("{what} is {size} bytes; at most {limit} allowed")]
    TooLarge {
        /// What was too large (`output`, `error.message`, `log line`, `progress`).
        what: String,
        /// Its size in bytes (serialized JSON for JSON values).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// An operation did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The engine is shutting down.
    #[error("the engine is shut down")]
    Shutdown,
}

impl Error {
    /// A backend driver's error: [`Error::BackendUnavailable`] when retrying
    /// may succeed (`temporary`), [`Error::Backend`] otherwise; the driver's
    /// error is kept as the source.
    pub fn from_driver(
        temporary: bool,
        message: String,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let source = Some(Box::new(source) as Box<dyn std::error::Error + Send + Sync>);
        if temporary {
            Error::BackendUnavailable { message, source }
        } else {
            Error::Backend { message, source }
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Error::BackendUnavailable { .. } | Error::Timeout(_))
    }

    /// A short, stable name of the variant, for bindings and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::Forbidden { .. } => "forbidden",
            Error::InvalidSpec { .. } => "invalid_spec",
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::InvalidTransition { .. } => "invalid_transition",
            Error::AlreadyTerminal { .. } => "already_terminal",
            Error::LeaseLost { .. } => "lease_lost",
            Error::Conflict { .. } => "conflict",
            Error::OffsetExpired { .. } => "offset_expired",
            Error::BackendUnavailable { .. } => "backend_unavailable",
            Error::Backend { .. } => "backend",
            Error::TooLarge { .. } => "too_large",
            Error::Timeout(_) => "timeout",
            Error::Shutdown => "shutdown",
        }
    }

    pub(crate) fn invalid_spec(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidSpec {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn not_found(kind: &'static str, id: impl ToString) -> Self {
        Error::NotFound {
            kind,
            id: id.to_string(),
        }
    }
}
