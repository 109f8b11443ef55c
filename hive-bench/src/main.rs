//! `hive-bench`: end-to-end throughput and latency of Hive, printed as one
//! machine-readable line per run:
//!
//! ```text
//! hive-bench backend=memory tasks=N workers=K submit_per_s=… e2e_per_s=… p50_ms=… p99_ms=…
//! ```
//!
//! - `submit_per_s`: tasks stored per second by the submitter (batches), while
//!   workers run.
//! - `e2e_per_s`: tasks per second from the first submit until a feed subscriber
//!   has seen every task's terminal event: submit → claimed → started →
//!   succeeded, every event stored.
//! - `p50_ms`/`p99_ms`: submit to terminal event seen by a subscriber, measured in
//!   a second run paced at half the measured `e2e_per_s`.
//!
//! Run: `cargo run --release -p hive-bench -- --backend memory`
//!
//! `--workflows`, `--unacked`, `--audit-contention` and `--claim-spread`
//! measure other things
//! (see those modules).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod acks;
mod audit;
mod baseline;
mod beats;
mod children;
mod claims;
mod costs;
mod drivers;
mod fresh;
mod http;
mod keys;
mod retention;
mod schedules;
mod workflows;

use clap::Parser;
use hive_core::audit::{Auditor, NoAudit};
use hive_core::auth::{AllowAll, Authorizer};
use hive_core::engine::HiveConfig;
use hive_core::store::Store;
use hive_core::worker::handler_fn;
use hive_core::{Hive, Principal, RetryPolicy, TaskId, TaskSpec, WorkerOptions};

/// The bench binary uses mimalloc: an allocator is the host's choice, and the
/// engine allocates a few small objects per task (events, leases). It is
/// built without transparent huge pages (the `no_thp` feature): with them,
/// mimalloc's fresh pages fault in 2 MiB at a time, each zeroed, which took up
/// to 44% of this process's CPU and made its CPU per task swing threefold
/// between identical runs (docs/benchmarks.md, issue 19).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug, Clone)]
#[command(about = "Hive end-to-end benchmark; prints `hive-bench key=value …` lines")]
struct Args {
    /// The backend: memory, sqlite, postgres or redis.
    #[arg(long, default_value = "memory")]
    backend: String,
    /// The backend URL (default: memory://; for sqlite a file in a temporary
    /// folder; for postgres and redis `HIVE_TEST_POSTGRES_URL` /
    /// `HIVE_TEST_REDIS_URL`, in a fresh schema / key prefix per run; what a
    /// run creates is removed when the benchmark ends).
    #[arg(long)]
    url: Option<String>,
    /// Tasks per run (default: 200,000 on memory, 20,000 on durable backends).
    #[arg(long)]
    tasks: Option<usize>,
    /// In-process worker nodes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Tasks per submit batch.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Capacity (and claim batch) of each worker node.
    #[arg(long, default_value_t = 1_024)]
    capacity: u32,
    /// Authorization: `on` (default scope policy) or `off` (allow all).
    #[arg(long, default_value = "on")]
    iam: String,
    /// Skip the paced latency run.
    #[arg(long)]
    no_latency: bool,
    /// Runs of the throughput measurement (the best is printed).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Measure workflows instead: validation of a random 10,000-step DAG, and a
    /// 1,000-wide fan-out/fan-in end to end.
    #[arg(long)]
    workflows: bool,
    /// Measure `unacked_terminal(limit = 10)` with one old unacknowledged
    /// terminal event before `--tasks` (default 1,000,000) acknowledged ones.
    #[arg(long)]
    unacked: bool,
    /// Measure audit appends under contention: `--processes` processes ×
    /// `--submitters` submitters for `--seconds`, one tenant.
    #[arg(long)]
    audit_contention: bool,
    /// Processes of `--audit-contention`.
    #[arg(long, default_value_t = 4)]
    processes: usize,
    /// Submitters per process of `--audit-contention`.
    #[arg(long, default_value_t = 8)]
    submitters: usize,
    /// Duration of `--audit-contention`, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Measure claims over many one-task queues: `--tasks` users (default
    /// 1,000) with one task each, one node of `--capacity` (at most 100).
    #[arg(long)]
    claim_spread: bool,
    /// Measure heartbeat storage and latency: `--tasks` (default 1,000)
    /// running tasks on `--workers` nodes, each node beating once a second for
    /// `--seconds`; a line per minute.
    #[arg(long)]
    heartbeats: bool,
    /// Measure workflow driving across `--processes` processes: `--tasks`
    /// (default 5,000) running workflows, each process driving for
    /// `--seconds`.
    #[arg(long)]
    workflow_drivers: bool,
    /// Internal: run as one driver of `--workflow-drivers` on this store URL.
    #[arg(long, hide = true)]
    driver_child: Option<String>,
    /// Internal: run as one child of `--audit-contention` on this store URL.
    #[arg(long, hide = true)]
    audit_child: Option<String>,
    /// Measure Honeycomb's `GET /api/tasks/{id}` over HTTP with wrk and hey
    /// (`--seconds` each, default 10 here), on memory or postgres.
    #[arg(long)]
    http: bool,
    /// Measure remote workers over HTTP end to end: `--tasks` (default
    /// 100,000) tasks, `--workers` workers claiming `--capacity` at a time.
    #[arg(long)]
    http_workers: bool,
    /// Measure schedule firing: 100 schedules through one simulated day,
    /// `--tasks` slots in all (default 100,000 on memory, 10,000 durable).
    #[arg(long)]
    schedules: bool,
    /// Measure the store's size under a steady load with one-hour retention
    /// over `--seconds` simulated seconds (default three hours), `--tasks`
    /// tasks per simulated minute (default 1,000).
    #[arg(long)]
    retention: bool,
    /// With `--retention`: also delete compacted tasks after the hour.
    #[arg(long)]
    delete_ended: bool,
    /// Measure claims of tasks spread over 1,000 concurrency keys
    /// (`max_running` 2), `--tasks` tasks (default 20,000), against the same
    /// tasks without keys in the same run.
    #[arg(long)]
    concurrency_keys: bool,
    /// Width of the workflow fan-out.
    #[arg(long, default_value_t = 1_000)]
    width: usize,
}

