//! JSON values across the boundary: `serde_json::Value` to Python objects and
//! back, directly (no serde round trip through strings).
//!
//! Python → JSON accepts `None`, `bool`, `int` (64-bit), finite `float`, `str`,
//! `dict` with `str` keys (and any `Mapping`), `list` and `tuple`, and objects
//! with a `to_dict()` method (Hive's typed helpers). In spec fields, a
//! `datetime.timedelta` becomes a duration string (`"1500ms"`).

use std::borrow::Cow;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use serde_json::{Map, Number, Value};

/// Deeper than this is refused (a cycle, most likely).
const MAX_DEPTH: usize = 128;

static TIMEDELTA: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static MAPPING: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Why a Python object is not JSON, and where in it.
#[derive(Debug)]
pub(crate) struct NotJson {
    /// A path into the object (`retry.max_attempts`, `[3].input`).
    pub(crate) path: String,
    /// What is wrong.
    pub(crate) message: String,
}

impl NotJson {
    fn at(message: impl Into<String>) -> Self {
        NotJson {
            path: String::new(),
            message: message.into(),
        }
    }

    fn within(mut self, segment: &str) -> Self {
        self.path = if self.path.is_empty() {
            segment.to_owned()
        } else if self.path.starts_with('[') {
            format!("{segment}{}", self.path)
        } else {
            format!("{segment}.{}", self.path)
        };
        self
    }

    /// As a [`pyo3`] error (`hive.InvalidSpec` naming `field`, the path under
    /// `prefix`).
    pub(crate) fn into_spec_error(self, py: Python<'_>, prefix: &str) -> PyErr {
        let field = match (prefix.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => prefix.to_owned(),
            (false, false) if self.path.starts_with('[') => format!("{prefix}{}", self.path),
            (false, false) => format!("{prefix}.{}", self.path),
        };
        crate::errors::invalid_spec(py, &field, &self.message)
    }
}

/// How to read Python objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Plain JSON data (task input, outputs, progress).
    Data,
    /// A spec: a `timedelta` becomes a duration string.
    Spec,
}

