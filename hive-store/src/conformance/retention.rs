//! Retention: compaction of ended tasks' events and the feed's floor.

use hive_core::clock::Timestamp;
use hive_core::store::CompactReport;

use super::*;

/// Runs `n` tasks of `agent` to success on `node` and returns their ids.
async fn run_tasks(h: &Harness, w: &Principal, node: NodeId, agent: &str, n: usize) -> Vec<TaskId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let s = h
            .hive
            .submit(&alice(), TaskSpec::new(agent, json!({"i": i})))
            .await
            .unwrap();
        ids.push(s.id);
    }
    for c in h.claim(w, node, n as u32, true).await {
        h.hive.log(w, c.token, "stdout", "working").await.unwrap();
        h.hive
            .report_success(w, c.token, json!({"done": c.token.task.to_string()}))
            .await
            .unwrap();
    }
    ids
}

/// Tasks that ended before the cutoff keep their row and terminal event;
/// their other events are gone and reading before the terminal event is
/// `OffsetExpired`; the feed's floor moves past the last compacted terminal
/// event (older cursors are `OffsetExpired`, consumers no longer list what
/// is below it); running and recent tasks are untouched; work is bounded by
/// `limit`; live subscriptions keep going; compacting again does nothing.
pub async fn retention_compacts_ended_tasks_and_expires_old_cursors(store: Arc<dyn Store>) {
    let h = Harness::new(store.clone());
    let (node, w) = h.system_node(64).await;
    let tenant: hive_core::TenantId = alice().tenant.clone();
    // A consumer that exists before compaction, having acknowledged nothing.
    assert!(
        h.hive
            .unacked_terminal(&alice(), "auditor", 100)
            .await
            .unwrap()
            .is_empty()
    );
    let old = run_tasks(&h, &w, node, "old", 5).await;
    // One task that is still running when retention comes.
    let running = h.hive.submit(&alice(), spec("long")).await.unwrap().id;
    let lease = h.claim(&w, node, 1, true).await.remove(0);
    assert_eq!(lease.token.task, running);
    // A live feed subscription at the head, and a task subscription.
    let head = h
        .hive
        .read_feed(&alice(), 0, 10_000)
        .await
        .unwrap()
        .last()
        .unwrap()
        .cursor;
    let mut live = h.hive.feed(&alice(), head).await.unwrap();
    h.clock.advance(Duration::from_secs(2 * 3600));
    // Heartbeats keep the long task alive across the two hours.
    h.hive
        .heartbeat(&w, vec![(lease.token, None)])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    let recent = run_tasks(&h, &w, node, "recent", 3).await;
    let old_last = h
        .hive
        .store()
        .get_task(old[4])
        .await
        .unwrap()
        .unwrap()
        .last_seq;
    let cutoff = Timestamp::from_millis(h.clock.now().as_millis() - 3_600_000);

    let first = store.compact(&tenant, cutoff, 3).await.unwrap();
    assert_eq!(
        (first.tasks, first.more),
        (3, true),
        "bounded by limit: {first:?}"
    );
    assert!(
        first.events >= 3 * 4,
        "queued, scheduled, started, log per task: {first:?}"
    );
    let second = store.compact(&tenant, cutoff, 3).await.unwrap();
    assert_eq!(
        (second.tasks, second.more),
        (2, false),
        "the running task and the recent ones stop it: {second:?}"
    );
    assert!(second.feed_floor > first.feed_floor);
    let again = store.compact(&tenant, cutoff, 100).await.unwrap();
    assert_eq!(
        again,
        CompactReport {
            feed_floor: second.feed_floor,
            ..CompactReport::default()
        },
        "compacting again does nothing"
    );

    // A compacted task: row and terminal event kept.
    let t = h.hive.get_task(&alice(), old[0]).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded);
    assert_eq!(t.output, Some(json!({"done": old[0].to_string()})));
    assert_eq!(t.last_seq, 5);
    match h.hive.store().read_events(old[0], 0, 100).await {
        Err(Error::OffsetExpired { earliest, .. }) => assert_eq!(earliest, 5),
        other => panic!("expected OffsetExpired, got {other:?}"),
    }
    let tail = h.hive.store().read_events(old[0], 4, 100).await.unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].seq, 5);
    assert!(tail[0].kind.is_terminal());
    assert_eq!(
        h.hive
            .store()
            .get_task(old[4])
            .await
            .unwrap()
            .unwrap()
            .last_seq,
        old_last
    );
    // Running and recent tasks keep every event.
    assert_event_contract(&h.events(running).await);
    for id in &recent {
        assert_event_contract(&h.events(*id).await);
    }

    // The feed: the floor is past the last compacted terminal event.
    let floor = second.feed_floor;
    match h.hive.read_feed(&alice(), 0, 100).await {
        Err(Error::OffsetExpired { earliest, .. }) => assert_eq!(earliest, floor),
        other => panic!("expected OffsetExpired from cursor 0, got {other:?}"),
    }
    let kept = h.hive.read_feed(&alice(), floor - 1, 10_000).await.unwrap();
    assert_eq!(kept.first().unwrap().cursor, floor);
    for (k, e) in kept.iter().enumerate() {
        assert_eq!(e.cursor, floor + k as u64, "gapless above the floor");
    }
    for id in &recent {
        assert!(
            kept.iter()
                .any(|e| e.event.task == *id && e.event.kind.is_terminal()),
            "recent terminal events stay in the feed"
        );
    }
    // Consumers list only terminal events above the floor.
    let unacked: Vec<TaskId> = h
        .hive
        .unacked_terminal(&alice(), "auditor", 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.task)
        .collect();
    assert_eq!(unacked, recent);
    // The live subscription saw everything after its cursor and goes on.
    let more = h.hive.submit(&alice(), spec("after")).await.unwrap().id;
    let mut seen = Vec::new();
    while !seen.contains(&more) {
        let e = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("the live feed keeps delivering")
            .expect("no error for a live subscription");
        seen.push(e.event.task);
    }
    assert!(seen.contains(&recent[0]));
    // Another tenant is not touched.
    assert_eq!(
        store
            .compact(&carol().tenant, Timestamp::MAX, 100)
            .await
            .unwrap()
            .tasks,
        0
    );
    let tenants = store.tenants().await.unwrap();
    assert!(tenants.contains(&tenant), "{tenants:?}");
}

