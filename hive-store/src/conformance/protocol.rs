//! The worker protocol: claims, reports, retries of failed attempts, cancels, logs and progress, batches and races.

use super::*;

// ----- the worker protocol ----------------------------------------------------

/// Submit → claim → start → succeed appends Queued, Scheduled, Started,
/// Succeeded; the report's ack is the terminal event's seq.
pub async fn happy_path_appends_gapless_events_and_acks_terminal_seq(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let claimed = h.claim(&w, node, 10, false).await;
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!(c.token.task, s.id);
    assert_eq!(c.token.attempt, 1);
    assert!(!c.started);
    assert_eq!(h.state(s.id).await, TaskState::Scheduled);
    let started = h.hive.start(&w, &[c.token]).await.unwrap();
    assert_eq!(started[0].as_ref().unwrap().state, TaskState::Running);
    let ack = h
        .hive
        .report_success(&w, c.token, json!({"ok": true}))
        .await
        .unwrap();
    assert_eq!(
        ack,
        Ack {
            seq: 4,
            state: TaskState::Succeeded
        }
    );
    let events = h.events(s.id).await;
    assert_event_contract(&events);
    assert_eq!(
        h.kinds(s.id).await,
        vec!["queued", "scheduled", "started", "succeeded"]
    );
    assert_eq!(events[1].kind, EventKind::Scheduled { node });
    assert_eq!(events[2].kind, EventKind::Started { node, attempt: 1 });
    let t = h.hive.get_task(&alice(), s.id).await.unwrap();
    assert_eq!(t.output, Some(json!({"ok": true})));
    assert_eq!(t.node, Some(node));
    assert_eq!(h.hive.get_node(&h.system, node).await.unwrap().in_flight, 0);
    // Claim-and-start in one step appends the same events.
    let s2 = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let c2 = h.claim(&w, node, 1, true).await;
    assert!(c2[0].started);
    assert_eq!(c2[0].last_seq, 3);
    assert_eq!(h.kinds(s2.id).await, vec!["queued", "scheduled", "started"]);
}

/// A duplicate of an accepted report is answered with the same ack and appends
/// nothing; a different report on the ended task is refused.
pub async fn duplicate_report_gets_the_same_ack_and_appends_nothing(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    let first = h.hive.report_success(&w, c.token, json!(1)).await.unwrap();
    let again = h.hive.report_success(&w, c.token, json!(1)).await.unwrap();
    assert_eq!(first, again);
    match h
        .hive
        .report_failure(&w, c.token, TaskError::new("x", "y"))
        .await
    {
        Err(Error::AlreadyTerminal { state, seq, .. }) => {
            assert_eq!(state, TaskState::Succeeded);
            assert_eq!(seq, first.seq);
        }
        other => panic!("expected AlreadyTerminal, got {other:?}"),
    }
    assert_eq!(
        h.events(s.id).await.len() as u64,
        first.seq,
        "nothing appended after the terminal event"
    );
    // The same for a failure that scheduled a retry.
    let s2 = h
        .hive
        .submit(
            &alice(),
            spec("echo").retry(RetryPolicy::attempts(3, Duration::from_secs(1))),
        )
        .await
        .unwrap();
    let c2 = h.claim(&w, node, 1, true).await.remove(0);
    let f1 = h
        .hive
        .report_failure(&w, c2.token, TaskError::new("e", "m"))
        .await
        .unwrap();
    let f2 = h
        .hive
        .report_failure(&w, c2.token, TaskError::new("e", "m"))
        .await
        .unwrap();
    assert_eq!(f1, f2);
    assert_eq!(f1.state, TaskState::Pending);
    assert_eq!(h.events(s2.id).await.len(), 4);
}

