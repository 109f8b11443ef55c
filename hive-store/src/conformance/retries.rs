//! Retry policy fields the store must honour.

use super::*;

// ----- retry policy fields the store must honour ---------------------------------

/// `placement: avoid_previous_node`: the retry is not claimable by the node that
/// ran the failed attempt, and is by another node.
pub async fn retry_placement_avoids_the_previous_node(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (a, wa) = h.system_node(4).await;
    let (b, wb) = h.system_node(4).await;
    let policy = RetryPolicy {
        placement: hive_core::RetryPlacement::AvoidPreviousNode,
        ..RetryPolicy::attempts(3, Duration::from_secs(1))
    };
    let s = h
        .hive
        .submit(&alice(), spec("echo").retry(policy))
        .await
        .unwrap();
    let c = h.claim(&wa, a, 1, true).await.remove(0);
    h.hive
        .report_failure(&wa, c.token, TaskError::new("flaky", "again"))
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(2));
    assert!(
        h.claim(&wa, a, 1, true).await.is_empty(),
        "the node that ran the failed attempt must not get the retry"
    );
    assert_eq!(h.state(s.id).await, TaskState::Pending);
    let c2 = h.claim(&wb, b, 1, true).await.remove(0);
    assert_eq!(c2.token.task, s.id);
    assert_eq!(c2.token.attempt, 2);
    // A plain policy retries anywhere, the same node included.
    let s2 = h
        .hive
        .submit(
            &alice(),
            spec("echo").retry(RetryPolicy::attempts(3, Duration::from_secs(1))),
        )
        .await
        .unwrap();
    let c = h.claim(&wa, a, 1, true).await.remove(0);
    assert_eq!(c.token.task, s2.id);
    h.hive
        .report_failure(&wa, c.token, TaskError::new("flaky", "again"))
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(2));
    assert_eq!(h.claim(&wa, a, 1, true).await.remove(0).token.task, s2.id);
}

