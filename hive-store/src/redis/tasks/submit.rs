//! Submitting tasks: plain (one transaction) and scripted (idempotency keys).

use super::*;

impl RedisStore {
    pub(in crate::redis) async fn submit_tasks(
        &self,
        tasks: Vec<NewTask>,
        now: Timestamp,
    ) -> Result<Vec<Submitted>> {
        let queued = kind_text(&EventKind::Queued)?;
        let core = TaskCore::submitted(now);
        let c = CoreFields::of(&core)?.c;
        let mut out = Vec::with_capacity(tasks.len());
        for chunk in tasks.chunks(CHUNK) {
            if chunk
                .iter()
                .any(|t| t.spec.idempotency_key.is_some() || t.spec.concurrency.is_some())
            {
                self.submit_scripted(chunk, now, &queued, &core, &c, &mut out)
                    .await?;
            } else {
                self.submit_plain(chunk, now, &queued, &core, &c).await?;
                out.extend(chunk.iter().map(|t| Submitted {
                    id: t.id,
                    created: true,
                    last_seq: 1,
                }));
            }
        }
        if out.len() != tasks.len() {
            return Err(corrupt("submit answered the wrong number of tasks"));
        }
        Ok(out)
    }

    /// Submits tasks that carry idempotency or concurrency keys: one script
    /// call decides, per key, whether the task already exists, and whether it
    /// takes a free concurrency slot or waits for one. (The specs are stored before:
    /// a spec left without tasks by a duplicate or a crash only costs space.)
    pub(super) async fn submit_scripted(
        &self,
        chunk: &[NewTask],
        now: Timestamp,
        queued: &str,
        core: &TaskCore,
        c: &[u8],
        out: &mut Vec<Submitted>,
    ) -> Result<()> {
        let (mut shapes, shape_of) = shapes_of(chunk, core, now)?;
        self.check_queue_owners(&shapes).await?;
        self.store_specs(&mut shapes, None).await?;
        let mut inv = self.scripts.submit.prepare_invoke();
        inv.arg(&self.keys.prefix)
            .arg(now.as_millis())
            .arg(queued)
            .arg(chunk.len());
        for (t, &s) in chunk.iter().zip(&shape_of) {
            let sh = &shapes[s];
            let (input, long_input) = input_fields(&t.spec.input)?;
            let (x, long_x) = fixed_fields(t, now, &sh.spec);
            inv.arg(t.id.to_string())
                .arg(&sh.et)
                .arg(t.owner.tenant.as_str())
                .arg(t.spec.idempotency_key.as_deref().unwrap_or(""))
                .arg(&sh.queue)
                .arg(&sh.meta)
                .arg(t.spec.priority)
                .arg(x)
                .arg(long_x)
                .arg(input)
                .arg(long_input)
                .arg(sh.own_core.as_deref().unwrap_or(c))
                .arg(&sh.deadline)
                .arg(&sh.delayed)
                .arg(match t.spec.concurrency_key() {
                    Some((key, max)) => format!("{max} {}", gate_of(&sh.et, key)),
                    None => String::new(),
                });
        }
        let reply: Value = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver("submitting tasks"))?;
        for row in array(&reply)?.chunks(3) {
            let [id, created, seq] = row else {
                return Err(corrupt("a submit answer of the wrong length"));
            };
            out.push(Submitted {
                id: parse(str_of(id, "task id")?, "task id")?,
                created: int_of(created, "created")? == 1,
                last_seq: u64_of(seq, "seq")?,
            });
        }
        Ok(())
    }

    /// Submits tasks without idempotency keys: nothing to decide, so one
    /// MULTI/EXEC transaction of plain commands stores them (no script: bulk
    /// writes cost the server far less as commands than inside Lua). The
    /// transaction is the atomic step: task records with their `Queued` events,
    /// ready queues and feed entries appear together, in commit order. Enqueue
    /// orders are taken first with one `INCRBY`, in the round trip that stores
    /// the specs (a range lost to a crash in between is only a gap in the
    /// order, which nothing reads as gapless; a spec left without tasks only
    /// costs space).
    pub(super) async fn submit_plain(
        &self,
        chunk: &[NewTask],
        now: Timestamp,
        queued: &str,
        core: &TaskCore,
        c: &[u8],
    ) -> Result<()> {
        let n = chunk.len() as u64;
        let (mut shapes, shape_of) = shapes_of(chunk, core, now)?;
        self.check_queue_owners(&shapes).await?;
        let last = self.store_specs(&mut shapes, Some(n)).await?;
        let first = (last + 1)
            .checked_sub(n)
            .ok_or_else(|| corrupt("an enqueue order below the batch size"))?;
        let at = now.as_millis().to_string();
        let event = format!("{at} {queued}");
        let mut pipe = redis::pipe();
        pipe.atomic();
        // Per tenant: task ids and feed entries; per queue: members.
        let mut tenants: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
        let mut queues: Vec<(String, Vec<(i64, String)>)> = Vec::new();
        let mut metas: Vec<(String, String)> = Vec::new();
        let mut deadlines: Vec<(String, String)> = Vec::new();
        let mut delayed: Vec<(String, String)> = Vec::new();
        for (k, (t, &s)) in chunk.iter().zip(&shape_of).enumerate() {
            let sh = &shapes[s];
            let id = t.id.to_string();
            let member = format!("{:016}{id}", first + k as u64);
            let (input, long_input) = input_fields(&t.spec.input)?;
            let (x, long_x) = fixed_fields(t, now, &sh.spec);
            pipe.cmd("HSET")
                .arg(self.keys.task(t.id))
                .arg("ten")
                .arg(t.owner.tenant.as_str())
                .arg("x")
                .arg(x)
                .arg("in")
                .arg(input)
                .arg("c")
                .arg(sh.own_core.as_deref().unwrap_or(c))
                .arg("seq")
                .arg("1")
                .arg("state")
                .arg("pending")
                .arg("q")
                .arg(&sh.queue)
                .arg("prio")
                .arg(t.spec.priority)
                .arg("qm")
                .arg(&member)
                .arg("e1")
                .arg(&event)
                .ignore();
            if !long_input.is_empty() || !long_x.is_empty() {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(self.keys.task_side(t.id));
                for (f, v) in [("in1", long_input), ("x1", long_x)] {
                    if !v.is_empty() {
                        cmd.arg(f).arg(v);
                    }
                }
                pipe.add_command(cmd).ignore();
            }
            let ti = match tenants.iter().position(|(et, _, _)| *et == sh.et) {
                Some(i) => i,
                None => {
                    tenants.push((sh.et.clone(), Vec::new(), Vec::new()));
                    tenants.len() - 1
                }
            };
            tenants[ti].2.push(format!("{id} 1 {at} {queued}"));
            tenants[ti].1.push(id.clone());
            if !sh.delayed.is_empty() {
                delayed.push((sh.delayed.clone(), id.clone()));
            }
            let qi = match queues.iter().position(|(q, _)| *q == sh.queue) {
                Some(i) => i,
                None => {
                    queues.push((sh.queue.clone(), Vec::new()));
                    metas.push((sh.queue.clone(), sh.meta.clone()));
                    queues.len() - 1
                }
            };
            if sh.delayed.is_empty() {
                queues[qi].1.push((-i64::from(t.spec.priority), member));
            }
            if !sh.deadline.is_empty() {
                deadlines.push((sh.deadline.clone(), id));
            }
        }
        for (et, ids, _) in &tenants {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(self.keys.tenant_tasks(et));
            for id in ids {
                cmd.arg(0).arg(id);
            }
            pipe.add_command(cmd).ignore();
        }
        for (q, meta) in &metas {
            pipe.cmd("HSETNX")
                .arg(self.keys.queue_meta())
                .arg(q)
                .arg(meta)
                .ignore();
        }
        if !delayed.is_empty() {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(self.keys.delayed());
            for (at, id) in &delayed {
                cmd.arg(at).arg(id);
            }
            pipe.add_command(cmd).ignore();
        }
        // Queues that got only delayed tasks stay out of the ready index
        // until `promote` moves their tasks in.
        queues.retain(|(_, members)| !members.is_empty());
        for (q, members) in &queues {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(self.keys.queue(q));
            for (score, m) in members {
                cmd.arg(*score).arg(m);
            }
            pipe.add_command(cmd).ignore();
        }
        if !queues.is_empty() {
            let mut ready = redis::cmd("SADD");
            ready.arg(self.keys.queues_ready());
            for (q, _) in &queues {
                ready.arg(q);
            }
            pipe.add_command(ready).ignore();
        }
        if !deadlines.is_empty() {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(self.keys.deadlines());
            for (at, id) in &deadlines {
                cmd.arg(at).arg(id);
            }
            pipe.add_command(cmd).ignore();
        }
        // The tenants retention walks.
        let mut raw: Vec<&str> = chunk.iter().map(|t| t.owner.tenant.as_str()).collect();
        raw.sort_unstable();
        raw.dedup();
        pipe.cmd("SADD").arg(self.keys.tenants()).arg(&raw).ignore();
        for (et, _, entries) in &tenants {
            let mut cmd = redis::cmd("RPUSH");
            cmd.arg(self.keys.feed(et));
            for e in entries {
                cmd.arg(e);
            }
            pipe.add_command(cmd).ignore();
        }
        // The wake-ups need the new epoch and feed heads: a tiny script, sent
        // with its body (EVAL) so that it can never be missing inside EXEC.
        let mut wake = redis::cmd("EVAL");
        wake.arg(crate::redis::lua::WAKE)
            .arg(0)
            .arg(&self.keys.prefix)
            .arg(queues.len());
        for (q, _) in &queues {
            wake.arg(q);
        }
        for (et, _, _) in &tenants {
            wake.arg(et);
        }
        pipe.add_command(wake).ignore();
        let _: Value = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(driver("submitting tasks"))?;
        Ok(())
    }
}
