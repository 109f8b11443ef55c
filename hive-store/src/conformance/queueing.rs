//! Waiting in the queue: a pending task has a deadline (schedule-to-start counts
//! the time spent waiting for a placement), a retry starts when its backoff
//! ends rather than at a worker's next idle poll, and a task that goes back to
//! the queue (a lost placement, a retry) keeps its place by priority and
//! original submission age.

use std::sync::Arc;
use std::time::Duration;

use hive_core::engine::HiveConfig;
use hive_core::store::Store;
use hive_core::task::{EventKind, TaskState, TimeoutPhase, Timeouts};
use hive_core::worker::handler_fn;
use hive_core::{Clock, Hive, RetryPolicy, TaskError, TaskId, Timestamp, WorkerOptions};
use serde_json::json;

use super::{Harness, alice, assert_event_contract, spec};

fn short_wait(secs: f64) -> Timeouts {
    Timeouts {
        schedule_to_start: Duration::from_secs_f64(secs),
        ..Timeouts::default()
    }
}

/// A task whose labels no node carries, with `schedule_to_start = 1s` and no
/// retries, ends `TimedOut { schedule_to_start }` one second after submission
/// (not only at an overall deadline), and its subscriber sees the end.
pub async fn pending_task_no_node_can_take_times_out_on_schedule_to_start(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h
        .hive
        .submit(
            &alice(),
            spec("echo")
                .label("gpu", "h100")
                .timeouts(short_wait(1.0))
                .retry(RetryPolicy::attempts(1, Duration::from_secs(1))),
        )
        .await
        .unwrap();
    let mut sub = h.hive.subscribe(&alice(), s.id, 0).await.unwrap();
    assert!(
        h.claim(&w, node, 4, true).await.is_empty(),
        "no node carries the label"
    );
    h.advance_and_sweep(Duration::from_millis(999)).await;
    assert_eq!(h.state(s.id).await, TaskState::Pending, "not before 1s");
    h.advance_and_sweep(Duration::from_millis(2)).await;
    let events = h.events(s.id).await;
    assert_event_contract(&events);
    assert_eq!(
        events.last().unwrap().kind,
        EventKind::TimedOut {
            phase: TimeoutPhase::ScheduleToStart
        },
        "the terminal event names the deadline that fired"
    );
    let task = h.hive.get_task(&alice(), s.id).await.unwrap();
    assert_eq!(task.state, TaskState::TimedOut);
    assert_eq!(
        task.error.as_ref().map(|e| e.code.as_str()),
        Some("timeout")
    );
    let mut seen = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = sub.next().await {
            seen.push(e.unwrap().kind);
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the subscription ends after the terminal event"
    );
    assert!(seen.last().is_some_and(EventKind::is_terminal), "{seen:?}");
}

/// A retry's wait for a placement counts from the end of its backoff: the
/// schedule-to-start clock restarts, and the retry keeps its own backoff.
pub async fn a_retry_restarts_the_schedule_to_start_clock(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h
        .hive
        .submit(
            &alice(),
            spec("echo")
                .timeouts(short_wait(1.0))
                .retry(RetryPolicy::attempts(2, Duration::from_secs(10))),
        )
        .await
        .unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    h.hive
        .report_failure(&w, c.token, TaskError::new("boom", "first attempt"))
        .await
        .unwrap();
    let retry_at = match h.events(s.id).await.pop().unwrap().kind {
        EventKind::AttemptFailed { retry_at, .. } => retry_at,
        other => panic!("expected AttemptFailed, got {other:?}"),
    };
    let now = h.clock.now();
    assert_eq!(retry_at, now.saturating_add(Duration::from_secs(10)));
    // Within the backoff, and within a second after it: still waiting.
    h.advance_and_sweep(Duration::from_secs(10)).await;
    assert_eq!(h.state(s.id).await, TaskState::Pending, "backoff kept");
    h.advance_and_sweep(Duration::from_millis(999)).await;
    assert_eq!(
        h.state(s.id).await,
        TaskState::Pending,
        "the clock restarted when the backoff ended"
    );
    h.advance_and_sweep(Duration::from_millis(2)).await;
    let events = h.events(s.id).await;
    assert_event_contract(&events);
    assert_eq!(
        events.last().unwrap().kind,
        EventKind::TimedOut {
            phase: TimeoutPhase::ScheduleToStart
        }
    );
}

