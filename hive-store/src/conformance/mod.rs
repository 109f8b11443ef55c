//! The conformance suite: one set of tests, written once, that every backend
//! runs unchanged through [`conformance_tests!`](crate::conformance_tests).
//!
//! Each test is a public async function taking a fresh, empty store. It drives
//! the store through the engine ([`Hive`]) on a [`ManualClock`], with the
//! background supervisor off, so that every deadline is crossed by moving time
//! and calling a sweep explicitly.
//!
//! A backend's test file is one line. The factory returns a fresh, empty store,
//! or `None` when the backend's server is not configured — then every test
//! returns at once, after [`crate::testing::server_url`] has said so loudly (and
//! under `CI=true` it panics instead, so a missing server never passes CI):
//!
//! ```text
//! hive_store::conformance_tests!(|| async {
//!     Some(std::sync::Arc::new(MyStore::new()) as std::sync::Arc<dyn hive_core::store::Store>)
//! });
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hive_core::auth::AllowAll;
use hive_core::engine::{ClaimOptions, HiveConfig, Report, ReportOutcome};
use hive_core::node::{NodeSpec, NodeStatus, ShareTarget};
use hive_core::store::{Ack, ClaimedTask, RecordQuery, RecordWrite, RecordWritten, Store};
use hive_core::task::{EventKind, TaskQuery, TaskState, TimeoutPhase, Timeouts};
use hive_core::{
    Clock, Error, Hive, ManualClock, NodeId, Principal, RetryPolicy, TaskError, TaskEvent, TaskId,
    TaskSpec,
};
use serde_json::json;

mod api;
mod faulty;
mod queueing;
mod scheduling;
mod subscriptions;
mod workflow;
pub use api::*;
pub use faulty::FailingApply;
pub use queueing::*;
pub use scheduling::*;
pub use subscriptions::*;
pub use workflow::*;

/// Every test of the suite, by name. [`conformance_tests!`](crate::conformance_tests)
/// instantiates each one.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@each $factory;
            submit_stores_queued_event_and_snapshot,
            idempotency_key_returns_the_same_task_within_a_tenant,
            concurrent_resubmission_of_one_batch_stores_each_task_once,
            invalid_specs_are_refused_and_nothing_is_stored,
            another_tenants_task_is_not_found,
            list_tasks_filters_and_paginates,
            happy_path_appends_gapless_events_and_acks_terminal_seq,
            duplicate_report_gets_the_same_ack_and_appends_nothing,
            stale_lease_gets_lease_lost,
            worker_cannot_touch_another_nodes_lease,
            failed_attempt_is_retried_after_the_stored_backoff,
            attempts_are_exhausted_then_the_task_fails,
            non_retryable_errors_fail_at_once,
            cancel_ends_pending_and_running_tasks,
            subscribe_replays_then_follows_and_ends_after_terminal,
            snapshot_then_subscribe_misses_nothing,
            feed_resumes_from_a_cursor,
            consumers_list_unacked_terminal_events,
            claims_respect_ownership_shares_and_labels,
            claims_respect_capacity_drain_and_agents,
            priority_orders_claims_within_a_tenant,
            one_tenants_burst_does_not_starve_another,
            schedule_to_start_timeout_requeues_then_times_out,
            heartbeat_timeout_requeues_and_heartbeats_extend_it,
            start_to_close_timeout_ends_the_attempt,
            overall_deadline_ends_a_pending_task_with_no_eligible_node,
            lost_node_leases_are_reclaimed_within_three_intervals,
            removed_node_leases_are_requeued_at_once,
            logs_and_progress_are_events,
            batch_items_fail_independently,
            concurrent_reports_have_exactly_one_winner,
            get_tasks_reads_many_in_order,
            records_compare_and_set_with_their_events,
            records_list_filters_and_paginates,
            concurrent_record_writers_have_one_winner_per_version,
            record_event_waiters_wake_on_append,
            retry_placement_avoids_the_previous_node,
            suggested_delays_and_per_code_overrides_set_the_stored_retry_time,
            retry_bounds_max_interval_jitter_max_elapsed_and_retry_on,
            workflow_fork_join_aggregates_parents_in_each_mode,
            workflow_trigger_rules_fire_or_skip,
            workflow_quorum_fires_eagerly_with_unfinished_parents_in_its_input,
            workflow_map_fans_out_over_0_1_and_1000_elements,
            workflow_step_retries_follow_the_steps_policy,
            workflow_cancel_mid_flight_cancels_running_and_waiting_steps,
            workflow_restart_mid_flight_resumes_without_rerunning_steps,
            workflow_cancel_converges_after_a_failed_task_cancel,
            workflow_idempotency_keys_do_not_collide_across_tenants,
            workflow_concurrent_drivers_decide_each_step_once,
            workflow_query_list_events_and_idempotency,
            user_scoped_scheduling_across_mixed_node_ownership,
            pending_task_no_node_can_take_times_out_on_schedule_to_start,
            a_retry_restarts_the_schedule_to_start_clock,
            reclaimed_and_retried_tasks_keep_their_place_in_the_queue,
            retries_start_when_their_backoff_ends,
            ack_terminal_of_another_tenants_task_is_not_found,
            read_events_does_not_wait_and_wait_returns_the_ended_task,
            oversized_worker_values_are_refused_and_nothing_is_stored,
            malformed_identifiers_are_refused_the_same_on_every_backend,
            feed_calls_in_any_order_hand_out_each_event_once,
            task_subscription_calls_in_any_order_hand_out_each_event_once,
            terminal_acknowledgements_in_any_order_list_exactly_the_unacked,
        );
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: ::std::option::Option<::std::sync::Arc<dyn ::hive_core::store::Store>> =
                    ($factory)().await;
                let ::std::option::Option::Some(store) = store else {
                    return;
                };
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

