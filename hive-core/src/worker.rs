//! In-process workers: a host registers async handlers for agent names, and Hive
//! runs matching tasks on a node the host owns, with heartbeats, logs and batched
//! reports.
//!
//! Handlers are trait objects ([`TaskHandler`]), so Python and Kotlin handlers plug
//! in through the same door as Rust ones.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{AbortHandle, Abortable, BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::{ClaimOptions, Hive, Report, ReportOutcome};
use crate::error::{Error, Result};
use crate::id::{NodeId, TaskId};
use crate::node::{NodeOwner, NodeSpec, ShareTarget};
use crate::principal::Principal;
use crate::retry::Backoff;
use crate::store::Ack;
use crate::task::{AgentRef, LeaseToken, Owner, TaskError, TaskSpec};

/// Runs tasks of one agent.
#[async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    /// Runs one attempt. `Ok` reports success with the output; `Err` reports a
    /// failure (retried per the task's policy unless non-retryable). If the lease
    /// is lost (cancelled, timed out) the future is dropped.
    async fn run(&self, ctx: TaskContext) -> std::result::Result<serde_json::Value, TaskError>;
}

/// A handler from an async closure.
pub fn handler_fn<F, Fut>(f: F) -> Arc<dyn TaskHandler>
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<serde_json::Value, TaskError>> + Send + 'static,
{
    struct FnHandler<F>(F);

    #[async_trait]
    impl<F, Fut> TaskHandler for FnHandler<F>
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<serde_json::Value, TaskError>> + Send + 'static,
    {
        async fn run(&self, ctx: TaskContext) -> std::result::Result<serde_json::Value, TaskError> {
            (self.0)(ctx).await
        }
    }

    Arc::new(FnHandler(f))
}

/// What a handler gets: the task, its lease, and ways to log and report progress.
#[derive(Clone, Debug)]
pub struct TaskContext {
    token: LeaseToken,
    owner: Owner,
    spec: Arc<TaskSpec>,
    hive: Hive,
    principal: Arc<Principal>,
    cancel: CancellationToken,
    progress: Arc<Mutex<Option<serde_json::Value>>>,
}

impl TaskContext {
    /// The task's id.
    pub fn task_id(&self) -> TaskId {
        self.token.task
    }

    /// The attempt number (1-based).
    pub fn attempt(&self) -> u32 {
        self.token.attempt
    }

    /// The lease's fencing token.
    pub fn token(&self) -> LeaseToken {
        self.token
    }

    /// The task's input.
    pub fn input(&self) -> &serde_json::Value {
        &self.spec.input
    }

    /// The task's spec.
    pub fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    /// Who submitted the task.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Appends a log line to the task's event stream.
    pub async fn log(&self, stream: &str, line: &str) -> Result<Ack> {
        self.hive
            .log(&self.principal, self.token, stream, line)
            .await
    }

    /// Sets the progress: sent with the next heartbeat and every one after it
    /// until it is set again.
    pub fn set_progress(&self, progress: serde_json::Value) {
        *self.progress.lock() = Some(progress);
    }

    /// Heartbeats now, with optional progress (which, like
    /// [`set_progress`](Self::set_progress), the periodic heartbeats then
    /// carry). `LeaseLost` means: stop.
    pub async fn heartbeat(&self, progress: Option<serde_json::Value>) -> Result<Ack> {
        if let Some(p) = &progress {
            *self.progress.lock() = Some(p.clone());
        }
        let mut out = self
            .hive
            .heartbeat(&self.principal, vec![(self.token, progress)])
            .await?;
        out.pop().unwrap_or(Err(Error::LeaseLost {
            task: self.token.task,
        }))
    }

