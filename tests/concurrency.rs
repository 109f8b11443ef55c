//! Concurrency keys across processes: three OS processes run workers against
//! the same store (PostgreSQL, Redis, a SQLite file) while 2,000 tasks over 50
//! keys with `max_running = 2` are submitted one key after the other. Every
//! handler records when it ran; no key ever has more than two handlers
//! running at once, and keys take turns (every key starts early, and the
//! completions of the first half of the run are spread evenly across keys).
//! Then a rate limit of 100 per second shared by the three processes holds
//! within 5% over 10 s.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hive::engine::HiveConfig;
use hive::worker::handler_fn;
use hive::{Concurrency, Hive, Principal, RateLimit, TaskId, TaskSpec, TaskState, WorkerOptions};
use hive_store::testing::{server_url, unique_name};
use serde_json::json;
use support::HostProcess;

const KEYS: usize = 50;
const PER_KEY: usize = 40;
const MAX_RUNNING: u32 = 2;

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn config() -> HiveConfig {
    HiveConfig {
        sweep_interval: Duration::from_millis(200),
        run_workflows: false,
        ..HiveConfig::default()
    }
}

/// The child: a host running one worker node (8 slots) whose handler notes
/// when it started and ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the child processes of the concurrency tests"]
async fn concurrency_host_process() {
    let url = std::env::var("HIVE_CHILD_URL").expect("HIVE_CHILD_URL");
    let store = hive_store::open(&url).await.expect("child opens the store");
    let hive = Hive::builder()
        .store(store)
        .config(config())
        .build()
        .expect("child builds its hive");
    let pid = std::process::id();
    let worker = hive
        .start_worker(
            &Principal::system(),
            WorkerOptions::new(format!("w{pid}"))
                .system()
                .capacity(8)
                .handler(
                    "work",
                    handler_fn(move |ctx| async move {
                        let start = wall_ms();
                        tokio::time::sleep(Duration::from_millis(15)).await;
                        let end = wall_ms();
                        Ok(json!({
                            "key": ctx.input()["customer"].as_str().unwrap_or("llm"),
                            "start": start,
                            "end": end,
                            "pid": pid,
                        }))
                    }),
                ),
        )
        .await
        .expect("child worker starts");
    support::until_stdin_closes().await;
    worker.shutdown().await;
    hive.shutdown();
}

/// The most handlers of one key running at the same time.
fn max_overlap(intervals: &[(u64, u64)]) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::with_capacity(intervals.len() * 2);
    for &(s, e) in intervals {
        edges.push((s, 1));
        edges.push((e, -1));
    }
    // An end before a start at the same millisecond: the slot was free.
    edges.sort_unstable_by_key(|&(t, d)| (t, d));
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    max as usize
}

/// Jain's fairness index of `xs` (1 = perfectly even, 1/n = one takes all).
fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if squares == 0.0 {
        return 1.0;
    }
    sum * sum / (xs.len() as f64 * squares)
}

/// Submits `specs` as alice on `url`, runs them on three worker processes
/// until every task ended (or `limit` passed), and returns the ended tasks
/// with the engine that read them.
async fn run_on_three_processes(
    backend: &str,
    url: &str,
    specs: Vec<TaskSpec>,
    limit: Duration,
) -> (Hive, Vec<hive::Task>) {
    let store = hive_store::open(url).await.expect("open");
    let hive = Hive::builder()
        .store(store)
        .config(HiveConfig {
            run_supervisor: false,
            ..config()
        })
        .build()
        .unwrap();
    let alice = Principal::user("acme", "alice");
    let mut ids: Vec<TaskId> = Vec::with_capacity(specs.len());
    for chunk in specs.chunks(500) {
        let out = hive.submit_batch(&alice, chunk.to_vec()).await.unwrap();
        ids.extend(out.into_iter().map(|s| s.id));
    }
    let procs: Vec<HostProcess> = (0..3)
        .map(|_| {
            HostProcess::spawn(
                "concurrency_host_process",
                &[("HIVE_CHILD_URL", url.to_owned())],
            )
        })
        .collect();
    let deadline = std::time::Instant::now() + limit;
    let tasks = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let tasks = hive.store().get_tasks(&ids).await.unwrap();
        let done = tasks.iter().filter(|t| t.state.is_terminal()).count();
        if done == ids.len() {
            break tasks;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{backend}: only {done} of {} tasks ended in {limit:?}",
            ids.len()
        );
    };
    for p in procs {
        p.stop();
    }
    (hive, tasks)
}

