//! Reads: task rows with their side values, snapshots, events, the feed and its consumers.

use super::*;

impl RedisStore {
    /// Replaces the redirects in `cols` of each task's row by the values they
    /// name in the task's side hash. Side values are written once and never
    /// change, so a redirect read earlier always finds what it named.
    pub(in crate::redis) async fn resolve_long(
        &self,
        ids: &[TaskId],
        rows: &mut [Vec<Value>],
        cols: &[usize],
    ) -> Result<()> {
        let mut at = Vec::new();
        let mut pipe = redis::pipe();
        for (r, (id, row)) in ids.iter().zip(rows.iter()).enumerate() {
            for &c in cols {
                if let Some(Value::BulkString(b)) = row.get(c)
                    && let Some(name) = redirect(b)
                {
                    pipe.cmd("HGET").arg(self.keys.task_side(*id)).arg(name);
                    at.push((r, c));
                }
            }
        }
        if at.is_empty() {
            return Ok(());
        }
        let values: Vec<Value> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(driver("reading tasks"))?;
        if values.len() != at.len() {
            return Err(corrupt("a pipeline answered the wrong number of replies"));
        }
        for ((r, c), v) in at.into_iter().zip(values) {
            if v == Value::Nil {
                return Err(corrupt("a task value redirects to nothing"));
            }
            rows[r][c] = v;
        }
        Ok(())
    }