    /// Completes when the attempt should stop (lease lost, task cancelled, worker
    /// shutting down).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether the attempt should stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// How an in-process worker node is set up.
#[derive(Clone)]
pub struct WorkerOptions {
    /// The node's name.
    pub name: String,
    /// Who owns the node (default: the registering user; `System` needs
    /// `system:admin`).
    pub owner: Option<NodeOwner>,
    /// Labels tasks may require.
    pub labels: BTreeMap<String, String>,
    /// Others the node is shared with.
    pub shared_with: Vec<ShareTarget>,
    /// Tasks run at once. Default 64.
    pub capacity: u32,
    /// At most this many tasks per claim. Default 256.
    pub claim_batch: u32,
    /// How often running tasks and the node heartbeat. Default: the engine's
    /// `node_heartbeat_interval`, and never more than a third of a task's
    /// heartbeat timeout.
    pub heartbeat_interval: Option<Duration>,
    /// How long an idle worker waits for a work notification before it claims
    /// again. Default 250ms; the builder method of the same name says what it
    /// trades.
    pub idle_poll: Duration,
    /// On shutdown, how long in-flight tasks may take to finish. Default 30s.
    pub shutdown_grace: Duration,
    handlers: HashMap<AgentRef, Arc<dyn TaskHandler>>,
}

impl std::fmt::Debug for WorkerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerOptions")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("labels", &self.labels)
            .field("capacity", &self.capacity)
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl WorkerOptions {
    /// Options for a node called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        WorkerOptions {
            name: name.into(),
            owner: None,
            labels: BTreeMap::new(),
            shared_with: Vec::new(),
            capacity: 64,
            claim_batch: 256,
            heartbeat_interval: None,
            idle_poll: Duration::from_millis(250),
            shutdown_grace: Duration::from_secs(30),
            handlers: HashMap::new(),
        }
    }

    /// Registers the handler of `agent`.
    pub fn handler(mut self, agent: impl Into<AgentRef>, handler: Arc<dyn TaskHandler>) -> Self {
        self.handlers.insert(agent.into(), handler);
        self
    }

    /// Sets the capacity.
    pub fn capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity;
        self
    }

    /// Makes it a system node (needs `system:admin`).
    pub fn system(mut self) -> Self {
        self.owner = Some(NodeOwner::System);
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Shares the node.
    pub fn share(mut self, target: ShareTarget) -> Self {
        self.shared_with.push(target);
        self
    }

    /// Sets the heartbeat interval.
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.heartbeat_interval = Some(every);
        self
    }

    /// Sets how long an idle worker waits for a work notification before it
    /// claims again (default 250 ms). Notifications wake it earlier, and so
    /// does the end of the earliest retry backoff it knows of; the poll only
    /// bounds how late it sees work whose notification was missed (another
    /// process on a backend without notifications, a dropped connection).
    /// Lower means fresher at the cost of more claims while idle. At least 1 ms.
    pub fn idle_poll(mut self, every: Duration) -> Self {
        self.idle_poll = every.max(Duration::from_millis(1));
        self
    }

    /// Sets how long in-flight tasks may take to finish on a graceful
    /// shutdown (default 30 s); those still running then are cancelled.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }
}

/// A running in-process worker.
#[derive(Debug)]
pub struct WorkerHandle {
    node: NodeId,
    principal: Arc<Principal>,
    stop: CancellationToken,
    /// Set before `stop` for a stop without the grace period.
    immediate: Arc<std::sync::atomic::AtomicBool>,
    join: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// The worker's node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The principal the worker acts as.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Stops claiming, lets in-flight tasks finish (up to `shutdown_grace`),
    /// reports them, and removes the node.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.join.await;
    }

    /// Stops at once: no new claims, in-flight handlers are cancelled now
    /// (no grace period, nothing reported for them), finished results are
    /// reported, and the node is removed, so its leases go back to the queue
    /// at once as placement lost (retried by their policies). For an
    /// interrupted host (Ctrl-C), where waiting for handlers helps no one.
    pub async fn shutdown_now(self) {
        self.immediate.store(true, Ordering::SeqCst);
        self.stop.cancel();
        let _ = self.join.await;
    }

    /// Simulates a crash: stops at once, reporting nothing and leaving the node
    /// registered. Its leases are reclaimed by the supervisor when the node is
    /// noticed Lost. For tests.
    pub fn crash(self) {
        self.join.abort();
    }

    /// Whether the worker loop has ended.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