/// A JSON value as a Python object.
pub(crate) fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(PyString::new(py, k), to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// A Python object as a JSON value.
pub(crate) fn from_py(obj: &Bound<'_, PyAny>, mode: Mode) -> Result<Value, NotJson> {
    convert(obj, mode, 0)
}

fn py_err(e: PyErr) -> NotJson {
    NotJson::at(e.to_string())
}

fn key_str(k: &Bound<'_, PyAny>) -> Result<String, NotJson> {
    match k.cast::<PyString>() {
        Ok(s) => Ok(s.to_cow().map_err(py_err)?.into_owned()),
        Err(_) => Err(NotJson::at(format!(
            "object keys must be str, got {}",
            type_name(k)
        ))),
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn convert(obj: &Bound<'_, PyAny>, mode: Mode, depth: usize) -> Result<Value, NotJson> {
    if depth > MAX_DEPTH {
        return Err(NotJson::at(format!(
            "nested more than {MAX_DEPTH} levels deep (a cycle?)"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        let s: Cow<'_, str> = s.to_cow().map_err(py_err)?;
        return Ok(Value::String(s.into_owned()));
    }
    if obj.is_exact_instance_of::<PyBool>() {
        return Ok(Value::Bool(obj.is_truthy().map_err(py_err)?));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::Number(i.into()));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::Number(u.into()));
        }
        return Err(NotJson::at("integers must fit in 64 bits"));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        use pyo3::types::PyFloatMethods;
        return Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| NotJson::at("NaN and infinity are not JSON numbers"));
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        let mut map = Map::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            let key = key_str(&k)?;
            // A spec's `input` is data: a timedelta there is an error, not a duration.
            let child = if key == "input" { Mode::Data } else { mode };
            let value = convert(&v, child, depth + 1).map_err(|e| e.within(&key))?;
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    if let Ok(list) = obj.cast::<PyList>() {
        let mut out = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            out.push(convert(&item, mode, depth + 1).map_err(|e| e.within(&format!("[{i}]")))?);
        }
        return Ok(Value::Array(out));
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        let mut out = Vec::with_capacity(tuple.len());
        for (i, item) in tuple.iter().enumerate() {
            out.push(convert(&item, mode, depth + 1).map_err(|e| e.within(&format!("[{i}]")))?);
        }
        return Ok(Value::Array(out));
    }
    let py = obj.py();
    if mode == Mode::Spec {
        let timedelta = TIMEDELTA
            .import(py, "datetime", "timedelta")
            .map_err(py_err)?;
        if obj.is_instance(timedelta).map_err(py_err)? {
            return duration_value(obj);
        }
    }
    if let Some(to_dict) = obj.getattr_opt("to_dict").map_err(py_err)? {
        let value = to_dict.call0().map_err(py_err)?;
        return convert(&value, mode, depth + 1);
    }
    let mapping = MAPPING
        .import(py, "collections.abc", "Mapping")
        .map_err(py_err)?;
    if obj.is_instance(mapping).map_err(py_err)? {
        let mut map = Map::new();
        let items = obj.call_method0("items").map_err(py_err)?;
        for pair in items.try_iter().map_err(py_err)? {
            let pair = pair.map_err(py_err)?;
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract().map_err(py_err)?;
            let key = key_str(&k)?;
            let value = convert(&v, mode, depth + 1).map_err(|e| e.within(&key))?;
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    Err(NotJson::at(format!(
        "{} is not JSON-compatible (use None, bool, int, float, str, list, tuple or dict)",
        type_name(obj)
    )))
}

/// A `timedelta` (or a number of seconds) as a duration string.
fn duration_value(obj: &Bound<'_, PyAny>) -> Result<Value, NotJson> {
    let seconds: f64 = obj
        .call_method0("total_seconds")
        .and_then(|s| s.extract())
        .map_err(py_err)?;
    seconds_to_duration(seconds).map(Value::String)
}

/// Seconds as a duration string the engine's specs accept (`"250ms"`, `"1500us"`).
pub(crate) fn seconds_to_duration(seconds: f64) -> Result<String, NotJson> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(NotJson::at(format!(
            "durations must be finite and not negative, got {seconds}"
        )));
    }
    let micros = (seconds * 1e6).round();
    if micros > 1e15 {
        return Err(NotJson::at(format!("duration {seconds}s is too long")));
    }
    let micros = micros as u64;
    Ok(if micros.is_multiple_of(1000) {
        format!("{}ms", micros / 1000)
    } else {
        format!("{micros}us")
    })
}

/// In a spec object, replaces numbers in the duration fields of `timeouts`,
/// `retry`, `delay` and `rate_limit.per` (seconds) by duration strings.
pub(crate) fn normalize_durations(spec: &mut Value) -> Result<(), NotJson> {
    const TIMEOUTS: [&str; 4] = [
        "schedule_to_start",
        "start_to_close",
        "heartbeat",
        "deadline",
    ];
    const RETRY: [&str; 3] = ["initial_interval", "max_interval", "max_elapsed"];
    let Value::Object(map) = spec else {
        return Ok(());
    };
    seconds_fields(map, &["delay"])?;
    if let Some(Value::Object(r)) = map.get_mut("rate_limit") {
        seconds_fields(r, &["per"]).map_err(|e| e.within("rate_limit"))?;
    }
    if let Some(Value::Object(t)) = map.get_mut("timeouts") {
        seconds_fields(t, &TIMEOUTS).map_err(|e| e.within("timeouts"))?;
    }
    if let Some(Value::Object(r)) = map.get_mut("retry") {
        seconds_fields(r, &RETRY).map_err(|e| e.within("retry"))?;
        if let Some(Value::Object(overrides)) = r.get_mut("overrides") {
            for (code, o) in overrides.iter_mut() {
                if let Value::Object(o) = o {
                    seconds_fields(o, &RETRY[..2])
                        .map_err(|e| e.within(code).within("overrides").within("retry"))?;
                }
            }
        }
    }
    Ok(())
}

fn seconds_fields(map: &mut Map<String, Value>, fields: &[&str]) -> Result<(), NotJson> {
    for field in fields {
        if let Some(Value::Number(n)) = map.get(*field) {
            let s = n.as_f64().unwrap_or(-1.0);
            let d = seconds_to_duration(s).map_err(|e| e.within(field))?;
            map.insert((*field).to_owned(), Value::String(d));
        }
    }
    Ok(())
}
