//! The Rust side of the Kotlin benchmark: the same workload as
//! `examples/kotlin/Bench.kt` with a Rust no-op handler, run by the same
//! library in the same process, so the Kotlin line can report its ratio to
//! Rust from one run.

use std::sync::Arc;
use std::time::Instant;

use crate::HiveError;
use crate::runtime::run;

/// What one benchmark run measured.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct BenchResult {
    /// Tasks per second from the first submit until every terminal event was
    /// seen on the tenant feed.
    pub e2e_per_s: f64,
    /// Tasks per second submitted.
    pub submit_per_s: f64,
    /// Wall time of the run.
    pub seconds: f64,
}

struct Noop;

#[async_trait::async_trait]
impl hive::TaskHandler for Noop {
    async fn run(&self, _ctx: hive::TaskContext) -> Result<serde_json::Value, hive::TaskError> {
        Ok(serde_json::Value::Null)
    }
}

/// Runs `tasks` no-op tasks on `url` with `workers` in-process workers of
/// `capacity` whose handler is Rust, submitting in batches of `batch`.
#[uniffi::export(async_runtime = "tokio")]
pub async fn bench_rust_handlers(
    url: String,
    tasks: u32,
    workers: u32,
    capacity: u32,
    batch: u32,
) -> Result<BenchResult, HiveError> {
    if tasks == 0 || workers == 0 || capacity == 0 || batch == 0 {
        return Err(HiveError::argument(
            "tasks, workers, capacity and batch must be at least 1",
        ));
    }
    run(async move {
        let h = hive::open(&url).await?;
        let ops = hive::Principal::system();
        let tenant = hive::Principal::user("bench", "bench");
        let mut handles = Vec::new();
        for _ in 0..workers {
            let mut opts = hive::WorkerOptions::new("bench-rust")
                .capacity(capacity)
                .system()
                .handler("noop", Arc::new(Noop));
            opts.claim_batch = 512;
            handles.push(h.start_worker(&ops, opts).await?);
        }
        let mut feed = h.feed(&tenant, 0).await?;
        let start = Instant::now();
        let submitter = {
            let (h, tenant) = (h.clone(), tenant.clone());
            tokio::spawn(async move {
                let mut left = tasks;
                while left > 0 {
                    let n = left.min(batch);
                    let specs = (0..n)
                        .map(|_| hive::TaskSpec::new("noop", serde_json::Value::Null))
                        .collect();
                    h.submit_batch(&tenant, specs).await?;
                    left -= n;
                }
                Ok::<_, hive::Error>(start.elapsed())
            })
        };
        let (mut seen, mut failed) = (0u32, 0u32);
        while seen < tasks {
            for e in feed.next_batch(100_000).await? {
                if e.event.kind.is_terminal() {
                    seen += 1;
                    if !matches!(e.event.kind, hive::EventKind::Succeeded { .. }) {
                        failed += 1;
                    }
                }
            }
        }
        let elapsed = start.elapsed();
        let submitted = submitter
            .await
            .map_err(|e| HiveError::Internal(e.to_string()))??;
        for handle in handles {
            handle.shutdown().await;
        }
        h.shutdown();
        if failed > 0 {
            return Err(HiveError::Internal(format!(
                "{failed} benchmark tasks did not succeed"
            )));
        }
        Ok(BenchResult {
            e2e_per_s: f64::from(tasks) / elapsed.as_secs_f64(),
            submit_per_s: f64::from(tasks) / submitted.as_secs_f64().max(1e-9),
            seconds: elapsed.as_secs_f64(),
        })
    })
    .await
}