/// A worker whose lease was taken away gets `LeaseLost`; its result is discarded.
pub async fn stale_lease_gets_lease_lost(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    h.hive
        .cancel(&alice(), s.id, "changed my mind")
        .await
        .unwrap();
    assert!(matches!(
        h.hive.report_success(&w, c.token, json!(1)).await,
        Err(Error::LeaseLost { .. })
    ));
    let hb = h.hive.heartbeat(&w, vec![(c.token, None)]).await.unwrap();
    assert!(matches!(hb[0], Err(Error::LeaseLost { .. })));
    assert_eq!(
        h.kinds(s.id).await,
        vec!["queued", "scheduled", "started", "cancelled"]
    );
    // A lease replaced by a retry: the old token is stale, the new one works.
    let s2 = h
        .hive
        .submit(
            &alice(),
            spec("echo")
                .retry(RetryPolicy::attempts(2, Duration::from_millis(10)))
                .timeouts(Timeouts {
                    heartbeat: Duration::from_secs(5),
                    ..Timeouts::default()
                }),
        )
        .await
        .unwrap();
    let old = h.claim(&w, node, 1, true).await.remove(0);
    h.clock.advance(Duration::from_secs(6));
    h.hive.node_heartbeat(&w, node).await.unwrap();
    h.hive.sweep(&h.system).await.unwrap();
    assert_eq!(
        h.state(s2.id).await,
        TaskState::Pending,
        "requeued after the heartbeat timeout"
    );
    h.clock.advance(Duration::from_millis(20));
    let new = h.claim(&w, node, 1, true).await.remove(0);
    assert_eq!(new.token.attempt, 2);
    assert!(matches!(
        h.hive.report_success(&w, old.token, json!("late")).await,
        Err(Error::LeaseLost { .. })
    ));
    h.hive
        .report_success(&w, new.token, json!("fresh"))
        .await
        .unwrap();
    let t = h.hive.get_task(&alice(), s2.id).await.unwrap();
    assert_eq!(t.output, Some(json!("fresh")));
}

/// A worker may not start, heartbeat, log or report a task leased to another
/// node, nor claim for another node; users may not work nodes at all.
pub async fn worker_cannot_touch_another_nodes_lease(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (n1, w1) = h.system_node(4).await;
    let (n2, w2) = h.system_node(4).await;
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let c = h.claim(&w1, n1, 1, false).await.remove(0);
    assert!(matches!(
        h.hive.start(&w2, &[c.token]).await.unwrap()[0],
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.report_success(&w2, c.token, json!(1)).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.log(&w2, c.token, "stdout", "x").await,
        Err(Error::Forbidden { .. })
    ));
    let opts = ClaimOptions {
        max: 1,
        ..ClaimOptions::default()
    };
    assert!(matches!(
        h.hive.claim(&w2, n1, &opts).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.claim(&alice(), n1, &opts).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.report_success(&alice(), c.token, json!(1)).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.node_heartbeat(&w2, n1).await,
        Err(Error::Forbidden { .. })
    ));
    // Workers may not use system-level operations either.
    assert!(matches!(
        h.hive.submit(&w1, spec("echo")).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.get_task(&w1, s.id).await,
        Err(Error::Forbidden { .. }) | Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        h.hive.sweep(&w1).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.register_node(&w1, NodeSpec::system("x", 1)).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.drain_node(&w1, n2).await,
        Err(Error::Forbidden { .. }) | Err(Error::NotFound { .. })
    ));
    assert_eq!(
        h.kinds(s.id).await,
        vec!["queued", "scheduled"],
        "nothing was appended by refused calls"
    );
    h.hive.start(&w1, &[c.token]).await.unwrap()[0]
        .as_ref()
        .unwrap();
}

