//! In-process workers whose handlers are Kotlin coroutines.
//!
//! Crossing the FFI costs more than a no-op task, so attempts cross it in
//! batches: each attempt the engine runs becomes a [`Attempt`] on the worker's
//! [`AttemptBoard`]; a dispatcher task hands the queued jobs to Kotlin in one call
//! of the foreign trait [`AttemptSink`] (`run`), and Kotlin answers many at once
//! with [`AttemptBoard::complete`]. When the engine drops an attempt (task
//! cancelled or timed out, worker stopped without grace) the job is taken off
//! the board and its id goes to [`AttemptSink::cancel`], which cancels the
//! handler's coroutine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::HiveError;
use crate::runtime::run;
use crate::types::parse_json;

/// Every worker started in this process, for [`crate::shutdown_all`].
static WORKERS: Mutex<Vec<Weak<WorkerShared>>> = Mutex::new(Vec::new());

/// Set by [`crate::shutdown_all`]: no job is handed to Kotlin any more.
static CLOSING: AtomicBool = AtomicBool::new(false);

static NEXT_JOB: AtomicU64 = AtomicU64::new(1);

/// Jobs handed to Kotlin per call, at most.
const BATCH: usize = 512;

/// One attempt for a Kotlin handler to run.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Attempt {
    /// The job's id on its board (answer with it).
    pub id: u64,
    /// The agent (which handler runs it).
    pub agent: String,
    /// The task's id.
    pub task_id: String,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The tenant that owns the task.
    pub tenant: String,
    /// The principal that submitted it.
    pub owner: String,
    /// The task's input (JSON text).
    pub input_json: String,
}

/// A job's answer.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct AttemptResult {
    /// The job.
    pub id: u64,
    /// The output (JSON text) if the handler returned.
    pub output_json: Option<String>,
    /// The failure if it threw.
    pub failure: Option<HandlerFailure>,
}

/// How a handler failed (the Kotlin layer builds it from the exception: a
/// `TaskFailure` as is, anything else with its class name as the code).
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct HandlerFailure {
    /// A stable code (`upstream_busy`, or the exception's class name).
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// No further attempts, whatever the retry policy says.
    pub non_retryable: bool,
    /// Retry no earlier than this many milliseconds from now.
    pub retry_after_ms: Option<u64>,
    /// Structured details (JSON text), if any.
    pub details_json: Option<String>,
}

impl From<HandlerFailure> for hive::TaskError {
    fn from(f: HandlerFailure) -> Self {
        let code = if f.code.trim().is_empty() {
            "handler_failed".to_owned()
        } else {
            f.code
        };
        let mut err = hive::TaskError::new(code, f.message);
        if f.non_retryable {
            err = err.non_retryable();
        }
        if let Some(ms) = f.retry_after_ms {
            err = err.retry_after(Duration::from_millis(ms));
        }
        if let Some(d) = f.details_json {
            let value = serde_json::from_str(&d).unwrap_or(serde_json::Value::String(d));
            err = err.with_details(value);
        }
        err
    }
}

/// The Kotlin side of a worker: runs the jobs it is handed, each in its own
/// coroutine, and answers through [`AttemptBoard::complete`]. Both methods must
/// return at once (they are called from the engine's threads).
#[uniffi::export(with_foreign)]
pub trait AttemptSink: Send + Sync {
    /// New jobs to run.
    fn run(&self, jobs: Vec<Attempt>);
    /// Jobs whose attempts were dropped: cancel their coroutines; their
    /// answers are no longer wanted.
    fn cancel(&self, job_ids: Vec<u64>);
}

struct Pending {
    ctx: hive::TaskContext,
    tx: oneshot::Sender<Result<serde_json::Value, hive::TaskError>>,
}

enum Signal {
    Run(Attempt),
    Cancel(u64),
}

/// A worker's jobs in flight: what Kotlin answers and asks about.
#[derive(uniffi::Object)]
pub struct AttemptBoard {
    pending: Mutex<HashMap<u64, Pending>>,
    signals: mpsc::UnboundedSender<Signal>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Signal>>>,
}

impl AttemptBoard {
    fn context(&self, id: u64) -> Result<hive::TaskContext, HiveError> {
        self.pending
            .lock()
            .get(&id)
            .map(|p| p.ctx.clone())
            .ok_or_else(|| {
                HiveError::LeaseLost(format!(
                    "job {id} is not running any more (its attempt ended or was dropped)"
                ))
            })
    }

