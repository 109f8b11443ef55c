//! Specs from Python: a dict (the same JSON as the Rust types' serde form),
//! keyword arguments, or Hive's typed helpers (anything with `to_dict()`).
//! Durations may be strings (`"1500ms"`, `"2s"`), numbers of seconds or
//! `datetime.timedelta`. Every problem is a `hive.InvalidSpec` naming the
//! field.

use pyo3::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::convert::{self, Mode, NotJson};

/// Keyword arguments of `submit`.
pub(crate) struct TaskKw<'a, 'py> {
    pub(crate) agent: Option<String>,
    pub(crate) input: Option<&'a Bound<'py, PyAny>>,
    pub(crate) labels: Option<&'a Bound<'py, PyAny>>,
    pub(crate) priority: Option<i32>,
    pub(crate) timeouts: Option<&'a Bound<'py, PyAny>>,
    pub(crate) retry: Option<&'a Bound<'py, PyAny>>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) delay: Option<&'a Bound<'py, PyAny>>,
    pub(crate) not_before: Option<&'a Bound<'py, PyAny>>,
    pub(crate) concurrency: Option<&'a Bound<'py, PyAny>>,
    pub(crate) rate_limit: Option<&'a Bound<'py, PyAny>>,
}

impl TaskKw<'_, '_> {
    /// No keywords: the spec comes from a dict alone.
    pub(crate) fn none() -> Self {
        TaskKw {
            agent: None,
            input: None,
            labels: None,
            priority: None,
            timeouts: None,
            retry: None,
            idempotency_key: None,
            delay: None,
            not_before: None,
            concurrency: None,
            rate_limit: None,
        }
    }
}

/// A point in time from Python: a timezone-aware `datetime`, or a number of
/// seconds since the UNIX epoch. As the spec's milliseconds.
pub(crate) fn timestamp_millis(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<i64> {
    let py = obj.py();
    let bad = |msg: &str| crate::errors::invalid_spec(py, field, msg);
    let seconds: f64 = if obj.hasattr("utcoffset")? && obj.hasattr("timestamp")? {
        if obj.call_method0("utcoffset")?.is_none() {
            return Err(bad(
                "a naive datetime is ambiguous: give it a timezone (datetime.timezone.utc)",
            ));
        }
        obj.call_method0("timestamp")?.extract()?
    } else if let Ok(n) = obj.extract::<f64>() {
        n
    } else {
        return Err(bad(
            "expected a timezone-aware datetime or seconds since the UNIX epoch",
        ));
    };
    if !seconds.is_finite() || !(0.0..=9.2e15).contains(&seconds) {
        return Err(bad("must be a time after 1970-01-01T00:00:00Z"));
    }
    Ok((seconds * 1000.0).round() as i64)
}

fn object(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Map<String, Value>> {
    let py = obj.py();
    match convert::from_py(obj, Mode::Spec) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(crate::errors::invalid_spec(
            py,
            field,
            "expected a dict (a mapping of field names to values)",
        )),
        Err(e) => Err(e.into_spec_error(py, field)),
    }
}

fn typed<T: DeserializeOwned>(py: Python<'_>, value: Value, prefix: &str) -> PyResult<T> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let field = match (prefix.is_empty(), path.as_str()) {
            (true, p) => p.to_owned(),
            (false, ".") => prefix.to_owned(),
            (false, p) if p.starts_with('[') => format!("{prefix}{p}"),
            (false, p) => format!("{prefix}.{p}"),
        };
        let field = if field == "." { String::new() } else { field };
        crate::errors::invalid_spec(py, &field, &e.into_inner().to_string())
    })
}

fn durations(py: Python<'_>, value: &mut Value, prefix: &str) -> PyResult<()> {
    convert::normalize_durations(value).map_err(|e: NotJson| e.into_spec_error(py, prefix))
}