async fn three_processes_respect_max_running(backend: &str, url: String) {
    // One key after the other: without turns, the first keys would take
    // every slot until they ran out of tasks.
    let specs: Vec<TaskSpec> = (0..KEYS)
        .flat_map(|k| {
            (0..PER_KEY).map(move |i| {
                TaskSpec::new("work", json!({"customer": format!("c{k:02}"), "i": i}))
                    .concurrency(Concurrency::key_from("/customer", MAX_RUNNING))
            })
        })
        .collect();
    let (hive, tasks) =
        run_on_three_processes(backend, &url, specs, Duration::from_secs(300)).await;
    let mut by_key: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let mut pids = std::collections::BTreeSet::new();
    for t in &tasks {
        assert_eq!(t.state, TaskState::Succeeded, "{backend}: {t:?}");
        let out = t.output.as_ref().expect("output");
        let key = out["key"].as_str().expect("key").to_owned();
        let (s, e) = (out["start"].as_u64().unwrap(), out["end"].as_u64().unwrap());
        by_key.entry(key).or_default().push((s, e));
        pids.insert(out["pid"].as_u64().unwrap());
    }
    assert_eq!(by_key.len(), KEYS);
    assert!(
        pids.len() >= 2,
        "{backend}: work spread over processes: {pids:?}"
    );
    let worst = by_key
        .iter()
        .map(|(k, iv)| (max_overlap(iv), k))
        .max()
        .unwrap();
    assert!(
        worst.0 <= MAX_RUNNING as usize,
        "{backend}: key {} had {} handlers running at once",
        worst.1,
        worst.0
    );
    assert_eq!(
        worst.0, MAX_RUNNING as usize,
        "{backend}: the limit is used, not serialized below it"
    );
    // Fairness: when each key first ran, and how evenly the completions of
    // the first half of the run spread across keys.
    let t0 = by_key.values().flatten().map(|iv| iv.0).min().unwrap();
    let t1 = by_key.values().flatten().map(|iv| iv.1).max().unwrap();
    let span = (t1 - t0).max(1) as f64;
    let latest_first_start = by_key
        .values()
        .map(|iv| iv.iter().map(|x| x.0).min().unwrap() - t0)
        .max()
        .unwrap() as f64
        / span;
    let half = t0 + (t1 - t0) / 2;
    let first_half: Vec<f64> = by_key
        .values()
        .map(|iv| iv.iter().filter(|x| x.1 <= half).count() as f64)
        .collect();
    let index = jain(&first_half);
    println!(
        "hive-bench backend={backend} scenario=concurrency_keys processes=3 tasks={} keys={KEYS} \
         max_running={MAX_RUNNING} max_seen={} run_s={:.2} latest_first_start={:.3} \
         first_half_jain={index:.3}",
        tasks.len(),
        worst.0,
        span / 1000.0,
        latest_first_start
    );
    assert!(
        latest_first_start < 0.25,
        "{backend}: a key waited {:.0}% of the run for its first turn",
        latest_first_start * 100.0
    );
    assert!(
        index > 0.8,
        "{backend}: first-half completions uneven across keys (Jain {index:.3}): {first_half:?}"
    );
    hive.shutdown();
}

async fn three_processes_share_a_rate_limit(backend: &str, url: String) {
    let specs: Vec<TaskSpec> = (0..1300)
        .map(|i| {
            TaskSpec::new("work", json!({"i": i})).rate_limit(RateLimit::key(
                "llm",
                100,
                Duration::from_secs(1),
            ))
        })
        .collect();
    let (hive, tasks) =
        run_on_three_processes(backend, &url, specs, Duration::from_secs(120)).await;
    let mut starts: Vec<u64> = tasks
        .iter()
        .map(|t| {
            t.output.as_ref().expect("output")["start"]
                .as_u64()
                .unwrap()
        })
        .collect();
    starts.sort_unstable();
    let t0 = starts[0];
    // After the first second (the bucket's burst), ten seconds.
    let steady = starts
        .iter()
        .filter(|&&s| s >= t0 + 1000 && s < t0 + 11_000)
        .count();
    let worst = starts
        .iter()
        .enumerate()
        .map(|(i, &s)| starts[i..].iter().take_while(|&&x| x < s + 1000).count())
        .max()
        .unwrap();
    println!(
        "hive-bench backend={backend} scenario=rate_limit processes=3 tasks={} limit_per_s=100 \
         steady_10s={steady} steady_per_s={:.1} worst_1s={worst}",
        tasks.len(),
        steady as f64 / 10.0
    );
    assert!(
        (950..=1050).contains(&steady),
        "{backend}: {steady} tasks started in 10 s at 100/s"
    );
    // At most the burst plus a second's tokens (200), with 5% for the
    // handlers' start times, measured a little after their claims.
    assert!(worst <= 210, "{backend}: {worst} started within one second");
    hive.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_three_processes_share_a_rate_limit() {
    let Some(base) = server_url("HIVE_TEST_POSTGRES_URL") else {
        return;
    };
    let url = format!("{base}?schema={}", unique_name("rate"));
    three_processes_share_a_rate_limit("postgres", url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_processes_share_a_rate_limit() {
    let Some(base) = server_url("HIVE_TEST_REDIS_URL") else {
        return;
    };
    let url = format!("{base}?prefix={}", unique_name("rate"));
    three_processes_share_a_rate_limit("redis", url).await;
}

#[test]
fn overlap_and_fairness_arithmetic() {
    assert_eq!(max_overlap(&[(0, 10), (10, 20), (20, 30)]), 1);
    assert_eq!(max_overlap(&[(0, 10), (5, 15), (6, 7)]), 3);
    assert_eq!(max_overlap(&[]), 0);
    assert!((jain(&[1.0, 1.0, 1.0]) - 1.0).abs() < 1e-9);
    assert!((jain(&[1.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_three_processes_respect_max_running() {
    let Some(base) = server_url("HIVE_TEST_POSTGRES_URL") else {
        return;
    };
    let url = format!("{base}?schema={}", unique_name("conc"));
    three_processes_respect_max_running("postgres", url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_processes_respect_max_running() {
    let Some(base) = server_url("HIVE_TEST_REDIS_URL") else {
        return;
    };
    let url = format!("{base}?prefix={}", unique_name("conc"));
    three_processes_respect_max_running("redis", url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_three_processes_respect_max_running() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hive.db").display());
    three_processes_respect_max_running("sqlite", url).await;
}
