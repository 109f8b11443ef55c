//! The memory backend runs the conformance suite unchanged.

use std::sync::Arc;

use hive_store::MemoryStore;

hive_store::conformance_tests!(|| async {
    Some(Arc::new(MemoryStore::default()) as Arc<dyn hive_core::store::Store>)
});

/// Issue 11, item 10: a store that always says more deadlines are due (a row
/// that keeps failing) does not pin the supervisor: one sweep makes at most
/// `sweep_max_batches` store calls and reports that more is due.
#[tokio::test]
async fn a_sweep_is_capped_when_the_store_always_has_more() {
    use std::sync::atomic::Ordering;

    use hive_core::engine::HiveConfig;
    use hive_core::{Hive, Principal};
    use hive_store::conformance::FailingApply;

    let store = FailingApply::new(Arc::new(MemoryStore::default()));
    store.endless_sweep.store(true, Ordering::SeqCst);
    let hive = Hive::builder()
        .store(store.clone())
        .config(HiveConfig {
            run_supervisor: false,
            run_workflows: false,
            sweep_max_batches: 5,
            ..HiveConfig::default()
        })
        .build()
        .unwrap();
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        hive.sweep(&Principal::system()),
    )
    .await
    .expect("the sweep returns")
    .unwrap();
    assert!(report.more);
    assert_eq!(store.sweeps.load(Ordering::SeqCst), 5);
    store.endless_sweep.store(false, Ordering::SeqCst);
    assert!(!hive.sweep(&Principal::system()).await.unwrap().more);
    assert_eq!(store.sweeps.load(Ordering::SeqCst), 6);
}

mod memory_specific {
    use std::sync::Arc;
    use std::time::Duration;

    use hive_core::scheduler::FairScheduler;
    use hive_core::store::{ClaimRequest, NewTask, TaskStore};
    use hive_core::{
        Error, NodeId, NodeSpec, NodeStatus, Owner, TaskId, TaskSpec, TaskState, Timestamp,
        node::Node,
    };
    use hive_store::{MemoryConfig, MemoryStore};

    fn owner() -> Owner {
        Owner {
            tenant: "acme".into(),
            principal: "alice".into(),
        }
    }

    fn new_task() -> NewTask {
        NewTask {
            id: TaskId::new(),
            owner: owner(),
            spec: Arc::new(TaskSpec::new("echo", serde_json::Value::Null)),
        }
    }

    async fn node(store: &MemoryStore, at: Timestamp) -> NodeId {
        let node = Node {
            id: NodeId::new(),
            spec: NodeSpec::system("n", 10),
            status: NodeStatus::Ready,
            in_flight: 0,
            registered_at: at,
            last_seen: at,
        };
        let id = node.id;
        store.register_node(node).await.unwrap();
        id
    }

    /// Regression: a claimer whose clock reading is a little older than the
    /// submitter's (both read before taking the lock) must still get the task,
    /// and must never drop it from the queue.
    #[tokio::test]
    async fn a_claim_timestamped_before_the_submit_does_not_lose_the_task() {
        let store = MemoryStore::default();
        let t = Timestamp::from_millis(1_000_000);
        let n = node(&store, t).await;
        let sub = store
            .submit(vec![new_task()], t.saturating_add(Duration::from_millis(5)))
            .await
            .unwrap();
        let scheduler = FairScheduler::default();
        let req = ClaimRequest {
            node: n,
            max: 10,
            agents: &[],
            start: true,
            scheduler: &scheduler,
            now: t,
        };
        let got = store.claim(req).await.unwrap().tasks;
        assert_eq!(got.len(), 1, "the store's time never goes backwards");
        assert_eq!(got[0].token.task, sub[0].id);
        let task = store.get_task(sub[0].id).await.unwrap().unwrap();
        assert_eq!(task.state, TaskState::Running);
    }

    /// A feed cursor dropped by retention is `OffsetExpired` with the earliest
    /// retained cursor, never a silent skip.
    #[tokio::test]
    async fn feed_retention_reports_offset_expired() {
        let store = MemoryStore::new(MemoryConfig { feed_retention: 3 });
        let t = Timestamp::from_millis(1_000_000);
        store
            .submit((0..5).map(|_| new_task()).collect(), t)
            .await
            .unwrap();
        let tenant = "acme".into();
        match store.read_feed(&tenant, 0, 10).await {
            Err(Error::OffsetExpired {
                requested,
                earliest,
            }) => {
                assert_eq!(requested, 0);
                assert_eq!(earliest, 3);
            }
            other => panic!("expected OffsetExpired, got {other:?}"),
        }
        let tail = store.read_feed(&tenant, 2, 10).await.unwrap();
        assert_eq!(
            tail.iter().map(|e| e.cursor).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
    }
}