/// A failed attempt with retries left goes back to Pending with a stored
/// `retry_at`; it is not claimable before then.
pub async fn failed_attempt_is_retried_after_the_stored_backoff(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let policy = RetryPolicy {
        initial_interval: Duration::from_secs(10),
        backoff_coefficient: 3.0,
        jitter: 0.0,
        ..RetryPolicy::attempts(3, Duration::from_secs(10))
    };
    let s = h
        .hive
        .submit(&alice(), spec("echo").retry(policy))
        .await
        .unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    let t0 = h.clock.now();
    let ack = h
        .hive
        .report_failure(&w, c.token, TaskError::new("flaky", "again"))
        .await
        .unwrap();
    assert_eq!(ack.state, TaskState::Pending);
    let ev = h.events(s.id).await.pop().unwrap();
    match ev.kind {
        EventKind::AttemptFailed {
            attempt,
            retry_at,
            error,
        } => {
            assert_eq!(attempt, 1);
            assert_eq!(retry_at, t0.saturating_add(Duration::from_secs(10)));
            assert_eq!(error.code, "flaky");
        }
        other => panic!("expected AttemptFailed, got {other:?}"),
    }
    assert_eq!(
        h.hive.get_task(&alice(), s.id).await.unwrap().available_at,
        t0.saturating_add(Duration::from_secs(10))
    );
    h.clock.advance(Duration::from_secs(9));
    assert!(
        h.claim(&w, node, 1, true).await.is_empty(),
        "not before retry_at"
    );
    h.clock.advance(Duration::from_secs(1));
    let c2 = h.claim(&w, node, 1, true).await.remove(0);
    assert_eq!(c2.token.attempt, 2);
    let t1 = h.clock.now();
    h.hive
        .report_failure(&w, c2.token, TaskError::new("flaky", "again"))
        .await
        .unwrap();
    match h.events(s.id).await.pop().unwrap().kind {
        EventKind::AttemptFailed { retry_at, .. } => {
            assert_eq!(retry_at, t1.saturating_add(Duration::from_secs(30)))
        }
        other => panic!("expected AttemptFailed, got {other:?}"),
    }
}

/// After `max_attempts` the task fails with the last error.
pub async fn attempts_are_exhausted_then_the_task_fails(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h
        .hive
        .submit(
            &alice(),
            spec("echo").retry(RetryPolicy::attempts(2, Duration::from_millis(1))),
        )
        .await
        .unwrap();
    for attempt in 1..=2 {
        h.clock.advance(Duration::from_millis(5));
        let c = h.claim(&w, node, 1, true).await.remove(0);
        assert_eq!(c.token.attempt, attempt);
        h.hive
            .report_failure(&w, c.token, TaskError::new("boom", format!("#{attempt}")))
            .await
            .unwrap();
    }
    let t = h.hive.get_task(&alice(), s.id).await.unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert_eq!(t.error.unwrap().message, "#2");
    assert_eq!(
        h.kinds(s.id).await,
        vec![
            "queued",
            "scheduled",
            "started",
            "attempt_failed",
            "scheduled",
            "started",
            "failed"
        ]
    );
    h.clock.advance(Duration::from_secs(60));
    assert!(h.claim(&w, node, 1, true).await.is_empty());
}

/// Non-retryable errors (by flag or by the policy's code list) fail at once.
pub async fn non_retryable_errors_fail_at_once(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let policy = RetryPolicy {
        non_retryable: vec!["bad_input".into()],
        ..RetryPolicy::attempts(5, Duration::from_millis(1))
    };
    let a = h
        .hive
        .submit(&alice(), spec("echo").retry(policy.clone()))
        .await
        .unwrap();
    let b = h
        .hive
        .submit(&alice(), spec("echo").retry(policy))
        .await
        .unwrap();
    for c in h.claim(&w, node, 2, true).await {
        let err = if c.token.task == a.id {
            TaskError::new("bad_input", "no")
        } else {
            TaskError::new("whatever", "no").non_retryable()
        };
        assert_eq!(
            h.hive.report_failure(&w, c.token, err).await.unwrap().state,
            TaskState::Failed
        );
    }
    assert_eq!(h.state(a.id).await, TaskState::Failed);
    assert_eq!(h.state(b.id).await, TaskState::Failed);
}