impl Hive {
    /// Registers a node for `options` (owned by `p` unless `options.owner` says
    /// otherwise) and starts running its handlers' tasks. Needs a tokio runtime.
    pub async fn start_worker(
        &self,
        p: &Principal,
        options: WorkerOptions,
    ) -> Result<WorkerHandle> {
        if options.handlers.is_empty() {
            return Err(Error::InvalidArgument {
                message: "a worker needs at least one handler".into(),
            });
        }
        if options.claim_batch == 0 {
            return Err(Error::InvalidArgument {
                message: "claim_batch must be at least 1".into(),
            });
        }
        let owner = options.owner.clone().unwrap_or_else(|| NodeOwner::User {
            tenant: p.tenant.clone(),
            principal: p.id.clone(),
        });
        let spec = NodeSpec {
            name: options.name.clone(),
            owner,
            labels: options.labels.clone(),
            capacity: options.capacity,
            shared_with: options.shared_with.clone(),
        };
        let node = self.register_node(p, spec).await?;
        let principal = Arc::new(Principal::worker(node.tenant(), node.id));
        let stop = self.shutdown_token().child_token();
        let inflight: Inflights = Arc::default();
        // The heartbeats run on a task of their own, so a handler that blocks
        // its thread stalls neither the node's sign of life nor the other
        // attempts' leases; they stop when the loop ends (or is dropped).
        let beats_stop = CancellationToken::new();
        let beats = Heartbeats {
            hive: self.detached(),
            principal: principal.clone(),
            node: node.id,
            every: tick_every(&options, self.config().node_heartbeat_interval),
            inflight: inflight.clone(),
        };
        tokio::spawn(beats.run(beats_stop.clone()));
        let immediate = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let run = WorkerLoop {
            hive: self.detached(),
            principal: principal.clone(),
            node: node.id,
            agents: options.handlers.keys().cloned().collect(),
            options,
            stop: stop.clone(),
            immediate: immediate.clone(),
            attempts: Attempts::default(),
            inflight,
            reports: Vec::new(),
            _beats: beats_stop.drop_guard(),
        };
        let join = tokio::spawn(run.run());
        Ok(WorkerHandle {
            node: node.id,
            principal,
            stop,
            immediate,
            join,
        })
    }
}

/// What an attempt's future ends with: its task and its result (`None` when it
/// was aborted because the lease was lost).
type Finished = (
    TaskId,
    Option<std::result::Result<serde_json::Value, TaskError>>,
);

struct Inflight {
    token: LeaseToken,
    abort: AbortHandle,
    cancel: CancellationToken,
    progress: Arc<Mutex<Option<serde_json::Value>>>,
    heartbeat_every: Duration,
    last_beat: Instant,
    /// Bumped on entry to and exit from every poll of the attempt: odd while
    /// the handler is inside a poll. The heartbeat task stops beating for an
    /// attempt found inside the same poll twice (a handler blocking its
    /// thread), so that attempt loses its lease and no other does.
    polls: Arc<AtomicU64>,
    /// `polls` as the heartbeat task saw it at the last beat that was due.
    seen_polls: u64,
    /// Whether the last due beat was withheld because the handler was still
    /// inside the poll it was in one heartbeat interval before.
    blocked: bool,
}

/// The in-flight attempts, shared by the loop and the heartbeat task.
type Inflights = Arc<Mutex<FxHashMap<TaskId, Inflight>>>;

fn tick_every(options: &WorkerOptions, node_heartbeat_interval: Duration) -> Duration {
    options
        .heartbeat_interval
        .unwrap_or(node_heartbeat_interval)
        .max(Duration::from_millis(10))
}

