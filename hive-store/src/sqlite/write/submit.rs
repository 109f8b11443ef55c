//! Submitting tasks inside the write transaction.

use std::borrow::Cow;

use super::*;

impl Tx<'_> {
    pub(in crate::sqlite) async fn submit(
        &mut self,
        tasks: Vec<PreparedTask>,
    ) -> Result<Vec<Submitted>> {
        // Idempotency keys already stored.
        let mut keyed: FxHashMap<TenantId, Vec<String>> = FxHashMap::default();
        for PreparedTask { task: t, .. } in &tasks {
            if let Some(k) = &t.spec.idempotency_key {
                keyed
                    .entry(t.owner.tenant.clone())
                    .or_default()
                    .push(k.clone());
            }
        }
        let mut existing: FxHashMap<(TenantId, String), (TaskId, u64)> = FxHashMap::default();
        for (tenant, keys) in keyed {
            for chunk in keys.chunks(CHUNK) {
                let sql = format!(
                    "SELECT idem_key, id, last_seq FROM tasks WHERE tenant = ? AND idem_key IN {}",
                    tuple(chunk.len())
                );
                let mut q = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str());
                for k in chunk {
                    q = q.bind(k.as_str());
                }
                let rows = q
                    .fetch_all(self.conn())
                    .await
                    .map_err(|e| db("look up idempotency keys", e))?;
                for row in rows {
                    let key: String = col(&row, 0)?;
                    let id: String = col(&row, 1)?;
                    let seq: i64 = col(&row, 2)?;
                    existing.insert((tenant.clone(), key), (task_id(&id)?, uint(seq, "seq")?));
                }
            }
        }
        let mut out = Vec::with_capacity(tasks.len());
        let mut fresh = Vec::with_capacity(tasks.len());
        for p in tasks {
            let t = &p.task;
            if let Some(key) = &t.spec.idempotency_key {
                let k = (t.owner.tenant.clone(), key.clone());
                if let Some(&(id, last_seq)) = existing.get(&k) {
                    out.push(Submitted {
                        id,
                        created: false,
                        last_seq,
                    });
                    continue;
                }
                existing.insert(k, (t.id, 1));
            }
            out.push(Submitted {
                id: t.id,
                created: true,
                last_seq: 1,
            });
            fresh.push(p);
        }
        if fresh.is_empty() {
            return Ok(out);
        }
        let mut tenants: Vec<TenantId> = Vec::new();
        for PreparedTask { task: t, .. } in &fresh {
            if !tenants.contains(&t.owner.tenant) {
                tenants.push(t.owner.tenant.clone());
            }
        }
        self.load_heads(tenants).await?;
        // Every new task has the same core; encode it once.
        let core = TaskCore::submitted(self.now);
        let core_json = to_json!(&core, "task core")?;
        let queued = EventKind::Queued;
        let mut queues = Vec::with_capacity(fresh.len());
        let mut last: Option<(usize, i64)> = None;
        for (i, PreparedTask { task: t, .. }) in fresh.iter().enumerate() {
            let prev = last.map(|(j, q)| (&fresh[j].task, q));
            let q = match prev {
                Some((p, q))
                    if p.owner == t.owner
                        && p.spec.agent == t.spec.agent
                        && p.spec.labels == t.spec.labels =>
                {
                    q
                }
                _ => self.queue_id(&t.owner, &t.spec).await?,
            };
            last = Some((i, q));
            queues.push(q);
        }
        // Concurrency keys: a task takes a free slot only if none of its
        // key's tasks waits; else it waits (see `hive_core::store`).
        let mut waits = vec![false; fresh.len()];
        let mut gates: FxHashMap<(TenantId, String), (u64, u64)> = FxHashMap::default();
        for (i, PreparedTask { task: t, .. }) in fresh.iter().enumerate() {
            let Some((key, max)) = t.spec.concurrency_key() else {
                continue;
            };
            let gk = (t.owner.tenant.clone(), key.to_owned());
            let gate = match gates.get_mut(&gk) {
                Some(g) => g,
                None => {
                    let g = self.key_counts(&gk.0, key).await?;
                    gates.entry(gk).or_insert(g)
                }
            };
            if gate.0 < u64::from(max) && gate.1 == 0 {
                gate.0 += 1;
            } else {
                gate.1 += 1;
                waits[i] = true;
            }
        }
        for ((chunk, qs), ws) in fresh
            .chunks(CHUNK)
            .zip(queues.chunks(CHUNK))
            .zip(waits.chunks(CHUNK))
        {
            let sql = format!(
                "INSERT INTO tasks (id, tenant, principal, queue, priority, idem_key, created_at, \
                 state, last_seq, available_at, ord, avoid_node, lease_node, deadline_at, core, \
                 ckey, key_wait) \
                 VALUES {}",
                tuples(chunk.len(), 17)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for ((p, queue), &wait) in chunk.iter().zip(qs).zip(ws) {
                let t = &p.task;
                let facts = TaskFacts {
                    id: t.id,
                    created_at: self.now,
                    spec: &t.spec,
                };
                // A delayed task has its own core (a later `available_at`).
                let own = (t.spec.not_before.is_some() || t.spec.delay.is_some())
                    .then(|| TaskCore::submitted_for(&t.spec, self.now))
                    .filter(|c| c.available_at > self.now);
                let (core, core_json) = match &own {
                    Some(c) => {
                        if !wait {
                            self.fx.delayed.push(c.available_at);
                        }
                        (c, Cow::Owned(to_json!(c, "task core")?))
                    }
                    None => (&core, Cow::Borrowed(core_json.as_str())),
                };
                let deadline = machine::deadline(core, facts).map(|(at, _)| at.as_millis());
                let ord = self.next_ord;
                self.next_ord += 1;
                q = q
                    .bind(p.id.as_str())
                    .bind(t.owner.tenant.as_str())
                    .bind(t.owner.principal.as_str())
                    .bind(*queue)
                    .bind(t.spec.priority)
                    .bind(t.spec.idempotency_key.as_deref())
                    .bind(self.now.as_millis())
                    .bind(state_code(TaskState::Pending))
                    .bind(1_i64)
                    .bind(if wait {
                        KEY_WAIT_AT
                    } else {
                        core.available_at.as_millis()
                    })
                    .bind(ord)
                    .bind(None::<String>)
                    .bind(None::<String>)
                    .bind(deadline)
                    .bind(core_json)
                    .bind(t.spec.concurrency_key().map(|(k, _)| k))
                    .bind(i64::from(wait));
            }
            q.execute(self.conn())
                .await
                .map_err(|e| db("insert tasks", e))?;
            let sql = format!(
                "INSERT INTO task_specs (id, spec) VALUES {}",
                tuples(chunk.len(), 2)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for p in chunk {
                q = q.bind(p.id.as_str()).bind(p.spec.as_str());
            }
            q.execute(self.conn())
                .await
                .map_err(|e| db("insert task specs", e))?;
        }
        for PreparedTask { task: t, spec, .. } in fresh {
            self.append(&t.owner.tenant, t.id, 1, &queued)?;
            self.fx.specs.push((t.id, t.spec, spec.len()));
        }
        self.fx.new_work = true;
        Ok(out)
    }

    /// The queue of tasks like this one, created if new.
    pub(super) async fn queue_id(&mut self, owner: &Owner, spec: &TaskSpec) -> Result<i64> {
        let key = QueueKey {
            tenant: owner.tenant.clone(),
            principal: owner.principal.clone(),
            agent: spec.agent.clone(),
            labels: to_json!(&spec.labels, "labels")?,
        };
        if let Some(&id) = self.new_queues.get(&key) {
            return Ok(id);
        }
        if let Some(&id) = self.shared.queues.lock().by_key.get(&key) {
            return Ok(id);
        }
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM queues WHERE tenant = ? AND principal = ? AND agent = ? AND labels = ?",
        )
        .bind(key.tenant.as_str())
        .bind(key.principal.as_str())
        .bind(key.agent.as_str())
        .bind(key.labels.as_str())
        .fetch_optional(self.conn())
        .await
        .map_err(|e| db("look up a queue", e))?;
        let id = match found {
            Some(id) => id,
            None => sqlx::query_scalar(
                "INSERT INTO queues (tenant, principal, agent, labels) VALUES (?, ?, ?, ?) RETURNING id",
            )
            .bind(key.tenant.as_str())
            .bind(key.principal.as_str())
            .bind(key.agent.as_str())
            .bind(key.labels.as_str())
            .fetch_one(self.conn())
            .await
            .map_err(|e| db("create a queue", e))?,
        };
        self.new_queues.insert(key.clone(), id);
        self.fx.queues.push((key, id));
        Ok(id)
    }
}
