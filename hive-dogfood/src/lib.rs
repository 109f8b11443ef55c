//! `hive-dogfood`: drives a running Honeycomb the way real users and remote
//! workers do, and fails loudly on any breach of its contract.
//!
//! [`stabilize`] (the `hive-dogfood stabilize` command) runs these checks,
//! each a [`CheckResult`] with its figures in the [`Report`]:
//!
//! | check | what must hold |
//! |---|---|
//! | `health` | `/healthz`, `/readyz` answer 200; `/api/version` has `name`, `version`, `commit` |
//! | `workers` | the run registers a node per tenant (`POST /api/nodes` → a worker token) and its own remote workers claim (long poll), start, log, heartbeat and report every task with no answer the contract does not allow |
//! | `tasks` | N tasks over the tenants and the agents `dogfood.ok`, `.flaky` (retried), `.fail`, `.slow` (cancelled; timed out) each end as their agent implies |
//! | `workflow` | a fork-join (one branch failing, a join with `all_done`) ends `succeeded`, with the join's input showing both branches |
//! | `streams` | every task's SSE stream, read whole and read resumed with `Last-Event-ID`, is gapless from 1 with exactly one terminal event, last, then `end` |
//! | `polling` | `GET /api/tasks/{id}`: latency percentiles, `ETag`, monotonic `last_seq`, `If-None-Match` → 304 |
//! | `worker_token_denied` | the worker token is refused every other operation (403, or 404 for another tenant's object), each refusal in the audit trail |
//! | `audit_chain` | `GET /api/audit/verify` is `ok` for every tenant the run acted in |
//! | `restart` | (with a restart command) the target comes back, streams resume, every task still ends |
//!
//! The module docs of [`checks`] say exactly what each check does.

pub mod checks;
pub mod client;
pub mod error;
pub mod progress;
pub mod report;
pub mod sse;
pub mod worker;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

pub use error::{DogfoodError, Result};
pub use report::{CheckResult, Report};

use checks::load::Kind;
use checks::{Ctx, Setup};

/// The tool's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The order checks are judged in (the verdict names the first failure).
pub const CHECKS: [&str; 9] = [
    "health",
    "workers",
    "tasks",
    "workflow",
    "streams",
    "polling",
    "worker_token_denied",
    "audit_chain",
    "restart",
];

/// An in-process restart: restarts the target and answers once it was told
/// to come back (tests use it where a command line cannot reach).
pub type RestartHook =
    Arc<dyn Fn() -> BoxFuture<'static, std::result::Result<(), String>> + Send + Sync>;

/// How the target is restarted mid-run.
#[derive(Clone)]
pub enum Restart {
    /// A shell command (`sh -c`) that restarts one Honeycomb process and
    /// exits 0.
    Command(String),
    /// A function that does it.
    Hook(RestartHook),
}

impl fmt::Debug for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Restart::Command(c) => f.debug_tuple("Command").field(c).finish(),
            Restart::Hook(_) => f.write_str("Hook(..)"),
        }
    }
}

/// What `stabilize` is asked to do.
#[derive(Clone)]
pub struct StabilizeOptions {
    /// The target's base URL (`http://127.0.0.1:8780`).
    pub target: String,
    /// An admin API token of a tenant.
    pub token: String,
    /// The bound of the load phases (tasks, streams, polling, workflow).
    pub duration: Duration,
    /// Where to write the JSON report.
    pub report: Option<PathBuf>,
    /// Tenants to act in (more than one needs a token with `system:admin`).
    pub tenants: usize,
    /// Tasks to run.
    pub tasks: usize,
    /// Polls of `GET /api/tasks/{id}` for the latency figures.
    pub polls: usize,
    /// The capacity of each of the tool's nodes.
    pub capacity: u32,
    /// Restart the target mid-run (the `restart` check).
    pub restart: Option<Restart>,
    /// Fail `polling` when its p99 is above this.
    pub max_p99: Option<Duration>,
    /// Draw progress on stderr.
    pub progress: bool,
}

impl fmt::Debug for StabilizeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StabilizeOptions")
            .field("target", &self.target)
            .field("token", &"<redacted>")
            .field("duration", &self.duration)
            .field("report", &self.report)
            .field("tenants", &self.tenants)
            .field("tasks", &self.tasks)
            .field("polls", &self.polls)
            .field("capacity", &self.capacity)
            .field("restart", &self.restart)
            .field("max_p99", &self.max_p99)
            .field("progress", &self.progress)
            .finish()
    }
}

impl StabilizeOptions {
    /// The defaults (`--duration 2m --tenants 2 --tasks 60 --polls 2000`)
    /// for `target` and `token`.
    pub fn new(target: impl Into<String>, token: impl Into<String>) -> StabilizeOptions {
        StabilizeOptions {
            target: target.into(),
            token: token.into(),
            duration: Duration::from_secs(120),
            report: None,
            tenants: 2,
            tasks: 60,
            polls: 2000,
            capacity: 16,
            restart: None,
            max_p99: None,
            progress: false,
        }
    }