/// A worker's running attempts and the results they finished with that the
/// loop has not handled yet.
#[derive(Default)]
struct Attempts {
    running: FuturesUnordered<BoxFuture<'static, Finished>>,
    finished: Vec<Finished>,
}

impl Attempts {
    /// Awaits `fut` while polling the attempts: the loop's own store calls never
    /// starve a handler (which may hold a resource the call needs, such as the
    /// writer of a one-writer store).
    async fn drive<F: std::future::Future>(&mut self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        loop {
            tokio::select! {
                biased;
                out = &mut fut => return out,
                Some(done) = self.running.next(), if !self.running.is_empty() => {
                    self.finished.push(done);
                }
            }
        }
    }
}

struct WorkerLoop {
    hive: Hive,
    principal: Arc<Principal>,
    node: NodeId,
    agents: Vec<AgentRef>,
    options: WorkerOptions,
    stop: CancellationToken,
    /// A stop without the grace period ([`WorkerHandle::shutdown_now`]).
    immediate: Arc<std::sync::atomic::AtomicBool>,
    /// The attempts' futures, polled by the worker loop itself (no task spawn
    /// and no cross-thread wake-up per attempt) — also while the loop awaits the
    /// store, so a handler that awaits the store too (a log line) never waits
    /// for the loop. A handler that does blocking work must move it to
    /// `tokio::task::spawn_blocking`.
    attempts: Attempts,
    inflight: Inflights,
    reports: Vec<Report>,
    /// Stops the heartbeat task when the loop ends or is dropped (a crash).
    _beats: tokio_util::sync::DropGuard,
}

impl WorkerLoop {
    fn tick_every(&self) -> Duration {
        tick_every(&self.options, self.hive.config().node_heartbeat_interval)
    }

    fn running(&self) -> usize {
        self.inflight.lock().len()
    }

