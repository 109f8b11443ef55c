//! In-process workers with Python handlers.
//!
//! Each handler is a Rust [`hive::TaskHandler`] ([`PyHandler`]) that does not
//! touch Python: it queues the attempt as a [`Job`] on the bridge of the event
//! loop the worker was started on and awaits the answer. The loop starts the
//! handler coroutine (in the `contextvars` context captured at
//! `start_worker`) as an asyncio task; the coroutine's wrapper answers through
//! [`TaskContext`]. If the engine drops the attempt (lease lost: cancelled or
//! timed out), the Python task is cancelled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use serde_json::Value;

use crate::bridge::{self, Job, Shared, WorkerEntry};
use crate::convert::{self, Mode};

static NEXT_WORKER: AtomicU64 = AtomicU64::new(1);

/// Every worker started in this process, for the exit hook.
static WORKERS: Mutex<Vec<std::sync::Weak<WorkerShared>>> = Mutex::new(Vec::new());

fn stopped() -> hive::TaskError {
    hive::TaskError::new(
        "worker_stopped",
        "the asyncio event loop running the handler stopped before the attempt ended",
    )
}

struct PyHandler {
    shared: Arc<Shared>,
    worker: u64,
    handler: usize,
}

/// Cancels the job's Python task if the attempt is dropped before it answered.
struct CancelOnDrop<'a> {
    shared: &'a Shared,
    job: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.cancel(self.job);
        }
    }
}

#[async_trait]
impl hive::TaskHandler for PyHandler {
    async fn run(&self, ctx: hive::TaskContext) -> Result<Value, hive::TaskError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let id = self.shared.next_id();
        let job = Job {
            id,
            worker: self.worker,
            handler: self.handler,
            ctx,
            tx,
        };
        if !self.shared.run(job) {
            return Err(stopped());
        }
        let mut guard = CancelOnDrop {
            shared: &self.shared,
            job: id,
            armed: true,
        };
        let answer = rx.await;
        guard.armed = false;
        match answer {
            Ok(result) => result,
            Err(_) => Err(stopped()),
        }
    }
}

/// A started worker, shared by its Python handle, its engine, the loop's
/// bridge and the exit hook. Holds no Python objects.
pub(crate) struct WorkerShared {
    handle: tokio::sync::Mutex<Option<hive::WorkerHandle>>,
    node: std::sync::OnceLock<hive::NodeId>,
    id: u64,
    bridge: Arc<Shared>,
    stop_requested: AtomicBool,
}

impl WorkerShared {
    /// Stops the worker gracefully: no new claims, in-flight attempts finish
    /// (up to its grace period) and are reported, the node is removed.
    pub(crate) async fn shutdown(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        let mut handle = self.handle.lock().await;
        if let Some(h) = handle.take() {
            h.shutdown().await;
        }
        self.bridge.forget_worker(self.id);
    }

    /// Stops the worker at once: in-flight handlers are cancelled without a
    /// grace period, the node is removed (its leases go back to the queue).
    pub(crate) async fn shutdown_now(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        let mut handle = self.handle.lock().await;
        if let Some(h) = handle.take() {
            h.shutdown_now().await;
        }
        self.bridge.forget_worker(self.id);
    }

    /// [`WorkerShared::shutdown`] on the runtime, without waiting.
    pub(crate) fn stop_in_background(self: &Arc<Self>) {
        let me = self.clone();
        crate::runtime::spawn_if_running(async move { me.shutdown().await });
    }

    fn is_running(&self) -> bool {
        match self.handle.try_lock() {
            Ok(h) => h.as_ref().is_some_and(|h| !h.is_finished()),
            // Locked: starting or shutting down.
            Err(_) => !self.stop_requested.load(Ordering::SeqCst),
        }
    }

    fn node(&self) -> String {
        self.node.get().map(|n| n.to_string()).unwrap_or_default()
    }
}

