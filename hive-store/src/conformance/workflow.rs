//! Workflow conformance: fork-join in every join mode, every trigger rule, map
//! fan-out, per-step retries, cancellation and restart mid-flight, concurrent
//! drivers — on any backend, driven by hand on a manual clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hive_core::engine::{Report, ReportOutcome};
use hive_core::store::Store;
use hive_core::task::{EventKind, TaskState};
use hive_core::workflow::{
    JoinMode, SkipReason, StepSpec, StepState, Trigger, WorkflowEventKind, WorkflowId,
    WorkflowQuery, WorkflowSpec, WorkflowState, WorkflowView,
};
use hive_core::{Clock, Error, NodeId, Principal, RetryPolicy, TaskError};
use serde_json::{Value, json};

use super::{Harness, alice, carol};

/// What a test's handler does with one claimed task: `Some` reports it,
/// `None` leaves it running.
type Handler<'a> = &'a (dyn Fn(&str, &Value) -> Option<Result<Value, TaskError>> + Sync);

/// A harness with one big system node that runs whatever it claims.
struct Flow {
    h: Harness,
    node: NodeId,
    worker: Principal,
}

impl Flow {
    async fn new(store: Arc<dyn Store>) -> Flow {
        let h = Harness::new(store);
        let (node, worker) = h.system_node(5_000).await;
        Flow { h, node, worker }
    }

    async fn submit(&self, spec: WorkflowSpec) -> WorkflowId {
        let s = self
            .h
            .hive
            .submit_workflow(&alice(), spec)
            .await
            .expect("submit workflow");
        assert!(s.created);
        s.id
    }

    async fn drive(&self) -> usize {
        self.h
            .hive
            .drive_workflows(&self.h.system)
            .await
            .expect("drive")
    }

    /// Drives and works until nothing more happens. Returns the tasks reported.
    async fn run(&self, handler: Handler<'_>) -> usize {
        let mut reported = 0;
        for _ in 0..200 {
            self.drive().await;
            let claimed = self.h.claim(&self.worker, self.node, 5_000, true).await;
            if claimed.is_empty() {
                self.drive().await;
                if self
                    .h
                    .claim(&self.worker, self.node, 0, true)
                    .await
                    .is_empty()
                {
                    return reported;
                }
                continue;
            }
            let mut reports = Vec::new();
            for c in claimed {
                if let Some(r) = handler(c.spec.agent.as_str(), &c.spec.input) {
                    reports.push(Report {
                        token: c.token,
                        outcome: match r {
                            Ok(output) => ReportOutcome::Success { output },
                            Err(error) => ReportOutcome::Failure { error },
                        },
                    });
                }
            }
            if reports.is_empty() {
                // Everything claimed is being held: let the caller decide.
                self.drive().await;
                return reported;
            }
            reported += reports.len();
            for r in self.h.hive.report(&self.worker, reports).await.unwrap() {
                r.expect("report accepted");
            }
        }
        panic!("workflow did not settle in 200 rounds");
    }

    async fn view(&self, id: WorkflowId) -> WorkflowView {
        self.h.hive.get_workflow(&alice(), id).await.expect("get")
    }

    async fn input_of(&self, v: &WorkflowView, step: &str) -> Value {
        let s = v.steps.iter().find(|s| s.id == step).expect("step");
        let t = s.tasks[0];
        self.h
            .hive
            .get_task(&alice(), t)
            .await
            .expect("step task")
            .spec
            .input
            .clone()
    }
}

fn step<'a>(v: &'a WorkflowView, id: &str) -> &'a hive_core::workflow::StepView {
    v.steps.iter().find(|s| s.id == id).expect("step exists")
}

fn echo_handler(agent: &str, input: &Value) -> Option<Result<Value, TaskError>> {
    Some(match agent {
        "fail" => Err(TaskError::new("boom", "failed on purpose").non_retryable()),
        "emit" => Ok(input.clone()),
        _ => Ok(json!({ agent: true })),
    })
}