    async fn run(mut self) {
        let mut epoch = 0;
        let mut next_due = None;
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(2));
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            self.collect_ready();
            self.flush_reports().await;
            let free = self.options.capacity.saturating_sub(self.running() as u32);
            let mut full_batch = false;
            if free > 0 {
                let want = free.min(self.options.claim_batch);
                let opts = ClaimOptions {
                    max: want,
                    agents: self.agents.clone(),
                    start: true,
                };
                let claim = self
                    .attempts
                    .drive(self.hive.claim(&self.principal, self.node, &opts))
                    .await;
                match claim {
                    Ok(res) => {
                        backoff.reset();
                        epoch = res.epoch;
                        next_due = res.next_due;
                        full_batch = res.tasks.len() as u32 == want;
                        let (started, unstarted): (Vec<_>, Vec<_>) =
                            res.tasks.into_iter().partition(|c| c.started);
                        for claimed in started {
                            self.spawn(claimed);
                        }
                        if !unstarted.is_empty() {
                            self.start_and_spawn(unstarted).await;
                        }
                    }
                    Err(Error::NotFound { .. }) => {
                        tracing::warn!(node = %self.node, "worker node was removed; stopping");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(node = %self.node, error = %e, "claim failed; backing off");
                        let delay = backoff.next_delay();
                        let stopped = self
                            .attempts
                            .drive(async {
                                tokio::select! {
                                    _ = self.stop.cancelled() => true,
                                    _ = tokio::time::sleep(delay) => false,
                                }
                            })
                            .await;
                        if stopped {
                            break;
                        }
                        continue;
                    }
                }
            }
            if full_batch && self.running() < self.options.capacity as usize {
                // More work is likely waiting; claim again before sleeping.
                self.collect_ready();
                continue;
            }
            // Attempts that ended while the loop awaited the store: report them
            // before sleeping.
            self.collect_ready();
            if !self.reports.is_empty() {
                continue;
            }
            let can_claim = self.running() < self.options.capacity as usize;
            let store = self.hive.store().clone();
            // Sleep until work is announced, the idle poll passes, or the
            // earliest retry in its backoff becomes due, whichever is first.
            let idle_poll = match next_due {
                Some(at) => self
                    .options
                    .idle_poll
                    .min(at.since(self.hive.clock().now()))
                    .max(Duration::from_millis(1)),
                None => self.options.idle_poll,
            };
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                done = self.attempts.running.next(), if !self.attempts.running.is_empty() => {
                    if let Some(done) = done {
                        self.finish(done);
                    }
                    self.collect_ready();
                }
                _ = store.wait_for_work(epoch, idle_poll), if can_claim => {}
            }
        }
        self.drain().await;
    }

    /// Starts leases the claim did not start itself; spawns those that started.
    async fn start_and_spawn(&mut self, claimed: Vec<crate::store::ClaimedTask>) {
        let tokens: Vec<LeaseToken> = claimed.iter().map(|c| c.token).collect();
        let started = self
            .attempts
            .drive(self.hive.start(&self.principal, &tokens))
            .await;
        match started {
            Ok(answers) => {
                for (c, answer) in claimed.into_iter().zip(answers) {
                    match answer {
                        Ok(_) => self.spawn(c),
                        Err(e) => {
                            tracing::warn!(task = %c.token.task, error = %e, "could not start a claimed task")
                        }
                    }
                }
            }
            // Unstarted leases end by their schedule-to-start deadline.
            Err(e) => tracing::warn!(error = %e, "starting claimed tasks failed"),
        }
    }

    fn spawn(&mut self, claimed: crate::store::ClaimedTask) {
        let Some(handler) = self.options.handlers.get(&claimed.spec.agent).cloned() else {
            // The store only hands out our agents; report rather than hold the lease.
            let error = TaskError::new(
                "no_handler",
                format!("no handler for agent {}", claimed.spec.agent),
            );
            self.reports.push(Report {
                token: claimed.token,
                outcome: ReportOutcome::Failure { error },
            });
            return;
        };
        // A plain token per attempt (a child token would lock the parent on every
        // task); the loop cancels in-flight tokens itself when it stops.
        let cancel = CancellationToken::new();
        let progress = Arc::new(Mutex::new(None));
        let hb_timeout = claimed.spec.timeouts.heartbeat;
        let start_to_close = claimed.spec.timeouts.start_to_close;
        let task = claimed.token.task;
        let ctx = TaskContext {
            token: claimed.token,
            owner: claimed.owner,
            spec: claimed.spec,
            hive: self.hive.clone(),
            principal: self.principal.clone(),
            cancel: cancel.clone(),
            progress: progress.clone(),
        };
        let (abort, registration) = AbortHandle::new_pair();
        let polls = Arc::new(AtomicU64::new(0));
        let mut attempt = async move {
            let attempt = std::panic::AssertUnwindSafe(tokio::time::timeout(
                start_to_close,
                handler.run(ctx),
            ))
            .catch_unwind();
            let result = match Abortable::new(attempt, registration).await {
                Err(_aborted) => None,
                Ok(Err(panic)) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Some(Err(TaskError::new(
                        "panic",
                        format!("handler panicked: {msg}"),
                    )))
                }
                // Past start-to-close the supervisor ends the attempt.
                Ok(Ok(Err(_elapsed))) => Some(Err(TaskError::new(
                    "timeout",
                    "start_to_close timeout expired",
                ))),
                Ok(Ok(Ok(result))) => Some(result),
            };
            (task, result)
        }
        .boxed();
        let marks = polls.clone();
        self.attempts
            .running
            .push(Box::pin(futures::future::poll_fn(move |cx| {
                marks.fetch_add(1, Ordering::Relaxed);
                let out = attempt.as_mut().poll(cx);
                marks.fetch_add(1, Ordering::Relaxed);
                out
            })));
        self.inflight.lock().insert(
            task,
            Inflight {
                token: claimed.token,
                abort,
                cancel,
                progress,
                heartbeat_every: (hb_timeout / 3).min(self.tick_every()),
                last_beat: Instant::now(),
                polls,
                seen_polls: 0,
                blocked: false,
            },
        );
    }

    fn collect_ready(&mut self) {
        for done in std::mem::take(&mut self.attempts.finished) {
            self.finish(done);
        }
        while let Some(Some(done)) = self.attempts.running.next().now_or_never() {
            self.finish(done);
        }
    }

    fn finish(&mut self, (task, result): Finished) {
        let Some(inflight) = self.inflight.lock().remove(&task) else {
            return;
        };
        // Aborted because the lease was lost: nothing to report.
        let Some(result) = result else { return };
        let outcome = fit_to_limits(
            &self.hive.config().limits,
            match result {
                Ok(output) => ReportOutcome::Success { output },
                Err(error) => ReportOutcome::Failure { error },
            },
        );
        self.reports.push(Report {
            token: inflight.token,
            outcome,
        });
    }

    /// Reports until every report has an answer (retrying while the backend is
    /// unavailable), unless the worker is crashing.
    async fn flush_reports(&mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(2));
        while !self.reports.is_empty() {
            let batch = std::mem::take(&mut self.reports);
            let tasks: Vec<TaskId> = batch.iter().map(|r| r.token.task).collect();
            let answer = self
                .attempts
                .drive(self.hive.report(&self.principal, batch.clone()))
                .await;
            match answer {
                Ok(answers) => {
                    for (task, answer) in tasks.into_iter().zip(answers) {
                        if let Err(e) = answer {
                            tracing::debug!(%task, error = %e, "report not accepted");
                        }
                    }
                }
                Err(e) if e.is_temporary() => {
                    tracing::warn!(error = %e, "report failed; retrying");
                    self.reports = batch;
                    let delay = backoff.next_delay();
                    self.attempts.drive(tokio::time::sleep(delay)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "reports refused; dropping them (the supervisor will end the tasks)");
                }
            }
        }
    }

    /// Graceful stop: wait for in-flight tasks (up to the grace period), report
    /// them, remove the node.
    async fn drain(mut self) {
        // Keep heartbeating while in-flight attempts finish: the node must not be
        // declared Lost mid-drain, and a lease lost meanwhile stops its attempt.
        let grace = if self.immediate.load(Ordering::SeqCst) {
            Duration::ZERO
        } else {
            self.options.shutdown_grace
        };
        let deadline = Instant::now() + grace;
        while !self.attempts.running.is_empty() || !self.attempts.finished.is_empty() {
            self.collect_ready();
            if self.attempts.running.is_empty() {
                break;
            }
            tokio::select! {
                done = self.attempts.running.next() => {
                    if let Some(done) = done {
                        self.finish(done);
                    }
                    self.collect_ready();
                    self.flush_reports().await;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    for f in self.inflight.lock().values() {
                        f.cancel.cancel();
                        f.abort.abort();
                    }
                    while let Some(done) = self.attempts.running.next().await {
                        self.finish(done);
                    }
                }
            }
        }
        self.collect_ready();
        self.flush_reports().await;
        self.collect_ready();
        self.flush_reports().await;
        if let Err(e) = self.hive.remove_node(&self.principal, self.node).await {
            tracing::debug!(node = %self.node, error = %e, "removing the node on shutdown failed");
        }
    }
}