/// The engine's retention pass: per-tenant ages over a default, bounded
/// batches, and what a subscriber from the start of a compacted task gets.
pub async fn retention_pass_applies_each_tenants_age(store: Arc<dyn Store>) {
    let h = Harness::with_config(store.clone(), |c| {
        c.retention = hive_core::RetentionConfig {
            keep_ended: Some(Duration::from_secs(3600)),
            tenants: [(
                carol().tenant.clone(),
                hive_core::HumanDuration(Duration::from_secs(600)),
            )]
            .into_iter()
            .collect(),
            batch: 2,
            max_batches: 2,
            ..hive_core::RetentionConfig::default()
        };
    });
    let (node, w) = h.system_node(64).await;
    let mut acme = Vec::new();
    let mut globex = Vec::new();
    for i in 0..3 {
        acme.push(h.hive.submit(&alice(), spec("r")).await.unwrap().id);
        globex.push(
            h.hive
                .submit(&carol(), TaskSpec::new("r", json!({"i": i})))
                .await
                .unwrap()
                .id,
        );
    }
    for c in h.claim(&w, node, 6, true).await {
        h.hive.report_success(&w, c.token, json!(1)).await.unwrap();
    }
    h.clock.advance(Duration::from_secs(1800));
    let r = h.hive.run_retention(&h.system).await.unwrap();
    assert_eq!(
        r.tasks, 3,
        "globex's 10 minutes passed, acme's hour did not: {r:?}"
    );
    assert!(r.tenants >= 2);
    for id in &globex {
        assert!(matches!(
            h.hive.store().read_events(*id, 0, 10).await,
            Err(Error::OffsetExpired { .. })
        ));
    }
    assert_event_contract(&h.events(acme[0]).await);
    // A subscription from the start of a compacted task says what is gone.
    let mut sub = h.hive.subscribe(&carol(), globex[0], 0).await.unwrap();
    match sub.next().await {
        Some(Err(Error::OffsetExpired { earliest, .. })) => assert_eq!(earliest, 4),
        other => panic!("expected OffsetExpired, got {other:?}"),
    }
    // From the terminal event on, it replays that and ends.
    let tail = h
        .hive
        .subscribe(&carol(), globex[0], 3)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(tail.len(), 1);
    assert!(tail[0].kind.is_terminal());
    h.clock.advance(Duration::from_secs(3600));
    let r = h.hive.run_retention(&h.system).await.unwrap();
    assert_eq!(
        (r.tasks, r.more),
        (3, false),
        "two batches of two cover acme's three"
    );
    let r = h.hive.run_retention(&h.system).await.unwrap();
    assert_eq!(r.tasks, 0);
    // Without a supervisor principal it is refused.
    assert!(matches!(
        h.hive.run_retention(&alice()).await,
        Err(Error::Forbidden { .. })
    ));
}

