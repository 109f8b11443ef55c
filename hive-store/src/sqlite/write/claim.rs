//! Applying commands and claims inside the write transaction.

use super::*;

impl Tx<'_> {
    pub(in crate::sqlite) async fn apply(
        &mut self,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Ack>>> {
        let ids: Vec<TaskId> = commands.iter().map(|c| c.task).collect();
        self.load(&ids).await?;
        let mut out = Vec::with_capacity(commands.len());
        for c in commands {
            if let Some(node) = presenter(&c.op) {
                self.touch(node);
            }
            out.push(self.transition(c.task, c.op));
        }
        Ok(out)
    }

    // ----- claim -----------------------------------------------------------------------

    pub(super) async fn node(&mut self, id: NodeId) -> Result<Option<Node>> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(self.conn())
            .await
            .map_err(|e| db("read a node", e))?;
        row.as_ref().map(node).transpose()
    }

    /// Reads the queues created since the last look (by any process).
    pub(super) async fn refresh_queues(&mut self) -> Result<()> {
        let after = self.shared.queues.lock().loaded_up_to;
        let rows = sqlx::query(
            "SELECT id, tenant, principal, agent, labels FROM queues WHERE id > ? ORDER BY id",
        )
        .bind(after)
        .fetch_all(self.conn())
        .await
        .map_err(|e| db("read queues", e))?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut infos = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = col(&row, 0)?;
            let tenant: String = col(&row, 1)?;
            let principal: String = col(&row, 2)?;
            let agent: String = col(&row, 3)?;
            let labels_json: String = col(&row, 4)?;
            let labels: BTreeMap<String, String> = from_json!(&labels_json, "queue labels")?;
            infos.push((
                QueueKey {
                    tenant: tenant.as_str().into(),
                    principal: principal.as_str().into(),
                    agent: AgentRef::new(&agent),
                    labels: labels_json,
                },
                QueueInfo {
                    id,
                    owner: Owner {
                        tenant: tenant.as_str().into(),
                        principal: principal.as_str().into(),
                    },
                    agent: AgentRef::new(&agent),
                    labels,
                },
            ));
        }
        let mut cache = self.shared.queues.lock();
        for (key, info) in infos {
            if info.id > cache.loaded_up_to {
                cache.loaded_up_to = info.id;
                cache.by_key.insert(key, info.id);
                cache.list.push(info);
            }
        }
        Ok(())
    }

    pub(in crate::sqlite) async fn claim(
        &mut self,
        req: &ClaimRequest<'_>,
    ) -> Result<Vec<ClaimedTask>> {
        let node = self
            .node(req.node)
            .await?
            .ok_or_else(|| not_found("node", req.node))?;
        self.touch(node.id);
        if node.status != NodeStatus::Ready {
            return Ok(Vec::new());
        }
        let max = req.max.min(node.free()) as usize;
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        // A rate-limited task whose tokens are not there yet waits (its
        // `available_at` moves); the claim then looks again for the slots it
        // left.
        for _ in 0..8 {
            let limited = self
                .claim_round(req, &node, max - out.len(), &mut out)
                .await?;
            if !limited || out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Takes a rate-limited task's tokens from its bucket, or moves the task
    /// to when they are there. Answers whether it may be scheduled now.
    async fn take_tokens(
        &mut self,
        id: TaskId,
        held: &mut FxHashMap<(TenantId, String), u64>,
    ) -> Result<bool> {
        let Some(t) = self.tasks.get(&id) else {
            return Ok(true);
        };
        let Some((key, rl)) = t.spec.rate_limit_key() else {
            return Ok(true);
        };
        let (tenant, key, rl) = (t.tenant.clone(), key.to_owned(), rl.clone());
        let tat: i64 =
            sqlx::query_scalar("SELECT tat FROM rate_buckets WHERE tenant = ? AND key = ?")
                .bind(tenant.as_str())
                .bind(key.as_str())
                .fetch_optional(self.conn())
                .await
                .map_err(|e| db("read a rate-limit bucket", e))?
                .unwrap_or(0);
        match rl.take(tat, self.now.as_millis().saturating_mul(1000)) {
            Ok(tat) => {
                sqlx::query(
                    "INSERT INTO rate_buckets (tenant, key, tat) VALUES (?, ?, ?) \
                     ON CONFLICT (tenant, key) DO UPDATE SET tat = excluded.tat",
                )
                .bind(tenant.as_str())
                .bind(key.as_str())
                .bind(tat)
                .execute(self.conn())
                .await
                .map_err(|e| db("take rate-limit tokens", e))?;
                Ok(true)
            }
            Err(at_us) => {
                // In line behind the tasks held back before it.
                let ahead = held.entry((tenant, key)).or_insert(0);
                let at_us = rl.queue_at(at_us, *ahead);
                *ahead += u64::from(rl.units);
                let at = at_us.saturating_add(999) / 1000;
                sqlx::query("UPDATE tasks SET available_at = ? WHERE id = ?")
                    .bind(at)
                    .bind(id.to_string())
                    .execute(self.conn())
                    .await
                    .map_err(|e| db("hold a rate-limited task", e))?;
                self.fx.delayed.push(Timestamp::from_millis(at));
                Ok(false)
            }
        }
    }

    /// One round of a claim: leases up to `max` more tasks into `out`;
    /// answers whether a rate limit held a picked task back.
    async fn claim_round(
        &mut self,
        req: &ClaimRequest<'_>,
        node: &Node,
        max: usize,
        out: &mut Vec<ClaimedTask>,
    ) -> Result<bool> {
        // Eligibility (owner, shares, labels, agents) per queue, inside the
        // transaction that leases.
        self.refresh_queues().await?;
        let eligible: Vec<(i64, TenantId)> = {
            let cache = self.shared.queues.lock();
            cache
                .list
                .iter()
                .filter(|q| {
                    (req.agents.is_empty() || req.agents.contains(&q.agent))
                        && owner_eligible(&node.spec.owner, &node.spec.shared_with, &q.owner)
                        && labels_eligible(&node.spec.labels, &q.labels)
                })
                .map(|q| (q.id, q.owner.tenant.clone()))
                .collect()
        };
        if eligible.is_empty() {
            return Ok(false);
        }
        // The heads of every eligible queue, up to `max` each, so that one
        // tenant's burst cannot hide another tenant's tasks from the scheduler.
        let tenants: FxHashMap<i64, TenantId> = eligible.iter().cloned().collect();
        let node_text = node.id.to_string();
        let mut candidates = Vec::new();
        for chunk in eligible.chunks(64) {
            let one = "SELECT * FROM (SELECT id, queue, priority, ord FROM tasks \
                       WHERE state = 0 AND key_wait = 0 AND queue = ? AND available_at <= ? \
                       AND (avoid_node IS NULL OR avoid_node <> ?) \
                       ORDER BY priority DESC, ord LIMIT ?)";
            let sql = vec![one; chunk.len()].join(" UNION ALL ");
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (queue, _) in chunk {
                q = q
                    .bind(*queue)
                    .bind(self.now.as_millis())
                    .bind(node_text.as_str())
                    .bind(max as i64);
            }
            let rows = q
                .fetch_all(self.conn())
                .await
                .map_err(|e| db("find claimable tasks", e))?;
            for row in rows {
                let id: String = col(&row, 0)?;
                let queue: i64 = col(&row, 1)?;
                let priority: i64 = col(&row, 2)?;
                let ord: i64 = col(&row, 3)?;
                let tenant = tenants.get(&queue).cloned().ok_or_else(|| {
                    crate::sqlite::codec::corrupt(format!("unknown queue {queue}"))
                })?;
                candidates.push(Candidate {
                    task: task_id(&id)?,
                    tenant,
                    priority: i32::try_from(priority).map_err(|_| {
                        crate::sqlite::codec::corrupt(format!("priority {priority}"))
                    })?,
                    order: uint(ord, "order")?,
                });
            }
        }
        if candidates.is_empty() {
            return Ok(false);
        }
        let picked = req.scheduler.select(node, &candidates, max);
        let mut taken = vec![false; candidates.len()];
        let mut ids = Vec::with_capacity(picked.len().min(max));
        for i in picked {
            if i < candidates.len() && !taken[i] && ids.len() < max {
                taken[i] = true;
                ids.push(candidates[i].task);
            }
        }
        self.load(&ids).await?;
        let mut limited = false;
        let mut held = FxHashMap::default();
        for id in ids {
            if !self.take_tokens(id, &mut held).await? {
                limited = true;
                continue;
            }
            let lease = LeaseId::new();
            let mut ack = match self.transition(
                id,
                Op::Schedule {
                    node: node.id,
                    lease,
                },
            ) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(task = %id, error = %e, "a claimable task could not be scheduled");
                    continue;
                }
            };
            let Some(attempt) = self.tasks.get(&id).map(|t| t.core.attempt) else {
                continue;
            };
            let token = LeaseToken {
                task: id,
                attempt,
                lease,
            };
            if req.start {
                match self.transition(
                    id,
                    Op::Start {
                        token,
                        node: node.id,
                    },
                ) {
                    Ok(a) => ack = a,
                    Err(e) => {
                        tracing::error!(task = %id, error = %e, "a claimed task could not be started")
                    }
                }
            }
            let Some(t) = self.tasks.get(&id) else {
                continue;
            };
            out.push(ClaimedTask {
                token,
                owner: Owner {
                    tenant: t.tenant.clone(),
                    principal: t.principal.clone(),
                },
                spec: t.spec.clone(),
                started: ack.state == TaskState::Running,
                last_seq: ack.seq,
            });
        }
        Ok(limited)
    }
}
