//! Deadlines: schedule-to-start, heartbeat, start-to-close, the overall deadline, lost and removed nodes.

use super::*;

// ----- deadlines ------------------------------------------------------------

/// A scheduled task not started within schedule-to-start is requeued while
/// attempts remain, then ends `TimedOut`.
pub async fn schedule_to_start_timeout_requeues_then_times_out(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let t = Timeouts {
        schedule_to_start: Duration::from_secs(5),
        ..Timeouts::default()
    };
    let s = h
        .hive
        .submit(
            &alice(),
            spec("echo")
                .timeouts(t)
                .retry(RetryPolicy::attempts(2, Duration::from_secs(1))),
        )
        .await
        .unwrap();
    h.claim(&w, node, 1, false).await.remove(0);
    h.advance_and_sweep(Duration::from_secs(4)).await;
    assert_eq!(
        h.state(s.id).await,
        TaskState::Scheduled,
        "not before the deadline"
    );
    h.hive.node_heartbeat(&w, node).await.unwrap();
    h.advance_and_sweep(Duration::from_millis(1001)).await;
    assert_eq!(h.state(s.id).await, TaskState::Pending);
    h.advance_and_sweep(Duration::from_secs(1)).await;
    h.hive.node_heartbeat(&w, node).await.unwrap();
    h.claim(&w, node, 1, false).await.remove(0);
    h.advance_and_sweep(Duration::from_secs(6)).await;
    let events = h.events(s.id).await;
    assert_event_contract(&events);
    assert_eq!(
        events.last().unwrap().kind,
        EventKind::TimedOut {
            phase: TimeoutPhase::ScheduleToStart
        }
    );
    assert_eq!(h.hive.get_node(&h.system, node).await.unwrap().in_flight, 0);
}

/// A running task that stops heartbeating is requeued after its heartbeat
/// timeout; heartbeats push the deadline out.
pub async fn heartbeat_timeout_requeues_and_heartbeats_extend_it(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let t = Timeouts {
        heartbeat: Duration::from_secs(10),
        ..Timeouts::default()
    };
    let s = h
        .hive
        .submit(
            &alice(),
            spec("echo")
                .timeouts(t)
                .retry(RetryPolicy::attempts(2, Duration::from_secs(1))),
        )
        .await
        .unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    for _ in 0..3 {
        h.clock.advance(Duration::from_secs(8));
        h.hive.heartbeat(&w, vec![(c.token, None)]).await.unwrap()[0]
            .as_ref()
            .unwrap();
        h.hive.sweep(&h.system).await.unwrap();
        assert_eq!(
            h.state(s.id).await,
            TaskState::Running,
            "heartbeats keep it alive"
        );
    }
    h.clock.advance(Duration::from_millis(10_001));
    h.hive.node_heartbeat(&w, node).await.unwrap();
    h.hive.sweep(&h.system).await.unwrap();
    match h.events(s.id).await.pop().unwrap().kind {
        EventKind::AttemptFailed { error, .. } => assert_eq!(error.code, "timeout"),
        other => panic!("expected AttemptFailed, got {other:?}"),
    }
    assert_eq!(h.state(s.id).await, TaskState::Pending);
    h.clock.advance(Duration::from_secs(2));
    h.hive.node_heartbeat(&w, node).await.unwrap();
    h.claim(&w, node, 1, true).await.remove(0);
    h.clock.advance(Duration::from_secs(11));
    h.hive.node_heartbeat(&w, node).await.unwrap();
    h.hive.sweep(&h.system).await.unwrap();
    assert_eq!(
        h.events(s.id).await.pop().unwrap().kind,
        EventKind::TimedOut {
            phase: TimeoutPhase::Heartbeat
        }
    );
}

