//! `hive.Hive`: the engine, every I/O method an awaitable.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::bridge;
use crate::spec::{self, TaskKw};
use crate::streams::{self, FeedSource, Stream, TaskEventsSource, WorkflowEventsSource};
use crate::types::{self, Principal};
use crate::worker::{self, WorkerShared, WorkerSpec};

/// Every engine opened in this process, for the exit hook.
static ENGINES: Mutex<Vec<Weak<Engine>>> = Mutex::new(Vec::new());

/// One opened engine, shared by its Python object and its workers.
pub(crate) struct Engine {
    hive: Mutex<Option<hive::Hive>>,
    url: String,
    workers: Mutex<Vec<Weak<WorkerShared>>>,
}

impl Engine {
    /// The engine, unless it was closed.
    pub(crate) fn hive(&self, py: Python<'_>) -> PyResult<hive::Hive> {
        self.hive
            .lock()
            .clone()
            .ok_or_else(|| crate::errors::shutdown(py, "this Hive was closed"))
    }

    /// Remembers a worker started on this engine (stopped by `close`).
    pub(crate) fn add_worker(&self, w: &Arc<WorkerShared>) {
        let mut workers = self.workers.lock();
        workers.retain(|w| w.strong_count() > 0);
        workers.push(Arc::downgrade(w));
    }

    /// Stops the workers — gracefully (in-flight handlers finish, up to each
    /// worker's grace period) or at once (handlers cancelled now, their tasks
    /// back in the queue) — then the engine (supervisor, workflow driver).
    async fn close(hive: hive::Hive, workers: Vec<Arc<WorkerShared>>, graceful: bool) {
        if graceful {
            futures::future::join_all(workers.iter().map(|w| w.shutdown())).await;
        } else {
            futures::future::join_all(workers.iter().map(|w| w.shutdown_now())).await;
        }
        hive.shutdown();
    }

    fn take(&self) -> Option<(hive::Hive, Vec<Arc<WorkerShared>>)> {
        let hive = self.hive.lock().take()?;
        let workers = self
            .workers
            .lock()
            .drain(..)
            .filter_map(|w| w.upgrade())
            .collect();
        Some((hive, workers))
    }
}

/// Closes every engine of the process (the exit hook), waiting up to `timeout`.
pub(crate) fn close_all(py: Python<'_>, timeout: Duration) {
    let all: Vec<_> = ENGINES
        .lock()
        .drain(..)
        .filter_map(|e| e.upgrade())
        .filter_map(|e| e.take())
        .collect();
    if all.is_empty() {
        return;
    }
    crate::runtime::block_on(py, async move {
        let closes = all.into_iter().map(|(h, w)| Engine::close(h, w, true));
        let _ = tokio::time::timeout(timeout, futures::future::join_all(closes)).await;
    });
}

fn task_id(py: Python<'_>, id: &str) -> PyResult<hive::TaskId> {
    id.parse()
        .map_err(|e: hive::Error| crate::errors::to_py_err(py, &e))
}

fn workflow_id(py: Python<'_>, id: &str) -> PyResult<hive::WorkflowId> {
    id.parse()
        .map_err(|e: hive::Error| crate::errors::to_py_err(py, &e))
}

fn node_id(py: Python<'_>, id: &str) -> PyResult<hive::NodeId> {
    id.parse()
        .map_err(|e: hive::Error| crate::errors::to_py_err(py, &e))
}

/// A serializable answer as its JSON form (a dict, a list).
fn json_of<T: serde::Serialize>(py: Python<'_>, v: T) -> PyResult<Py<PyAny>> {
    types::json(py, &v)
}

fn who(p: &Bound<'_, Principal>) -> hive::Principal {
    p.get().inner.clone()
}

/// An embedded Hive engine on the backend a URL names. Open it with
/// `await Hive.open(url)` (or `async with await Hive.open(url) as h`), and
/// close it with `await h.close()`.
///
/// Every call takes the calling `Principal` as its first argument; every call
/// that does I/O returns an awaitable.
#[pyclass(module = "hive._hive", name = "Hive", frozen)]
pub(crate) struct PyHive {
    engine: Arc<Engine>,
}

