//! Errors over the FFI: [`HiveError`], one flat enum whose variants mirror
//! `hive::Error::kind()` (Kotlin: `dev.hive.ffi.HiveException`, which the
//! `dev.hive` layer rethrows as its sealed `HiveException`).

/// An engine error. Flat: Kotlin gets `HiveException.<Kind>(message)`, with
/// the engine's full message (which names the field, resource or id).
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum HiveError {
    /// No such task, workflow, node… — or it belongs to another tenant.
    #[error("{0}")]
    NotFound(String),
    /// The principal may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// A spec is invalid; the message names the field.
    #[error("{0}")]
    InvalidSpec(String),
    /// An argument is invalid (including one that is too large).
    #[error("{0}")]
    InvalidArgument(String),
    /// The operation is not allowed in the task's state.
    #[error("{0}")]
    InvalidTransition(String),
    /// The task has already ended.
    #[error("{0}")]
    AlreadyTerminal(String),
    /// The attempt's lease was lost (cancelled, timed out, reassigned).
    #[error("{0}")]
    LeaseLost(String),
    /// A concurrent change won.
    #[error("{0}")]
    Conflict(String),
    /// A cursor points before what the store still keeps.
    #[error("{0}")]
    OffsetExpired(String),
    /// The backend cannot be reached.
    #[error("{0}")]
    BackendUnavailable(String),
    /// The backend failed.
    #[error("{0}")]
    Backend(String),
    /// A wait timed out.
    #[error("{0}")]
    Timeout(String),
    /// The engine (or the binding's runtime) is shut down.
    #[error("{0}")]
    Shutdown(String),
    /// Anything else (a bug: please report it).
    #[error("{0}")]
    Internal(String),
}

impl From<hive::Error> for HiveError {
    fn from(e: hive::Error) -> Self {
        let m = e.to_string();
        match e.kind() {
            "not_found" => HiveError::NotFound(m),
            "forbidden" => HiveError::Forbidden(m),
            "invalid_spec" => HiveError::InvalidSpec(m),
            "invalid_argument" | "too_large" => HiveError::InvalidArgument(m),
            "invalid_transition" => HiveError::InvalidTransition(m),
            "already_terminal" => HiveError::AlreadyTerminal(m),
            "lease_lost" => HiveError::LeaseLost(m),
            "conflict" => HiveError::Conflict(m),
            "offset_expired" => HiveError::OffsetExpired(m),
            "backend_unavailable" => HiveError::BackendUnavailable(m),
            "backend" => HiveError::Backend(m),
            "timeout" => HiveError::Timeout(m),
            "shutdown" => HiveError::Shutdown(m),
            _ => HiveError::Internal(m),
        }
    }
}

impl HiveError {
    /// `InvalidSpec` naming `field`.
    pub(crate) fn spec(field: &str, message: impl std::fmt::Display) -> Self {
        hive::Error::InvalidSpec {
            field: field.to_owned(),
            message: message.to_string(),
        }
        .into()
    }

    /// `InvalidArgument`.
    pub(crate) fn argument(message: impl Into<String>) -> Self {
        hive::Error::InvalidArgument {
            message: message.into(),
        }
        .into()
    }
}
