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

// ----- principals -------------------------------------------------------------

/// Who is calling. Every engine call takes one as its first argument.
#[pyclass(module = "hive._hive", frozen)]
#[derive(Clone)]
pub(crate) struct Principal {
    pub(crate) inner: hive::Principal,
}

#[pymethods]
impl Principal {
    /// A user of `tenant` with the default user scopes.
    #[staticmethod]
    fn user(tenant: &str, id: &str) -> Self {
        Principal {
            inner: hive::Principal::user(tenant, id),
        }
    }

    /// An operator of `tenant`: may also cancel others' tasks and read the audit.
    #[staticmethod]
    fn operator(tenant: &str, id: &str) -> Self {
        Principal {
            inner: hive::Principal::operator(tenant, id),
        }
    }

    /// An admin of `tenant`.
    #[staticmethod]
    fn admin(tenant: &str, id: &str) -> Self {
        Principal {
            inner: hive::Principal::admin(tenant, id),
        }
    }

    /// Hive itself: every scope, across tenants (needed for system nodes).
    #[staticmethod]
    fn system() -> Self {
        Principal {
            inner: hive::Principal::system(),
        }
    }

    /// The same principal with exactly these scopes (`"task:submit"`, …).
    fn with_scopes(&self, py: Python<'_>, scopes: Vec<String>) -> PyResult<Self> {
        Ok(Principal {
            inner: self.inner.clone().with_scopes(parse_scopes(py, &scopes)?),
        })
    }

    /// The tenant it acts in.
    #[getter]
    fn tenant(&self) -> &str {
        self.inner.tenant.as_str()
    }

    /// Its name within the tenant.
    #[getter]
    fn id(&self) -> &str {
        self.inner.id.as_str()
    }

    /// `user`, `operator`, `admin`, `worker` or `system`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind.name()
    }

    /// Its scopes, as wire names.
    #[getter]
    fn scopes(&self) -> Vec<&'static str> {
        self.inner.scopes.iter().map(|s| s.as_str()).collect()
    }

    /// The JSON form.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json(py, &self.inner)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<Principal>()
            .is_ok_and(|o| o.get().inner == self.inner)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.tenant.hash(&mut h);
        self.inner.id.hash(&mut h);
        self.inner.kind.hash(&mut h);
        self.inner.scopes.hash(&mut h);
        h.finish()
    }

    fn __repr__(&self) -> String {
        format!(
            "Principal.{}({}, {})",
            self.inner.kind.name(),
            py_str(self.inner.tenant.as_str()),
            py_str(self.inner.id.as_str())
        )
    }
}

/// Scopes from their wire names.
pub(crate) fn parse_scopes(py: Python<'_>, scopes: &[String]) -> PyResult<hive::Scopes> {
    let mut set = hive::Scopes::empty();
    for s in scopes {
        let scope: hive::Scope =
            serde_json::from_value(Value::String(s.clone())).map_err(|_| {
                let known: Vec<&str> = hive::Scope::ALL.iter().map(|s| s.as_str()).collect();
                crate::errors::invalid_argument(
                    py,
                    format!("unknown scope {s:?}; known: {}", known.join(", ")),
                )
            })?;
        set = set.with(scope);
    }
    Ok(set)
}

/// An API token without its secret.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct TokenInfo {
    inner: hive::iam::TokenInfo,
}

impl From<hive::iam::TokenInfo> for TokenInfo {
    fn from(inner: hive::iam::TokenInfo) -> Self {
        TokenInfo { inner }
    }
}

