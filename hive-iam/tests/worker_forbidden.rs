//! A worker principal may only work its own node's tasks. Every other engine
//! operation is `Forbidden` for it, and every such refusal is in the trail.

mod common;

use hive_core::audit::AuditOutcome;
use hive_core::auth::{Action, Resource};
use hive_core::engine::ClaimOptions;
use hive_core::store::ClaimResult;
use hive_core::task::TaskQuery;
use hive_core::worker::handler_fn;
use hive_core::workflow::{StepSpec, WorkflowQuery, WorkflowSpec};
use hive_core::{LeaseToken, Node, NodeSpec, Owner, Principal, TaskId, TaskSpec, WorkerOptions};
use hive_iam::{AuditQuery, TokenKind, TokenRequest};
use serde_json::json;

use common::{Fixture, assert_denial, fixture, forbidden};

/// The worker's own node's engine, and what it may not touch.
struct World {
    f: Fixture,
    alice: Principal,
    node_a: Node,
    node_b: Node,
    /// The worker of alice's node: the principal under test.
    worker_a: Principal,
    worker_b: Principal,
    /// A task of alice's.
    alice_task: TaskId,
    /// Bob's task, leased to node B.
    leased_to_b: LeaseToken,
}

fn owner(p: &Principal) -> Owner {
    Owner {
        tenant: p.tenant.clone(),
        principal: p.id.clone(),
    }
}

async fn world() -> World {
    let f = fixture();
    let alice = Principal::user("acme", "alice");
    let bob = Principal::user("acme", "bob");
    let node_a = f
        .hive
        .register_node(&alice, NodeSpec::user("a", owner(&alice), 4))
        .await
        .expect("alice registers her node");
    let node_b = f
        .hive
        .register_node(&bob, NodeSpec::user("b", owner(&bob), 4))
        .await
        .expect("bob registers his node");
    let worker_a = Principal::worker(node_a.tenant(), node_a.id);
    let worker_b = Principal::worker(node_b.tenant(), node_b.id);
    let alice_task = f
        .hive
        .submit(&alice, TaskSpec::new("echo", json!(1)))
        .await
        .expect("alice submits")
        .id;
    f.hive
        .submit(&bob, TaskSpec::new("echo", json!(2)))
        .await
        .expect("bob submits");
    let claimed: ClaimResult = f
        .hive
        .claim(
            &worker_b,
            node_b.id,
            &ClaimOptions {
                max: 1,
                start: true,
                ..ClaimOptions::default()
            },
        )
        .await
        .expect("node B claims bob's task");
    let leased_to_b = claimed.tasks.first().expect("one lease").token;
    World {
        f,
        alice,
        node_a,
        node_b,
        worker_a,
        worker_b,
        alice_task,
        leased_to_b,
    }
}

/// Runs `$op`, asserts it is `Forbidden`, and that exactly one event was
/// appended to the worker's tenant's trail: its denied `$action` on `$resource`.
/// With `prefix:`, only the start of the resource is compared (for ids the
/// engine chooses).
macro_rules! denied {
    ($w:expr, $action:expr, prefix: $prefix:expr, $op:expr) => {{
        let before = $w.f.count("acme").await;
        let reason = forbidden($op.await);
        let new = $w.f.events_since("acme", before).await;
        assert_eq!(
            new.len(),
            1,
            "{}: one audit event per denial, got {new:?}",
            $action
        );
        assert!(new[0].resource.starts_with($prefix), "{new:?}");
        assert_denial(&new[0], &$w.worker_a, $action, &new[0].resource);
        assert_eq!(new[0].details["reason"], json!(reason));
    }};
    ($w:expr, $action:expr, $resource:expr, $op:expr) => {{
        let before = $w.f.count("acme").await;
        let reason = forbidden($op.await);
        let new = $w.f.events_since("acme", before).await;
        assert_eq!(
            new.len(),
            1,
            "{}: one audit event per denial, got {new:?}",
            $action
        );
        assert_denial(&new[0], &$w.worker_a, $action, &$resource);
        assert_eq!(new[0].details["reason"], json!(reason));
    }};
}

