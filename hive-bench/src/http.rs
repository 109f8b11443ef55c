//! Honeycomb over HTTP: `GET /api/tasks/{id}` polls per second with a real
//! load generator (wrk for the most, hey for a paced run's percentiles), with
//! and without `If-None-Match`, next to the in-process `get_task` rate of the
//! same run; and remote workers over HTTP (claim and report batches) end to
//! end.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hive_core::{Hive, Principal, TaskId};
use hive_iam::{HiveIamExt, TokenKind, TokenRequest};
use honeycomb::api::{ApiLimits, ApiState};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Args;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// wrk's connections, and the in-process readers it is compared with.
const CONNECTIONS: u32 = 32;

/// A Honeycomb served in this process on a loopback port.
struct Served {
    hive: Hive,
    base: String,
    token: String,
    stop: CancellationToken,
}

async fn serve(url: &str) -> Result<Served, BoxError> {
    let hive = hive::open(url).await?;
    let stop = CancellationToken::new();
    // The rate limiter stays in the path, set too high to limit.
    let limits = ApiLimits {
        rate_per_second: 10_000_000,
        rate_burst: 10_000_000,
        ..ApiLimits::default()
    };
    let state = ApiState::new(hive.clone(), limits, stop.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = honeycomb::serve::router(state);
    let signal = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { signal.cancelled().await })
            .await;
    });
    let token = hive
        .tokens()
        .issue(
            &hive,
            &Principal::system(),
            TokenRequest::new("bench", TokenKind::User).tenant("acme"),
        )
        .await?
        .token;
    Ok(Served {
        hive,
        base,
        token,
        stop,
    })
}

fn backend_url(args: &Args) -> Result<String, BoxError> {
    Ok(match (args.backend.as_str(), &args.url) {
        (_, Some(u)) => u.clone(),
        ("memory", None) => "memory://".into(),
        ("postgres", None) => {
            let base = std::env::var("HIVE_TEST_POSTGRES_URL")
                .map_err(|_| "HIVE_TEST_POSTGRES_URL is not set (or pass --url)")?;
            let schema = hive_store::testing::unique_name("http");
            crate::fresh::schema(&base, &schema);
            format!("{base}?schema={schema}")
        }
        (other, None) => {
            return Err(format!("--http runs on memory or postgres, not {other}").into());
        }
    })
}

/// The in-process `get_task` rate: as many concurrent readers as wrk has
/// connections ([`CONNECTIONS`]), for `secs`.
async fn in_process_rate(hive: &Hive, id: TaskId, secs: u64) -> Result<f64, BoxError> {
    let p = Principal::user("acme", "bench");
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let mut readers = Vec::new();
    for _ in 0..CONNECTIONS {
        let hive = hive.clone();
        let p = p.clone();
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            while Instant::now() < until {
                for _ in 0..16 {
                    hive.get_task(&p, id).await?;
                }
                done.fetch_add(16, Ordering::Relaxed);
            }
            Ok::<_, hive_core::Error>(())
        }));
    }
    for r in readers {
        r.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// What a load generator reported.
#[derive(Debug, Default)]
struct Load {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
}

fn wrk_ms(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// `wrk` at full speed: `connections` connections on one thread for `secs`.
async fn wrk(url: &str, headers: &[String], connections: u32, secs: u64) -> Result<Load, BoxError> {
    let mut cmd = tokio::process::Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{secs}s"),
        "--latency",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| format!("cannot run wrk ({e}); apt-get install wrk"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut load = Load::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => load.per_s = v.parse()?,
            ["50%", v] => load.p50_ms = wrk_ms(v).unwrap_or(f64::NAN),
            ["99%", v] => load.p99_ms = wrk_ms(v).unwrap_or(f64::NAN),
            ["Non-2xx", "or", "3xx", "responses:", n] => load.non_2xx = n.parse()?,
            _ => {}
        }
    }
    if load.per_s == 0.0 {
        return Err(format!("wrk printed no rate:\n{text}").into());
    }
    Ok(load)
}

/// `hey` paced at `rate` requests/s in all, for `secs`.
async fn hey(url: &str, headers: &[String], rate: f64, secs: u64) -> Result<Load, BoxError> {
    let workers = 16u32;
    let per_worker = (rate / workers as f64).max(1.0);
    let bin = std::env::var("HEY").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        let go_bin = format!("{home}/go/bin/hey");
        if std::path::Path::new(&go_bin).exists() {
            go_bin
        } else {
            "hey".into()
        }
    });
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args([
        "-z",
        &format!("{secs}s"),
        "-c",
        &workers.to_string(),
        "-q",
        &format!("{per_worker:.0}"),
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| format!("cannot run {bin} ({e}); go install github.com/rakyll/hey@latest"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut load = Load::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => load.per_s = v.parse()?,
            ["50%%", "in", v, "secs"] | ["50%", "in", v, "secs"] => {
                load.p50_ms = v.parse::<f64>()? * 1000.0
            }
            ["99%%", "in", v, "secs"] | ["99%", "in", v, "secs"] => {
                load.p99_ms = v.parse::<f64>()? * 1000.0
            }
            _ => {}
        }
    }
    if load.per_s == 0.0 {
        return Err(format!("hey printed no rate:\n{text}").into());
    }
    Ok(load)
}