/// A Hive on a manual clock over `store`, supervisor off.
pub struct Harness {
    /// The engine.
    pub hive: Hive,
    /// Its clock.
    pub clock: Arc<ManualClock>,
    /// A system principal (sweeps, system nodes).
    pub system: Principal,
}

impl Harness {
    /// Builds the harness.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_config(store, |_| {})
    }

    /// Builds the harness with engine settings changed by `edit`.
    pub fn with_config(store: Arc<dyn Store>, edit: impl FnOnce(&mut HiveConfig)) -> Self {
        let clock = Arc::new(ManualClock::default());
        let mut config = HiveConfig {
            run_supervisor: false,
            run_workflows: false,
            node_heartbeat_interval: Duration::from_secs(2),
            subscription_poll: Duration::from_millis(200),
            ..HiveConfig::default()
        };
        edit(&mut config);
        let hive = Hive::builder()
            .store(store)
            .clock(clock.clone())
            .config(config)
            .build()
            .expect("harness builds");
        Harness {
            hive,
            clock,
            system: Principal::system(),
        }
    }

    /// Registers a system node and returns it with its worker principal.
    pub async fn system_node(&self, capacity: u32) -> (NodeId, Principal) {
        self.node(&self.system.clone(), NodeSpec::system("sys", capacity))
            .await
    }

    /// Registers a node as `by` and returns it with its worker principal.
    pub async fn node(&self, by: &Principal, spec: NodeSpec) -> (NodeId, Principal) {
        let node = self
            .hive
            .register_node(by, spec)
            .await
            .expect("register node");
        (node.id, Principal::worker(node.tenant(), node.id))
    }

    /// Claims up to `max` tasks for a node, started or not.
    pub async fn claim(
        &self,
        worker: &Principal,
        node: NodeId,
        max: u32,
        start: bool,
    ) -> Vec<ClaimedTask> {
        let opts = ClaimOptions {
            max,
            agents: Vec::new(),
            start,
        };
        self.hive
            .claim(worker, node, &opts)
            .await
            .expect("claim")
            .tasks
    }

    /// All stored events of a task.
    pub async fn events(&self, id: TaskId) -> Vec<TaskEvent> {
        self.hive
            .store()
            .read_events(id, 0, 10_000)
            .await
            .expect("read events")
    }

    /// Event kinds' names of a task.
    pub async fn kinds(&self, id: TaskId) -> Vec<&'static str> {
        self.events(id)
            .await
            .iter()
            .map(|e| e.kind.name())
            .collect()
    }

    /// Moves time and sweeps.
    pub async fn advance_and_sweep(&self, d: Duration) {
        self.clock.advance(d);
        self.hive.sweep(&self.system).await.expect("sweep");
    }

    /// The state of a task.
    pub async fn state(&self, id: TaskId) -> TaskState {
        self.hive
            .store()
            .get_task(id)
            .await
            .expect("get")
            .expect("exists")
            .state
    }
}

fn alice() -> Principal {
    Principal::user("acme", "alice")
}

fn bob() -> Principal {
    Principal::user("acme", "bob")
}

fn carol() -> Principal {
    Principal::user("globex", "carol")
}

fn spec(agent: &str) -> TaskSpec {
    TaskSpec::new(agent, json!({"n": 1}))
}

/// Checks the event contract on one task's stored events: seq 1.. gapless,
/// `Queued` first, at most one terminal event and nothing after it.
pub fn assert_event_contract(events: &[TaskEvent]) {
    assert!(!events.is_empty(), "a task has at least its Queued event");
    assert_eq!(events[0].kind, EventKind::Queued, "seq 1 is Queued");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "seq must be gapless: {events:?}");
        if e.kind.is_terminal() {
            assert_eq!(
                i + 1,
                events.len(),
                "nothing may follow the terminal event: {events:?}"
            );
        }
    }
}

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

// ----- the worker protocol ----------------------------------------------------

/// Submit → claim → start → succeed appends Queued, Scheduled, Started,
/// Succeeded; the report's ack is the terminal event's seq.
pub async fn happy_path_appends_gapless_events_and_acks_terminal_seq(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let claimed = h.claim(&w, node, 10, false).await;
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!(c.token.task, s.id);
    assert_eq!(c.token.attempt, 1);
    assert!(!c.started);
    assert_eq!(h.state(s.id).await, TaskState::Scheduled);
    let started = h.hive.start(&w, &[c.token]).await.unwrap();
    assert_eq!(started[0].as_ref().unwrap().state, TaskState::Running);
    let ack = h
        .hive
        .report_success(&w, c.token, json!({"ok": true}))
        .await
        .unwrap();
    assert_eq!(
        ack,
        Ack {
            seq: 4,
            state: TaskState::Succeeded
        }
    );
    let events = h.events(s.id).await;
    assert_event_contract(&events);
    assert_eq!(
        h.kinds(s.id).await,
        vec!["queued", "scheduled", "started", "succeeded"]
    );
    assert_eq!(events[1].kind, EventKind::Scheduled { node });
    assert_eq!(events[2].kind, EventKind::Started { node, attempt: 1 });
    let t = h.hive.get_task(&alice(), s.id).await.unwrap();
    assert_eq!(t.output, Some(json!({"ok": true})));
    assert_eq!(t.node, Some(node));
    assert_eq!(h.hive.get_node(&h.system, node).await.unwrap().in_flight, 0);
    // Claim-and-start in one step appends the same events.
    let s2 = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let c2 = h.claim(&w, node, 1, true).await;
    assert!(c2[0].started);
    assert_eq!(c2[0].last_seq, 3);
    assert_eq!(h.kinds(s2.id).await, vec!["queued", "scheduled", "started"]);
}

