//! Heartbeat storage and latency over time (issue 11, item 12):
//!
//! ```text
//! hive-bench backend=B scenario=heartbeats tasks=1000 nodes=2 minute=M beats=… events_stored=… events_per_task=… p50_ms=… p99_ms=… max_ms=…
//! hive-bench backend=B scenario=heartbeats tasks=1000 nodes=2 seconds=600 beats=… events_stored=… events_per_task=… p50_ms=… p99_ms=… max_ms=…
//! ```
//!
//! `--tasks` tasks (default 1,000) run on `--workers` nodes, each node
//! sending one heartbeat batch for all its tasks every second (what the
//! in-process worker does; the nodes' moments spread over the second) for
//! `--seconds`. Each batch is
//! timed; a line per minute gives that minute's percentiles and the stored
//! events (the sum of the tasks' `last_seq`: seqs are gapless, so that is the
//! number of stored events).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_core::scheduler::FairScheduler;
use hive_core::store::{ClaimRequest, Command, NewTask, Store};
use hive_core::task::LeaseToken;
use hive_core::task::machine::Op;
use hive_core::{NodeId, Owner, TaskId, TaskSpec, Timestamp};
use tokio::sync::mpsc;

use crate::{Args, children, open_store, percentile};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) async fn bench(args: &Args) -> Result<(), BoxError> {
    let store = open_store(args).await?;
    let tasks = args.tasks.unwrap_or(1_000);
    let nodes = args.workers;
    let seconds = args.seconds;
    let now = Timestamp::now();
    let mut spec = TaskSpec::new("noop", serde_json::Value::Null);
    // Long enough for the whole run: nothing times out while beating.
    spec.timeouts.start_to_close = Duration::from_secs(seconds + 3_600);
    spec.timeouts.heartbeat = Duration::from_secs(60);
    let spec = Arc::new(spec);
    let new: Vec<NewTask> = (0..tasks)
        .map(|_| NewTask {
            id: TaskId::new(),
            owner: Owner {
                tenant: "bench".into(),
                principal: "beater".into(),
            },
            spec: spec.clone(),
        })
        .collect();
    let ids: Vec<TaskId> = new.iter().map(|t| t.id).collect();
    for chunk in new.chunks(1_000) {
        store.submit(chunk.to_vec(), now).await?;
    }
    let per_node = tasks.div_ceil(nodes);
    let capacity = u32::try_from(per_node).map_err(|_| "too many tasks per node")?;
    let scheduler = FairScheduler::default();
    let mut leases: Vec<(NodeId, Vec<LeaseToken>)> = Vec::new();
    for n in 0..nodes {
        let node = children::system_node(&*store, format!("beater-{n}"), capacity, now).await?;
        let mut tokens = Vec::new();
        while tokens.len() < per_node {
            let claimed = store
                .claim(ClaimRequest {
                    node,
                    max: capacity - tokens.len() as u32,
                    agents: &[],
                    start: true,
                    scheduler: &scheduler,
                    now,
                })
                .await?
                .tasks;
            if claimed.is_empty() {
                break;
            }
            tokens.extend(claimed.into_iter().map(|c| c.token));
        }
        leases.push((node, tokens));
    }
    let running: usize = leases.iter().map(|(_, t)| t.len()).sum();
    if running != tasks {
        return Err(format!("claimed {running} of {tasks} tasks").into());
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, f64, usize)>();
    let started = Instant::now();
    let mut beaters = Vec::new();
    for (k, (node, tokens)) in leases.into_iter().enumerate() {
        let (store, tx) = (store.clone(), tx.clone());
        // Nodes beat at their own moment in the second, as real workers do.
        let offset = Duration::from_secs(1) * k as u32 / nodes as u32;
        beaters.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            beat(store, node, tokens, seconds, started, tx).await
        }));
    }
    drop(tx);
    let run = Run {
        store: &*store,
        ids: &ids,
        head: format!(
            "hive-bench backend={} scenario=heartbeats tasks={tasks} nodes={nodes}",
            args.backend
        ),
    };
    let mut minute = 1;
    let mut window: Vec<f64> = Vec::new();
    let mut all: Vec<f64> = Vec::new();
    let mut beats = 0usize;
    while let Some((second, ms, n)) = rx.recv().await {
        if second >= minute * 60 {
            run.report(&format!("minute={minute}"), beats, &mut window)
                .await?;
            window.clear();
            minute += 1;
        }
        beats += n;
        window.push(ms);
        all.push(ms);
    }
    for b in beaters {
        b.await??;
    }
    if !window.is_empty() {
        run.report(&format!("minute={minute}"), beats, &mut window)
            .await?;
    }
    run.report(&format!("seconds={seconds}"), beats, &mut all)
        .await?;
    Ok(())
}

/// What the progress and final lines share.
struct Run<'a> {
    store: &'a dyn Store,
    ids: &'a [TaskId],
    head: String,
}

impl Run<'_> {
    /// Prints one line: the stored events now and the percentiles of `ms`.
    async fn report(&self, when: &str, beats: usize, ms: &mut [f64]) -> Result<(), BoxError> {
        let mut stored = 0;
        for chunk in self.ids.chunks(1_000) {
            stored += self
                .store
                .get_tasks(chunk)
                .await?
                .iter()
                .map(|t| t.last_seq)
                .sum::<u64>();
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "{} {when} beats={beats} events_stored={stored} events_per_task={:.2} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
            self.head,
            stored as f64 / self.ids.len() as f64,
            percentile(ms, 0.5),
            percentile(ms, 0.99),
            ms.last().copied().unwrap_or(f64::NAN),
        );
        Ok(())
    }
}

/// One node: a heartbeat batch for all its tasks each second; sends (second,
/// batch milliseconds, beats) for each.
async fn beat(
    store: Arc<dyn Store>,
    node: NodeId,
    tokens: Vec<LeaseToken>,
    seconds: u64,
    started: Instant,
    tx: mpsc::UnboundedSender<(u64, f64, usize)>,
) -> Result<(), BoxError> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for second in 0..seconds {
        tick.tick().await;
        let commands: Vec<Command> = tokens
            .iter()
            .map(|&token| Command {
                task: token.task,
                op: Op::Heartbeat {
                    token,
                    node,
                    progress: Some(serde_json::json!({ "second": second })),
                },
            })
            .collect();
        let t = Instant::now();
        for ack in store.apply(commands, Timestamp::now()).await? {
            ack?;
        }
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let at = started.elapsed().as_secs();
        if tx.send((at, ms, tokens.len())).is_err() {
            break;
        }
    }
    Ok(())
}