#[pymethods]
impl TokenInfo {
    /// The token id (the public part of the token).
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }

    /// The tenant it acts in.
    #[getter]
    fn tenant(&self) -> &str {
        self.inner.tenant.as_str()
    }

    /// The principal it stands for.
    #[getter]
    fn principal_id(&self) -> &str {
        self.inner.principal.as_str()
    }

    /// `user`, `operator` or `admin`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind.as_str()
    }

    /// Its scopes.
    #[getter]
    fn scopes(&self) -> Vec<&'static str> {
        self.inner.scopes.iter().map(|s| s.as_str()).collect()
    }

    /// What it is for.
    #[getter]
    fn description(&self) -> &str {
        &self.inner.description
    }

    /// Who issued it.
    #[getter]
    fn issued_by(&self) -> &str {
        self.inner.issued_by.as_str()
    }

    /// When it was issued.
    #[getter]
    fn issued_at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.inner.issued_at)
    }

    /// When it stops resolving (never when `None`).
    #[getter]
    fn expires_at(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        opt_datetime(py, self.inner.expires_at)
    }

    /// When it was revoked.
    #[getter]
    fn revoked_at(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        opt_datetime(py, self.inner.revoked_at)
    }

    /// The principal it stands for.
    fn to_principal(&self) -> Principal {
        Principal {
            inner: self.inner.to_principal(),
        }
    }

    /// The JSON form.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "<hive.TokenInfo {} principal={} kind={}>",
            self.inner.id,
            py_str(self.inner.principal.as_str()),
            self.inner.kind
        )
    }
}

// ----- tasks ------------------------------------------------------------------

/// The answer to a submission.
#[pyclass(module = "hive._hive", frozen, get_all)]
pub(crate) struct Submitted {
    /// The task's id (the existing task's, for a reused idempotency key).
    id: String,
    /// `False` when an existing task was returned for the idempotency key.
    created: bool,
    /// The task's last event seq when answered: subscribe after it.
    last_seq: u64,
}

impl From<hive::store::Submitted> for Submitted {
    fn from(s: hive::store::Submitted) -> Self {
        Submitted {
            id: s.id.to_string(),
            created: s.created,
            last_seq: s.last_seq,
        }
    }
}

#[pymethods]
impl Submitted {
    fn __repr__(&self) -> String {
        format!(
            "Submitted(id={}, created={}, last_seq={})",
            py_str(&self.id),
            if self.created { "True" } else { "False" },
            self.last_seq
        )
    }
}

/// An acknowledged transition: the seq of the event it appended and the
/// task's state after it.
#[pyclass(module = "hive._hive", frozen, get_all)]
pub(crate) struct Ack {
    /// The seq of the appended event.
    seq: u64,
    /// The task's state after it.
    state: &'static str,
}

impl From<hive::store::Ack> for Ack {
    fn from(a: hive::store::Ack) -> Self {
        Ack {
            seq: a.seq,
            state: a.state.as_str(),
        }
    }
}

#[pymethods]
impl Ack {
    fn __repr__(&self) -> String {
        format!("Ack(seq={}, state={})", self.seq, py_str(self.state))
    }
}

/// An error a task (or an attempt) ended with.
#[pyclass(module = "hive._hive", name = "TaskError", frozen)]
pub(crate) struct PyTaskError {
    inner: hive::TaskError,
}

impl PyTaskError {
    fn new_py(py: Python<'_>, e: &hive::TaskError) -> PyResult<Py<PyTaskError>> {
        Py::new(py, PyTaskError { inner: e.clone() })
    }
}

#[pymethods]
impl PyTaskError {
    /// A short machine-readable code (a handler exception's class name,
    /// `timeout`, `lost`, …).
    #[getter]
    fn code(&self) -> &str {
        &self.inner.code
    }

    /// A human-readable message.
    #[getter]
    fn message(&self) -> &str {
        &self.inner.message
    }

    /// Whether the handler said retrying cannot help.
    #[getter]
    fn non_retryable(&self) -> bool {
        self.inner.non_retryable
    }

    /// Structured details (for a Python exception: its type and traceback).
    #[getter]
    fn details(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        opt_value(py, self.inner.details.as_ref())
    }

    /// The handler's suggested delay before the next attempt, in seconds.
    #[getter]
    fn retry_after(&self) -> Option<f64> {
        self.inner.retry_after.map(|d| d.as_secs_f64())
    }

    /// The JSON form.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "TaskError(code={}, message={})",
            py_str(&self.inner.code),
            py_str(&self.inner.message)
        )
    }
}