struct RunResult {
    submit_per_s: f64,
    e2e_per_s: f64,
    latencies_ms: Vec<f64>,
}

async fn open_store(
    args: &Args,
) -> Result<Arc<dyn Store>, Box<dyn std::error::Error + Send + Sync>> {
    let url = store_url(args)?;
    Ok(hive_store::open(&url).await?)
}

/// The URL of a fresh, empty store for one run.
fn store_url(args: &Args) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let fresh = hive_store::testing::unique_name("bench");
    // Removed when the benchmark ends (`fresh::remove_all`).
    let with = |base: &str, key: &str| {
        if key == "schema" {
            fresh::schema(base, &fresh);
        } else {
            fresh::prefix(base, &fresh);
        }
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}{key}={fresh}")
    };
    let env = |var: &str| {
        std::env::var(var).map_err(|_| format!("--backend {} needs --url or {var}", args.backend))
    };
    Ok(match (args.backend.as_str(), &args.url) {
        ("memory", None) => "memory://".to_string(),
        ("sqlite", None) => {
            let dir = std::env::temp_dir().join(&fresh);
            std::fs::create_dir_all(&dir)?;
            fresh::folder(dir.clone());
            format!("sqlite://{}", dir.join("hive.db").display())
        }
        ("postgres", None) => with(&env("HIVE_TEST_POSTGRES_URL")?, "schema"),
        ("redis", None) => with(&env("HIVE_TEST_REDIS_URL")?, "prefix"),
        ("postgres", Some(u)) => with(u, "schema"),
        ("redis", Some(u)) => with(u, "prefix"),
        ("memory" | "sqlite", Some(u)) => u.clone(),
        (other, _) => {
            return Err(
                format!("unknown backend {other:?}: memory, sqlite, postgres or redis").into(),
            );
        }
    })
}

