//! The bridge between the tokio runtime and one asyncio event loop.
//!
//! Tokio tasks never take the GIL. They push what they have for the loop —
//! a finished call's result, a handler job to start, a job to cancel — into
//! the bridge's inbox and, if the loop was not already signalled, write one
//! byte to a socket pair. The loop watches the other end (`add_reader`) and,
//! on its own thread with the GIL it already holds, drains the whole inbox:
//! one wake-up for any number of messages, and no thread ever waits for the
//! GIL while holding up the engine.
//!
//! Python objects (the asyncio futures, the handler tasks) live only on the
//! loop side, in [`Bridge`]; tokio tasks refer to them by number. A message for
//! a future that was cancelled meanwhile is dropped without being converted,
//! so an iterator's buffered item stays buffered.
//!
//! Lifetime: the bridge registers an async generator with the loop, so the
//! loop's `shutdown_asyncgens()` — run by `asyncio.run` and `asyncio.Runner`
//! after every task has finished — closes it. Closing fails the jobs that
//! never started (their Hive tasks are reported failed and retried by
//! policy), stops the in-process workers that were running their handlers on
//! this loop, and refuses later messages.

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use rustc_hash::FxHashMap;
use serde_json::Value;

use crate::worker::WorkerShared;

/// What a finished call hands the loop: run there, with the GIL, to produce
/// the future's result. `Ok(None)` keeps the future pending (the closure
/// started another attempt that will deliver again).
pub(crate) type Deliver = Box<dyn FnOnce(Python<'_>) -> PyResult<Option<Py<PyAny>>> + Send>;

/// A handler's answer for one attempt.
pub(crate) type HandlerResult = Result<Value, hive::TaskError>;

/// One attempt for a Python handler to run on the loop.
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) worker: u64,
    pub(crate) handler: usize,
    pub(crate) ctx: hive::TaskContext,
    pub(crate) tx: tokio::sync::oneshot::Sender<HandlerResult>,
}

enum Msg {
    Done(u64, Deliver),
    Run(Job),
    Cancel(u64),
    ForgetWorker(u64),
}

struct Inbox {
    closed: bool,
    msgs: Vec<Msg>,
}

/// The half of a bridge tokio tasks hold: no Python objects in it.
pub(crate) struct Shared {
    inbox: Mutex<Inbox>,
    signalled: AtomicBool,
    writer: UnixStream,
    next_id: AtomicU64,
}

impl Shared {
    /// A fresh number for a future or a job.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues `msg` for the loop and wakes it; `false` (and `msg` dropped) if
    /// the loop side is closed.
    fn push(&self, msg: Msg) -> bool {
        {
            let mut inbox = self.inbox.lock();
            if inbox.closed {
                drop(inbox);
                drop(msg);
                return false;
            }
            inbox.msgs.push(msg);
        }
        if !self.signalled.swap(true, Ordering::AcqRel) {
            // A full socket buffer means a wake-up is pending anyway.
            let _ = (&self.writer).write(&[1]);
        }
        true
    }

    /// Hands a call's result to the loop (dropped if the loop is gone).
    pub(crate) fn complete(&self, future: u64, deliver: Deliver) {
        self.push(Msg::Done(future, deliver));
    }

    /// Asks the loop to start a handler job; `false` if the loop is gone (the
    /// job is dropped, which answers it "stopped").
    pub(crate) fn run(&self, job: Job) -> bool {
        self.push(Msg::Run(job))
    }

    /// Asks the loop to cancel a job's Python task.
    pub(crate) fn cancel(&self, job: u64) {
        self.push(Msg::Cancel(job));
    }

    /// Asks the loop to drop a stopped worker's handlers.
    pub(crate) fn forget_worker(&self, worker: u64) {
        self.push(Msg::ForgetWorker(worker));
    }

    fn close(&self) -> Vec<Msg> {
        let mut inbox = self.inbox.lock();
        inbox.closed = true;
        std::mem::take(&mut inbox.msgs)
    }
}