/// Stops every worker of the process and waits for them, up to `timeout`.
pub(crate) fn shutdown_all(py: Python<'_>, timeout: Duration) {
    let all: Vec<Arc<WorkerShared>> = WORKERS
        .lock()
        .drain(..)
        .filter_map(|w| w.upgrade())
        .collect();
    if all.is_empty() {
        return;
    }
    crate::runtime::block_on(py, async move {
        let stops = all.iter().map(|w| w.shutdown());
        let _ = tokio::time::timeout(timeout, futures::future::join_all(stops)).await;
    });
}

/// The options a `hive.Worker` carries, read from its `_spec()`.
pub(crate) struct WorkerSpec {
    name: String,
    capacity: u32,
    claim_batch: u32,
    labels: std::collections::BTreeMap<String, String>,
    system: bool,
    shared_with: Vec<hive::node::ShareTarget>,
    heartbeat_interval: Option<f64>,
    shutdown_grace: f64,
    handlers: Vec<(String, Py<PyAny>)>,
}

impl WorkerSpec {
    pub(crate) fn read(worker: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = worker.py();
        let spec = worker.call_method0("_spec")?;
        let d = spec.cast::<pyo3::types::PyDict>()?;
        let get = |k: &str| -> PyResult<Bound<'_, PyAny>> {
            d.get_item(k)?.ok_or_else(|| {
                crate::errors::invalid_argument(py, format!("worker spec lacks {k}"))
            })
        };
        let hb = get("heartbeat_interval")?;
        Ok(WorkerSpec {
            name: get("name")?.extract()?,
            capacity: get("capacity")?.extract()?,
            claim_batch: get("claim_batch")?.extract()?,
            labels: get("labels")?.extract()?,
            system: get("system")?.extract()?,
            shared_with: {
                let targets = get("shared_with")?;
                let value = crate::convert::from_py(&targets, crate::convert::Mode::Data)
                    .map_err(|e| e.into_spec_error(py, "shared_with"))?;
                serde_json::from_value(value)
                    .map_err(|e| crate::errors::invalid_argument(py, format!("shared_with: {e}")))?
            },
            heartbeat_interval: if hb.is_none() {
                None
            } else {
                Some(hb.extract()?)
            },
            shutdown_grace: get("shutdown_grace")?.extract()?,
            handlers: get("handlers")?.extract()?,
        })
    }
}

fn seconds(py: Python<'_>, what: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        crate::errors::invalid_argument(
            py,
            format!("{what} must be a non-negative number of seconds, got {s}"),
        )
    })
}

/// Starts a worker: registers its handlers with the running loop's bridge,
/// then the node with the engine. Returns an awaitable `WorkerHandle`.
pub(crate) fn start<'py>(
    py: Python<'py>,
    engine: &Arc<crate::engine::Engine>,
    principal: hive::Principal,
    spec: WorkerSpec,
) -> PyResult<Bound<'py, PyAny>> {
    if spec.handlers.is_empty() {
        return Err(crate::errors::invalid_argument(
            py,
            "a worker needs at least one handler: decorate an async function with \
             @worker.handler(\"agent\")",
        ));
    }
    let hive = engine.hive(py)?;
    let bridge = bridge::current(py)?;
    let id = NEXT_WORKER.fetch_add(1, Ordering::Relaxed);
    let mut options = hive::WorkerOptions::new(spec.name).capacity(spec.capacity);
    options.claim_batch = spec.claim_batch;
    options.labels = spec.labels;
    options.shared_with = spec.shared_with;
    options.shutdown_grace = seconds(py, "shutdown_grace", spec.shutdown_grace)?;
    if let Some(hb) = spec.heartbeat_interval {
        options.heartbeat_interval = Some(seconds(py, "heartbeat_interval", hb)?);
    }
    if spec.system {
        options = options.system();
    }
    let mut handlers = Vec::with_capacity(spec.handlers.len());
    for (i, (agent, f)) in spec.handlers.into_iter().enumerate() {
        options = options.handler(
            agent.as_str(),
            Arc::new(PyHandler {
                shared: bridge.get().shared().clone(),
                worker: id,
                handler: i,
            }),
        );
        handlers.push(f);
    }
    // Handlers run in a copy of the caller's contextvars.
    let context = pyo3_async_runtimes::TaskLocals::with_running_loop(py)?
        .copy_context(py)?
        .context(py)
        .unbind();
    let shared = Arc::new(WorkerShared {
        handle: tokio::sync::Mutex::new(None),
        node: std::sync::OnceLock::new(),
        id,
        bridge: bridge.get().shared().clone(),
        stop_requested: AtomicBool::new(false),
    });
    // Registered before the node exists: the worker may claim at once.
    bridge.get().add_worker(
        py,
        id,
        WorkerEntry {
            handlers,
            context,
            shared: shared.clone(),
        },
    )?;
    let engine = engine.clone();
    let started = bridge::call(
        py,
        async move {
            match hive.start_worker(&principal, options).await {
                Ok(handle) => {
                    let _ = shared.node.set(handle.node());
                    *shared.handle.lock().await = Some(handle);
                    WORKERS.lock().push(Arc::downgrade(&shared));
                    engine.add_worker(&shared);
                    if shared.stop_requested.load(Ordering::SeqCst) {
                        shared.shutdown().await;
                    }
                    Ok(shared)
                }
                Err(e) => {
                    shared.bridge.forget_worker(id);
                    Err(e)
                }
            }
        },
        |py, shared| Ok(Py::new(py, WorkerHandle { shared })?.into_any()),
    );
    if started.is_err() {
        bridge.get().remove_worker(id);
    }
    started
}