    /// Hands the queued signals to `sink` in batches until the board is
    /// dropped.
    async fn dispatch(mut rx: mpsc::UnboundedReceiver<Signal>, sink: Arc<dyn AttemptSink>) {
        let mut buf = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut buf, BATCH).await > 0 {
            let (mut jobs, mut cancels) = (Vec::new(), Vec::new());
            for signal in buf.drain(..) {
                match signal {
                    Signal::Run(job) => jobs.push(job),
                    Signal::Cancel(id) => {
                        // A job cancelled before it was handed over never runs.
                        if let Some(i) = jobs.iter().position(|j| j.id == id) {
                            jobs.swap_remove(i);
                        } else {
                            cancels.push(id);
                        }
                    }
                }
            }
            if CLOSING.load(Ordering::SeqCst) {
                continue;
            }
            if !jobs.is_empty() {
                sink.run(jobs);
            }
            if !cancels.is_empty() {
                sink.cancel(cancels);
            }
        }
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl AttemptBoard {
    /// An empty board; pass it to `HiveEngine::start_worker`.
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(AttemptBoard {
            pending: Mutex::new(HashMap::new()),
            signals: tx,
            receiver: Mutex::new(Some(rx)),
        })
    }

    /// Answers jobs. An answer for a job that is no longer on the board (its
    /// attempt was dropped) is ignored.
    pub fn complete(&self, results: Vec<AttemptResult>) {
        let mut answers = Vec::with_capacity(results.len());
        {
            let mut pending = self.pending.lock();
            for r in results {
                if let Some(p) = pending.remove(&r.id) {
                    answers.push((p.tx, r));
                }
            }
        }
        for (tx, r) in answers {
            let answer = match (r.failure, r.output_json) {
                (Some(f), _) => Err(f.into()),
                (None, Some(out)) => serde_json::from_str(&out).map_err(|e| {
                    hive::TaskError::new(
                        "invalid_output",
                        format!("the handler's result is not JSON text: {e}"),
                    )
                    .non_retryable()
                }),
                (None, None) => Ok(serde_json::Value::Null),
            };
            let _ = tx.send(answer);
        }
    }

    /// Whether the job's attempt should stop (lease lost, cancelled, worker
    /// stopping, or no longer on the board).
    pub fn is_cancelled(&self, job_id: u64) -> bool {
        self.pending
            .lock()
            .get(&job_id)
            .is_none_or(|p| p.ctx.is_cancelled())
    }

    /// Appends a line to the job's task events (a `log` event).
    pub async fn log(&self, job_id: u64, stream: String, line: String) -> Result<(), HiveError> {
        let ctx = self.context(job_id)?;
        run(async move {
            ctx.log(&stream, &line).await?;
            Ok(())
        })
        .await
    }

    /// Sets the progress (JSON text) sent with the job's next heartbeat.
    pub fn set_progress(&self, job_id: u64, progress_json: String) -> Result<(), HiveError> {
        let ctx = self.context(job_id)?;
        ctx.set_progress(parse_json("progress", &progress_json)?);
        Ok(())
    }

    /// Heartbeats the job's attempt now; `LeaseLost` if it should stop.
    pub async fn heartbeat(
        &self,
        job_id: u64,
        progress_json: Option<String>,
    ) -> Result<(), HiveError> {
        let progress = match progress_json {
            Some(p) => Some(parse_json("progress", &p)?),
            None => None,
        };
        let ctx = self.context(job_id)?;
        run(async move {
            ctx.heartbeat(progress).await?;
            Ok(())
        })
        .await
    }
}

/// How a worker runs.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct WorkerOptions {
    /// The node's name.
    pub name: String,
    /// Attempts run at once.
    #[uniffi(default = 16)]
    pub capacity: u32,
    /// Leases claimed per round trip (default: the capacity).
    #[uniffi(default = None)]
    pub claim_batch: Option<u32>,
    /// The node's labels (tasks may require some).
    #[uniffi(default)]
    pub labels: HashMap<String, String>,
    /// A system node (runs every tenant's tasks; needs the system principal).
    #[uniffi(default = false)]
    pub system: bool,
    /// How often running attempts heartbeat (default: a third of the
    /// shortest heartbeat timeout).
    #[uniffi(default = None)]
    pub heartbeat_interval: Option<Duration>,
    /// On shutdown, how long in-flight handlers may take to finish.
    #[uniffi(default = None)]
    pub shutdown_grace: Option<Duration>,
}

/// Runs attempts of one agent through the board.
struct BoardHandler {
    board: Arc<AttemptBoard>,
}

/// Takes the job off the board (and cancels its coroutine) if the attempt
/// is dropped before it was answered.
struct CancelOnDrop<'a> {
    board: &'a AttemptBoard,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed && self.board.pending.lock().remove(&self.id).is_some() {
            let _ = self.board.signals.send(Signal::Cancel(self.id));
        }
    }
}

fn stopped() -> hive::TaskError {
    hive::TaskError::new(
        "worker_stopped",
        "the process is exiting; the handler was not called",
    )
}

