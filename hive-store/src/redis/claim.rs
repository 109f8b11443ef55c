//! Claims: reserve eligible candidates on the server, let the scheduler order
//! them, decide Schedule (and Start) with the state machine, commit.

use std::sync::Arc;

use hive_core::Result;
use hive_core::id::{LeaseId, TaskId};
use hive_core::node::Node;
use hive_core::principal::{PrincipalId, TenantId};
use hive_core::scheduler::Candidate;
use hive_core::store::{ClaimRequest, ClaimResult, ClaimedTask};
use hive_core::task::machine::{Op, TaskCore};
use hive_core::task::{LeaseToken, Owner, TaskSpec, TaskState};
use redis::Value;

use super::decode::{
    array, corrupt, from_json, int_of, json_bytes, opt_bytes, opt_str, parse, str_of, time_of,
    u64_of,
};
use super::keys::esc;
use super::nodes::status_of;
use super::tasks::{Change, Loaded, decide, not_found};
use super::{RedisStore, driver};

/// Values per candidate in a reservation answer.
const ROW: usize = 9;

impl RedisStore {
    pub(super) async fn claim_tasks(&self, req: ClaimRequest<'_>) -> Result<ClaimResult> {
        let now = req.now;
        let mut first_epoch = None;
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
            let [_, epoch, spec, status, registered, seen, in_flight] = rows
                .get(..7)
                .ok_or_else(|| corrupt("a short claim answer"))?
            else {
                return Err(corrupt("a short claim answer"));
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
            let rows = &rows[7..];
            if rows.is_empty() {
                return Ok(ClaimResult {
                    tasks: Vec::new(),
                    epoch,
                });
            }
            let (tasks, missed) = self.finish_claim(&req, &node, &claim, rows).await?;
            if !tasks.is_empty() || !missed {
                return Ok(ClaimResult { tasks, epoch });
            }
        }
        Ok(ClaimResult {
            tasks: Vec::new(),
            epoch: first_epoch.unwrap_or(0),
        })
    }

    /// Orders the reserved candidates, decides Schedule (and Start) with the
    /// machine and commits; whatever is not taken goes back to its queue.
    /// Returns the leases and whether any chosen task was missed.
    async fn finish_claim(
        &self,
        req: &ClaimRequest<'_>,
        node: &Node,
        claim: &str,
        rows: &[Value],
    ) -> Result<(Vec<ClaimedTask>, bool)> {
        struct Reserved<'a> {
            id: TaskId,
            owner: Owner,
            row: &'a [Value],
        }
        let mut reserved = Vec::with_capacity(rows.len() / ROW);
        let mut candidates = Vec::with_capacity(rows.len() / ROW);
        for row in rows.chunks(ROW) {
            let parsed = (|| -> Result<(Reserved<'_>, Candidate)> {
                let [id, order, prio, _core, _spec, _input, _created, ten, pri] = row else {
                    return Err(corrupt("a claim candidate of the wrong length"));
                };
                let id: TaskId = parse(str_of(id, "task id")?, "task id")?;
                let tenant = TenantId::new(str_of(ten, "task tenant")?);
                let candidate = Candidate {
                    task: id,
                    tenant: tenant.clone(),
                    priority: i32::try_from(int_of(prio, "priority")?).unwrap_or(0),
                    order: u64_of(order, "enqueue order")?,
                };
                let owner = Owner {
                    tenant,
                    principal: PrincipalId::new(str_of(pri, "task principal")?),
                };
                Ok((Reserved { id, owner, row }, candidate))
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
        let mut changes = Vec::with_capacity(chosen.len());
        let mut leases = Vec::with_capacity(chosen.len());
        // Candidates of one submit batch share their spec and first core byte
        // for byte: parse each distinct one once.
        let mut specs: Option<(&[u8], Arc<TaskSpec>)> = None;
        let mut cores: Option<(&[u8], TaskCore)> = None;
        for i in chosen {
            let r = &reserved[i];
            let mut decided = || -> Result<(Change, Loaded, LeaseToken, bool, u64)> {
                let [_, _, _, core, spec, _, created, ten, _] = r.row else {
                    return Err(corrupt("a claim candidate of the wrong length"));
                };
                let tenant = str_of(ten, "task tenant")?;
                let spec_bytes = json_bytes(spec, "task spec")?;
                let spec = match &specs {
                    Some((b, s)) if *b == spec_bytes => s.clone(),
                    _ => {
                        let s: Arc<TaskSpec> = Arc::new(from_json!(spec, "task spec")?);
                        specs = Some((spec_bytes, s.clone()));
                        s
                    }
                };
                let core_bytes = json_bytes(core, "task core")?;
                let core = match &cores {
                    Some((b, c)) if *b == core_bytes => c.clone(),
                    _ => {
                        let c: TaskCore = from_json!(core, "task core")?;
                        cores = Some((core_bytes, c.clone()));
                        c
                    }
                };
                let mut task = Loaded {
                    et: esc(tenant),
                    created: time_of(created, "task created_at")?,
                    spec,
                    core,
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
                    leases.push((i, task, token, started, last_seq));
                }
                // Left reserved: the commit puts it back in its queue.
                Err(e) => {
                    tracing::debug!(task = %r.id, error = %e, "redis: candidate not scheduled")
                }
            }
        }
        let mut inv = self.scripts.claim_commit.prepare_invoke();
        inv.arg(&self.keys.prefix)
            .arg(req.now.as_millis())
            .arg(node.id.to_string())
            .arg(claim)
            .arg(changes.len());
        for c in &changes {
            c.push(&mut inv, req.now)?;
        }
        // Every other reserved id, whatever its row holds, goes back to its
        // queue.
        let committing: rustc_hash::FxHashSet<TaskId> = changes.iter().map(|c| c.id).collect();
        let back: Vec<&[u8]> = rows
            .chunks(ROW)
            .filter_map(|row| row.first().and_then(|v| opt_bytes(v).ok().flatten()))
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
        let reply: Value = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver("claiming"))?;
        let statuses = array(&reply)?;
        if statuses.len() != changes.len() {
            return Err(corrupt("a claim answered the wrong number of statuses"));
        }
        let mut out = Vec::with_capacity(leases.len());
        let mut missed = false;
        for ((i, task, token, started, last_seq), status) in leases.into_iter().zip(statuses) {
            if int_of(status, "claim status")? != 1 {
                missed = true;
                continue;
            }
            let r = &reserved[i];
            let mut spec = TaskSpec::clone(&task.spec);
            self.cache.put(r.id, task);
            spec.input = match r.row.get(5) {
                Some(input) => from_json!(input, "task input")?,
                None => return Err(corrupt("a claim candidate without input")),
            };
            out.push(ClaimedTask {
                token,
                owner: r.owner.clone(),
                spec: Arc::new(spec),
                started,
                last_seq,
            });
        }
        Ok((out, missed))
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
            7 + 3 * super::ROW,
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
