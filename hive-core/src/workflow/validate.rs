//! Validation of a workflow spec before anything runs: every error names the
//! step and field, and says what is allowed.

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{StepSpec, Trigger, WorkflowSpec};
use crate::error::{Error, Result};
use crate::task::TaskSpec;

/// Size limits of a workflow (engine settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationLimits {
    /// The most steps in one workflow.
    pub max_steps: usize,
    /// The longest chain of dependencies (a root alone has depth 1).
    pub max_depth: usize,
    /// The most elements one map step fans out to.
    pub max_map: usize,
}

impl Default for ValidationLimits {
    fn default() -> Self {
        ValidationLimits {
            max_steps: 10_000,
            max_depth: 1_000,
            max_map: 100_000,
        }
    }
}

const MAX_ID_LEN: usize = 128;

fn err(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::InvalidSpec {
        field: field.into(),
        message: message.into(),
    }
}

/// The task spec a step's task is submitted with (before its input and keys are
/// filled in).
pub(crate) fn task_template(step: &StepSpec) -> TaskSpec {
    TaskSpec {
        agent: step.agent.clone(),
        input: serde_json::Value::Null,
        labels: step.labels.clone(),
        priority: step.priority,
        timeouts: step.timeouts.clone(),
        retry: step.retry.clone(),
        idempotency_key: None,
        not_before: None,
        delay: None,
        concurrency: step.concurrency.clone(),
        rate_limit: step.rate_limit.clone(),
    }
}

/// Checks `spec` against the rules and `limits`; on success returns the step
/// indices in a topological order (parents first, ties in declared order).
pub fn validate(spec: &WorkflowSpec, limits: &ValidationLimits) -> Result<Vec<usize>> {
    if spec.name.trim().is_empty() || spec.name.len() > 256 {
        return Err(err("name", "must be 1 to 256 characters"));
    }
    if let Some(k) = &spec.idempotency_key
        && (k.is_empty() || k.len() > TaskSpec::MAX_KEY_LEN)
    {
        return Err(err(
            "idempotency_key",
            format!("must be 1 to {} bytes", TaskSpec::MAX_KEY_LEN),
        ));
    }
    let n = spec.steps.len();
    if n == 0 {
        return Err(err("steps", "a workflow needs at least one step"));
    }
    if n > limits.max_steps {
        return Err(err(
            "steps",
            format!(
                "{n} steps; at most {} allowed (ValidationLimits::max_steps)",
                limits.max_steps
            ),
        ));
    }
    let mut index: FxHashMap<&str, usize> = FxHashMap::default();
    index.reserve(n);
    for (i, s) in spec.steps.iter().enumerate() {
        let id = s.id.as_str();
        if id.is_empty()
            || id.len() > MAX_ID_LEN
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(err(
                format!("steps[{i}].id"),
                format!("{id:?}: step ids are 1 to {MAX_ID_LEN} of A-Z a-z 0-9 _ - ."),
            ));
        }
        if let Some(first) = index.insert(id, i) {
            return Err(err(
                format!("steps.{id}"),
                format!("duplicate step id {id:?} (steps[{first}] and steps[{i}])"),
            ));
        }
    }
    let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(n, n);
    let nodes: Vec<NodeIndex> = (0..n).map(|i| graph.add_node(i)).collect();
    for (i, s) in spec.steps.iter().enumerate() {
        let field = |f: &str| format!("steps.{}.{f}", s.id);
        for (k, parent) in s.depends_on.iter().enumerate() {
            if parent == &s.id {
                return Err(err(
                    field("depends_on"),
                    format!("step {:?} depends on itself", s.id),
                ));
            }
            let Some(&p) = index.get(parent.as_str()) else {
                return Err(err(
                    field("depends_on"),
                    format!("step {:?} depends on unknown step {parent:?}", s.id),
                ));
            };
            if s.depends_on[..k].contains(parent) {
                return Err(err(
                    field("depends_on"),
                    format!("step {:?} lists {parent:?} twice", s.id),
                ));
            }
            graph.add_edge(nodes[p], nodes[i], ());
        }
        check_step(s)?;
    }
    let order = match toposort(&graph, None) {
        Ok(order) => order,
        Err(_) => {
            let cycle = tarjan_scc(&graph)
                .into_iter()
                .find(|c| c.len() > 1)
                .unwrap_or_default();
            let mut names: Vec<&str> = cycle
                .iter()
                .map(|&ix| spec.steps[graph[ix]].id.as_str())
                .collect();
            names.sort_unstable();
            return Err(err(
                "steps",
                format!("dependency cycle among steps {}", names.join(" → ")),
            ));
        }
    };
    let order: Vec<usize> = order.into_iter().map(|ix| graph[ix]).collect();
    let mut depth = vec![1usize; n];
    for &i in &order {
        let d = spec.steps[i]
            .depends_on
            .iter()
            .map(|p| depth[index[p.as_str()]] + 1)
            .max()
            .unwrap_or(1);
        depth[i] = d;
        if d > limits.max_depth {
            return Err(err(
                format!("steps.{}", spec.steps[i].id),
                format!(
                    "dependency chain of {d} steps; at most {} allowed (ValidationLimits::max_depth)",
                    limits.max_depth
                ),
            ));
        }
    }
    Ok(order)
}

fn check_step(s: &StepSpec) -> Result<()> {
    let field = |f: &str| format!("steps.{}.{f}", s.id);
    let parents = s.depends_on.len();
    // The task template: agent, labels, timeouts, retry policy.
    let mut template = task_template(s);
    template.input = serde_json::Value::Null;
    template.validate().map_err(|e| match e {
        Error::InvalidSpec { field: f, message } => err(field(&f), message),
        other => other,
    })?;
    let input_size = serde_json::to_vec(&s.input).map_or(usize::MAX, |v| v.len());
    if input_size > TaskSpec::MAX_INPUT_BYTES {
        return Err(err(
            field("input"),
            format!(
                "{input_size} bytes serialized; at most {} allowed",
                TaskSpec::MAX_INPUT_BYTES
            ),
        ));
    }
    match s.trigger {
        Trigger::AllSucceeded => {}
        _ if parents == 0 => {
            return Err(err(
                field("trigger"),
                "a trigger rule other than all_succeeded needs depends_on",
            ));
        }
        Trigger::Quorum { min_succeeded }
            if min_succeeded == 0 || min_succeeded as usize > parents =>
        {
            return Err(err(
                field("trigger"),
                format!(
                    "quorum min_succeeded must be between 1 and {parents} (the number of parents), got {min_succeeded}"
                ),
            ));
        }
        _ => {}
    }
    match &s.map {
        Some(m) => {
            if !s.depends_on.contains(&m.over) {
                return Err(err(
                    field("map.over"),
                    format!("map over {:?}, which is not in depends_on", m.over),
                ));
            }
            if !(m.path.is_empty() || m.path.starts_with('/')) {
                return Err(err(
                    field("map.path"),
                    format!(
                        "{:?} is not a JSON pointer (\"\" or starting with '/')",
                        m.path
                    ),
                ));
            }
        }
        None => {
            if let Some(mode) = s.join
                && parents < 2
            {
                return Err(err(
                    field("join"),
                    format!(
                        "join {mode:?} on a step with {parents} parent(s): a join aggregates two or more parents (or a map step's children)"
                    ),
                ));
            }
        }
    }
    Ok(())
}
