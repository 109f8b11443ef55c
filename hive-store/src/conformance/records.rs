//! Records: compare-and-set writes with their events, listing, waiters.

use super::*;

// ----- records ------------------------------------------------------------------

fn record_write(id: &str, expected_version: u64, status: &str, n: i64) -> RecordWrite {
    RecordWrite {
        kind: "widget".into(),
        id: id.into(),
        tenant: "acme".into(),
        expected_version,
        status: status.into(),
        body: json!({"n": n}),
        events: vec![json!({"set": n})],
        now: hive_core::Timestamp::from_millis(1_000 + n),
    }
}

/// Records are created once, then replaced only by a writer holding the current
/// version; the body and the events change together or not at all.
pub async fn records_compare_and_set_with_their_events(store: Arc<dyn Store>) {
    let w = store
        .write_record(record_write("r1", 0, "new", 1))
        .await
        .unwrap();
    assert_eq!(
        w,
        RecordWritten {
            version: 1,
            last_seq: 1
        }
    );
    // Creating again is a conflict and changes nothing.
    let again = store.write_record(record_write("r1", 0, "new", 9)).await;
    assert!(matches!(again, Err(Error::Conflict { .. })), "{again:?}");
    // A stale version is a conflict and appends nothing.
    let w2 = store
        .write_record(record_write("r1", 1, "running", 2))
        .await
        .unwrap();
    assert_eq!(
        w2,
        RecordWritten {
            version: 2,
            last_seq: 2
        }
    );
    let stale = store
        .write_record(record_write("r1", 1, "running", 3))
        .await;
    assert!(matches!(stale, Err(Error::Conflict { .. })), "{stale:?}");
    // Updating a record that does not exist is NotFound.
    let missing = store.write_record(record_write("nope", 4, "x", 4)).await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
    // Another tenant cannot take a record over.
    let mut other = record_write("r1", 2, "running", 5);
    other.tenant = "globex".into();
    assert!(store.write_record(other).await.is_err());
    // A write without events keeps last_seq; several events get consecutive seqs.
    let mut quiet = record_write("r1", 2, "running", 6);
    quiet.events.clear();
    assert_eq!(
        store.write_record(quiet).await.unwrap(),
        RecordWritten {
            version: 3,
            last_seq: 2
        }
    );
    let mut many = record_write("r1", 3, "done", 7);
    many.events = vec![json!("a"), json!("b"), json!("c")];
    assert_eq!(
        store.write_record(many).await.unwrap(),
        RecordWritten {
            version: 4,
            last_seq: 5
        }
    );

    let r = store.get_record("widget", "r1").await.unwrap().unwrap();
    assert_eq!(r.version, 4);
    assert_eq!(r.status, "done");
    assert_eq!(r.body, json!({"n": 7}));
    assert_eq!(r.tenant.as_str(), "acme");
    assert_eq!(r.last_seq, 5);
    assert_eq!(r.created_at, hive_core::Timestamp::from_millis(1_001));
    assert_eq!(r.updated_at, hive_core::Timestamp::from_millis(1_007));
    let events = store
        .read_record_events("widget", "r1", 0, 100)
        .await
        .unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let bodies: Vec<serde_json::Value> = events.iter().map(|e| e.body.clone()).collect();
    assert_eq!(
        bodies,
        vec![
            json!({"set": 1}),
            json!({"set": 2}),
            json!("a"),
            json!("b"),
            json!("c")
        ]
    );
    let tail = store
        .read_record_events("widget", "r1", 3, 1)
        .await
        .unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].seq, 4);
    // Kinds do not share ids.
    assert!(store.get_record("gadget", "r1").await.unwrap().is_none());
    assert!(matches!(
        store.read_record_events("gadget", "r1", 0, 10).await,
        Err(Error::NotFound { .. })
    ));
    // Bad keys are refused.
    let bad = store.write_record(record_write("", 0, "new", 1)).await;
    assert!(matches!(bad, Err(Error::InvalidArgument { .. })), "{bad:?}");
}

