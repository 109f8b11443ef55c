//! Delayed tasks: `not_before` and `delay`, enforced in the claim.

use hive_core::clock::Timestamp;
use hive_core::worker::{WorkerOptions, handler_fn};

use super::*;

/// A delayed task is `Pending` and not claimable before its time; it is
/// visible (its `available_at` says when) and counted as pending; claims
/// learn when it is due; due tasks are claimed by priority then submission
/// order; a waiting task can be cancelled; its schedule-to-start deadline
/// counts from `not_before`, not from submission.
pub async fn delayed_tasks_wait_for_not_before(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(8).await;
    let t0 = h.clock.now();
    let at = |s: u64| Timestamp::from_millis(t0.as_millis() + (s * 1000) as i64);
    let later = h
        .hive
        .submit(
            &alice(),
            // With a key: some stores take another path for keyed submits.
            spec("echo")
                .delay(Duration::from_secs(10))
                .idempotency_key("later"),
        )
        .await
        .unwrap();
    let sooner = h
        .hive
        .submit(&alice(), spec("echo").not_before(at(5)))
        .await
        .unwrap();
    let sooner_too = h
        .hive
        .submit(&alice(), spec("echo").not_before(at(5)))
        .await
        .unwrap();
    let urgent_but_later = h
        .hive
        .submit(&alice(), spec("echo").not_before(at(5)).priority(5))
        .await
        .unwrap();
    // A time in the past means now.
    let past = h
        .hive
        .submit(
            &alice(),
            spec("echo").not_before(Timestamp::from_millis(t0.as_millis() - 60_000)),
        )
        .await
        .unwrap();
    let task = h.hive.get_task(&alice(), later.id).await.unwrap();
    assert_eq!(task.state, TaskState::Pending);
    assert_eq!(task.available_at, at(10), "get_task shows when it is due");
    assert_eq!(task.spec.delay, Some(Duration::from_secs(10)));
    let task = h.hive.get_task(&alice(), sooner.id).await.unwrap();
    assert_eq!(task.available_at, at(5));
    assert_eq!(task.spec.not_before, Some(at(5)));
    if let Some(n) = h.hive.store().pending_count().await.unwrap() {
        assert_eq!(n, 5, "delayed tasks count as pending");
    }

    let opts = ClaimOptions {
        max: 8,
        agents: Vec::new(),
        start: true,
    };
    let r = h.hive.claim(&w, node, &opts).await.unwrap();
    let ids: Vec<TaskId> = r.tasks.iter().map(|c| c.token.task).collect();
    assert_eq!(ids, vec![past.id], "only the task due now is claimable");
    assert_eq!(
        r.next_due,
        Some(at(5)),
        "the claim says when the next is due"
    );

    h.clock.advance(Duration::from_millis(4_999));
    assert!(
        h.claim(&w, node, 8, true).await.is_empty(),
        "not a ms early"
    );
    h.clock.advance(Duration::from_millis(1));
    let ids: Vec<TaskId> = h
        .claim(&w, node, 8, true)
        .await
        .iter()
        .map(|c| c.token.task)
        .collect();
    assert_eq!(
        ids,
        vec![urgent_but_later.id, sooner.id, sooner_too.id],
        "due tasks are claimed by priority, then in submission order"
    );
    h.clock.advance(Duration::from_secs(5));
    let ids: Vec<TaskId> = h
        .claim(&w, node, 8, true)
        .await
        .iter()
        .map(|c| c.token.task)
        .collect();
    assert_eq!(ids, vec![later.id]);
    let events = h.events(later.id).await;
    assert_event_contract(&events);
    assert_eq!(events[0].at, t0, "queued at submission");
    assert_eq!(events[1].at, at(10), "scheduled when due");

    // Cancelled while waiting: it never runs.
    let waiting = h
        .hive
        .submit(&alice(), spec("echo").delay(Duration::from_secs(3600)))
        .await
        .unwrap();
    h.hive
        .cancel(&alice(), waiting.id, "not needed")
        .await
        .unwrap();
    assert_eq!(h.state(waiting.id).await, TaskState::Cancelled);
    if let Some(n) = h.hive.store().pending_count().await.unwrap() {
        assert_eq!(n, 0, "a cancelled delayed task is no longer pending");
    }
    h.clock.advance(Duration::from_secs(3601));
    assert!(h.claim(&w, node, 8, true).await.is_empty());
    assert_event_contract(&h.events(waiting.id).await);
}