/// A duplicate of an accepted report is answered with the same ack and appends
/// nothing; a different report on the ended task is refused.
pub async fn duplicate_report_gets_the_same_ack_and_appends_nothing(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    let first = h.hive.report_success(&w, c.token, json!(1)).await.unwrap();
    let again = h.hive.report_success(&w, c.token, json!(1)).await.unwrap();
    assert_eq!(first, again);
    match h
        .hive
        .report_failure(&w, c.token, TaskError::new("x", "y"))
        .await
    {
        Err(Error::AlreadyTerminal { state, seq, .. }) => {
            assert_eq!(state, TaskState::Succeeded);
            assert_eq!(seq, first.seq);
        }
        other => panic!("expected AlreadyTerminal, got {other:?}"),
    }
    assert_eq!(
        h.events(s.id).await.len() as u64,
        first.seq,
        "nothing appended after the terminal event"
    );
    // The same for a failure that scheduled a retry.
    let s2 = h
        .hive
        .submit(
            &alice(),
            spec("echo").retry(RetryPolicy::attempts(3, Duration::from_secs(1))),
        )
        .await
        .unwrap();
    let c2 = h.claim(&w, node, 1, true).await.remove(0);
    let f1 = h
        .hive
        .report_failure(&w, c2.token, TaskError::new("e", "m"))
        .await
        .unwrap();
    let f2 = h
        .hive
        .report_failure(&w, c2.token, TaskError::new("e", "m"))
        .await
        .unwrap();
    assert_eq!(f1, f2);
    assert_eq!(f1.state, TaskState::Pending);
    assert_eq!(h.events(s2.id).await.len(), 4);
}

/// A worker whose lease was taken away gets `LeaseLost`; its result is discarded.
pub async fn stale_lease_gets_lease_lost(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    h.hive
        .cancel(&alice(), s.id, "changed my mind")
        .await
        .unwrap();
    assert!(matches!(
        h.hive.report_success(&w, c.token, json!(1)).await,
        Err(Error::LeaseLost { .. })
    ));
    let hb = h.hive.heartbeat(&w, vec![(c.token, None)]).await.unwrap();
    assert!(matches!(hb[0], Err(Error::LeaseLost { .. })));
    assert_eq!(
        h.kinds(s.id).await,
        vec!["queued", "scheduled", "started", "cancelled"]
    );
    // A lease replaced by a retry: the old token is stale, the new one works.
    let s2 = h
        .hive
        .submit(
            &alice(),
            spec("echo")
                .retry(RetryPolicy::attempts(2, Duration::from_millis(10)))
                .timeouts(Timeouts {
                    heartbeat: Duration::from_secs(5),
                    ..Timeouts::default()
                }),
        )
        .await
        .unwrap();
    let old = h.claim(&w, node, 1, true).await.remove(0);
    h.clock.advance(Duration::from_secs(6));
    h.hive.node_heartbeat(&w, node).await.unwrap();
    h.hive.sweep(&h.system).await.unwrap();
    assert_eq!(
        h.state(s2.id).await,
        TaskState::Pending,
        "requeued after the heartbeat timeout"
    );
    h.clock.advance(Duration::from_millis(20));
    let new = h.claim(&w, node, 1, true).await.remove(0);
    assert_eq!(new.token.attempt, 2);
    assert!(matches!(
        h.hive.report_success(&w, old.token, json!("late")).await,
        Err(Error::LeaseLost { .. })
    ));
    h.hive
        .report_success(&w, new.token, json!("fresh"))
        .await
        .unwrap();
    let t = h.hive.get_task(&alice(), s2.id).await.unwrap();
    assert_eq!(t.output, Some(json!("fresh")));
}

/// A worker may not start, heartbeat, log or report a task leased to another
/// node, nor claim for another node; users may not work nodes at all.
pub async fn worker_cannot_touch_another_nodes_lease(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (n1, w1) = h.system_node(4).await;
    let (n2, w2) = h.system_node(4).await;
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let c = h.claim(&w1, n1, 1, false).await.remove(0);
    assert!(matches!(
        h.hive.start(&w2, &[c.token]).await.unwrap()[0],
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.report_success(&w2, c.token, json!(1)).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.log(&w2, c.token, "stdout", "x").await,
        Err(Error::Forbidden { .. })
    ));
    let opts = ClaimOptions {
        max: 1,
        ..ClaimOptions::default()
    };
    assert!(matches!(
        h.hive.claim(&w2, n1, &opts).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.claim(&alice(), n1, &opts).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.report_success(&alice(), c.token, json!(1)).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.node_heartbeat(&w2, n1).await,
        Err(Error::Forbidden { .. })
    ));
    // Workers may not use system-level operations either.
    assert!(matches!(
        h.hive.submit(&w1, spec("echo")).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.get_task(&w1, s.id).await,
        Err(Error::Forbidden { .. }) | Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        h.hive.sweep(&w1).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.register_node(&w1, NodeSpec::system("x", 1)).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        h.hive.drain_node(&w1, n2).await,
        Err(Error::Forbidden { .. }) | Err(Error::NotFound { .. })
    ));
    assert_eq!(
        h.kinds(s.id).await,
        vec!["queued", "scheduled"],
        "nothing was appended by refused calls"
    );
    h.hive.start(&w1, &[c.token]).await.unwrap()[0]
        .as_ref()
        .unwrap();
}