/// A snapshot of a task. `last_seq` is the seq of its last event when the
/// snapshot was taken: iterate `events(…, after=last_seq)` to miss nothing.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct Task {
    inner: hive::Task,
}

impl From<hive::Task> for Task {
    fn from(inner: hive::Task) -> Self {
        Task { inner }
    }
}

#[pymethods]
impl Task {
    /// The task's id.
    #[getter]
    fn id(&self) -> String {
        self.inner.id.to_string()
    }

    /// Its tenant.
    #[getter]
    fn tenant(&self) -> &str {
        self.inner.owner.tenant.as_str()
    }

    /// The principal that submitted it.
    #[getter]
    fn owner(&self) -> &str {
        self.inner.owner.principal.as_str()
    }

    /// The agent that runs it.
    #[getter]
    fn agent(&self) -> &str {
        self.inner.spec.agent.as_str()
    }

    /// Its input.
    #[getter]
    fn input(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        value(py, &self.inner.spec.input)
    }

    /// The node labels it requires.
    #[getter]
    fn labels(&self) -> BTreeMap<String, String> {
        self.inner.spec.labels.clone()
    }

    /// Its priority.
    #[getter]
    fn priority(&self) -> i32 {
        self.inner.spec.priority
    }

    /// Its idempotency key, if it has one.
    #[getter]
    fn idempotency_key(&self) -> Option<&str> {
        self.inner.spec.idempotency_key.as_deref()
    }

    /// The whole spec, as submitted (JSON form).
    #[getter]
    fn spec(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json(py, &*self.inner.spec)
    }

    /// `pending`, `scheduled`, `running`, `succeeded`, `failed`, `cancelled`
    /// or `timed_out`.
    #[getter]
    fn state(&self) -> &'static str {
        self.inner.state.as_str()
    }

    /// Whether the task has ended.
    #[getter]
    fn is_terminal(&self) -> bool {
        self.inner.state.is_terminal()
    }

    /// Attempts scheduled so far.
    #[getter]
    fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The node of the current (or last) placement.
    #[getter]
    fn node_id(&self) -> Option<String> {
        self.inner.node.map(|n| n.to_string())
    }

    /// The seq of its last event.
    #[getter]
    fn last_seq(&self) -> u64 {
        self.inner.last_seq
    }

    /// When it was submitted.
    #[getter]
    fn created_at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.inner.created_at)
    }

    /// When it last changed.
    #[getter]
    fn updated_at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.inner.updated_at)
    }

    /// When a pending task may next be claimed (the stored backoff).
    #[getter]
    fn available_at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.inner.available_at)
    }

    /// The output, once succeeded.
    #[getter]
    fn output(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        opt_value(py, self.inner.output.as_ref())
    }

    /// The last error (of the failed task, or of its last failed attempt).
    #[getter]
    fn error(&self, py: Python<'_>) -> PyResult<Option<Py<PyTaskError>>> {
        self.inner
            .error
            .as_ref()
            .map(|e| PyTaskError::new_py(py, e))
            .transpose()
    }

    /// The JSON form.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "<hive.Task {} agent={} state={} attempt={}>",
            self.inner.id, self.inner.spec.agent, self.inner.state, self.inner.attempt
        )
    }
}

/// A page of tasks; iterate it, and pass `next` as `after` for the next page.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct TaskPage {
    items: Py<PyList>,
    next: Option<String>,
}

impl TaskPage {
    pub(crate) fn new(py: Python<'_>, page: hive::task::Page<hive::Task>) -> PyResult<Self> {
        Ok(TaskPage {
            items: list(py, page.items.into_iter().map(Task::from))?,
            next: page.next.map(|n| n.to_string()),
        })
    }
}

#[pymethods]
impl TaskPage {
    /// The tasks.
    #[getter]
    fn items(&self, py: Python<'_>) -> Py<PyList> {
        self.items.clone_ref(py)
    }

    /// The cursor of the next page, if there may be more.
    #[getter]
    fn next(&self) -> Option<&str> {
        self.next.as_deref()
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.items.bind(py).len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.items.bind(py).try_iter()?.into_any())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<hive.TaskPage items={} next={}>",
            self.items.bind(py).len(),
            py_opt(&self.next)
        )
    }
}