/// A fork-join: the join receives every parent's result, in declared order, in
/// each aggregation mode; failed parents stay in the aggregation.
pub async fn workflow_fork_join_aggregates_parents_in_each_mode(store: Arc<dyn Store>) {
    let f = Flow::new(store).await;
    for mode in [JoinMode::Collect, JoinMode::List, JoinMode::Merge] {
        let spec = WorkflowSpec::new(
            "fork-join",
            vec![
                StepSpec::new("root", "emit", json!({"go": 1})),
                StepSpec::new("b", "left", json!(null)).after(["root"]),
                StepSpec::new("c", "right", json!(null)).after(["root"]),
                StepSpec::new("x", "fail", json!(null)).after(["root"]),
                StepSpec::new("join", "join", json!({"mode": format!("{mode:?}")}))
                    .after(["c", "b", "x"])
                    .trigger(Trigger::AllDone)
                    .join(mode),
            ],
        );
        let id = f.submit(spec).await;
        f.run(&echo_handler).await;
        let v = f.view(id).await;
        assert_eq!(step(&v, "join").state, StepState::Succeeded, "{mode:?}");
        assert_eq!(step(&v, "x").state, StepState::Failed);
        assert_eq!(
            v.state,
            WorkflowState::Succeeded,
            "the failure was handled by the join"
        );
        let input = f.input_of(&v, "join").await;
        assert_eq!(input["input"], json!({"mode": format!("{mode:?}")}));
        let parents = &input["parents"];
        match mode {
            JoinMode::Collect => {
                let keys: Vec<&String> = parents.as_object().unwrap().keys().collect();
                assert_eq!(keys, ["c", "b", "x"], "declared order");
                assert_eq!(
                    parents["b"],
                    json!({"state": "succeeded", "output": {"left": true}})
                );
                assert_eq!(parents["c"]["output"], json!({"right": true}));
                assert_eq!(parents["x"]["state"], json!("failed"));
                assert_eq!(parents["x"]["error"]["code"], json!("boom"));
            }
            JoinMode::List => {
                let steps: Vec<&str> = parents
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["step"].as_str().unwrap())
                    .collect();
                assert_eq!(steps, ["c", "b", "x"]);
                assert_eq!(parents[1]["output"], json!({"left": true}));
                assert_eq!(parents[2]["state"], json!("failed"));
            }
            JoinMode::Merge => {
                assert_eq!(parents["left"], json!(true));
                assert_eq!(parents["right"], json!(true));
                assert_eq!(parents["not_succeeded"]["x"]["state"], json!("failed"));
            }
        }
    }
}

/// Every trigger rule fires or skips as its parents' outcomes dictate, with the
/// skip reason recorded and the workflow's outcome following its leaves.
pub async fn workflow_trigger_rules_fire_or_skip(store: Arc<dyn Store>) {
    let f = Flow::new(store).await;
    let after_ok_and_fail = |id: &str, t: Trigger| {
        StepSpec::new(id, "echo", json!(null))
            .after(["ok", "bad"])
            .trigger(t)
    };
    let spec = WorkflowSpec::new(
        "rules",
        vec![
            StepSpec::new("ok", "echo", json!(null)),
            StepSpec::new("bad", "fail", json!(null)),
            after_ok_and_fail("all_succeeded", Trigger::AllSucceeded),
            after_ok_and_fail("all_done", Trigger::AllDone),
            after_ok_and_fail("any_succeeded", Trigger::AnySucceeded),
            after_ok_and_fail("all_failed", Trigger::AllFailed),
            after_ok_and_fail("quorum1", Trigger::Quorum { min_succeeded: 1 }),
            after_ok_and_fail("quorum2", Trigger::Quorum { min_succeeded: 2 }),
            StepSpec::new("downstream", "echo", json!(null)).after(["all_succeeded"]),
        ],
    );
    let id = f.submit(spec).await;
    f.run(&echo_handler).await;
    let v = f.view(id).await;
    let expect = [
        (
            "all_succeeded",
            StepState::Skipped,
            Some(SkipReason::UpstreamFailed),
        ),
        ("all_done", StepState::Succeeded, None),
        ("any_succeeded", StepState::Succeeded, None),
        (
            "all_failed",
            StepState::Skipped,
            Some(SkipReason::NotNeeded),
        ),
        ("quorum1", StepState::Succeeded, None),
        (
            "quorum2",
            StepState::Skipped,
            Some(SkipReason::UpstreamFailed),
        ),
        (
            "downstream",
            StepState::Skipped,
            Some(SkipReason::UpstreamFailed),
        ),
    ];
    for (name, state, reason) in expect {
        let s = step(&v, name);
        assert_eq!((s.state, s.skip_reason), (state, reason), "step {name}");
        assert_eq!(
            s.tasks.is_empty(),
            state == StepState::Skipped,
            "step {name}"
        );
    }
    assert_eq!(
        v.state,
        WorkflowState::Failed,
        "a leaf was skipped by a failure"
    );

    // An error handler runs when every parent failed; the workflow succeeds.
    let spec = WorkflowSpec::new(
        "handler",
        vec![
            StepSpec::new("a", "fail", json!(null)),
            StepSpec::new("b", "fail", json!(null)),
            StepSpec::new("cleanup", "echo", json!(null))
                .after(["a", "b"])
                .trigger(Trigger::AllFailed),
        ],
    );
    let id = f.submit(spec).await;
    f.run(&echo_handler).await;
    let v = f.view(id).await;
    assert_eq!(step(&v, "cleanup").state, StepState::Succeeded);
    // The failed parents are not leaves; the handler is.
    assert_eq!(v.state, WorkflowState::Succeeded);
}