/// A task spec from a dict and/or keyword arguments (keywords win).
pub(crate) fn task_spec(
    py: Python<'_>,
    spec: Option<&Bound<'_, PyAny>>,
    kw: TaskKw<'_, '_>,
    prefix: &str,
) -> PyResult<hive::TaskSpec> {
    let mut map = match spec {
        Some(s) if !s.is_none() => object(s, prefix)?,
        _ => Map::new(),
    };
    let field = |name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        }
    };
    if let Some(agent) = kw.agent {
        map.insert("agent".into(), Value::String(agent));
    }
    if let Some(input) = kw.input {
        let v = convert::from_py(input, Mode::Data)
            .map_err(|e| e.into_spec_error(py, &field("input")))?;
        map.insert("input".into(), v);
    }
    if let Some(labels) = kw.labels
        && !labels.is_none()
    {
        map.insert(
            "labels".into(),
            Value::Object(object(labels, &field("labels"))?),
        );
    }
    if let Some(p) = kw.priority {
        map.insert("priority".into(), Value::from(p));
    }
    if let Some(t) = kw.timeouts
        && !t.is_none()
    {
        map.insert(
            "timeouts".into(),
            Value::Object(object(t, &field("timeouts"))?),
        );
    }
    if let Some(r) = kw.retry
        && !r.is_none()
    {
        map.insert("retry".into(), Value::Object(object(r, &field("retry"))?));
    }
    if let Some(k) = kw.idempotency_key {
        map.insert("idempotency_key".into(), Value::String(k));
    }
    if let Some(d) = kw.delay
        && !d.is_none()
    {
        let v =
            convert::from_py(d, Mode::Spec).map_err(|e| e.into_spec_error(py, &field("delay")))?;
        map.insert("delay".into(), v);
    }
    if let Some(t) = kw.not_before
        && !t.is_none()
    {
        let ms = timestamp_millis(t, &field("not_before"))?;
        map.insert("not_before".into(), Value::from(ms));
    }
    for (name, obj) in [
        ("concurrency", kw.concurrency),
        ("rate_limit", kw.rate_limit),
    ] {
        if let Some(o) = obj
            && !o.is_none()
        {
            map.insert(name.into(), Value::Object(object(o, &field(name))?));
        }
    }
    if !map.contains_key("agent") {
        return Err(crate::errors::invalid_spec(
            py,
            &field("agent"),
            "missing: name the agent (a handler name or an OCI reference)",
        ));
    }
    let mut value = Value::Object(map);
    durations(py, &mut value, prefix)?;
    typed(py, value, prefix)
}

/// A workflow spec from a dict or a `hive.Workflow`.
pub(crate) fn workflow_spec(
    py: Python<'_>,
    spec: &Bound<'_, PyAny>,
) -> PyResult<hive::WorkflowSpec> {
    let mut value = Value::Object(object(spec, "")?);
    if let Some(Value::Array(steps)) = value.get_mut("steps") {
        for (i, step) in steps.iter_mut().enumerate() {
            durations(py, step, &format!("steps[{i}]"))?;
        }
    }
    typed(py, value, "")
}

