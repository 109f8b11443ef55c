//! Tasks, their events and the feed.

use super::*;

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
    pub(super) fn new_py(py: Python<'_>, e: &hive::TaskError) -> PyResult<Py<PyTaskError>> {
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