/// A quorum join fires as soon as enough parents succeeded; the unfinished
/// parent is in its input with its current state, and finishes later.
pub async fn workflow_quorum_fires_eagerly_with_unfinished_parents_in_its_input(
    store: Arc<dyn Store>,
) {
    let f = Flow::new(store).await;
    let spec = WorkflowSpec::new(
        "quorum",
        vec![
            StepSpec::new("a", "fast", json!(null)),
            StepSpec::new("b", "fast", json!(null)),
            StepSpec::new("c", "slow", json!(null)),
            StepSpec::new("q", "join", json!(null))
                .after(["a", "b", "c"])
                .trigger(Trigger::Quorum { min_succeeded: 2 }),
        ],
    );
    let id = f.submit(spec).await;
    let hold_slow = |agent: &str, input: &Value| {
        if agent == "slow" {
            None
        } else {
            echo_handler(agent, input)
        }
    };
    f.run(&hold_slow).await;
    f.run(&hold_slow).await;
    let v = f.view(id).await;
    assert_eq!(step(&v, "c").state, StepState::Running);
    assert_eq!(
        step(&v, "q").state,
        StepState::Succeeded,
        "fired before c ended"
    );
    let input = f.input_of(&v, "q").await;
    assert_eq!(input["parents"]["a"]["state"], json!("succeeded"));
    assert_eq!(input["parents"]["c"], json!({"state": "running"}));
    assert_eq!(v.state, WorkflowState::Running, "c has not ended");
    // End c (its worker went away): the workflow ends.
    let c_task = step(&v, "c").tasks[0];
    assert_eq!(f.h.state(c_task).await, TaskState::Running);
    f.h.hive
        .cancel(&alice(), c_task, "not needed")
        .await
        .unwrap();
    f.run(&echo_handler).await;
    let v = f.view(id).await;
    assert_eq!(step(&v, "c").state, StepState::Cancelled);
    assert!(v.state.is_terminal());
}

/// A map step fans out over 0, 1 and 1,000 elements; the join after it sees the
/// children's outputs in index order.
pub async fn workflow_map_fans_out_over_0_1_and_1000_elements(store: Arc<dyn Store>) {
    let f = Flow::new(store).await;
    let double = |agent: &str, input: &Value| {
        Some(match agent {
            "emit" => Ok(input.clone()),
            "double" => Ok(json!(input["item"].as_i64().unwrap_or(-1) * 2)),
            "sum" => {
                let children = &input["parents"]["each"]["output"];
                let total: i64 = children
                    .as_array()
                    .map(|a| a.iter().map(|c| c["output"].as_i64().unwrap_or(0)).sum())
                    .unwrap_or(-1);
                Ok(json!({"total": total, "n": children.as_array().map_or(0, |a| a.len())}))
            }
            other => Err(TaskError::new("unknown", other.to_string())),
        })
    };
    for n in [0usize, 1, 1000] {
        let items: Vec<i64> = (0..n as i64).collect();
        let spec = WorkflowSpec::new(
            "map",
            vec![
                StepSpec::new("src", "emit", json!({"items": items})),
                StepSpec::new("each", "double", json!(null)).map_over("src", "/items"),
                StepSpec::new("sum", "sum", json!(null))
                    .after(["each"])
                    .trigger(Trigger::AllDone),
            ],
        );
        let id = f.submit(spec).await;
        f.run(&double).await;
        let v = f.view(id).await;
        assert_eq!(v.state, WorkflowState::Succeeded, "n = {n}");
        let each = step(&v, "each");
        assert_eq!(each.tasks.len(), n);
        let out = each.output.as_ref().unwrap().as_array().unwrap();
        assert_eq!(out.len(), n);
        for (i, c) in out.iter().enumerate() {
            assert_eq!(c["index"], json!(i));
            assert_eq!(c["output"], json!(i as i64 * 2));
        }
        let total: i64 = (0..n as i64).map(|i| i * 2).sum();
        assert_eq!(
            step(&v, "sum").output,
            Some(json!({"total": total, "n": n}))
        );
    }
    // A map over something that is not a list fails the step, clearly.
    let spec = WorkflowSpec::new(
        "bad-map",
        vec![
            StepSpec::new("src", "emit", json!({"items": "nope"})),
            StepSpec::new("each", "double", json!(null)).map_over("src", "/items"),
        ],
    );
    let id = f.submit(spec).await;
    f.run(&double).await;
    let v = f.view(id).await;
    assert_eq!(step(&v, "each").state, StepState::Failed);
    assert_eq!(
        step(&v, "each").error.as_ref().unwrap().code,
        "map_input_invalid"
    );
    assert_eq!(v.state, WorkflowState::Failed);
}

