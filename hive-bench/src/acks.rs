//! Terminal acknowledgements with a long tail (issue 11, item 14):
//!
//! ```text
//! hive-bench backend=B scenario=unacked_terminal terminal=N limit=10 p50_ms=… p99_ms=… max_ms=…
//! ```
//!
//! `N` tasks end (cancelled while pending, in batches); a consumer lists and
//! acknowledges every one of them except the very first, so one old
//! unacknowledged terminal event sits before `N - 1` acknowledged ones. Then
//! `unacked_terminal(limit = 10)` is timed 200 times; each answer must be that
//! one task.

use std::sync::Arc;
use std::time::Instant;

use hive_core::store::{Command, NewTask};
use hive_core::task::machine::Op;
use hive_core::{Owner, TaskId, TaskSpec, Timestamp};

use crate::{Args, open_store, percentile};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) async fn bench(args: &Args) -> Result<(), BoxError> {
    let store = open_store(args).await?;
    let n = args.tasks.unwrap_or(1_000_000);
    let owner = Owner {
        tenant: "bench".into(),
        principal: "alice".into(),
    };
    let now = Timestamp::now();
    let spec = Arc::new(TaskSpec::new("noop", serde_json::Value::Null));
    let mut first = None;
    let started = Instant::now();
    let mut done = 0usize;
    while done < n {
        let k = (n - done).min(2_000);
        let batch: Vec<NewTask> = (0..k)
            .map(|_| NewTask {
                id: TaskId::new(),
                owner: owner.clone(),
                spec: spec.clone(),
            })
            .collect();
        let ids: Vec<TaskId> = batch.iter().map(|t| t.id).collect();
        first.get_or_insert(ids[0]);
        store.submit(batch, now).await?;
        let cancels = ids
            .iter()
            .map(|&task| Command {
                task,
                op: Op::Cancel {
                    by: "bench".into(),
                    reason: "ended".into(),
                },
            })
            .collect();
        for ack in store.apply(cancels, now).await? {
            ack?;
        }
        done += k;
        if done % 100_000 < 2_000 {
            eprintln!("hive-bench: {done}/{n} tasks ended");
        }
    }
    let first = first.ok_or("--tasks must be at least 2")?;
    let consumer = "bench";
    loop {
        let page = store
            .unacked_terminal(&owner.tenant, consumer, 10_000)
            .await?;
        let ack: Vec<TaskId> = page
            .iter()
            .map(|e| e.event.task)
            .filter(|&t| t != first)
            .collect();
        if ack.is_empty() {
            break;
        }
        store.ack_terminal(&owner.tenant, consumer, &ack).await?;
    }
    eprintln!(
        "hive-bench: {n} terminal events prepared in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut ms = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        let got = store.unacked_terminal(&owner.tenant, consumer, 10).await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        if got.len() != 1 || got[0].event.task != first {
            return Err(format!("expected only the old task, got {} events", got.len()).into());
        }
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "hive-bench backend={} scenario=unacked_terminal terminal={n} limit=10 p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        args.backend,
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms[ms.len() - 1],
    );
    Ok(())
}