/// Tasks that go back to the queue keep their place: a task reclaimed from a
/// removed node, and a task whose attempt failed, run before every task
/// submitted after them (same priority), once they are claimable again.
pub async fn reclaimed_and_retried_tasks_keep_their_place_in_the_queue(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let first = h
        .hive
        .submit(
            &alice(),
            spec("echo").retry(RetryPolicy::attempts(5, Duration::from_millis(10))),
        )
        .await
        .unwrap()
        .id;
    let mut backlog = Vec::new();
    for _ in 0..20 {
        backlog.push(h.hive.submit(&alice(), spec("echo")).await.unwrap().id);
    }
    // A later task of higher priority still goes first: priority, then age.
    let urgent = h
        .hive
        .submit(&alice(), spec("echo").priority(5))
        .await
        .unwrap()
        .id;
    let (n1, w1) = h.system_node(1).await;
    assert_eq!(h.claim(&w1, n1, 1, true).await[0].token.task, urgent);
    let (n2, w2) = h.system_node(1).await;
    let c = h.claim(&w2, n2, 1, true).await.remove(0);
    assert_eq!(c.token.task, first, "oldest first");

    // Its node goes away: the task is requeued, and after its backoff it is
    // the head of the queue again, ahead of the 20 tasks submitted after it.
    h.hive.remove_node(&w2, n2).await.unwrap();
    assert_eq!(h.state(first).await, TaskState::Pending);
    h.clock.advance(Duration::from_millis(50));
    let (n3, w3) = h.system_node(1).await;
    let c = h.claim(&w3, n3, 1, true).await.remove(0);
    assert_eq!(c.token.task, first, "a reclaimed task keeps its place");
    assert_eq!(c.token.attempt, 2);

    // Its attempt fails: after the backoff it is first again.
    h.hive
        .report_failure(&w3, c.token, TaskError::new("boom", "again"))
        .await
        .unwrap();
    h.clock.advance(Duration::from_millis(50));
    let c = h.claim(&w3, n3, 1, true).await.remove(0);
    assert_eq!(c.token.task, first, "a retried task keeps its place");
    assert_eq!(c.token.attempt, 3);
    h.hive.report_success(&w3, c.token, json!(1)).await.unwrap();

    // The rest come in submission order.
    let mut order = Vec::new();
    for _ in 0..backlog.len() {
        let c = h.claim(&w3, n3, 1, true).await.remove(0);
        order.push(c.token.task);
        h.hive.report_success(&w3, c.token, json!(1)).await.unwrap();
    }
    assert_eq!(order, backlog);
}

/// With `initial_interval = 100ms` and `backoff_coefficient = 2`, attempts
/// start within a few milliseconds of their stored `retry_at` — a waiting
/// worker is woken when a retry becomes due, not at its next idle poll.
/// Runs on the wall clock, with the engine's default settings.
pub async fn retries_start_when_their_backoff_ends(store: Arc<dyn Store>) {
    let hive = Hive::builder()
        .store(store)
        .config(HiveConfig {
            run_workflows: false,
            ..HiveConfig::default()
        })
        .build()
        .expect("hive builds");
    let alice = alice();
    let worker = hive
        .start_worker(
            &alice,
            WorkerOptions::new("retry-timing").capacity(4).handler(
                "flaky",
                handler_fn(|ctx| async move {
                    if ctx.attempt() < 4 {
                        Err(TaskError::new("flaky", "not yet"))
                    } else {
                        Ok(json!("done"))
                    }
                }),
            ),
        )
        .await
        .expect("worker starts");
    // The store's round trip on this machine, to set the tolerance.
    let probe = hive
        .submit(&alice, spec("nobody-runs-this"))
        .await
        .unwrap()
        .id;
    let mut rtt = Duration::ZERO;
    for _ in 0..5 {
        let t0 = std::time::Instant::now();
        hive.get_task(&alice, probe).await.unwrap();
        rtt = rtt.max(t0.elapsed());
    }
    let mut policy = RetryPolicy::attempts(4, Duration::from_millis(100));
    policy.backoff_coefficient = 2.0;
    let s = hive
        .submit(&alice, spec("flaky").retry(policy))
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(20), wait_terminal(&hive, s.id))
        .await
        .expect("the task ends within 20s");
    assert_eq!(done, TaskState::Succeeded);
    let events = hive.store().read_events(s.id, 0, 1000).await.unwrap();
    assert_event_contract(&events);
    let mut due: Option<Timestamp> = None;
    let mut late = Vec::new();
    let mut gaps = Vec::new();
    let mut last_start: Option<Timestamp> = None;
    for e in &events {
        match &e.kind {
            EventKind::AttemptFailed { retry_at, .. } => due = Some(*retry_at),
            EventKind::Started { .. } => {
                if let Some(d) = due.take() {
                    late.push(e.at.as_millis() - d.as_millis());
                }
                if let Some(prev) = last_start {
                    gaps.push(e.at.as_millis() - prev.as_millis());
                }
                last_start = Some(e.at);
            }
            _ => {}
        }
    }
    assert_eq!(late.len(), 3, "three retries: {events:?}");
    eprintln!("retry lateness {late:?} ms, gaps between starts {gaps:?} ms, store rtt {rtt:?}");
    let tolerance = 30 + rtt.as_millis() as i64;
    assert!(
        late.iter().all(|&ms| (0..=tolerance).contains(&ms)),
        "each retry starts within {tolerance} ms of its retry_at; late by {late:?} ms \
         (gaps between starts {gaps:?} ms, store round trip {rtt:?})"
    );
    // The backoff shows: each gap is about twice the one before.
    assert!(
        gaps[1] > gaps[0] + 50 && gaps[2] > gaps[1] + 100,
        "gaps between starts follow the backoff: {gaps:?} ms"
    );
    worker.shutdown().await;
    hive.shutdown();
}

async fn wait_terminal(hive: &Hive, id: TaskId) -> TaskState {
    let alice = alice();
    let mut sub = hive.subscribe(&alice, id, 0).await.unwrap();
    while let Some(e) = sub.next().await {
        e.unwrap();
    }
    hive.get_task(&alice, id).await.unwrap().state
}