/// A running in-process worker (from `Hive.start_worker`).
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct WorkerHandle {
    shared: Arc<WorkerShared>,
}

#[pymethods]
impl WorkerHandle {
    /// The id of the worker's node.
    #[getter]
    fn node_id(&self) -> String {
        self.shared.node()
    }

    /// Whether the worker is still claiming and running tasks.
    #[getter]
    fn running(&self) -> bool {
        self.shared.is_running()
    }

    /// Stops claiming, lets in-flight handlers finish (up to the worker's
    /// `shutdown_grace`), reports them and removes the node. Awaitable.
    fn shutdown<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let shared = self.shared.clone();
        bridge::call(
            py,
            async move {
                shared.shutdown().await;
                Ok(())
            },
            |py, ()| bridge::none(py),
        )
    }

    fn __repr__(&self) -> String {
        format!(
            "<hive.WorkerHandle node={} running={}>",
            self.shared.node(),
            self.shared.is_running()
        )
    }
}

/// What a handler gets: the task's input and ways to log, report progress and
/// heartbeat. Answering is done by the wrapper around the handler.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct TaskContext {
    inner: hive::TaskContext,
    job: u64,
    tx: Mutex<Option<tokio::sync::oneshot::Sender<bridge::HandlerResult>>>,
    bridge: Py<bridge::Bridge>,
    input: PyOnceLock<Py<PyAny>>,
}

impl TaskContext {
    pub(crate) fn new(
        inner: hive::TaskContext,
        job: u64,
        tx: tokio::sync::oneshot::Sender<bridge::HandlerResult>,
        bridge: Py<bridge::Bridge>,
    ) -> Self {
        TaskContext {
            inner,
            job,
            tx: Mutex::new(Some(tx)),
            bridge,
            input: PyOnceLock::new(),
        }
    }

