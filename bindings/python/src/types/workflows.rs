//! Workflows, their steps and events.

use super::*;

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
