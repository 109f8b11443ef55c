//! Claims with many concurrency keys (issue 17, item 7):
//!
//! ```text
//! hive-bench backend=B scenario=concurrency_keys keys=1000 max_running=2 tasks=… capacity=100 claims=… claim_p50_ms=… claim_p99_ms=… tasks_per_s=…
//! hive-bench backend=B scenario=concurrency_keys keys=0 … (the same tasks without keys)
//! ```
//!
//! `--tasks` tasks (default 20,000) spread round-robin over 1,000 keys, each
//! key `max_running = 2`, are submitted; one system node of capacity 100
//! claims (and starts) 100 at a time and reports every claimed task
//! succeeded before the next claim, until all ran. Each claim is timed, and
//! the whole cycle (submit excluded) gives tasks/s. The same run without
//! keys follows, on a fresh store, for the ratio.

use std::sync::Arc;
use std::time::Instant;

use hive_core::store::NewTask;
use hive_core::{Concurrency, Owner, TaskId, TaskSpec, Timestamp};

use crate::{Args, children, open_store, percentile};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const KEYS: usize = 1_000;
const MAX_RUNNING: u32 = 2;

pub(crate) async fn bench(args: &Args) -> Result<(), BoxError> {
    for keys in [KEYS, 0] {
        run(args, keys).await?;
    }
    Ok(())
}

async fn run(args: &Args, keys: usize) -> Result<(), BoxError> {
    let store = open_store(args).await?;
    let n = args.tasks.unwrap_or(20_000);
    let capacity = args.capacity.min(100);
    let now = Timestamp::now();
    let owner = Owner {
        tenant: "bench".into(),
        principal: "bench".into(),
    };
    let specs: Vec<Arc<TaskSpec>> = (0..keys.max(1))
        .map(|k| {
            let spec = TaskSpec::new("noop", serde_json::Value::Null);
            Arc::new(if keys == 0 {
                spec
            } else {
                spec.concurrency(Concurrency::key(format!("customer-{k}"), MAX_RUNNING))
            })
        })
        .collect();
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| NewTask {
            id: TaskId::new(),
            owner: owner.clone(),
            spec: specs[i % specs.len()].clone(),
        })
        .collect();
    for chunk in tasks.chunks(1_000) {
        store.submit(chunk.to_vec(), now).await?;
    }
    let node = children::system_node(&*store, "bench-node".into(), capacity, now).await?;
    let started = Instant::now();
    let ms = crate::claims::drain(&*store, node, capacity, n, now).await?;
    let secs = started.elapsed().as_secs_f64();
    let claims = ms.len();
    println!(
        "hive-bench backend={} scenario=concurrency_keys keys={keys} max_running={} tasks={n} capacity={capacity} claims={claims} claim_p50_ms={:.3} claim_p99_ms={:.3} tasks_per_s={:.0}",
        args.backend,
        if keys == 0 { 0 } else { MAX_RUNNING },
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        n as f64 / secs,
    );
    Ok(())
}
