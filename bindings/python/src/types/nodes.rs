//! Nodes.

use super::*;

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
