//! Async iterators over event streams (a task's events, a workflow's events,
//! a tenant's feed).
//!
//! Each keeps a buffer on the Rust side: `__anext__` answers from the buffer
//! at once when it can, and otherwise fetches a batch on the runtime. The
//! batch goes into the buffer, and an item leaves the buffer only when the
//! loop hands it to a waiting `__anext__`: if that await was cancelled
//! meanwhile (a timeout, Ctrl-C), nothing is lost.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::bridge::{self, Call, Shared};
use crate::types;

/// Where a stream's items come from.
#[async_trait]
pub(crate) trait Source: Send + 'static {
    /// An item.
    type Item: Send + 'static;
    /// The next items (at least one, at most `max`), an error, or `None` once
    /// the stream has ended.
    async fn fetch(&mut self, max: usize) -> Option<hive::Result<Vec<Self::Item>>>;
    /// An item's position (seq or cursor).
    fn position(item: &Self::Item) -> u64;
    /// The position after everything fetched so far (filtered items included).
    fn scanned(&self) -> u64;
    /// The item as a Python object.
    fn to_py(py: Python<'_>, item: Self::Item) -> PyResult<Py<PyAny>>;
}

struct Buf<T> {
    items: VecDeque<hive::Result<T>>,
    ended: bool,
    position: u64,
    scanned: u64,
}

/// A buffered stream over a [`Source`].
pub(crate) struct Stream<S: Source> {
    source: tokio::sync::Mutex<S>,
    buf: Mutex<Buf<S::Item>>,
    batch: usize,
}

impl<S: Source> Stream<S> {
    pub(crate) fn new(source: S, start: u64, batch: usize) -> Arc<Self> {
        Arc::new(Stream {
            source: tokio::sync::Mutex::new(source),
            buf: Mutex::new(Buf {
                items: VecDeque::new(),
                ended: false,
                position: start,
                scanned: start,
            }),
            batch,
        })
    }
}