/// Cancel ends pending, scheduled and running tasks; cancelling an ended task is
/// refused with its terminal state.
pub async fn cancel_ends_pending_and_running_tasks(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let pending = h
        .hive
        .submit(&alice(), spec("echo").priority(-1))
        .await
        .unwrap();
    let running = h
        .hive
        .submit(&alice(), spec("echo").priority(5))
        .await
        .unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    assert_eq!(c.token.task, running.id);
    let ops = Principal::operator("acme", "oscar");
    for id in [pending.id, running.id] {
        let ack = h.hive.cancel(&ops, id, "stop").await.unwrap();
        assert_eq!(ack.state, TaskState::Cancelled);
        match h.events(id).await.pop().unwrap().kind {
            EventKind::Cancelled { by, reason } => {
                assert_eq!(by.as_str(), "oscar");
                assert_eq!(reason, "stop");
            }
            other => panic!("expected Cancelled, got {other:?}"),
        }
    }
    assert!(matches!(
        h.hive.cancel(&alice(), pending.id, "again").await,
        Err(Error::AlreadyTerminal {
            state: TaskState::Cancelled,
            ..
        })
    ));
    assert!(
        h.claim(&w, node, 4, true).await.is_empty(),
        "a cancelled task is never claimed"
    );
    assert_eq!(
        h.hive.get_node(&h.system, node).await.unwrap().in_flight,
        0,
        "the lease was released"
    );
}

/// Logs and heartbeat progress are events in the task's stream.
pub async fn logs_and_progress_are_events(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    h.hive
        .log(&w, c.token, "stderr", "warming up")
        .await
        .unwrap();
    h.hive
        .heartbeat(&w, vec![(c.token, Some(json!({"pct": 50})))])
        .await
        .unwrap();
    let events = h.events(s.id).await;
    assert_eq!(
        events[3].kind,
        EventKind::Log {
            stream: "stderr".into(),
            line: "warming up".into()
        }
    );
    assert_eq!(
        events[4].kind,
        EventKind::Heartbeat {
            node,
            attempt: 1,
            progress: Some(json!({"pct": 50}))
        }
    );
    assert!(matches!(
        h.hive.log(&w, c.token, "", "x").await,
        Err(Error::InvalidArgument { .. })
    ));
}

