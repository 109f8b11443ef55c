//! Nodes and the supervisor: registration, status changes, leases of lost or
//! removed nodes, deadline sweeps.

use std::time::Duration;

use hive_core::clock::Timestamp;
use hive_core::id::{LeaseId, NodeId, TaskId};
use hive_core::node::{Node, NodeSpec, NodeStatus};
use hive_core::store::{SweepOptions, SweepReport};
use hive_core::task::machine::{self, Op};
use hive_core::{Error, Result};
use redis::Value;

use super::decode::{array, corrupt, from_json, opt_str, parse, str_of, time_of, to_json, u64_of};
use super::tasks::{Change, MAX_ROUNDS, decide, not_found};
use super::{RedisStore, driver};

/// A claim reservation older than this (by the sweeper's clock) belongs to a
/// claimer that died; the sweep puts its tasks back.
pub(super) const RESERVATION_TTL: Duration = Duration::from_secs(30);

pub(super) fn status_str(s: NodeStatus) -> &'static str {
    match s {
        NodeStatus::Ready => "ready",
        NodeStatus::Draining => "draining",
        NodeStatus::Lost => "lost",
    }
}

pub(super) fn status_of(s: &str) -> Result<NodeStatus> {
    match s {
        "ready" => Ok(NodeStatus::Ready),
        "draining" => Ok(NodeStatus::Draining),
        "lost" => Ok(NodeStatus::Lost),
        other => Err(corrupt(format_args!("node status {other:?}"))),
    }
}

/// A reclaim entry: a lease of a lost or removed node still to end.
struct Reclaim {
    task: TaskId,
    entry: String,
    node: NodeId,
    lease: LeaseId,
}

fn reclaims(vals: &[Value]) -> Result<Vec<Reclaim>> {
    let mut out = Vec::with_capacity(vals.len() / 2);
    for pair in vals.chunks(2) {
        let [task, entry] = pair else {
            return Err(corrupt("an odd reclaim list"));
        };
        let entry = str_of(entry, "reclaim entry")?.to_owned();
        let (node, lease) = entry
            .split_once('|')
            .ok_or_else(|| corrupt("a reclaim entry without a lease"))?;
        out.push(Reclaim {
            task: parse(str_of(task, "reclaim task")?, "task id")?,
            node: parse(node, "node id")?,
            lease: parse(lease, "lease id")?,
            entry,
        });
    }
    Ok(out)
}