#[tokio::test]
async fn worker_cannot_submit_tasks() {
    let w = world().await;
    denied!(
        w,
        "task.submit",
        "tenant/acme",
        w.f.hive
            .submit(&w.worker_a, TaskSpec::new("echo", json!(null)))
    );
    denied!(
        w,
        "task.submit",
        "tenant/acme",
        w.f.hive.submit_batch(
            &w.worker_a,
            vec![
                TaskSpec::new("echo", json!(1)),
                TaskSpec::new("echo", json!(2))
            ]
        )
    );
}

#[tokio::test]
async fn worker_cannot_submit_cancel_or_read_workflows() {
    let w = world().await;
    let spec = || {
        WorkflowSpec::new(
            "wf",
            vec![
                StepSpec::new("a", "echo", json!(null)),
                StepSpec::new("b", "echo", json!(null)).after(["a"]),
            ],
        )
    };
    denied!(
        w,
        "workflow.submit",
        "tenant/acme",
        w.f.hive.submit_workflow(&w.worker_a, spec())
    );
    let wf =
        w.f.hive
            .submit_workflow(&w.alice, spec())
            .await
            .expect("alice submits a workflow")
            .id;
    let resource = format!("workflow/{wf}");
    denied!(
        w,
        "workflow.read",
        resource,
        w.f.hive.get_workflow(&w.worker_a, wf)
    );
    denied!(
        w,
        "workflow.read",
        "tenant/acme",
        w.f.hive
            .list_workflows(&w.worker_a, &WorkflowQuery::default())
    );
    denied!(
        w,
        "workflow.read",
        resource,
        w.f.hive.subscribe_workflow(&w.worker_a, wf, 0)
    );
    denied!(
        w,
        "workflow.cancel",
        resource,
        w.f.hive.cancel_workflow(&w.worker_a, wf, "worker says so")
    );
    // The workflow is untouched.
    let view = w.f.hive.get_workflow(&w.alice, wf).await.unwrap();
    assert_eq!(view.state, hive_core::workflow::WorkflowState::Running);
}

#[tokio::test]
async fn worker_cannot_cancel_another_principals_task() {
    let w = world().await;
    denied!(
        w,
        "task.cancel",
        format!("task/{}", w.alice_task),
        w.f.hive.cancel(&w.worker_a, w.alice_task, "no")
    );
}

#[tokio::test]
async fn worker_cannot_read_tasks() {
    let w = world().await;
    let task = format!("task/{}", w.alice_task);
    denied!(
        w,
        "task.read",
        task,
        w.f.hive.get_task(&w.worker_a, w.alice_task)
    );
    denied!(
        w,
        "task.read",
        "tenant/acme",
        w.f.hive.list_tasks(&w.worker_a, &TaskQuery::default())
    );
    denied!(
        w,
        "task.read",
        task,
        w.f.hive.subscribe(&w.worker_a, w.alice_task, 0)
    );
    denied!(w, "task.read", "tenant/acme", w.f.hive.feed(&w.worker_a, 0));
    denied!(
        w,
        "task.read",
        "tenant/acme",
        w.f.hive.read_feed(&w.worker_a, 0, 10)
    );
    denied!(
        w,
        "feed.consume",
        "tenant/acme",
        w.f.hive.ack_terminal(&w.worker_a, "c", &[w.alice_task])
    );
    denied!(
        w,
        "feed.consume",
        "tenant/acme",
        w.f.hive.unacked_terminal(&w.worker_a, "c", 10)
    );
}

#[tokio::test]
async fn worker_cannot_register_nodes() {
    let w = world().await;
    denied!(
        w,
        "node.register",
        prefix: "node/",
        w.f.hive.register_node(&w.worker_a, NodeSpec::system("sys", 1))
    );
    denied!(
        w,
        "node.register",
        prefix: "node/",
        w.f.hive
            .register_node(&w.worker_a, NodeSpec::user("n", owner(&w.alice), 1))
    );
    denied!(
        w,
        "node.register",
        prefix: "node/",
        w.f.hive
            .register_node(&w.worker_a, NodeSpec::user("n", owner(&w.worker_a), 1))
    );
    denied!(
        w,
        "node.register",
        prefix: "node/",
        w.f.hive.start_worker(
            &w.worker_a,
            WorkerOptions::new("w").handler("echo", handler_fn(|_| async { Ok(json!(null)) })),
        )
    );
}

