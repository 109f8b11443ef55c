//! Claim cost with many small queues (issue 11, item 13, measured before it
//! is fixed):
//!
//! ```text
//! hive-bench backend=B scenario=claim_spread users=1000 capacity=100 claims=… p50_ms=… max_ms=…
//! ```
//!
//! `users` principals of one tenant submit one task each (one ready queue
//! each); one system node of capacity `capacity` claims `capacity` at a time,
//! finishing each batch, until every task ran. Each claim is timed.

use std::sync::Arc;
use std::time::Instant;

use hive_core::scheduler::FairScheduler;
use hive_core::store::{ClaimRequest, Command, NewTask};
use hive_core::task::machine::Op;
use hive_core::{Owner, TaskId, TaskSpec, Timestamp};

use crate::{Args, children, open_store, percentile};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) async fn bench(args: &Args) -> Result<(), BoxError> {
    let store = open_store(args).await?;
    let users = args.tasks.unwrap_or(1_000);
    let capacity = args.capacity.min(100);
    let now = Timestamp::now();
    let spec = Arc::new(TaskSpec::new("noop", serde_json::Value::Null));
    let tasks: Vec<NewTask> = (0..users)
        .map(|u| NewTask {
            id: TaskId::new(),
            owner: Owner {
                tenant: "bench".into(),
                principal: format!("user{u}").into(),
            },
            spec: spec.clone(),
        })
        .collect();
    for chunk in tasks.chunks(1_000) {
        store.submit(chunk.to_vec(), now).await?;
    }
    let node = children::system_node(&*store, "bench-node".into(), capacity, now).await?;
    let ms = drain(&*store, node, capacity, users, now).await?;
    let claims = ms.len();
    println!(
        "hive-bench backend={} scenario=claim_spread users={users} capacity={capacity} claims={claims} p50_ms={:.3} max_ms={:.3}",
        args.backend,
        percentile(&ms, 0.5),
        ms[claims - 1],
    );
    Ok(())
}

/// Claims (and starts) up to `capacity` tasks at a time on `node` and reports
/// each batch succeeded, until `n` tasks ran; returns each claim's time in
/// ms, sorted.
pub(crate) async fn drain(
    store: &dyn hive_core::store::Store,
    node: hive_core::NodeId,
    capacity: u32,
    n: usize,
    now: Timestamp,
) -> Result<Vec<f64>, BoxError> {
    let scheduler = FairScheduler::default();
    let mut ms = Vec::new();
    let mut done = 0;
    while done < n {
        let t = Instant::now();
        let claimed = store
            .claim(ClaimRequest {
                node,
                max: capacity,
                agents: &[],
                start: true,
                scheduler: &scheduler,
                now,
            })
            .await?
            .tasks;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        if claimed.is_empty() {
            return Err(format!("a claim found nothing with {} tasks left", n - done).into());
        }
        done += claimed.len();
        let finish = claimed
            .iter()
            .map(|c| Command {
                task: c.token.task,
                op: Op::Succeed {
                    token: c.token,
                    node,
                    output: serde_json::Value::Null,
                },
            })
            .collect();
        for ack in store.apply(finish, now).await? {
            ack?;
        }
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}
