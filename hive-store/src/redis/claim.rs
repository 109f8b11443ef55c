//! Claims: reserve eligible candidates on the server, let the scheduler order
//! them, decide Schedule (and Start) with the state machine, commit.

use std::sync::Arc;

use hive_core::Result;
use hive_core::clock::Timestamp;
use hive_core::id::{LeaseId, TaskId};
use hive_core::node::Node;
use hive_core::principal::{PrincipalId, TenantId};
use hive_core::scheduler::Candidate;
use hive_core::store::{ClaimRequest, ClaimResult, ClaimedTask};
use hive_core::task::machine::Op;
use hive_core::task::{LeaseToken, Owner, TaskSpec, TaskState};
use redis::Value;

use super::decode::{
    array, corrupt, from_json, int_of, opt_bytes, opt_str, parse, str_of, time_of, u64_of,
};
use super::keys::esc;
use super::nodes::status_of;
use super::tasks::{
    Change, Loaded, core_of, decide, fixed_of, gate_of, not_found, spec_ids, with_key,
};
use super::{RedisStore, driver};

/// Values per candidate in a reservation answer: queue member
/// (`{order:016}{task}`), score (−priority), the task's fields `c`, `r`, `o`,
/// `err`, `x`, `in`, and its tenant.
const ROW: usize = 9;
/// The columns that may hold redirects to the side hash.
const ROW_LONG: [usize; 6] = [2, 3, 4, 5, 6, 7];

/// The task id part of a queue member (`None` if it is too short).
fn member_task(member: &[u8]) -> Option<&[u8]> {
    member.get(16..)
}