/// What the Python classes need of a stream.
pub(crate) trait PyStream: Send + Sync + 'static {
    /// The next buffered item, if any.
    fn pop(&self, py: Python<'_>) -> Option<PyResult<Py<PyAny>>>;
    /// Up to `max` buffered items as a list, if any is buffered. An error
    /// buffered first is raised; one after items waits for the next call.
    fn pop_many(&self, py: Python<'_>, max: usize) -> Option<PyResult<Py<PyAny>>>;
    /// Whether the stream has ended and the buffer is empty.
    fn ended(&self) -> bool;
    /// Fills the buffer if it is empty.
    fn fill(self: Arc<Self>) -> BoxFuture<'static, ()>;
    /// The position of the last item handed out (or scanned past).
    fn position(&self) -> u64;
}

impl<S: Source> PyStream for Stream<S> {
    fn pop(&self, py: Python<'_>) -> Option<PyResult<Py<PyAny>>> {
        let item = {
            let mut buf = self.buf.lock();
            let item = buf.items.pop_front()?;
            if let Ok(it) = &item {
                buf.position = S::position(it);
            }
            item
        };
        Some(match item {
            Ok(it) => S::to_py(py, it),
            Err(e) => Err(crate::errors::to_py_err(py, &e)),
        })
    }

    fn pop_many(&self, py: Python<'_>, max: usize) -> Option<PyResult<Py<PyAny>>> {
        let mut taken = Vec::new();
        {
            let mut buf = self.buf.lock();
            if buf.items.is_empty() {
                return None;
            }
            if let Some(Err(_)) = buf.items.front()
                && let Some(Err(e)) = buf.items.pop_front()
            {
                drop(buf);
                return Some(Err(crate::errors::to_py_err(py, &e)));
            }
            while taken.len() < max {
                match buf.items.front() {
                    Some(Ok(_)) => {
                        if let Some(Ok(it)) = buf.items.pop_front() {
                            buf.position = S::position(&it);
                            taken.push(it);
                        }
                    }
                    _ => break,
                }
            }
        }
        let list = PyList::empty(py);
        for it in taken {
            match S::to_py(py, it).and_then(|o| list.append(o)) {
                Ok(()) => {}
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(list.into_any().unbind()))
    }

    fn ended(&self) -> bool {
        let buf = self.buf.lock();
        buf.ended && buf.items.is_empty()
    }

    fn fill(self: Arc<Self>) -> BoxFuture<'static, ()> {
        async move {
            let mut source = self.source.lock().await;
            {
                let buf = self.buf.lock();
                if !buf.items.is_empty() || buf.ended {
                    return;
                }
            }
            let got = source.fetch(self.batch).await;
            let scanned = source.scanned();
            let mut buf = self.buf.lock();
            buf.scanned = scanned;
            match got {
                None => buf.ended = true,
                Some(Ok(items)) => buf.items.extend(items.into_iter().map(Ok)),
                Some(Err(e)) => buf.items.push_back(Err(e)),
            }
        }
        .boxed()
    }

    fn position(&self) -> u64 {
        let buf = self.buf.lock();
        if buf.items.is_empty() {
            buf.position.max(buf.scanned)
        } else {
            buf.position
        }
    }
}

#[derive(Clone, Copy)]
enum Want {
    One,
    Many(usize),
}

fn spawn_fetch(
    handle: tokio::runtime::Handle,
    shared: Arc<Shared>,
    id: u64,
    stream: Arc<dyn PyStream>,
    want: Want,
) {
    let h2 = handle.clone();
    handle.spawn(async move {
        stream.clone().fill().await;
        let shared2 = shared.clone();
        shared.complete(
            id,
            Box::new(move |py| {
                let got = match want {
                    Want::One => stream.pop(py),
                    Want::Many(n) => stream.pop_many(py, n),
                };
                if let Some(r) = got {
                    return r.map(Some);
                }
                if stream.ended() {
                    return match want {
                        Want::One => Err(PyStopAsyncIteration::new_err(())),
                        Want::Many(_) => Ok(Some(PyList::empty(py).into_any().unbind())),
                    };
                }
                // Another reader emptied the buffer first: fetch again.
                spawn_fetch(h2, shared2, id, stream, want);
                Ok(None)
            }),
        );
    });
}

fn next_item<'py>(
    py: Python<'py>,
    stream: &Arc<dyn PyStream>,
    want: Want,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let got = match want {
        Want::One => stream.pop(py),
        Want::Many(n) => stream.pop_many(py, n),
    };
    if let Some(item) = got {
        return Call::ready(py, item).map(Some);
    }
    if stream.ended() {
        return match want {
            Want::One => Ok(None),
            Want::Many(_) => Call::ready(py, Ok(PyList::empty(py).into_any().unbind())).map(Some),
        };
    }
    let stream = stream.clone();
    Call::deferred(py, move |py| {
        // Awaited: whatever arrived meanwhile is answered at once.
        let got = match want {
            Want::One => stream.pop(py),
            Want::Many(n) => stream.pop_many(py, n),
        };
        if let Some(item) = got {
            return Call::ready(py, item);
        }
        let bridge = bridge::current(py)?;
        let handle = crate::runtime::handle(py)?;
        let (fut, id) = bridge.get().new_future(py)?;
        spawn_fetch(handle, bridge.get().shared().clone(), id, stream, want);
        Ok(fut)
    })
    .map(Some)
}

// ----- sources -----------------------------------------------------------------

/// A task's events.
pub(crate) struct TaskEventsSource {
    pub(crate) hive: hive::Hive,
    pub(crate) principal: hive::Principal,
    pub(crate) task: hive::TaskId,
    pub(crate) after: u64,
    pub(crate) sub: Option<hive::engine::TaskSubscription>,
}

#[async_trait]
impl Source for TaskEventsSource {
    type Item = hive::TaskEvent;

    async fn fetch(&mut self, max: usize) -> Option<hive::Result<Vec<hive::TaskEvent>>> {
        if self.sub.is_none() {
            match self
                .hive
                .subscribe(&self.principal, self.task, self.after)
                .await
            {
                Ok(s) => self.sub = Some(s),
                Err(e) => return Some(Err(e)),
            }
        }
        self.sub.as_mut()?.next_batch(max).await
    }

    fn position(item: &hive::TaskEvent) -> u64 {
        item.seq
    }

    fn scanned(&self) -> u64 {
        self.sub.as_ref().map_or(self.after, |s| s.position())
    }

    fn to_py(py: Python<'_>, item: hive::TaskEvent) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, types::TaskEvent { inner: item })?.into_any())
    }
}

/// A workflow's events.
pub(crate) struct WorkflowEventsSource {
    pub(crate) hive: hive::Hive,
    pub(crate) principal: hive::Principal,
    pub(crate) workflow: hive::WorkflowId,
    pub(crate) after: u64,
    pub(crate) sub: Option<hive::engine::WorkflowSubscription>,
}

