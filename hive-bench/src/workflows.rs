//! Workflow benchmarks:
//!
//! ```text
//! hive-bench workflow=validate steps=10000 ms=…
//! hive-bench workflow=fanout width=1000 backend=B ms=…
//! ```
//!
//! `validate` times [`hive_core::workflow::validate`] on a random DAG (each step
//! depends on up to three earlier ones; best of five). `fanout` times one
//! workflow end to end — submit until its `Finished` event is seen — whose root
//! emits a list of `width` items, a map step runs one no-op task per item on two
//! in-process workers, and a join step aggregates them.

use std::time::{Duration, Instant};

use hive_core::engine::HiveConfig;
use hive_core::worker::handler_fn;
use hive_core::workflow::{
    StepSpec, Trigger, ValidationLimits, WorkflowEventKind, WorkflowSpec, WorkflowState, validate,
};
use hive_core::{Hive, Principal, RetryPolicy, WorkerOptions};
use rand::{Rng, SeedableRng};

use crate::{Args, open_store};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn random_dag(steps: usize, seed: u64) -> WorkflowSpec {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let specs = (0..steps)
        .map(|i| {
            let mut s = StepSpec::new(format!("s{i}"), "noop", serde_json::Value::Null);
            if i > 0 {
                let k = rng.random_range(0..=3usize.min(i));
                let mut parents: Vec<usize> = (0..k).map(|_| rng.random_range(0..i)).collect();
                parents.sort_unstable();
                parents.dedup();
                s = s.after(parents.into_iter().map(|p| format!("s{p}")));
            }
            s
        })
        .collect();
    WorkflowSpec::new("random", specs)
}

pub(crate) async fn bench(args: &Args) -> Result<(), BoxError> {
    // Validation.
    let steps = 10_000;
    let spec = random_dag(steps, 42);
    let limits = ValidationLimits {
        max_depth: steps,
        ..ValidationLimits::default()
    };
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let order = validate(&spec, &limits)?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(order.len(), steps);
    }
    println!("hive-bench workflow=validate steps={steps} ms={best:.2}");

    // Fan-out / fan-in.
    let store = open_store(args).await?;
    let hive = Hive::builder()
        .store(store)
        .config(HiveConfig::default())
        .build()?;
    let system = Principal::system();
    let user = Principal::user("bench", "bench");
    let mut workers = Vec::new();
    for i in 0..args.workers {
        let mut opts = WorkerOptions::new(format!("wf-bench-{i}"))
            .system()
            .capacity(args.capacity)
            .handler(
                "noop",
                handler_fn(|_| async { Ok(serde_json::Value::Null) }),
            )
            .handler(
                "emit",
                handler_fn(|ctx| async move { Ok(ctx.input().clone()) }),
            )
            .handler(
                "count",
                handler_fn(|ctx| async move {
                    let n = ctx.input()["parents"]["each"]["output"]
                        .as_array()
                        .map_or(0, |a| a.len());
                    Ok(serde_json::json!({ "children": n }))
                }),
            );
        opts.claim_batch = args.capacity;
        workers.push(hive.start_worker(&system, opts).await?);
    }
    let width = args.width;
    let items: Vec<usize> = (0..width).collect();
    let spec = WorkflowSpec::new(
        "fanout",
        vec![
            StepSpec::new("root", "emit", serde_json::json!({ "items": items }))
                .retry(RetryPolicy::none()),
            StepSpec::new("each", "noop", serde_json::Value::Null)
                .map_over("root", "/items")
                .retry(RetryPolicy::none()),
            StepSpec::new("join", "count", serde_json::Value::Null)
                .after(["each"])
                .trigger(Trigger::AllDone)
                .retry(RetryPolicy::none()),
        ],
    );
    let start = Instant::now();
    let submitted = hive.submit_workflow(&user, spec).await?;
    let sub = hive.subscribe_workflow(&user, submitted.id, 0).await?;
    let events = tokio::time::timeout(Duration::from_secs(300), sub.collect()).await??;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    match events.last().map(|e| &e.kind) {
        Some(WorkflowEventKind::Finished {
            state: WorkflowState::Succeeded,
        }) => {}
        other => return Err(format!("fan-out workflow did not succeed: {other:?}").into()),
    }
    let view = hive.get_workflow(&user, submitted.id).await?;
    let join = view
        .steps
        .iter()
        .find(|s| s.id == "join")
        .and_then(|s| s.output.clone());
    if join != Some(serde_json::json!({ "children": width })) {
        return Err(format!("join saw {join:?}, expected {width} children").into());
    }
    println!(
        "hive-bench workflow=fanout width={width} backend={} ms={ms:.1}",
        args.backend
    );
    for w in workers {
        w.shutdown().await;
    }
    hive.shutdown();
    Ok(())
}