/// `--http`: polls of `GET /api/tasks/{id}`.
pub(crate) async fn polls(args: &Args) -> Result<(), BoxError> {
    let url = backend_url(args)?;
    let s = serve(&url).await?;
    let http = reqwest::Client::new();
    // Some tasks in the store, one of them polled.
    let specs: Vec<Value> = (0..1000)
        .map(|i| json!({"agent": "bench", "input": i}))
        .collect();
    let batch: Value = http
        .post(format!("{}/api/tasks", s.base))
        .bearer_auth(&s.token)
        .json(&json!({"tasks": specs}))
        .send()
        .await?
        .json()
        .await?;
    let id = batch["tasks"][500]["id"]
        .as_str()
        .ok_or("no task id")?
        .to_owned();
    let task_id: TaskId = id.parse()?;
    let poll = format!("{}/api/tasks/{id}", s.base);
    let auth = format!("Authorization: Bearer {}", s.token);
    let etag = format!("If-None-Match: W/\"{id}-1\"");
    let secs = args.seconds.clamp(2, 60);
    let in_process = in_process_rate(&s.hive, task_id, secs.min(5)).await?;
    for (name, headers) in [
        ("get", vec![auth.clone()]),
        ("get_if_none_match", vec![auth.clone(), etag.clone()]),
    ] {
        let full = wrk(&poll, &headers, CONNECTIONS, secs).await?;
        let half = full.per_s / 2.0;
        let paced = hey(&poll, &headers, half, secs).await?;
        println!(
            "hive-bench backend={} http=poll mode={name} polls_per_s={:.0} wrk_p50_ms={:.2} wrk_p99_ms={:.2} non_2xx={} in_process_get_per_s={:.0} ratio={:.3} paced_rate_per_s={:.0} paced_p50_ms={:.2} paced_p99_ms={:.2}",
            args.backend,
            full.per_s,
            full.p50_ms,
            full.p99_ms,
            full.non_2xx,
            in_process,
            full.per_s / in_process,
            paced.per_s,
            paced.p50_ms,
            paced.p99_ms,
        );
    }
    s.stop.cancel();
    s.hive.shutdown();
    Ok(())
}

/// `--http-workers`: `--tasks` tasks run by `--workers` remote workers over
/// HTTP (claim `--capacity` with start, report in one batch), end to end.
pub(crate) async fn workers(args: &Args) -> Result<(), BoxError> {
    let url = backend_url(args)?;
    let s = serve(&url).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let n = args.tasks.unwrap_or(100_000);
    let capacity = args.capacity.min(1000);
    let mut worker_tokens = Vec::new();
    for i in 0..args.workers {
        let node: Value = http
            .post(format!("{}/api/nodes", s.base))
            .bearer_auth(&s.token)
            .json(&json!({"name": format!("remote-{i}"), "capacity": capacity}))
            .send()
            .await?
            .json()
            .await?;
        worker_tokens.push(
            node["worker_token"]
                .as_str()
                .ok_or("no worker token")?
                .to_owned(),
        );
    }
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in worker_tokens {
        let http = http.clone();
        let base = s.base.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while done.load(Ordering::Relaxed) < n {
                let claim: Value = http
                    .post(format!("{base}/api/worker/claim"))
                    .bearer_auth(&w)
                    .json(&json!({"max": capacity, "start": true, "wait": "1s"}))
                    .send()
                    .await?
                    .json()
                    .await?;
                let claimed = claim["tasks"].as_array().cloned().unwrap_or_default();
                if claimed.is_empty() {
                    continue;
                }
                let reports: Vec<Value> = claimed
                    .iter()
                    .map(|t| json!({"token": t["token"], "outcome": "success", "output": t["spec"]["input"]}))
                    .collect();
                let answer: Value = http
                    .post(format!("{base}/api/worker/report"))
                    .bearer_auth(&w)
                    .json(&json!({"reports": reports}))
                    .send()
                    .await?
                    .json()
                    .await?;
                let ok = answer["results"]
                    .as_array()
                    .map_or(0, |r| r.iter().filter(|r| r["ack"].is_object()).count());
                done.fetch_add(ok, Ordering::Relaxed);
            }
            Ok::<_, reqwest::Error>(())
        }));
    }
    // Submit in batches while the workers run.
    let batch = args.batch.clamp(1, 1000);
    let submit_started = Instant::now();
    let mut submitted = 0;
    while submitted < n {
        let k = batch.min(n - submitted);
        let specs: Vec<Value> = (0..k)
            .map(|i| json!({"agent": "bench", "input": submitted + i}))
            .collect();
        let r = http
            .post(format!("{}/api/tasks", s.base))
            .bearer_auth(&s.token)
            .json(&json!({"tasks": specs}))
            .send()
            .await?;
        if !r.status().is_success() {
            return Err(format!("submit answered {}: {}", r.status(), r.text().await?).into());
        }
        submitted += k;
    }
    let submit_s = submit_started.elapsed().as_secs_f64();
    for t in tasks {
        t.await??;
    }
    let e2e = started.elapsed().as_secs_f64();
    println!(
        "hive-bench backend={} http=remote-workers tasks={n} workers={} claim_max={capacity} submit_per_s={:.0} e2e_per_s={:.0}",
        args.backend,
        args.workers,
        n as f64 / submit_s,
        n as f64 / e2e,
    );
    s.stop.cancel();
    s.hive.shutdown();
    Ok(())
}