#[async_trait]
impl Source for WorkflowEventsSource {
    type Item = hive::workflow::WorkflowEvent;

    async fn fetch(&mut self, max: usize) -> Option<hive::Result<Vec<Self::Item>>> {
        if self.sub.is_none() {
            match self
                .hive
                .subscribe_workflow(&self.principal, self.workflow, self.after)
                .await
            {
                Ok(s) => self.sub = Some(s),
                Err(e) => return Some(Err(e)),
            }
        }
        self.sub.as_mut()?.next_batch(max).await
    }

    fn position(item: &Self::Item) -> u64 {
        item.seq
    }

    fn scanned(&self) -> u64 {
        self.sub.as_ref().map_or(self.after, |s| s.position())
    }

    fn to_py(py: Python<'_>, item: Self::Item) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, types::WorkflowEvent { inner: item })?.into_any())
    }
}

/// A tenant's feed, optionally only terminal events.
pub(crate) struct FeedSource {
    pub(crate) hive: hive::Hive,
    pub(crate) principal: hive::Principal,
    pub(crate) cursor: u64,
    pub(crate) terminal_only: bool,
    pub(crate) sub: Option<hive::engine::FeedSubscription>,
}

#[async_trait]
impl Source for FeedSource {
    type Item = hive::FeedEvent;

    async fn fetch(&mut self, max: usize) -> Option<hive::Result<Vec<hive::FeedEvent>>> {
        if self.sub.is_none() {
            match self.hive.feed(&self.principal, self.cursor).await {
                Ok(s) => self.sub = Some(s),
                Err(e) => return Some(Err(e)),
            }
        }
        let sub = self.sub.as_mut()?;
        loop {
            let mut batch = match sub.next_batch(max).await {
                Ok(b) => b,
                Err(e) => return Some(Err(e)),
            };
            if self.terminal_only {
                batch.retain(|e| e.event.kind.is_terminal());
            }
            if !batch.is_empty() {
                return Some(Ok(batch));
            }
        }
    }

    fn position(item: &hive::FeedEvent) -> u64 {
        item.cursor
    }

    fn scanned(&self) -> u64 {
        self.sub.as_ref().map_or(self.cursor, |s| s.cursor())
    }

    fn to_py(py: Python<'_>, item: hive::FeedEvent) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, types::FeedEvent::new(py, item)?)?.into_any())
    }
}

// ----- Python classes ----------------------------------------------------------

/// The events of one task, replayed from `after` and then live: `async for`
/// over it ends right after the terminal event.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct TaskEvents {
    pub(crate) stream: Arc<dyn PyStream>,
}

#[pymethods]
impl TaskEvents {
    fn __aiter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        next_item(py, &self.stream, Want::One)
    }

    /// The seq of the last event handed out: iterate again after it to resume.
    #[getter]
    fn position(&self) -> u64 {
        self.stream.position()
    }
}

/// The events of one workflow, replayed from `after` and then live: `async
/// for` over it ends right after the `finished` event.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct WorkflowEvents {
    pub(crate) stream: Arc<dyn PyStream>,
}

#[pymethods]
impl WorkflowEvents {
    fn __aiter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        next_item(py, &self.stream, Want::One)
    }

    /// The seq of the last event handed out.
    #[getter]
    fn position(&self) -> u64 {
        self.stream.position()
    }
}

/// A tenant's feed after a cursor: replayed, then live. Never ends by itself;
/// stop iterating when done and resume later from `cursor`.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct Feed {
    pub(crate) stream: Arc<dyn PyStream>,
}

#[pymethods]
impl Feed {
    fn __aiter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        next_item(py, &self.stream, Want::One)
    }

    /// Up to `max` events: those available now or, if none is, the next ones
    /// to arrive. Awaitable.
    #[pyo3(signature = (max = 1000))]
    fn next_batch<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyAny>> {
        next_item(py, &self.stream, Want::Many(max.max(1)))?
            .ok_or_else(|| PyStopAsyncIteration::new_err(()))
    }

    /// The cursor of the last event handed out (or skipped by
    /// `terminal_only`): pass it as `cursor` to resume.
    #[getter]
    fn cursor(&self) -> u64 {
        self.stream.position()
    }
}