/// One event of a task. `type` is one of `queued`, `scheduled`, `started`,
/// `heartbeat`, `log`, `attempt_failed` and the terminal `succeeded`,
/// `failed`, `cancelled`, `timed_out`; `data` holds the kind's fields.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct TaskEvent {
    pub(crate) inner: hive::TaskEvent,
}

#[pymethods]
impl TaskEvent {
    /// The task.
    #[getter]
    fn task_id(&self) -> String {
        self.inner.task.to_string()
    }

    /// The task's tenant.
    #[getter]
    fn tenant(&self) -> &str {
        self.inner.tenant.as_str()
    }

    /// Position in the task's stream: 1, 2, 3… without gaps.
    #[getter]
    fn seq(&self) -> u64 {
        self.inner.seq
    }

    /// When it was stored.
    #[getter]
    fn at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.inner.at)
    }

    /// The kind's wire name.
    #[getter]
    fn r#type(&self) -> &'static str {
        self.inner.kind.name()
    }

    /// Whether this is the task's terminal event (the last one).
    #[getter]
    fn is_terminal(&self) -> bool {
        self.inner.kind.is_terminal()
    }

    /// The kind's fields (JSON form), e.g. `{"node": …, "attempt": 1}`.
    #[getter]
    fn data(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut v = serde_json::to_value(&self.inner.kind).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.shift_remove("type");
        }
        value(py, &v)
    }

    /// The output of a `succeeded` event.
    #[getter]
    fn output(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.inner.kind {
            hive::EventKind::Succeeded { output } => opt_value(py, Some(output)),
            _ => Ok(None),
        }
    }

    /// The error of a `failed` or `attempt_failed` event.
    #[getter]
    fn error(&self, py: Python<'_>) -> PyResult<Option<Py<PyTaskError>>> {
        match &self.inner.kind {
            hive::EventKind::Failed { error } | hive::EventKind::AttemptFailed { error, .. } => {
                PyTaskError::new_py(py, error).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The attempt of a `started`, `heartbeat` or `attempt_failed` event.
    #[getter]
    fn attempt(&self) -> Option<u32> {
        match &self.inner.kind {
            hive::EventKind::Started { attempt, .. }
            | hive::EventKind::Heartbeat { attempt, .. }
            | hive::EventKind::AttemptFailed { attempt, .. } => Some(*attempt),
            _ => None,
        }
    }

    /// The JSON form.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "<hive.TaskEvent task={} seq={} type={}>",
            self.inner.task,
            self.inner.seq,
            self.inner.kind.name()
        )
    }
}

/// An event in a tenant's feed: the task event and its cursor in the feed.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct FeedEvent {
    cursor: u64,
    event: Py<TaskEvent>,
}

impl FeedEvent {
    pub(crate) fn new(py: Python<'_>, e: hive::FeedEvent) -> PyResult<Self> {
        Ok(FeedEvent {
            cursor: e.cursor,
            event: Py::new(py, TaskEvent { inner: e.event })?,
        })
    }
}

#[pymethods]
impl FeedEvent {
    /// Position in the tenant's feed (1, 2, 3…): resume after it.
    #[getter]
    fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The task event.
    #[getter]
    fn event(&self, py: Python<'_>) -> Py<TaskEvent> {
        self.event.clone_ref(py)
    }

    /// The JSON form.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let ev = self.event.get();
        json(
            py,
            &hive::FeedEvent {
                cursor: self.cursor,
                event: ev.inner.clone(),
            },
        )
    }

    fn __repr__(&self) -> String {
        let ev = &self.event.get().inner;
        format!(
            "<hive.FeedEvent cursor={} task={} seq={} type={}>",
            self.cursor,
            ev.task,
            ev.seq,
            ev.kind.name()
        )
    }
}

// ----- workflows ----------------------------------------------------------------