/// A step's retry policy applies to its task: attempts and stored backoff.
pub async fn workflow_step_retries_follow_the_steps_policy(store: Arc<dyn Store>) {
    let f = Flow::new(store).await;
    let spec = WorkflowSpec::new(
        "retry",
        vec![
            StepSpec::new("flaky", "flaky", json!(null)).retry(RetryPolicy {
                backoff_coefficient: 3.0,
                ..RetryPolicy::attempts(3, Duration::from_secs(10))
            }),
            StepSpec::new("after", "echo", json!(null)).after(["flaky"]),
        ],
    );
    let id = f.submit(spec).await;
    let runs = AtomicUsize::new(0);
    let flaky = |agent: &str, input: &Value| {
        if agent == "flaky" && runs.fetch_add(1, Ordering::SeqCst) < 2 {
            Some(Err(TaskError::new("flaky", "not yet")))
        } else {
            echo_handler(agent, input)
        }
    };
    f.run(&flaky).await;
    assert_eq!(step(&f.view(id).await, "flaky").state, StepState::Running);
    f.h.clock.advance(Duration::from_secs(10));
    f.run(&flaky).await;
    f.h.clock.advance(Duration::from_secs(30));
    f.run(&flaky).await;
    let v = f.view(id).await;
    let s = step(&v, "flaky");
    assert_eq!(s.state, StepState::Succeeded);
    assert_eq!(s.attempts, 3);
    assert_eq!(s.tasks.len(), 1, "retries are attempts of one task");
    let delays: Vec<i64> =
        f.h.events(s.tasks[0])
            .await
            .windows(2)
            .filter_map(|w| match &w[1].kind {
                EventKind::AttemptFailed { retry_at, .. } => {
                    Some(retry_at.as_millis() - w[1].at.as_millis())
                }
                _ => None,
            })
            .collect();
    assert_eq!(delays, [10_000, 30_000]);
    assert_eq!(step(&v, "after").state, StepState::Succeeded);
    assert_eq!(v.state, WorkflowState::Succeeded);
}