/// A worker whose handlers run on this loop.
pub(crate) struct WorkerEntry {
    pub(crate) handlers: Vec<Py<PyAny>>,
    /// The `contextvars.Context` captured when the worker started.
    pub(crate) context: Py<PyAny>,
    pub(crate) shared: Arc<WorkerShared>,
}

#[derive(Default)]
struct LoopState {
    futures: FxHashMap<u64, Py<PyAny>>,
    /// Started jobs: their asyncio task and their context.
    running: FxHashMap<u64, (Py<PyAny>, Py<crate::worker::TaskContext>)>,
    workers: FxHashMap<u64, WorkerEntry>,
    guard: Option<Py<PyAny>>,
    closed: bool,
}

/// The loop side of a bridge (internal).
#[pyclass(module = "hive._hive", name = "_Bridge", frozen)]
pub(crate) struct Bridge {
    shared: Arc<Shared>,
    reader: UnixStream,
    event_loop: Py<PyAny>,
    create_task: Py<PyAny>,
    create_future: Py<PyAny>,
    /// `asyncio.Task` on Python 3.11+ (which takes `context=`): handler tasks
    /// are made with it directly unless the loop has a task factory.
    task_type: Option<Py<PyAny>>,
    run_handler: Py<PyAny>,
    key: usize,
    pid: u32,
    state: Mutex<LoopState>,
    /// Handlers' answers, sent to the runtime in one burst per loop iteration
    /// (one wake-up of the runtime instead of one per task).
    answers: Mutex<Vec<(tokio::sync::oneshot::Sender<HandlerResult>, HandlerResult)>>,
    flush_scheduled: AtomicBool,
}

static BRIDGES: Mutex<Option<FxHashMap<usize, Py<Bridge>>>> = Mutex::new(None);
static SUPPORT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `hive._support`: the Python half of the machinery.
pub(crate) fn support(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    SUPPORT
        .get_or_try_init(py, || {
            py.import("hive._support").map(|m| m.into_any().unbind())
        })
        .map(|m| m.bind(py))
}