/// An attempt running past start-to-close ends even while heartbeating.
pub async fn start_to_close_timeout_ends_the_attempt(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let t = Timeouts {
        heartbeat: Duration::from_secs(10),
        start_to_close: Duration::from_secs(25),
        ..Timeouts::default()
    };
    let s = h
        .hive
        .submit(
            &alice(),
            spec("echo").timeouts(t).retry(RetryPolicy::none()),
        )
        .await
        .unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    for _ in 0..3 {
        h.clock.advance(Duration::from_secs(8));
        let _ = h.hive.heartbeat(&w, vec![(c.token, None)]).await.unwrap();
    }
    h.advance_and_sweep(Duration::from_secs(2)).await;
    let events = h.events(s.id).await;
    assert_event_contract(&events);
    assert_eq!(
        events.last().unwrap().kind,
        EventKind::TimedOut {
            phase: TimeoutPhase::StartToClose
        }
    );
    assert!(matches!(
        h.hive.report_success(&w, c.token, json!(1)).await,
        Err(Error::LeaseLost { .. })
    ));
}

/// A pending task that no node can run ends `TimedOut` at its overall deadline
/// instead of landing anywhere.
pub async fn overall_deadline_ends_a_pending_task_with_no_eligible_node(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h
        .node(&bob(), NodeSpec::user("bob-box", owner("acme", "bob"), 4))
        .await;
    let t = Timeouts {
        deadline: Some(Duration::from_secs(30)),
        ..Timeouts::default()
    };
    let s = h
        .hive
        .submit(&alice(), spec("echo").timeouts(t))
        .await
        .unwrap();
    assert!(
        h.claim(&w, node, 4, true).await.is_empty(),
        "bob's node never runs alice's task"
    );
    h.advance_and_sweep(Duration::from_secs(29)).await;
    assert_eq!(h.state(s.id).await, TaskState::Pending);
    h.advance_and_sweep(Duration::from_secs(1)).await;
    assert_eq!(
        h.events(s.id).await.pop().unwrap().kind,
        EventKind::TimedOut {
            phase: TimeoutPhase::Deadline
        }
    );
}

/// A node that stops heartbeating is Lost after three intervals and its leases
/// are reclaimed; a heartbeat revives it.
pub async fn lost_node_leases_are_reclaimed_within_three_intervals(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let (other, ow) = h.system_node(4).await;
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let _c = h.claim(&w, node, 1, true).await.remove(0);
    let lost_after = h.hive.config().node_lost_after();
    h.clock.advance(lost_after);
    h.hive.node_heartbeat(&ow, other).await.unwrap();
    h.hive.sweep(&h.system).await.unwrap();
    assert_eq!(
        h.state(s.id).await,
        TaskState::Running,
        "not before three intervals"
    );
    h.clock.advance(Duration::from_millis(1));
    h.hive.node_heartbeat(&ow, other).await.unwrap();
    let report = h.hive.sweep(&h.system).await.unwrap();
    assert_eq!(report.nodes_lost, 1);
    assert_eq!(report.placements_lost, 1);
    assert_eq!(
        h.hive.get_node(&h.system, node).await.unwrap().status,
        NodeStatus::Lost
    );
    match h.events(s.id).await.pop().unwrap().kind {
        EventKind::AttemptFailed { error, .. } => assert_eq!(error.code, "lost"),
        other => panic!("expected AttemptFailed, got {other:?}"),
    }
    h.clock.advance(Duration::from_secs(5));
    let c2 = h.claim(&ow, other, 1, true).await.remove(0);
    assert_eq!(c2.token.attempt, 2);
    assert!(
        h.claim(&w, node, 1, true).await.is_empty(),
        "a lost node claims nothing"
    );
    assert_eq!(
        h.hive.node_heartbeat(&w, node).await.unwrap().status,
        NodeStatus::Ready
    );
}

/// Removing a node requeues its leases at once.
pub async fn removed_node_leases_are_requeued_at_once(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h
        .hive
        .submit(
            &alice(),
            spec("echo").retry(RetryPolicy::attempts(3, Duration::from_millis(1))),
        )
        .await
        .unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    h.hive.remove_node(&w, node).await.unwrap();
    assert_eq!(h.state(s.id).await, TaskState::Pending);
    assert!(matches!(
        h.hive.get_node(&h.system, node).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        h.hive.report_success(&w, c.token, json!(1)).await,
        Err(Error::LeaseLost { .. })
    ));
}
