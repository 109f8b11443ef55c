//! Typed, read-only Python views of the engine's values. Each wraps the Rust
//! value and converts a field only when it is read; `to_dict()` gives the
//! JSON form the Rust types serialize to (timestamps in epoch milliseconds,
//! durations as strings).

use std::collections::BTreeMap;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyList;
use serde::Serialize;
use serde_json::Value;

use crate::convert;

mod nodes;
mod principals;
mod tasks;
mod workflows;
pub(crate) use nodes::*;
pub(crate) use principals::*;
pub(crate) use tasks::*;
pub(crate) use workflows::*;

static FROM_TIMESTAMP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static UTC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A timestamp as an aware `datetime` in UTC.
pub(crate) fn datetime(py: Python<'_>, ts: hive::Timestamp) -> PyResult<Py<PyAny>> {
    let from = FROM_TIMESTAMP.get_or_try_init(py, || {
        py.import("datetime")?
            .getattr("datetime")?
            .getattr("fromtimestamp")
            .map(Bound::unbind)
    })?;
    let utc = UTC.get_or_try_init(py, || {
        py.import("datetime")?
            .getattr("timezone")?
            .getattr("utc")
            .map(Bound::unbind)
    })?;
    Ok(from
        .bind(py)
        .call1((ts.as_millis() as f64 / 1000.0, utc.bind(py)))?
        .unbind())
}

fn opt_datetime(py: Python<'_>, ts: Option<hive::Timestamp>) -> PyResult<Option<Py<PyAny>>> {
    ts.map(|t| datetime(py, t)).transpose()
}

/// A serializable value as its JSON form in Python.
pub(crate) fn json<T: Serialize>(py: Python<'_>, v: &T) -> PyResult<Py<PyAny>> {
    let value = serde_json::to_value(v).map_err(|e| {
        crate::errors::to_py_err(
            py,
            &hive::Error::Backend {
                message: format!("could not encode a value: {e}"),
                source: None,
            },
        )
    })?;
    Ok(convert::to_py(py, &value)?.unbind())
}

fn value(py: Python<'_>, v: &Value) -> PyResult<Py<PyAny>> {
    Ok(convert::to_py(py, v)?.unbind())
}

fn opt_value(py: Python<'_>, v: Option<&Value>) -> PyResult<Option<Py<PyAny>>> {
    v.map(|v| value(py, v)).transpose()
}

fn list<'py, T, I>(py: Python<'py>, items: I) -> PyResult<Py<PyList>>
where
    T: pyo3::PyClass + Into<pyo3::PyClassInitializer<T>>,
    I: IntoIterator<Item = T>,
{
    let list = PyList::empty(py);
    for item in items {
        list.append(Py::new(py, item)?)?;
    }
    Ok(list.unbind())
}

/// A string as Python's `repr` would write it.
pub(crate) fn py_str(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

fn py_opt(s: &Option<String>) -> String {
    s.as_deref().map_or_else(|| "None".to_owned(), py_str)
}
