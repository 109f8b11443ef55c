//! The workflow driver's decisions, as one pure function: given a workflow's
//! stored record and snapshots of its tasks, what changes, which tasks to
//! submit (or resubmit) and which to cancel. The engine applies a plan with one
//! compare-and-set write of the record, then submits; any process may compute
//! the same plan, and only one write wins.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::validate::task_template;
use super::{
    JoinMode, SkipReason, StepRecord, StepSpec, StepState, Trigger, ValidationLimits,
    WorkflowEventKind, WorkflowRecord, WorkflowState,
};
use crate::clock::Timestamp;
use crate::id::TaskId;
use crate::store::NewTask;
use crate::task::{Task, TaskError, TaskSpec};

/// What one pass of the driver decided.
#[derive(Debug, Default)]
pub struct Plan {
    /// Whether the record changed (and must be written back).
    pub changed: bool,
    /// Events to append with the write.
    pub events: Vec<WorkflowEventKind>,
    /// Tasks to submit, after the write succeeded. Ids and idempotency keys are
    /// fixed in the record, so submitting twice is harmless.
    pub submit: Vec<NewTask>,
    /// Tasks to cancel (the workflow was cancelled).
    pub cancel: Vec<TaskId>,
}

/// The idempotency key of a step's task (`index` for a map child).
pub fn task_key(record: &WorkflowRecord, step: &str, index: Option<usize>) -> String {
    match index {
        Some(i) => format!("hive:wf:{}:{step}:{i}", record.id),
        None => format!("hive:wf:{}:{step}", record.id),
    }
}

/// Decides one pass over `record` (updated in place). `tasks` holds snapshots of
/// the tasks of its running steps; a recorded task that is missing from it was
/// never submitted (a crash between the write and the submit) and is submitted
/// again.
pub fn plan(
    record: &mut WorkflowRecord,
    tasks: &FxHashMap<TaskId, Task>,
    limits: &ValidationLimits,
    now: Timestamp,
) -> Plan {
    let mut out = Plan::default();
    if record.state.is_terminal() {
        if record.state == WorkflowState::Cancelled {
            for s in &record.steps {
                for t in &s.tasks {
                    if tasks.get(t).is_some_and(|t| !t.state.is_terminal()) {
                        out.cancel.push(*t);
                    }
                }
            }
        }
        return out;
    }
    // 1. Running steps: collect what their tasks did.
    for i in 0..record.steps.len() {
        if record.steps[i].state == StepState::Running {
            observe(record, i, tasks, limits, now, &mut out);
        }
    }
    // 2. Waiting steps, parents first: fire or skip what is decided.
    let index: FxHashMap<String, usize> = record
        .spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    let order = record.order.clone();
    for i in order {
        if record.steps[i].state != StepState::Waiting {
            continue;
        }
        let parents: Vec<usize> = record.spec.steps[i]
            .depends_on
            .iter()
            .filter_map(|p| index.get(p.as_str()).copied())
            .collect();
        match decide(&record.spec.steps[i].trigger, &parents, &record.steps) {
            Decision::Wait => {}
            Decision::Skip(reason) => {
                let s = &mut record.steps[i];
                s.state = StepState::Skipped;
                s.skip_reason = Some(reason);
                s.ended_at = Some(now);
                out.changed = true;
                out.events.push(step_event(&record.spec.steps[i], s));
            }
            Decision::Fire => fire(record, i, &parents, limits, now, &mut out),
        }
    }
    // 3. The end.
    if record.steps.iter().all(|s| s.state.is_terminal()) {
        let mut has_child = vec![false; record.steps.len()];
        for s in &record.spec.steps {
            for p in &s.depends_on {
                if let Some(&pi) = index.get(p.as_str()) {
                    has_child[pi] = true;
                }
            }
        }
        let ok = record.steps.iter().enumerate().all(|(i, s)| {
            has_child[i]
                || s.state == StepState::Succeeded
                || (s.state == StepState::Skipped && s.skip_reason == Some(SkipReason::NotNeeded))
        });
        record.state = if ok {
            WorkflowState::Succeeded
        } else {
            WorkflowState::Failed
        };
        record.ended_at = Some(now);
        out.changed = true;
        out.events.push(WorkflowEventKind::Finished {
            state: record.state,
        });
    }
    out
}

