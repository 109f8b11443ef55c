//! Task subscriptions, the tenant feed and terminal-event consumers.

use super::*;

// ----- subscriptions --------------------------------------------------------

/// A subscription replays stored events, follows live ones, and ends right
/// after the terminal event.
pub async fn subscribe_replays_then_follows_and_ends_after_terminal(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    let sub = h.hive.subscribe(&alice(), s.id, 0).await.unwrap();
    let reader = tokio::spawn(sub.collect());
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.hive.log(&w, c.token, "stdout", "working").await.unwrap();
    h.hive
        .report_success(&w, c.token, json!("done"))
        .await
        .unwrap();
    let events = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the subscription ends after the terminal event")
        .unwrap()
        .unwrap();
    assert_event_contract(&events);
    assert_eq!(
        events.iter().map(|e| e.kind.name()).collect::<Vec<_>>(),
        vec!["queued", "scheduled", "started", "log", "succeeded"]
    );
    // Subscribing to an ended task replays and ends; after its end, nothing.
    let all = h
        .hive
        .subscribe(&alice(), s.id, 2)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(all.first().map(|e| e.seq), Some(3));
    // In batches: at most `max` each, in order, ending with the terminal event.
    let mut batched = h.hive.subscribe(&alice(), s.id, 0).await.unwrap();
    let mut seqs = Vec::new();
    while let Some(batch) = batched.next_batch(2).await {
        let batch = batch.unwrap();
        assert!(!batch.is_empty() && batch.len() <= 2, "{batch:?}");
        seqs.extend(batch.iter().map(|e| e.seq));
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(batched.position(), 5);
    let after_end = h.hive.subscribe(&alice(), s.id, 5).await.unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(5), after_end.collect())
        .await
        .expect("a subscription after the terminal event ends at once")
        .unwrap();
    assert!(rest.is_empty());
}

/// Reading a task and subscribing after its `last_seq` misses no event.
pub async fn snapshot_then_subscribe_misses_nothing(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    let snap = h.hive.get_task(&alice(), s.id).await.unwrap();
    assert_eq!(snap.last_seq, 3);
    h.hive.log(&w, c.token, "stdout", "a").await.unwrap();
    let sub = h
        .hive
        .subscribe(&alice(), s.id, snap.last_seq)
        .await
        .unwrap();
    h.hive
        .report_success(&w, c.token, json!(null))
        .await
        .unwrap();
    let events = sub.collect().await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
}

/// The tenant feed carries every event of the tenant in order and resumes from
/// a cursor.
pub async fn feed_resumes_from_a_cursor(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let a = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let _other = h.hive.submit(&carol(), spec("echo")).await.unwrap();
    let b = h.hive.submit(&bob(), spec("echo")).await.unwrap();
    let page = h.hive.read_feed(&alice(), 0, 100).await.unwrap();
    assert_eq!(page.len(), 2, "only acme's events");
    assert_eq!(page[0].cursor, 1);
    assert_eq!(page[1].cursor, 2);
    assert_eq!((page[0].event.task, page[1].event.task), (a.id, b.id));
    // A cursor far past the head (a client's bad input) reads nothing, and
    // the task's events after a seq it never reached are none: no overflow,
    // no wrap-around to the start.
    for far in [u64::MAX, u64::MAX - 1, i64::MAX as u64, 1 << 40] {
        let none = h.hive.read_feed(&alice(), far, 100).await.unwrap();
        assert!(none.is_empty(), "feed after {far}: {none:?}");
        let none = h.hive.read_events(&alice(), a.id, far, 100).await.unwrap();
        assert!(none.is_empty(), "events after {far}: {none:?}");
    }
    let mut feed = h.hive.feed(&alice(), 2).await.unwrap();
    let claimed = h.claim(&w, node, 3, true).await;
    assert_eq!(claimed.len(), 3);
    let mut got = Vec::new();
    for _ in 0..4 {
        let ev = tokio::time::timeout(Duration::from_secs(5), feed.next())
            .await
            .unwrap()
            .unwrap();
        got.push(ev);
    }
    let cursors: Vec<u64> = got.iter().map(|e| e.cursor).collect();
    assert_eq!(cursors, vec![3, 4, 5, 6]);
    assert!(got.iter().all(|e| e.event.tenant.as_str() == "acme"));
    assert_eq!(feed.cursor(), 6);
    let per_task: BTreeSet<(TaskId, u64)> =
        got.iter().map(|e| (e.event.task, e.event.seq)).collect();
    assert_eq!(per_task.len(), 4);
}

/// A named consumer lists terminal events it has not acknowledged, and stops
/// listing them once acknowledged.
pub async fn consumers_list_unacked_terminal_events(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(8).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(h.hive.submit(&alice(), spec("echo")).await.unwrap().id);
    }
    assert!(
        h.hive
            .unacked_terminal(&alice(), "mailer", 100)
            .await
            .unwrap()
            .is_empty()
    );
    for c in h.claim(&w, node, 4, true).await {
        h.hive
            .report_success(&w, c.token, json!(null))
            .await
            .unwrap();
    }
    let pending = ids
        .iter()
        .copied()
        .find(|id| !ids[..4].contains(id))
        .unwrap();
    h.hive
        .ack_terminal(&alice(), "mailer", &[pending])
        .await
        .unwrap();
    let unacked = h
        .hive
        .unacked_terminal(&alice(), "mailer", 100)
        .await
        .unwrap();
    assert_eq!(unacked.len(), 4);
    assert!(unacked.iter().all(|e| e.event.kind.is_terminal()));
    h.hive
        .ack_terminal(&alice(), "mailer", &[ids[1], ids[2]])
        .await
        .unwrap();
    let left: Vec<TaskId> = h
        .hive
        .unacked_terminal(&alice(), "mailer", 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.task)
        .collect();
    assert_eq!(left, vec![ids[0], ids[3]]);
    assert_eq!(
        h.hive
            .unacked_terminal(&alice(), "audit", 100)
            .await
            .unwrap()
            .len(),
        4,
        "consumers are independent"
    );
    h.hive.cancel(&alice(), ids[4], "x").await.unwrap();
    h.hive
        .ack_terminal(&alice(), "mailer", &[ids[0], ids[3]])
        .await
        .unwrap();
    let last = h
        .hive
        .unacked_terminal(&alice(), "mailer", 100)
        .await
        .unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].event.task, ids[4]);
    assert!(
        h.hive
            .unacked_terminal(&carol(), "mailer", 100)
            .await
            .unwrap()
            .is_empty()
    );
}
