//! The binding's one tokio runtime: multi-threaded, created on first use,
//! shut down by [`crate::shutdown_all`] (the JVM's shutdown hook).
//!
//! Exported async functions spawn their work here and await the join handle,
//! so the engine's background tasks (workers, supervisor, workflow driver)
//! run on these threads whatever thread Kotlin polls from; the handle is
//! aborted if the Kotlin side drops the call (coroutine cancelled).

use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::{Builder, Handle, Runtime};

use crate::HiveError;

struct State {
    runtime: Option<Runtime>,
    handle: Option<Handle>,
    shut_down: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    runtime: None,
    handle: None,
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
pub fn handle() -> Result<Handle, HiveError> {
    let mut st = STATE.lock();
    if st.shut_down {
        return Err(HiveError::Shutdown(
            "Hive's runtime was shut down (the process is exiting)".into(),
        ));
    }
    if let Some(h) = &st.handle {
        return Ok(h.clone());
    }
    let runtime = Builder::new_multi_thread()
        .worker_threads(threads())
        .thread_name("hive-runtime")
        .enable_all()
        .build()
        .map_err(|e| HiveError::Internal(format!("could not start Hive's runtime: {e}")))?;
    let h = runtime.handle().clone();
    st.runtime = Some(runtime);
    st.handle = Some(h.clone());
    Ok(h)
}

/// Aborts the spawned task when the awaiting future is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `fut` on the runtime and returns its result. Dropping the returned
/// future aborts `fut`.
pub async fn run<F, T>(fut: F) -> Result<T, HiveError>
where
    F: Future<Output = Result<T, HiveError>> + Send + 'static,
    T: Send + 'static,
{
    let mut task = AbortOnDrop(handle()?.spawn(fut));
    match (&mut task.0).await {
        Ok(result) => result,
        Err(e) if e.is_cancelled() => Err(HiveError::Shutdown(
            "the call was cancelled (Hive's runtime is shutting down)".into(),
        )),
        Err(e) => Err(HiveError::Internal(format!("the call panicked: {e}"))),
    }
}

/// Spawns `fut` if the runtime is running (clean-up where nobody waits).
pub fn spawn_if_running<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let st = STATE.lock();
    if let (false, Some(h)) = (st.shut_down, &st.handle) {
        h.spawn(fut);
    }
}

/// Runs `fut` to completion on the runtime from a thread outside it, giving
/// up after `timeout`. `None` if the runtime is not running or time ran out.
pub fn block_on<F, T>(fut: F, timeout: Duration) -> Option<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let h = {
        let st = STATE.lock();
        if st.shut_down {
            return None;
        }
        st.handle.clone()?
    };
    let (tx, rx) = std::sync::mpsc::channel();
    h.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv_timeout(timeout).ok()
}

/// Stops the runtime without waiting for its tasks (they are dropped at
/// their next await). Later calls fail with `HiveError::Shutdown`.
pub fn shutdown() {
    let runtime = {
        let mut st = STATE.lock();
        st.shut_down = true;
        st.handle = None;
        st.runtime.take()
    };
    if let Some(rt) = runtime {
        rt.shutdown_background();
    }
}