/// The bridge of the running event loop, made on first use.
pub(crate) fn current(py: Python<'_>) -> PyResult<Bound<'_, Bridge>> {
    let event_loop = pyo3_async_runtimes::get_running_loop(py).map_err(|_| {
        PyRuntimeError::new_err(
            "Hive's calls are awaitables: make them from a coroutine running on an asyncio \
             event loop (asyncio.run, an async test, …)",
        )
    })?;
    let key = event_loop.as_ptr() as usize;
    if let Some(b) = BRIDGES.lock().as_ref().and_then(|m| m.get(&key)) {
        return Ok(b.bind(py).clone());
    }
    let bridge = Bridge::open(py, &event_loop, key)?;
    BRIDGES
        .lock()
        .get_or_insert_with(FxHashMap::default)
        .insert(key, bridge.clone().unbind());
    Ok(bridge)
}

/// Closes every bridge (the exit hook): fails unstarted jobs, stops workers.
pub(crate) fn close_all(py: Python<'_>) {
    let all: Vec<Py<Bridge>> = BRIDGES
        .lock()
        .as_mut()
        .map(|m| m.drain().map(|(_, b)| b).collect())
        .unwrap_or_default();
    for b in all {
        b.get().close_inner(py);
    }
}

impl Bridge {
    fn open<'py>(
        py: Python<'py>,
        event_loop: &Bound<'py, PyAny>,
        key: usize,
    ) -> PyResult<Bound<'py, Bridge>> {
        let (reader, writer) = UnixStream::pair()
            .map_err(|e| PyRuntimeError::new_err(format!("socketpair failed: {e}")))?;
        reader
            .set_nonblocking(true)
            .and_then(|_| writer.set_nonblocking(true))
            .map_err(|e| PyRuntimeError::new_err(format!("socketpair setup failed: {e}")))?;
        let fd = reader.as_raw_fd();
        let version = py.version_info();
        let task_type = if (version.major, version.minor) >= (3, 11) {
            Some(py.import("asyncio")?.getattr("Task")?.unbind())
        } else {
            None
        };
        let bridge = Bound::new(
            py,
            Bridge {
                shared: Arc::new(Shared {
                    inbox: Mutex::new(Inbox {
                        closed: false,
                        msgs: Vec::new(),
                    }),
                    signalled: AtomicBool::new(false),
                    writer,
                    next_id: AtomicU64::new(1),
                }),
                reader,
                event_loop: event_loop.clone().unbind(),
                create_task: event_loop.getattr("create_task")?.unbind(),
                create_future: event_loop.getattr("create_future")?.unbind(),
                task_type,
                run_handler: support(py)?.getattr("run_handler")?.unbind(),
                key,
                pid: std::process::id(),
                state: Mutex::new(LoopState::default()),
                answers: Mutex::new(Vec::new()),
                flush_scheduled: AtomicBool::new(false),
            },
        )?;
        event_loop.call_method1("add_reader", (fd, bridge.getattr("_on_readable")?))?;
        // The guard: an async generator the loop closes in shutdown_asyncgens().
        let guard = support(py)?.call_method1("loop_guard", (&bridge,))?;
        bridge.get().state.lock().guard = Some(guard.unbind());
        Ok(bridge)
    }

    /// The tokio-side half.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A new asyncio future on this loop and its number.
    pub(crate) fn new_future<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, u64)> {
        let fut = self.create_future.bind(py).call0()?;
        let id = self.shared.next_id();
        {
            let mut st = self.state.lock();
            if st.closed {
                drop(st);
                return Err(crate::errors::shutdown(
                    py,
                    "this event loop is shutting down; Hive no longer answers on it",
                ));
            }
            st.futures.insert(id, fut.clone().unbind());
        }
        Ok((fut, id))
    }

    /// Registers a worker whose handlers run on this loop.
    pub(crate) fn add_worker(&self, py: Python<'_>, id: u64, entry: WorkerEntry) -> PyResult<()> {
        let mut st = self.state.lock();
        if st.closed {
            drop(st);
            return Err(crate::errors::shutdown(
                py,
                "this event loop is shutting down",
            ));
        }
        st.workers.insert(id, entry);
        Ok(())
    }

    /// Drops a worker's entry.
    pub(crate) fn remove_worker(&self, id: u64) {
        let entry = self.state.lock().workers.remove(&id);
        drop(entry);
    }

    /// A job's Python task ended.
    pub(crate) fn job_finished(&self, id: u64) {
        let entry = self.state.lock().running.remove(&id);
        drop(entry);
    }

    fn deliver(&self, py: Python<'_>, id: u64, deliver: Deliver) {
        let Some(fut) = self.state.lock().futures.remove(&id) else {
            return;
        };
        let fut = fut.into_bound(py);
        // Cancelled (or otherwise done) meanwhile: leave the result where it is.
        if fut
            .call_method0(pyo3::intern!(py, "done"))
            .and_then(|d| d.is_truthy())
            .unwrap_or(true)
        {
            return;
        }
        let outcome = match deliver(py) {
            Ok(Some(value)) => fut.call_method1(pyo3::intern!(py, "set_result"), (value,)),
            Ok(None) => {
                self.state.lock().futures.insert(id, fut.unbind());
                return;
            }
            Err(e) => fut.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),)),
        };
        if let Err(e) = outcome {
            e.write_unraisable(py, None);
        }
    }

    /// Whether handler tasks can be made with `asyncio.Task(…, context=…)`
    /// directly (no task factory set on the loop).
    fn direct_tasks(&self, py: Python<'_>) -> bool {
        self.task_type.is_some()
            && self
                .event_loop
                .bind(py)
                .call_method0("get_task_factory")
                .is_ok_and(|f| f.is_none())
    }

    fn start(&self, py: Python<'_>, job: Job, slf: &Bound<'_, Bridge>, direct: bool) {
        let entry = {
            let st = self.state.lock();
            st.workers.get(&job.worker).map(|w| {
                (
                    w.handlers.get(job.handler).map(|h| h.clone_ref(py)),
                    w.context.clone_ref(py),
                )
            })
        };
        let Some((Some(handler), context)) = entry else {
            // The worker is gone: dropping the job answers it "stopped".
            return;
        };
        let id = job.id;
        let ctx = match Bound::new(
            py,
            crate::worker::TaskContext::new(job.ctx, id, job.tx, slf.clone().unbind()),
        ) {
            Ok(ctx) => ctx,
            Err(e) => return e.write_unraisable(py, None),
        };
        let started = self.spawn_handler(py, &handler, &ctx, &context, direct);
        match started {
            Ok(task) => {
                let mut st = self.state.lock();
                st.running.insert(id, (task.unbind(), ctx.unbind()));
            }
            Err(e) => {
                ctx.get()
                    .fail_internal(py, "handler_start", "could not start the handler task");
                e.write_unraisable(py, None);
            }
        }
    }

    /// The handler's coroutine (wrapped by `hive._support.run_handler`) as an
    /// asyncio task in the worker's `contextvars` context.
    fn spawn_handler<'py>(
        &self,
        py: Python<'py>,
        handler: &Py<PyAny>,
        ctx: &Bound<'py, crate::worker::TaskContext>,
        context: &Py<PyAny>,
        direct: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let coro = self.run_handler.bind(py).call1((handler, ctx))?;
        let task = match (&self.task_type, direct) {
            (Some(task_type), true) => {
                let kwargs = pyo3::types::PyDict::new(py);
                kwargs.set_item(pyo3::intern!(py, "loop"), self.event_loop.bind(py))?;
                kwargs.set_item(pyo3::intern!(py, "context"), context.bind(py))?;
                task_type.bind(py).call((&coro,), Some(&kwargs))
            }
            _ => context
                .bind(py)
                .call_method1("run", (self.create_task.bind(py), &coro)),
        };
        if task.is_err() {
            let _ = coro.call_method0("close");
        }
        task
    }

    /// Queues a handler's answer; the queue is sent once per loop iteration.
    pub(crate) fn answer(
        slf: &Bound<'_, Bridge>,
        tx: tokio::sync::oneshot::Sender<HandlerResult>,
        result: HandlerResult,
    ) {
        let this = slf.get();
        this.answers.lock().push((tx, result));
        if !this.flush_scheduled.swap(true, Ordering::AcqRel) {
            let scheduled = slf
                .getattr(pyo3::intern!(slf.py(), "_flush"))
                .and_then(|f| {
                    this.event_loop
                        .bind(slf.py())
                        .call_method1(pyo3::intern!(slf.py(), "call_soon"), (f,))
                });
            if scheduled.is_err() {
                this.flush();
            }
        }
    }

    fn flush(&self) {
        self.flush_scheduled.store(false, Ordering::Release);
        let answers = std::mem::take(&mut *self.answers.lock());
        for (tx, result) in answers {
            let _ = tx.send(result);
        }
    }

    fn cancel_job(&self, py: Python<'_>, id: u64) {
        let entry = self.state.lock().running.remove(&id);
        if let Some((task, _ctx)) = entry
            && let Err(e) = task.bind(py).call_method0("cancel")
        {
            e.write_unraisable(py, None);
        }
    }

    fn close_inner(&self, py: Python<'_>) {
        let (futures, running, workers, guard) = {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            (
                std::mem::take(&mut st.futures),
                std::mem::take(&mut st.running),
                std::mem::take(&mut st.workers),
                st.guard.take(),
            )
        };
        // Handlers still running when their loop goes away (asyncio.run has
        // cancelled and answered them already; a loop closed by hand has not).
        for (_, ctx) in running.values() {
            ctx.get()
                .fail_internal(py, "worker_stopped", "the handler's event loop closed");
        }
        drop(running);
        self.flush();
        // Unstarted jobs are dropped here: their handlers answer "stopped".
        let pending = self.shared.close();
        drop(pending);
        {
            let mut all = BRIDGES.lock();
            if let Some(m) = all.as_mut()
                && m.get(&self.key)
                    .is_some_and(|b| std::ptr::eq(b.get(), self as *const Bridge))
            {
                m.remove(&self.key);
            }
        }
        let lp = self.event_loop.bind(py);
        // In a forked child the loop (and its epoll set) is the parent's: hands off.
        if self.pid == std::process::id()
            && !lp
                .call_method0("is_closed")
                .and_then(|c| c.is_truthy())
                .unwrap_or(true)
        {
            let _ = lp.call_method1("remove_reader", (self.reader.as_raw_fd(),));
            for fut in futures.values() {
                let _ = fut.bind(py).call_method0("cancel");
            }
        }
        drop(futures);
        for (_, w) in workers {
            w.shared.stop_in_background();
        }
        drop(guard);
    }
}

