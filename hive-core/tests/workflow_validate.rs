//! Workflow specs are validated before anything runs; each bad spec gets its own
//! typed error naming the step and the field, with a message a person can act on.

use std::time::Duration;

use hive_core::workflow::{JoinMode, StepSpec, Trigger, ValidationLimits, WorkflowSpec, validate};
use hive_core::{Error, RetryPolicy};
use serde_json::json;

fn s(id: &str) -> StepSpec {
    StepSpec::new(id, "echo", json!(null))
}

fn refused(spec: WorkflowSpec, limits: ValidationLimits) -> (String, String) {
    match validate(&spec, &limits) {
        Err(Error::InvalidSpec { field, message }) => (field, message),
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
}

fn check(steps: Vec<StepSpec>, field: &str, needles: &[&str]) {
    let (f, m) = refused(WorkflowSpec::new("w", steps), ValidationLimits::default());
    assert_eq!(f, field, "{m}");
    for n in needles {
        assert!(m.contains(n), "{m:?} should mention {n:?}");
    }
}

#[test]
fn an_empty_workflow_is_refused() {
    check(vec![], "steps", &["at least one step"]);
}

#[test]
fn duplicate_step_ids_are_refused() {
    check(
        vec![s("a"), s("b"), s("a")],
        "steps.a",
        &["duplicate", "steps[0]", "steps[2]"],
    );
}

#[test]
fn an_unknown_dependency_is_named() {
    check(
        vec![s("a"), s("b").after(["ghost"])],
        "steps.b.depends_on",
        &["ghost"],
    );
}

#[test]
fn a_self_dependency_is_refused() {
    check(vec![s("a").after(["a"])], "steps.a.depends_on", &["itself"]);
}

#[test]
fn a_cycle_names_its_steps() {
    let (f, m) = refused(
        WorkflowSpec::new(
            "w",
            vec![
                s("root"),
                s("x").after(["root", "z"]),
                s("y").after(["x"]),
                s("z").after(["y"]),
                s("leaf").after(["z"]),
            ],
        ),
        ValidationLimits::default(),
    );
    assert_eq!(f, "steps");
    assert!(m.contains("cycle"), "{m}");
    for step in ["x", "y", "z"] {
        assert!(m.contains(step), "{m} should name {step}");
    }
    assert!(
        !m.contains("root") && !m.contains("leaf"),
        "only the cycle: {m}"
    );
}

#[test]
fn too_many_steps_and_too_deep_chains_are_refused_per_limits() {
    let limits = ValidationLimits {
        max_steps: 3,
        max_depth: 2,
        ..ValidationLimits::default()
    };
    let (f, m) = refused(
        WorkflowSpec::new("w", vec![s("a"), s("b"), s("c"), s("d")]),
        limits,
    );
    assert_eq!(f, "steps");
    assert!(m.contains("at most 3"), "{m}");
    let (f, m) = refused(
        WorkflowSpec::new("w", vec![s("a"), s("b").after(["a"]), s("c").after(["b"])]),
        limits,
    );
    assert_eq!(f, "steps.c");
    assert!(m.contains("at most 2"), "{m}");
}

#[test]
fn an_invalid_retry_policy_names_the_step_and_field() {
    let bad = RetryPolicy {
        backoff_coefficient: 0.5,
        ..RetryPolicy::attempts(3, Duration::from_secs(1))
    };
    check(
        vec![s("a").retry(bad)],
        "steps.a.retry.backoff_coefficient",
        &["≥ 1", "0.5"],
    );
}

#[test]
fn a_join_mode_on_a_single_parent_is_refused() {
    check(
        vec![s("a"), s("b").after(["a"]).join(JoinMode::Merge)],
        "steps.b.join",
        &["1 parent"],
    );
    // On two parents, or on a map step, it is fine.
    let ok = WorkflowSpec::new(
        "w",
        vec![
            s("a"),
            s("b"),
            s("j").after(["a", "b"]).join(JoinMode::Merge),
            s("m").map_over("a", "/items").join(JoinMode::Collect),
        ],
    );
    assert!(validate(&ok, &ValidationLimits::default()).is_ok());
}

#[test]
fn trigger_rules_are_checked_against_the_parents() {
    check(
        vec![s("a").trigger(Trigger::AllDone)],
        "steps.a.trigger",
        &["needs depends_on"],
    );
    check(
        vec![
            s("a"),
            s("b"),
            s("q")
                .after(["a", "b"])
                .trigger(Trigger::Quorum { min_succeeded: 3 }),
        ],
        "steps.q.trigger",
        &["between 1 and 2", "3"],
    );
    check(
        vec![
            s("a"),
            s("q")
                .after(["a"])
                .trigger(Trigger::Quorum { min_succeeded: 0 }),
        ],
        "steps.q.trigger",
        &["got 0"],
    );
}

#[test]
fn map_steps_must_map_over_a_parent_with_a_pointer() {
    let mut m = s("m").after(["a"]);
    m.map = Some(hive_core::workflow::MapSpec {
        over: "b".into(),
        path: "/items".into(),
    });
    check(
        vec![s("a"), s("b"), m],
        "steps.m.map.over",
        &["\"b\"", "depends_on"],
    );
    check(
        vec![s("a"), s("m").map_over("a", "items")],
        "steps.m.map.path",
        &["JSON pointer"],
    );
}

#[test]
fn bad_ids_agents_and_names_are_refused() {
    check(vec![s("has space")], "steps[0].id", &["has space"]);
    check(
        vec![StepSpec::new("a", "", json!(null))],
        "steps.a.agent",
        &["empty"],
    );
    let (f, _) = refused(
        WorkflowSpec::new(" ", vec![s("a")]),
        ValidationLimits::default(),
    );
    assert_eq!(f, "name");
}

#[test]
fn the_order_puts_parents_first() {
    let spec = WorkflowSpec::new("w", vec![s("c").after(["b"]), s("b").after(["a"]), s("a")]);
    let order = validate(&spec, &ValidationLimits::default()).unwrap();
    assert_eq!(order, vec![2, 1, 0]);
}

#[test]
fn specs_round_trip_through_json_and_unknown_fields_are_refused() {
    let json = json!({
        "name": "etl",
        "steps": [
            {"id": "fetch", "agent": "fetch", "input": {"url": "u"}},
            {"id": "each", "agent": "p", "depends_on": ["fetch"], "map": {"over": "fetch", "path": "/pages"}},
            {"id": "q", "agent": "j", "depends_on": ["fetch", "each"],
             "trigger": {"quorum": {"min_succeeded": 1}}, "join": "list",
             "retry": {"max_attempts": 5, "initial_interval": "2s", "placement": "avoid_previous_node"}}
        ]
    });
    let spec: WorkflowSpec = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(spec.steps[2].trigger, Trigger::Quorum { min_succeeded: 1 });
    assert!(validate(&spec, &ValidationLimits::default()).is_ok());
    let back = serde_json::to_value(&spec).unwrap();
    let again: WorkflowSpec = serde_json::from_value(back).unwrap();
    assert_eq!(again, spec);
    let mut typo = json;
    typo["steps"][0]["dependz_on"] = json!(["x"]);
    assert!(serde_json::from_value::<WorkflowSpec>(typo).is_err());
}
