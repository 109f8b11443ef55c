//! The edge where driver errors become [`hive_core::Error`]s.

use hive_core::Error;

/// SQLSTATE classes and codes worth retrying: connection exceptions (08),
/// insufficient resources (53), operator intervention such as a shutdown or a
/// cancelled statement (57), system errors (58), serialization failures and
/// deadlocks (40001, 40P01).
fn temporary_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || code.starts_with("58")
        || code == "40001"
        || code == "40P01"
}

/// Whether a statement lost a race with another transaction (deadlock or
/// serialization failure) and may simply run again.
pub(super) fn lost_race(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c == "40P01" || c == "40001"),
        _ => false,
    }
}

/// Maps a driver error, naming what was being done.
pub(super) fn db(context: &str, e: sqlx::Error) -> Error {
    let temporary = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| temporary_sqlstate(&c)),
        _ => false,
    };
    Error::from_driver(temporary, format!("postgres: {context}: {e}"), e)
}

/// A stored value that does not decode: corrupt data or a schema this build
/// does not understand.
pub(super) fn corrupt(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Backend {
        message: format!("postgres: stored {what} does not decode: {e}"),
        source: Some(Box::new(e)),
    }
}

/// A value that cannot be encoded for storage (should not happen).
pub(super) fn encode(what: &str, e: serde_json::Error) -> Error {
    Error::Backend {
        message: format!("postgres: cannot encode {what}: {e}"),
        source: Some(Box::new(e)),
    }
}

/// A stored value that breaks an invariant of the schema.
pub(super) fn invalid_row(message: String) -> Error {
    Error::Backend {
        message: format!("postgres: {message}"),
        source: None,
    }
}