/// A worker's suggested delay is used, clamped to the policy's `max_interval`;
/// per-code overrides change the attempts and backoff of their code only.
pub async fn suggested_delays_and_per_code_overrides_set_the_stored_retry_time(
    store: Arc<dyn Store>,
) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(8).await;
    let mut policy = RetryPolicy {
        max_interval: Some(Duration::from_secs(20)),
        ..RetryPolicy::attempts(2, Duration::from_secs(1))
    };
    policy.overrides.insert(
        "rate_limited".into(),
        hive_core::RetryOverride {
            max_attempts: Some(hive_core::MaxAttempts::Limited(4)),
            initial_interval: Some(Duration::from_secs(5)),
            ..Default::default()
        },
    );
    let s = h
        .hive
        .submit(&alice(), spec("echo").retry(policy))
        .await
        .unwrap();
    let retry_at = |ev: &TaskEvent| match &ev.kind {
        EventKind::AttemptFailed { retry_at, .. } => *retry_at,
        other => panic!("expected AttemptFailed, got {other:?}"),
    };
    // Attempt 1: the worker suggests 10 minutes; clamped to 20 s.
    let c = h.claim(&w, node, 1, true).await.remove(0);
    let t0 = h.clock.now();
    h.hive
        .report_failure(
            &w,
            c.token,
            TaskError::new("flaky", "slow down").retry_after(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let ev = h.events(s.id).await.pop().unwrap();
    assert_eq!(retry_at(&ev), t0.saturating_add(Duration::from_secs(20)));
    // Attempts 2 and 3 fail with the overridden code: 4 attempts, 5 s then 10 s.
    h.clock.advance(Duration::from_secs(20));
    for (attempt, delay) in [(2u32, 10u64), (3, 20)] {
        let c = h.claim(&w, node, 1, true).await.remove(0);
        assert_eq!(c.token.attempt, attempt);
        let t = h.clock.now();
        let ack = h
            .hive
            .report_failure(&w, c.token, TaskError::new("rate_limited", "429"))
            .await
            .unwrap();
        assert_eq!(ack.state, TaskState::Pending, "attempt {attempt}");
        let ev = h.events(s.id).await.pop().unwrap();
        assert_eq!(retry_at(&ev), t.saturating_add(Duration::from_secs(delay)));
        h.clock.advance(Duration::from_secs(delay));
    }
    // Attempt 4 is the override's last.
    let c = h.claim(&w, node, 1, true).await.remove(0);
    assert_eq!(c.token.attempt, 4);
    let ack = h
        .hive
        .report_failure(&w, c.token, TaskError::new("rate_limited", "429"))
        .await
        .unwrap();
    assert_eq!(ack.state, TaskState::Failed);
}

/// `max_interval` caps the backoff, `jitter` spreads it within its fraction,
/// `max_elapsed` stops retries that would start too late, and `retry_on` turns
/// off retries per cause.
pub async fn retry_bounds_max_interval_jitter_max_elapsed_and_retry_on(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(16).await;
    let retry_at_of = |ev: &TaskEvent| match &ev.kind {
        EventKind::AttemptFailed { retry_at, .. } => *retry_at,
        other => panic!("expected AttemptFailed, got {other:?}"),
    };
    let fail = |token| {
        h.hive
            .report_failure(&w, token, TaskError::new("flaky", "x"))
    };

    // max_interval: 10 s, then 100 s capped to 30 s.
    let capped = RetryPolicy {
        backoff_coefficient: 10.0,
        max_interval: Some(Duration::from_secs(30)),
        ..RetryPolicy::attempts(5, Duration::from_secs(10))
    };
    let s = h
        .hive
        .submit(&alice(), spec("echo").retry(capped))
        .await
        .unwrap();
    let t = h.clock.now();
    fail(h.claim(&w, node, 1, true).await.remove(0).token)
        .await
        .unwrap();
    assert_eq!(
        retry_at_of(&h.events(s.id).await.pop().unwrap()),
        t.saturating_add(Duration::from_secs(10))
    );
    h.clock.advance(Duration::from_secs(10));
    let t = h.clock.now();
    fail(h.claim(&w, node, 1, true).await.remove(0).token)
        .await
        .unwrap();
    assert_eq!(
        retry_at_of(&h.events(s.id).await.pop().unwrap()),
        t.saturating_add(Duration::from_secs(30))
    );
    h.hive.cancel(&alice(), s.id, "done").await.unwrap();

    // jitter: within ±50 % of 10 s.
    let jittery = RetryPolicy {
        jitter: 0.5,
        ..RetryPolicy::attempts(2, Duration::from_secs(10))
    };
    let s = h
        .hive
        .submit(&alice(), spec("echo").retry(jittery))
        .await
        .unwrap();
    let t = h.clock.now();
    fail(h.claim(&w, node, 1, true).await.remove(0).token)
        .await
        .unwrap();
    let at = retry_at_of(&h.events(s.id).await.pop().unwrap());
    assert!(
        at >= t.saturating_add(Duration::from_secs(5))
            && at <= t.saturating_add(Duration::from_secs(15)),
        "jittered retry at {at} outside [t+5s, t+15s]"
    );
    h.hive.cancel(&alice(), s.id, "done").await.unwrap();

    // max_elapsed: the second retry would start 30 s after submission > 15 s.
    let bounded = RetryPolicy {
        max_elapsed: Some(Duration::from_secs(15)),
        ..RetryPolicy::attempts(10, Duration::from_secs(10))
    };
    let s = h
        .hive
        .submit(&alice(), spec("echo").retry(bounded))
        .await
        .unwrap();
    let ack = fail(h.claim(&w, node, 1, true).await.remove(0).token)
        .await
        .unwrap();
    assert_eq!(ack.state, TaskState::Pending);
    h.clock.advance(Duration::from_secs(10));
    let ack = fail(h.claim(&w, node, 1, true).await.remove(0).token)
        .await
        .unwrap();
    assert_eq!(ack.state, TaskState::Failed, "no retry past max_elapsed");
    assert_eq!(h.state(s.id).await, TaskState::Failed);

    // retry_on.timeout = false: a schedule-to-start timeout ends the task.
    let no_timeouts = RetryPolicy {
        retry_on: hive_core::RetryOn {
            timeout: false,
            ..Default::default()
        },
        ..RetryPolicy::attempts(5, Duration::from_secs(1))
    };
    let s = h
        .hive
        .submit(
            &alice(),
            spec("echo").retry(no_timeouts).timeouts(Timeouts {
                schedule_to_start: Duration::from_secs(5),
                ..Timeouts::default()
            }),
        )
        .await
        .unwrap();
    let c = h.claim(&w, node, 1, false).await.remove(0);
    assert_eq!(c.token.task, s.id);
    h.advance_and_sweep(Duration::from_secs(6)).await;
    assert_eq!(h.state(s.id).await, TaskState::TimedOut);
    assert_eq!(h.kinds(s.id).await.last(), Some(&"timed_out"));
}
