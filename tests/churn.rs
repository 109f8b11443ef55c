//! Churn regression: while 10,000 tasks run with random failures and retries,
//! more than 20 worker nodes join, crash without reporting, and leave. Afterwards
//! every task has exactly one terminal event (none lost, none ended twice, none
//! succeeded twice), every stream is gapless, and every subscriber's stream ended.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hive::engine::HiveConfig;
use hive::worker::handler_fn;
use hive::{
    EventKind, Hive, Principal, RetryPolicy, TaskError, TaskId, TaskSpec, Timeouts, WorkerHandle,
    WorkerOptions,
};
use hive_store::MemoryStore;
use hive_store::conformance::assert_event_contract;
use rand::Rng;
use serde_json::json;

const TASKS: usize = 10_000;
const MIN_NODES: usize = 20;
const SUBSCRIBED: usize = 300;

fn handler() -> Arc<dyn hive::TaskHandler> {
    handler_fn(|ctx| async move {
        let (roll, pause) = {
            let mut rng = rand::rng();
            (rng.random_range(0..100u32), rng.random_range(0..8u64))
        };
        if pause > 0 {
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        match roll {
            0..=9 => Err(TaskError::new("flaky", "random failure")),
            10 => Err(TaskError::new("fatal", "random permanent failure").non_retryable()),
            _ => Ok(json!({"task": ctx.task_id().to_string(), "attempt": ctx.attempt()})),
        }
    })
}

async fn start(hive: &Hive, n: usize) -> WorkerHandle {
    let options = WorkerOptions::new(format!("churn-{n}"))
        .system()
        .capacity(4)
        .handler("work", handler());
    hive.start_worker(&Principal::system(), options)
        .await
        .expect("worker starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_crash_and_leave_while_tasks_run_and_every_task_ends_once() {
    let hive = Hive::builder()
        .store(Arc::new(MemoryStore::default()))
        .config(HiveConfig {
            sweep_interval: Duration::from_millis(25),
            node_heartbeat_interval: Duration::from_millis(60),
            subscription_poll: Duration::from_millis(200),
            ..HiveConfig::default()
        })
        .build()
        .expect("hive builds");
    let alice = Principal::user("acme", "alice");

    // The tenant feed counts terminal events as they happen.
    let terminal_seen = Arc::new(AtomicU64::new(0));
    let feed_task = {
        let mut feed = hive.feed(&alice, 0).await.unwrap();
        let seen = terminal_seen.clone();
        tokio::spawn(async move {
            let mut ended = HashSet::new();
            loop {
                let Ok(ev) = feed.next().await else {
                    break; // the engine shut down
                };
                if ev.event.kind.is_terminal() {
                    assert!(
                        ended.insert(ev.event.task),
                        "two terminal events for {} in the feed",
                        ev.event.task
                    );
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };

    // Churn: keep 3..=8 workers alive; every few ms a worker joins, crashes or
    // leaves gracefully.
    let stop = Arc::new(AtomicBool::new(false));
    let started_nodes = Arc::new(AtomicU64::new(0));
    let crashed = Arc::new(AtomicU64::new(0));
    let churn = {
        let (hive, stop, started_nodes, crashed) = (
            hive.clone(),
            stop.clone(),
            started_nodes.clone(),
            crashed.clone(),
        );
        tokio::spawn(async move {
            let mut live: Vec<WorkerHandle> = Vec::new();
            let mut n = 0;
            for _ in 0..3 {
                live.push(start(&hive, n).await);
                n += 1;
                started_nodes.store(n as u64, Ordering::SeqCst);
            }
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let roll = rand::rng().random_range(0..10u32);
                if live.len() < 3 || (roll < 4 && live.len() < 8) {
                    live.push(start(&hive, n).await);
                    n += 1;
                    started_nodes.store(n as u64, Ordering::SeqCst);
                } else if roll < 7 {
                    let i = rand::rng().random_range(0..live.len());
                    live.swap_remove(i).crash();
                    crashed.fetch_add(1, Ordering::SeqCst);
                } else if roll < 8 {
                    let i = rand::rng().random_range(0..live.len());
                    let w = live.swap_remove(i);
                    tokio::spawn(w.shutdown());
                }
            }
            // Leave at least one worker to finish what the crashed ones left.
            live
        })
    };

    // Submit in batches while the churn goes on; subscribe to a sample.
    let timeouts = Timeouts {
        heartbeat: Duration::from_millis(500),
        schedule_to_start: Duration::from_secs(2),
        start_to_close: Duration::from_secs(10),
        deadline: None,
    };
    let retry = RetryPolicy {
        jitter: 0.2,
        ..RetryPolicy::attempts(25, Duration::from_millis(5))
    };
    let mut ids: Vec<TaskId> = Vec::with_capacity(TASKS);
    let mut subscribers = Vec::new();
    for batch in 0..(TASKS / 500) {
        let specs = (0..500)
            .map(|i| {
                TaskSpec::new("work", json!({"batch": batch, "i": i}))
                    .timeouts(timeouts.clone())
                    .retry(retry.clone())
            })
            .collect();
        let submitted = hive.submit_batch(&alice, specs).await.unwrap();
        for s in &submitted {
            if subscribers.len() < SUBSCRIBED
                && rand::rng().random_range(0..TASKS / SUBSCRIBED) == 0
            {
                let mut sub = hive.subscribe(&alice, s.id, 0).await.unwrap();
                subscribers.push(tokio::spawn(async move {
                    let mut events = Vec::new();
                    while let Some(ev) = sub.next().await {
                        events.push(ev.expect("event"));
                    }
                    events
                }));
            }
        }
        ids.extend(submitted.into_iter().map(|s| s.id));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }

    // Run until every task has ended, and at least MIN_NODES nodes joined.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    while terminal_seen.load(Ordering::SeqCst) < TASKS as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {TASKS} tasks ended in time",
            terminal_seen.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let live = churn.await.unwrap();
    let nodes = started_nodes.load(Ordering::SeqCst) as usize;
    assert!(
        nodes >= MIN_NODES,
        "only {nodes} nodes joined while tasks ran"
    );
    assert!(
        crashed.load(Ordering::SeqCst) >= 5,
        "too few crashes to mean anything"
    );

    // Every task: exactly one terminal event, last; gapless; at most one success.
    let mut outcomes = [0usize; 4];
    let mut lost_attempts = 0;
    for id in &ids {
        let events = hive.store().read_events(*id, 0, 100_000).await.unwrap();
        assert_event_contract(&events);
        let terminals: Vec<_> = events.iter().filter(|e| e.kind.is_terminal()).collect();
        assert_eq!(terminals.len(), 1, "task {id}: {events:?}");
        let successes = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Succeeded { .. }))
            .count();
        assert!(successes <= 1, "task {id} succeeded {successes} times");
        lost_attempts += events
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::AttemptFailed { error, .. } if error.code == "lost"))
            .count();
        outcomes[match &terminals[0].kind {
            EventKind::Succeeded { output } => {
                assert_eq!(
                    output["task"],
                    json!(id.to_string()),
                    "output of another task"
                );
                0
            }
            EventKind::Failed { .. } => 1,
            EventKind::TimedOut { .. } => 2,
            _ => 3,
        }] += 1;
        let task = hive.get_task(&alice, *id).await.unwrap();
        assert!(task.state.is_terminal());
        assert_eq!(task.last_seq, events.len() as u64);
    }
    assert_eq!(outcomes.iter().sum::<usize>(), TASKS);
    assert!(outcomes[0] > TASKS / 2, "most tasks succeed: {outcomes:?}");
    assert!(outcomes[1] > 0, "some fail permanently: {outcomes:?}");
    assert!(lost_attempts > 0, "crashes must have cost some attempts");

    // Every subscriber's stream ended with the task's terminal event.
    assert!(!subscribers.is_empty());
    for s in subscribers {
        let events = tokio::time::timeout(Duration::from_secs(30), s)
            .await
            .expect("every subscription ends")
            .unwrap();
        assert_event_contract(&events);
        assert!(events.last().unwrap().kind.is_terminal());
    }
    for w in live {
        w.shutdown().await;
    }
    hive.shutdown();
    let _ = feed_task.await;
    println!(
        "churn: {TASKS} tasks, {nodes} nodes, {} crashes, outcomes (ok, failed, timed out, other) {outcomes:?}, {lost_attempts} lost attempts",
        crashed.load(Ordering::SeqCst)
    );
}