    fn answer(&self, py: Python<'_>, result: bridge::HandlerResult) -> bool {
        let tx = self.tx.lock().take();
        let bridge = self.bridge.bind(py);
        bridge.get().job_finished(self.job);
        match tx {
            Some(tx) if !tx.is_closed() => {
                bridge::Bridge::answer(bridge, tx, result);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn fail_internal(&self, py: Python<'_>, code: &str, message: &str) {
        self.answer(py, Err(hive::TaskError::new(code, message)));
    }
}

#[pymethods]
impl TaskContext {
    /// The task's id.
    #[getter]
    fn task_id(&self) -> String {
        self.inner.task_id().to_string()
    }

    /// The attempt number (1-based).
    #[getter]
    fn attempt(&self) -> u32 {
        self.inner.attempt()
    }

    /// The agent the task is for.
    #[getter]
    fn agent(&self) -> &str {
        self.inner.spec().agent.as_str()
    }

    /// The task's input (converted once, on first access).
    #[getter]
    fn input(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.input
            .get_or_try_init(py, || {
                convert::to_py(py, self.inner.input()).map(Bound::unbind)
            })
            .map(|v| v.clone_ref(py))
    }

    /// The tenant that owns the task.
    #[getter]
    fn tenant(&self) -> &str {
        self.inner.owner().tenant.as_str()
    }

    /// The principal that submitted the task.
    #[getter]
    fn owner(&self) -> &str {
        self.inner.owner().principal.as_str()
    }

    /// The labels the task requires.
    #[getter]
    fn labels(&self) -> std::collections::BTreeMap<String, String> {
        self.inner.spec().labels.clone()
    }

    /// Whether the attempt should stop (lease lost, task cancelled, worker
    /// stopping). A cancelled attempt's coroutine is also cancelled.
    #[getter]
    fn cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }

    /// Appends a line to the task's event stream (a `log` event). Awaitable.
    #[pyo3(signature = (stream, line))]
    fn log<'py>(
        &self,
        py: Python<'py>,
        stream: String,
        line: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ctx = self.inner.clone();
        bridge::call(
            py,
            async move { ctx.log(&stream, &line).await.map(|_| ()) },
            |py, ()| bridge::none(py),
        )
    }

    /// Sets the progress sent with the next heartbeat (JSON-compatible).
    fn set_progress(&self, py: Python<'_>, progress: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = convert::from_py(progress, Mode::Data)
            .map_err(|e| e.into_spec_error(py, "progress"))?;
        self.inner.set_progress(value);
        Ok(())
    }

    /// Heartbeats now, with optional progress. Raises `hive.LeaseLost` if the
    /// attempt should stop. Awaitable.
    #[pyo3(signature = (progress = None))]
    fn heartbeat<'py>(
        &self,
        py: Python<'py>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let progress = match progress {
            Some(p) => Some(
                convert::from_py(p, Mode::Data).map_err(|e| e.into_spec_error(py, "progress"))?,
            ),
            None => None,
        };
        let ctx = self.inner.clone();
        bridge::call(
            py,
            async move { ctx.heartbeat(progress).await.map(|_| ()) },
            |py, ()| bridge::none(py),
        )
    }

    /// Answers with the handler's result (internal).
    fn _succeed(&self, py: Python<'_>, result: &Bound<'_, PyAny>) -> bool {
        let answer = match convert::from_py(result, Mode::Data) {
            Ok(v) => Ok(v),
            Err(e) => Err(hive::TaskError::new(
                "invalid_output",
                format!(
                    "the handler's result is not JSON-compatible{}: {}",
                    if e.path.is_empty() {
                        String::new()
                    } else {
                        format!(" at {}", e.path)
                    },
                    e.message
                ),
            )
            .non_retryable()),
        };
        self.answer(py, answer)
    }

    /// Answers with a failure (internal).
    #[pyo3(signature = (code, message, non_retryable = false, details = None, retry_after = None))]
    fn _fail(
        &self,
        py: Python<'_>,
        code: String,
        message: String,
        non_retryable: bool,
        details: Option<&Bound<'_, PyAny>>,
        retry_after: Option<f64>,
    ) -> bool {
        let mut error = hive::TaskError::new(code, message);
        if non_retryable {
            error = error.non_retryable();
        }
        if let Some(d) = details
            && !d.is_none()
        {
            match convert::from_py(d, Mode::Data) {
                Ok(v) => error = error.with_details(v),
                Err(e) => {
                    error = error
                        .with_details(Value::String(format!("(details not JSON: {})", e.message)))
                }
            }
        }
        if let Some(s) = retry_after
            && let Ok(d) = Duration::try_from_secs_f64(s)
        {
            error = error.retry_after(d);
        }
        self.answer(py, Err(error))
    }

    fn __repr__(&self) -> String {
        format!(
            "<hive.TaskContext task={} agent={} attempt={}>",
            self.inner.task_id(),
            self.inner.spec().agent,
            self.inner.attempt()
        )
    }
}