/// The answer to a workflow submission.
#[pyclass(module = "hive._hive", frozen, get_all)]
pub(crate) struct WorkflowSubmitted {
    /// The workflow's id (the existing one's, for a reused idempotency key).
    id: String,
    /// `False` when an existing workflow was returned for the key.
    created: bool,
}

impl From<hive::workflow::WorkflowSubmitted> for WorkflowSubmitted {
    fn from(s: hive::workflow::WorkflowSubmitted) -> Self {
        WorkflowSubmitted {
            id: s.id.to_string(),
            created: s.created,
        }
    }
}

#[pymethods]
impl WorkflowSubmitted {
    fn __repr__(&self) -> String {
        format!(
            "WorkflowSubmitted(id={}, created={})",
            py_str(&self.id),
            if self.created { "True" } else { "False" }
        )
    }
}

/// One step of a workflow, as `get_workflow` shows it.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct StepView {
    inner: hive::workflow::StepView,
}

#[pymethods]
impl StepView {
    /// The step's id.
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }

    /// `waiting`, `running`, `succeeded`, `failed`, `cancelled`, `timed_out`
    /// or `skipped`.
    #[getter]
    fn state(&self) -> &'static str {
        self.inner.state.as_str()
    }

    /// Its task ids (one, or one per element of a map step).
    #[getter]
    fn task_ids(&self) -> Vec<String> {
        self.inner.tasks.iter().map(|t| t.to_string()).collect()
    }

    /// Attempts started across its tasks.
    #[getter]
    fn attempts(&self) -> u32 {
        self.inner.attempts
    }

    /// When its task(s) were submitted.
    #[getter]
    fn started_at(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        opt_datetime(py, self.inner.started_at)
    }

    /// When it ended.
    #[getter]
    fn ended_at(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        opt_datetime(py, self.inner.ended_at)
    }

    /// The output, once succeeded.
    #[getter]
    fn output(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        opt_value(py, self.inner.output.as_ref())
    }

    /// The error, once failed, cancelled or timed out.
    #[getter]
    fn error(&self, py: Python<'_>) -> PyResult<Option<Py<PyTaskError>>> {
        self.inner
            .error
            .as_ref()
            .map(|e| PyTaskError::new_py(py, e))
            .transpose()
    }

    /// Why it was skipped: `upstream_failed` or `not_needed`.
    #[getter]
    fn skip_reason(&self) -> Option<String> {
        self.inner
            .skip_reason
            .map(|r| match serde_json::to_value(r) {
                Ok(Value::String(s)) => s,
                _ => format!("{r:?}"),
            })
    }

    /// The JSON form.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "<hive.StepView {} state={}>",
            self.inner.id, self.inner.state
        )
    }
}

/// A workflow with every step.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct WorkflowView {
    inner: hive::WorkflowView,
    steps: Py<PyList>,
}

impl WorkflowView {
    pub(crate) fn new(py: Python<'_>, inner: hive::WorkflowView) -> PyResult<Self> {
        let steps = list(
            py,
            inner.steps.iter().cloned().map(|inner| StepView { inner }),
        )?;
        Ok(WorkflowView { inner, steps })
    }
}

#[pymethods]
impl WorkflowView {
    /// The workflow's id.
    #[getter]
    fn id(&self) -> String {
        self.inner.id.to_string()
    }

    /// Its name.
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its tenant.
    #[getter]
    fn tenant(&self) -> &str {
        self.inner.owner.tenant.as_str()
    }

    /// The principal that submitted it.
    #[getter]
    fn owner(&self) -> &str {
        self.inner.owner.principal.as_str()
    }