    fn figures(&self) -> Value {
        json!({
            "duration": humantime::format_duration(self.duration).to_string(),
            "tenants": self.tenants,
            "tasks": self.tasks,
            "polls": self.polls,
            "capacity": self.capacity,
            "restart": self.restart.as_ref().map(|r| match r {
                Restart::Command(c) => c.clone(),
                Restart::Hook(_) => "<in-process hook>".to_owned(),
            }),
            "max_p99": self.max_p99.map(|d| humantime::format_duration(d).to_string()),
        })
    }
}

/// A short id for the run: in labels, tenant names and idempotency keys.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in nanos
        .to_le_bytes()
        .iter()
        .chain(std::process::id().to_le_bytes().iter())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", h as u32)
}

/// Runs every check against the target and returns the report (also
/// written to [`StabilizeOptions::report`]). `Err` only for bad options or
/// a report that cannot be written: a bad answer from the target is a failed
/// check in the report, never an error here or a panic.
pub async fn stabilize(opts: StabilizeOptions) -> Result<Report> {
    if opts.tasks == 0 {
        return Err(DogfoodError::Usage("--tasks must be at least 1".into()));
    }
    if opts.duration.is_zero() {
        return Err(DogfoodError::Usage("--duration must be above zero".into()));
    }
    if opts.token.trim().is_empty() {
        return Err(DogfoodError::Usage("--token is empty".into()));
    }
    let client = client::Client::new(&opts.target, Duration::from_secs(60))?;
    // A report that cannot be written fails now, not after the run.
    if let Some(path) = &opts.report {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| DogfoodError::Report {
                path: path.clone(),
                source,
            })?;
    }
    let started_at = report::now_ms();
    let run_id = run_id();
    let progress = progress::Progress::new(opts.progress);
    let report_path = opts.report.clone();
    let options = opts.figures();
    let ctx = Arc::new(Ctx {
        deadline: tokio::time::Instant::now() + opts.duration,
        opts,
        client,
        run_id: run_id.clone(),
        progress,
        notes: Mutex::new(Vec::new()),
    });
    let mut results: Vec<CheckResult> = Vec::new();
    let mut target_version = Value::Null;
    run_checks(&ctx, &mut results, &mut target_version).await;
    ctx.progress.finish();
    let mut checks = Vec::new();
    for name in CHECKS {
        if let Some(c) = results.iter().find(|c| c.name == name) {
            checks.push(c.clone());
        }
    }
    let passed = checks.iter().all(|c| c.passed);
    let report = Report {
        tool: "hive-dogfood".into(),
        version: VERSION.into(),
        target: ctx.client.base().to_owned(),
        target_version,
        run_id,
        started_at_ms: started_at,
        ended_at_ms: report::now_ms(),
        options,
        checks,
        client: ctx.client.stats().figures(),
        notes: ctx.notes.lock().map(|n| n.clone()).unwrap_or_default(),
        passed,
    };
    if let Some(path) = report_path {
        report.write(&path)?;
    }
    Ok(report)
}

fn skip_rest(results: &mut Vec<CheckResult>, ctx: &Ctx, why: &str) {
    for name in CHECKS {
        if name == "restart" && ctx.opts.restart.is_none() {
            continue;
        }
        if !results.iter().any(|c| c.name == name) {
            results.push(CheckResult::skipped(name, why));
        }
    }
}

async fn run_checks(ctx: &Arc<Ctx>, results: &mut Vec<CheckResult>, version: &mut Value) {
    ctx.progress.phase("health");
    let (health, v) = checks::health::run(ctx).await;
    *version = v;
    let healthy = health.passed;
    results.push(health);
    if !healthy {
        skip_rest(results, ctx, "health failed");
        return;
    }
    ctx.progress.phase("setting up tenants, nodes and workers");
    let mut setup_figures = json!({});
    let setup = match checks::setup::run(ctx, &mut setup_figures).await {
        Ok(s) => s,
        Err(e) => {
            let reason = match e {
                DogfoodError::Skipped(why) => why,
                other => other.to_string(),
            };
            results.push(CheckResult::fail("workers", setup_figures, reason, 0));
            skip_rest(results, ctx, "setting up the workers failed");
            return;
        }
    };
    let load = checks::load::run(ctx.clone(), &setup).await;
    results.push(load.tasks.clone());
    results.push(load.workflow.clone());
    results.push(load.streams.clone());
    results.push(load.polling.clone());
    if let Some(r) = &load.restart {
        results.push(r.clone());
    }

    ctx.progress.phase("trying the worker token everywhere");
    let first = &setup.tenants[0];
    let victim = checks::denied::victim(ctx, &first.user_token).await;
    let denied = match &victim {
        Ok(task) => {
            let targets = checks::denied::Targets {
                task: task.clone(),
                other_tenant_task: load
                    .tasks_run
                    .iter()
                    .find(|t| t.tenant != 0)
                    .map(|t| t.id.clone()),
                workflow: load.workflow.figures["id"].as_str().map(str::to_owned),
                token_id: first.user_token_id.clone(),
            };
            checks::denied::run(ctx, &setup, &targets).await
        }
        Err(e) => CheckResult::fail(
            "worker_token_denied",
            json!({}),
            format!("cannot submit the victim task: {e}"),
            0,
        ),
    };
    results.push(denied);

    ctx.progress.phase("stopping the workers");
    setup.stop_workers.cancel();
    for w in &setup.workers {
        w.abort();
    }
    results.push(workers_check(&setup, &load));

    ctx.progress.phase("verifying the audit chain");
    results.push(checks::audit::run(ctx, &setup).await);

    ctx.progress.phase("cleaning up");
    cleanup(ctx, &setup, victim.ok()).await;
}

