//! The load phase, bounded by `--duration`: the `tasks`, `streams` and
//! `polling` checks (and `restart` when asked for), with the `workflow`
//! check running alongside.
//!
//! - `tasks`: N tasks over the tenants and the dogfood agents — retries
//!   (`dogfood.flaky` under a retry policy), failures (`dogfood.fail`),
//!   cancellations (running `dogfood.slow` tasks cancelled by their owner),
//!   timeouts (`dogfood.slow` with a 1 s start-to-close timeout) — each must
//!   end in the state its agent implies, with the attempts and the output or
//!   error that go with it.
//! - `streams`: every task's `/api/tasks/{id}/events` read twice to `end`:
//!   once in one go, once cut after its first events and resumed with
//!   `Last-Event-ID`; both reads must verify (seq gapless from 1, exactly one
//!   terminal event, last, then `end` naming it) and see the same history,
//!   whose terminal event matches the task's final state.
//! - `polling`: `GET /api/tasks/{id}` round-robin over the tasks while they
//!   run and after — status, `ETag` = `W/"<id>-<last_seq>"`,
//!   `Cache-Control: no-cache`, `last_seq` never going back, a terminal state
//!   never left — with latency percentiles, then `If-None-Match` → `304` on
//!   ended tasks (and a stale tag → `200`).
//! - `restart`: the command runs once the first slow task runs (before the
//!   cancellations); the target must come back ready, streams cut by it must
//!   resume without a gap or a repeat, and every task must still end as
//!   expected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Ctx, Setup, ms_since};
use crate::Restart;
use crate::client::Client;
use crate::error::{DogfoodError, Result};
use crate::report::CheckResult;
use crate::sse::{self, FollowPlan, Followed, SeqVerifier, StreamKind};
use crate::worker::FAIL_CODE;

/// What a task of the run is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `dogfood.ok`: succeeds on its first attempt, echoing its input.
    Ok,
    /// `dogfood.flaky` with retries: succeeds on its second attempt.
    Flaky,
    /// `dogfood.fail`: fails at once (non-retryable), retries allowed.
    Fail,
    /// `dogfood.slow`, cancelled by its owner once it runs.
    SlowCancel,
    /// `dogfood.slow` with a 1 s start-to-close timeout: times out.
    SlowTimeout,
}

impl Kind {
    /// The agent it runs.
    pub fn agent(self) -> &'static str {
        match self {
            Kind::Ok => "dogfood.ok",
            Kind::Flaky => "dogfood.flaky",
            Kind::Fail => "dogfood.fail",
            Kind::SlowCancel | Kind::SlowTimeout => "dogfood.slow",
        }
    }

    /// Its short name (in inputs and figures).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::Flaky => "flaky",
            Kind::Fail => "fail",
            Kind::SlowCancel => "cancel",
            Kind::SlowTimeout => "timeout",
        }
    }

    /// The state it must end in.
    pub fn expected_state(self) -> &'static str {
        match self {
            Kind::Ok | Kind::Flaky => "succeeded",
            Kind::Fail => "failed",
            Kind::SlowCancel => "cancelled",
            Kind::SlowTimeout => "timed_out",
        }
    }

    /// Reports the worker sends for one such task.
    pub fn reports(self) -> u64 {
        match self {
            Kind::Ok | Kind::Fail => 1,
            Kind::Flaky => 2,
            Kind::SlowCancel | Kind::SlowTimeout => 0,
        }
    }
}

/// The mix of `n` tasks: one of each kind first, then a repeating pattern
/// (half of them `ok`).
pub fn plan(n: usize) -> Vec<Kind> {
    const FIRST: [Kind; 5] = [
        Kind::Ok,
        Kind::Flaky,
        Kind::Fail,
        Kind::SlowCancel,
        Kind::SlowTimeout,
    ];
    const PATTERN: [Kind; 10] = [
        Kind::Ok,
        Kind::Flaky,
        Kind::Ok,
        Kind::Fail,
        Kind::Ok,
        Kind::SlowCancel,
        Kind::Ok,
        Kind::Flaky,
        Kind::SlowTimeout,
        Kind::Ok,
    ];
    (0..n)
        .map(|i| {
            if i < FIRST.len() {
                FIRST[i]
            } else {
                PATTERN[(i - FIRST.len()) % PATTERN.len()]
            }
        })
        .collect()
}