    /// `running`, `succeeded`, `failed` or `cancelled`.
    #[getter]
    fn state(&self) -> &'static str {
        self.inner.state.as_str()
    }

    /// Whether it has ended.
    #[getter]
    fn is_terminal(&self) -> bool {
        self.inner.state.is_terminal()
    }

    /// When it was submitted.
    #[getter]
    fn created_at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.inner.created_at)
    }

    /// When it ended.
    #[getter]
    fn ended_at(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        opt_datetime(py, self.inner.ended_at)
    }

    /// The seq of its last event: iterate `workflow_events(…, after=last_seq)`.
    #[getter]
    fn last_seq(&self) -> u64 {
        self.inner.last_seq
    }

    /// Every step, in spec order.
    #[getter]
    fn steps(&self, py: Python<'_>) -> Py<PyList> {
        self.steps.clone_ref(py)
    }

    /// The step with this id.
    fn step<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyAny>> {
        for s in self.steps.bind(py).iter() {
            if s.cast::<StepView>()?.get().inner.id == id {
                return Ok(s);
            }
        }
        Err(pyo3::exceptions::PyKeyError::new_err(id.to_owned()))
    }

    /// The JSON form.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "<hive.WorkflowView {} name={} state={} steps={}>",
            self.inner.id,
            py_str(&self.inner.name),
            self.inner.state,
            self.inner.steps.len()
        )
    }
}

/// A workflow in a listing.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct WorkflowSummary {
    inner: hive::workflow::WorkflowSummary,
}

#[pymethods]
impl WorkflowSummary {
    /// Its id.
    #[getter]
    fn id(&self) -> String {
        self.inner.id.to_string()
    }

    /// Its name.
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// The principal that submitted it.
    #[getter]
    fn owner(&self) -> &str {
        self.inner.owner.principal.as_str()
    }

    /// Its state.
    #[getter]
    fn state(&self) -> &'static str {
        self.inner.state.as_str()
    }

    /// When it was submitted.
    #[getter]
    fn created_at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.inner.created_at)
    }

    /// When it ended.
    #[getter]
    fn ended_at(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        opt_datetime(py, self.inner.ended_at)
    }

    /// The JSON form.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "<hive.WorkflowSummary {} name={} state={}>",
            self.inner.id,
            py_str(&self.inner.name),
            self.inner.state
        )
    }
}

/// A page of workflows; pass `next` as `after` for the next page.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct WorkflowPage {
    items: Py<PyList>,
    next: Option<String>,
}

impl WorkflowPage {
    pub(crate) fn new(py: Python<'_>, page: hive::workflow::WorkflowPage) -> PyResult<Self> {
        Ok(WorkflowPage {
            items: list(
                py,
                page.items
                    .into_iter()
                    .map(|inner| WorkflowSummary { inner }),
            )?,
            next: page.next.map(|n| n.to_string()),
        })
    }
}

#[pymethods]
impl WorkflowPage {
    /// The workflows.
    #[getter]
    fn items(&self, py: Python<'_>) -> Py<PyList> {
        self.items.clone_ref(py)
    }

    /// The cursor of the next page, if there may be more.
    #[getter]
    fn next(&self) -> Option<&str> {
        self.next.as_deref()
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.items.bind(py).len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.items.bind(py).try_iter()?.into_any())
    }
}

/// One event of a workflow: `started`, `step` (a step changed state) or the
/// terminal `finished`.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct WorkflowEvent {
    pub(crate) inner: hive::workflow::WorkflowEvent,
}

#[pymethods]
impl WorkflowEvent {
    /// The workflow.
    #[getter]
    fn workflow_id(&self) -> String {
        self.inner.workflow.to_string()
    }

    /// Position in its stream: 1, 2, 3…; 1 is `started`.
    #[getter]
    fn seq(&self) -> u64 {
        self.inner.seq
    }