fn step_event(spec: &StepSpec, s: &StepRecord) -> WorkflowEventKind {
    WorkflowEventKind::Step {
        step: spec.id.clone(),
        state: s.state,
        tasks: if s.state == StepState::Running {
            s.tasks.clone()
        } else {
            Vec::new()
        },
    }
}

/// Updates a running step from its tasks' snapshots.
fn observe(
    record: &mut WorkflowRecord,
    i: usize,
    tasks: &FxHashMap<TaskId, Task>,
    limits: &ValidationLimits,
    now: Timestamp,
    out: &mut Plan,
) {
    let spec = &record.spec.steps[i];
    let step = &record.steps[i];
    let mut all_ended = true;
    for (k, id) in step.tasks.iter().enumerate() {
        match tasks.get(id) {
            Some(t) => all_ended &= t.state.is_terminal(),
            None => {
                all_ended = false;
                let input = if spec.map.is_some() {
                    match map_items(record, i, limits) {
                        Ok(items) => child_input(spec, items.get(k).cloned(), k),
                        Err(_) => continue,
                    }
                } else {
                    step.input.clone().unwrap_or_default()
                };
                let key = task_key(record, &spec.id, spec.map.as_ref().map(|_| k));
                out.submit.push(new_task(record, spec, *id, input, key));
            }
        }
    }
    if !all_ended {
        return;
    }
    let spec = &record.spec.steps[i];
    let snaps: Vec<&Task> = record.steps[i]
        .tasks
        .iter()
        .filter_map(|id| tasks.get(id))
        .collect();
    let s = &mut record.steps[i];
    if spec.map.is_some() {
        let mode = spec.join.unwrap_or(JoinMode::List);
        let entries: Vec<(String, serde_json::Value, bool)> = snaps
            .iter()
            .enumerate()
            .map(|(k, t)| {
                (
                    k.to_string(),
                    task_result(t),
                    t.state == crate::task::TaskState::Succeeded,
                )
            })
            .collect();
        let failed = entries.iter().filter(|e| !e.2).count();
        let agg = aggregate(mode, &entries, "index");
        if failed == 0 {
            s.state = StepState::Succeeded;
            s.output = Some(agg);
        } else {
            s.state = StepState::Failed;
            s.error = Some(
                TaskError::new(
                    "map_failed",
                    format!("{failed} of {} map children did not succeed", entries.len()),
                )
                .with_details(agg),
            );
        }
    } else if let Some(t) = snaps.first() {
        s.state = StepState::from_task(t.state);
        s.output = t.output.clone();
        s.error = t.error.clone();
        if s.state == StepState::TimedOut && s.error.is_none() {
            s.error = Some(TaskError::new("timeout", "the step's task timed out"));
        }
    }
    s.ended_at = Some(now);
    out.changed = true;
    out.events.push(step_event(spec, s));
}

fn task_result(t: &Task) -> serde_json::Value {
    let state = StepState::from_task(t.state);
    let mut m = serde_json::Map::new();
    m.insert("state".into(), state.as_str().into());
    if let Some(o) = &t.output {
        m.insert("output".into(), o.clone());
    }
    if state != StepState::Succeeded
        && let Some(e) = &t.error
    {
        m.insert(
            "error".into(),
            serde_json::to_value(e).unwrap_or(serde_json::Value::Null),
        );
    }
    serde_json::Value::Object(m)
}

fn step_result(s: &StepRecord) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("state".into(), s.state.as_str().into());
    if let Some(o) = &s.output {
        m.insert("output".into(), o.clone());
    }
    if let Some(e) = &s.error {
        m.insert(
            "error".into(),
            serde_json::to_value(e).unwrap_or(serde_json::Value::Null),
        );
    }
    if let Some(r) = s.skip_reason {
        m.insert(
            "reason".into(),
            serde_json::to_value(r).unwrap_or(serde_json::Value::Null),
        );
    }
    serde_json::Value::Object(m)
}