/// Cancelling a workflow cancels its running steps' tasks and its waiting
/// steps, ends it `Cancelled`, and ends its event stream.
pub async fn workflow_cancel_mid_flight_cancels_running_and_waiting_steps(store: Arc<dyn Store>) {
    let f = Flow::new(store).await;
    let spec = WorkflowSpec::new(
        "cancel",
        vec![
            StepSpec::new("a", "echo", json!(null)),
            StepSpec::new("long", "slow", json!(null)).after(["a"]),
            StepSpec::new("later", "echo", json!(null)).after(["long"]),
        ],
    );
    let id = f.submit(spec).await;
    let hold = |agent: &str, input: &Value| {
        if agent == "slow" {
            None
        } else {
            echo_handler(agent, input)
        }
    };
    f.run(&hold).await;
    let v = f.view(id).await;
    assert_eq!(step(&v, "long").state, StepState::Running);
    let long_task = step(&v, "long").tasks[0];
    // Another user cannot cancel it; the owner can.
    let bob = Principal::user("acme", "bob");
    assert!(matches!(
        f.h.hive.cancel_workflow(&bob, id, "mine now").await,
        Err(Error::Forbidden { .. })
    ));
    f.h.hive
        .cancel_workflow(&alice(), id, "changed my mind")
        .await
        .unwrap();
    let v = f.view(id).await;
    assert_eq!(v.state, WorkflowState::Cancelled);
    assert_eq!(step(&v, "a").state, StepState::Succeeded);
    assert_eq!(step(&v, "long").state, StepState::Cancelled);
    assert_eq!(step(&v, "later").state, StepState::Cancelled);
    assert_eq!(f.h.state(long_task).await, TaskState::Cancelled);
    assert!(matches!(
        f.h.hive.cancel_workflow(&alice(), id, "again").await,
        Err(Error::Conflict { .. })
    ));
    let events =
        f.h.hive
            .subscribe_workflow(&alice(), id, 0)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
    assert_eq!(events.first().unwrap().kind, WorkflowEventKind::Started);
    assert_eq!(
        events.last().unwrap().kind,
        WorkflowEventKind::Finished {
            state: WorkflowState::Cancelled
        }
    );
    // Nothing runs after the cancel.
    assert_eq!(f.run(&echo_handler).await, 0);
}

/// A host that stops mid-flight and a new one on the same store: the workflow
/// resumes, and no finished step runs again.
pub async fn workflow_restart_mid_flight_resumes_without_rerunning_steps(store: Arc<dyn Store>) {
    let runs: std::sync::Mutex<BTreeMap<String, usize>> = Default::default();
    let counting = |agent: &str, input: &Value| {
        *runs.lock().unwrap().entry(agent.to_owned()).or_default() += 1;
        echo_handler(agent, input)
    };
    let spec = WorkflowSpec::new(
        "restart",
        vec![
            StepSpec::new("a", "a", json!(null)),
            StepSpec::new("b", "b", json!(null)).after(["a"]),
            StepSpec::new("c", "c", json!(null)).after(["a"]),
            StepSpec::new("j", "j", json!(null)).after(["b", "c"]),
        ],
    );
    let id = {
        let f = Flow::new(store.clone()).await;
        let id = f.submit(spec).await;
        // Run only `a`, then "crash": the engine goes away mid-flight.
        f.drive().await;
        let claimed = f.h.claim(&f.worker, f.node, 10, true).await;
        assert_eq!(claimed.len(), 1);
        let c = &claimed[0];
        let out = counting(c.spec.agent.as_str(), &c.spec.input)
            .unwrap()
            .unwrap();
        f.h.hive
            .report_success(&f.worker, c.token, out)
            .await
            .unwrap();
        f.h.hive.shutdown();
        id
    };
    let f = Flow::new(store).await;
    f.run(&counting).await;
    let v = f.view(id).await;
    assert_eq!(v.state, WorkflowState::Succeeded);
    for s in &v.steps {
        assert_eq!(s.state, StepState::Succeeded, "step {}", s.id);
        assert_eq!(s.tasks.len(), 1);
        assert_eq!(s.attempts, 1, "step {} ran once", s.id);
    }
    let runs = runs.lock().unwrap();
    assert_eq!(
        runs.values().copied().collect::<Vec<_>>(),
        [1, 1, 1, 1],
        "{runs:?}"
    );
}

