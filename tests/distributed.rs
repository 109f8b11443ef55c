//! Many processes, one Hive: three separate OS processes embed Hive against the
//! same PostgreSQL (and, separately, Redis) and run 5,000 tasks with in-process
//! handlers; one process is killed with SIGKILL mid-run. Afterwards every task
//! has exactly one terminal event, no task's result was accepted twice, and the
//! killed process's leases were reclaimed within three heartbeat intervals.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use hive::engine::HiveConfig;
use hive::worker::handler_fn;
use hive::{
    EventKind, Hive, NodeStatus, Principal, RetryPolicy, TaskSpec, Timeouts, WorkerOptions,
};
use hive_store::conformance::assert_event_contract;
use hive_store::testing::{server_url, unique_name};
use serde_json::json;
use support::HostProcess;

const TASKS: usize = 5_000;
const HEARTBEAT_MS: u64 = 300;
const SWEEP_MS: u64 = 100;

fn config() -> HiveConfig {
    HiveConfig {
        node_heartbeat_interval: Duration::from_millis(HEARTBEAT_MS),
        sweep_interval: Duration::from_millis(SWEEP_MS),
        subscription_poll: Duration::from_millis(500),
        workflow_poll: Duration::from_millis(500),
        ..HiveConfig::default()
    }
}

/// The child: a host process running one worker node until its stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the child processes of the distributed tests"]
async fn distributed_host_process() {
    let url = std::env::var("HIVE_CHILD_URL").expect("HIVE_CHILD_URL");
    let name = std::env::var("HIVE_CHILD_NAME").expect("HIVE_CHILD_NAME");
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
            WorkerOptions::new(name).system().capacity(32).handler(
                "work",
                handler_fn(move |ctx| async move {
                    // Every 100th task is slow, so that the test can kill a
                    // process while it surely holds a lease.
                    let slow = ctx.input()["i"].as_u64().is_some_and(|i| i % 100 == 0);
                    let ms = if slow {
                        1_000
                    } else {
                        (ctx.task_id().as_u128() % 4) as u64 + 1
                    };
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(json!({"pid": pid, "task": ctx.task_id().to_string()}))
                }),
            ),
        )
        .await
        .expect("child worker starts");
    support::until_stdin_closes().await;
    worker.shutdown().await;
    hive.shutdown();
}

async fn three_processes_one_killed(url: String) {
    let store = hive_store::open(&url).await.expect("open");
    let hive = Hive::builder()
        .store(store)
        .config(HiveConfig {
            run_supervisor: false,
            run_workflows: false,
            ..config()
        })
        .build()
        .unwrap();
    let alice = Principal::user("acme", "alice");
    let mut feed = hive.feed(&alice, 0).await.unwrap();
    let timeouts = Timeouts {
        heartbeat: Duration::from_secs(3),
        // Also the pending tasks' deadline: 5 000 queued tasks on a shared
        // 2-core machine may wait well past 10 s for a node.
        schedule_to_start: Duration::from_secs(120),
        ..Timeouts::default()
    };
    let mut ids = Vec::with_capacity(TASKS);
    for b in 0..TASKS / 500 {
        let specs = (0..500)
            .map(|i| {
                TaskSpec::new("work", json!({"b": b, "i": i}))
                    .timeouts(timeouts.clone())
                    .retry(RetryPolicy::attempts(10, Duration::from_millis(20)))
            })
            .collect();
        ids.extend(
            hive.submit_batch(&alice, specs)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id),
        );
    }
    let names: Vec<String> = (0..3).map(|i| unique_name(&format!("proc{i}"))).collect();
    let mut procs: Vec<Option<HostProcess>> = names
        .iter()
        .map(|n| {
            Some(HostProcess::spawn(
                "distributed_host_process",
                &[
                    ("HIVE_CHILD_URL", url.clone()),
                    ("HIVE_CHILD_NAME", n.clone()),
                ],
            ))
        })
        .collect();

    // Let a third of the work end, then kill process 0.
    let mut ended = HashSet::new();
    let mut killed_at = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while ended.len() < TASKS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {TASKS} tasks ended",
            ended.len()
        );
        let batch = tokio::time::timeout(Duration::from_secs(5), feed.next_batch(1000)).await;
        let Ok(batch) = batch else { continue };
        for ev in batch.unwrap() {
            if ev.event.kind.is_terminal() {
                assert!(
                    ended.insert(ev.event.task),
                    "two terminal events in the feed"
                );
            }
        }
        if killed_at.is_none()
            && ended.len() >= TASKS / 3
            && runs_a_slow_task(&hive, &alice, &names[0]).await
        {
            procs[0].take().unwrap().kill();
            killed_at = Some(hive::Timestamp::now());
        }
    }
    let killed_at = killed_at.expect("killed mid-run");
    for p in procs.into_iter().flatten() {
        p.stop();
    }

    // Every task: one terminal event, last; exactly one accepted success.
    let killed = hive
        .list_nodes(&Principal::system())
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.spec.name == names[0])
        .expect("the killed node is still registered");
    assert_eq!(killed.status, NodeStatus::Lost);
    let mut reclaimed = 0;
    let bound = Duration::from_millis(3 * HEARTBEAT_MS + 2 * SWEEP_MS + 1_500);
    for id in &ids {
        let events = hive.store().read_events(*id, 0, 10_000).await.unwrap();
        assert_event_contract(&events);
        let successes: Vec<_> = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Succeeded { .. }))
            .collect();
        assert_eq!(successes.len(), 1, "task {id}: {events:?}");
        assert_eq!(events.iter().filter(|e| e.kind.is_terminal()).count(), 1);
        for e in &events {
            if let EventKind::AttemptFailed { error, .. } = &e.kind
                && error.code == "lost"
            {
                reclaimed += 1;
                let after = e.at.since(killed_at);
                assert!(
                    after <= bound,
                    "task {id}: lease reclaimed {after:?} after the kill (bound {bound:?})"
                );
            }
        }
    }
    assert!(
        reclaimed > 0,
        "the killed process held leases that were reclaimed"
    );
    hive.shutdown();
    println!("distributed: {TASKS} tasks, 3 processes, 1 killed, {reclaimed} leases reclaimed");
}

/// Whether the node called `name` is running one of the slow tasks now.
async fn runs_a_slow_task(hive: &Hive, p: &Principal, name: &str) -> bool {
    let Some(node) = hive
        .list_nodes(&Principal::system())
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.spec.name == name)
    else {
        return false;
    };
    let running = hive
        .list_tasks(
            p,
            &hive::task::TaskQuery {
                states: vec![hive::TaskState::Running],
                limit: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    running.items.iter().any(|t| {
        t.node == Some(node.id) && t.spec.input["i"].as_u64().is_some_and(|i| i % 100 == 0)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_three_processes_one_killed() {
    let Some(base) = server_url("HIVE_TEST_POSTGRES_URL") else {
        return;
    };
    let url = format!("{base}?schema={}", unique_name("dist"));
    three_processes_one_killed(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_processes_one_killed() {
    let Some(base) = server_url("HIVE_TEST_REDIS_URL") else {
        return;
    };
    let url = format!("{base}?prefix={}", unique_name("dist"));
    three_processes_one_killed(url).await;
}
