//! The one tokio runtime of the process: created on first use, refused in a
//! child process forked after it started (its threads did not survive the
//! fork), and shut down by the `atexit` hook before the interpreter
//! finalizes.
//!
//! No task on this runtime ever touches Python: results go back to the event
//! loop through [`crate::bridge`], which hands them to the loop's own thread.

use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::{Builder, Handle, Runtime};

struct State {
    runtime: Option<Runtime>,
    handle: Option<Handle>,
    pid: u32,
    shut_down: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    runtime: None,
    handle: None,
    pid: 0,
    shut_down: false,
});

/// Worker threads: `HIVE_RUNTIME_THREADS`, else one per core (at least 2).
fn threads() -> usize {
    std::env::var("HIVE_RUNTIME_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .max(2)
        })
}

/// The runtime's handle, starting the runtime on first use.
pub(crate) fn handle(py: Python<'_>) -> PyResult<Handle> {
    let mut st = STATE.lock();
    if st.shut_down {
        return Err(crate::errors::shutdown(
            py,
            "Hive's runtime was shut down (the interpreter is exiting)",
        ));
    }
    let pid = std::process::id();
    if let Some(handle) = &st.handle {
        if st.pid != pid {
            return Err(PyRuntimeError::new_err(
                "Hive cannot be used in a process forked after Hive started: the runtime's \
                 threads do not survive fork(). Open Hive in the child process instead \
                 (multiprocessing's 'spawn' or 'forkserver' start methods do this).",
            ));
        }
        return Ok(handle.clone());
    }
    let runtime = Builder::new_multi_thread()
        .worker_threads(threads())
        .thread_name("hive-runtime")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("could not start Hive's runtime: {e}")))?;
    let handle = runtime.handle().clone();
    st.runtime = Some(runtime);
    st.handle = Some(handle.clone());
    st.pid = pid;
    Ok(handle)
}

/// Spawns `fut` on the runtime if it is running (for clean-up work started
/// where no error can be raised).
pub(crate) fn spawn_if_running<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let handle = {
        let st = STATE.lock();
        if st.shut_down || st.pid != std::process::id() {
            None
        } else {
            st.handle.clone()
        }
    };
    if let Some(h) = handle {
        h.spawn(fut);
    }
}

/// Runs `fut` to completion on the runtime from a thread outside it, with the
/// interpreter released (for the exit hook). `None` if the runtime is not
/// running in this process.
pub(crate) fn block_on<F>(py: Python<'_>, fut: F) -> Option<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let handle = {
        let st = STATE.lock();
        if st.shut_down || st.pid != std::process::id() {
            return None;
        }
        st.handle.clone()?
    };
    Some(py.detach(|| handle.block_on(fut)))
}

/// Stops the runtime: its tasks are dropped, and it waits up to `timeout` for
/// its threads. Later calls into Hive raise `hive.Shutdown`.
pub(crate) fn shut_down(py: Python<'_>, timeout: Duration) {
    let runtime = {
        let mut st = STATE.lock();
        st.shut_down = true;
        st.handle = None;
        if st.pid != std::process::id() {
            // A forked child: the runtime's threads are not ours. Leak it.
            std::mem::forget(st.runtime.take());
            None
        } else {
            st.runtime.take()
        }
    };
    if let Some(rt) = runtime {
        py.detach(move || rt.shutdown_timeout(timeout));
    }
}
