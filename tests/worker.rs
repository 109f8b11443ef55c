//! In-process workers: handlers' results become reports, failures and panics
//! become failed attempts, lost leases stop the handler, heartbeats carry
//! progress, shutdown drains, and a crashed worker's leases are reclaimed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use hive::engine::HiveConfig;
use hive::worker::handler_fn;
use hive::{
    EventKind, Hive, Principal, RetryPolicy, TaskError, TaskSpec, TaskState, Timeouts,
    WorkerOptions,
};
use hive_store::MemoryStore;
use serde_json::json;

fn fast_hive() -> Hive {
    Hive::builder()
        .store(Arc::new(MemoryStore::default()))
        .config(HiveConfig {
            sweep_interval: Duration::from_millis(20),
            // Lost after 600 ms: generous for a loaded CI machine.
            node_heartbeat_interval: Duration::from_millis(200),
            subscription_poll: Duration::from_millis(100),
            ..HiveConfig::default()
        })
        .build()
        .expect("hive builds")
}

async fn wait_end(hive: &Hive, p: &Principal, id: hive::TaskId) -> Vec<hive::TaskEvent> {
    let sub = hive.subscribe(p, id, 0).await.expect("subscribe");
    tokio::time::timeout(Duration::from_secs(20), sub.collect())
        .await
        .expect("the task ends in time")
        .expect("events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_output_errors_and_panics_become_reports() {
    let hive = fast_hive();
    let alice = Principal::user("acme", "alice");
    let worker = hive
        .start_worker(
            &alice,
            WorkerOptions::new("w")
                .handler(
                    "ok",
                    handler_fn(|ctx| async move { Ok(json!({"echo": ctx.input().clone()})) }),
                )
                .handler(
                    "err",
                    handler_fn(|_| async { Err(TaskError::new("bad", "no good").non_retryable()) }),
                )
                .handler(
                    "panic",
                    handler_fn(|ctx| async move {
                        if ctx.attempt() > 0 {
                            panic!("handler bug");
                        }
                        Ok(json!(null))
                    }),
                ),
        )
        .await
        .expect("worker starts");
    let ok = hive
        .submit(&alice, TaskSpec::new("ok", json!(7)))
        .await
        .unwrap();
    let err = hive
        .submit(&alice, TaskSpec::new("err", json!(null)))
        .await
        .unwrap();
    let panic = hive
        .submit(
            &alice,
            TaskSpec::new("panic", json!(null)).retry(RetryPolicy::none()),
        )
        .await
        .unwrap();
    let ok_events = wait_end(&hive, &alice, ok.id).await;
    assert_eq!(
        ok_events.last().unwrap().kind,
        EventKind::Succeeded {
            output: json!({"echo": 7})
        }
    );
    match &wait_end(&hive, &alice, err.id).await.last().unwrap().kind {
        EventKind::Failed { error } => assert_eq!(error.code, "bad"),
        other => panic!("expected Failed, got {other:?}"),
    }
    match &wait_end(&hive, &alice, panic.id).await.last().unwrap().kind {
        EventKind::Failed { error } => {
            assert_eq!(error.code, "panic");
            assert!(error.message.contains("handler bug"), "{}", error.message);
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_node_runs_only_its_owners_tasks() {
    let hive = fast_hive();
    let alice = Principal::user("acme", "alice");
    let bob = Principal::user("acme", "bob");
    let worker = hive
        .start_worker(
            &alice,
            WorkerOptions::new("alice-box").handler("echo", handler_fn(|_| async { Ok(json!(1)) })),
        )
        .await
        .unwrap();
    let mine = hive
        .submit(&alice, TaskSpec::new("echo", json!(null)))
        .await
        .unwrap();
    let bobs = hive
        .submit(&bob, TaskSpec::new("echo", json!(null)))
        .await
        .unwrap();
    wait_end(&hive, &alice, mine.id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        hive.get_task(&bob, bobs.id).await.unwrap().state,
        TaskState::Pending
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_stops_its_handler() {
    let hive = fast_hive();
    let alice = Principal::user("acme", "alice");
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let (s, f, d) = (started.clone(), finished.clone(), dropped.clone());
    let worker = hive
        .start_worker(
            &alice,
            WorkerOptions::new("w")
                .heartbeat_interval(Duration::from_millis(20))
                .handler(
                    "slow",
                    handler_fn(move |_ctx| {
                        let (s, f, d) = (s.clone(), f.clone(), d.clone());
                        async move {
                            let _guard = SetOnDrop(d);
                            s.store(true, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            f.store(true, Ordering::SeqCst);
                            Ok(json!("too late"))
                        }
                    }),
                ),
        )
        .await
        .unwrap();
    let t = hive
        .submit(&alice, TaskSpec::new("slow", json!(null)))
        .await
        .unwrap();
    while !started.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    hive.cancel(&alice, t.id, "no longer needed").await.unwrap();
    let events = wait_end(&hive, &alice, t.id).await;
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::Cancelled { .. }
    ));
    assert_eq!(
        hive.get_node(&Principal::system(), worker.node())
            .await
            .unwrap()
            .in_flight,
        0
    );
    // The next heartbeat answers LeaseLost and the worker drops the attempt.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !dropped.load(Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the handler is stopped after its lease is lost"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !finished.load(Ordering::SeqCst),
        "the handler was stopped, not run to the end"
    );
    worker.shutdown().await;
}

/// Sets its flag when dropped: tells a test that a handler's future was dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_and_logs_reach_the_event_stream() {
    let hive = fast_hive();
    let alice = Principal::user("acme", "alice");
    let worker = hive
        .start_worker(
            &alice,
            WorkerOptions::new("w")
                .heartbeat_interval(Duration::from_millis(20))
                .handler(
                    "steps",
                    handler_fn(|ctx| async move {
                        ctx.log("stdout", "step 1")
                            .await
                            .map_err(|e| TaskError::new("log", e.to_string()))?;
                        ctx.set_progress(json!({"done": 1, "of": 2}));
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        Ok(json!("done"))
                    }),
                ),
        )
        .await
        .unwrap();
    let t = hive
        .submit(
            &alice,
            TaskSpec::new("steps", json!(null)).timeouts(Timeouts {
                heartbeat: Duration::from_millis(90),
                ..Timeouts::default()
            }),
        )
        .await
        .unwrap();
    let events = wait_end(&hive, &alice, t.id).await;
    assert!(events.iter().any(|e| e.kind
        == EventKind::Log {
            stream: "stdout".into(),
            line: "step 1".into()
        }));
    assert!(
        events.iter().any(
            |e| matches!(&e.kind, EventKind::Heartbeat { progress: Some(p), .. } if p["done"] == 1)
        ),
        "a heartbeat carried the progress: {events:?}"
    );
    assert_eq!(
        events.last().unwrap().kind,
        EventKind::Succeeded {
            output: json!("done")
        }
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_tasks_finish_and_removes_the_node() {
    let hive = fast_hive();
    let alice = Principal::user("acme", "alice");
    let worker = hive
        .start_worker(
            &alice,
            WorkerOptions::new("w").handler(
                "nap",
                handler_fn(|_| async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(json!("rested"))
                }),
            ),
        )
        .await
        .unwrap();
    let node = worker.node();
    let t = hive
        .submit(&alice, TaskSpec::new("nap", json!(null)))
        .await
        .unwrap();
    while hive.get_task(&alice, t.id).await.unwrap().state != TaskState::Running {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.shutdown().await;
    assert_eq!(
        hive.get_task(&alice, t.id).await.unwrap().state,
        TaskState::Succeeded
    );
    assert!(
        hive.get_node(&Principal::system(), node).await.is_err(),
        "the node is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_workers_leases_are_reclaimed_and_rerun_elsewhere() {
    let hive = fast_hive();
    let alice = Principal::user("acme", "alice");
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let hang = handler_fn(move |_| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(json!("never"))
        }
    });
    let doomed = hive
        .start_worker(&alice, WorkerOptions::new("doomed").handler("job", hang))
        .await
        .unwrap();
    let t = hive
        .submit(
            &alice,
            TaskSpec::new("job", json!(null))
                .retry(RetryPolicy::attempts(3, Duration::from_millis(10))),
        )
        .await
        .unwrap();
    while runs.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let crashed_at = tokio::time::Instant::now();
    doomed.crash();
    let healthy = hive
        .start_worker(
            &alice,
            WorkerOptions::new("healthy").handler("job", handler_fn(|_| async { Ok(json!("ok")) })),
        )
        .await
        .unwrap();
    let events = wait_end(&hive, &alice, t.id).await;
    let lost_after = hive.config().node_lost_after();
    assert!(
        crashed_at.elapsed() < lost_after * 2 + Duration::from_secs(2),
        "reclaimed within three heartbeat intervals plus a sweep"
    );
    assert!(events.iter().any(
        |e| matches!(&e.kind, EventKind::AttemptFailed { error, .. } if error.code == "lost")
    ));
    assert_eq!(
        events.last().unwrap().kind,
        EventKind::Succeeded {
            output: json!("ok")
        }
    );
    healthy.shutdown().await;
}

/// Regression: attempts used to be polled by the worker loop itself, so a
/// handler awaiting the store (a log line) while the loop awaited the store too
/// (a heartbeat, a report) deadlocked on a one-writer backend. Handlers that log,
/// heartbeat and report progress on SQLite, with a fast heartbeat tick, all end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_that_call_the_store_do_not_stall_the_worker_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hive.db").display());
    let hive = hive::open_with(
        &url,
        HiveConfig {
            sweep_interval: Duration::from_millis(20),
            node_heartbeat_interval: Duration::from_millis(200),
            subscription_poll: Duration::from_millis(100),
            ..HiveConfig::default()
        },
    )
    .await
    .unwrap();
    let alice = Principal::user("acme", "alice");
    let chatty = handler_fn(|ctx| async move {
        for i in 0..3 {
            ctx.log("stdout", &format!("line {i}"))
                .await
                .map_err(|e| TaskError::new("log", e.to_string()))?;
            ctx.set_progress(json!({ "step": i }));
            ctx.heartbeat(Some(json!({ "step": i })))
                .await
                .map_err(|e| TaskError::new("heartbeat", e.to_string()))?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(json!("done"))
    });
    let worker = hive
        .start_worker(
            &alice,
            WorkerOptions::new("chatty")
                .capacity(8)
                .heartbeat_interval(Duration::from_millis(5))
                .handler("chatty", chatty),
        )
        .await
        .unwrap();
    let specs = vec![TaskSpec::new("chatty", json!(null)); 64];
    let ids: Vec<_> = hive
        .submit_batch(&alice, specs)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    for id in ids {
        let events = wait_end(&hive, &alice, id).await;
        assert_eq!(
            events.last().unwrap().kind,
            EventKind::Succeeded {
                output: json!("done")
            }
        );
        let logs = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Log { .. }))
            .count();
        assert_eq!(logs, 3);
    }
    worker.shutdown().await;
}

/// Regression (issue 11, item 16): the node's and the leases' heartbeats used
/// to run in the loop that polls the handlers, so one handler blocking its
/// thread got the whole node declared lost. Now it costs only its own lease:
/// the node stays ready and the other attempt on it keeps its lease and ends
/// with its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_handler_costs_only_its_own_lease() {
    let hive = fast_hive();
    let alice = Principal::user("acme", "alice");
    let steady_started = Arc::new(AtomicBool::new(false));
    let s = steady_started.clone();
    let steady = handler_fn(move |_| {
        let s = s.clone();
        async move {
            s.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(800)).await;
            Ok(json!("steady"))
        }
    });
    // Blocks its thread three times the node-lost window (600 ms).
    let block = handler_fn(|_| async {
        std::thread::sleep(Duration::from_millis(1_800));
        Ok(json!("too late"))
    });
    let worker = hive
        .start_worker(
            &alice,
            WorkerOptions::new("mixed")
                .capacity(4)
                .handler("steady", steady)
                .handler("block", block),
        )
        .await
        .unwrap();
    let timeouts = Timeouts {
        heartbeat: Duration::from_millis(600),
        ..Timeouts::default()
    };
    let steady_task = hive
        .submit(
            &alice,
            TaskSpec::new("steady", json!(null)).timeouts(timeouts.clone()),
        )
        .await
        .unwrap();
    while !steady_started.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let blocked_task = hive
        .submit(
            &alice,
            TaskSpec::new("block", json!(null))
                .timeouts(timeouts)
                .retry(RetryPolicy::attempts(1, Duration::from_millis(10))),
        )
        .await
        .unwrap();

    // While the handler blocks, the node keeps beating.
    let node = worker.node();
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1_500) {
        let nodes = hive.list_nodes(&alice).await.unwrap();
        let status = nodes.iter().find(|n| n.id == node).unwrap().status;
        assert_eq!(status, hive::NodeStatus::Ready, "the node stays ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let blocked = wait_end(&hive, &alice, blocked_task.id).await;
    assert!(
        blocked.iter().any(|e| matches!(
            &e.kind,
            EventKind::TimedOut {
                phase: hive::TimeoutPhase::Heartbeat
            }
        )),
        "the blocking handler lost its lease: {blocked:?}"
    );
    let steady = wait_end(&hive, &alice, steady_task.id).await;
    assert_eq!(
        steady
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Started { .. }))
            .count(),
        1,
        "the other attempt kept its lease: {steady:?}"
    );
    assert_eq!(
        steady.last().unwrap().kind,
        EventKind::Succeeded {
            output: json!("steady")
        }
    );
    let nodes = hive.list_nodes(&alice).await.unwrap();
    assert_eq!(
        nodes.iter().find(|n| n.id == node).unwrap().status,
        hive::NodeStatus::Ready
    );
    worker.shutdown().await;
}