/// A failed attempt with retries left goes back to Pending with a stored
/// `retry_at`; it is not claimable before then.
pub async fn failed_attempt_is_retried_after_the_stored_backoff(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let policy = RetryPolicy {
        initial_interval: Duration::from_secs(10),
        backoff_coefficient: 3.0,
        jitter: 0.0,
        ..RetryPolicy::attempts(3, Duration::from_secs(10))
    };
    let s = h
        .hive
        .submit(&alice(), spec("echo").retry(policy))
        .await
        .unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    let t0 = h.clock.now();
    let ack = h
        .hive
        .report_failure(&w, c.token, TaskError::new("flaky", "again"))
        .await
        .unwrap();
    assert_eq!(ack.state, TaskState::Pending);
    let ev = h.events(s.id).await.pop().unwrap();
    match ev.kind {
        EventKind::AttemptFailed {
            attempt,
            retry_at,
            error,
        } => {
            assert_eq!(attempt, 1);
            assert_eq!(retry_at, t0.saturating_add(Duration::from_secs(10)));
            assert_eq!(error.code, "flaky");
        }
        other => panic!("expected AttemptFailed, got {other:?}"),
    }
    assert_eq!(
        h.hive.get_task(&alice(), s.id).await.unwrap().available_at,
        t0.saturating_add(Duration::from_secs(10))
    );
    h.clock.advance(Duration::from_secs(9));
    assert!(
        h.claim(&w, node, 1, true).await.is_empty(),
        "not before retry_at"
    );
    h.clock.advance(Duration::from_secs(1));
    let c2 = h.claim(&w, node, 1, true).await.remove(0);
    assert_eq!(c2.token.attempt, 2);
    let t1 = h.clock.now();
    h.hive
        .report_failure(&w, c2.token, TaskError::new("flaky", "again"))
        .await
        .unwrap();
    match h.events(s.id).await.pop().unwrap().kind {
        EventKind::AttemptFailed { retry_at, .. } => {
            assert_eq!(retry_at, t1.saturating_add(Duration::from_secs(30)))
        }
        other => panic!("expected AttemptFailed, got {other:?}"),
    }
}

/// After `max_attempts` the task fails with the last error.
pub async fn attempts_are_exhausted_then_the_task_fails(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h
        .hive
        .submit(
            &alice(),
            spec("echo").retry(RetryPolicy::attempts(2, Duration::from_millis(1))),
        )
        .await
        .unwrap();
    for attempt in 1..=2 {
        h.clock.advance(Duration::from_millis(5));
        let c = h.claim(&w, node, 1, true).await.remove(0);
        assert_eq!(c.token.attempt, attempt);
        h.hive
            .report_failure(&w, c.token, TaskError::new("boom", format!("#{attempt}")))
            .await
            .unwrap();
    }
    let t = h.hive.get_task(&alice(), s.id).await.unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert_eq!(t.error.unwrap().message, "#2");
    assert_eq!(
        h.kinds(s.id).await,
        vec![
            "queued",
            "scheduled",
            "started",
            "attempt_failed",
            "scheduled",
            "started",
            "failed"
        ]
    );
    h.clock.advance(Duration::from_secs(60));
    assert!(h.claim(&w, node, 1, true).await.is_empty());
}

/// Non-retryable errors (by flag or by the policy's code list) fail at once.
pub async fn non_retryable_errors_fail_at_once(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let policy = RetryPolicy {
        non_retryable: vec!["bad_input".into()],
        ..RetryPolicy::attempts(5, Duration::from_millis(1))
    };
    let a = h
        .hive
        .submit(&alice(), spec("echo").retry(policy.clone()))
        .await
        .unwrap();
    let b = h
        .hive
        .submit(&alice(), spec("echo").retry(policy))
        .await
        .unwrap();
    for c in h.claim(&w, node, 2, true).await {
        let err = if c.token.task == a.id {
            TaskError::new("bad_input", "no")
        } else {
            TaskError::new("whatever", "no").non_retryable()
        };
        assert_eq!(
            h.hive.report_failure(&w, c.token, err).await.unwrap().state,
            TaskState::Failed
        );
    }
    assert_eq!(h.state(a.id).await, TaskState::Failed);
    assert_eq!(h.state(b.id).await, TaskState::Failed);
}

