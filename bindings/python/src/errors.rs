//! `hive::Error` as Python exceptions: the classes live in `hive._errors` (one
//! per `Error::kind()`, all under `hive.HiveError`); each carries the
//! variant's fields as attributes.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The Python class for an error kind.
fn class_name(e: &hive::Error) -> &'static str {
    match e.kind() {
        "not_found" => "NotFound",
        "forbidden" => "Forbidden",
        "invalid_spec" => "InvalidSpec",
        "invalid_argument" | "too_large" => "InvalidArgument",
        "invalid_transition" => "InvalidTransition",
        "already_terminal" => "AlreadyTerminal",
        "lease_lost" => "LeaseLost",
        "conflict" => "Conflict",
        "offset_expired" => "OffsetExpired",
        "backend_unavailable" => "BackendUnavailable",
        "backend" => "BackendError",
        "timeout" => "Timeout",
        "shutdown" => "Shutdown",
        _ => "HiveError",
    }
}

fn build(py: Python<'_>, class: &str, message: &str, details: &Bound<'_, PyDict>) -> PyErr {
    let made = ERRORS
        .get_or_try_init(py, || py.import("hive._errors").map(Bound::unbind))
        .and_then(|m| m.bind(py).getattr(class))
        .and_then(|cls| cls.call((message,), Some(details)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => PyRuntimeError::new_err(format!(
            "{message} (and hive._errors.{class} could not be raised: {e})"
        )),
    }
}

/// An engine error as the matching `hive.HiveError` subclass.
pub(crate) fn to_py_err(py: Python<'_>, e: &hive::Error) -> PyErr {
    let details = PyDict::new(py);
    let set = |k: &str, v: Bound<'_, PyAny>| {
        let _ = details.set_item(k, v);
    };
    let s = |v: &str| pyo3::types::PyString::new(py, v).into_any();
    match e {
        hive::Error::NotFound { kind, id } => {
            set("resource", s(kind));
            set("id", s(id));
        }
        hive::Error::Forbidden { action, reason } => {
            set("action", s(action));
            set("reason", s(reason));
        }
        hive::Error::InvalidSpec { field, message } => {
            set("field", s(field));
            set("detail", s(message));
        }
        hive::Error::InvalidTransition { task, from, op } => {
            set("task_id", s(&task.to_string()));
            set("state", s(from.as_str()));
            set("op", s(&op.to_string()));
        }
        hive::Error::AlreadyTerminal { task, state, seq } => {
            set("task_id", s(&task.to_string()));
            set("state", s(state.as_str()));
            let Ok(seq) = seq.into_pyobject(py);
            set("seq", seq.into_any());
        }
        hive::Error::LeaseLost { task } => set("task_id", s(&task.to_string())),
        hive::Error::OffsetExpired {
            requested,
            earliest,
        } => {
            let (Ok(r), Ok(e)) = (requested.into_pyobject(py), earliest.into_pyobject(py));
            set("requested", r.into_any());
            set("earliest", e.into_any());
        }
        hive::Error::Timeout(d) => {
            set(
                "seconds",
                pyo3::types::PyFloat::new(py, d.as_secs_f64()).into_any(),
            );
        }
        _ => {}
    }
    build(py, class_name(e), &e.to_string(), &details)
}

/// `hive.InvalidSpec` for `field`.
pub(crate) fn invalid_spec(py: Python<'_>, field: &str, detail: &str) -> PyErr {
    to_py_err(
        py,
        &hive::Error::InvalidSpec {
            field: field.to_owned(),
            message: detail.to_owned(),
        },
    )
}

/// `hive.InvalidArgument`.
pub(crate) fn invalid_argument(py: Python<'_>, message: impl Into<String>) -> PyErr {
    to_py_err(
        py,
        &hive::Error::InvalidArgument {
            message: message.into(),
        },
    )
}

/// `hive.Shutdown` with a message of ours.
pub(crate) fn shutdown(py: Python<'_>, message: &str) -> PyErr {
    build(py, "Shutdown", message, &PyDict::new(py))
}