#[pymethods]
impl Bridge {
    /// Called by the loop when the socket is readable: drains the inbox.
    fn _on_readable(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let this = slf.get();
        let mut buf = [0u8; 512];
        loop {
            match (&this.reader).read(&mut buf) {
                Ok(0) => break,
                Ok(n) if n < buf.len() => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        this.shared.signalled.store(false, Ordering::Release);
        let msgs = std::mem::take(&mut this.shared.inbox.lock().msgs);
        let mut direct = None;
        for msg in msgs {
            match msg {
                Msg::Done(id, deliver) => this.deliver(py, id, deliver),
                Msg::Run(job) => {
                    let direct = *direct.get_or_insert_with(|| this.direct_tasks(py));
                    this.start(py, job, slf, direct)
                }
                Msg::Cancel(id) => this.cancel_job(py, id),
                Msg::ForgetWorker(id) => this.remove_worker(id),
            }
        }
    }

    /// Sends the queued answers to the runtime.
    fn _flush(&self) {
        self.flush();
    }

    /// Closes the bridge (called when the loop shuts down its async generators).
    fn close(&self, py: Python<'_>) {
        self.close_inner(py);
    }

    fn __repr__(&self) -> String {
        format!("<hive bridge for loop 0x{:x}>", self.key)
    }
}

/// A call: returns a [`Call`] that, once awaited on an event loop, starts
/// `fut` on the runtime and resolves to `convert(result)` (or raises the
/// mapped error). Nothing runs until it is awaited, like a coroutine.
pub(crate) fn call<'py, F, T, C>(py: Python<'py>, fut: F, convert: C) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = hive::Result<T>> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    Call::deferred(py, move |py| start_call(py, fut, convert))
}