/// Cancel ends pending, scheduled and running tasks; cancelling an ended task is
/// refused with its terminal state.
pub async fn cancel_ends_pending_and_running_tasks(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let pending = h
        .hive
        .submit(&alice(), spec("echo").priority(-1))
        .await
        .unwrap();
    let running = h
        .hive
        .submit(&alice(), spec("echo").priority(5))
        .await
        .unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    assert_eq!(c.token.task, running.id);
    let ops = Principal::operator("acme", "oscar");
    for id in [pending.id, running.id] {
        let ack = h.hive.cancel(&ops, id, "stop").await.unwrap();
        assert_eq!(ack.state, TaskState::Cancelled);
        match h.events(id).await.pop().unwrap().kind {
            EventKind::Cancelled { by, reason } => {
                assert_eq!(by.as_str(), "oscar");
                assert_eq!(reason, "stop");
            }
            other => panic!("expected Cancelled, got {other:?}"),
        }
    }
    assert!(matches!(
        h.hive.cancel(&alice(), pending.id, "again").await,
        Err(Error::AlreadyTerminal {
            state: TaskState::Cancelled,
            ..
        })
    ));
    assert!(
        h.claim(&w, node, 4, true).await.is_empty(),
        "a cancelled task is never claimed"
    );
    assert_eq!(
        h.hive.get_node(&h.system, node).await.unwrap().in_flight,
        0,
        "the lease was released"
    );
}

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

