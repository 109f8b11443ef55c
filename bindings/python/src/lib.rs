//! `hive._hive`: the native half of the `hive` Python package.
//!
//! The engine runs on one tokio runtime per process (`runtime`); every call
//! returns an asyncio future that a `bridge` resolves on the caller's event
//! loop, and Python handlers run as asyncio tasks on the loop their worker was
//! started on (`worker`). Tokio threads never take the GIL.
//!
//! The Python package (`python/hive/`) adds the exception classes, the
//! `Worker` decorator API, typed workflow helpers and the exit hook.

mod bridge;
mod convert;
mod engine;
mod errors;
mod runtime;
mod spec;
mod streams;
mod types;
mod worker;

use std::time::Duration;

use pyo3::prelude::*;

/// Drains and stops everything before the interpreter finalizes (registered
/// with `atexit` by `hive/__init__.py`): closes every loop bridge (unstarted
/// handler jobs fail and are retried by policy), stops every worker (up to
/// `grace` seconds: in-flight attempts are reported), closes every engine,
/// then shuts the runtime down. Idempotent.
#[pyfunction]
#[pyo3(signature = (grace = 5.0))]
fn _shutdown(py: Python<'_>, grace: f64) {
    let grace = Duration::try_from_secs_f64(grace).unwrap_or(Duration::from_secs(5));
    bridge::close_all(py);
    worker::shutdown_all(py, grace);
    engine::close_all(py, grace);
    runtime::shut_down(py, Duration::from_secs(1));
}

#[pymodule]
fn _hive(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<engine::PyHive>()?;
    m.add_class::<types::Principal>()?;
    m.add_class::<types::Submitted>()?;
    m.add_class::<types::Ack>()?;
    m.add_class::<types::PyTaskError>()?;
    m.add_class::<types::Task>()?;
    m.add_class::<types::TaskPage>()?;
    m.add_class::<types::TaskEvent>()?;
    m.add_class::<types::FeedEvent>()?;
    m.add_class::<types::WorkflowSubmitted>()?;
    m.add_class::<types::WorkflowView>()?;
    m.add_class::<types::StepView>()?;
    m.add_class::<types::WorkflowSummary>()?;
    m.add_class::<types::WorkflowPage>()?;
    m.add_class::<types::WorkflowEvent>()?;
    m.add_class::<types::Node>()?;
    m.add_class::<types::TokenInfo>()?;
    m.add_class::<streams::TaskEvents>()?;
    m.add_class::<streams::WorkflowEvents>()?;
    m.add_class::<streams::Feed>()?;
    m.add_class::<worker::TaskContext>()?;
    m.add_class::<worker::WorkerHandle>()?;
    m.add_class::<bridge::Bridge>()?;
    m.add_class::<bridge::Call>()?;
    m.add_function(wrap_pyfunction!(_shutdown, m)?)?;
    Ok(())
}