/// Starts `fut` now and returns an asyncio future on the running loop.
fn start_call<'py, F, T, C>(py: Python<'py>, fut: F, convert: C) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = hive::Result<T>> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let bridge = current(py)?;
    let handle = crate::runtime::handle(py)?;
    let (pyfut, id) = bridge.get().new_future(py)?;
    let shared = bridge.get().shared.clone();
    handle.spawn(async move {
        let result = fut.await;
        shared.complete(
            id,
            Box::new(move |py| match result {
                Ok(v) => convert(py, v).map(Some),
                Err(e) => Err(crate::errors::to_py_err(py, &e)),
            }),
        );
    });
    Ok(pyfut)
}

type Starter = Box<dyn for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyAny>> + Send>;

enum CallState {
    /// Not awaited yet: how to start it.
    Deferred(Starter),
    /// Already answered.
    Ready(PyResult<Py<PyAny>>),
    /// Started: the asyncio future and its `__await__` iterator.
    Waiting(Py<PyAny>, Py<PyAny>),
    Finished,
}

/// The awaitable every Hive call returns: a coroutine (it has `send`,
/// `throw` and `close`, so `asyncio.run`, `create_task` and `gather` take
/// it) that starts its work on the runtime when first awaited.
#[pyclass(module = "hive._hive", name = "Call")]
pub(crate) struct Call {
    state: Mutex<CallState>,
}

