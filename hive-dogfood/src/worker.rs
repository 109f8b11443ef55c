//! The tool's own remote worker, in-process, over Honeycomb's worker
//! protocol (`/api/worker/*`) with a node's worker token: claim with a long
//! poll, start, log, heartbeat, report — the way `examples/python/http_worker.py`
//! does — running the dogfood agents:
//!
//! - `dogfood.ok`: logs a line and succeeds with `{"echo": input}`;
//! - `dogfood.flaky`: fails its first attempt with the retryable code
//!   `dogfood_flaky`, then succeeds with `{"echo": input, "attempt": n}`;
//! - `dogfood.fail`: fails with the non-retryable code `dogfood_fail`;
//! - `dogfood.slow`: heartbeats every few hundred milliseconds until its
//!   lease is gone (cancelled, timed out) or `input.seconds` passed, then
//!   succeeds with `{"slept": seconds}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::Client;

/// The agents the worker runs.
pub const AGENTS: [&str; 4] = [
    "dogfood.ok",
    "dogfood.flaky",
    "dogfood.fail",
    "dogfood.slow",
];

/// The error code of `dogfood.flaky`'s first attempt (retryable).
pub const FLAKY_CODE: &str = "dogfood_flaky";
/// The error code of `dogfood.fail` (non-retryable).
pub const FAIL_CODE: &str = "dogfood_fail";

/// Problem codes that say a lease is gone (cancelled, timed out, reclaimed):
/// the worker stops that attempt; not a breach.
const LEASE_GONE: [&str; 3] = ["lease_lost", "already_terminal", "invalid_transition"];

/// How the worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Tasks run at once (the node's capacity).
    pub capacity: u32,
    /// How often a slow task heartbeats.
    pub heartbeat_every: Duration,
    /// The longest a claim waits for work.
    pub claim_wait: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            capacity: 16,
            heartbeat_every: Duration::from_millis(300),
            claim_wait: Duration::from_secs(5),
        }
    }
}

/// What one worker did.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Claim calls answered.
    pub claims: AtomicU64,
    /// Leases claimed.
    pub claimed: AtomicU64,
    /// Leases started (acked).
    pub started: AtomicU64,
    /// Starts answered `invalid_transition` (already running: a start sent
    /// again), run anyway.
    pub start_replayed: AtomicU64,
    /// Heartbeats acked.
    pub heartbeats: AtomicU64,
    /// Log lines acked.
    pub log_lines: AtomicU64,
    /// Reports acked.
    pub reports: AtomicU64,
    /// Node heartbeats answered 200.
    pub node_heartbeats: AtomicU64,
    /// Answers saying a lease was gone (expected for cancelled and timed-out
    /// attempts).
    pub lease_gone: AtomicU64,
    /// Anything the contract does not allow: the count…
    pub unexpected: AtomicU64,
    /// …and the first few, described.
    pub unexpected_samples: std::sync::Mutex<Vec<String>>,
    /// Claims per agent.
    pub by_agent: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl WorkerStats {
    fn unexpected(&self, what: String) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut s) = self.unexpected_samples.lock()
            && s.len() < 10
        {
            s.push(what);
        }
    }

    /// The first unexpected answer, if any.
    pub fn first_unexpected(&self) -> Option<String> {
        self.unexpected_samples
            .lock()
            .ok()
            .and_then(|s| s.first().cloned())
    }

    /// The counters as JSON figures.
    pub fn figures(&self) -> Value {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "claims": l(&self.claims),
            "claimed": l(&self.claimed),
            "started": l(&self.started),
            "start_replayed": l(&self.start_replayed),
            "heartbeats": l(&self.heartbeats),
            "log_lines": l(&self.log_lines),
            "reports": l(&self.reports),
            "node_heartbeats": l(&self.node_heartbeats),
            "lease_gone": l(&self.lease_gone),
            "unexpected": l(&self.unexpected),
            "unexpected_samples": self.unexpected_samples.lock().map(|s| s.clone()).unwrap_or_default(),
            "claimed_by_agent": self.by_agent.lock().map(|m| m.clone()).unwrap_or_default(),
        })
    }
}

/// One item's answer in a batch: acked, the lease gone, or something else.
enum Item {
    Ack,
    Gone(String),
    Other(String),
}

