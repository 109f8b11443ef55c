//! Submitting, reading and listing tasks.

use super::*;

// ----- submit, get, list ----------------------------------------------------

/// Submit stores `Queued` as seq 1 and the snapshot carries it.
pub async fn submit_stores_queued_event_and_snapshot(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    assert!(s.created);
    assert_eq!(s.last_seq, 1);
    let t = h.hive.get_task(&alice(), s.id).await.unwrap();
    assert_eq!(t.state, TaskState::Pending);
    assert_eq!(t.last_seq, 1);
    assert_eq!(t.attempt, 0);
    assert_eq!(t.owner.tenant.as_str(), "acme");
    assert_eq!(t.owner.principal.as_str(), "alice");
    assert_eq!(t.spec.input, json!({"n": 1}));
    assert_eq!(h.kinds(s.id).await, vec!["queued"]);
}

/// The same idempotency key returns the same task, within a tenant only.
pub async fn idempotency_key_returns_the_same_task_within_a_tenant(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let a = h
        .hive
        .submit(&alice(), spec("echo").idempotency_key("k1"))
        .await
        .unwrap();
    let b = h
        .hive
        .submit(&bob(), spec("echo").idempotency_key("k1"))
        .await
        .unwrap();
    assert_eq!(a.id, b.id, "same tenant, same key: same task");
    assert!(!b.created);
    let c = h
        .hive
        .submit(&carol(), spec("echo").idempotency_key("k1"))
        .await
        .unwrap();
    assert_ne!(a.id, c.id, "another tenant's key space is separate");
    let batch = h
        .hive
        .submit_batch(
            &alice(),
            vec![
                spec("echo").idempotency_key("k2"),
                spec("echo").idempotency_key("k2"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(batch[0].id, batch[1].id, "a key repeated within one batch");
    assert!(batch[0].created && !batch[1].created);
    let page = h
        .hive
        .list_tasks(&alice(), &TaskQuery::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2, "only two acme tasks exist");
}

/// The same batch (same ids, same keys) submitted by several writers at once,
/// as processes driving one workflow do: every call succeeds, every answer
/// names the one stored task, and each task has exactly one `Queued` event.
pub async fn concurrent_resubmission_of_one_batch_stores_each_task_once(store: Arc<dyn Store>) {
    let h = Harness::new(store.clone());
    let now = h.clock.now();
    for round in 0..20 {
        let batch: Vec<hive_core::store::NewTask> = (0..64)
            .map(|i| hive_core::store::NewTask {
                id: TaskId::new(),
                owner: owner("acme", "alice"),
                spec: Arc::new(spec("echo").idempotency_key(format!("resubmit:{round}:{i}"))),
            })
            .collect();
        // Each writer sends the batch in its own order.
        let writers = (0..4).map(|w| {
            let store = store.clone();
            let mut mine = batch.clone();
            if w % 2 == 1 {
                mine.reverse();
            }
            mine.rotate_left(w * 7);
            let ids: Vec<TaskId> = mine.iter().map(|t| t.id).collect();
            async move { (ids, store.submit(mine, now).await) }
        });
        let answers = futures::future::join_all(writers).await;
        for (ids, answer) in answers {
            let answer = answer.expect("a concurrent resubmission is not an error");
            let answered: Vec<TaskId> = answer.iter().map(|s| s.id).collect();
            assert_eq!(answered, ids, "each answer names the task it was asked for");
        }
        for t in &batch {
            assert_eq!(h.kinds(t.id).await, vec!["queued"], "one task, one event");
        }
    }
}

/// Invalid specs get a typed error naming the field, and nothing is stored.
pub async fn invalid_specs_are_refused_and_nothing_is_stored(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let bad = [
        (TaskSpec::new("", json!(null)), "agent"),
        (TaskSpec::new("has space", json!(null)), "agent"),
        (
            spec("echo").retry(RetryPolicy {
                backoff_coefficient: 0.0,
                ..RetryPolicy::default()
            }),
            "retry.backoff_coefficient",
        ),
        (
            spec("echo").timeouts(Timeouts {
                heartbeat: Duration::ZERO,
                ..Timeouts::default()
            }),
            "timeouts.heartbeat",
        ),
        (spec("echo").idempotency_key(""), "idempotency_key"),
    ];
    for (s, field) in bad {
        match h.hive.submit(&alice(), s).await {
            Err(Error::InvalidSpec { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidSpec on {field}, got {other:?}"),
        }
    }
    match h
        .hive
        .submit_batch(&alice(), vec![spec("ok"), TaskSpec::new("", json!(1))])
        .await
    {
        Err(Error::InvalidSpec { field, .. }) => assert_eq!(field, "[1].agent"),
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
    let page = h
        .hive
        .list_tasks(&alice(), &TaskQuery::default())
        .await
        .unwrap();
    assert!(page.items.is_empty(), "a refused batch stores nothing");
}

/// Another tenant's task is `NotFound` for every read and for cancel.
pub async fn another_tenants_task_is_not_found(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let c = carol();
    assert!(matches!(
        h.hive.get_task(&c, s.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        h.hive.subscribe(&c, s.id, 0).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        h.hive.cancel(&c, s.id, "x").await,
        Err(Error::NotFound { .. })
    ));
    assert!(
        h.hive
            .list_tasks(&c, &TaskQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(h.hive.read_feed(&c, 0, 100).await.unwrap().is_empty());
    assert!(matches!(
        h.hive.get_task(&alice(), TaskId::new()).await,
        Err(Error::NotFound { .. })
    ));
    // Same tenant, other user: visible but not cancellable by a plain user.
    assert!(h.hive.get_task(&bob(), s.id).await.is_ok());
    assert!(matches!(
        h.hive.cancel(&bob(), s.id, "x").await,
        Err(Error::Forbidden { .. })
    ));
    assert_eq!(h.state(s.id).await, TaskState::Pending);
}

/// Listing filters by state, agent and owner and pages by id.
pub async fn list_tasks_filters_and_paginates(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let mut ids = Vec::new();
    for i in 0..25 {
        let agent = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(h.hive.submit(&alice(), spec(agent)).await.unwrap().id);
    }
    h.hive.submit(&bob(), spec("even")).await.unwrap();
    let mut seen = Vec::new();
    let mut q = TaskQuery {
        limit: Some(10),
        owner: Some("alice".into()),
        ..TaskQuery::default()
    };
    loop {
        let page = h.hive.list_tasks(&alice(), &q).await.unwrap();
        seen.extend(page.items.iter().map(|t| t.id));
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ids, "pages cover every task once, in creation order");
    let odd = TaskQuery {
        agent: Some("odd".into()),
        ..TaskQuery::default()
    };
    assert_eq!(
        h.hive.list_tasks(&alice(), &odd).await.unwrap().items.len(),
        12
    );
    h.hive.cancel(&alice(), ids[0], "done").await.unwrap();
    let cancelled = TaskQuery {
        states: vec![TaskState::Cancelled],
        ..TaskQuery::default()
    };
    let page = h.hive.list_tasks(&alice(), &cancelled).await.unwrap();
    assert_eq!(
        page.items.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
}

// ----- batch reads ------------------------------------------------------------

/// `get_tasks` answers in the order asked and leaves out unknown ids.
pub async fn get_tasks_reads_many_in_order(store: Arc<dyn Store>) {
    let h = Harness::new(store.clone());
    let specs: Vec<TaskSpec> = (0..5).map(|_| spec("echo")).collect();
    let ids: Vec<TaskId> = h
        .hive
        .submit_batch(&alice(), specs)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    let asked = vec![ids[3], TaskId::new(), ids[0], ids[4]];
    let got = store.get_tasks(&asked).await.unwrap();
    let got_ids: Vec<TaskId> = got.iter().map(|t| t.id).collect();
    assert_eq!(got_ids, vec![ids[3], ids[0], ids[4]]);
    assert!(
        got.iter()
            .all(|t| t.state == TaskState::Pending && t.last_seq == 1)
    );
    assert!(store.get_tasks(&[]).await.unwrap().is_empty());
}

/// `pending_count` counts ready tasks and retries in their backoff, across
/// tenants, and nothing leased, running or ended.
pub async fn pending_count_counts_ready_and_backoff_tasks(store: Arc<dyn Store>) {
    let h = Harness::new(store.clone());
    assert_eq!(store.pending_count().await.unwrap(), Some(0));
    let policy = RetryPolicy {
        initial_interval: Duration::from_secs(60),
        jitter: 0.0,
        ..RetryPolicy::attempts(3, Duration::from_secs(60))
    };
    let specs: Vec<TaskSpec> = (0..4).map(|_| spec("echo").retry(policy.clone())).collect();
    let ids: Vec<TaskId> = h
        .hive
        .submit_batch(&alice(), specs)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    h.hive
        .submit(&Principal::user("globex", "gina"), spec("echo"))
        .await
        .unwrap();
    assert_eq!(store.pending_count().await.unwrap(), Some(5));
    let (node, w) = h.system_node(2).await;
    let claimed = h.claim(&w, node, 2, true).await;
    assert_eq!(claimed.len(), 2);
    assert_eq!(
        store.pending_count().await.unwrap(),
        Some(3),
        "leased tasks are not pending"
    );
    // One attempt fails: it waits for its backoff, pending again.
    h.hive
        .report_failure(&w, claimed[0].token, TaskError::new("flaky", "again"))
        .await
        .unwrap();
    h.hive
        .report_success(&w, claimed[1].token, serde_json::json!(1))
        .await
        .unwrap();
    assert_eq!(store.pending_count().await.unwrap(), Some(4));
    let waiting = ids
        .iter()
        .copied()
        .find(|id| claimed.iter().all(|c| c.token.task != *id))
        .unwrap();
    h.hive.cancel(&alice(), waiting, "done").await.unwrap();
    assert_eq!(
        store.pending_count().await.unwrap(),
        Some(3),
        "a cancelled task is not"
    );
}