/// One run: `tasks` tasks submitted in batches, optionally paced at `rate`
/// tasks/s; returns throughput and per-task latencies.
async fn run(
    args: &Args,
    rate: Option<f64>,
) -> Result<RunResult, Box<dyn std::error::Error + Send + Sync>> {
    let store = open_store(args).await?;
    // iam=on: the deployment default (scope policy and the hash-chained audit
    // trail in the same store); iam=off: allow everything, record nothing.
    let (authorizer, auditor): (Arc<dyn Authorizer>, Arc<dyn Auditor>) = if args.iam == "off" {
        (Arc::new(AllowAll), Arc::new(NoAudit))
    } else {
        (
            Arc::new(hive_iam::ScopePolicy::new()),
            Arc::new(hive_iam::AuditTrail::new(store.clone())),
        )
    };
    let hive = Hive::builder()
        .store(store)
        .authorizer(authorizer)
        .auditor(auditor)
        .config(HiveConfig::default())
        .build()?;
    let system = Principal::system();
    let user = Principal::user("bench", "bench");
    let mut workers = Vec::new();
    for i in 0..args.workers {
        let mut opts = WorkerOptions::new(format!("bench-{i}"))
            .system()
            .capacity(args.capacity)
            .handler(
                "noop",
                handler_fn(|_ctx| async { Ok(serde_json::Value::Null) }),
            );
        opts.claim_batch = args.capacity;
        workers.push(hive.start_worker(&system, opts).await?);
    }

    let n = tasks(args);
    let mut feed = hive.feed(&user, 0).await?;
    let progress = Arc::new(AtomicUsize::new(0));
    let seen_count = progress.clone();
    let mut subscriber = tokio::spawn(async move {
        let mut seen: Vec<(TaskId, Instant)> = Vec::with_capacity(n);
        while seen.len() < n {
            let batch = feed.next_batch(4096).await?;
            let now = Instant::now();
            for ev in batch {
                if ev.event.kind.is_terminal() {
                    seen.push((ev.event.task, now));
                }
            }
            seen_count.store(seen.len(), Ordering::Relaxed);
        }
        Ok::<_, hive_core::Error>((seen, Instant::now()))
    });

    let template = TaskSpec::new("noop", serde_json::Value::Null).retry(RetryPolicy::none());
    let start = Instant::now();
    let mut submitted: Vec<(TaskId, Instant)> = Vec::with_capacity(n);
    let mut sent = 0;
    // Paced runs submit every millisecond what the rate allows since the start.
    let paced_batch = rate.map(|r| ((r / 1000.0).ceil() as usize).max(1));
    while sent < n {
        let k = paced_batch.unwrap_or(args.batch).min(n - sent);
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let specs = vec![template.clone(); k];
        let at = Instant::now();
        for s in hive.submit_batch(&user, specs).await? {
            submitted.push((s.id, at));
        }
        sent += k;
    }
    let submit_secs = start.elapsed().as_secs_f64();
    // A watchdog: fail with a diagnosis if no task ends for 20 s.
    let mut last = (0, Instant::now());
    let (seen, end) = loop {
        match tokio::time::timeout(Duration::from_secs(1), &mut subscriber).await {
            Ok(joined) => break joined??,
            Err(_) => {
                let count = progress.load(Ordering::Relaxed);
                if count != last.0 {
                    last = (count, Instant::now());
                } else if last.1.elapsed() > Duration::from_secs(20) {
                    let diag = diagnose(&hive, &user).await;
                    return Err(format!("no task ended for 20s ({count}/{n} ended): {diag}").into());
                }
            }
        }
    };
    let e2e_secs = (end - start).as_secs_f64();

    if rate.is_some()
        && let Ok(path) = std::env::var("HIVE_BENCH_DUMP")
    {
        // Debugging aid: "submit_offset_ms latency_ms" per task of the paced run.
        let at: HashMap<TaskId, Instant> = submitted.iter().copied().collect();
        let lines: Vec<String> = seen
            .iter()
            .filter_map(|(id, t)| {
                at.get(id).map(|s| {
                    format!(
                        "{:.3} {:.3}",
                        (*s - start).as_secs_f64() * 1e3,
                        (*t - *s).as_secs_f64() * 1e3
                    )
                })
            })
            .collect();
        std::fs::write(path, lines.join("\n"))?;
    }
    let at: HashMap<TaskId, Instant> = submitted.into_iter().collect();
    let mut latencies_ms: Vec<f64> = seen
        .iter()
        .filter_map(|(id, t)| at.get(id).map(|s| (*t - *s).as_secs_f64() * 1e3))
        .collect();
    latencies_ms.sort_by(|a, b| a.total_cmp(b));
    for w in workers {
        w.shutdown().await;
    }
    hive.shutdown();
    Ok(RunResult {
        submit_per_s: n as f64 / submit_secs,
        e2e_per_s: n as f64 / e2e_secs,
        latencies_ms,
    })
}

/// Counts tasks by state and lists nodes: what a stalled run looks like.
async fn diagnose(hive: &Hive, user: &Principal) -> String {
    let mut by_state: std::collections::BTreeMap<String, usize> = Default::default();
    let mut query = hive_core::task::TaskQuery {
        limit: Some(1000),
        ..Default::default()
    };
    let mut sample = None;
    loop {
        let Ok(page) = hive.list_tasks(user, &query).await else {
            break;
        };
        for t in &page.items {
            *by_state.entry(t.state.to_string()).or_default() += 1;
            if !t.state.is_terminal() && sample.is_none() {
                sample = Some(t.clone());
            }
        }
        match page.next {
            Some(n) => query.after = Some(n),
            None => break,
        }
    }
    let nodes = hive
        .list_nodes(&Principal::system())
        .await
        .unwrap_or_default();
    let nodes: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}:{:?}:in_flight={}", n.spec.name, n.status, n.in_flight))
        .collect();
    let events = match &sample {
        Some(t) => hive
            .store()
            .read_events(t.id, 0, 100)
            .await
            .map(|e| format!("{:?}", e.iter().map(|e| e.kind.name()).collect::<Vec<_>>()))
            .unwrap_or_default(),
        None => String::new(),
    };
    format!(
        "states={by_state:?} nodes={nodes:?} sample={:?} events={events}",
        sample.map(|t| (t.id, t.state, t.available_at, t.updated_at))
    )
}