    /// The stored specs named by `ids`, from the cache or with one `MGET`.
    pub(in crate::redis) async fn specs_of(
        &self,
        ids: &[Option<&str>],
    ) -> Result<Vec<Option<Arc<TaskSpec>>>> {
        let mut out: Vec<Option<Arc<TaskSpec>>> = ids
            .iter()
            .map(|id| id.and_then(|id| self.specs.get(id.as_bytes())))
            .collect();
        let mut missing: Vec<&str> = Vec::new();
        for (id, found) in ids.iter().zip(&out) {
            if let (Some(id), None) = (id, found)
                && !missing.contains(id)
            {
                missing.push(id);
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let mut cmd = redis::cmd("MGET");
        for id in &missing {
            cmd.arg(self.keys.spec(id));
        }
        let got: Vec<Value> = cmd
            .query_async(&mut self.conn())
            .await
            .map_err(driver("reading specs"))?;
        if got.len() != missing.len() {
            return Err(corrupt("MGET answered the wrong number of values"));
        }
        let mut read: FxHashMap<&str, Arc<TaskSpec>> = FxHashMap::default();
        for (id, v) in missing.iter().zip(&got) {
            if *v == Value::Nil {
                return Err(corrupt("a task refers to a spec that is not stored"));
            }
            let spec: Arc<TaskSpec> = Arc::new(from_json!(v, "task spec")?);
            self.specs.put(id, spec.clone());
            read.insert(id, spec);
        }
        for (id, slot) in ids.iter().zip(out.iter_mut()) {
            if slot.is_none()
                && let Some(id) = id
            {
                *slot = read.get(id).cloned();
            }
        }
        Ok(out)
    }

    /// Checks, once per ready queue, that the queue's stored owner record
    /// (what the claim script decides eligibility from) is the record of
    /// these tasks' owner, agent and labels, writing it if the queue is new.
    /// A record of anyone else under the id — which a collision-resistant id
    /// makes impossible unless something else wrote it — refuses the whole
    /// batch before anything is written: one user's tasks must never land in
    /// a queue another owner's nodes may claim from.
    pub(super) async fn check_queue_owners(&self, shapes: &[Shape]) -> Result<()> {
        let mut todo: Vec<&Shape> = Vec::new();
        for sh in shapes {
            if !self.queues.contains(&sh.queue) && !todo.iter().any(|t| t.queue == sh.queue) {
                todo.push(sh);
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for sh in &todo {
            pipe.cmd("HSETNX")
                .arg(self.keys.queue_meta())
                .arg(&sh.queue)
                .arg(&sh.meta)
                .ignore();
            pipe.cmd("HGET").arg(self.keys.queue_meta()).arg(&sh.queue);
        }
        let stored: Vec<Option<String>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(driver("checking ready queue owners"))?;
        for (sh, got) in todo.iter().zip(&stored) {
            if got.as_deref() != Some(sh.meta.as_str()) {
                return Err(Error::Backend {
                    message: format!(
                        "ready queue {} is recorded for {}, not for {}: refusing to submit \
                         into another owner's queue (nothing was stored)",
                        sh.queue,
                        got.as_deref().unwrap_or("nobody"),
                        sh.meta
                    ),
                    source: None,
                });
            }
        }
        self.queues.add(todo.iter().map(|sh| sh.queue.as_str()));
        Ok(())
    }

    /// Stores each shape's spec under its content id (once: `SET NX`), and
    /// sets the shapes' spec ids. A different spec already under an id (a hash
    /// collision) moves the shape to the next free `{id}-{n}`. With `order`,
    /// also takes that many enqueue orders, in the same round trip; returns
    /// the last one taken.
    pub(super) async fn store_specs(
        &self,
        shapes: &mut [Shape],
        order: Option<u64>,
    ) -> Result<u64> {
        let mut last = 0;
        // The first shape of each distinct spec; the others follow it.
        let mut first_of = Vec::with_capacity(shapes.len());
        let mut todo: Vec<usize> = Vec::new();
        for i in 0..shapes.len() {
            let first = todo
                .iter()
                .copied()
                .find(|&j| shapes[j].spec_json == shapes[i].spec_json);
            if first.is_none() {
                shapes[i].spec = spec_id(shapes[i].spec_json.as_bytes());
                todo.push(i);
            }
            first_of.push(first.unwrap_or(i));
        }
        let mut order = order;
        for attempt in 0..16u32 {
            if todo.is_empty() && order.is_none() {
                break;
            }
            let mut pipe = redis::pipe();
            if let Some(n) = order {
                pipe.cmd("INCRBY").arg(self.keys.order()).arg(n);
            }
            for &i in &todo {
                let sh = &shapes[i];
                // Written once: what is there afterwards is either this spec
                // or the one that holds the id (a collision).
                pipe.cmd("SET")
                    .arg(self.keys.spec(&sh.spec))
                    .arg(&sh.spec_json)
                    .arg("NX")
                    .ignore();
                pipe.cmd("GET").arg(self.keys.spec(&sh.spec));
            }
            let reply: Vec<Value> = pipe
                .query_async(&mut self.conn())
                .await
                .map_err(driver("storing specs"))?;
            let mut reply = reply.iter();
            if order.take().is_some() {
                last = u64_of(
                    reply.next().ok_or_else(|| corrupt("no enqueue order"))?,
                    "enqueue order",
                )?;
            }
            let mut clash = Vec::new();
            for &i in &todo {
                let v = reply.next().ok_or_else(|| corrupt("a short GET answer"))?;
                let sh = &mut shapes[i];
                match opt_bytes(v)? {
                    Some(b) if b == sh.spec_json.as_bytes() => {}
                    None => return Err(corrupt("a spec vanished as it was stored")),
                    Some(_) => {
                        let base = sh.spec.split('-').next().unwrap_or_default().to_owned();
                        sh.spec = format!("{base}-{}", attempt + 1);
                        clash.push(i);
                    }
                }
            }
            for &i in &todo {
                if !clash.contains(&i) {
                    let sh = &shapes[i];
                    if let Ok(spec) = serde_json::from_str::<TaskSpec>(&sh.spec_json) {
                        self.specs.put(&sh.spec, Arc::new(spec));
                    }
                }
            }
            todo = clash;
        }
        if !todo.is_empty() {
            return Err(corrupt("no free id for a spec"));
        }
        for (i, first) in first_of.into_iter().enumerate() {
            if i != first {
                let id = shapes[first].spec.clone();
                shapes[i].spec = id;
            }
        }
        Ok(last)
    }

    pub(in crate::redis) async fn load(&self, ids: &[TaskId]) -> Result<Vec<Option<Loaded>>> {
        let (rows, specs) = self.read_rows(ids, &LOAD_FIELDS, &LOAD_LONG).await?;
        rows.iter()
            .zip(&specs)
            .map(|(r, s)| loaded(r, s.as_ref()))
            .collect()
    }

    pub(in crate::redis) async fn snapshots(&self, ids: &[TaskId]) -> Result<Vec<Option<Task>>> {
        let (rows, specs) = self
            .read_rows(ids, &SNAPSHOT_FIELDS, &SNAPSHOT_LONG)
            .await?;
        ids.iter()
            .zip(&rows)
            .zip(&specs)
            .map(|((id, r), s)| snapshot(*id, r, s.as_ref()))
            .collect()
    }

    /// `fields` of each task hash in one pipeline (an empty row for a missing
    /// task), with the `long` columns resolved, and each row's spec (the
    /// fixed part is column 1).
    pub(super) async fn read_rows(
        &self,
        ids: &[TaskId],
        fields: &[&str],
        long: &[usize],
    ) -> Result<(Vec<Vec<Value>>, Vec<Option<Arc<TaskSpec>>>)> {
        if ids.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET").arg(self.keys.task(*id)).arg(fields);
        }
        let reply: Vec<Value> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(driver("reading tasks"))?;
        let mut rows = rows_of(reply, ids.len())?;
        self.resolve_long(ids, &mut rows, long).await?;
        let specs = self.specs_of(&spec_ids(&rows, 1)).await?;
        Ok((rows, specs))
    }

    pub(in crate::redis) async fn list(
        &self,
        tenant: &TenantId,
        query: &TaskQuery,
    ) -> Result<Page<Task>> {
        let limit = query.effective_limit();
        let key = self.keys.tenant_tasks(&esc(tenant.as_str()));
        let mut start = match query.after {
            Some(after) => format!("({after}"),
            None => "-".to_owned(),
        };
        let mut items = Vec::new();
        let page = limit.max(100);
        'scan: loop {
            let ids: Vec<String> = redis::cmd("ZRANGEBYLEX")
                .arg(&key)
                .arg(&start)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(page)
                .query_async(&mut self.conn())
                .await
                .map_err(driver("listing tasks"))?;
            let Some(last) = ids.last() else { break };
            start = format!("({last}");
            let ids: Vec<TaskId> = ids
                .iter()
                .map(|s| parse(s, "task id"))
                .collect::<Result<_>>()?;
            for task in self.snapshots(&ids).await?.into_iter().flatten() {
                if query.matches(&task) {
                    items.push(task);
                    if items.len() == limit {
                        break 'scan;
                    }
                }
            }
            if ids.len() < page {
                break;
            }
        }
        let next = if items.len() == limit {
            items.last().map(|t| t.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    pub(in crate::redis) async fn events(
        &self,
        task: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TaskEvent>> {
        let mut inv = self.scripts.read_events.prepare_invoke();
        inv.arg(&self.keys.prefix)
            .arg(0)
            .arg(task.to_string())
            .arg(after)
            .arg(limit.min(MAX_FEED_READ));
        let reply: Value = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver("reading events"))?;
        let rows = array(&reply)?;
        let Some((tenant, events)) = rows.split_first() else {
            return Err(not_found("task", task));
        };
        let tenant = TenantId::new(str_of(tenant, "task tenant")?);
        if let [Value::Int(earliest)] = events {
            return Err(Error::OffsetExpired {
                requested: after,
                earliest: u64::try_from(*earliest).unwrap_or(0),
            });
        }
        events
            .iter()
            .zip(after.saturating_add(1)..)
            .map(|(e, seq)| {
                let e = str_of(e, "task event")?;
                let (at, kind) = e
                    .split_once(' ')
                    .ok_or_else(|| corrupt("a task event of the wrong shape"))?;
                Ok(TaskEvent {
                    task,
                    tenant: tenant.clone(),
                    seq,
                    at: Timestamp::from_millis(parse(at, "event time")?),
                    kind: kind_of(kind)?,
                })
            })
            .collect()
    }

    pub(in crate::redis) async fn wait_events(
        &self,
        task: TaskId,
        after: u64,
        timeout: Duration,
    ) -> Result<()> {
        let waiter = self.notifier.task_waiter(task.to_string()).await;
        let notified = waiter.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let seq: Value = redis::cmd("HGET")
            .arg(self.keys.task(task))
            .arg("seq")
            .query_async(&mut self.conn())
            .await
            .map_err(driver("reading a task"))?;
        match opt_int(&seq)? {
            None => return Err(not_found("task", task)),
            Some(s) if past(s, after) => return Ok(()),
            Some(_) => {}
        }
        let _ = tokio::time::timeout(timeout, notified).await;
        Ok(())
    }

    pub(in crate::redis) async fn feed(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // One MULTI/EXEC (no script: a script would copy every entry through
        // Lua twice): the retention offset and the page at the offset last
        // seen for this tenant. The offset only grows, and only when retention
        // trims the feed; a page read at an offset that moved is read again.
        let et = esc(tenant.as_str());
        let limit = limit.min(MAX_FEED_READ) as u64;
        let mut guess = self.trimmed.get(&et);
        for _ in 0..MAX_ROUNDS {
            // Past what a list can hold: nothing there (and no offset can
            // have expired it).
            let start = after.saturating_sub(guess);
            let (Ok(first), Ok(last)) = (
                isize::try_from(start),
                isize::try_from(start.saturating_add(limit - 1)),
            ) else {
                return Ok(Vec::new());
            };
            let (trimmed, entries): (Option<u64>, Vec<Value>) = redis::pipe()
                .atomic()
                .get(self.keys.feed_trimmed(&et))
                .lrange(self.keys.feed(&et), first, last)
                .query_async(&mut self.conn())
                .await
                .map_err(driver("reading a feed"))?;
            let trimmed = trimmed.unwrap_or(0);
            if trimmed != guess {
                self.trimmed.put(&et, trimmed);
            }
            if trimmed > 0 && after < trimmed {
                return Err(Error::OffsetExpired {
                    requested: after,
                    earliest: trimmed + 1,
                });
            }
            if trimmed == guess {
                return entries
                    .iter()
                    .zip(after.saturating_add(1)..)
                    .map(|(packed, cursor)| feed_event(tenant, cursor, packed))
                    .collect();
            }
            guess = trimmed;
        }
        Err(corrupt(
            "a feed's retention offset kept moving while it was read",
        ))
    }

    pub(in crate::redis) async fn wait_feed(
        &self,
        tenant: &TenantId,
        after: u64,
        timeout: Duration,
    ) -> Result<()> {
        let et = esc(tenant.as_str());
        let waiter = self
            .notifier
            .channel_waiter(self.keys.channel_feed(&et))
            .await;
        let notified = waiter.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (len, trimmed): (i64, Option<i64>) = redis::pipe()
            .cmd("LLEN")
            .arg(self.keys.feed(&et))
            .cmd("GET")
            .arg(self.keys.feed_trimmed(&et))
            .query_async(&mut self.conn())
            .await
            .map_err(driver("reading a feed"))?;
        if past(len + trimmed.unwrap_or(0), after) {
            return Ok(());
        }
        let _ = tokio::time::timeout(timeout, notified).await;
        Ok(())
    }

    pub(in crate::redis) async fn ack(
        &self,
        tenant: &TenantId,
        consumer: &str,
        tasks: &[TaskId],
    ) -> Result<()> {
        let mut inv = self.scripts.ack_terminal.prepare_invoke();
        inv.arg(&self.keys.prefix)
            .arg(0)
            .arg(esc(tenant.as_str()))
            .arg(tenant.as_str())
            .arg(esc(consumer))
            .arg(consumer);
        for t in tasks {
            inv.arg(t.to_string());
        }
        let _: Value = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver("acknowledging terminal events"))?;
        Ok(())
    }

    pub(in crate::redis) async fn unacked(
        &self,
        tenant: &TenantId,
        consumer: &str,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = limit.min(MAX_FEED_READ);
        // Each call takes in at most UNACKED_BUDGET newly ended tasks, so a
        // consumer far behind never holds Redis for long; it calls again
        // until `limit` events are waiting or nothing is left to take in.
        loop {
            let mut inv = self.scripts.unacked_terminal.prepare_invoke();
            inv.arg(&self.keys.prefix)
                .arg(0)
                .arg(esc(tenant.as_str()))
                .arg(esc(consumer))
                .arg(consumer)
                .arg(limit)
                .arg(UNACKED_BUDGET);
            let out: Value = inv
                .invoke_async(&mut self.conn())
                .await
                .map_err(driver("listing unacknowledged events"))?;
            let out = array(&out)?;
            let (more, entries) = out
                .split_first()
                .ok_or_else(|| corrupt("an empty unacknowledged-events answer"))?;
            let events = entries
                .chunks(2)
                .map(|c| match c {
                    [cursor, packed] => feed_event(tenant, u64_of(cursor, "cursor")?, packed),
                    _ => Err(corrupt("an unacknowledged event of the wrong length")),
                })
                .collect::<Result<Vec<_>>>()?;
            if u64_of(more, "more")? == 0 || events.len() >= limit {
                return Ok(events);
            }
        }
    }
}

impl RedisStore {
    /// Retention (see `TaskStore::compact`), one script call.
    pub(in crate::redis) async fn compact_tenant(
        &self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<hive_core::store::CompactReport> {
        let mut inv = self.scripts.compact.prepare_invoke();
        inv.arg(&self.keys.prefix)
            .arg(0)
            .arg(esc(tenant.as_str()))
            .arg(ended_before.as_millis())
            .arg(limit.max(1));
        let reply: Value = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver("compacting"))?;
        let [tasks, events, floor, more] = array(&reply)? else {
            return Err(corrupt("a compaction answer of the wrong length"));
        };
        let n = |v: &Value, what: &str| -> Result<usize> {
            usize::try_from(opt_int(v)?.unwrap_or(0)).map_err(|_| corrupt(what))
        };
        Ok(hive_core::store::CompactReport {
            tasks: n(tasks, "compacted tasks")?,
            events: n(events, "deleted events")?,
            feed_floor: n(floor, "feed floor")? as u64,
            more: n(more, "more")? == 1,
        })
    }

    /// Retention's second stage (see `TaskStore::purge`), one script call.
    pub(in crate::redis) async fn purge_tenant(
        &self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<(usize, bool)> {
        let mut inv = self.scripts.purge.prepare_invoke();
        inv.arg(&self.keys.prefix)
            .arg(0)
            .arg(esc(tenant.as_str()))
            .arg(ended_before.as_millis())
            .arg(limit.max(1));
        let reply: Value = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver("deleting compacted tasks"))?;
        let [n, more] = array(&reply)? else {
            return Err(corrupt("a purge answer of the wrong length"));
        };
        let n = usize::try_from(opt_int(n)?.unwrap_or(0)).map_err(|_| corrupt("purged"))?;
        Ok((n, opt_int(more)? == Some(1)))
    }

    /// The tenants that submitted tasks.
    pub(in crate::redis) async fn tenant_list(&self) -> Result<Vec<TenantId>> {
        let names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.tenants())
            .query_async(&mut self.conn())
            .await
            .map_err(driver("listing tenants"))?;
        Ok(names.into_iter().map(TenantId::from).collect())
    }
}