/// The schedule-to-start and overall deadlines of a delayed task count from
/// its `not_before`: waiting for its time is not waiting for a node.
pub async fn delayed_task_deadlines_count_from_not_before(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let timeouts = Timeouts {
        schedule_to_start: Duration::from_secs(60),
        deadline: Some(Duration::from_secs(120)),
        ..Timeouts::default()
    };
    let s = h
        .hive
        .submit(
            &alice(),
            spec("nobody")
                .delay(Duration::from_secs(600))
                .timeouts(timeouts),
        )
        .await
        .unwrap();
    h.advance_and_sweep(Duration::from_secs(599)).await;
    assert_eq!(
        h.state(s.id).await,
        TaskState::Pending,
        "no deadline runs while the task waits for its time"
    );
    h.advance_and_sweep(Duration::from_secs(60)).await;
    assert_eq!(h.state(s.id).await, TaskState::Pending, "59 s after due");
    h.advance_and_sweep(Duration::from_secs(2)).await;
    assert_eq!(
        h.state(s.id).await,
        TaskState::TimedOut,
        "61 s after due, schedule-to-start has passed"
    );
    let events = h.events(s.id).await;
    assert_event_contract(&events);
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::TimedOut {
            phase: TimeoutPhase::ScheduleToStart,
            ..
        }
    ));
}

/// Bad delays are refused with the field named, and nothing is stored.
pub async fn invalid_delays_are_refused(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let both = spec("echo")
        .delay(Duration::from_secs(1))
        .not_before(Timestamp::from_millis(1));
    let too_far = spec("echo").delay(Duration::from_secs(20 * 366 * 24 * 3600));
    let before_epoch = spec("echo").not_before(Timestamp::from_millis(-1));
    for (bad, field) in [
        (both, "delay"),
        (too_far, "delay"),
        (before_epoch, "not_before"),
    ] {
        match h.hive.submit(&alice(), bad).await {
            Err(Error::InvalidSpec { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidSpec({field}), got {other:?}"),
        }
    }
    let page = h
        .hive
        .list_tasks(&alice(), &TaskQuery::default())
        .await
        .unwrap();
    assert!(page.items.is_empty(), "nothing stored for a refused spec");
}

/// A worker waiting for work wakes when a delayed task becomes due (it
/// learns the time from its claim), on the wall clock.
pub async fn a_waiting_worker_runs_a_delayed_task_when_it_is_due(store: Arc<dyn Store>) {
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
            WorkerOptions::new("delayed").capacity(4).handler(
                "echo",
                handler_fn(|ctx| async move { Ok(ctx.input().clone()) }),
            ),
        )
        .await
        .expect("worker starts");
    // Let the worker go idle first, so only the due time can wake it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let submitted = Timestamp::now();
    let s = hive
        .submit(&alice, spec("echo").delay(Duration::from_millis(700)))
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(20), hive.wait(&alice, s.id))
        .await
        .expect("the delayed task ends within 20 s")
        .unwrap();
    assert_eq!(done.state, TaskState::Succeeded);
    let events = hive.store().read_events(s.id, 0, 100).await.unwrap();
    let started = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Started { .. }))
        .expect("a Started event")
        .at;
    let waited = started.as_millis() - submitted.as_millis();
    assert!(
        waited >= 700,
        "started {waited} ms after submission, before its delay"
    );
    assert!(
        waited < 700 + 3_000,
        "started {waited} ms after submission: the worker did not wake when it was due"
    );
    worker.shutdown().await;
    hive.shutdown();
}