#[async_trait]
impl hive::TaskHandler for BoardHandler {
    async fn run(&self, ctx: hive::TaskContext) -> Result<serde_json::Value, hive::TaskError> {
        if CLOSING.load(Ordering::SeqCst) {
            return Err(stopped());
        }
        let id = NEXT_JOB.fetch_add(1, Ordering::Relaxed);
        let job = Attempt {
            id,
            agent: ctx.spec().agent.to_string(),
            task_id: ctx.task_id().to_string(),
            attempt: ctx.attempt(),
            tenant: ctx.owner().tenant.to_string(),
            owner: ctx.owner().principal.to_string(),
            input_json: serde_json::to_string(ctx.input()).unwrap_or_else(|_| "null".into()),
        };
        let (tx, rx) = oneshot::channel();
        self.board.pending.lock().insert(id, Pending { ctx, tx });
        if self.board.signals.send(Signal::Run(job)).is_err() {
            self.board.pending.lock().remove(&id);
            return Err(stopped());
        }
        let mut guard = CancelOnDrop {
            board: &self.board,
            id,
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

struct WorkerShared {
    handle: tokio::sync::Mutex<Option<hive::WorkerHandle>>,
    node: String,
}

impl WorkerShared {
    async fn shutdown(&self, now: bool) {
        let handle = self.handle.lock().await.take();
        if let Some(h) = handle {
            if now {
                h.shutdown_now().await;
            } else {
                h.shutdown().await;
            }
        }
    }
}

/// A running worker.
#[derive(uniffi::Object)]
pub struct WorkerHandle {
    shared: Arc<WorkerShared>,
}

#[uniffi::export(async_runtime = "tokio")]
impl WorkerHandle {
    /// The id of the worker's node.
    pub fn node_id(&self) -> String {
        self.shared.node.clone()
    }

    /// Whether it is still claiming and running tasks.
    pub fn is_running(&self) -> bool {
        match self.shared.handle.try_lock() {
            Ok(h) => h.as_ref().is_some_and(|h| !h.is_finished()),
            Err(_) => true,
        }
    }

    /// Stops claiming, lets in-flight handlers finish (up to the grace
    /// period), reports them and removes the node.
    pub async fn shutdown(&self) -> Result<(), HiveError> {
        let shared = self.shared.clone();
        run(async move {
            shared.shutdown(false).await;
            Ok(())
        })
        .await
    }

    /// Stops at once: in-flight handlers are cancelled, their tasks go back
    /// to the queue.
    pub async fn shutdown_now(&self) -> Result<(), HiveError> {
        let shared = self.shared.clone();
        run(async move {
            shared.shutdown(true).await;
            Ok(())
        })
        .await
    }
}

pub(crate) async fn start(
    hive: hive::Hive,
    principal: hive::Principal,
    options: WorkerOptions,
    agents: Vec<String>,
    board: Arc<AttemptBoard>,
    sink: Arc<dyn AttemptSink>,
) -> Result<Arc<WorkerHandle>, HiveError> {
    if agents.is_empty() {
        return Err(HiveError::argument(
            "a worker needs at least one handler (an agent name)",
        ));
    }
    if options.capacity == 0 {
        return Err(HiveError::argument("capacity must be at least 1"));
    }
    let mut opts = hive::WorkerOptions::new(options.name.as_str()).capacity(options.capacity);
    if let Some(b) = options.claim_batch {
        opts.claim_batch = b;
    }
    opts.labels = options.labels.into_iter().collect();
    if let Some(hb) = options.heartbeat_interval {
        opts = opts.heartbeat_interval(hb);
    }
    if let Some(g) = options.shutdown_grace {
        opts = opts.shutdown_grace(g);
    }
    if options.system {
        opts = opts.system();
    }
    for agent in agents {
        if agent.trim().is_empty() {
            return Err(HiveError::argument("a handler's agent name is empty"));
        }
        opts = opts.handler(
            agent.as_str(),
            Arc::new(BoardHandler {
                board: board.clone(),
            }),
        );
    }
    let rx = board.receiver.lock().take().ok_or_else(|| {
        HiveError::argument("this AttemptBoard already serves a worker: make one per worker")
    })?;
    crate::runtime::handle()?.spawn(AttemptBoard::dispatch(rx, sink));
    let handle = run(async move { Ok(hive.start_worker(&principal, opts).await?) }).await?;
    let shared = Arc::new(WorkerShared {
        node: handle.node().to_string(),
        handle: tokio::sync::Mutex::new(Some(handle)),
    });
    let mut all = WORKERS.lock();
    all.retain(|w| w.strong_count() > 0);
    all.push(Arc::downgrade(&shared));
    Ok(Arc::new(WorkerHandle { shared }))
}

/// Stops every worker of the process gracefully, waiting up to `grace`;
/// afterwards no handler is called.
pub(crate) fn shutdown_all(grace: Duration) {
    let all: Vec<Arc<WorkerShared>> = WORKERS
        .lock()
        .drain(..)
        .filter_map(|w| w.upgrade())
        .collect();
    if !all.is_empty() {
        crate::runtime::block_on(
            async move {
                let stops = all.iter().map(|w| w.shutdown(false));
                futures::future::join_all(stops).await;
            },
            grace + Duration::from_millis(500),
        );
    }
    CLOSING.store(true, Ordering::SeqCst);
}