#[tokio::test]
async fn worker_cannot_drain_or_remove_nodes() {
    let w = world().await;
    let node_a = format!("node/{}", w.node_a.id);
    let node_b = format!("node/{}", w.node_b.id);
    denied!(
        w,
        "node.drain",
        node_b,
        w.f.hive.drain_node(&w.worker_a, w.node_b.id)
    );
    denied!(
        w,
        "node.drain",
        node_a,
        w.f.hive.drain_node(&w.worker_a, w.node_a.id)
    );
    denied!(
        w,
        "node.remove",
        node_b,
        w.f.hive.remove_node(&w.worker_a, w.node_b.id)
    );
}

/// Issue 11, item 4: a worker removing its own node is its own action,
/// authorized by the policy and audited (`node.remove`, allowed, by the
/// worker); a user's removal is audited the same way, not as a drain.
#[tokio::test]
async fn removing_a_node_is_authorized_and_audited_as_node_remove() {
    let w = world().await;
    let before = w.f.count("acme").await;
    w.f.hive
        .remove_node(&w.worker_a, w.node_a.id)
        .await
        .expect("a worker removes its own node");
    let new = w.f.events_since("acme", before).await;
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0].action, "node.remove");
    assert_eq!(new[0].outcome, AuditOutcome::Allowed);
    assert_eq!(new[0].actor, w.worker_a.id);
    assert_eq!(new[0].resource, format!("node/{}", w.node_a.id));

    let bob = Principal::user("acme", "bob");
    let before = w.f.count("acme").await;
    w.f.hive
        .remove_node(&bob, w.node_b.id)
        .await
        .expect("bob removes his node");
    let new = w.f.events_since("acme", before).await;
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0].action, "node.remove");
    assert_eq!(new[0].outcome, AuditOutcome::Allowed);
    assert_eq!(new[0].actor, bob.id);
}

#[tokio::test]
async fn worker_cannot_read_nodes() {
    let w = world().await;
    denied!(
        w,
        "node.read",
        format!("node/{}", w.node_b.id),
        w.f.hive.get_node(&w.worker_a, w.node_b.id)
    );
    denied!(
        w,
        "node.read",
        "tenant/acme",
        w.f.hive.list_nodes(&w.worker_a)
    );
}

#[tokio::test]
async fn worker_cannot_read_or_verify_the_audit_trail() {
    let w = world().await;
    denied!(
        w,
        "audit.read",
        "audit/acme",
        w.f.trail
            .list(&w.f.hive, &w.worker_a, &AuditQuery::default())
    );
    denied!(
        w,
        "audit.read",
        "audit/acme",
        w.f.trail.verify(&w.f.hive, &w.worker_a, &"acme".into())
    );
}

#[tokio::test]
async fn worker_cannot_issue_list_or_revoke_tokens() {
    let w = world().await;
    let admin = Principal::admin("acme", "root");
    let issued =
        w.f.tokens
            .issue(&w.f.hive, &admin, TokenRequest::new("svc", TokenKind::User))
            .await
            .expect("the admin issues");
    let before = w.f.count("acme").await;
    let reason = forbidden(
        w.f.tokens
            .issue(
                &w.f.hive,
                &w.worker_a,
                TokenRequest::new("svc", TokenKind::User).scopes(Default::default()),
            )
            .await,
    );
    let new = w.f.events_since("acme", before).await;
    assert_eq!(new.len(), 1);
    assert!(new[0].resource.starts_with("token/"), "{new:?}");
    assert_denial(&new[0], &w.worker_a, "token.issue", &new[0].resource);
    assert_eq!(new[0].details["reason"], json!(reason));

    denied!(
        w,
        "token.revoke",
        format!("token/{}", issued.info.id),
        w.f.tokens.revoke(&w.f.hive, &w.worker_a, &issued.info.id)
    );
    denied!(
        w,
        "token.read",
        "token/*",
        w.f.tokens.list(&w.f.hive, &w.worker_a)
    );
    assert!(
        w.f.tokens.resolve(&issued.token).await.is_ok(),
        "the token is untouched"
    );
}