/// One task of the run.
#[derive(Clone, Debug)]
pub struct RunTask {
    /// Its index in the plan.
    pub i: usize,
    /// Its tenant (index into the setup's tenants).
    pub tenant: usize,
    /// What it is for.
    pub kind: Kind,
    /// Its input.
    pub input: Value,
    /// Its id, once submitted.
    pub id: String,
    /// The token of its owner.
    pub token: String,
    /// Its tenant's name.
    pub tenant_name: String,
}

/// What the load phase found.
#[derive(Debug)]
pub struct LoadOutcome {
    /// `tasks`.
    pub tasks: CheckResult,
    /// `workflow`.
    pub workflow: CheckResult,
    /// `streams`.
    pub streams: CheckResult,
    /// `polling`.
    pub polling: CheckResult,
    /// `restart`, when asked for.
    pub restart: Option<CheckResult>,
    /// The submitted tasks.
    pub tasks_run: Vec<RunTask>,
    /// Reports the workers must have had acked (tasks and workflow steps).
    pub expected_reports: u64,
}

fn spec(ctx: &Ctx, kind: Kind, input: &Value) -> Value {
    let mut s = json!({
        "agent": kind.agent(),
        "input": input,
        "labels": ctx.labels(),
    });
    match kind {
        Kind::Ok => {}
        Kind::Flaky | Kind::Fail => {
            s["retry"] = json!({"max_attempts": 3, "initial_interval": "200ms", "jitter": 0.0});
        }
        Kind::SlowCancel => s["retry"] = json!({"max_attempts": 1}),
        Kind::SlowTimeout => {
            s["retry"] = json!({"max_attempts": 1});
            s["timeouts"] = json!({"start_to_close": "1s"});
        }
    }
    s
}