    /// When it was stored.
    #[getter]
    fn at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.inner.at)
    }

    /// `started`, `step` or `finished`.
    #[getter]
    fn r#type(&self) -> &'static str {
        use hive::workflow::WorkflowEventKind as K;
        match self.inner.kind {
            K::Started => "started",
            K::Step { .. } => "step",
            K::Finished { .. } => "finished",
        }
    }

    /// The step of a `step` event.
    #[getter]
    fn step(&self) -> Option<&str> {
        match &self.inner.kind {
            hive::workflow::WorkflowEventKind::Step { step, .. } => Some(step),
            _ => None,
        }
    }

    /// The step's new state (`step`) or the workflow's final state (`finished`).
    #[getter]
    fn state(&self) -> Option<&'static str> {
        use hive::workflow::WorkflowEventKind as K;
        match &self.inner.kind {
            K::Step { state, .. } => Some(state.as_str()),
            K::Finished { state } => Some(state.as_str()),
            K::Started => None,
        }
    }

    /// The step's tasks, when it started running.
    #[getter]
    fn task_ids(&self) -> Vec<String> {
        match &self.inner.kind {
            hive::workflow::WorkflowEventKind::Step { tasks, .. } => {
                tasks.iter().map(|t| t.to_string()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Whether this is the terminal (`finished`) event.
    #[getter]
    fn is_terminal(&self) -> bool {
        self.inner.kind.is_terminal()
    }

    /// The JSON form.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "<hive.WorkflowEvent workflow={} seq={} type={}>",
            self.inner.workflow,
            self.inner.seq,
            self.r#type()
        )
    }
}

// ----- nodes --------------------------------------------------------------------

/// A worker node.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct Node {
    inner: hive::Node,
}

impl From<hive::Node> for Node {
    fn from(inner: hive::Node) -> Self {
        Node { inner }
    }
}

#[pymethods]
impl Node {
    /// Its id.
    #[getter]
    fn id(&self) -> String {
        self.inner.id.to_string()
    }

    /// Its name.
    #[getter]
    fn name(&self) -> &str {
        &self.inner.spec.name
    }

    /// `ready`, `draining` or `lost`.
    #[getter]
    fn status(&self) -> String {
        match serde_json::to_value(self.inner.status) {
            Ok(Value::String(s)) => s,
            _ => format!("{:?}", self.inner.status).to_lowercase(),
        }
    }

    /// Whether Hive owns it (a system node runs any tenant's tasks).
    #[getter]
    fn system(&self) -> bool {
        matches!(self.inner.spec.owner, hive::NodeOwner::System)
    }

    /// The tenant it acts in.
    #[getter]
    fn tenant(&self) -> String {
        self.inner.tenant().to_string()
    }

    /// Tasks it runs at once.
    #[getter]
    fn capacity(&self) -> u32 {
        self.inner.spec.capacity
    }

    /// Leases it holds now.
    #[getter]
    fn in_flight(&self) -> u32 {
        self.inner.in_flight
    }

    /// Its labels.
    #[getter]
    fn labels(&self) -> BTreeMap<String, String> {
        self.inner.spec.labels.clone()
    }

    /// Who else may run work on it: `tenant:NAME` (every principal of a
    /// tenant) or `user:TENANT/PRINCIPAL`.
    #[getter]
    fn shared_with(&self) -> Vec<String> {
        self.inner
            .spec
            .shared_with
            .iter()
            .map(|t| match t {
                hive::node::ShareTarget::Tenant { tenant } => format!("tenant:{tenant}"),
                hive::node::ShareTarget::User { tenant, principal } => {
                    format!("user:{tenant}/{principal}")
                }
            })
            .collect()
    }

    /// When it registered.
    #[getter]
    fn registered_at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.inner.registered_at)
    }

    /// Its last sign of life.
    #[getter]
    fn last_seen(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.inner.last_seen)
    }

    /// The JSON form.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "<hive.Node {} name={} status={}>",
            self.inner.id,
            py_str(&self.inner.spec.name),
            self.status()
        )
    }
}

/// Converters used by the engine's calls.
pub(crate) fn task_py(py: Python<'_>, t: hive::Task) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, Task::from(t))?.into_any())
}

/// A list of nodes.
pub(crate) fn nodes_py(py: Python<'_>, nodes: Vec<hive::Node>) -> PyResult<Py<PyAny>> {
    Ok(list(py, nodes.into_iter().map(Node::from))?.into_any())
}

/// A list of feed events.
pub(crate) fn feed_py(py: Python<'_>, events: Vec<hive::FeedEvent>) -> PyResult<Py<PyAny>> {
    let list = PyList::empty(py);
    for e in events {
        list.append(Py::new(py, FeedEvent::new(py, e)?)?)?;
    }
    Ok(list.into_any().unbind())
}