#[tokio::test]
async fn worker_cannot_sweep() {
    let w = world().await;
    denied!(w, "system.supervise", "system", w.f.hive.sweep(&w.worker_a));
}

#[tokio::test]
async fn worker_cannot_claim_or_heartbeat_for_another_node() {
    let w = world().await;
    let node_b = format!("node/{}", w.node_b.id);
    denied!(
        w,
        "node.work",
        node_b,
        w.f.hive
            .claim(&w.worker_a, w.node_b.id, &ClaimOptions::default())
    );
    denied!(
        w,
        "node.work",
        node_b,
        w.f.hive.node_heartbeat(&w.worker_a, w.node_b.id)
    );
}

#[tokio::test]
async fn worker_cannot_report_start_heartbeat_or_log_another_nodes_lease() {
    let w = world().await;
    let token = w.leased_to_b;
    forbidden(
        w.f.hive
            .report_success(&w.worker_a, token, json!("stolen"))
            .await,
    );
    forbidden(
        w.f.hive
            .report_failure(&w.worker_a, token, hive_core::TaskError::new("x", "y"))
            .await,
    );
    forbidden(w.f.hive.log(&w.worker_a, token, "stdout", "not mine").await);
    let beats =
        w.f.hive
            .heartbeat(&w.worker_a, vec![(token, None)])
            .await
            .expect("the batch is answered");
    forbidden(beats.into_iter().next().expect("one answer"));
    // The lease is still node B's: its worker reports normally.
    w.f.hive
        .report_success(&w.worker_b, token, json!("mine"))
        .await
        .expect("node B reports its own lease");
}

/// `Hive::{start, heartbeat, log, report}` audit the per-item `Forbidden`
/// answers (a lease held by another node).
#[tokio::test]
async fn worker_reporting_another_nodes_lease_is_audited() {
    let w = world().await;
    let before = w.f.count("acme").await;
    forbidden(
        w.f.hive
            .report_success(&w.worker_a, w.leased_to_b, json!("stolen"))
            .await,
    );
    let new = w.f.events_since("acme", before).await;
    assert_eq!(new.len(), 1, "{new:?}");
    assert_denial(
        &new[0],
        &w.worker_a,
        "node.work",
        &format!("task/{}", w.leased_to_b.task),
    );
}

#[tokio::test]
async fn worker_is_refused_every_action_but_work_by_the_policy() {
    let w = world().await;
    for action in Action::ALL {
        let before = w.f.count("acme").await;
        let result =
            w.f.hive
                .authorize(&w.worker_a, action, &Resource::System)
                .await;
        if action == Action::WorkNode {
            result.expect("a worker may work");
            assert_eq!(w.f.count("acme").await, before, "work is not privileged");
            continue;
        }
        forbidden(result);
        let new = w.f.events_since("acme", before).await;
        assert_eq!(new.len(), 1, "{action}");
        assert_denial(&new[0], &w.worker_a, action.as_str(), "system");
    }
}

#[tokio::test]
async fn worker_works_its_own_node() {
    let w = world().await;
    let claimed =
        w.f.hive
            .claim(
                &w.worker_a,
                w.node_a.id,
                &ClaimOptions {
                    max: 1,
                    start: true,
                    ..ClaimOptions::default()
                },
            )
            .await
            .expect("its own node");
    let lease = claimed.tasks.first().expect("alice's task").token;
    assert_eq!(lease.task, w.alice_task);
    w.f.hive
        .report_success(&w.worker_a, lease, json!("done"))
        .await
        .expect("reports its own lease");
    w.f.hive
        .node_heartbeat(&w.worker_a, w.node_a.id)
        .await
        .expect("heartbeats its own node");
    let denials =
        w.f.events("acme")
            .await
            .into_iter()
            .filter(|e| e.outcome == AuditOutcome::Denied)
            .count();
    assert_eq!(denials, 0, "nothing was refused");
}
