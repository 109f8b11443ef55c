//! What a new host writes first, through `hive::prelude` alone: open, run a
//! worker, submit, wait, read the events, then read and verify the audit trail
//! from the engine itself — no store handle cast by hand.

use std::time::Duration;

use hive::prelude::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_needs_only_the_prelude() {
    let dir = tempfile::tempdir().unwrap();
    let hive = hive::open(&format!(
        "sqlite://{}",
        dir.path().join("hive.db").display()
    ))
    .await
    .unwrap();
    let alice = Principal::user("acme", "alice");

    // A user node from the principal who registers it.
    let spec = NodeSpec::user("laptop", &alice, 2);
    assert_eq!(spec.owner, NodeOwner::user_of(&alice));
    assert_eq!(
        Owner::from(&alice),
        Owner {
            tenant: "acme".into(),
            principal: "alice".into()
        }
    );

    let options = WorkerOptions::new("laptop")
        .idle_poll(Duration::from_millis(50))
        .shutdown_grace(Duration::from_secs(2))
        .handler(
            "echo",
            handler_fn(|ctx| async move { Ok(ctx.input().clone()) }),
        );
    assert_eq!(options.idle_poll, Duration::from_millis(50));
    assert_eq!(options.shutdown_grace, Duration::from_secs(2));
    assert_eq!(
        WorkerOptions::new("x").idle_poll(Duration::ZERO).idle_poll,
        Duration::from_millis(1),
        "the idle poll has a floor"
    );
    let worker = hive.start_worker(&alice, options).await.unwrap();

    let id = hive
        .submit(&alice, TaskSpec::new("echo", json!({"hi": 1})))
        .await
        .unwrap()
        .id;
    let task: Task = hive
        .wait_timeout(&alice, id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(task.state, TaskState::Succeeded);
    assert_eq!(task.output, Some(json!({"hi": 1})));
    let events: Vec<TaskEvent> = hive.read_events(&alice, id, 0, 100).await.unwrap();
    assert_eq!(events.first().unwrap().kind, EventKind::Queued);
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::Succeeded { .. }
    ));
    let page = hive
        .list_tasks(
            &alice,
            &TaskQuery {
                states: vec![TaskState::Succeeded],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);

    // The audit trail, from the engine: the submit and the node registration
    // are there, allowed, and the chain verifies.
    let olga = Principal::operator("acme", "olga");
    let trail = hive.audit_trail();
    let audited = trail
        .list(&hive, &olga, &AuditQuery::default())
        .await
        .unwrap();
    assert!(
        audited
            .events
            .iter()
            .any(|e| e.action == "task.submit" && e.outcome == AuditOutcome::Allowed),
        "{:?}",
        audited.events
    );
    let report = trail.verify(&hive, &olga, &"acme".into()).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked as usize, audited.events.len());
    worker.shutdown().await;
    hive.shutdown();
}