/// Listings filter by tenant and status and page by id.
pub async fn records_list_filters_and_paginates(store: Arc<dyn Store>) {
    for i in 0..7 {
        let mut w = record_write(
            &format!("id-{i}"),
            0,
            if i % 2 == 0 { "even" } else { "odd" },
            i,
        );
        if i == 6 {
            w.tenant = "globex".into();
        }
        store.write_record(w).await.unwrap();
    }
    let mut other_kind = record_write("id-0", 0, "even", 0);
    other_kind.kind = "gadget".into();
    store.write_record(other_kind).await.unwrap();

    let acme = |statuses: Vec<&str>, after: Option<&str>, limit| RecordQuery {
        tenant: Some("acme".into()),
        statuses: statuses.into_iter().map(String::from).collect(),
        after: after.map(String::from),
        limit: Some(limit),
    };
    let ids = |rs: Vec<hive_core::store::Record>| rs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all = store
        .list_records("widget", &acme(vec![], None, 100))
        .await
        .unwrap();
    assert_eq!(
        ids(all),
        vec!["id-0", "id-1", "id-2", "id-3", "id-4", "id-5"]
    );
    let even = store
        .list_records("widget", &acme(vec!["even"], None, 100))
        .await
        .unwrap();
    assert_eq!(ids(even), vec!["id-0", "id-2", "id-4"]);
    let page1 = store
        .list_records("widget", &acme(vec![], None, 4))
        .await
        .unwrap();
    assert_eq!(ids(page1), vec!["id-0", "id-1", "id-2", "id-3"]);
    let page2 = store
        .list_records("widget", &acme(vec![], Some("id-3"), 4))
        .await
        .unwrap();
    assert_eq!(ids(page2), vec!["id-4", "id-5"]);
    let everyone = store
        .list_records("widget", &RecordQuery::default())
        .await
        .unwrap();
    assert_eq!(everyone.len(), 7);
    assert!(
        store
            .list_records("nothing", &RecordQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Many writers race on one version: exactly one wins each round, and the stream
/// holds exactly the winners' events.
pub async fn concurrent_record_writers_have_one_winner_per_version(store: Arc<dyn Store>) {
    store
        .write_record(record_write("race", 0, "v", 0))
        .await
        .unwrap();
    let mut wins = 0u64;
    for round in 1..=5u64 {
        let mut joins = Vec::new();
        for k in 0..8i64 {
            let store = store.clone();
            joins.push(tokio::spawn(async move {
                store
                    .write_record(record_write("race", round, "v", k))
                    .await
            }));
        }
        let mut round_wins = 0;
        for j in joins {
            match j.await.unwrap() {
                Ok(w) => {
                    assert_eq!(w.version, round + 1);
                    round_wins += 1;
                }
                Err(Error::Conflict { .. }) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        assert_eq!(round_wins, 1, "round {round}");
        wins += 1;
    }
    let events = store.read_record_events("race", "race", 0, 100).await;
    assert!(matches!(events, Err(Error::NotFound { .. })));
    let events = store
        .read_record_events("widget", "race", 0, 100)
        .await
        .unwrap();
    assert_eq!(events.len() as u64, wins + 1);
}

/// A waiter on a record's stream wakes when an event is appended.
pub async fn record_event_waiters_wake_on_append(store: Arc<dyn Store>) {
    store
        .write_record(record_write("w", 0, "v", 0))
        .await
        .unwrap();
    // Already past: returns at once.
    tokio::time::timeout(
        Duration::from_secs(2),
        store.wait_for_record_events("widget", "w", 0, Duration::from_secs(30)),
    )
    .await
    .expect("an existing event returns at once")
    .unwrap();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            store
                .wait_for_record_events("widget", "w", 1, Duration::from_secs(30))
                .await
                .unwrap();
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    store
        .write_record(record_write("w", 1, "v", 1))
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter wakes well before its timeout")
        .unwrap();
    assert!(waited < Duration::from_secs(10));
    let events = store
        .read_record_events("widget", "w", 1, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
}
