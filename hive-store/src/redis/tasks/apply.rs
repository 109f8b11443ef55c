//! Transitions: loading cores, deciding with the state machine, committing by script.

use super::*;

impl RedisStore {
    /// Commits changes with one script call per chunk; answers one status per
    /// change (1 stored, 0 compare-and-set miss, -1 no such task).
    pub(in crate::redis) async fn commit(
        &self,
        changes: &[Change],
        touch: &[NodeId],
        stale: &[(TaskId, &str)],
        now: Timestamp,
    ) -> Result<Vec<i64>> {
        let mut out = Vec::with_capacity(changes.len());
        let chunks: Vec<&[Change]> = if changes.is_empty() {
            vec![&[]]
        } else {
            changes.chunks(CHUNK).collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut inv = self.scripts.commit.prepare_invoke();
            inv.arg(&self.keys.prefix).arg(now.as_millis());
            let (touch, stale) = if i == 0 {
                (touch, stale)
            } else {
                (&[][..], &[][..])
            };
            inv.arg(touch.len());
            for n in touch {
                inv.arg(n.to_string());
            }
            inv.arg(chunk.len());
            for c in chunk {
                c.push(&mut inv, now, None)?;
            }
            inv.arg(stale.len());
            for (task, entry) in stale {
                inv.arg(task.to_string()).arg(*entry);
            }
            let reply: Value = inv
                .invoke_async(&mut self.conn())
                .await
                .map_err(driver("committing transitions"))?;
            for s in array(&reply)? {
                out.push(int_of(s, "commit status")?);
            }
        }
        if out.len() != changes.len() {
            return Err(corrupt("a commit answered the wrong number of statuses"));
        }
        Ok(out)
    }

    pub(in crate::redis) async fn apply_commands(
        &self,
        commands: Vec<Command>,
        now: Timestamp,
    ) -> Result<Vec<Result<Ack>>> {
        let mut answers: Vec<Option<Result<Ack>>> = (0..commands.len()).map(|_| None).collect();
        let mut task_of = Vec::with_capacity(commands.len());
        let mut touch: Vec<NodeId> = Vec::new();
        // Each task's ops, in order: they are decided one after the other on the
        // same core and committed together.
        let mut index: FxHashMap<TaskId, usize> = FxHashMap::default();
        let mut groups: Vec<(TaskId, Vec<(usize, Op)>)> = Vec::new();
        for (i, c) in commands.into_iter().enumerate() {
            if let Some(node) = presenting_node(&c.op)
                && !touch.contains(&node)
            {
                touch.push(node);
            }
            task_of.push(c.task);
            let g = *index.entry(c.task).or_insert_with(|| {
                groups.push((c.task, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push((i, c.op));
        }
        let mut pending: Vec<usize> = (0..groups.len()).collect();
        for round in 0..MAX_ROUNDS {
            // The first round starts from cached cores where there are any.
            let mut tasks: Vec<Option<(Loaded, bool)>> = Vec::with_capacity(pending.len());
            let mut misses = Vec::new();
            for (k, &g) in pending.iter().enumerate() {
                match (round == 0).then(|| self.cache.get(groups[g].0)).flatten() {
                    Some(t) => tasks.push(Some((t, true))),
                    None => {
                        tasks.push(None);
                        misses.push(k);
                    }
                }
            }
            let ids: Vec<TaskId> = misses.iter().map(|&k| groups[pending[k]].0).collect();
            for (k, t) in misses.into_iter().zip(self.load(&ids).await?) {
                tasks[k] = t.map(|t| (t, false));
            }
            let mut changes = Vec::new();
            let mut staged = Vec::new();
            let mut again = Vec::new();
            for (&g, task) in pending.iter().zip(tasks) {
                let (id, ops) = &groups[g];
                let Some((mut task, cached)) = task else {
                    for (i, _) in ops {
                        answers[*i] = Some(Err(not_found("task", id)));
                    }
                    continue;
                };
                let old = task.core.clone();
                let mut events = Vec::new();
                let mut results = Vec::with_capacity(ops.len());
                for (i, op) in ops {
                    let (r, event) = decide(*id, &mut task, op.clone(), now);
                    results.push((*i, r));
                    if let Some(e) = event {
                        NewEvent::push(&mut events, e);
                    }
                }
                if events.is_empty() && cached {
                    // Nothing to compare-and-set: decide again on a fresh read.
                    again.push(g);
                } else if events.is_empty() {
                    for (i, r) in results {
                        answers[i] = Some(r);
                    }
                } else {
                    changes.push(Change::new(*id, &task, &old, events, now));
                    staged.push((g, task, results));
                }
            }
            let touch_now: &[NodeId] = if round == 0 { &touch } else { &[] };
            let statuses = if changes.is_empty() && touch_now.is_empty() {
                Vec::new()
            } else {
                self.commit(&changes, touch_now, &[], now).await?
            };
            pending = again;
            for ((g, task, results), status) in staged.into_iter().zip(statuses) {
                let id = groups[g].0;
                match status {
                    1 => {
                        self.cache.put(id, task);
                        for (i, r) in results {
                            answers[i] = Some(r);
                        }
                    }
                    0 => {
                        self.cache.forget(id);
                        pending.push(g);
                    }
                    _ => {
                        self.cache.forget(id);
                        for (i, _) in results {
                            answers[i] = Some(Err(not_found("task", id)));
                        }
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
        }
        Ok(answers
            .into_iter()
            .zip(task_of)
            .map(|(a, task)| a.unwrap_or_else(|| Err(contended(task))))
            .collect())
    }
}
