//! Placement: ownership, shares, labels, capacity, agents, priority and fairness.

use super::*;

// ----- placement ------------------------------------------------------------

/// User nodes run only their owner's tasks and those they are shared with;
/// system nodes run anyone's; required labels must match.
pub async fn claims_respect_ownership_shares_and_labels(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (an, aw) = h
        .node(
            &alice(),
            NodeSpec::user("alice-laptop", owner("acme", "alice"), 100),
        )
        .await;
    let (sn, sw) = h
        .node(
            &alice(),
            NodeSpec::user("alice-shared", owner("acme", "alice"), 100).share(ShareTarget::User {
                tenant: "acme".into(),
                principal: "bob".into(),
            }),
        )
        .await;
    let (gn, gw) = h
        .node(
            &h.system.clone(),
            NodeSpec::system("gpu", 100).label("gpu", "a100"),
        )
        .await;
    let a_plain = h.hive.submit(&alice(), spec("echo")).await.unwrap().id;
    let b_plain = h.hive.submit(&bob(), spec("echo")).await.unwrap().id;
    let c_plain = h.hive.submit(&carol(), spec("echo")).await.unwrap().id;
    let b_gpu = h
        .hive
        .submit(&bob(), spec("echo").label("gpu", "a100"))
        .await
        .unwrap()
        .id;
    let a_tpu = h
        .hive
        .submit(&alice(), spec("echo").label("tpu", "v5"))
        .await
        .unwrap()
        .id;
    let got = |v: Vec<ClaimedTask>| v.iter().map(|c| c.token.task).collect::<BTreeSet<_>>();
    assert_eq!(
        got(h.claim(&aw, an, 100, false).await),
        BTreeSet::from([a_plain])
    );
    assert_eq!(
        got(h.claim(&sw, sn, 100, false).await),
        BTreeSet::from([b_plain])
    );
    assert_eq!(
        got(h.claim(&gw, gn, 100, false).await),
        BTreeSet::from([c_plain, b_gpu])
    );
    assert_eq!(
        h.state(a_tpu).await,
        TaskState::Pending,
        "no node has the label"
    );
    // A user may not register a node in someone else's name, nor a system node.
    assert!(matches!(
        h.hive
            .register_node(&bob(), NodeSpec::user("x", owner("acme", "alice"), 1))
            .await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.register_node(&bob(), NodeSpec::system("x", 1)).await,
        Err(Error::Forbidden { .. })
    ));
}

/// Claims never exceed free capacity; a draining node gets nothing; a claim
/// filtered by agents only gets those agents.
pub async fn claims_respect_capacity_drain_and_agents(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(3).await;
    for i in 0..10 {
        h.hive
            .submit(&alice(), spec(if i < 5 { "a" } else { "b" }))
            .await
            .unwrap();
    }
    let first = h.claim(&w, node, 100, true).await;
    assert_eq!(first.len(), 3, "capacity 3");
    assert!(h.claim(&w, node, 100, true).await.is_empty(), "full");
    h.hive
        .report_success(&w, first[0].token, json!(null))
        .await
        .unwrap();
    assert_eq!(
        h.claim(&w, node, 100, true).await.len(),
        1,
        "one slot freed"
    );
    let (n2, w2) = h.system_node(100).await;
    let only_b = ClaimOptions {
        max: 100,
        agents: vec!["b".into()],
        start: true,
    };
    let got = h.hive.claim(&w2, n2, &only_b).await.unwrap().tasks;
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|c| c.spec.agent.as_str() == "b"));
    h.hive.submit(&alice(), spec("a")).await.unwrap();
    let drained = h.hive.drain_node(&h.system, n2).await.unwrap();
    assert_eq!(drained.status, NodeStatus::Draining);
    assert!(
        h.claim(&w2, n2, 100, true).await.is_empty(),
        "a draining node claims nothing"
    );
}