/// Issue 11, item 7, in-process side: an output over the limit ends the task
/// `Failed` with the non-retryable `output_too_large` (the handler would only
/// return it again), and an error message over its limit is shortened, not
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_handler_results_fit_the_limits() {
    let hive = Hive::builder()
        .store(Arc::new(MemoryStore::default()))
        .config(HiveConfig {
            limits: hive::engine::ValueLimits {
                max_output_bytes: 1_000,
                max_error_message_bytes: 100,
                ..Default::default()
            },
            ..HiveConfig::default()
        })
        .build()
        .unwrap();
    let alice = Principal::user("acme", "alice");
    let worker = hive
        .start_worker(
            &alice,
            WorkerOptions::new("big")
                .handler(
                    "big",
                    handler_fn(|_| async { Ok(json!("x".repeat(5_000))) }),
                )
                .handler(
                    "wordy",
                    handler_fn(|_| async { Err(TaskError::new("wordy", "é".repeat(500))) }),
                ),
        )
        .await
        .unwrap();
    let retry = RetryPolicy::attempts(3, Duration::from_millis(10));
    let big = hive
        .submit(
            &alice,
            TaskSpec::new("big", json!(null)).retry(retry.clone()),
        )
        .await
        .unwrap();
    let wordy = hive
        .submit(
            &alice,
            TaskSpec::new("wordy", json!(null)).retry(RetryPolicy::attempts(1, Duration::ZERO)),
        )
        .await
        .unwrap();
    let events = wait_end(&hive, &alice, big.id).await;
    match &events.last().unwrap().kind {
        EventKind::Failed { error } => {
            assert_eq!(error.code, "output_too_large");
            assert!(error.message.contains("5002 bytes"), "{error:?}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Started { .. }))
            .count(),
        1,
        "not retried"
    );
    let events = wait_end(&hive, &alice, wordy.id).await;
    match &events.last().unwrap().kind {
        EventKind::Failed { error } => {
            assert_eq!(error.code, "wordy");
            assert!(error.message.len() <= 100, "{}", error.message.len());
            assert!(error.message.ends_with("(truncated)"), "{}", error.message);
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    worker.shutdown().await;
}

/// Issue 18, item 4 (the engine side): `shutdown_now` does not wait the grace
/// period: the running handler is cancelled at once, the node is removed and
/// its lease goes back to the queue (placement lost, retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_now_cancels_handlers_at_once_and_requeues_their_tasks() {
    let hive = fast_hive();
    let alice = Principal::user("acme", "alice");
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let slow = handler_fn(move |_| {
        let s = s.clone();
        async move {
            s.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(json!("late"))
        }
    });
    let worker = hive
        .start_worker(
            &alice,
            WorkerOptions::new("interrupted")
                .shutdown_grace(Duration::from_secs(30))
                .handler("slow", slow),
        )
        .await
        .unwrap();
    let node = worker.node();
    let t = hive
        .submit(
            &alice,
            TaskSpec::new("slow", json!(null))
                .retry(RetryPolicy::attempts(3, Duration::from_secs(60))),
        )
        .await
        .unwrap();
    while !started.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at = tokio::time::Instant::now();
    worker.shutdown_now().await;
    assert!(
        at.elapsed() < Duration::from_secs(1),
        "stopped in {:?}",
        at.elapsed()
    );
    let task = hive.get_task(&alice, t.id).await.unwrap();
    assert_eq!(task.state, TaskState::Pending, "back in the queue");
    let events = hive.read_events(&alice, t.id, 0, 100).await.unwrap();
    assert!(events.iter().any(
        |e| matches!(&e.kind, EventKind::AttemptFailed { error, .. } if error.code == "lost")
    ));
    assert!(
        hive.list_nodes(&alice)
            .await
            .unwrap()
            .iter()
            .all(|n| n.id != node),
        "the node is removed"
    );
}