fn item(v: &Value) -> Item {
    if v.get("ack").is_some_and(Value::is_object) {
        return Item::Ack;
    }
    let code = v["problem"]["code"].as_str().unwrap_or("").to_owned();
    if LEASE_GONE.contains(&code.as_str()) {
        Item::Gone(code)
    } else {
        Item::Other(v.to_string())
    }
}

/// Runs a worker with `token` (a node's worker token) until `stop` fires.
pub async fn run(
    client: Client,
    token: String,
    config: WorkerConfig,
    stats: Arc<WorkerStats>,
    stop: CancellationToken,
) {
    let running = Arc::new(AtomicU32::new(0));
    let mut handlers = JoinSet::new();
    handlers.spawn(node_heartbeats(
        client.clone(),
        token.clone(),
        stats.clone(),
        stop.clone(),
    ));
    let wait = format!("{}ms", config.claim_wait.as_millis());
    loop {
        while handlers.try_join_next().is_some() {}
        if stop.is_cancelled() {
            break;
        }
        let free = config
            .capacity
            .saturating_sub(running.load(Ordering::Acquire));
        if free == 0 {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                () = stop.cancelled() => break,
            }
            continue;
        }
        let body = json!({"max": free, "agents": AGENTS, "start": false, "wait": wait});
        let call = client
            .post("/api/worker/claim", &token, body)
            .timeout(config.claim_wait + Duration::from_secs(30))
            .send();
        let answer = tokio::select! {
            a = call => a,
            () = stop.cancelled() => break,
        };
        let claimed = match answer.and_then(|a| a.expect(&[200])).and_then(|a| a.json()) {
            Ok(v) => v,
            Err(e) => {
                stats.unexpected(format!("claim: {e}"));
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = stop.cancelled() => break,
                }
                continue;
            }
        };
        stats.claims.fetch_add(1, Ordering::Relaxed);
        let Some(tasks) = claimed["tasks"].as_array().cloned() else {
            stats.unexpected(format!("claim: no tasks array in {claimed}"));
            continue;
        };
        if tasks.is_empty() {
            continue;
        }
        stats
            .claimed
            .fetch_add(tasks.len() as u64, Ordering::Relaxed);
        let tokens: Vec<Value> = tasks.iter().map(|t| t["token"].clone()).collect();
        let started = match client
            .post("/api/worker/start", &token, json!({"tokens": tokens}))
            .send()
            .await
            .and_then(|a| a.expect(&[200]))
            .and_then(|a| a.json())
        {
            Ok(v) => v,
            Err(e) => {
                stats.unexpected(format!("start: {e}"));
                continue;
            }
        };
        let results = started["results"].as_array().cloned().unwrap_or_default();
        if results.len() != tasks.len() {
            stats.unexpected(format!(
                "start: {} answers for {} leases",
                results.len(),
                tasks.len()
            ));
        }
        for (task, result) in tasks.into_iter().zip(results) {
            if let Ok(mut m) = stats.by_agent.lock() {
                let agent = task["spec"]["agent"].as_str().unwrap_or("?").to_owned();
                *m.entry(agent).or_default() += 1;
            }
            match item(&result) {
                Item::Ack => {}
                // A start sent again after its answer was lost finds the task
                // running on this very lease: `start` is not idempotent
                // (unlike `report`). Run it; a lease really gone shows at
                // the first log line.
                Item::Gone(code) if code == "invalid_transition" => {
                    stats.start_replayed.fetch_add(1, Ordering::Relaxed);
                }
                Item::Gone(_) => {
                    stats.lease_gone.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Item::Other(p) => {
                    stats.unexpected(format!("start refused: {p}"));
                    continue;
                }
            }
            stats.started.fetch_add(1, Ordering::Relaxed);
            running.fetch_add(1, Ordering::AcqRel);
            let ctx = Ctx {
                client: client.clone(),
                token: token.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
                beat: config.heartbeat_every,
            };
            let running = running.clone();
            handlers.spawn(async move {
                ctx.handle(task).await;
                running.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }
    handlers.abort_all();
    while handlers.join_next().await.is_some() {}
}

async fn node_heartbeats(
    client: Client,
    token: String,
    stats: Arc<WorkerStats>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(3)) => {}
            () = stop.cancelled() => return,
        }
        match client
            .call(
                reqwest::Method::POST,
                "/api/worker/node-heartbeat",
                Some(&token),
            )
            .send()
            .await
            .and_then(|a| a.expect(&[200]))
        {
            Ok(_) => {
                stats.node_heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => stats.unexpected(format!("node heartbeat: {e}")),
        }
    }
}

