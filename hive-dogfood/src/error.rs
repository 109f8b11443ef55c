//! The one error type of the tool: every way a run can go wrong, typed, so a
//! bad answer from the target becomes a failed check and never a panic.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong while driving the target.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DogfoodError {
    /// The request never got an answer (connection refused, reset, a
    /// timeout, a URL the client cannot use), after the retries.
    #[error("{method} {route}: no answer from the target: {}", chain(source))]
    Transport {
        /// The request's method.
        method: String,
        /// The request's path.
        route: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The target answered with a status the contract does not allow here.
    #[error("{method} {route}: expected {expected}, got {status}: {body}")]
    Status {
        /// The request's method.
        method: String,
        /// The request's path.
        route: String,
        /// What the contract says (`200`, `403 or 404`…).
        expected: String,
        /// What came back.
        status: u16,
        /// The start of the body that came back.
        body: String,
    },
    /// The target answered, but not with what the contract describes (a body
    /// that is not JSON, a missing field, a wrong value).
    #[error("{method} {route}: {reason}")]
    BadAnswer {
        /// The request's method.
        method: String,
        /// The request's path.
        route: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// Something did not happen in time.
    #[error("{what}: not done within {}", humantime::format_duration(*.after))]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        after: Duration,
    },
    /// A contract breach found by comparing answers (a task in the wrong
    /// state, a gap in a stream, a denial missing from the audit trail).
    #[error("{0}")]
    Contract(String),
    /// The check could not run (the token lacks a scope, an earlier check
    /// failed).
    #[error("not run: {0}")]
    Skipped(String),
    /// The restart command failed.
    #[error("the restart command {command:?}: {reason}")]
    Restart {
        /// The command.
        command: String,
        /// Why.
        reason: String,
    },
    /// The report could not be written.
    #[error("cannot write the report {path}: {source}")]
    Report {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A bad option (a target that is not a URL, zero tasks).
    #[error("bad option: {0}")]
    Usage(String),
}

impl DogfoodError {
    /// A contract breach described by `reason`.
    pub fn contract(reason: impl Into<String>) -> DogfoodError {
        DogfoodError::Contract(reason.into())
    }
}

/// An error with its sources, `: `-separated (reqwest's own message says
/// little without them).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The tool's result type.
pub type Result<T, E = DogfoodError> = std::result::Result<T, E>;