/// Submits the run's tasks: per tenant, the first half as one batch, the
/// rest one by one, each with an idempotency key.
async fn submit(ctx: &Ctx, setup: &Setup) -> (Vec<RunTask>, Vec<String>) {
    let kinds = plan(ctx.opts.tasks);
    let n_tenants = setup.tenants.len();
    let mut per_tenant: Vec<Vec<RunTask>> = vec![Vec::new(); n_tenants];
    let slow_secs = ctx.opts.duration.as_secs_f64().max(5.0);
    for (i, kind) in kinds.into_iter().enumerate() {
        let t = i % n_tenants;
        let mut input = json!({"run": ctx.run_id, "i": i, "kind": kind.name()});
        match kind {
            Kind::SlowCancel => input["seconds"] = json!(slow_secs),
            Kind::SlowTimeout => input["seconds"] = json!(slow_secs.min(30.0)),
            _ => {}
        }
        per_tenant[t].push(RunTask {
            i,
            tenant: t,
            kind,
            input,
            id: String::new(),
            token: setup.tenants[t].user_token.clone(),
            tenant_name: setup.tenants[t].name.clone(),
        });
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for tasks in per_tenant {
        if tasks.is_empty() {
            continue;
        }
        let token = tasks[0].token.clone();
        let half = tasks.len() / 2;
        let (batch, single) = tasks.split_at(half);
        if !batch.is_empty() {
            let specs: Vec<Value> = batch.iter().map(|t| spec(ctx, t.kind, &t.input)).collect();
            let key = format!("dogfood-{}-{}-batch", ctx.run_id, batch[0].tenant);
            let answer = ctx
                .client
                .post("/api/tasks", &token, json!({ "tasks": specs }))
                .header("idempotency-key", key)
                .send()
                .await
                .and_then(|a| a.expect(&[201]))
                .and_then(|a| {
                    let v = a.json()?;
                    let ids: Vec<String> = v["tasks"]
                        .as_array()
                        .map(|ts| {
                            ts.iter()
                                .filter(|t| {
                                    t["created"] == true && t["last_seq"].as_u64() >= Some(1)
                                })
                                .filter_map(|t| t["id"].as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    if ids.len() != specs.len() {
                        return Err(a.bad(format!(
                            "a batch of {} new specs answered {} created tasks: {v}",
                            specs.len(),
                            ids.len()
                        )));
                    }
                    Ok(ids)
                });
            match answer {
                Ok(ids) => {
                    for (t, id) in batch.iter().zip(ids) {
                        out.push(RunTask { id, ..t.clone() });
                    }
                }
                Err(e) => errors.push(format!("submitting a batch: {e}")),
            }
        }
        let singles =
            futures::stream::iter(single.iter().cloned())
                .map(|t| async move {
                    let key = format!("dogfood-{}-{}", ctx.run_id, t.i);
                    let answer = ctx
                    .client
                    .post("/api/tasks", &t.token, spec(ctx, t.kind, &t.input))
                    .header("idempotency-key", key)
                    .send()
                    .await
                    .and_then(|a| a.expect(&[201]))
                    .and_then(|a| {
                        let v = a.json()?;
                        match (v["id"].as_str(), v["created"].as_bool(), v["last_seq"].as_u64()) {
                            (Some(id), Some(true), Some(seq)) if seq >= 1 => Ok(id.to_owned()),
                            _ => Err(a.bad(format!(
                                "a new task answers {{id, created: true, last_seq ≥ 1}}, got {v}"
                            ))),
                        }
                    });
                    (t, answer)
                })
                .buffer_unordered(8)
                .collect::<Vec<_>>()
                .await;
        for (t, answer) in singles {
            match answer {
                Ok(id) => out.push(RunTask { id, ..t }),
                Err(e) => errors.push(format!("submitting task #{}: {e}", t.i)),
            }
        }
    }
    out.sort_by_key(|t| t.i);
    (out, errors)
}

/// Long-polls a task until `done` holds for its snapshot or it ended.
async fn wait_task(
    client: &Client,
    token: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
    deadline: tokio::time::Instant,
) -> Result<Value> {
    let mut after = 0u64;
    let started = Instant::now();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(DogfoodError::Timeout {
                what: format!("task {id} (last seq {after})"),
                after: started.elapsed(),
            });
        }
        let wait = left
            .min(Duration::from_secs(20))
            .max(Duration::from_millis(100));
        let a = client
            .get(
                format!(
                    "/api/tasks/{id}?after_seq={after}&wait={}ms",
                    wait.as_millis()
                ),
                token,
            )
            .timeout(wait + Duration::from_secs(30))
            .send()
            .await?
            .expect(&[200])?;
        let snap = a.json()?;
        let state = snap["state"].as_str().unwrap_or("");
        if done(&snap) || sse::TERMINAL_TYPES.contains(&state) {
            return Ok(snap);
        }
        let seq = snap["last_seq"]
            .as_u64()
            .ok_or_else(|| a.bad(format!("no last_seq in {snap}")))?;
        if seq < after {
            return Err(a.bad(format!("last_seq went back from {after} to {seq}")));
        }
        after = seq;
    }
}

/// Whether the final snapshot is what `task`'s kind implies; `Err` says how not.
fn judge(task: &RunTask, snap: &Value, restarted: bool) -> std::result::Result<(), String> {
    let state = snap["state"].as_str().unwrap_or("?");
    let attempt = snap["attempt"].as_u64().unwrap_or(0);
    let want = task.kind.expected_state();
    let what = format!(
        "task {} (#{} {} of {})",
        task.id,
        task.i,
        task.kind.name(),
        task.tenant_name
    );
    if state != want {
        return Err(format!(
            "{what}: expected {want}, got {state} after {attempt} attempt(s) (error {})",
            snap.get("error").unwrap_or(&Value::Null)
        ));
    }
    if snap["id"] != task.id.as_str() || snap["tenant"] != task.tenant_name.as_str() {
        return Err(format!(
            "{what}: the snapshot names another task or tenant: {snap}"
        ));
    }
    // A restart may cost an attempt (a lease lost while the target was down).
    let attempts_ok = |want: u64| {
        if restarted {
            attempt >= want
        } else {
            attempt == want
        }
    };
    match task.kind {
        Kind::Ok => {
            if !attempts_ok(1) || snap["output"] != json!({"echo": task.input}) {
                return Err(format!(
                    "{what}: expected 1 attempt and the output {{echo: input}}, got {attempt} and {}",
                    snap.get("output").unwrap_or(&Value::Null)
                ));
            }
        }
        Kind::Flaky => {
            if !attempts_ok(2)
                || snap["output"]["echo"] != task.input
                || snap["output"]["attempt"].as_u64() != Some(attempt)
            {
                return Err(format!(
                    "{what}: expected a retry and success on attempt 2, got attempt {attempt} and output {}",
                    snap.get("output").unwrap_or(&Value::Null)
                ));
            }
        }
        Kind::Fail => {
            if !attempts_ok(1) || snap["error"]["code"] != FAIL_CODE {
                return Err(format!(
                    "{what}: a non-retryable failure ends the task on attempt 1 with code {FAIL_CODE}, got attempt {attempt} and error {}",
                    snap.get("error").unwrap_or(&Value::Null)
                ));
            }
        }
        Kind::SlowCancel => {}
        Kind::SlowTimeout => {
            if let Some(code) = snap["error"]["code"].as_str()
                && code != "timeout"
            {
                return Err(format!(
                    "{what}: timed out with the error code {code:?} instead of \"timeout\""
                ));
            }
        }
    }
    Ok(())
}

/// Runs the command or hook; `Ok(exit code)` when it succeeded.
async fn restart(restart: &Restart, deadline: tokio::time::Instant) -> Result<i32> {
    match restart {
        Restart::Command(cmd) => {
            let child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .status();
            match tokio::time::timeout_at(deadline, child).await {
                Err(_) => Err(DogfoodError::Restart {
                    command: cmd.clone(),
                    reason: "did not finish before the deadline".into(),
                }),
                Ok(Err(e)) => Err(DogfoodError::Restart {
                    command: cmd.clone(),
                    reason: format!("cannot run it: {e}"),
                }),
                Ok(Ok(status)) if status.success() => Ok(0),
                Ok(Ok(status)) => Err(DogfoodError::Restart {
                    command: cmd.clone(),
                    reason: format!("it failed ({status})"),
                }),
            }
        }
        Restart::Hook(hook) => match tokio::time::timeout_at(deadline, hook()).await {
            Err(_) => Err(DogfoodError::Restart {
                command: "<hook>".into(),
                reason: "did not finish before the deadline".into(),
            }),
            Ok(Err(e)) => Err(DogfoodError::Restart {
                command: "<hook>".into(),
                reason: e,
            }),
            Ok(Ok(())) => Ok(0),
        },
    }
}

/// Waits for `/readyz` to answer 200; how long it took.
async fn wait_ready(client: &Client, deadline: tokio::time::Instant) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let a = client
            .call(reqwest::Method::GET, "/readyz", None)
            .retry_window(Duration::ZERO)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if matches!(&a, Ok(a) if a.status == 200) {
            return Ok(started.elapsed());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(DogfoodError::Timeout {
                what: "/readyz after the restart".into(),
                after: started.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The restart's outcome, for its check.
#[derive(Debug, Default)]
struct RestartRun {
    result: Option<Result<(i32, Duration, Duration)>>,
}

/// What the poller saw.
#[derive(Debug, Default)]
struct Polls {
    latencies_ms: Vec<f64>,
    breaches: Vec<String>,
    breach_count: u64,
}

/// Polls the tasks round-robin until `polls` were made or the deadline.
async fn poller(
    client: Client,
    targets: Arc<Vec<(String, String)>>,
    polls: usize,
    deadline: tokio::time::Instant,
) -> Polls {
    let next = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<HashMap<String, (u64, String)>>> = Arc::default();
    let out: Arc<Mutex<Polls>> = Arc::default();
    let mut set = JoinSet::new();
    for _ in 0..2 {
        let (client, targets, next, seen, out) = (
            client.clone(),
            targets.clone(),
            next.clone(),
            seen.clone(),
            out.clone(),
        );
        set.spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= polls || targets.is_empty() || tokio::time::Instant::now() >= deadline {
                    return;
                }
                let (id, token) = &targets[k % targets.len()];
                let verdict = poll_once(&client, id, token, &seen).await;
                let Ok(mut o) = out.lock() else { return };
                match verdict {
                    Ok(ms) => o.latencies_ms.push(ms),
                    Err(b) => {
                        o.breach_count += 1;
                        if o.breaches.len() < 5 {
                            o.breaches.push(b);
                        }
                    }
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let mut out = out
        .lock()
        .map(|mut o| std::mem::take(&mut *o))
        .unwrap_or_default();
    out.latencies_ms.sort_by(f64::total_cmp);
    out
}

/// One poll of the fast path, checked; its latency in ms.
async fn poll_once(
    client: &Client,
    id: &str,
    token: &str,
    seen: &Mutex<HashMap<String, (u64, String)>>,
) -> std::result::Result<f64, String> {
    let a = client
        .get(format!("/api/tasks/{id}"), token)
        .send()
        .await
        .and_then(|a| a.expect(&[200]))
        .map_err(|e| e.to_string())?;
    let ms = a.elapsed.as_secs_f64() * 1000.0;
    let snap = a.json().map_err(|e| e.to_string())?;
    let seq = snap["last_seq"]
        .as_u64()
        .ok_or_else(|| format!("GET /api/tasks/{id}: no last_seq in {snap}"))?;
    let state = snap["state"].as_str().unwrap_or("").to_owned();
    if snap["id"] != id {
        return Err(format!("GET /api/tasks/{id} answered task {}", snap["id"]));
    }
    let valid = [
        "pending",
        "scheduled",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "timed_out",
    ];
    if !valid.contains(&state.as_str()) {
        return Err(format!("GET /api/tasks/{id}: an unknown state {state:?}"));
    }
    let etag = format!("W/\"{id}-{seq}\"");
    if a.header("etag") != Some(etag.as_str()) {
        return Err(format!(
            "GET /api/tasks/{id}: ETag {:?}, the contract says {etag}",
            a.header("etag")
        ));
    }
    if !a
        .header("cache-control")
        .is_some_and(|c| c.contains("no-cache"))
    {
        return Err(format!(
            "GET /api/tasks/{id}: Cache-Control {:?}, the contract says no-cache",
            a.header("cache-control")
        ));
    }
    let Ok(mut seen) = seen.lock() else {
        return Ok(ms);
    };
    if let Some((prev_seq, prev_state)) = seen.get(id) {
        if seq < *prev_seq {
            return Err(format!(
                "GET /api/tasks/{id}: last_seq went back from {prev_seq} to {seq}"
            ));
        }
        if sse::TERMINAL_TYPES.contains(&prev_state.as_str())
            && (state != *prev_state || seq != *prev_seq)
        {
            return Err(format!(
                "GET /api/tasks/{id}: it ended {prev_state} at seq {prev_seq}, now {state} at seq {seq}"
            ));
        }
    }
    seen.insert(id.to_owned(), (seq, state));
    Ok(ms)
}

/// `If-None-Match` on ended tasks: the current tag → `304` (with the tag),
/// a stale one → `200`.
async fn not_modified(client: &Client, tasks: &[RunTask]) -> std::result::Result<u64, String> {
    let mut n = 0;
    for t in tasks.iter().take(20) {
        let a = client
            .get(format!("/api/tasks/{}", t.id), &t.token)
            .send()
            .await
            .and_then(|a| a.expect(&[200]))
            .map_err(|e| e.to_string())?;
        let Some(etag) = a.header("etag").map(str::to_owned) else {
            return Err(format!("GET /api/tasks/{}: no ETag", t.id));
        };
        let b = client
            .get(format!("/api/tasks/{}", t.id), &t.token)
            .header("if-none-match", etag.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if b.status != 304 {
            return Err(format!(
                "GET /api/tasks/{} with If-None-Match {etag} (an ended task): expected 304, got {}",
                t.id, b.status
            ));
        }
        if b.header("etag") != Some(etag.as_str()) {
            return Err(format!(
                "GET /api/tasks/{}: the 304 carries ETag {:?} instead of {etag}",
                t.id,
                b.header("etag")
            ));
        }
        let stale = format!("W/\"{}-0\"", t.id);
        let c = client
            .get(format!("/api/tasks/{}", t.id), &t.token)
            .header("if-none-match", stale.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if c.status != 200 {
            return Err(format!(
                "GET /api/tasks/{} with a stale If-None-Match {stale}: expected 200, got {}",
                t.id, c.status
            ));
        }
        n += 1;
    }
    Ok(n)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    (sorted[rank - 1] * 100.0).round() / 100.0
}

/// Runs the load phase.
pub async fn run(ctx: Arc<Ctx>, setup: &Setup) -> LoadOutcome {
    let started = Instant::now();
    let deadline = ctx.deadline;
    let restarting = ctx.opts.restart.is_some();
    ctx.progress.phase("submitting tasks");
    let (tasks, submit_errors) = submit(&ctx, setup).await;
    ctx.progress.tasks_total(tasks.len() as u64);

    // The workflow, alongside.
    let workflow = {
        let ctx = ctx.clone();
        let token = setup.tenants[0].user_token.clone();
        tokio::spawn(async move { super::workflow::run(&ctx, &token).await })
    };

    // Two reads of every stream; at most 100 open per tenant (the service
    // allows 256 per token).
    let gates: Vec<Arc<tokio::sync::Semaphore>> = setup
        .tenants
        .iter()
        .map(|_| Arc::new(tokio::sync::Semaphore::new(100)))
        .collect();
    let mut streams: JoinSet<(usize, bool, Followed)> = JoinSet::new();
    for (k, t) in tasks.iter().enumerate() {
        for cut in [false, true] {
            let client = ctx.client.clone();
            let gate = gates[t.tenant].clone();
            let (id, token, tenant) = (t.id.clone(), t.token.clone(), t.tenant_name.clone());
            let plan = FollowPlan {
                cut_after: cut.then_some(1 + t.i % 3),
                allow_reconnect: restarting,
                deadline,
            };
            streams.spawn(async move {
                let _slot = gate.acquire_owned().await;
                let path = format!("/api/tasks/{id}/events");
                let verifier = SeqVerifier::new(StreamKind::Task, &id, Some(&tenant));
                (
                    k,
                    cut,
                    sse::follow(&client, &path, &token, verifier, plan).await,
                )
            });
        }
    }

    // The poller.
    let targets: Arc<Vec<(String, String)>> = Arc::new(
        tasks
            .iter()
            .map(|t| (t.id.clone(), t.token.clone()))
            .collect(),
    );
    let polls = tokio::spawn(poller(
        ctx.client.clone(),
        targets,
        ctx.opts.polls,
        deadline,
    ));

    // The restart, once the first slow task runs; cancellations after it.
    let first_running = CancellationToken::new();
    let restart_over = CancellationToken::new();
    let restart_run = Arc::new(Mutex::new(RestartRun::default()));
    let restart_task = match ctx.opts.restart.clone() {
        None => {
            restart_over.cancel();
            None
        }
        Some(r) => {
            let (ctx, first_running, over, out) = (
                ctx.clone(),
                first_running.clone(),
                restart_over.clone(),
                restart_run.clone(),
            );
            if !tasks.iter().any(|t| t.kind == Kind::SlowCancel) {
                first_running.cancel();
            }
            Some(tokio::spawn(async move {
                tokio::select! {
                    () = first_running.cancelled() => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
                ctx.progress.phase("restarting the target");
                let t0 = Instant::now();
                let result = match restart(&r, deadline).await {
                    Ok(code) => {
                        let took = t0.elapsed();
                        wait_ready(&ctx.client, deadline)
                            .await
                            .map(|ready| (code, took, ready))
                    }
                    Err(e) => Err(e),
                };
                if let Ok(mut o) = out.lock() {
                    o.result = Some(result);
                }
                ctx.progress.phase("waiting for the tasks to end");
                over.cancel();
            }))
        }
    };

    // Cancel the slow ones once they run.
    let cancels = futures::stream::iter(tasks.iter().filter(|t| t.kind == Kind::SlowCancel))
        .map(|t| {
            let (client, first_running, restart_over) =
                (&ctx.client, &first_running, &restart_over);
            async move {
                let running = wait_task(
                    client,
                    &t.token,
                    &t.id,
                    |s| s["state"] == "running",
                    deadline,
                )
                .await;
                first_running.cancel();
                match running {
                    Ok(s) if s["state"] == "running" => {}
                    Ok(s) => {
                        return Err(format!(
                            "task {} (#{} cancel): expected it to run before it is cancelled, it ended {}",
                            t.id, t.i, s["state"]
                        ));
                    }
                    Err(e) => return Err(format!("task {} (#{} cancel): {e}", t.id, t.i)),
                }
                restart_over.cancelled().await;
                let a = client
                    .post(
                        format!("/api/tasks/{}/cancel", t.id),
                        &t.token,
                        json!({"reason": "hive-dogfood cancels a running slow task"}),
                    )
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                match a.status {
                    200 => {
                        let v = a.json().map_err(|e| e.to_string())?;
                        if v["state"] != "cancelled" || v["seq"].as_u64().is_none() {
                            return Err(format!(
                                "POST /api/tasks/{}/cancel: the ack is {{seq, state: cancelled}}, got {v}",
                                t.id
                            ));
                        }
                        Ok(())
                    }
                    // A retried cancel after a restart may find it cancelled.
                    409 if restarting => Ok(()),
                    s => Err(format!(
                        "POST /api/tasks/{}/cancel of a running task: expected 200, got {s}: {}",
                        t.id,
                        a.excerpt()
                    )),
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    ctx.progress.phase("running tasks");
    // In the tasks' order (`buffered`, not `buffer_unordered`).
    let waits = futures::stream::iter(tasks.iter())
        .map(|t| {
            let ctx = &ctx;
            async move {
                let snap = wait_task(&ctx.client, &t.token, &t.id, |_| false, deadline).await;
                ctx.progress.task_ended();
                snap
            }
        })
        .buffered(64)
        .collect::<Vec<_>>();
    let (cancel_results, snaps) = tokio::join!(cancels, waits);
    let tasks_wall = started.elapsed();
    if let Some(r) = restart_task {
        let _ = r.await;
    }

    // tasks
    let mut problems: Vec<String> = submit_errors.clone();
    problems.extend(cancel_results.into_iter().filter_map(|r| r.err()));
    let mut by_state: HashMap<String, u64> = HashMap::new();
    let mut by_kind: HashMap<&str, u64> = HashMap::new();
    let mut finals: HashMap<String, String> = HashMap::new();
    let mut ended = 0u64;
    for (t, snap) in tasks.iter().zip(&snaps) {
        *by_kind.entry(t.kind.name()).or_default() += 1;
        match snap {
            Ok(s) => {
                let state = s["state"].as_str().unwrap_or("?").to_owned();
                if sse::TERMINAL_TYPES.contains(&state.as_str()) {
                    ended += 1;
                }
                *by_state.entry(state.clone()).or_default() += 1;
                finals.insert(t.id.clone(), state);
                if let Err(p) = judge(t, s, restarting) {
                    problems.push(p);
                }
            }
            Err(e) => problems.push(format!("task {} (#{}): {e}", t.id, t.i)),
        }
    }
    let mut per_tenant: HashMap<&str, u64> = HashMap::new();
    for t in &tasks {
        *per_tenant.entry(t.tenant_name.as_str()).or_default() += 1;
    }
    let tasks_figures = json!({
        "planned": ctx.opts.tasks,
        "submitted": tasks.len(),
        "ended": ended,
        "tenants": setup.tenants.len(),
        "tenants_note": setup.tenants_note,
        "per_tenant": per_tenant,
        "by_kind": by_kind,
        "by_state": by_state,
        "wall_ms": tasks_wall.as_millis() as u64,
        "problems": problems.len(),
        "first_problems": problems.iter().take(5).collect::<Vec<_>>(),
    });
    let tasks_check = CheckResult::from_result(
        "tasks",
        tasks_figures,
        match problems.first() {
            None if tasks.is_empty() => Err(DogfoodError::contract("no task was submitted")),
            None => Ok(()),
            Some(p) if problems.len() == 1 => Err(DogfoodError::contract(p.clone())),
            Some(p) => Err(DogfoodError::contract(format!(
                "{p} (and {} more)",
                problems.len() - 1
            ))),
        },
        tasks_wall.as_millis() as u64,
    );

    // streams
    ctx.progress.phase("reading the last streams");
    let mut reads: HashMap<usize, [Option<Followed>; 2]> = HashMap::new();
    while let Some(r) = streams.join_next().await {
        if let Ok((k, cut, f)) = r {
            reads.entry(k).or_default()[usize::from(cut)] = Some(f);
        }
    }
    let mut breaches: Vec<String> = Vec::new();
    let (mut events, mut resumed, mut reconnects, mut repeats) = (0u64, 0u64, 0u64, 0u64);
    let mut retry_ms = None;
    for (k, t) in tasks.iter().enumerate() {
        let [whole, cut] = reads.remove(&k).unwrap_or_default();
        let (Some(whole), Some(cut)) = (whole, cut) else {
            breaches.push(format!("task {}: a stream reader did not finish", t.id));
            continue;
        };
        for f in [&whole, &cut] {
            reconnects += u64::from(f.reconnects);
            repeats += f.verifier.heartbeat_repeats;
            retry_ms = retry_ms.or(f.retry_ms);
            if let Some(b) = &f.breach {
                breaches.push(b.clone());
            }
        }
        resumed += u64::from(cut.planned_resumes);
        events += whole.verifier.seen.len() as u64;
        if whole.breach.is_some() || cut.breach.is_some() {
            continue;
        }
        if whole.verifier.history() != cut.verifier.history() {
            breaches.push(format!(
                "task {}: the read resumed with Last-Event-ID saw {:?}, the whole read {:?}",
                t.id,
                cut.verifier.history(),
                whole.verifier.history()
            ));
            continue;
        }
        if let (Some((_, ty)), Some(state)) = (&whole.verifier.terminal, finals.get(&t.id))
            && ty != state
        {
            breaches.push(format!(
                "task {}: its stream ended with {ty} but the task is {state}",
                t.id
            ));
            continue;
        }
        let terminal = whole.verifier.terminal_data.as_ref();
        if t.kind == Kind::SlowTimeout
            && terminal.is_some_and(|d| d["type"] == "timed_out")
            && terminal.is_some_and(|d| d["phase"] != "start_to_close")
        {
            breaches.push(format!(
                "task {}: timed out in phase {}, its start_to_close timeout (1s) is what expired",
                t.id,
                terminal.map_or(&Value::Null, |d| &d["phase"])
            ));
        }
    }
    let streams_figures = json!({
        "streams": tasks.len() * 2,
        "events": events,
        "resumed": resumed,
        "reconnects": reconnects,
        "heartbeat_repeats": repeats,
        "retry_ms": retry_ms,
        "breaches": breaches.len(),
        "first_breaches": breaches.iter().take(5).collect::<Vec<_>>(),
    });
    let streams_check = CheckResult::from_result(
        "streams",
        streams_figures,
        match breaches.first() {
            None => Ok(()),
            Some(b) => Err(DogfoodError::contract(if breaches.len() == 1 {
                b.clone()
            } else {
                format!("{b} (and {} more)", breaches.len() - 1)
            })),
        },
        ms_since(started),
    );

    // polling
    ctx.progress.phase("polling");
    let polls = polls.await.unwrap_or_default();
    let ended_tasks: Vec<RunTask> = tasks
        .iter()
        .filter(|t| {
            finals
                .get(&t.id)
                .is_some_and(|s| sse::TERMINAL_TYPES.contains(&s.as_str()))
        })
        .cloned()
        .collect();
    let nm = not_modified(&ctx.client, &ended_tasks).await;
    let lat = &polls.latencies_ms;
    let p99 = percentile(lat, 0.99);
    let polling_figures = json!({
        "polls": lat.len() as u64 + polls.breach_count,
        "ok": lat.len(),
        "p50_ms": percentile(lat, 0.50),
        "p95_ms": percentile(lat, 0.95),
        "p99_ms": p99,
        "max_ms": percentile(lat, 1.0),
        "not_modified": nm.as_ref().ok(),
        "breaches": polls.breach_count,
        "first_breaches": polls.breaches,
    });
    let polling_result = if let Some(b) = polling_figures["first_breaches"].get(0) {
        Err(DogfoodError::contract(b.as_str().unwrap_or("").to_owned()))
    } else if let Err(e) = nm {
        Err(DogfoodError::contract(e))
    } else if lat.is_empty() {
        Err(DogfoodError::contract("no poll was made"))
    } else if let Some(max) = ctx.opts.max_p99
        && p99 > max.as_secs_f64() * 1000.0
    {
        Err(DogfoodError::contract(format!(
            "p99 {p99} ms is above --max-p99 {} ms",
            max.as_millis()
        )))
    } else {
        Ok(())
    };
    let polling_check = CheckResult::from_result(
        "polling",
        polling_figures,
        polling_result,
        ms_since(started),
    );

    // workflow
    ctx.progress.phase("finishing the workflow");
    let (workflow_check, workflow_reconnects, workflow_reports) = match workflow.await {
        Ok(r) => r,
        Err(e) => (
            CheckResult::fail("workflow", json!({}), format!("the check crashed: {e}"), 0),
            0,
            0,
        ),
    };

    // restart
    let restart_check = ctx.opts.restart.as_ref().map(|_| {
        let run = restart_run
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        let resumed = reconnects + u64::from(workflow_reconnects);
        let mut figures = json!({
            "streams_resumed": resumed,
            "tasks_ended": ended,
            "tasks_submitted": tasks.len(),
        });
        let result = match run.result {
            None => Err(DogfoodError::contract("the restart did not run")),
            Some(Err(e)) => Err(e),
            Some(Ok((code, took, ready))) => {
                figures["exit_code"] = json!(code);
                figures["restart_ms"] = json!(took.as_millis() as u64);
                figures["ready_ms"] = json!(ready.as_millis() as u64);
                if ended != tasks.len() as u64 {
                    Err(DogfoodError::contract(format!(
                        "{} of {} tasks ended after the restart",
                        ended,
                        tasks.len()
                    )))
                } else if !breaches.is_empty() {
                    Err(DogfoodError::contract(format!(
                        "streams broke across the restart: {}",
                        breaches[0]
                    )))
                } else if resumed == 0 {
                    Err(DogfoodError::contract(
                        "the restart cut no stream, so none resumed: did the command restart the process at --target?",
                    ))
                } else {
                    Ok(())
                }
            }
        };
        CheckResult::from_result("restart", figures, result, ms_since(started))
    });

    let expected_reports = tasks.iter().map(|t| t.kind.reports()).sum::<u64>() + workflow_reports;
    LoadOutcome {
        tasks: tasks_check,
        workflow: workflow_check,
        streams: streams_check,
        polling: polling_check,
        restart: restart_check,
        tasks_run: tasks,
        expected_reports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_has_every_kind_from_five_tasks() {
        let p = plan(5);
        for k in [
            Kind::Ok,
            Kind::Flaky,
            Kind::Fail,
            Kind::SlowCancel,
            Kind::SlowTimeout,
        ] {
            assert!(p.contains(&k), "{k:?}");
        }
        let p = plan(60);
        let ok = p.iter().filter(|k| **k == Kind::Ok).count();
        assert_eq!(ok, 29);
        assert_eq!(p.iter().map(|k| k.reports()).sum::<u64>(), 29 + 2 * 12 + 7);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