/// `workers`: every node registered and worked; the workers' answers were
/// all acks (or a lease gone for a cancelled or timed-out attempt); every
/// report the run owes was acked.
fn workers_check(setup: &Setup, load: &checks::load::LoadOutcome) -> CheckResult {
    use std::sync::atomic::Ordering::Relaxed;
    let mut per_node = serde_json::Map::new();
    let mut problems = Vec::new();
    let (mut reports, mut heartbeats, mut log_lines) = (0, 0, 0);
    for (i, t) in setup.tenants.iter().enumerate() {
        let s = &t.stats;
        per_node.insert(t.node_id.clone(), s.figures());
        reports += s.reports.load(Relaxed);
        heartbeats += s.heartbeats.load(Relaxed);
        log_lines += s.log_lines.load(Relaxed);
        let has_tasks = load.tasks_run.iter().any(|r| r.tenant == i);
        if has_tasks && s.started.load(Relaxed) == 0 {
            problems.push(format!("node {} of {} started no task", t.node_id, t.name));
        }
        if s.unexpected.load(Relaxed) > 0 {
            problems.push(format!(
                "node {} of {}: {} unexpected answer(s), first: {}",
                t.node_id,
                t.name,
                s.unexpected.load(Relaxed),
                s.first_unexpected().unwrap_or_default()
            ));
        }
    }
    if reports < load.expected_reports {
        problems.push(format!(
            "{reports} reports acked, the run owes at least {}",
            load.expected_reports
        ));
    }
    let slow = load
        .tasks_run
        .iter()
        .any(|t| matches!(t.kind, Kind::SlowCancel | Kind::SlowTimeout));
    if slow && heartbeats == 0 {
        problems.push("no heartbeat was acked for the slow tasks".into());
    }
    let figures = json!({
        "nodes": setup.tenants.len(),
        "reports": reports,
        "expected_reports": load.expected_reports,
        "heartbeats": heartbeats,
        "log_lines": log_lines,
        "setup_ms": setup.started.elapsed().as_millis() as u64,
        "per_node": per_node,
    });
    let result = match problems.first() {
        None => Ok(()),
        Some(p) => Err(DogfoodError::contract(if problems.len() == 1 {
            p.clone()
        } else {
            format!("{p} (and {} more)", problems.len() - 1)
        })),
    };
    CheckResult::from_result(
        "workers",
        figures,
        result,
        setup.started.elapsed().as_millis() as u64,
    )
}

/// Leaves the target as it was: the victim task cancelled, the nodes
/// removed, the issued tokens revoked (each failure a note).
async fn cleanup(ctx: &Ctx, setup: &Setup, victim: Option<String>) {
    let first = &setup.tenants[0];
    if let Some(task) = victim {
        let r = ctx
            .client
            .post(
                format!("/api/tasks/{task}/cancel"),
                &first.user_token,
                json!({"reason": "hive-dogfood cleans up"}),
            )
            .send()
            .await
            .and_then(|a| a.expect(&[200]));
        if let Err(e) = r {
            ctx.note(format!("cleanup: cancelling the victim task {task}: {e}"));
        }
    }
    let mut nodes: Vec<(&str, &str)> = setup
        .tenants
        .iter()
        .map(|t| (t.node_id.as_str(), t.user_token.as_str()))
        .collect();
    if let Some(v) = &setup.victim_node {
        nodes.push((v.as_str(), first.user_token.as_str()));
    }
    for (node, token) in nodes {
        let r = ctx
            .client
            .delete(format!("/api/nodes/{node}"), token)
            .send()
            .await
            .and_then(|a| a.expect(&[204]));
        if let Err(e) = r {
            ctx.note(format!("cleanup: removing node {node}: {e}"));
        }
    }
    for t in &setup.tenants {
        let mut revoke: Vec<&String> = Vec::new();
        revoke.extend(t.user_token_id.as_ref());
        revoke.extend(t.admin_token_id.as_ref());
        for id in revoke {
            let r = ctx
                .client
                .delete(format!("/api/tokens/{id}"), &t.admin_token)
                .send()
                .await
                .and_then(|a| a.expect(&[200]));
            if let Err(e) = r {
                ctx.note(format!("cleanup: revoking token {id} of {}: {e}", t.name));
            }
        }
    }
}