/// The second stage: compacted tasks ended longer ago than `delete_ended`
/// are deleted whole (`NotFound` afterwards, their idempotency keys free
/// again, listings without them); compacted but younger ones stay; the feed
/// above the floor and running work are untouched.
pub async fn retention_deletes_compacted_tasks_after_the_second_age(store: Arc<dyn Store>) {
    let h = Harness::with_config(store.clone(), |c| {
        c.retention = hive_core::RetentionConfig {
            keep_ended: Some(Duration::from_secs(600)),
            delete_ended: Some(Duration::from_secs(3600)),
            batch: 2,
            ..hive_core::RetentionConfig::default()
        };
    });
    let (node, w) = h.system_node(64).await;
    let mut old = Vec::new();
    for i in 0..3 {
        let s = h
            .hive
            .submit(&alice(), spec("gone").idempotency_key(format!("k{i}")))
            .await
            .unwrap();
        old.push(s.id);
    }
    for c in h.claim(&w, node, 3, true).await {
        h.hive.report_success(&w, c.token, json!(1)).await.unwrap();
    }
    // An auditor acknowledges one of them before it goes.
    h.hive
        .ack_terminal(&alice(), "auditor", &[old[0]])
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(1800));
    let young = h.hive.submit(&alice(), spec("young")).await.unwrap().id;
    let c = h.claim(&w, node, 1, true).await.remove(0);
    h.hive.report_success(&w, c.token, json!(2)).await.unwrap();
    h.clock.advance(Duration::from_secs(1200));
    // 50 min after the old ones ended: compacted, not deleted.
    let r = h.hive.run_retention(&h.system).await.unwrap();
    assert_eq!((r.tasks, r.deleted), (4, 0), "{r:?}");
    h.clock.advance(Duration::from_secs(1200));
    // 70 min: the old ones go, the young one (40 min) stays.
    let r = h.hive.run_retention(&h.system).await.unwrap();
    assert_eq!((r.tasks, r.deleted), (0, 3), "{r:?}");
    for id in &old {
        assert!(matches!(
            h.hive.get_task(&alice(), *id).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            h.hive.store().read_events(*id, 0, 10).await,
            Err(Error::NotFound { .. })
        ));
    }
    assert_eq!(
        h.hive.get_task(&alice(), young).await.unwrap().state,
        TaskState::Succeeded
    );
    let listed: Vec<TaskId> = h
        .hive
        .list_tasks(&alice(), &TaskQuery::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, vec![young]);
    // A deleted task's key may be used again: a new task.
    let again = h
        .hive
        .submit(&alice(), spec("gone").idempotency_key("k1"))
        .await
        .unwrap();
    assert!(again.created);
    assert_ne!(again.id, old[1]);
    assert!(
        h.hive
            .unacked_terminal(&alice(), "auditor", 10)
            .await
            .unwrap()
            .is_empty()
    );
    let r = h.hive.run_retention(&h.system).await.unwrap();
    assert_eq!(r.deleted, 0, "nothing more is due");
}
