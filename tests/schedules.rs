//! Schedules across processes: three OS processes embed Hive against the same
//! PostgreSQL (and, separately, Redis), each running the supervisor that fires
//! schedules; a per-second cron schedule runs for several seconds while one
//! process is killed with SIGKILL and a new one starts in its place. Every
//! slot from the first fire to the last is submitted exactly once: one task
//! per slot, no gap, no duplicate, and the schedule's counter agrees.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use hive::engine::HiveConfig;
use hive::{Calendar, Hive, OverlapPolicy, Principal, ScheduleSpec, TaskQuery, TaskSpec};
use hive_store::testing::{server_url, unique_name};
use serde_json::json;
use support::HostProcess;

fn child_config() -> HiveConfig {
    HiveConfig {
        sweep_interval: Duration::from_millis(100),
        run_workflows: false,
        ..HiveConfig::default()
    }
}

/// The child: a host whose supervisor fires schedules until stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the child processes of the schedule tests"]
async fn schedule_host_process() {
    let url = std::env::var("HIVE_CHILD_URL").expect("HIVE_CHILD_URL");
    let store = hive_store::open(&url).await.expect("child opens the store");
    let hive = Hive::builder()
        .store(store)
        .config(child_config())
        .build()
        .expect("child builds its hive");
    support::until_stdin_closes().await;
    hive.shutdown();
}

async fn three_processes_fire_each_slot_once(url: String) {
    let store = hive_store::open(&url).await.expect("open");
    let hive = Hive::builder()
        .store(store)
        .config(HiveConfig {
            run_supervisor: false,
            run_workflows: false,
            ..HiveConfig::default()
        })
        .build()
        .unwrap();
    let alice = Principal::user("acme", "alice");
    hive.create_schedule(
        &alice,
        ScheduleSpec::task(
            "every-second",
            Calendar::cron("* * * * * *"),
            TaskSpec::new("tick", json!({})),
        )
        .overlap(OverlapPolicy::AllowAll),
    )
    .await
    .unwrap();
    let spawn = || HostProcess::spawn("schedule_host_process", &[("HIVE_CHILD_URL", url.clone())]);
    let mut procs: Vec<HostProcess> = (0..3).map(|_| spawn()).collect();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // A crash and a restart in the middle of the run.
    procs[0].kill();
    procs[0] = spawn();
    tokio::time::sleep(Duration::from_secs(4)).await;
    hive.pause_schedule(&alice, "every-second", Some("test over".into()))
        .await
        .unwrap();
    // Let a fire decided just before the pause complete.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in procs {
        p.stop();
    }
    let s = hive.get_schedule(&alice, "every-second").await.unwrap();
    assert!(s.record.in_flight.is_none(), "no fire left half done");
    let tasks = hive
        .list_tasks(
            &alice,
            &TaskQuery {
                limit: Some(1000),
                ..TaskQuery::default()
            },
        )
        .await
        .unwrap()
        .items;
    let slots: Vec<i64> = tasks
        .iter()
        .map(|t| {
            let key = t.spec.idempotency_key.as_deref().expect("a schedule key");
            key.rsplit(':').next().unwrap().parse().expect("a slot")
        })
        .collect();
    let distinct: BTreeSet<i64> = slots.iter().copied().collect();
    assert_eq!(distinct.len(), slots.len(), "a slot fired twice: {slots:?}");
    assert!(slots.len() >= 5, "only {} slots fired in 8 s", slots.len());
    let (first, last) = (*distinct.first().unwrap(), *distinct.last().unwrap());
    assert_eq!(
        distinct.len() as i64,
        (last - first) / 1000 + 1,
        "every second from the first fire to the last, no gap: {distinct:?}"
    );
    assert_eq!(s.record.fired, slots.len() as u64, "the counter agrees");
    println!(
        "schedules: {} slots fired once each across 3 processes (1 killed, 1 restarted)",
        slots.len()
    );
    hive.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_three_processes_fire_each_slot_once() {
    let Some(base) = server_url("HIVE_TEST_POSTGRES_URL") else {
        return;
    };
    let url = format!("{base}?schema={}", unique_name("sched"));
    three_processes_fire_each_slot_once(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_processes_fire_each_slot_once() {
    let Some(base) = server_url("HIVE_TEST_REDIS_URL") else {
        return;
    };
    let url = format!("{base}?prefix={}", unique_name("sched"));
    three_processes_fire_each_slot_once(url).await;
}