/// What an in-process handler returned, made to fit the engine's limits: an
/// output over the limit becomes a non-retryable `output_too_large` failure
/// (the handler would return it again), an error code or message over its
/// limit is shortened.
fn fit_to_limits(limits: &crate::engine::ValueLimits, outcome: ReportOutcome) -> ReportOutcome {
    match outcome {
        ReportOutcome::Success { output } => {
            let size = crate::engine::json_size(&output);
            if size > limits.max_output_bytes {
                ReportOutcome::Failure {
                    error: TaskError::new(
                        "output_too_large",
                        format!(
                            "the handler's output is {size} bytes; at most {} allowed \
                             (HiveConfig::limits.max_output_bytes)",
                            limits.max_output_bytes
                        ),
                    )
                    .non_retryable(),
                }
            } else {
                ReportOutcome::Success { output }
            }
        }
        ReportOutcome::Failure { mut error } => {
            truncate_utf8(&mut error.code, 128, "");
            truncate_utf8(
                &mut error.message,
                limits.max_error_message_bytes,
                " … (truncated)",
            );
            ReportOutcome::Failure { error }
        }
    }
}

/// Shortens `s` to at most `max` bytes, on a character boundary, ending with
/// `marker` when it was cut (the marker counts toward `max`).
fn truncate_utf8(s: &mut String, max: usize, marker: &str) {
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(marker.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    if marker.len() <= max {
        s.push_str(marker);
    }
}

/// The node's and the in-flight attempts' heartbeats, on a task of their own.
struct Heartbeats {
    hive: Hive,
    principal: Arc<Principal>,
    node: NodeId,
    every: Duration,
    inflight: Inflights,
}

impl Heartbeats {
    async fn run(self, stop: CancellationToken) {
        let mut next_node_beat = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_node_beat {
                next_node_beat = now + self.every;
                if let Err(e) = self.hive.node_heartbeat(&self.principal, self.node).await {
                    tracing::warn!(node = %self.node, error = %e, "node heartbeat failed");
                }
            }
            self.beat_leases().await;
            // Sleep until the next beat that is due: the node's, or an
            // attempt's whose heartbeat timeout asks for a shorter interval.
            let wake = {
                let inflight = self.inflight.lock();
                inflight
                    .values()
                    .map(|f| f.last_beat + f.heartbeat_every)
                    .fold(next_node_beat, std::cmp::Ord::min)
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(wake.max(Instant::now() + Duration::from_millis(5))) => {}
            }
        }
    }

    /// Beats for the leases that are due, except an attempt found inside the
    /// same poll as at its previous due beat, one heartbeat interval before:
    /// its handler blocks its thread, so it loses its lease (and only it).
    async fn beat_leases(&self) {
        let now = Instant::now();
        let limits = &self.hive.config().limits;
        let beats: Vec<(LeaseToken, Option<serde_json::Value>)> = {
            let mut inflight = self.inflight.lock();
            inflight
                .values_mut()
                .filter_map(|f| {
                    if now.duration_since(f.last_beat) < f.heartbeat_every {
                        return None;
                    }
                    f.last_beat = now;
                    let polls = f.polls.load(Ordering::Relaxed);
                    if polls % 2 == 1 && polls == f.seen_polls {
                        if !f.blocked {
                            f.blocked = true;
                            tracing::warn!(
                                task = %f.token.task,
                                "handler has not returned from one poll for a heartbeat \
                                 interval (blocking its thread?); its lease is not renewed"
                            );
                        }
                        return None;
                    }
                    f.seen_polls = polls;
                    f.blocked = false;
                    // The handler's latest progress rides with every beat:
                    // the stored heartbeat (coalesced) always shows it.
                    let progress = {
                        let mut slot = f.progress.lock();
                        match slot.as_ref().map(|p| limits.check_progress(Some(p))) {
                            Some(Err(e)) => {
                                tracing::warn!(task = %f.token.task, error = %e, "progress dropped");
                                *slot = None;
                                None
                            }
                            Some(Ok(())) => slot.clone(),
                            None => None,
                        }
                    };
                    Some((f.token, progress))
                })
                .collect()
        };
        if beats.is_empty() {
            return;
        }
        let tasks: Vec<TaskId> = beats.iter().map(|(t, _)| t.task).collect();
        match self.hive.heartbeat(&self.principal, beats).await {
            Ok(answers) => {
                for (task, answer) in tasks.into_iter().zip(answers) {
                    if let Err(e) = answer
                        && !e.is_temporary()
                    {
                        tracing::debug!(%task, error = %e, "lease gone; stopping the attempt");
                        if let Some(f) = self.inflight.lock().get(&task) {
                            f.cancel.cancel();
                            f.abort.abort();
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}