/// Two engines drive the same workflows at once: every step gets exactly one
/// task (the join is decided once).
pub async fn workflow_concurrent_drivers_decide_each_step_once(store: Arc<dyn Store>) {
    let f = Flow::new(store.clone()).await;
    let other = Harness::new(store.clone());
    let width = 20;
    let mut steps = vec![StepSpec::new("root", "echo", json!(null))];
    let branches: Vec<String> = (0..width).map(|i| format!("b{i}")).collect();
    for b in &branches {
        steps.push(StepSpec::new(b.clone(), "echo", json!(null)).after(["root"]));
    }
    steps.push(
        StepSpec::new("join", "echo", json!(null))
            .after(branches.clone())
            .join(JoinMode::List),
    );
    let ids: Vec<WorkflowId> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(f.submit(WorkflowSpec::new("race", steps.clone())).await);
        }
        ids
    };
    for _ in 0..50 {
        let (a, b) = tokio::join!(
            f.h.hive.drive_workflows(&f.h.system),
            other.hive.drive_workflows(&other.system)
        );
        a.unwrap();
        b.unwrap();
        let claimed = f.h.claim(&f.worker, f.node, 5_000, true).await;
        if claimed.is_empty() {
            let v: Vec<WorkflowView> = futures_all(&f, &ids).await;
            if v.iter().all(|v| v.state.is_terminal()) {
                break;
            }
            continue;
        }
        let reports = claimed
            .into_iter()
            .map(|c| Report {
                token: c.token,
                outcome: ReportOutcome::Success { output: json!(1) },
            })
            .collect();
        f.h.hive.report(&f.worker, reports).await.unwrap();
    }
    for id in &ids {
        let v = f.view(*id).await;
        assert_eq!(v.state, WorkflowState::Succeeded);
        assert!(
            v.steps
                .iter()
                .all(|s| s.tasks.len() == 1 && s.attempts == 1)
        );
        let input = f.input_of(&v, "join").await;
        assert_eq!(input["parents"].as_array().unwrap().len(), width);
    }
    let page =
        f.h.hive
            .list_tasks(
                &alice(),
                &hive_core::task::TaskQuery {
                    limit: Some(1000),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    assert_eq!(
        page.items.len(),
        3 * (width + 2),
        "one task per step, no duplicates"
    );
}

async fn futures_all(f: &Flow, ids: &[WorkflowId]) -> Vec<WorkflowView> {
    let mut out = Vec::new();
    for id in ids {
        out.push(f.view(*id).await);
    }
    out
}

/// Query, listing, events, tenancy and idempotency of workflows.
pub async fn workflow_query_list_events_and_idempotency(store: Arc<dyn Store>) {
    let f = Flow::new(store).await;
    let mut spec = WorkflowSpec::new(
        "listed",
        vec![
            StepSpec::new("a", "echo", json!(null)),
            StepSpec::new("b", "echo", json!(null)).after(["a"]),
        ],
    );
    spec.idempotency_key = Some("nightly-2026-11-25".into());
    let first =
        f.h.hive
            .submit_workflow(&alice(), spec.clone())
            .await
            .unwrap();
    let again =
        f.h.hive
            .submit_workflow(&alice(), spec.clone())
            .await
            .unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.id, again.id);
    let other_tenant = f.h.hive.submit_workflow(&carol(), spec).await.unwrap();
    assert!(other_tenant.created && other_tenant.id != first.id);
    // Another tenant's workflow is NotFound.
    assert!(matches!(
        f.h.hive.get_workflow(&carol(), first.id).await,
        Err(Error::NotFound { .. })
    ));
    let running =
        f.h.hive
            .list_workflows(
                &alice(),
                &WorkflowQuery {
                    states: vec![WorkflowState::Running],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    assert_eq!(running.items.len(), 1);
    assert_eq!(running.items[0].id, first.id);
    // Subscribe from the snapshot's seq, run, and get the rest, ending at Finished.
    let before = f.view(first.id).await;
    let sub =
        f.h.hive
            .subscribe_workflow(&alice(), first.id, before.last_seq)
            .await
            .unwrap();
    f.run(&echo_handler).await;
    let rest = tokio::time::timeout(Duration::from_secs(30), sub.collect())
        .await
        .expect("the stream ends")
        .unwrap();
    assert_eq!(rest.first().unwrap().seq, before.last_seq + 1);
    assert!(matches!(
        rest.last().unwrap().kind,
        WorkflowEventKind::Finished {
            state: WorkflowState::Succeeded
        }
    ));
    let all =
        f.h.hive
            .subscribe_workflow(&alice(), first.id, 0)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "gapless");
    }
    assert_eq!(all.iter().filter(|e| e.kind.is_terminal()).count(), 1);
    let done =
        f.h.hive
            .list_workflows(
                &alice(),
                &WorkflowQuery {
                    states: vec![WorkflowState::Succeeded],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    assert_eq!(done.items.len(), 1);
    let v = f.view(first.id).await;
    for s in &v.steps {
        assert!(s.started_at.is_some() && s.ended_at.is_some());
        assert_eq!(s.output, Some(json!({"echo": true})));
    }
    // A bad spec is refused with the detail, and nothing is stored.
    let bad = WorkflowSpec::new(
        "bad",
        vec![StepSpec::new("a", "echo", json!(null)).after(["ghost"])],
    );
    match f.h.hive.submit_workflow(&alice(), bad).await {
        Err(Error::InvalidSpec { field, message }) => {
            assert_eq!(field, "steps.a.depends_on");
            assert!(message.contains("ghost"), "{message}");
        }
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
    let all =
        f.h.hive
            .list_workflows(&alice(), &WorkflowQuery::default())
            .await
            .unwrap();
    assert_eq!(all.items.len(), 1);
}

/// Issue 11, item 2: a cancelled workflow converges. The cancel's task
/// cancellations fail (the backend is unavailable for them, as if the process
/// had crashed right after writing the cancelled record): the workflow reads
/// `Cancelled` at once and stays listed as cancelled, its step task keeps
/// running for now, and a driver — here a new engine on the same store, as
/// after a restart — cancels the task and settles the record.
pub async fn workflow_cancel_converges_after_a_failed_task_cancel(store: Arc<dyn Store>) {
    let faulty = super::FailingApply::new(store.clone());
    let f = Flow::new(faulty.clone()).await;
    let spec = WorkflowSpec::new(
        "converge",
        vec![
            StepSpec::new("long", "slow", json!(null)),
            StepSpec::new("later", "echo", json!(null)).after(["long"]),
        ],
    );
    let id = f.submit(spec).await;
    f.run(&|agent: &str, input: &Value| {
        if agent == "slow" {
            None
        } else {
            echo_handler(agent, input)
        }
    })
    .await;
    let long_task = step(&f.view(id).await, "long").tasks[0];
    assert_eq!(f.h.state(long_task).await, TaskState::Running);

    faulty.fail(true);
    f.h.hive
        .cancel_workflow(&alice(), id, "stop")
        .await
        .expect("the cancel is recorded even if its tasks cannot be cancelled yet");
    // The driver of this engine cannot cancel it either while the backend fails.
    f.drive().await;
    assert_eq!(f.view(id).await.state, WorkflowState::Cancelled);
    assert_eq!(f.h.state(long_task).await, TaskState::Running);
    let listed =
        f.h.hive
            .list_workflows(
                &alice(),
                &WorkflowQuery {
                    states: vec![WorkflowState::Cancelled],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    assert!(
        listed.items.iter().any(|w| w.id == id),
        "listed as cancelled"
    );
    let record = store
        .get_record(hive_core::workflow::RECORD_KIND, &id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, hive_core::workflow::STATUS_CANCELLING);

    // "Restart": a new engine on the same store finds it and converges.
    let restarted = Harness::new(store.clone());
    restarted
        .hive
        .drive_workflows(&restarted.system)
        .await
        .unwrap();
    assert_eq!(restarted.state(long_task).await, TaskState::Cancelled);
    let record = store
        .get_record(hive_core::workflow::RECORD_KIND, &id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, WorkflowState::Cancelled.as_str());
    // Settled: no driver picks it up again, and nothing else ran.
    assert_eq!(
        restarted
            .hive
            .drive_workflows(&restarted.system)
            .await
            .unwrap(),
        0
    );
    let v = restarted.hive.get_workflow(&alice(), id).await.unwrap();
    assert_eq!(step(&v, "later").state, StepState::Cancelled);
    assert!(step(&v, "later").tasks.is_empty());
}

/// Issue 11, item 5: workflow idempotency keys are per tenant, whatever the
/// key's characters: tenant `a.b` with key `c` and tenant `a` with key `b:c`
/// (or `.b:c`) are separate workflows, a tenant id with a separator is refused
/// (item 6), and a key record of another tenant under a tenant's key id is
/// refused, not followed.
pub async fn workflow_idempotency_keys_do_not_collide_across_tenants(store: Arc<dyn Store>) {
    let h = Harness::new(store.clone());
    let spec = |key: &str| {
        let mut s = WorkflowSpec::new("keyed", vec![StepSpec::new("a", "echo", json!(null))]);
        s.idempotency_key = Some(key.into());
        s
    };
    let ab = Principal::user("a.b", "u");
    let a = Principal::user("a", "u");
    let first = h.hive.submit_workflow(&ab, spec("c")).await.unwrap();
    let second = h.hive.submit_workflow(&a, spec("b:c")).await.unwrap();
    let third = h.hive.submit_workflow(&a, spec(".b:c")).await.unwrap();
    assert!(first.created && second.created && third.created);
    assert_ne!(first.id, second.id);
    assert_ne!(second.id, third.id);
    assert!(matches!(
        h.hive
            .submit_workflow(&Principal::user("a:b", "u"), spec("c"))
            .await,
        Err(Error::InvalidArgument { .. })
    ));
    // The same key in the same tenant is the same workflow.
    let again = h.hive.submit_workflow(&a, spec("b:c")).await.unwrap();
    assert_eq!(again.id, second.id);
    assert!(!again.created);
    assert!(h.hive.get_workflow(&a, first.id).await.is_err());

    // A key record that another tenant owns under this tenant's id.
    let forged_for = Principal::user("globex", "u");
    let key_id = hive_core::workflow::key_record_id(&forged_for.tenant, "k");
    store
        .write_record(hive_core::store::RecordWrite {
            kind: hive_core::workflow::KEY_RECORD_KIND.into(),
            id: key_id,
            tenant: "acme".into(),
            expected_version: 0,
            status: "taken".into(),
            body: json!({ "workflow": first.id }),
            events: Vec::new(),
            now: h.clock.now(),
        })
        .await
        .unwrap();
    let e = h
        .hive
        .submit_workflow(&forged_for, spec("k"))
        .await
        .unwrap_err();
    assert!(
        !matches!(e, Error::NotFound { .. }) && e.to_string().contains("belongs to tenant"),
        "{e:?}"
    );
}

/// Issue 11, item 15: background drivers on one store split the running
/// workflows by partition instead of each driving all of them; a stopped
/// driver's partitions go to the others; and every workflow is still driven
/// to its end, whichever process holds it.
pub async fn workflow_drivers_split_partitions_across_instances(store: Arc<dyn Store>) {
    use hive_core::engine::partitions::PARTITIONS;

    let f = Flow::new(store.clone()).await;
    let mut ids = Vec::new();
    for i in 0..48 {
        let spec = WorkflowSpec::new(
            format!("w{i}"),
            vec![StepSpec::new("only", "echo", json!(i))],
        );
        ids.push(f.submit(spec).await);
    }
    let driver = || {
        Harness::with_config(store.clone(), |c| {
            c.run_workflows = true;
            c.workflow_scan = Duration::from_millis(50);
            c.workflow_poll = Duration::from_millis(20);
        })
    };
    let drivers = [driver(), driver(), driver()];
    let held = |ds: &[&Harness]| -> Vec<u32> {
        ds.iter()
            .map(|d| d.hive.workflow_driver_stats().partitions)
            .collect()
    };
    let settled = |ds: &[&Harness], share: u32| {
        let h = held(ds);
        h.iter().sum::<u32>() == PARTITIONS && h.iter().all(|&n| n <= share && n > 0)
    };
    let all: Vec<&Harness> = drivers.iter().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !settled(&all, PARTITIONS.div_ceil(3)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "three drivers never split the partitions: {:?}",
            held(&all)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each pass drives only its own share of the running workflows: once the
    // scans caught up, the three passes add up to every workflow once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let driven: Vec<u64> = all
            .iter()
            .map(|d| d.hive.workflow_driver_stats().last_driven)
            .collect();
        assert!(
            driven.iter().all(|&n| n < ids.len() as u64),
            "a driver drove every workflow: {driven:?}"
        );
        if driven.iter().sum::<u64>() == ids.len() as u64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the drivers' passes never added up to the workflows once: {driven:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One stops: the other two take its partitions.
    drivers[2].hive.shutdown();
    let two: Vec<&Harness> = drivers[..2].iter().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !settled(&two, PARTITIONS / 2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stopped driver's partitions were not taken over: {:?}",
            held(&two)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every workflow still ends: its step runs, its partition's driver sees it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let claimed = f.h.claim(&f.worker, f.node, 100, true).await;
        if !claimed.is_empty() {
            let reports = claimed
                .into_iter()
                .map(|c| Report {
                    token: c.token,
                    outcome: ReportOutcome::Success {
                        output: json!("ok"),
                    },
                })
                .collect();
            f.h.hive.report(&f.worker, reports).await.unwrap();
        }
        let views = futures_all(&f, &ids).await;
        if views.iter().all(|v| v.state == WorkflowState::Succeeded) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "workflows left unfinished: {}",
            views.iter().filter(|v| !v.state.is_terminal()).count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for d in &drivers {
        d.hive.shutdown();
    }
}