impl RedisStore {
    pub(super) async fn claim_tasks(&self, req: ClaimRequest<'_>) -> Result<ClaimResult> {
        let now = req.now;
        let mut first_epoch = None;
        // When the first task a rate limit held back is due.
        let mut held_due: Option<Timestamp> = None;
        for _ in 0..4 {
            let claim = LeaseId::new().to_string();
            let mut inv = self.scripts.claim_prepare.prepare_invoke();
            inv.arg(&self.keys.prefix)
                .arg(now.as_millis())
                .arg(req.node.to_string())
                .arg(req.max)
                .arg(&claim)
                .arg(req.agents.len());
            for a in req.agents {
                inv.arg(a.as_str());
            }
            let reply: Value = inv
                .invoke_async(&mut self.conn())
                .await
                .map_err(driver("claiming"))?;
            let rows = array(&reply)?;
            if rows.first().map(opt_str).transpose()?.flatten() != Some("ok") {
                return Err(not_found("node", req.node));
            }
            let [_, epoch, spec, status, registered, seen, in_flight, due] = rows
                .get(..8)
                .ok_or_else(|| corrupt("a short claim answer"))?
            else {
                return Err(corrupt("a short claim answer"));
            };
            let next_due = match opt_str(due)?.filter(|s| !s.is_empty()) {
                Some(at) => Some(Timestamp::from_millis(
                    parse::<f64>(at, "next due time")? as i64
                )),
                None => None,
            };
            let epoch = u64_of(epoch, "work epoch")?;
            self.notifier.saw_epoch(epoch);
            let epoch = *first_epoch.get_or_insert(epoch);
            let node = Node {
                id: req.node,
                spec: from_json!(spec, "node spec")?,
                status: status_of(str_of(status, "node status")?)?,
                in_flight: u32::try_from(u64_of(in_flight, "in flight")?).unwrap_or(u32::MAX),
                registered_at: time_of(registered, "node registered_at")?,
                last_seen: time_of(seen, "node last_seen")?,
            };
            let rows = &rows[8..];
            if rows.is_empty() {
                return Ok(ClaimResult {
                    tasks: Vec::new(),
                    epoch,
                    next_due,
                });
            }
            let (tasks, missed, due) = self.finish_claim(&req, &node, &claim, rows).await?;
            held_due = match (held_due, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let next_due = match (next_due, held_due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if !tasks.is_empty() || !missed {
                return Ok(ClaimResult {
                    tasks,
                    epoch,
                    next_due,
                });
            }
        }
        Ok(ClaimResult {
            tasks: Vec::new(),
            epoch: first_epoch.unwrap_or(0),
            next_due: held_due,
        })
    }

    /// Orders the reserved candidates, decides Schedule (and Start) with the
    /// machine and commits; whatever is not taken goes back to its queue.
    /// Returns the leases, whether any chosen task was missed, and when the
    /// first task its rate limit held back is due.
    async fn finish_claim(
        &self,
        req: &ClaimRequest<'_>,
        node: &Node,
        claim: &str,
        rows: &[Value],
    ) -> Result<(Vec<ClaimedTask>, bool, Option<Timestamp>)> {
        struct Reserved {
            id: TaskId,
            tenant: TenantId,
            row: usize,
        }
        let mut reserved = Vec::with_capacity(rows.len() / ROW);
        let mut candidates = Vec::with_capacity(rows.len() / ROW);
        for (k, row) in rows.chunks(ROW).enumerate() {
            let parsed = (|| -> Result<(Reserved, Candidate)> {
                let [member, score, .., ten] = row else {
                    return Err(corrupt("a claim candidate of the wrong length"));
                };
                if row.len() != ROW {
                    return Err(corrupt("a claim candidate of the wrong length"));
                }
                let member = str_of(member, "queue member")?;
                let (order, id) = match (member.get(..16), member.get(16..)) {
                    (Some(o), Some(i)) => (o, i),
                    _ => return Err(corrupt("a queue member of the wrong shape")),
                };
                let id: TaskId = parse(id, "task id")?;
                let score: f64 = parse(str_of(score, "queue score")?, "queue score")?;
                let tenant = TenantId::new(str_of(ten, "task tenant")?);
                let candidate = Candidate {
                    task: id,
                    tenant: tenant.clone(),
                    priority: i32::try_from(-(score as i64)).unwrap_or(0),
                    order: parse(order, "enqueue order")?,
                };
                Ok((Reserved { id, tenant, row: k }, candidate))
            })();
            match parsed {
                Ok((r, c)) => {
                    reserved.push(r);
                    candidates.push(c);
                }
                Err(e) => tracing::error!(error = %e, "redis: skipping a corrupt claim candidate"),
            }
        }
        let max = req.max.min(node.free()) as usize;
        let mut taken = vec![false; candidates.len()];
        let mut chosen = Vec::new();
        if max > 0 && !candidates.is_empty() {
            for i in req.scheduler.select(node, &candidates, max) {
                if i < candidates.len() && !taken[i] && chosen.len() < max {
                    taken[i] = true;
                    chosen.push(i);
                }
            }
        }
        // The chosen candidates' rows, with long values read from the side
        // hashes and specs from the cache (or one read).
        let ids: Vec<TaskId> = chosen.iter().map(|&i| reserved[i].id).collect();
        let mut picked: Vec<Vec<Value>> = chosen
            .iter()
            .map(|&i| {
                let k = reserved[i].row * ROW;
                rows.get(k..k + ROW)
                    .map(<[Value]>::to_vec)
                    .unwrap_or_default()
            })
            .collect();
        // A failed read leaves the candidates undecided: the commit puts them
        // back in their queues.
        if let Err(e) = self.resolve_long(&ids, &mut picked, &ROW_LONG).await {
            tracing::error!(error = %e, "redis: reading claim candidates");
        }
        let specs = match self.specs_of(&spec_ids(&picked, 6)).await {
            Ok(specs) => specs,
            Err(e) => {
                tracing::error!(error = %e, "redis: reading claim candidates' specs");
                vec![None; picked.len()]
            }
        };
        let mut changes = Vec::with_capacity(chosen.len());
        let mut leases = Vec::with_capacity(chosen.len());
        for ((&i, row), spec) in chosen.iter().zip(&picked).zip(&specs) {
            let r = &reserved[i];
            let decided = || -> Result<(Change, Loaded, LeaseToken, bool, u64)> {
                let [_, _, c, rep, o, err, x, _, _] = &row[..] else {
                    return Err(corrupt("a claim candidate of the wrong length"));
                };
                let fixed = fixed_of(x)?;
                let spec = spec
                    .as_ref()
                    .ok_or_else(|| corrupt("a claim candidate without spec"))?;
                let mut task = Loaded {
                    et: esc(r.tenant.as_str()),
                    created: fixed.created,
                    spec: with_key(spec, fixed.key),
                    core: core_of(c, rep, o, err)?,
                };
                let old = task.core.clone();
                let lease = LeaseId::new();
                let schedule = Op::Schedule {
                    node: node.id,
                    lease,
                };
                let (answer, event) = decide(r.id, &mut task, schedule, req.now);
                answer?;
                let mut events: Vec<_> = event.into_iter().collect();
                let token = LeaseToken {
                    task: r.id,
                    attempt: task.core.attempt,
                    lease,
                };
                if req.start {
                    let start = Op::Start {
                        token,
                        node: node.id,
                    };
                    let (answer, event) = decide(r.id, &mut task, start, req.now);
                    if let Err(e) = answer {
                        tracing::error!(task = %r.id, error = %e, "redis: a claimed task could not be started");
                    }
                    events.extend(event);
                }
                let started = task.core.state == TaskState::Running;
                let last_seq = task.core.last_seq;
                let change = Change::new(r.id, &task, &old, events, req.now);
                Ok((change, task, token, started, last_seq))
            };
            let decided = decided();
            match decided {
                Ok((change, task, token, started, last_seq)) => {
                    changes.push(change);
                    leases.push((i, row, task, token, started, last_seq));
                }
                // Left reserved: the commit puts it back in its queue.
                Err(e) => {
                    tracing::debug!(task = %r.id, error = %e, "redis: candidate not scheduled")
                }
            }
        }
        // Rate limits of the tasks to commit: taken from their buckets by
        // the commit, atomically with the leases.
        let limited: Vec<(String, String, i64, i64, i64)> = leases
            .iter()
            .filter_map(|(_, _, task, token, _, _)| {
                let (key, rl) = task.spec.rate_limit_key()?;
                Some((
                    token.task.to_string(),
                    gate_of(&task.et, key),
                    i64::from(rl.units),
                    rl.interval_us(),
                    i64::try_from(rl.per.as_micros()).unwrap_or(i64::MAX),
                ))
            })
            .collect();
        let mut inv = self.scripts.claim_commit.prepare_invoke();
        inv.arg(&self.keys.prefix)
            .arg(req.now.as_millis())
            .arg(node.id.to_string())
            .arg(claim)
            .arg(limited.len());
        for (id, bucket, units, interval, per) in &limited {
            inv.arg(id).arg(bucket).arg(units).arg(interval).arg(per);
        }
        // Every other reserved id, whatever its row holds, goes back to its
        // queue.
        let committing: rustc_hash::FxHashSet<TaskId> = changes.iter().map(|c| c.id).collect();
        let back: Vec<&[u8]> = rows
            .chunks(ROW)
            .filter_map(|row| row.first().and_then(|v| opt_bytes(v).ok().flatten()))
            .filter_map(member_task)
            .filter(|raw| {
                std::str::from_utf8(raw)
                    .ok()
                    .and_then(|s| s.parse::<TaskId>().ok())
                    .is_none_or(|id| !committing.contains(&id))
            })
            .collect();
        inv.arg(back.len());
        for id in back {
            inv.arg(id);
        }
        inv.arg(changes.len());
        for c in &changes {
            c.push(&mut inv, req.now, Some(node.id))?;
        }
        let reply: Value = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver("claiming"))?;
        let statuses = array(&reply)?;
        let Some((held, statuses)) = statuses.split_last() else {
            return Err(corrupt("an empty claim answer"));
        };
        if statuses.len() != changes.len() {
            return Err(corrupt("a claim answered the wrong number of statuses"));
        }
        let held = match int_of(held, "held-back due time")? {
            0 => None,
            at => Some(Timestamp::from_millis(at)),
        };
        let mut out = Vec::with_capacity(leases.len());
        let mut missed = false;
        for ((i, row, task, token, started, last_seq), status) in leases.into_iter().zip(statuses) {
            if int_of(status, "claim status")? != 1 {
                missed = true;
                continue;
            }
            let r = &reserved[i];
            let mut spec = TaskSpec::clone(&task.spec);
            self.cache.put(r.id, task);
            let principal = match row.get(6) {
                Some(x) => PrincipalId::new(fixed_of(x)?.principal),
                None => return Err(corrupt("a claim candidate without facts")),
            };
            spec.input = match row.get(7) {
                Some(input) => from_json!(input, "task input")?,
                None => return Err(corrupt("a claim candidate without input")),
            };
            out.push(ClaimedTask {
                token,
                owner: Owner {
                    tenant: r.tenant.clone(),
                    principal,
                },
                spec: Arc::new(spec),
                started,
                last_seq,
            });
        }
        Ok((out, missed, held))
    }
}

#[cfg(test)]
mod tests {
    use hive_core::node::{Node, NodeSpec, NodeStatus};
    use hive_core::scheduler::FairScheduler;
    use hive_core::store::{ClaimRequest, NewTask, SweepOptions, TaskStore};
    use hive_core::{NodeId, Owner, TaskId, TaskSpec, TaskState, Timestamp};
    use redis::Value;