/// In one batch, a refused item does not refuse the others.
pub async fn batch_items_fail_independently(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    h.hive
        .submit_batch(&alice(), vec![spec("echo"), spec("echo")])
        .await
        .unwrap();
    let c = h.claim(&w, node, 2, true).await;
    let mut bogus = c[0].token;
    bogus.lease = hive_core::LeaseId::new();
    let reports = vec![
        Report {
            token: c[0].token,
            outcome: ReportOutcome::Success { output: json!(1) },
        },
        Report {
            token: bogus,
            outcome: ReportOutcome::Success { output: json!(2) },
        },
        Report {
            token: hive_core::LeaseToken {
                task: TaskId::new(),
                ..c[1].token
            },
            outcome: ReportOutcome::Success { output: json!(3) },
        },
        Report {
            token: c[1].token,
            outcome: ReportOutcome::Failure {
                error: TaskError::new("e", "m").non_retryable(),
            },
        },
    ];
    let answers = h.hive.report(&w, reports).await.unwrap();
    assert_eq!(answers.len(), 4);
    assert_eq!(answers[0].as_ref().unwrap().state, TaskState::Succeeded);
    assert!(matches!(
        answers[1],
        Err(Error::AlreadyTerminal { .. }) | Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(answers[2], Err(Error::NotFound { .. })));
    assert_eq!(answers[3].as_ref().unwrap().state, TaskState::Failed);
}

/// Many concurrent reports for one task: exactly one terminal event.
pub async fn concurrent_reports_have_exactly_one_winner(store: Arc<dyn Store>) {
    let h = Arc::new(Harness::new(store));
    let (node, w) = h.system_node(64).await;
    let specs: Vec<TaskSpec> = (0..50).map(|_| spec("echo")).collect();
    h.hive.submit_batch(&alice(), specs).await.unwrap();
    let claimed = h.claim(&w, node, 50, true).await;
    let mut joins = Vec::new();
    for c in &claimed {
        for k in 0..4 {
            let (h, w, token) = (h.clone(), w.clone(), c.token);
            joins.push(tokio::spawn(async move {
                if k % 2 == 0 {
                    h.hive.report_success(&w, token, json!(k)).await
                } else {
                    h.hive.cancel(&alice(), token.task, "race").await
                }
            }));
        }
    }
    for j in joins {
        let _ = j.await.unwrap();
    }
    for c in &claimed {
        let events = h.events(c.token.task).await;
        assert_event_contract(&events);
        assert_eq!(events.iter().filter(|e| e.kind.is_terminal()).count(), 1);
    }
    let _ = AllowAll;
}

/// Issue 11, item 12: consecutive heartbeats of an attempt are stored as one
/// event (the latest beat, in place), so a task's stored events grow with its
/// attempts and log lines, not its beats; the tenant's feed gets one entry per
/// run of beats; a live subscriber (on another `Hive`) still sees every beat,
/// and a replay shows the latest one.
pub async fn heartbeats_coalesce_in_storage_and_every_beat_reaches_live_subscribers(
    store: Arc<dyn Store>,
) {
    let h = Harness::new(store.clone());
    let other = Harness::new(store.clone());
    let (node, w) = h.system_node(4).await;
    let tenant = alice().tenant.clone();
    let feed_before = store.read_feed(&tenant, 0, 100_000).await.unwrap().len();
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    let mut sub = other.hive.subscribe(&alice(), s.id, 3).await.unwrap();
    let beat = |n: u64| {
        let hive = h.hive.clone();
        let w = w.clone();
        async move {
            hive.heartbeat(&w, vec![(c.token, Some(json!({ "n": n })))])
                .await
                .unwrap()
                .remove(0)
                .unwrap()
        }
    };
    let progress = |ev: &TaskEvent| match &ev.kind {
        EventKind::Heartbeat { progress, .. } => progress.clone(),
        other => panic!("expected a heartbeat, got {other:?}"),
    };
    for n in 1..=50 {
        h.clock.advance(Duration::from_millis(5));
        let ack = beat(n).await;
        assert_eq!(ack.seq, 4, "beat {n} keeps the seq of the first");
        let ev = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("a live subscriber sees every beat")
            .expect("not ended")
            .unwrap();
        assert_eq!((ev.seq, progress(&ev)), (4, Some(json!({ "n": n }))));
    }
    let events = h.events(s.id).await;
    assert_eq!(events.len(), 4, "50 beats, one stored event: {events:?}");
    assert_eq!(progress(&events[3]), Some(json!({"n": 50})));
    assert_eq!(h.hive.get_task(&alice(), s.id).await.unwrap().last_seq, 4);
    // A log line ends the run; the next beats are one new event.
    h.hive.log(&w, c.token, "stdout", "half way").await.unwrap();
    for n in 51..=60 {
        assert_eq!(beat(n).await.seq, 6);
    }
    h.hive
        .report_success(&w, c.token, json!("done"))
        .await
        .unwrap();
    let events = h.events(s.id).await;
    assert_eq!(events.len(), 7);
    assert_event_contract(&events);
    assert_eq!(progress(&events[5]), Some(json!({"n": 60})));
    // The live subscription ends after handing out what followed, once each.
    let rest = tokio::time::timeout(Duration::from_secs(10), sub.collect())
        .await
        .expect("ends")
        .unwrap();
    let seqs: Vec<u64> = rest.iter().map(|e| e.seq).collect();
    assert_eq!(seqs.first(), Some(&5));
    assert_eq!(seqs.last(), Some(&7));
    assert_eq!(rest.last().map(|e| e.kind.name()), Some("succeeded"));
    // A replay shows the latest beat of each run.
    let replay = other
        .hive
        .subscribe(&alice(), s.id, 0)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(replay, events);
    // The feed: one entry per stored event, none per replaced beat.
    let feed = store.read_feed(&tenant, 0, 100_000).await.unwrap();
    let mine: Vec<u64> = feed[feed_before..]
        .iter()
        .filter(|f| f.event.task == s.id)
        .map(|f| f.event.seq)
        .collect();
    assert_eq!(mine, (1..=7).collect::<Vec<_>>());
}