impl RedisStore {
    pub(super) async fn register(&self, node: Node) -> Result<()> {
        let mut inv = self.scripts.register_node.prepare_invoke();
        inv.arg(&self.keys.prefix)
            .arg(node.registered_at.as_millis())
            .arg(node.id.to_string())
            .arg(to_json!(&node.spec)?)
            .arg(status_str(node.status))
            .arg(node.spec.capacity)
            .arg(node.registered_at.as_millis())
            .arg(node.last_seen.as_millis());
        let created: i64 = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver("registering a node"))?;
        if created == 1 {
            Ok(())
        } else {
            Err(Error::Conflict {
                message: format!("node {} already exists", node.id),
            })
        }
    }

    pub(super) async fn nodes_by_id(&self, ids: &[NodeId]) -> Result<Vec<Option<Node>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.keys.node(*id))
                .arg(&["spec", "status", "reg", "seen"][..]);
            pipe.cmd("HLEN").arg(self.keys.node_leases(*id));
        }
        let rows: Vec<Value> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(driver("reading nodes"))?;
        if rows.len() != 2 * ids.len() {
            return Err(corrupt("a pipeline answered the wrong number of replies"));
        }
        ids.iter()
            .zip(rows.chunks(2))
            .map(|(id, pair)| {
                let [fields, in_flight] = pair else {
                    return Err(corrupt("a node read of the wrong length"));
                };
                let f = array(fields)?;
                let [spec, status, reg, seen] = f else {
                    return Err(corrupt("a node read of the wrong length"));
                };
                if opt_str(spec)?.is_none() {
                    return Ok(None);
                }
                node_of(*id, spec, status, reg, seen, in_flight).map(Some)
            })
            .collect()
    }

    pub(super) async fn all_nodes(&self) -> Result<Vec<Node>> {
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.nodes())
            .query_async(&mut self.conn())
            .await
            .map_err(driver("listing nodes"))?;
        let mut ids: Vec<NodeId> = ids
            .iter()
            .map(|s| parse(s, "node id"))
            .collect::<Result<_>>()?;
        ids.sort();
        Ok(self
            .nodes_by_id(&ids)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// `touch`, a new status, or `remove`; leases a lost or removed node held are
    /// ended (as placement lost) before this returns.
    pub(super) async fn change_node(
        &self,
        id: NodeId,
        action: &str,
        now: Timestamp,
    ) -> Result<Node> {
        let mut inv = self.scripts.node_change.prepare_invoke();
        inv.arg(&self.keys.prefix)
            .arg(now.as_millis())
            .arg(id.to_string())
            .arg(action);
        let reply: Value = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver("changing a node"))?;
        let rows = array(&reply)?;
        let Some(head) = rows.get(..5) else {
            return Err(not_found("node", id));
        };
        let [spec, status, reg, seen, in_flight] = head else {
            return Err(corrupt("a node answer of the wrong length"));
        };
        let mut node = node_of(id, spec, status, reg, seen, in_flight)?;
        let handed = reclaims(&rows[5..])?;
        if !handed.is_empty() {
            self.reclaim(handed, now).await?;
            node.in_flight = 0;
        }
        Ok(node)
    }

    /// Ends the leases in `entries` (as placement lost) where they are still
    /// current, and drops the stale entries. Returns how many were ended.
    async fn reclaim(&self, entries: Vec<Reclaim>, now: Timestamp) -> Result<usize> {
        let mut pending = entries;
        let mut ended = 0;
        for _ in 0..MAX_ROUNDS {
            if pending.is_empty() {
                break;
            }
            let ids: Vec<TaskId> = pending.iter().map(|r| r.task).collect();
            let loaded = self.load(&ids).await?;
            let mut changes = Vec::new();
            let mut staged = Vec::new();
            let mut stale = Vec::new();
            for (r, task) in pending.iter().zip(loaded) {
                let Some(mut task) = task else {
                    stale.push(r);
                    continue;
                };
                let current = task
                    .core
                    .lease
                    .as_ref()
                    .is_some_and(|l| l.node == r.node && l.id == r.lease);
                if !current {
                    stale.push(r);
                    continue;
                }
                let old = task.core.clone();
                let op = Op::LosePlacement { node: r.node };
                match decide(r.task, &mut task, op, now) {
                    (Ok(_), Some(event)) => {
                        changes.push(Change::new(r.task, &task, &old, vec![event], now));
                        staged.push(r);
                    }
                    (answer, _) => {
                        if let Err(e) = answer {
                            tracing::error!(task = %r.task, error = %e, "redis: reclaiming a lease failed");
                        }
                        stale.push(r);
                    }
                }
            }
            let stale: Vec<(TaskId, &str)> =
                stale.iter().map(|r| (r.task, r.entry.as_str())).collect();
            let statuses = self.commit(&changes, &[], &stale, now).await?;
            let mut retry = Vec::new();
            for (r, status) in staged.into_iter().zip(statuses) {
                self.cache.forget(r.task);
                match status {
                    1 => ended += 1,
                    0 => retry.push(r.task),
                    _ => {}
                }
            }
            pending.retain(|r| retry.contains(&r.task));
        }
        Ok(ended)
    }

    // ----- supervisor -------------------------------------------------------------

    pub(super) async fn sweep_once(
        &self,
        now: Timestamp,
        options: &SweepOptions,
    ) -> Result<SweepReport> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let lost_cutoff = now.as_millis().saturating_sub(ms(options.node_lost_after));
        let rsv_cutoff = now.as_millis().saturating_sub(ms(RESERVATION_TTL));
        let mut inv = self.scripts.sweep_prepare.prepare_invoke();
        inv.arg(&self.keys.prefix)
            .arg(now.as_millis())
            .arg(lost_cutoff)
            .arg(rsv_cutoff);
        let reply: Value = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver("sweeping"))?;
        let rows = array(&reply)?;
        let nodes_lost = match rows.first() {
            Some(v) => u64_of(v, "nodes lost")? as usize,
            None => return Err(corrupt("an empty sweep answer")),
        };
        let placements_lost = self.reclaim(reclaims(&rows[1..])?, now).await?;
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.deadlines())
            .arg("-inf")
            .arg(now.as_millis())
            .arg("LIMIT")
            .arg(0)
            .arg(options.limit.saturating_add(1))
            .query_async(&mut self.conn())
            .await
            .map_err(driver("sweeping"))?;
        let more = due.len() > options.limit;
        let ids: Vec<TaskId> = due
            .iter()
            .take(options.limit)
            .map(|s| parse(s, "task id"))
            .collect::<Result<_>>()?;
        let expired = self.expire(ids, now).await?;
        Ok(SweepReport {
            expired,
            nodes_lost,
            placements_lost,
            more,
        })
    }

    /// Expires the due deadlines of `ids`; fixes index entries that are not due.
    async fn expire(&self, ids: Vec<TaskId>, now: Timestamp) -> Result<usize> {
        let mut pending = ids;
        let mut expired = 0;
        for _ in 0..MAX_ROUNDS {
            if pending.is_empty() {
                break;
            }
            let loaded = self.load(&pending).await?;
            let mut changes = Vec::new();
            for (&id, task) in pending.iter().zip(loaded) {
                let Some(mut task) = task else { continue };
                let old = task.core.clone();
                match machine::deadline(&task.core, task.facts(id)) {
                    Some((at, phase)) if at <= now => {
                        match decide(id, &mut task, Op::Expire { phase }, now) {
                            (Ok(_), Some(event)) => {
                                changes.push(Change::new(id, &task, &old, vec![event], now));
                            }
                            (answer, _) => {
                                if let Err(e) = answer {
                                    tracing::error!(task = %id, error = %e, "redis: expiring a deadline failed");
                                }
                            }
                        }
                    }
                    other => {
                        // Not due (or no deadline): file it where it belongs.
                        let mut change = Change::new(id, &task, &old, Vec::new(), now);
                        change.deadline = Some(other.map(|d| d.0));
                        changes.push(change);
                    }
                }
            }
            let statuses = self.commit(&changes, &[], &[], now).await?;
            pending.clear();
            for (c, status) in changes.iter().zip(statuses) {
                self.cache.forget(c.id);
                match status {
                    1 if !c.events.is_empty() => expired += 1,
                    0 => pending.push(c.id),
                    _ => {}
                }
            }
        }
        Ok(expired)
    }
}

fn node_of(
    id: NodeId,
    spec: &Value,
    status: &Value,
    reg: &Value,
    seen: &Value,
    in_flight: &Value,
) -> Result<Node> {
    let spec: NodeSpec = from_json!(spec, "node spec")?;
    Ok(Node {
        id,
        spec,
        status: status_of(str_of(status, "node status")?)?,
        in_flight: u32::try_from(u64_of(in_flight, "in flight")?).unwrap_or(u32::MAX),
        registered_at: time_of(reg, "node registered_at")?,
        last_seen: time_of(seen, "node last_seen")?,
    })
}