/// Engine settings (`hive::HiveConfig`) from a dict; durations as strings,
/// seconds or `timedelta`.
pub(crate) fn hive_config(py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<hive::HiveConfig> {
    let mut map = object(config, "config")?;
    const DURATIONS: [&str; 5] = [
        "sweep_interval",
        "node_heartbeat_interval",
        "subscription_poll",
        "workflow_poll",
        "workflow_scan",
    ];
    for field in DURATIONS {
        if let Some(Value::Number(n)) = map.get(field) {
            let d = convert::seconds_to_duration(n.as_f64().unwrap_or(-1.0)).map_err(|e| {
                crate::errors::invalid_argument(py, format!("config.{field}: {}", e.message))
            })?;
            map.insert(field.to_owned(), Value::String(d));
        }
    }
    serde_path_to_error::deserialize::<_, hive::HiveConfig>(Value::Object(map)).map_err(|e| {
        crate::errors::invalid_argument(py, format!("config.{}: {}", e.path(), e.inner()))
    })
}

/// Keyword arguments of `create_schedule` / `update_schedule`.
pub(crate) struct ScheduleKw<'a, 'py> {
    pub(crate) cron: Option<String>,
    pub(crate) timezone: Option<String>,
    pub(crate) every: Option<&'a Bound<'py, PyAny>>,
    pub(crate) anchor: Option<&'a Bound<'py, PyAny>>,
    pub(crate) task: Option<&'a Bound<'py, PyAny>>,
    pub(crate) workflow: Option<&'a Bound<'py, PyAny>>,
    pub(crate) overlap: Option<String>,
    pub(crate) catch_up: Option<&'a Bound<'py, PyAny>>,
    pub(crate) jitter: Option<&'a Bound<'py, PyAny>>,
    pub(crate) start_at: Option<&'a Bound<'py, PyAny>>,
    pub(crate) end_at: Option<&'a Bound<'py, PyAny>>,
    pub(crate) max_fires: Option<u64>,
    pub(crate) paused: bool,
    pub(crate) note: Option<String>,
}

/// A duration from Python (a string like `"90s"`, seconds, or a
/// `timedelta`) as the spec's duration string.
fn duration_value(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Value> {
    let py = obj.py();
    match convert::from_py(obj, Mode::Spec).map_err(|e| e.into_spec_error(py, field))? {
        Value::Number(n) => convert::seconds_to_duration(n.as_f64().unwrap_or(-1.0))
            .map(Value::String)
            .map_err(|e| e.into_spec_error(py, field)),
        v @ Value::String(_) => Ok(v),
        _ => Err(crate::errors::invalid_spec(
            py,
            field,
            "expected a duration: \"90s\", a number of seconds or a timedelta",
        )),
    }
}

fn given<'a, 'py>(o: Option<&'a Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
    o.filter(|b| !b.is_none())
}

/// A schedule spec from keyword arguments: exactly one of `cron` / `every`
/// and one of `task` / `workflow`.
pub(crate) fn schedule_spec(
    py: Python<'_>,
    id: String,
    kw: ScheduleKw<'_, '_>,
) -> PyResult<hive::ScheduleSpec> {
    let bad = |field: &str, msg: &str| crate::errors::invalid_spec(py, field, msg);
    let calendar = match (kw.cron, given(kw.every)) {
        (Some(expr), None) => serde_json::json!({ "cron": {
            "expr": expr,
            "timezone": kw.timezone.unwrap_or_else(|| "UTC".into()),
        }}),
        (None, Some(every)) => {
            if kw.timezone.is_some() {
                return Err(bad("calendar.timezone", "a time zone applies to cron only"));
            }
            let mut m = Map::new();
            m.insert("every".into(), duration_value(every, "calendar.every")?);
            if let Some(a) = given(kw.anchor) {
                m.insert(
                    "anchor".into(),
                    Value::from(timestamp_millis(a, "calendar.anchor")?),
                );
            }
            serde_json::json!({ "interval": Value::Object(m) })
        }
        (Some(_), Some(_)) => return Err(bad("calendar", "give either cron or every, not both")),
        (None, None) => return Err(bad("calendar", "missing: give cron=\"…\" or every=…")),
    };
    let action = match (given(kw.task), given(kw.workflow)) {
        (Some(t), None) => {
            let spec = task_spec(py, Some(t), TaskKw::none(), "action.task")?;
            serde_json::json!({ "task": serde_json::to_value(spec).map_err(|e| bad("action.task", &e.to_string()))? })
        }
        (None, Some(w)) => {
            let spec = workflow_spec(py, w)?;
            serde_json::json!({ "workflow": serde_json::to_value(spec).map_err(|e| bad("action.workflow", &e.to_string()))? })
        }
        (Some(_), Some(_)) => {
            return Err(bad("action", "give either task or workflow, not both"));
        }
        (None, None) => {
            return Err(bad("action", "missing: give task={…} or workflow=…"));
        }
    };
    let mut m = Map::new();
    m.insert("id".into(), Value::String(id));
    m.insert("calendar".into(), calendar);
    m.insert("action".into(), action);
    if let Some(o) = kw.overlap {
        m.insert("overlap".into(), Value::String(o));
    }
    if let Some(c) = given(kw.catch_up) {
        let v = match c.extract::<String>() {
            Ok(s) if s == "latest" => Value::String(s),
            _ => serde_json::json!({ "window": duration_value(c, "catch_up")? }),
        };
        m.insert("catch_up".into(), v);
    }
    if let Some(j) = given(kw.jitter) {
        m.insert("jitter".into(), duration_value(j, "jitter")?);
    }
    for (name, t) in [("start_at", kw.start_at), ("end_at", kw.end_at)] {
        if let Some(t) = given(t) {
            m.insert(name.into(), Value::from(timestamp_millis(t, name)?));
        }
    }
    if let Some(n) = kw.max_fires {
        m.insert("max_fires".into(), Value::from(n));
    }
    m.insert("paused".into(), Value::Bool(kw.paused));
    if let Some(n) = kw.note {
        m.insert("note".into(), Value::String(n));
    }
    typed(py, Value::Object(m), "")
}