fn tasks(args: &Args) -> usize {
    args.tasks.unwrap_or(if args.backend == "memory" {
        200_000
    } else {
        20_000
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if !matches!(args.iam.as_str(), "on" | "off") {
        return Err(format!("--iam must be on or off, got {:?}", args.iam).into());
    }
    if tasks(&args) == 0 || args.batch == 0 || args.workers == 0 || args.capacity == 0 {
        return Err("--tasks, --batch, --workers and --capacity must be at least 1".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Everything runs on the runtime's two worker threads (the main thread only
    // waits), so the benchmark uses the machine's two cores and no more.
    let outcome = rt.block_on(async move { tokio::spawn(bench(args)).await });
    outcome
        .map_err(|e| format!("benchmark task failed: {e}"))?
        .map_err(|e| e.to_string().into())
}

/// Runs the measurement `args` asks for, then removes the stores its runs
/// created.
async fn bench(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let outcome = measure(args).await;
    fresh::remove_all().await;
    outcome
}

async fn measure(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if args.workflows {
        return workflows::bench(&args).await;
    }
    if args.http {
        return http::polls(&args).await;
    }
    if args.concurrency_keys {
        return keys::bench(&args).await;
    }
    if args.schedules {
        return schedules::bench(&args).await;
    }
    if args.retention {
        return retention::bench(&args).await;
    }
    if args.http_workers {
        return http::workers(&args).await;
    }
    if args.unacked {
        return acks::bench(&args).await;
    }
    if let Some(url) = &args.audit_child {
        return audit::child(url, args.submitters, args.seconds).await;
    }
    if args.claim_spread {
        return claims::bench(&args).await;
    }
    if args.heartbeats {
        return beats::bench(&args).await;
    }
    if let Some(url) = &args.driver_child {
        return drivers::child(url, args.seconds).await;
    }
    if args.workflow_drivers {
        return drivers::bench(&args).await;
    }
    if args.audit_contention {
        return audit::bench(&args).await;
    }
    {
        // The server's own counters around each throughput run: the costs
        // per task of the best run are printed with it.
        let probe = match args.backend.as_str() {
            "postgres" | "redis" => {
                let var = if args.backend == "postgres" {
                    "HIVE_TEST_POSTGRES_URL"
                } else {
                    "HIVE_TEST_REDIS_URL"
                };
                let base = match &args.url {
                    Some(u) => u.clone(),
                    None => std::env::var(var)?,
                };
                costs::Probe::for_backend(&args.backend, &base)
            }
            _ => None,
        };
        let mut best: Option<(RunResult, String)> = None;
        for _ in 0..args.runs.max(1) {
            let before = match &probe {
                Some(p) => Some(p.read().await?),
                None => None,
            };
            let cpu = costs::Cpu::now();
            let r = run(&args, None).await?;
            let cpu = cpu.per_task(&costs::Cpu::now(), &args.backend, tasks(&args));
            let cost = match (&probe, before) {
                (Some(p), Some(b)) => {
                    format!(" {}{cpu}", p.per_task(&b, &p.read().await?, tasks(&args)))
                }
                _ => cpu,
            };
            if best.as_ref().is_none_or(|(b, _)| r.e2e_per_s > b.e2e_per_s) {
                best = Some((r, cost));
            }
        }
        let (best, cost) = best.ok_or("no run")?;
        let (p50, p99, paced) = if args.no_latency {
            (
                percentile(&best.latencies_ms, 0.5),
                percentile(&best.latencies_ms, 0.99),
                0.0,
            )
        } else {
            let rate = best.e2e_per_s / 2.0;
            let paced = run(&args, Some(rate)).await?;
            (
                percentile(&paced.latencies_ms, 0.5),
                percentile(&paced.latencies_ms, 0.99),
                rate,
            )
        };
        println!(
            "hive-bench backend={} tasks={} workers={} submit_per_s={:.0} e2e_per_s={:.0} p50_ms={:.3} p99_ms={:.3} latency_rate_per_s={:.0} iam={}{}",
            args.backend,
            tasks(&args),
            args.workers,
            best.submit_per_s,
            best.e2e_per_s,
            p50,
            p99,
            paced,
            args.iam,
            cost
        );
        if args.backend == "postgres" {
            let url = match &args.url {
                Some(u) => u.clone(),
                None => std::env::var("HIVE_TEST_POSTGRES_URL")?,
            };
            let jobs = tasks(&args);
            let per_s = baseline::naive_queue(&url, jobs, 4, 4).await?;
            println!(
                "hive-bench backend=postgres baseline=naive-queue jobs={jobs} per_s={per_s:.0} ratio={:.2}",
                best.e2e_per_s / per_s
            );
        }
        Ok(())
    }
}