struct Ctx {
    client: Client,
    token: String,
    stats: Arc<WorkerStats>,
    stop: CancellationToken,
    beat: Duration,
}

impl Ctx {
    async fn handle(&self, task: Value) {
        let lease = task["token"].clone();
        let attempt = lease["attempt"].as_u64().unwrap_or(0);
        let agent = task["spec"]["agent"].as_str().unwrap_or("").to_owned();
        let input = task["spec"]["input"].clone();
        if !self
            .log(&lease, &format!("{agent}: attempt {attempt}"))
            .await
        {
            return;
        }
        let report = match agent.as_str() {
            "dogfood.ok" => json!({"outcome": "success", "output": {"echo": input}}),
            "dogfood.flaky" if attempt <= 1 => json!({"outcome": "failure", "error": {
                "code": FLAKY_CODE,
                "message": "dogfood.flaky fails its first attempt on purpose",
            }}),
            "dogfood.flaky" => {
                json!({"outcome": "success", "output": {"echo": input, "attempt": attempt}})
            }
            "dogfood.fail" => json!({"outcome": "failure", "error": {
                "code": FAIL_CODE,
                "message": "dogfood.fail fails on purpose",
                "non_retryable": true,
            }}),
            "dogfood.slow" => match self.slow(&lease, &input).await {
                Some(r) => r,
                None => return,
            },
            other => {
                self.stats
                    .unexpected(format!("claimed a task for an unknown agent {other:?}"));
                json!({"outcome": "failure", "error": {
                    "code": "unknown_agent",
                    "message": format!("hive-dogfood has no agent {other:?}"),
                    "non_retryable": true,
                }})
            }
        };
        let mut report = report;
        report["token"] = lease;
        self.one(
            "report",
            "/api/worker/report",
            json!({"reports": [report]}),
            &self.stats.reports,
        )
        .await;
    }

    /// Posts a one-item batch (`what`: a report, log line or heartbeat) and
    /// counts its answer: `acked` on an ack, `lease_gone` when the lease is
    /// gone, an unexpected finding otherwise. `false` only when the lease is
    /// gone.
    async fn one(&self, what: &str, path: &str, body: Value, acked: &AtomicU64) -> bool {
        let answer = self
            .client
            .post(path, &self.token, body)
            .send()
            .await
            .and_then(|a| a.expect(&[200]))
            .and_then(|a| a.json());
        match answer {
            Ok(v) => match v["results"].get(0).map(item) {
                Some(Item::Ack) => {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Some(Item::Gone(_)) => {
                    self.stats.lease_gone.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                Some(Item::Other(p)) => self.stats.unexpected(format!("{what} refused: {p}")),
                None => self.stats.unexpected(format!("{what}: no result in {v}")),
            },
            Err(e) => self.stats.unexpected(format!("{what}: {e}")),
        }
        true
    }

    /// Logs a line; `false` when the lease is gone.
    async fn log(&self, lease: &Value, line: &str) -> bool {
        let body = json!({"lines": [{"token": lease, "stream": "stdout", "line": line}]});
        self.one("log", "/api/worker/log", body, &self.stats.log_lines)
            .await
    }

    /// `dogfood.slow`: heartbeats until the lease is gone (`None`: no report)
    /// or `input.seconds` passed (the success report).
    async fn slow(&self, lease: &Value, input: &Value) -> Option<Value> {
        let seconds = input["seconds"].as_f64().unwrap_or(30.0).clamp(0.0, 3600.0);
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        while Instant::now() < until {
            tokio::select! {
                () = tokio::time::sleep(self.beat) => {}
                () = self.stop.cancelled() => return None,
            }
            let progress = json!({"elapsed_ms": started.elapsed().as_millis() as u64});
            let body = json!({"beats": [{"token": lease, "progress": progress}]});
            if !self
                .one(
                    "heartbeat",
                    "/api/worker/heartbeat",
                    body,
                    &self.stats.heartbeats,
                )
                .await
            {
                return None;
            }
        }
        Some(json!({"outcome": "success", "output": {"slept": seconds}}))
    }
}
