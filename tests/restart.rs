//! Host restarts on the durable embedded and shared backends: a host process is
//! killed mid-run (SIGKILL) and a new one starts on the same SQLite file or
//! PostgreSQL schema. Every task and event stored before the kill is intact,
//! the work the dead host held is reclaimed, and pending work resumes.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use hive::engine::HiveConfig;
use hive::worker::handler_fn;
use hive::{EventKind, Hive, Principal, RetryPolicy, TaskId, TaskSpec, Timeouts, WorkerOptions};
use hive_store::conformance::assert_event_contract;
use hive_store::testing::{server_url, unique_name};
use serde_json::json;
use support::HostProcess;

const TASKS: usize = 1_500;

fn config() -> HiveConfig {
    HiveConfig {
        node_heartbeat_interval: Duration::from_millis(300),
        sweep_interval: Duration::from_millis(100),
        subscription_poll: Duration::from_millis(300),
        ..HiveConfig::default()
    }
}

/// The child: a host with one worker whose handler takes a few milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the child processes of the restart tests"]
async fn restart_host_process() {
    let url = std::env::var("HIVE_CHILD_URL").expect("HIVE_CHILD_URL");
    let store = hive_store::open(&url).await.expect("child opens the store");
    let hive = Hive::builder()
        .store(store)
        .config(config())
        .build()
        .unwrap();
    let worker = hive
        .start_worker(
            &Principal::system(),
            WorkerOptions::new(format!("host-{}", std::process::id()))
                .system()
                .capacity(8)
                .handler(
                    "work",
                    handler_fn(|ctx| async move {
                        // Every 50th task is slow, so that the test can kill the
                        // host while it surely holds a lease.
                        let slow = ctx.input()["i"].as_u64().is_some_and(|i| i % 50 == 0);
                        let ms = if slow { 1_000 } else { 5 };
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        Ok(json!({"task": ctx.task_id().to_string()}))
                    }),
                ),
        )
        .await
        .unwrap();
    support::until_stdin_closes().await;
    worker.shutdown().await;
    hive.shutdown();
}

async fn kill_and_restart_the_host(url: String) {
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
    let specs: Vec<TaskSpec> = (0..TASKS)
        .map(|i| {
            TaskSpec::new("work", json!({"i": i}))
                .timeouts(Timeouts {
                    heartbeat: Duration::from_secs(2),
                    ..Timeouts::default()
                })
                .retry(RetryPolicy::attempts(5, Duration::from_millis(10)))
        })
        .collect();
    let ids: Vec<TaskId> = hive
        .submit_batch(&alice, specs)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();

    let mut first = HostProcess::spawn("restart_host_process", &[("HIVE_CHILD_URL", url.clone())]);
    // Wait until some work is done, then kill the host.
    let mut feed = hive.feed(&alice, 0).await.unwrap();
    let mut done = 0;
    while done < TASKS / 4 {
        let batch = tokio::time::timeout(Duration::from_secs(60), feed.next_batch(1000))
            .await
            .expect("the first host makes progress")
            .unwrap();
        done += batch.iter().filter(|e| e.event.kind.is_terminal()).count();
    }
    // Kill it while it runs a slow task (it then surely holds that lease).
    loop {
        let running = hive
            .list_tasks(
                &alice,
                &hive::task::TaskQuery {
                    states: vec![hive::TaskState::Running],
                    limit: Some(1000),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        if running
            .items
            .iter()
            .any(|t| t.spec.input["i"].as_u64().is_some_and(|i| i % 50 == 0))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill();
    // What the dead host left behind.
    let mut before: HashMap<TaskId, Vec<hive::TaskEvent>> = HashMap::new();
    for id in &ids {
        before.insert(*id, hive.store().read_events(*id, 0, 1000).await.unwrap());
    }
    let ended_before = before
        .values()
        .filter(|e| e.last().is_some_and(|e| e.kind.is_terminal()))
        .count();
    assert!((TASKS / 4..TASKS).contains(&ended_before), "{ended_before}");

    // A new host on the same store finishes everything.
    let second = HostProcess::spawn("restart_host_process", &[("HIVE_CHILD_URL", url.clone())]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let page = hive
            .list_tasks(
                &alice,
                &hive::task::TaskQuery {
                    states: vec![
                        hive::TaskState::Pending,
                        hive::TaskState::Scheduled,
                        hive::TaskState::Running,
                    ],
                    limit: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        if page.items.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "work did not resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.stop();

    let mut lost = 0;
    for id in &ids {
        let events = hive.store().read_events(*id, 0, 1000).await.unwrap();
        assert_event_contract(&events);
        let old = &before[id];
        assert_eq!(
            &events[..old.len()],
            &old[..],
            "task {id}: stored events changed"
        );
        assert!(
            matches!(events.last().unwrap().kind, EventKind::Succeeded { .. }),
            "task {id}: {events:?}"
        );
        lost += events
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::AttemptFailed { error, .. } if error.code == "lost"))
            .count();
    }
    // Tasks the dead host was running were reclaimed, not left hanging.
    let leased_at_kill = before
        .values()
        .filter(|e| {
            matches!(
                e.last().map(|e| &e.kind),
                Some(EventKind::Scheduled { .. } | EventKind::Started { .. })
            )
        })
        .count();
    assert!(
        lost > 0,
        "the killed host held leases that were reclaimed (leased at the kill: {leased_at_kill})"
    );
    hive.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_host_restart_keeps_everything_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let url = support::sqlite_url(&dir.path().join("hive.db"));
    kill_and_restart_the_host(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_host_restart_keeps_everything_and_resumes() {
    let Some(base) = server_url("HIVE_TEST_POSTGRES_URL") else {
        return;
    };
    kill_and_restart_the_host(format!("{base}?schema={}", unique_name("restart"))).await;
}
