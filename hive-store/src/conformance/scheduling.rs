//! User-scoped scheduling end to end, across mixed node ownership: thousands of
//! tasks from two users of one tenant (and a burst from another tenant) are
//! worked by nodes owned by user A, user B, the system, and a node A shares with
//! B. Afterwards every task ran on an eligible node, A's private node never ran
//! B's work, tasks with no eligible node stayed pending until their deadline,
//! and a burst from one tenant did not starve the other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hive_core::engine::{Report, ReportOutcome};
use hive_core::node::{NodeSpec, ShareTarget, eligible};
use hive_core::store::Store;
use hive_core::task::{TaskQuery, TaskState, Timeouts};
use hive_core::{NodeId, Owner, Principal, TaskId, TaskSpec};
use serde_json::json;

use super::{Harness, alice, bob, carol};

fn owner(t: &str, p: &str) -> Owner {
    Owner {
        tenant: t.into(),
        principal: p.into(),
    }
}

/// Mixed ownership, labels, shares, a tenant burst: see the module docs.
pub async fn user_scoped_scheduling_across_mixed_node_ownership(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let mut nodes: Vec<(NodeId, Principal, NodeSpec)> = Vec::new();
    for (by, spec) in [
        (
            alice(),
            NodeSpec::user("a-private", owner("acme", "alice"), 16).label("gpu", "a100"),
        ),
        (bob(), NodeSpec::user("b-private", owner("acme", "bob"), 16)),
        (
            h.system.clone(),
            NodeSpec::system("system", 16).label("zone", "eu"),
        ),
        (
            alice(),
            NodeSpec::user("a-shared", owner("acme", "alice"), 16).share(ShareTarget::User {
                tenant: "acme".into(),
                principal: "bob".into(),
            }),
        ),
    ] {
        let (id, worker) = h.node(&by, spec.clone()).await;
        nodes.push((id, worker, spec));
    }
    let deadline = Timeouts {
        deadline: Some(Duration::from_secs(600)),
        ..Timeouts::default()
    };
    // Alice: plain and gpu tasks. Bob: plain, zone=eu, and gpu tasks — no node
    // Bob may use has a gpu, so those must wait and time out.
    let mut submitted: BTreeMap<TaskId, (Owner, TaskSpec)> = BTreeMap::new();
    for (who, p, labels, n) in [
        ("alice", alice(), vec![], 1200),
        ("alice", alice(), vec![("gpu", "a100")], 600),
        ("bob", bob(), vec![], 1200),
        ("bob", bob(), vec![("zone", "eu")], 400),
        ("bob", bob(), vec![("gpu", "a100")], 100),
    ] {
        let mut spec = TaskSpec::new("echo", json!({"by": who})).timeouts(deadline.clone());
        for (k, v) in &labels {
            spec = spec.label(*k, *v);
        }
        let specs = vec![spec.clone(); n];
        for s in h.hive.submit_batch(&p, specs).await.unwrap() {
            submitted.insert(s.id, (owner("acme", who), spec.clone()));
        }
    }
    // Work until no node can claim anything more.
    let mut ran_on: BTreeMap<TaskId, NodeId> = BTreeMap::new();
    loop {
        let mut progressed = false;
        for (id, worker, _) in &nodes {
            let claimed = h.claim(worker, *id, 16, true).await;
            if claimed.is_empty() {
                continue;
            }
            progressed = true;
            let reports = claimed
                .iter()
                .map(|c| {
                    assert!(
                        ran_on.insert(c.token.task, *id).is_none(),
                        "task {} claimed twice",
                        c.token.task
                    );
                    Report {
                        token: c.token,
                        outcome: ReportOutcome::Success {
                            output: json!(null),
                        },
                    }
                })
                .collect();
            for r in h.hive.report(worker, reports).await.unwrap() {
                r.unwrap();
            }
        }
        if !progressed {
            break;
        }
    }
    let spec_of = |n: NodeId| &nodes.iter().find(|(id, _, _)| *id == n).unwrap().2;
    let a_private = nodes[0].0;
    for (task, node) in &ran_on {
        let (owner, spec) = &submitted[task];
        assert!(
            eligible(spec_of(*node), owner, &spec.labels),
            "task {task} of {owner:?} with labels {:?} ran on ineligible node {}",
            spec.labels,
            spec_of(*node).name
        );
        if *node == a_private {
            assert_eq!(
                owner.principal.as_str(),
                "alice",
                "A's private node ran B's work"
            );
        }
    }
    // Everything with an eligible node ran; Bob's gpu tasks are still pending.
    let mut stuck = 0;
    for (task, (owner, spec)) in &submitted {
        let bob_gpu = owner.principal.as_str() == "bob" && spec.labels.contains_key("gpu");
        if bob_gpu {
            assert!(!ran_on.contains_key(task));
            assert_eq!(h.state(*task).await, TaskState::Pending);
            stuck += 1;
        } else {
            assert!(ran_on.contains_key(task), "task {task} never ran");
        }
    }
    assert_eq!(stuck, 100);
    // Every node with eligible work did some.
    for (id, _, spec) in &nodes {
        assert!(
            ran_on.values().any(|n| n == id),
            "node {} ran nothing",
            spec.name
        );
    }
    // ... and at their deadline they end TimedOut instead of landing anywhere.
    h.advance_and_sweep(Duration::from_secs(601)).await;
    let timed_out = h
        .hive
        .list_tasks(
            &bob(),
            &TaskQuery {
                states: vec![TaskState::TimedOut],
                limit: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(timed_out.items.len(), 100);
    assert!(
        timed_out
            .items
            .iter()
            .all(|t| t.spec.labels.contains_key("gpu"))
    );

    // Fairness: a burst of 1,000 from acme, then 100 from globex, on one system
    // node that claims 10 at a time. globex must not wait behind the burst.
    let (sys, sw) = h.system_node(10).await;
    let burst = vec![TaskSpec::new("fair", json!(null)); 1000];
    h.hive.submit_batch(&alice(), burst).await.unwrap();
    let quiet = vec![TaskSpec::new("fair", json!(null)); 100];
    h.hive.submit_batch(&carol(), quiet).await.unwrap();
    let mut order = Vec::new();
    while order.len() < 1100 {
        let claimed = h.claim(&sw, sys, 10, true).await;
        assert!(!claimed.is_empty(), "work remains");
        let reports = claimed
            .iter()
            .map(|c| {
                order.push(c.owner.tenant.as_str() == "globex");
                Report {
                    token: c.token,
                    outcome: ReportOutcome::Success {
                        output: json!(null),
                    },
                }
            })
            .collect();
        h.hive.report(&sw, reports).await.unwrap();
    }
    let first_200 = order[..200].iter().filter(|g| **g).count();
    let last_globex = order.iter().rposition(|g| *g).unwrap();
    eprintln!(
        "fairness: globex got {first_200} of the first 200 claims; its last task ran at claim #{}",
        last_globex + 1
    );
    assert!(
        first_200 >= 80,
        "globex got only {first_200} of the first 200 claims while acme had a burst"
    );
    assert!(
        last_globex < 250,
        "globex's last task waited until claim #{}",
        last_globex + 1
    );
}
