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
mod claims;
mod concurrency;
mod delayed;
mod faulty;
mod feeds;
mod protocol;
mod queueing;
mod records;
mod retention;
mod retries;
mod schedules;
mod scheduling;
mod subscriptions;
mod tasks;
mod timeouts;
mod workflow;
pub use api::*;
pub use claims::*;
pub use concurrency::*;
pub use delayed::*;
pub use faulty::FailingApply;
pub use feeds::*;
pub use protocol::*;
pub use queueing::*;
pub use records::*;
pub use retention::*;
pub use retries::*;
pub use schedules::*;
pub use scheduling::*;
pub use subscriptions::*;
pub use tasks::*;
pub use timeouts::*;
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
            claims_across_many_queues_keep_priority_then_age,
            claims_over_many_tenants_take_a_round_robin_share,
            schedule_to_start_timeout_requeues_then_times_out,
            heartbeat_timeout_requeues_and_heartbeats_extend_it,
            start_to_close_timeout_ends_the_attempt,
            overall_deadline_ends_a_pending_task_with_no_eligible_node,
            lost_node_leases_are_reclaimed_within_three_intervals,
            removed_node_leases_are_requeued_at_once,
            logs_and_progress_are_events,
            heartbeats_coalesce_in_storage_and_every_beat_reaches_live_subscribers,
            batch_items_fail_independently,
            concurrent_reports_have_exactly_one_winner,
            get_tasks_reads_many_in_order,
            pending_count_counts_ready_and_backoff_tasks,
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
            workflow_drivers_split_partitions_across_instances,
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
            delayed_tasks_wait_for_not_before,
            delayed_task_deadlines_count_from_not_before,
            invalid_delays_are_refused,
            a_waiting_worker_runs_a_delayed_task_when_it_is_due,
            schedule_slots_fire_exactly_once_across_engines,
            a_fire_interrupted_by_a_crash_completes_once,
            schedule_overlap_policies,
            schedule_catch_up_after_an_outage,
            schedule_lifecycle,
            retention_compacts_ended_tasks_and_expires_old_cursors,
            retention_pass_applies_each_tenants_age,
            retention_deletes_compacted_tasks_after_the_second_age,
            concurrency_key_limits_slots_and_hands_them_over,
            concurrency_keys_take_turns,
            concurrency_slots_survive_retries_and_follow_priority,
            concurrency_strategies_cancel_newest_or_in_progress,
            invalid_concurrency_specs_are_refused,
            rate_limits_hold_claims_to_the_bucket,
            rate_limit_of_100_per_second_holds_over_10_seconds,
            invalid_rate_limits_are_refused,
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

fn owner(t: &str, p: &str) -> hive_core::Owner {
    hive_core::Owner {
        tenant: t.into(),
        principal: p.into(),
    }
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
