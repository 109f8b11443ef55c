//! Cancelling others' tasks needs an operator; another tenant's task does not
//! exist for the caller (`NotFound`, not `Forbidden`).

mod common;

use hive_core::audit::AuditOutcome;
use hive_core::task::TaskQuery;
use hive_core::{Principal, TaskSpec, TaskState};
use serde_json::json;

use common::{assert_denial, fixture, forbidden, not_found};

#[tokio::test]
async fn a_user_cannot_cancel_another_users_task_and_the_denial_is_audited() {
    let f = fixture();
    let alice = Principal::user("acme", "alice");
    let bob = Principal::user("acme", "bob");
    let task = f
        .hive
        .submit(&alice, TaskSpec::new("echo", json!(1)))
        .await
        .expect("submit")
        .id;
    let before = f.count("acme").await;
    let reason = forbidden(f.hive.cancel(&bob, task, "mine now").await);
    assert!(reason.contains("owner"), "{reason}");
    let new = f.events_since("acme", before).await;
    assert_eq!(new.len(), 1);
    assert_denial(&new[0], &bob, "task.cancel", &format!("task/{task}"));
    let state = f.hive.get_task(&alice, task).await.expect("get").state;
    assert_eq!(state, TaskState::Pending, "the task was not cancelled");
    // Its owner may.
    f.hive
        .cancel(&alice, task, "changed my mind")
        .await
        .expect("the owner cancels");
}

#[tokio::test]
async fn an_operator_can_cancel_another_users_task_and_it_is_audited() {
    let f = fixture();
    let alice = Principal::user("acme", "alice");
    let carol = Principal::operator("acme", "carol");
    let task = f
        .hive
        .submit(&alice, TaskSpec::new("echo", json!(1)))
        .await
        .expect("submit")
        .id;
    let before = f.count("acme").await;
    f.hive
        .cancel(&carol, task, "runaway")
        .await
        .expect("the operator cancels");
    let new = f.events_since("acme", before).await;
    assert_eq!(new.len(), 1, "{new:?}");
    let e = &new[0];
    assert_eq!(e.outcome, AuditOutcome::Allowed);
    assert_eq!(e.action, "task.cancel");
    assert_eq!(e.actor, carol.id);
    assert_eq!(e.actor_kind, "operator");
    assert_eq!(e.resource, format!("task/{task}"));
    let state = f.hive.get_task(&alice, task).await.expect("get").state;
    assert_eq!(state, TaskState::Cancelled);
}

#[tokio::test]
async fn another_tenants_task_is_not_found_not_forbidden() {
    let f = fixture();
    let alice = Principal::user("acme", "alice");
    let task = f
        .hive
        .submit(&alice, TaskSpec::new("echo", json!(1)))
        .await
        .expect("submit")
        .id;
    let acme_events = f.count("acme").await;
    for stranger in [
        Principal::user("globex", "mallory"),
        Principal::operator("globex", "oscar"),
        Principal::admin("globex", "root"),
    ] {
        not_found(f.hive.get_task(&stranger, task).await);
        not_found(f.hive.cancel(&stranger, task, "x").await);
        not_found(f.hive.subscribe(&stranger, task, 0).await.map(|_| ()));
        let listed = f
            .hive
            .list_tasks(&stranger, &TaskQuery::default())
            .await
            .expect("list own tenant");
        assert!(listed.items.is_empty(), "{listed:?}");
    }
    assert_eq!(
        f.count("acme").await,
        acme_events,
        "nothing about the attempts lands in acme's trail"
    );
    let state = f.hive.get_task(&alice, task).await.expect("get").state;
    assert_eq!(state, TaskState::Pending);
    // Hive's own principal sees every tenant.
    f.hive
        .get_task(&Principal::system(), task)
        .await
        .expect("system:admin sees every tenant");
}