fn owner(t: &str, p: &str) -> hive_core::Owner {
    hive_core::Owner {
        tenant: t.into(),
        principal: p.into(),
    }
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

// ----- deadlines ------------------------------------------------------------

/// A scheduled task not started within schedule-to-start is requeued while
/// attempts remain, then ends `TimedOut`.
pub async fn schedule_to_start_timeout_requeues_then_times_out(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let t = Timeouts {
        schedule_to_start: Duration::from_secs(5),
        ..Timeouts::default()
    };
    let s = h
        .hive
        .submit(
            &alice(),
            spec("echo")
                .timeouts(t)
                .retry(RetryPolicy::attempts(2, Duration::from_secs(1))),
        )
        .await
        .unwrap();
    h.claim(&w, node, 1, false).await.remove(0);
    h.advance_and_sweep(Duration::from_secs(4)).await;
    assert_eq!(
        h.state(s.id).await,
        TaskState::Scheduled,
        "not before the deadline"
    );
    h.hive.node_heartbeat(&w, node).await.unwrap();
    h.advance_and_sweep(Duration::from_millis(1001)).await;
    assert_eq!(h.state(s.id).await, TaskState::Pending);
    h.advance_and_sweep(Duration::from_secs(1)).await;
    h.hive.node_heartbeat(&w, node).await.unwrap();
    h.claim(&w, node, 1, false).await.remove(0);
    h.advance_and_sweep(Duration::from_secs(6)).await;
    let events = h.events(s.id).await;
    assert_event_contract(&events);
    assert_eq!(
        events.last().unwrap().kind,
        EventKind::TimedOut {
            phase: TimeoutPhase::ScheduleToStart
        }
    );
    assert_eq!(h.hive.get_node(&h.system, node).await.unwrap().in_flight, 0);
}

/// A running task that stops heartbeating is requeued after its heartbeat
/// timeout; heartbeats push the deadline out.
pub async fn heartbeat_timeout_requeues_and_heartbeats_extend_it(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let t = Timeouts {
        heartbeat: Duration::from_secs(10),
        ..Timeouts::default()
    };
    let s = h
        .hive
        .submit(
            &alice(),
            spec("echo")
                .timeouts(t)
                .retry(RetryPolicy::attempts(2, Duration::from_secs(1))),
        )
        .await
        .unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    for _ in 0..3 {
        h.clock.advance(Duration::from_secs(8));
        h.hive.heartbeat(&w, vec![(c.token, None)]).await.unwrap()[0]
            .as_ref()
            .unwrap();
        h.hive.sweep(&h.system).await.unwrap();
        assert_eq!(
            h.state(s.id).await,
            TaskState::Running,
            "heartbeats keep it alive"
        );
    }
    h.clock.advance(Duration::from_millis(10_001));
    h.hive.node_heartbeat(&w, node).await.unwrap();
    h.hive.sweep(&h.system).await.unwrap();
    match h.events(s.id).await.pop().unwrap().kind {
        EventKind::AttemptFailed { error, .. } => assert_eq!(error.code, "timeout"),
        other => panic!("expected AttemptFailed, got {other:?}"),
    }
    assert_eq!(h.state(s.id).await, TaskState::Pending);
    h.clock.advance(Duration::from_secs(2));
    h.hive.node_heartbeat(&w, node).await.unwrap();
    h.claim(&w, node, 1, true).await.remove(0);
    h.clock.advance(Duration::from_secs(11));
    h.hive.node_heartbeat(&w, node).await.unwrap();
    h.hive.sweep(&h.system).await.unwrap();
    assert_eq!(
        h.events(s.id).await.pop().unwrap().kind,
        EventKind::TimedOut {
            phase: TimeoutPhase::Heartbeat
        }
    );
}

/// An attempt running past start-to-close ends even while heartbeating.
pub async fn start_to_close_timeout_ends_the_attempt(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let t = Timeouts {
        heartbeat: Duration::from_secs(10),
        start_to_close: Duration::from_secs(25),
        ..Timeouts::default()
    };
    let s = h
        .hive
        .submit(
            &alice(),
            spec("echo").timeouts(t).retry(RetryPolicy::none()),
        )
        .await
        .unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    for _ in 0..3 {
        h.clock.advance(Duration::from_secs(8));
        let _ = h.hive.heartbeat(&w, vec![(c.token, None)]).await.unwrap();
    }
    h.advance_and_sweep(Duration::from_secs(2)).await;
    let events = h.events(s.id).await;
    assert_event_contract(&events);
    assert_eq!(
        events.last().unwrap().kind,
        EventKind::TimedOut {
            phase: TimeoutPhase::StartToClose
        }
    );
    assert!(matches!(
        h.hive.report_success(&w, c.token, json!(1)).await,
        Err(Error::LeaseLost { .. })
    ));
}

/// A pending task that no node can run ends `TimedOut` at its overall deadline
/// instead of landing anywhere.
pub async fn overall_deadline_ends_a_pending_task_with_no_eligible_node(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h
        .node(&bob(), NodeSpec::user("bob-box", owner("acme", "bob"), 4))
        .await;
    let t = Timeouts {
        deadline: Some(Duration::from_secs(30)),
        ..Timeouts::default()
    };
    let s = h
        .hive
        .submit(&alice(), spec("echo").timeouts(t))
        .await
        .unwrap();
    assert!(
        h.claim(&w, node, 4, true).await.is_empty(),
        "bob's node never runs alice's task"
    );
    h.advance_and_sweep(Duration::from_secs(29)).await;
    assert_eq!(h.state(s.id).await, TaskState::Pending);
    h.advance_and_sweep(Duration::from_secs(1)).await;
    assert_eq!(
        h.events(s.id).await.pop().unwrap().kind,
        EventKind::TimedOut {
            phase: TimeoutPhase::Deadline
        }
    );
}

/// A node that stops heartbeating is Lost after three intervals and its leases
/// are reclaimed; a heartbeat revives it.
pub async fn lost_node_leases_are_reclaimed_within_three_intervals(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let (other, ow) = h.system_node(4).await;
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let _c = h.claim(&w, node, 1, true).await.remove(0);
    let lost_after = h.hive.config().node_lost_after();
    h.clock.advance(lost_after);
    h.hive.node_heartbeat(&ow, other).await.unwrap();
    h.hive.sweep(&h.system).await.unwrap();
    assert_eq!(
        h.state(s.id).await,
        TaskState::Running,
        "not before three intervals"
    );
    h.clock.advance(Duration::from_millis(1));
    h.hive.node_heartbeat(&ow, other).await.unwrap();
    let report = h.hive.sweep(&h.system).await.unwrap();
    assert_eq!(report.nodes_lost, 1);
    assert_eq!(report.placements_lost, 1);
    assert_eq!(
        h.hive.get_node(&h.system, node).await.unwrap().status,
        NodeStatus::Lost
    );
    match h.events(s.id).await.pop().unwrap().kind {
        EventKind::AttemptFailed { error, .. } => assert_eq!(error.code, "lost"),
        other => panic!("expected AttemptFailed, got {other:?}"),
    }
    h.clock.advance(Duration::from_secs(5));
    let c2 = h.claim(&ow, other, 1, true).await.remove(0);
    assert_eq!(c2.token.attempt, 2);
    assert!(
        h.claim(&w, node, 1, true).await.is_empty(),
        "a lost node claims nothing"
    );
    assert_eq!(
        h.hive.node_heartbeat(&w, node).await.unwrap().status,
        NodeStatus::Ready
    );
}

/// Removing a node requeues its leases at once.
pub async fn removed_node_leases_are_requeued_at_once(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h
        .hive
        .submit(
            &alice(),
            spec("echo").retry(RetryPolicy::attempts(3, Duration::from_millis(1))),
        )
        .await
        .unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    h.hive.remove_node(&w, node).await.unwrap();
    assert_eq!(h.state(s.id).await, TaskState::Pending);
    assert!(matches!(
        h.hive.get_node(&h.system, node).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        h.hive.report_success(&w, c.token, json!(1)).await,
        Err(Error::LeaseLost { .. })
    ));
}

/// Logs and heartbeat progress are events in the task's stream.
pub async fn logs_and_progress_are_events(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    let s = h.hive.submit(&alice(), spec("echo")).await.unwrap();
    let c = h.claim(&w, node, 1, true).await.remove(0);
    h.hive
        .log(&w, c.token, "stderr", "warming up")
        .await
        .unwrap();
    h.hive
        .heartbeat(&w, vec![(c.token, Some(json!({"pct": 50})))])
        .await
        .unwrap();
    let events = h.events(s.id).await;
    assert_eq!(
        events[3].kind,
        EventKind::Log {
            stream: "stderr".into(),
            line: "warming up".into()
        }
    );
    assert_eq!(
        events[4].kind,
        EventKind::Heartbeat {
            node,
            attempt: 1,
            progress: Some(json!({"pct": 50}))
        }
    );
    assert!(matches!(
        h.hive.log(&w, c.token, "", "x").await,
        Err(Error::InvalidArgument { .. })
    ));
}

/// In one batch, a refused item does not refuse the others.
pub async fn batch_items_fail_independently(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(4).await;
    h.hive
        .submit_batch(&alice(), vec![spec("echo"), spec("echo")])
        .await
        .unwrap();
    let c = h.claim(&w, node, 2, true).await;
    let mut bogus = c[0].token;
    bogus.lease = hive_core::LeaseId::new();
    let reports = vec![
        Report {
            token: c[0].token,
            outcome: ReportOutcome::Success { output: json!(1) },
        },
        Report {
            token: bogus,
            outcome: ReportOutcome::Success { output: json!(2) },
        },
        Report {
            token: hive_core::LeaseToken {
                task: TaskId::new(),
                ..c[1].token
            },
            outcome: ReportOutcome::Success { output: json!(3) },
        },
        Report {
            token: c[1].token,
            outcome: ReportOutcome::Failure {
                error: TaskError::new("e", "m").non_retryable(),
            },
        },
    ];
    let answers = h.hive.report(&w, reports).await.unwrap();
    assert_eq!(answers.len(), 4);
    assert_eq!(answers[0].as_ref().unwrap().state, TaskState::Succeeded);
    assert!(matches!(
        answers[1],
        Err(Error::AlreadyTerminal { .. }) | Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(answers[2], Err(Error::NotFound { .. })));
    assert_eq!(answers[3].as_ref().unwrap().state, TaskState::Failed);
}

/// Many concurrent reports for one task: exactly one terminal event.
pub async fn concurrent_reports_have_exactly_one_winner(store: Arc<dyn Store>) {
    let h = Arc::new(Harness::new(store));
    let (node, w) = h.system_node(64).await;
    let specs: Vec<TaskSpec> = (0..50).map(|_| spec("echo")).collect();
    h.hive.submit_batch(&alice(), specs).await.unwrap();
    let claimed = h.claim(&w, node, 50, true).await;
    let mut joins = Vec::new();
    for c in &claimed {
        for k in 0..4 {
            let (h, w, token) = (h.clone(), w.clone(), c.token);
            joins.push(tokio::spawn(async move {
                if k % 2 == 0 {
                    h.hive.report_success(&w, token, json!(k)).await
                } else {
                    h.hive.cancel(&alice(), token.task, "race").await
                }
            }));
        }
    }
    for j in joins {
        let _ = j.await.unwrap();
    }
    for c in &claimed {
        let events = h.events(c.token.task).await;
        assert_event_contract(&events);
        assert_eq!(events.iter().filter(|e| e.kind.is_terminal()).count(), 1);
    }
    let _ = AllowAll;
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

// ----- retry policy fields the store must honour ---------------------------------

/// `placement: avoid_previous_node`: the retry is not claimable by the node that
/// ran the failed attempt, and is by another node.
pub async fn retry_placement_avoids_the_previous_node(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (a, wa) = h.system_node(4).await;
    let (b, wb) = h.system_node(4).await;
    let policy = RetryPolicy {
        placement: hive_core::RetryPlacement::AvoidPreviousNode,
        ..RetryPolicy::attempts(3, Duration::from_secs(1))
    };
    let s = h
        .hive
        .submit(&alice(), spec("echo").retry(policy))
        .await
        .unwrap();
    let c = h.claim(&wa, a, 1, true).await.remove(0);
    h.hive
        .report_failure(&wa, c.token, TaskError::new("flaky", "again"))
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(2));
    assert!(
        h.claim(&wa, a, 1, true).await.is_empty(),
        "the node that ran the failed attempt must not get the retry"
    );
    assert_eq!(h.state(s.id).await, TaskState::Pending);
    let c2 = h.claim(&wb, b, 1, true).await.remove(0);
    assert_eq!(c2.token.task, s.id);
    assert_eq!(c2.token.attempt, 2);
    // A plain policy retries anywhere, the same node included.
    let s2 = h
        .hive
        .submit(
            &alice(),
            spec("echo").retry(RetryPolicy::attempts(3, Duration::from_secs(1))),
        )
        .await
        .unwrap();
    let c = h.claim(&wa, a, 1, true).await.remove(0);
    assert_eq!(c.token.task, s2.id);
    h.hive
        .report_failure(&wa, c.token, TaskError::new("flaky", "again"))
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(2));
    assert_eq!(h.claim(&wa, a, 1, true).await.remove(0).token.task, s2.id);
}

/// A worker's suggested delay is used, clamped to the policy's `max_interval`;
/// per-code overrides change the attempts and backoff of their code only.
pub async fn suggested_delays_and_per_code_overrides_set_the_stored_retry_time(
    store: Arc<dyn Store>,
) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(8).await;
    let mut policy = RetryPolicy {
        max_interval: Some(Duration::from_secs(20)),
        ..RetryPolicy::attempts(2, Duration::from_secs(1))
    };
    policy.overrides.insert(
        "rate_limited".into(),
        hive_core::RetryOverride {
            max_attempts: Some(hive_core::MaxAttempts::Limited(4)),
            initial_interval: Some(Duration::from_secs(5)),
            ..Default::default()
        },
    );
    let s = h
        .hive
        .submit(&alice(), spec("echo").retry(policy))
        .await
        .unwrap();
    let retry_at = |ev: &TaskEvent| match &ev.kind {
        EventKind::AttemptFailed { retry_at, .. } => *retry_at,
        other => panic!("expected AttemptFailed, got {other:?}"),
    };
    // Attempt 1: the worker suggests 10 minutes; clamped to 20 s.
    let c = h.claim(&w, node, 1, true).await.remove(0);
    let t0 = h.clock.now();
    h.hive
        .report_failure(
            &w,
            c.token,
            TaskError::new("flaky", "slow down").retry_after(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let ev = h.events(s.id).await.pop().unwrap();
    assert_eq!(retry_at(&ev), t0.saturating_add(Duration::from_secs(20)));
    // Attempts 2 and 3 fail with the overridden code: 4 attempts, 5 s then 10 s.
    h.clock.advance(Duration::from_secs(20));
    for (attempt, delay) in [(2u32, 10u64), (3, 20)] {
        let c = h.claim(&w, node, 1, true).await.remove(0);
        assert_eq!(c.token.attempt, attempt);
        let t = h.clock.now();
        let ack = h
            .hive
            .report_failure(&w, c.token, TaskError::new("rate_limited", "429"))
            .await
            .unwrap();
        assert_eq!(ack.state, TaskState::Pending, "attempt {attempt}");
        let ev = h.events(s.id).await.pop().unwrap();
        assert_eq!(retry_at(&ev), t.saturating_add(Duration::from_secs(delay)));
        h.clock.advance(Duration::from_secs(delay));
    }
    // Attempt 4 is the override's last.
    let c = h.claim(&w, node, 1, true).await.remove(0);
    assert_eq!(c.token.attempt, 4);
    let ack = h
        .hive
        .report_failure(&w, c.token, TaskError::new("rate_limited", "429"))
        .await
        .unwrap();
    assert_eq!(ack.state, TaskState::Failed);
}

/// `max_interval` caps the backoff, `jitter` spreads it within its fraction,
/// `max_elapsed` stops retries that would start too late, and `retry_on` turns
/// off retries per cause.
pub async fn retry_bounds_max_interval_jitter_max_elapsed_and_retry_on(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(16).await;
    let retry_at_of = |ev: &TaskEvent| match &ev.kind {
        EventKind::AttemptFailed { retry_at, .. } => *retry_at,
        other => panic!("expected AttemptFailed, got {other:?}"),
    };
    let fail = |token| {
        h.hive
            .report_failure(&w, token, TaskError::new("flaky", "x"))
    };

    // max_interval: 10 s, then 100 s capped to 30 s.
    let capped = RetryPolicy {
        backoff_coefficient: 10.0,
        max_interval: Some(Duration::from_secs(30)),
        ..RetryPolicy::attempts(5, Duration::from_secs(10))
    };
    let s = h
        .hive
        .submit(&alice(), spec("echo").retry(capped))
        .await
        .unwrap();
    let t = h.clock.now();
    fail(h.claim(&w, node, 1, true).await.remove(0).token)
        .await
        .unwrap();
    assert_eq!(
        retry_at_of(&h.events(s.id).await.pop().unwrap()),
        t.saturating_add(Duration::from_secs(10))
    );
    h.clock.advance(Duration::from_secs(10));
    let t = h.clock.now();
    fail(h.claim(&w, node, 1, true).await.remove(0).token)
        .await
        .unwrap();
    assert_eq!(
        retry_at_of(&h.events(s.id).await.pop().unwrap()),
        t.saturating_add(Duration::from_secs(30))
    );
    h.hive.cancel(&alice(), s.id, "done").await.unwrap();

    // jitter: within ±50 % of 10 s.
    let jittery = RetryPolicy {
        jitter: 0.5,
        ..RetryPolicy::attempts(2, Duration::from_secs(10))
    };
    let s = h
        .hive
        .submit(&alice(), spec("echo").retry(jittery))
        .await
        .unwrap();
    let t = h.clock.now();
    fail(h.claim(&w, node, 1, true).await.remove(0).token)
        .await
        .unwrap();
    let at = retry_at_of(&h.events(s.id).await.pop().unwrap());
    assert!(
        at >= t.saturating_add(Duration::from_secs(5))
            && at <= t.saturating_add(Duration::from_secs(15)),
        "jittered retry at {at} outside [t+5s, t+15s]"
    );
    h.hive.cancel(&alice(), s.id, "done").await.unwrap();

    // max_elapsed: the second retry would start 30 s after submission > 15 s.
    let bounded = RetryPolicy {
        max_elapsed: Some(Duration::from_secs(15)),
        ..RetryPolicy::attempts(10, Duration::from_secs(10))
    };
    let s = h
        .hive
        .submit(&alice(), spec("echo").retry(bounded))
        .await
        .unwrap();
    let ack = fail(h.claim(&w, node, 1, true).await.remove(0).token)
        .await
        .unwrap();
    assert_eq!(ack.state, TaskState::Pending);
    h.clock.advance(Duration::from_secs(10));
    let ack = fail(h.claim(&w, node, 1, true).await.remove(0).token)
        .await
        .unwrap();
    assert_eq!(ack.state, TaskState::Failed, "no retry past max_elapsed");
    assert_eq!(h.state(s.id).await, TaskState::Failed);

    // retry_on.timeout = false: a schedule-to-start timeout ends the task.
    let no_timeouts = RetryPolicy {
        retry_on: hive_core::RetryOn {
            timeout: false,
            ..Default::default()
        },
        ..RetryPolicy::attempts(5, Duration::from_secs(1))
    };
    let s = h
        .hive
        .submit(
            &alice(),
            spec("echo").retry(no_timeouts).timeouts(Timeouts {
                schedule_to_start: Duration::from_secs(5),
                ..Timeouts::default()
            }),
        )
        .await
        .unwrap();
    let c = h.claim(&w, node, 1, false).await.remove(0);
    assert_eq!(c.token.task, s.id);
    h.advance_and_sweep(Duration::from_secs(6)).await;
    assert_eq!(h.state(s.id).await, TaskState::TimedOut);
    assert_eq!(h.kinds(s.id).await.last(), Some(&"timed_out"));
}