/// Higher priority first, then submission order.
pub async fn priority_orders_claims_within_a_tenant(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(100).await;
    let low = h
        .hive
        .submit(&alice(), spec("echo").priority(0))
        .await
        .unwrap()
        .id;
    let high = h
        .hive
        .submit(&alice(), spec("echo").priority(10))
        .await
        .unwrap()
        .id;
    let mid1 = h
        .hive
        .submit(&alice(), spec("other").priority(5))
        .await
        .unwrap()
        .id;
    let mid2 = h
        .hive
        .submit(&bob(), spec("echo").priority(5))
        .await
        .unwrap()
        .id;
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(h.claim(&w, node, 1, false).await.remove(0).token.task);
    }
    assert_eq!(order, vec![high, mid1, mid2, low]);
}

/// A burst from one tenant does not starve another: claims alternate tenants.
pub async fn one_tenants_burst_does_not_starve_another(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(1000).await;
    let burst: Vec<TaskSpec> = (0..500).map(|_| spec("echo")).collect();
    h.hive.submit_batch(&alice(), burst).await.unwrap();
    let quiet: Vec<TaskSpec> = (0..10).map(|_| spec("echo")).collect();
    h.hive.submit_batch(&carol(), quiet).await.unwrap();
    let got = h.claim(&w, node, 20, false).await;
    let carol_share = got
        .iter()
        .filter(|c| c.owner.tenant.as_str() == "globex")
        .count();
    assert_eq!(
        carol_share, 10,
        "the quiet tenant gets half of the first claim"
    );
}

/// Issue 11, item 13: with many ready queues in one tenant (40 principals,
/// random priorities, submissions interleaved), claims of a few at a time
/// still hand out the tenant's tasks by priority, then submission order —
/// however the store picks among its queues.
pub async fn claims_across_many_queues_keep_priority_then_age(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(1_000).await;
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut expected: Vec<(i32, usize, TaskId)> = Vec::new();
    for k in 0..200 {
        let principal = Principal::user("acme", format!("user{}", next(40)));
        let priority = [0, 1, 2, 5][next(4) as usize];
        let id = h
            .hive
            .submit(&principal, spec("echo").priority(priority))
            .await
            .unwrap()
            .id;
        expected.push((-priority, k, id));
    }
    expected.sort();
    let mut order = Vec::new();
    while order.len() < expected.len() {
        let batch = h.claim(&w, node, 1 + next(9) as u32, false).await;
        assert!(
            !batch.is_empty(),
            "claimed {} of {}",
            order.len(),
            expected.len()
        );
        order.extend(batch.iter().map(|c| c.token.task));
    }
    let want: Vec<TaskId> = expected.iter().map(|e| e.2).collect();
    assert_eq!(order, want);
}

/// Issue 11, item 13: with many tenants waiting, a claim of `max` takes one
/// task from each of `max` tenants (the round-robin's first round), and the
/// next claims go on round-robin until every task ran once.
pub async fn claims_over_many_tenants_take_a_round_robin_share(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(1_000).await;
    let tenants = 20;
    for t in 0..tenants {
        let p = Principal::user(format!("tenant{t:02}"), "owner");
        let specs: Vec<TaskSpec> = (0..5).map(|_| spec("echo")).collect();
        h.hive.submit_batch(&p, specs).await.unwrap();
    }
    let first = h.claim(&w, node, 10, false).await;
    assert_eq!(first.len(), 10);
    let distinct: BTreeSet<String> = first.iter().map(|c| c.owner.tenant.to_string()).collect();
    assert_eq!(
        distinct.len(),
        10,
        "one task from each of 10 tenants: {distinct:?}"
    );
    let mut seen = first.len();
    while seen < tenants * 5 {
        let batch = h.claim(&w, node, 10, false).await;
        assert!(!batch.is_empty(), "claimed {seen} of {}", tenants * 5);
        seen += batch.len();
    }
    assert!(h.claim(&w, node, 10, false).await.is_empty());
}