impl Call {
    pub(crate) fn deferred<'py>(
        py: Python<'py>,
        start: impl for<'a> FnOnce(Python<'a>) -> PyResult<Bound<'a, PyAny>> + Send + 'static,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(Bound::new(
            py,
            Call {
                state: Mutex::new(CallState::Deferred(Box::new(start))),
            },
        )?
        .into_any())
    }

    pub(crate) fn ready(py: Python<'_>, value: PyResult<Py<PyAny>>) -> PyResult<Bound<'_, PyAny>> {
        Ok(Bound::new(
            py,
            Call {
                state: Mutex::new(CallState::Ready(value)),
            },
        )?
        .into_any())
    }

    fn take(&self) -> CallState {
        std::mem::replace(&mut *self.state.lock(), CallState::Finished)
    }

    fn step(&self, py: Python<'_>, value: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        match self.take() {
            CallState::Deferred(start) => {
                let fut = start(py)?;
                let it = fut.call_method0(pyo3::intern!(py, "__await__"))?;
                *self.state.lock() = CallState::Waiting(fut.unbind(), it.clone().unbind());
                let out = it.call_method0(pyo3::intern!(py, "__next__"));
                self.finish_on_error(&out);
                out.map(Bound::unbind)
            }
            CallState::Ready(Ok(v)) => Err(pyo3::exceptions::PyStopIteration::new_err((v,))),
            CallState::Ready(Err(e)) => Err(e),
            CallState::Waiting(fut, it) => {
                let iter = it.clone_ref(py);
                *self.state.lock() = CallState::Waiting(fut, it);
                let out = match value {
                    Some(v) if !v.is_none() => {
                        iter.bind(py).call_method1(pyo3::intern!(py, "send"), (v,))
                    }
                    _ => iter.bind(py).call_method0(pyo3::intern!(py, "__next__")),
                };
                self.finish_on_error(&out);
                out.map(Bound::unbind)
            }
            CallState::Finished => Err(PyRuntimeError::new_err(
                "cannot reuse an already awaited Hive call",
            )),
        }
    }

    fn finish_on_error<T>(&self, out: &PyResult<T>) {
        if out.is_err() {
            let done = self.take();
            drop(done);
        }
    }
}

#[pymethods]
impl Call {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.step(py, None)
    }

    /// Coroutine protocol.
    fn send(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.step(py, Some(value))
    }

    /// Coroutine protocol.
    #[pyo3(signature = (typ, val = None, tb = None))]
    fn throw(
        &self,
        py: Python<'_>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        match self.take() {
            CallState::Waiting(fut, it) => {
                let iter = it.clone_ref(py);
                *self.state.lock() = CallState::Waiting(fut, it);
                let args = match (val, tb) {
                    (None, _) => pyo3::types::PyTuple::new(py, [typ])?,
                    (Some(v), None) => pyo3::types::PyTuple::new(py, [typ, v])?,
                    (Some(v), Some(t)) => pyo3::types::PyTuple::new(py, [typ, v, t])?,
                };
                let out = iter.bind(py).call_method1(pyo3::intern!(py, "throw"), args);
                self.finish_on_error(&out);
                out.map(Bound::unbind)
            }
            _ => {
                // Not started (or over): raise it here, like a fresh coroutine.
                let exc = if typ.is_instance_of::<pyo3::exceptions::PyBaseException>() {
                    typ.clone()
                } else {
                    match val {
                        Some(v) if v.is_instance_of::<pyo3::exceptions::PyBaseException>() => {
                            v.clone()
                        }
                        Some(v) if !v.is_none() => typ.call1((v,))?,
                        _ => typ.call0()?,
                    }
                };
                Err(PyErr::from_value(exc))
            }
        }
    }

    /// Coroutine protocol: a started call's future is cancelled.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if let CallState::Waiting(fut, _) = self.take() {
            let fut = fut.bind(py);
            // An asyncio future (a ready answer has nothing to cancel).
            if let Ok(done) = fut.call_method0(pyo3::intern!(py, "done"))
                && !done.is_truthy()?
            {
                fut.call_method0(pyo3::intern!(py, "cancel"))?;
            }
        }
        Ok(())
    }

    fn __repr__(&self) -> &'static str {
        match &*self.state.lock() {
            CallState::Deferred(_) => "<hive call (not awaited)>",
            CallState::Ready(_) => "<hive call (answered)>",
            CallState::Waiting(..) => "<hive call (running)>",
            CallState::Finished => "<hive call (finished)>",
        }
    }
}

/// `None` as an object.
pub(crate) fn none(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}