/// Aggregates `(key, result, succeeded)` entries: `collect` → object by key,
/// `list` → array with the key under `key_name`, `merge` → shallow merge of the
/// succeeded outputs plus `not_succeeded`.
fn aggregate(
    mode: JoinMode,
    entries: &[(String, serde_json::Value, bool)],
    key_name: &str,
) -> serde_json::Value {
    match mode {
        JoinMode::Collect => serde_json::Value::Object(
            entries
                .iter()
                .map(|(k, v, _)| (k.clone(), v.clone()))
                .collect(),
        ),
        JoinMode::List => serde_json::Value::Array(
            entries
                .iter()
                .map(|(k, v, _)| {
                    let mut m = serde_json::Map::new();
                    let key = match key_name {
                        "index" => k
                            .parse::<u64>()
                            .map(serde_json::Value::from)
                            .unwrap_or_else(|_| k.clone().into()),
                        _ => k.clone().into(),
                    };
                    m.insert(key_name.into(), key);
                    if let serde_json::Value::Object(o) = v {
                        m.extend(o.clone());
                    }
                    serde_json::Value::Object(m)
                })
                .collect(),
        ),
        JoinMode::Merge => {
            let mut merged = serde_json::Map::new();
            let mut rest = serde_json::Map::new();
            for (k, v, ok) in entries {
                match (ok, v.get("output")) {
                    (true, Some(serde_json::Value::Object(o))) => merged.extend(o.clone()),
                    (true, _) => {}
                    (false, _) => {
                        rest.insert(k.clone(), v.clone());
                    }
                }
            }
            if !rest.is_empty() {
                merged.insert("not_succeeded".into(), serde_json::Value::Object(rest));
            }
            serde_json::Value::Object(merged)
        }
    }
}

enum Decision {
    Wait,
    Fire,
    Skip(SkipReason),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Succeeded,
    Failed,
    NotNeeded,
    Pending,
}

fn class(s: &StepRecord) -> Class {
    match s.state {
        StepState::Waiting | StepState::Running => Class::Pending,
        StepState::Succeeded => Class::Succeeded,
        StepState::Failed | StepState::Cancelled | StepState::TimedOut => Class::Failed,
        StepState::Skipped => match s.skip_reason {
            Some(SkipReason::NotNeeded) => Class::NotNeeded,
            _ => Class::Failed,
        },
    }
}

fn decide(trigger: &Trigger, parents: &[usize], steps: &[StepRecord]) -> Decision {
    if parents.is_empty() {
        return Decision::Fire;
    }
    let count = |c: Class| parents.iter().filter(|&&p| class(&steps[p]) == c).count();
    let (ok, failed, benign, pending) = (
        count(Class::Succeeded),
        count(Class::Failed),
        count(Class::NotNeeded),
        count(Class::Pending),
    );
    let unmet = || {
        if failed > 0 {
            SkipReason::UpstreamFailed
        } else {
            SkipReason::NotNeeded
        }
    };
    match *trigger {
        Trigger::AllSucceeded => {
            if failed > 0 {
                Decision::Skip(SkipReason::UpstreamFailed)
            } else if benign > 0 {
                Decision::Skip(SkipReason::NotNeeded)
            } else if pending == 0 {
                Decision::Fire
            } else {
                Decision::Wait
            }
        }
        Trigger::AllDone => {
            if pending == 0 {
                Decision::Fire
            } else {
                Decision::Wait
            }
        }
        Trigger::AnySucceeded => {
            if ok > 0 {
                Decision::Fire
            } else if pending == 0 {
                Decision::Skip(unmet())
            } else {
                Decision::Wait
            }
        }
        Trigger::AllFailed => {
            if ok > 0 || benign > 0 {
                Decision::Skip(SkipReason::NotNeeded)
            } else if pending == 0 {
                Decision::Fire
            } else {
                Decision::Wait
            }
        }
        Trigger::Quorum { min_succeeded } => {
            let min = min_succeeded as usize;
            if ok >= min {
                Decision::Fire
            } else if ok + pending < min {
                Decision::Skip(unmet())
            } else {
                Decision::Wait
            }
        }
    }
}