    use super::super::RedisStore;
    use super::array;
    use crate::OpenOptions;

    const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

    async fn store() -> Option<RedisStore> {
        let url = match std::env::var("HIVE_TEST_REDIS_URL") {
            Ok(u) if !u.trim().is_empty() => u,
            _ => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                assert!(!ci, "HIVE_TEST_REDIS_URL is not set and CI=true");
                eprintln!("SKIPPED: HIVE_TEST_REDIS_URL is not set");
                return None;
            }
        };
        let options = OpenOptions {
            prefix: format!("hive_unit_{:016x}", TaskId::new().as_u128() as u64),
            ..OpenOptions::default()
        };
        Some(RedisStore::connect(&url, &options).await.expect("connect"))
    }

    async fn node(s: &RedisStore) -> NodeId {
        let id = NodeId::new();
        s.register_node(Node {
            id,
            spec: NodeSpec::system("n", 10),
            status: NodeStatus::Ready,
            in_flight: 0,
            registered_at: T0,
            last_seen: T0,
        })
        .await
        .unwrap();
        id
    }

    async fn claim(s: &RedisStore, node: NodeId, now: Timestamp) -> usize {
        let scheduler = FairScheduler::default();
        let req = ClaimRequest {
            node,
            max: 10,
            agents: &[],
            start: false,
            scheduler: &scheduler,
            now,
        };
        s.claim(req).await.unwrap().tasks.len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_claimers_reservation_is_swept_back_to_its_queue() {
        let Some(s) = store().await else { return };
        let (a, b) = (node(&s).await, node(&s).await);
        let owner = Owner {
            tenant: "acme".into(),
            principal: "alice".into(),
        };
        let tasks: Vec<NewTask> = (0..3)
            .map(|_| NewTask {
                id: TaskId::new(),
                owner: owner.clone(),
                spec: std::sync::Arc::new(TaskSpec::new("echo", serde_json::json!(null))),
            })
            .collect();
        let ids: Vec<TaskId> = s
            .submit(tasks, T0)
            .await
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect();

        // A claimer reserves the tasks, then dies before its second half.
        let mut inv = s.scripts.claim_prepare.prepare_invoke();
        inv.arg(&s.keys.prefix)
            .arg(T0.as_millis())
            .arg(a.to_string())
            .arg(10)
            .arg("dead-claimer")
            .arg(0);
        let reply: Value = inv.invoke_async(&mut s.conn()).await.unwrap();
        drop(inv);
        assert_eq!(
            array(&reply).unwrap().len(),
            8 + 3 * super::ROW,
            "three reserved"
        );

        // Meanwhile nobody else gets them, and they stay pending.
        assert_eq!(claim(&s, b, T0).await, 0);
        for t in s.get_tasks(&ids).await.unwrap() {
            assert_eq!(t.state, TaskState::Pending);
        }
        let opts = SweepOptions {
            limit: 100,
            node_lost_after: std::time::Duration::from_secs(3600),
        };
        let s = &s;
        let sweep = |at| async move {
            s.sweep(at, &opts).await.unwrap();
        };
        // A young reservation may belong to a live claimer: left alone.
        let young = T0.saturating_add(std::time::Duration::from_secs(10));
        sweep(young).await;
        assert_eq!(claim(s, b, young).await, 0);
        // An old one is put back, and the tasks are claimable again.
        let old = T0.saturating_add(std::time::Duration::from_secs(31));
        sweep(old).await;
        assert_eq!(claim(s, b, old).await, 3);
        for t in s.get_tasks(&ids).await.unwrap() {
            assert_eq!(
                (t.state, t.attempt, t.node),
                (TaskState::Scheduled, 1, Some(b))
            );
        }
    }
}
