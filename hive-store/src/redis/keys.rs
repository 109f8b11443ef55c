//! The key layout. Every key and channel starts with `PREFIX:`; free-form parts
//! (tenants, consumers, record kinds and ids) are escaped so that no `:` inside
//! them can make two different names meet.
//!
//! | key | type | what |
//! |-----|------|------|
//! | `t:{task}` | hash | a task, every value at most 64 bytes so that the hash keeps Redis's small (listpack) encoding (forms in `codec.rs`): `ten` tenant; `x` = `{created} {spec id} {key length or -} {idempotency key}{principal}`; `in` input (JSON); `c` core (binary: state, attempt, seq, available/updated times, node, avoided node, lease); `r` last accepted report (binary); `o` output, `err` error (JSON; missing or empty: none); `seq`, `state` (for scripts); `q`, `prio`, `qm` ready queue, priority, queue member; `avoid` avoided node; events `e{seq}` = `{at} {kind}`. A longer value is stored as `~{name}`: a redirect to field `name` of `tx:{task}` |
//! | `tx:{task}` | hash | the task's long values, each written once under a name of its own (`in1`, `x1`, `{field}{seq}`, `e{seq}`) and never changed, so that a redirect read earlier always finds its value |
//! | `spec:{id}` | string | a spec (JSON, without input and idempotency key) under its content id (FNV-1a 128 of the JSON, as hex; `-{n}` appended when a different spec holds the id), written once (`SET NX`) and shared by every task with that spec |
//! | `tl:{tenant}` | zset | the tenant's task ids (lexical order = creation order) |
//! | `idem:{tenant}` | hash | idempotency key → task id |
//! | `q:{queue}` | zset | a ready queue: score −priority, member `{order:016}{task}` |
//! | `qmeta` / `qready` / `order` | hash / set / counter | queue owner, agent and labels; non-empty queues; the enqueue counter |
//! | `delayed` | zset | pending tasks waiting for their backoff, by time |
//! | `dl` | zset | every non-terminal task with a deadline, by time |
//! | `f:{tenant}` | list | the tenant feed: entry `cursor − 1 − fo` is `{task} {seq} {at} {kind}` |
//! | `fo:{tenant}` | string | feed entries trimmed by retention (the floor is this + 1) |
//! | `tenants` | set | the tenants that submitted tasks (what retention walks) |
//! | `term:{tenant}` | zset | terminal events: task → cursor |
//! | `cf:{tenant}` / `cu:{tenant}:{consumer}` / `ca:{tenant}:{consumer}` | hash / zset / set | consumers' marks (terminal events taken in up to this cursor); unacknowledged tasks at or below the mark, by cursor; tasks acknowledged above the mark |
//! | `n:{node}` / `nodes` / `seen` | hash / set / zset | a node; every node; nodes not Lost by last seen |
//! | `nl:{node}` | hash | the node's leases: task → lease id (`in_flight` is its length) |
//! | `reclaim` | hash | leases of lost or removed nodes still to end: task → `node\|lease` |
//! | `rsv:{claim}` / `rsvs` | string / zset | the queue members (`{order:016}{task}`, space-separated) reserved by a claim in progress; claims by start time |
//! | `work` | counter | the work epoch |
//! | `format` | string | the data format version ([`super::FORMAT_VERSION`]); checked at connect |
//! | `r:{kind}:{id}` / `re:{kind}:{id}` / `ri:{kind}` | hash / stream / zset | a record; its events; the kind's ids |
//!
//! An event `{kind}` is `q` (queued), `s {node}` (scheduled), `r {node}
//! {attempt}` (started), `h {node} {attempt}` (a heartbeat without progress), or
//! else the kind's JSON.
//!
//! Channels: `ch:work` (epoch), `ch:tasks` (ids of tasks with new events),
//! `ch:f:{tenant}` (feed cursor), `ch:r:{kind}:{id}` (record seq).

use hive_core::id::{NodeId, TaskId};

/// Escapes a free-form key part: `%` and `:` are percent-encoded.
pub(super) fn esc(s: &str) -> String {
    if !s.contains(['%', ':']) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    out
}

/// Builds the keys of one store.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    /// The prefix without the colon.
    pub(super) prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    fn k(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}:{}", self.prefix, rest)
    }

    pub(super) fn task(&self, id: TaskId) -> String {
        self.k(format_args!("t:{id}"))
    }

    pub(super) fn task_side(&self, id: TaskId) -> String {
        self.k(format_args!("tx:{id}"))
    }

    pub(super) fn spec(&self, id: &str) -> String {
        self.k(format_args!("spec:{id}"))
    }

    pub(super) fn tenant_tasks(&self, et: &str) -> String {
        self.k(format_args!("tl:{et}"))
    }

    pub(super) fn feed(&self, et: &str) -> String {
        self.k(format_args!("f:{et}"))
    }

    pub(super) fn queue(&self, q: &str) -> String {
        self.k(format_args!("q:{q}"))
    }

    pub(super) fn queue_meta(&self) -> String {
        self.k(format_args!("qmeta"))
    }

    pub(super) fn queues_ready(&self) -> String {
        self.k(format_args!("qready"))
    }

    pub(super) fn tenants(&self) -> String {
        self.k(format_args!("tenants"))
    }

    pub(super) fn feed_trimmed(&self, et: &str) -> String {
        self.k(format_args!("fo:{et}"))
    }

    pub(super) fn delayed(&self) -> String {
        self.k(format_args!("delayed"))
    }

    pub(super) fn order(&self) -> String {
        self.k(format_args!("order"))
    }

    pub(super) fn node(&self, id: NodeId) -> String {
        self.k(format_args!("n:{id}"))
    }

    pub(super) fn node_leases(&self, id: NodeId) -> String {
        self.k(format_args!("nl:{id}"))
    }

    pub(super) fn nodes(&self) -> String {
        self.k(format_args!("nodes"))
    }

    pub(super) fn deadlines(&self) -> String {
        self.k(format_args!("dl"))
    }

    pub(super) fn work(&self) -> String {
        self.k(format_args!("work"))
    }

    pub(super) fn record(&self, ek: &str, eid: &str) -> String {
        self.k(format_args!("r:{ek}:{eid}"))
    }

    pub(super) fn record_events(&self, ek: &str, eid: &str) -> String {
        self.k(format_args!("re:{ek}:{eid}"))
    }

    pub(super) fn channel_work(&self) -> String {
        self.k(format_args!("ch:work"))
    }

    pub(super) fn channel_tasks(&self) -> String {
        self.k(format_args!("ch:tasks"))
    }

    pub(super) fn channel_feed(&self, et: &str) -> String {
        self.k(format_args!("ch:f:{et}"))
    }

    pub(super) fn channel_record(&self, ek: &str, eid: &str) -> String {
        self.k(format_args!("ch:r:{ek}:{eid}"))
    }
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escaping_keeps_parts_apart() {
        assert_eq!(esc("acme"), "acme");
        assert_eq!(esc("a:b"), "a%3Ab");
        assert_eq!(esc("a%3Ab"), "a%253Ab");
        assert_ne!(
            format!("{}:{}", esc("a:b"), esc("c")),
            format!("{}:{}", esc("a"), esc("b:c"))
        );
    }
}