#[pymethods]
impl PyHive {
    /// Opens the backend `url` names (`memory://`, `sqlite:///path/to/file`,
    /// `postgres://user@host:port/db`, `redis://host:port/`) and starts an
    /// engine on it with the scope policy and the audit trail. `config` sets
    /// engine settings (the JSON of Rust's `HiveConfig`: `sweep_interval`,
    /// `node_heartbeat_interval`, …; durations as strings or seconds).
    /// Awaitable.
    #[classmethod]
    #[pyo3(signature = (url, *, config = None))]
    fn open<'py>(
        _cls: &Bound<'py, PyType>,
        py: Python<'py>,
        url: String,
        config: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let config = match config {
            Some(c) if !c.is_none() => spec::hive_config(py, c)?,
            _ => hive::HiveConfig::default(),
        };
        let u = url.clone();
        bridge::call(
            py,
            async move { hive::open_with(&u, config).await },
            move |py, h| {
                let engine = Arc::new(Engine {
                    hive: Mutex::new(Some(h)),
                    url,
                    workers: Mutex::new(Vec::new()),
                });
                {
                    let mut all = ENGINES.lock();
                    all.retain(|e| e.strong_count() > 0);
                    all.push(Arc::downgrade(&engine));
                }
                Ok(Py::new(py, PyHive { engine })?.into_any())
            },
        )
    }

    /// The URL it was opened with.
    #[getter]
    fn url(&self) -> &str {
        &self.engine.url
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.engine.hive.lock().is_none()
    }

    /// Stops the workers started on this engine, then the engine. With
    /// `graceful=True` (the default) each worker finishes its in-flight
    /// handlers (up to its `shutdown_grace`), reports them and removes its
    /// node; with `graceful=False` the handlers are cancelled at once and
    /// their tasks go back to the queue. Later calls raise `hive.Shutdown`.
    /// Awaitable; closing twice is harmless.
    #[pyo3(signature = (*, graceful = true))]
    fn close<'py>(&self, py: Python<'py>, graceful: bool) -> PyResult<Bound<'py, PyAny>> {
        let taken = self.engine.take();
        bridge::call(
            py,
            async move {
                if let Some((h, w)) = taken {
                    Engine::close(h, w, graceful).await;
                }
                Ok(())
            },
            |py, ()| bridge::none(py),
        )
    }

    fn __aenter__<'py>(slf: &Bound<'py, Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        bridge::Call::ready(py, Ok(slf.clone().into_any().unbind()))
    }

    /// Closes the engine: gracefully on a normal exit; at once when the
    /// block is left by an exception (Ctrl-C's `KeyboardInterrupt`, a
    /// cancellation, an error), since the handlers would be cancelled anyway.
    #[pyo3(signature = (exc_type = None, _exc = None, _tb = None))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        exc_type: Option<&Bound<'py, PyAny>>,
        _exc: Option<&Bound<'py, PyAny>>,
        _tb: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let graceful = exc_type.is_none_or(|t| t.is_none());
        self.close(py, graceful)
    }

    fn __repr__(&self) -> String {
        format!(
            "<hive.Hive url={}{}>",
            types::py_str(&self.engine.url),
            if self.closed() { " closed" } else { "" }
        )
    }

    // ----- tasks -------------------------------------------------------------

    /// Submits one task, from a spec dict and/or keyword arguments (keywords
    /// win). Returns `Submitted`. Awaitable.
    #[pyo3(signature = (principal, spec = None, /, *, agent = None, input = None, labels = None,
                        priority = None, timeouts = None, retry = None, idempotency_key = None,
                        delay = None, not_before = None, concurrency = None,
                        rate_limit = None))]
    #[allow(clippy::too_many_arguments)]
    fn submit<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        spec: Option<&Bound<'py, PyAny>>,
        agent: Option<String>,
        input: Option<&Bound<'py, PyAny>>,
        labels: Option<&Bound<'py, PyAny>>,
        priority: Option<i32>,
        timeouts: Option<&Bound<'py, PyAny>>,
        retry: Option<&Bound<'py, PyAny>>,
        idempotency_key: Option<String>,
        delay: Option<&Bound<'py, PyAny>>,
        not_before: Option<&Bound<'py, PyAny>>,
        concurrency: Option<&Bound<'py, PyAny>>,
        rate_limit: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let spec = spec::task_spec(
            py,
            spec,
            TaskKw {
                agent,
                input,
                labels,
                priority,
                timeouts,
                retry,
                idempotency_key,
                delay,
                not_before,
                concurrency,
                rate_limit,
            },
            "",
        )?;
        let p = who(principal);
        bridge::call(py, async move { hive.submit(&p, spec).await }, |py, s| {
            Ok(Py::new(py, types::Submitted::from(s))?.into_any())
        })
    }

    /// Submits many tasks at once: all are validated first, and one invalid
    /// spec refuses the whole batch. Returns a list of `Submitted`, in order.
    /// Awaitable.
    fn submit_batch<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        specs: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let mut out = Vec::with_capacity(specs.len().unwrap_or(0));
        for (i, item) in specs.try_iter()?.enumerate() {
            let item = item?;
            out.push(spec::task_spec(
                py,
                Some(&item),
                TaskKw::none(),
                &format!("[{i}]"),
            )?);
        }
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.submit_batch(&p, out).await },
            |py, all: Vec<hive::store::Submitted>| {
                let list = pyo3::types::PyList::empty(py);
                for s in all {
                    list.append(Py::new(py, types::Submitted::from(s))?)?;
                }
                Ok(list.into_any().unbind())
            },
        )
    }

    /// One task (another tenant's is `NotFound`). Awaitable.
    fn get_task<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        task_id: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let id = self::task_id(py, task_id)?;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.get_task(&p, id).await },
            types::task_py,
        )
    }

    /// A page of the caller's tenant's tasks, oldest first. Awaitable.
    #[pyo3(signature = (principal, *, states = None, agent = None, owner = None, labels = None,
                        after = None, limit = None))]
    #[allow(clippy::too_many_arguments)]
    fn list_tasks<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        states: Option<Vec<String>>,
        agent: Option<String>,
        owner: Option<String>,
        labels: Option<std::collections::BTreeMap<String, String>>,
        after: Option<String>,
        limit: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let mut query = hive::task::TaskQuery::default();
        for s in states.unwrap_or_default() {
            query.states.push(
                s.parse()
                    .map_err(|e: hive::Error| crate::errors::to_py_err(py, &e))?,
            );
        }
        query.agent = agent.map(hive::AgentRef::new);
        query.owner = owner.map(hive::PrincipalId::from);
        query.labels = labels.unwrap_or_default();
        query.after = after.map(|a| task_id(py, &a)).transpose()?;
        query.limit = limit;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.list_tasks(&p, &query).await },
            |py, page| Ok(Py::new(py, types::TaskPage::new(py, page)?)?.into_any()),
        )
    }

    /// Cancels a task that has not ended; returns the `Ack` of its
    /// `cancelled` event. An ended task raises `AlreadyTerminal`. Awaitable.
    #[pyo3(signature = (principal, task_id, reason = ""))]
    fn cancel<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        task_id: &str,
        reason: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let id = self::task_id(py, task_id)?;
        let p = who(principal);
        let reason = reason.to_owned();
        bridge::call(
            py,
            async move { hive.cancel(&p, id, reason).await },
            |py, ack| Ok(Py::new(py, types::Ack::from(ack))?.into_any()),
        )
    }

    /// Waits until the task has ended and returns it (raises `hive.Timeout`
    /// after `timeout` seconds, if given). Awaitable.
    #[pyo3(signature = (principal, task_id, timeout = None))]
    fn wait<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        task_id: &str,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let id = self::task_id(py, task_id)?;
        let p = who(principal);
        let limit = timeout
            .map(|s| {
                Duration::try_from_secs_f64(s).map_err(|_| {
                    crate::errors::invalid_argument(py, format!("timeout must be >= 0, got {s}"))
                })
            })
            .transpose()?;
        let wait = async move {
            let task = hive.get_task(&p, id).await?;
            if task.state.is_terminal() {
                return Ok(task);
            }
            let mut sub = hive.subscribe(&p, id, task.last_seq).await?;
            while let Some(ev) = sub.next().await {
                ev?;
            }
            hive.get_task(&p, id).await
        };
        bridge::call(
            py,
            async move {
                match limit {
                    Some(d) => tokio::time::timeout(d, wait)
                        .await
                        .unwrap_or(Err(hive::Error::Timeout(d))),
                    None => wait.await,
                }
            },
            types::task_py,
        )
    }

    /// The task's events after seq `after` (0: from the start), replayed and
    /// then live: `async for` ends right after the terminal event. Access is
    /// checked on the first iteration.
    #[pyo3(signature = (principal, task_id, after = 0))]
    fn events(
        &self,
        py: Python<'_>,
        principal: &Bound<'_, Principal>,
        task_id: &str,
        after: u64,
    ) -> PyResult<streams::TaskEvents> {
        let source = TaskEventsSource {
            hive: self.engine.hive(py)?,
            principal: who(principal),
            task: self::task_id(py, task_id)?,
            after,
            sub: None,
        };
        Ok(streams::TaskEvents {
            stream: Stream::new(source, after, 256),
        })
    }

    /// The caller's tenant's feed after `cursor`, replayed and then live; never
    /// ends by itself. With `terminal_only`, only terminal events are yielded
    /// (the cursor still moves past the others).
    #[pyo3(signature = (principal, cursor = 0, *, terminal_only = false))]
    fn feed(
        &self,
        py: Python<'_>,
        principal: &Bound<'_, Principal>,
        cursor: u64,
        terminal_only: bool,
    ) -> PyResult<streams::Feed> {
        let source = FeedSource {
            hive: self.engine.hive(py)?,
            principal: who(principal),
            cursor,
            terminal_only,
            sub: None,
        };
        Ok(streams::Feed {
            stream: Stream::new(source, cursor, 4096),
        })
    }

    /// One page of the tenant's feed after `cursor` (for pollers). Awaitable.
    #[pyo3(signature = (principal, cursor = 0, limit = 1000))]
    fn read_feed<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        cursor: u64,
        limit: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.read_feed(&p, cursor, limit).await },
            types::feed_py,
        )
    }

    /// Acknowledges, as named consumer `consumer`, the terminal events of
    /// these tasks. Awaitable.
    fn ack_terminal<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        consumer: String,
        task_ids: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let ids = task_ids
            .iter()
            .map(|t| task_id(py, t))
            .collect::<PyResult<Vec<_>>>()?;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.ack_terminal(&p, &consumer, &ids).await },
            |py, ()| bridge::none(py),
        )
    }

    /// Terminal events consumer `consumer` has not acknowledged yet, oldest
    /// first (at-least-once delivery for notifiers). Awaitable.
    #[pyo3(signature = (principal, consumer, limit = 100))]
    fn unacked_terminal<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        consumer: String,
        limit: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.unacked_terminal(&p, &consumer, limit).await },
            types::feed_py,
        )
    }

    // ----- workflows ---------------------------------------------------------

    /// Submits a workflow from a dict (the JSON of Rust's `WorkflowSpec`) or a
    /// `hive.Workflow`. Validated first: a bad spec raises `InvalidSpec` and
    /// nothing runs. Returns `WorkflowSubmitted`. Awaitable.
    fn submit_workflow<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        spec: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let spec = spec::workflow_spec(py, spec)?;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.submit_workflow(&p, spec).await },
            |py, s| Ok(Py::new(py, types::WorkflowSubmitted::from(s))?.into_any()),
        )
    }

    /// A workflow with every step. Awaitable.
    fn get_workflow<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        workflow_id: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let id = self::workflow_id(py, workflow_id)?;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.get_workflow(&p, id).await },
            |py, v| Ok(Py::new(py, types::WorkflowView::new(py, v)?)?.into_any()),
        )
    }

    /// A page of the caller's tenant's workflows, oldest first. Awaitable.
    #[pyo3(signature = (principal, *, states = None, after = None, limit = None))]
    fn list_workflows<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        states: Option<Vec<String>>,
        after: Option<String>,
        limit: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let mut query = hive::workflow::WorkflowQuery::default();
        for s in states.unwrap_or_default() {
            let state: hive::WorkflowState = serde_json::from_value(serde_json::Value::String(
                s.clone(),
            ))
            .map_err(|_| {
                crate::errors::invalid_argument(
                    py,
                    format!(
                        "unknown workflow state {s:?}; expected running, succeeded, failed or cancelled"
                    ),
                )
            })?;
            query.states.push(state);
        }
        query.after = after.map(|a| workflow_id(py, &a)).transpose()?;
        query.limit = limit;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.list_workflows(&p, &query).await },
            |py, page| Ok(Py::new(py, types::WorkflowPage::new(py, page)?)?.into_any()),
        )
    }

    /// Cancels a running workflow (its waiting steps and running tasks too).
    /// An ended workflow raises `Conflict`. Awaitable.
    #[pyo3(signature = (principal, workflow_id, reason = ""))]
    fn cancel_workflow<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        workflow_id: &str,
        reason: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let id = self::workflow_id(py, workflow_id)?;
        let p = who(principal);
        let reason = reason.to_owned();
        bridge::call(
            py,
            async move { hive.cancel_workflow(&p, id, reason).await },
            |py, ()| bridge::none(py),
        )
    }

    /// The workflow's events after seq `after`, replayed and then live: `async
    /// for` ends right after the `finished` event.
    #[pyo3(signature = (principal, workflow_id, after = 0))]
    fn workflow_events(
        &self,
        py: Python<'_>,
        principal: &Bound<'_, Principal>,
        workflow_id: &str,
        after: u64,
    ) -> PyResult<streams::WorkflowEvents> {
        let source = WorkflowEventsSource {
            hive: self.engine.hive(py)?,
            principal: who(principal),
            workflow: self::workflow_id(py, workflow_id)?,
            after,
            sub: None,
        };
        Ok(streams::WorkflowEvents {
            stream: Stream::new(source, after, 256),
        })
    }

    // ----- nodes and workers -------------------------------------------------

    /// Registers a node for `worker` and starts running its handlers on the
    /// current event loop. Returns a `WorkerHandle`. Awaitable.
    fn start_worker<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        worker: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let spec = WorkerSpec::read(worker)?;
        worker::start(py, &self.engine, who(principal), spec)
    }

    /// The nodes visible to the caller. Awaitable.
    fn list_nodes<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.list_nodes(&p).await },
            types::nodes_py,
        )
    }

    /// One node. Awaitable.
    fn get_node<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        node_id: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let id = self::node_id(py, node_id)?;
        let p = who(principal);
        bridge::call(py, async move { hive.get_node(&p, id).await }, |py, n| {
            Ok(Py::new(py, types::Node::from(n))?.into_any())
        })
    }

    /// Drains a node: it keeps its leases but claims nothing new. Awaitable.
    fn drain_node<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        node_id: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let id = self::node_id(py, node_id)?;
        let p = who(principal);
        bridge::call(py, async move { hive.drain_node(&p, id).await }, |py, n| {
            Ok(Py::new(py, types::Node::from(n))?.into_any())
        })
    }

    // ----- tokens -----------------------------------------------------------

    /// Issues an API token for `principal_id` (`kind`: `user`, `operator` or
    /// `admin`) in the caller's tenant (another `tenant` needs
    /// `system:admin`). `scopes` defaults to the kind's preset; `ttl` in
    /// seconds (never expires when `None`). The caller needs `tenant:admin`.
    /// Returns `(token, info)`: hand `token` to its holder, it cannot be shown
    /// again. Awaitable.
    #[pyo3(signature = (principal, principal_id, kind = "user", *, tenant = None, scopes = None,
                        ttl = None, description = ""))]
    #[allow(clippy::too_many_arguments)]
    fn issue_token<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        principal_id: &str,
        kind: &str,
        tenant: Option<&str>,
        scopes: Option<Vec<String>>,
        ttl: Option<f64>,
        description: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let kind: hive::iam::TokenKind =
            serde_json::from_value(serde_json::Value::String(kind.to_owned())).map_err(|_| {
                crate::errors::invalid_argument(
                    py,
                    format!("unknown token kind {kind:?}; expected user, operator or admin"),
                )
            })?;
        let mut request = hive::iam::TokenRequest::new(principal_id, kind).description(description);
        if let Some(t) = tenant {
            request = request.tenant(t);
        }
        if let Some(scopes) = scopes {
            request = request.scopes(types::parse_scopes(py, &scopes)?);
        }
        if let Some(s) = ttl {
            let d = Duration::try_from_secs_f64(s).map_err(|_| {
                crate::errors::invalid_argument(py, format!("ttl must be > 0 seconds, got {s}"))
            })?;
            request = request.ttl(d);
        }
        let p = who(principal);
        bridge::call(
            py,
            async move {
                hive::iam::TokenService::for_hive(&hive)
                    .issue(&hive, &p, request)
                    .await
            },
            |py, issued: hive::iam::IssuedToken| {
                let info = Py::new(py, types::TokenInfo::from(issued.info))?;
                Ok((issued.token, info).into_pyobject(py)?.into_any().unbind())
            },
        )
    }

    /// The principal a token stands for. Every refusal (malformed, unknown,
    /// expired, revoked) is the same `hive.Forbidden`. Awaitable.
    fn resolve_token<'py>(&self, py: Python<'py>, token: String) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        bridge::call(
            py,
            async move {
                hive::iam::TokenService::for_hive(&hive)
                    .resolve(&token)
                    .await
            },
            |py, inner| Ok(Py::new(py, Principal { inner })?.into_any()),
        )
    }

    /// Revokes a token of the caller's tenant (needs `tenant:admin`); returns
    /// its info. Awaitable.
    fn revoke_token<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        token_id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let p = who(principal);
        bridge::call(
            py,
            async move {
                hive::iam::TokenService::for_hive(&hive)
                    .revoke(&hive, &p, &token_id)
                    .await
            },
            |py, info| Ok(Py::new(py, types::TokenInfo::from(info))?.into_any()),
        )
    }

    /// The caller's tenant's tokens, without secrets (needs `tenant:admin`).
    /// Awaitable.
    fn list_tokens<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let p = who(principal);
        bridge::call(
            py,
            async move {
                hive::iam::TokenService::for_hive(&hive)
                    .list(&hive, &p)
                    .await
            },
            |py, all: Vec<hive::iam::TokenInfo>| {
                let list = pyo3::types::PyList::empty(py);
                for info in all {
                    list.append(Py::new(py, types::TokenInfo::from(info))?)?;
                }
                Ok(list.into_any().unbind())
            },
        )
    }

    // ----- audit ------------------------------------------------------------

    /// A page of the tenant's audit trail, oldest first, as a dict
    /// (`events`, `next_after_seq`). Needs `audit:read`; another `tenant`
    /// needs `system:admin` (otherwise `hive.NotFound`). `outcome` is
    /// `allowed`, `denied` or `refused`; `limit` is clamped to 1..=1000. Awaitable.
    #[pyo3(signature = (principal, *, tenant = None, action = None, actor = None, outcome = None,
                        after = 0, limit = 100))]
    #[allow(clippy::too_many_arguments)]
    fn list_audit<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        tenant: Option<String>,
        action: Option<String>,
        actor: Option<String>,
        outcome: Option<&str>,
        after: u64,
        limit: u32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let outcome = match outcome {
            None => None,
            Some("allowed") => Some(hive::audit::AuditOutcome::Allowed),
            Some("denied") => Some(hive::audit::AuditOutcome::Denied),
            Some("refused") => Some(hive::audit::AuditOutcome::Refused),
            Some(other) => {
                return Err(crate::errors::invalid_argument(
                    py,
                    format!("outcome must be 'allowed', 'denied' or 'refused', got {other:?}"),
                ));
            }
        };
        let query = hive::iam::AuditQuery {
            tenant: tenant.map(Into::into),
            action,
            actor: actor.map(Into::into),
            outcome,
            after_seq: after,
            limit: Some(limit),
        };
        let p = who(principal);
        bridge::call(
            py,
            async move {
                hive::iam::AuditTrail::new(hive.store().clone())
                    .list(&hive, &p, &query)
                    .await
            },
            |py, page: hive::iam::AuditPage| types::json(py, &page),
        )
    }

    /// Walks a tenant's whole audit chain (the caller's when `tenant` is
    /// `None`) and reports the first broken link, as a dict (`ok`, `checked`,
    /// `first_broken`, `broken`, `reason`, `head`). Needs `audit:read`.
    /// Awaitable.
    #[pyo3(signature = (principal, tenant = None))]
    fn verify_audit<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        tenant: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let p = who(principal);
        let tenant: hive::principal::TenantId = match tenant {
            Some(t) => t.into(),
            None => p.tenant.clone(),
        };
        bridge::call(
            py,
            async move {
                hive::iam::AuditTrail::new(hive.store().clone())
                    .verify(&hive, &p, &tenant)
                    .await
            },
            |py, report: hive::iam::VerifyReport| types::json(py, &report),
        )
    }

    // ----- schedules ---------------------------------------------------------

    /// Creates a schedule that submits `task` (a spec dict) or `workflow` (a
    /// dict or `hive.Workflow`) on a `cron` calendar (5 or 6 fields, read in
    /// `timezone`) or `every` a duration. Returns the schedule as a dict
    /// (times in milliseconds since the epoch). Awaitable.
    #[pyo3(signature = (principal, id, *, cron = None, timezone = None, every = None, anchor = None,
                        task = None, workflow = None, overlap = None, catch_up = None, jitter = None,
                        start_at = None, end_at = None, max_fires = None, paused = false, note = None))]
    #[allow(clippy::too_many_arguments)]
    fn create_schedule<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        id: String,
        cron: Option<String>,
        timezone: Option<String>,
        every: Option<&Bound<'py, PyAny>>,
        anchor: Option<&Bound<'py, PyAny>>,
        task: Option<&Bound<'py, PyAny>>,
        workflow: Option<&Bound<'py, PyAny>>,
        overlap: Option<String>,
        catch_up: Option<&Bound<'py, PyAny>>,
        jitter: Option<&Bound<'py, PyAny>>,
        start_at: Option<&Bound<'py, PyAny>>,
        end_at: Option<&Bound<'py, PyAny>>,
        max_fires: Option<u64>,
        paused: bool,
        note: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let spec = spec::schedule_spec(
            py,
            id,
            spec::ScheduleKw {
                cron,
                timezone,
                every,
                anchor,
                task,
                workflow,
                overlap,
                catch_up,
                jitter,
                start_at,
                end_at,
                max_fires,
                paused,
                note,
            },
        )?;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.create_schedule(&p, spec).await },
            json_of,
        )
    }

    /// Replaces a schedule's spec (same keywords as `create_schedule`);
    /// counters and last fires are kept. Awaitable.
    #[pyo3(signature = (principal, id, *, cron = None, timezone = None, every = None, anchor = None,
                        task = None, workflow = None, overlap = None, catch_up = None, jitter = None,
                        start_at = None, end_at = None, max_fires = None, paused = false, note = None))]
    #[allow(clippy::too_many_arguments)]
    fn update_schedule<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        id: String,
        cron: Option<String>,
        timezone: Option<String>,
        every: Option<&Bound<'py, PyAny>>,
        anchor: Option<&Bound<'py, PyAny>>,
        task: Option<&Bound<'py, PyAny>>,
        workflow: Option<&Bound<'py, PyAny>>,
        overlap: Option<String>,
        catch_up: Option<&Bound<'py, PyAny>>,
        jitter: Option<&Bound<'py, PyAny>>,
        start_at: Option<&Bound<'py, PyAny>>,
        end_at: Option<&Bound<'py, PyAny>>,
        max_fires: Option<u64>,
        paused: bool,
        note: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let spec = spec::schedule_spec(
            py,
            id,
            spec::ScheduleKw {
                cron,
                timezone,
                every,
                anchor,
                task,
                workflow,
                overlap,
                catch_up,
                jitter,
                start_at,
                end_at,
                max_fires,
                paused,
                note,
            },
        )?;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.update_schedule(&p, spec).await },
            json_of,
        )
    }

    /// One schedule, as a dict. Awaitable.
    fn get_schedule<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let p = who(principal);
        bridge::call(py, async move { hive.get_schedule(&p, &id).await }, json_of)
    }

    /// The tenant's schedules (not deleted ones unless asked), by id: a list
    /// of dicts. Awaitable.
    #[pyo3(signature = (principal, *, statuses = None, after = None, limit = None))]
    fn list_schedules<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        statuses: Option<Vec<String>>,
        after: Option<String>,
        limit: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let mut query = hive::ScheduleQuery {
            after,
            limit,
            ..Default::default()
        };
        for s in statuses.unwrap_or_default() {
            let status: hive::ScheduleStatus = s
                .parse()
                .map_err(|e: hive::Error| crate::errors::invalid_argument(py, e.to_string()))?;
            query.statuses.push(status);
        }
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.list_schedules(&p, &query).await },
            json_of,
        )
    }

    /// Pauses a schedule (`note` says why). Returns it. Awaitable.
    #[pyo3(signature = (principal, id, note = None))]
    fn pause_schedule<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        id: String,
        note: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.pause_schedule(&p, &id, note).await },
            json_of,
        )
    }

    /// Resumes a paused schedule from its first slot after now. Awaitable.
    fn resume_schedule<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.resume_schedule(&p, &id).await },
            json_of,
        )
    }

    /// Deletes a schedule (what it submitted is left alone). Awaitable.
    fn delete_schedule<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.delete_schedule(&p, &id).await },
            |py, ()| bridge::none(py),
        )
    }

    /// Fires a schedule now, outside its calendar. Returns the fire as a dict
    /// (`slot`, `target`: the task or workflow id, `manual`). Awaitable.
    fn trigger_schedule<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.trigger_schedule(&p, &id).await },
            json_of,
        )
    }

    /// The next `n` fire times of a schedule, as UTC datetimes. Awaitable.
    #[pyo3(signature = (principal, id, n = 10))]
    fn upcoming_fires<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
        id: String,
        n: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let p = who(principal);
        bridge::call(
            py,
            async move { hive.upcoming_fires(&p, &id, n).await },
            |py, times: Vec<hive::Timestamp>| {
                let list = pyo3::types::PyList::empty(py);
                for t in times {
                    list.append(types::datetime(py, t)?)?;
                }
                Ok(list.into_any().unbind())
            },
        )
    }

    /// Fires every due schedule slot now (the supervisor does this each
    /// `sweep_interval`); needs a system principal. Returns the report as a
    /// dict. Awaitable.
    fn run_schedules<'py>(
        &self,
        py: Python<'py>,
        principal: &Bound<'py, Principal>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let hive = self.engine.hive(py)?;
        let p = who(principal);
        bridge::call(py, async move { hive.run_schedules(&p).await }, json_of)
    }
}
