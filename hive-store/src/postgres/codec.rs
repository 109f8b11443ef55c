//! How values are stored: JSON text for documents, strings for ids and states,
//! `bigint` for times and sequence numbers.

use std::collections::BTreeMap;
use std::sync::Arc;

use hive_core::clock::Timestamp;
use hive_core::id::{NodeId, TaskId};
use hive_core::node::{Node, NodeSpec, NodeStatus};
use hive_core::task::machine::TaskCore;
use hive_core::task::{EventKind, Owner, Task, TaskSpec};
use hive_core::{Error, Result};

use super::error::{corrupt, encode, invalid_row};

/// A stored counter (seq, version, cursor) as `u64`.
pub(super) fn count(what: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| invalid_row(format!("negative {what} {v}")))
}

/// A counter or limit for a `bigint` parameter (saturating).
pub(super) fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `usize` limit for a `bigint` parameter (saturating).
pub(super) fn limit(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn task_id(s: &str) -> Result<TaskId> {
    s.parse()
        .map_err(|e: Error| invalid_row(format!("task id: {e}")))
}

pub(super) fn node_id(s: &str) -> Result<NodeId> {
    s.parse()
        .map_err(|e: Error| invalid_row(format!("node id: {e}")))
}

pub(super) fn node_status_str(s: NodeStatus) -> &'static str {
    match s {
        NodeStatus::Ready => "ready",
        NodeStatus::Draining => "draining",
        NodeStatus::Lost => "lost",
    }
}

pub(super) fn node_status(s: &str) -> Result<NodeStatus> {
    match s {
        "ready" => Ok(NodeStatus::Ready),
        "draining" => Ok(NodeStatus::Draining),
        "lost" => Ok(NodeStatus::Lost),
        other => Err(invalid_row(format!("unknown node status {other:?}"))),
    }
}

pub(super) fn encode_core(core: &TaskCore) -> Result<String> {
    serde_json::to_string(core).map_err(|e| encode("task core", e))
}

pub(super) fn decode_core(s: &str) -> Result<TaskCore> {
    serde_json::from_str(s).map_err(|e| corrupt("task core", e))
}

/// The spec without its input: what transitions read, kept apart from a
/// possibly large input. A struct literal on purpose: a new `TaskSpec` field
/// fails to compile here instead of silently not being stored.
pub(super) fn encode_spec_meta(spec: &TaskSpec) -> Result<String> {
    let meta = TaskSpec {
        agent: spec.agent.clone(),
        input: serde_json::Value::Null,
        labels: spec.labels.clone(),
        priority: spec.priority,
        timeouts: spec.timeouts.clone(),
        retry: spec.retry.clone(),
        idempotency_key: spec.idempotency_key.clone(),
        not_before: spec.not_before,
        delay: spec.delay,
        concurrency: spec.concurrency.clone(),
        rate_limit: spec.rate_limit.clone(),
    };
    serde_json::to_string(&meta).map_err(|e| encode("task spec", e))
}

pub(super) fn encode_input(spec: &TaskSpec) -> Result<String> {
    serde_json::to_string(&spec.input).map_err(|e| encode("task input", e))
}

/// A spec from its stored parts (without input when `input` is `None`).
pub(super) fn decode_spec(meta: &str, input: Option<&str>) -> Result<TaskSpec> {
    let mut spec: TaskSpec = serde_json::from_str(meta).map_err(|e| corrupt("task spec", e))?;
    if let Some(input) = input {
        spec.input = serde_json::from_str(input).map_err(|e| corrupt("task input", e))?;
    }
    Ok(spec)
}

pub(super) fn encode_labels(labels: &BTreeMap<String, String>) -> Result<String> {
    serde_json::to_string(labels).map_err(|e| encode("labels", e))
}

pub(super) fn encode_event(kind: &EventKind) -> Result<String> {
    serde_json::to_string(kind).map_err(|e| encode("event", e))
}

pub(super) fn decode_event(s: &str) -> Result<EventKind> {
    serde_json::from_str(s).map_err(|e| corrupt("event", e))
}

pub(super) fn encode_node_spec(spec: &NodeSpec) -> Result<String> {
    serde_json::to_string(spec).map_err(|e| encode("node spec", e))
}

pub(super) fn decode_node_spec(s: &str) -> Result<NodeSpec> {
    serde_json::from_str(s).map_err(|e| corrupt("node spec", e))
}

pub(super) fn encode_value(what: &str, v: &serde_json::Value) -> Result<String> {
    serde_json::to_string(v).map_err(|e| encode(what, e))
}

pub(super) fn decode_value(what: &str, s: &str) -> Result<serde_json::Value> {
    serde_json::from_str(s).map_err(|e| corrupt(what, e))
}

/// The columns a task snapshot is read from (a literal, for `concat!`).
macro_rules! task_columns {
    () => {
        "id::text, tenant, principal, created_at, spec::text, input::text, core::text"
    };
}
pub(super) use task_columns;

/// A row of [`task_columns!`].
pub(super) type TaskRow = (String, String, String, i64, String, String, String);

pub(super) fn task(row: TaskRow) -> Result<Task> {
    let (id, tenant, principal, created_at, spec, input, core) = row;
    let core = decode_core(&core)?;
    Ok(Task {
        id: task_id(&id)?,
        owner: Owner {
            tenant: tenant.into(),
            principal: principal.into(),
        },
        spec: Arc::new(decode_spec(&spec, Some(&input))?),
        state: core.state,
        attempt: core.attempt,
        node: core.node,
        last_seq: core.last_seq,
        created_at: Timestamp::from_millis(created_at),
        updated_at: core.updated_at,
        available_at: core.available_at,
        output: core.output,
        error: core.error,
    })
}

/// The columns a node is read from, `in_flight` counted from the leases (a
/// literal, for `concat!`).
macro_rules! node_columns {
    () => {
        "nodes.id::text, nodes.spec::text, nodes.status, nodes.registered_at, nodes.last_seen, \
         (SELECT count(*) FROM tasks t WHERE t.lease_node = nodes.id)"
    };
}
pub(super) use node_columns;

/// A row of [`node_columns!`].
pub(super) type NodeRow = (String, String, String, i64, i64, i64);

pub(super) fn node(row: NodeRow) -> Result<Node> {
    let (id, spec, status, registered_at, last_seen, in_flight) = row;
    Ok(Node {
        id: node_id(&id)?,
        spec: decode_node_spec(&spec)?,
        status: node_status(&status)?,
        in_flight: u32::try_from(in_flight).unwrap_or(u32::MAX),
        registered_at: Timestamp::from_millis(registered_at),
        last_seen: Timestamp::from_millis(last_seen),
    })
}