fn fire(
    record: &mut WorkflowRecord,
    i: usize,
    parents: &[usize],
    limits: &ValidationLimits,
    now: Timestamp,
    out: &mut Plan,
) {
    out.changed = true;
    let spec = record.spec.steps[i].clone();
    if spec.map.is_some() {
        let items = match map_items(record, i, limits) {
            Ok(items) => items,
            Err(error) => {
                let s = &mut record.steps[i];
                s.state = StepState::Failed;
                s.error = Some(*error);
                s.started_at = Some(now);
                s.ended_at = Some(now);
                out.events.push(step_event(&spec, s));
                return;
            }
        };
        let ids: Vec<TaskId> = items.iter().map(|_| TaskId::new()).collect();
        for (k, (id, item)) in ids.iter().zip(items).enumerate() {
            let key = task_key(record, &spec.id, Some(k));
            let input = child_input(&spec, Some(item), k);
            out.submit.push(new_task(record, &spec, *id, input, key));
        }
        let s = &mut record.steps[i];
        s.started_at = Some(now);
        if ids.is_empty() {
            s.state = StepState::Succeeded;
            s.output = Some(aggregate(spec.join.unwrap_or(JoinMode::List), &[], "index"));
            s.ended_at = Some(now);
        } else {
            s.state = StepState::Running;
            s.tasks = ids;
        }
        out.events.push(step_event(&spec, s));
        return;
    }
    let input = if parents.is_empty() {
        spec.input.clone()
    } else {
        let entries: Vec<(String, serde_json::Value, bool)> = parents
            .iter()
            .map(|&p| {
                let s = &record.steps[p];
                (
                    record.spec.steps[p].id.clone(),
                    step_result(s),
                    s.state == StepState::Succeeded,
                )
            })
            .collect();
        serde_json::json!({
            "input": spec.input,
            "parents": aggregate(spec.join.unwrap_or(JoinMode::Collect), &entries, "step"),
        })
    };
    let id = TaskId::new();
    let key = task_key(record, &spec.id, None);
    out.submit
        .push(new_task(record, &spec, id, input.clone(), key));
    let s = &mut record.steps[i];
    s.state = StepState::Running;
    s.tasks = vec![id];
    s.input = Some(input);
    s.started_at = Some(now);
    out.events.push(step_event(&spec, s));
}

/// The list a map step fans out over, from its parent's recorded output.
fn map_items(
    record: &WorkflowRecord,
    i: usize,
    limits: &ValidationLimits,
) -> Result<Vec<serde_json::Value>, Box<TaskError>> {
    let spec = &record.spec.steps[i];
    let Some(m) = &spec.map else {
        return Ok(Vec::new());
    };
    let parent = record
        .spec
        .steps
        .iter()
        .position(|s| s.id == m.over)
        .and_then(|p| record.steps[p].output.as_ref());
    let list = parent.and_then(|o| o.pointer(&m.path));
    match list {
        Some(serde_json::Value::Array(items)) if items.len() <= limits.max_map => Ok(items.clone()),
        Some(serde_json::Value::Array(items)) => Err(Box::new(
            TaskError::new(
                "map_too_large",
                format!(
                    "map over {} elements; at most {} allowed",
                    items.len(),
                    limits.max_map
                ),
            )
            .non_retryable(),
        )),
        other => Err(Box::new(
            TaskError::new(
                "map_input_invalid",
                format!(
                    "step {:?} maps over {:?} at {:?}, which is {}, not a list",
                    spec.id,
                    m.over,
                    m.path,
                    match other {
                        None => "missing",
                        Some(serde_json::Value::Object(_)) => "an object",
                        Some(serde_json::Value::String(_)) => "a string",
                        Some(_) => "a scalar",
                    }
                ),
            )
            .non_retryable(),
        )),
    }
}

fn child_input(
    spec: &StepSpec,
    item: Option<serde_json::Value>,
    index: usize,
) -> serde_json::Value {
    serde_json::json!({
        "input": spec.input,
        "item": item.unwrap_or_default(),
        "index": index,
    })
}

fn new_task(
    record: &WorkflowRecord,
    spec: &StepSpec,
    id: TaskId,
    input: serde_json::Value,
    key: String,
) -> NewTask {
    let mut task: TaskSpec = TaskSpec {
        input,
        idempotency_key: Some(key),
        not_before: None,
        delay: None,
        ..task_template(spec)
    };
    if task.resolve_concurrency().is_err() {
        // A pointer names nothing in this task's input: the pointer text is
        // the key (documented on `StepSpec::concurrency`).
        if let Some(c) = task.concurrency.as_mut()
            && c.key.is_none()
        {
            c.key = c.key_from.clone();
        }
        if let Some(r) = task.rate_limit.as_mut()
            && r.key.is_none()
        {
            r.key = r.key_from.clone();
        }
    }
    NewTask {
        id,
        owner: record.owner.clone(),
        spec: Arc::new(task),
    }
}
