//! Submitting, reading and transitioning tasks.

use hive_core::clock::Timestamp;
use hive_core::id::{NodeId, TaskId};
use hive_core::principal::TenantId;
use hive_core::store::{Ack, Command, NewTask, Submitted};
use hive_core::task::machine::{self, Op, TaskCore, TaskFacts};
use hive_core::task::{EventKind, Page, Task, TaskQuery};
use hive_core::{Error, Result};
use rustc_hash::FxHashMap;

use super::PostgresStore;
use super::codec::{self, TaskRow, task_columns};
use super::error::{db, lost_race};
use super::notify::Signal;
use super::transition::{LockedRow, Transitions, locked, locked_columns, task_not_found};

impl PostgresStore {
    pub(super) async fn submit_tasks(
        &self,
        tasks: Vec<NewTask>,
        now: Timestamp,
    ) -> Result<Vec<Submitted>> {
        // A key repeated within the batch: every repeat answers like its first.
        let mut first_of_key: FxHashMap<(&TenantId, &str), usize> = FxHashMap::default();
        let mut repeat_of: Vec<Option<usize>> = Vec::with_capacity(tasks.len());
        for (i, t) in tasks.iter().enumerate() {
            let repeat = t.spec.idempotency_key.as_deref().and_then(|k| {
                let key = (&t.owner.tenant, k);
                match first_of_key.get(&key) {
                    Some(&first) => Some(first),
                    None => {
                        first_of_key.insert(key, i);
                        None
                    }
                }
            });
            repeat_of.push(repeat);
        }
        let n = tasks.len();
        let mut ids = Vec::with_capacity(n);
        let mut tenants = Vec::with_capacity(n);
        let mut principals = Vec::with_capacity(n);
        let mut agents = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        let mut priorities = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut specs = Vec::with_capacity(n);
        let mut inputs = Vec::with_capacity(n);
        let mut cores = Vec::with_capacity(n);
        let mut deadlines = Vec::with_capacity(n);
        let mut signal = Signal::default();
        let core = TaskCore::submitted(now);
        let core_json = codec::encode_core(&core)?;
        // Delayed tasks (a later `available_at`) carry their own core.
        let own_cores = tasks
            .iter()
            .map(|t| {
                let c = TaskCore::submitted_for(&t.spec, now);
                if c.available_at <= now {
                    return Ok(None);
                }
                Ok(Some((codec::encode_core(&c)?, c)))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut avail: Vec<Option<i64>> = Vec::with_capacity(n);
        let mut ckeys: Vec<Option<&str>> = Vec::with_capacity(n);
        let mut key_waits: Vec<Option<i64>> = Vec::with_capacity(n);
        // Concurrency keys of the batch: stored waiting, then handed their
        // free slots in the same transaction, under the keys' locks.
        let mut gates: Vec<(&str, &str, u32)> = Vec::new();
        for ((t, repeat), own) in tasks.iter().zip(&repeat_of).zip(&own_cores) {
            if repeat.is_some() {
                continue;
            }
            let (core, core_json) = match own {
                Some((json, c)) => (c, json.as_str()),
                None => (&core, core_json.as_str()),
            };
            match t.spec.concurrency_key() {
                Some((key, max)) => {
                    avail.push(Some(super::transition::KEY_WAIT_AT));
                    key_waits.push(Some(core.available_at.as_millis()));
                    ckeys.push(Some(key));
                    gates.push((t.owner.tenant.as_str(), key, max));
                }
                None => {
                    avail.push(own.as_ref().map(|(_, c)| c.available_at.as_millis()));
                    key_waits.push(None);
                    ckeys.push(None);
                }
            }
            let facts = TaskFacts {
                id: t.id,
                created_at: now,
                spec: &t.spec,
            };
            ids.push(t.id.to_string());
            tenants.push(t.owner.tenant.as_str());
            principals.push(t.owner.principal.as_str());
            agents.push(t.spec.agent.as_str());
            labels.push(codec::encode_labels(&t.spec.labels)?);
            priorities.push(t.spec.priority);
            keys.push(t.spec.idempotency_key.as_deref());
            specs.push(codec::encode_spec_meta(&t.spec)?);
            inputs.push(codec::encode_input(&t.spec)?);
            cores.push(core_json);
            deadlines.push(machine::deadline(core, facts).map(|(at, _)| at.as_millis()));
            signal.feed(&t.owner.tenant);
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        signal.work();
        let queued = codec::encode_event(&EventKind::Queued)?;
        // The statement is all or nothing, so a deadlock or serialization
        // failure (another process's batch) is retried a few times here.
        gates.sort_unstable();
        gates.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        let mut attempt = 0;
        let created: Vec<String> = loop {
            attempt += 1;
            let query = sqlx::query_scalar(SUBMIT)
                .bind(&ids)
                .bind(&tenants)
                .bind(&principals)
                .bind(&agents)
                .bind(&labels)
                .bind(&priorities)
                .bind(&keys)
                .bind(&specs)
                .bind(&inputs)
                .bind(&cores)
                .bind(&deadlines)
                .bind(now.as_millis())
                .bind(&queued)
                .bind(&self.channel)
                .bind(signal.payload())
                .bind(&avail)
                .bind(&ckeys)
                .bind(&key_waits);
            let result = if gates.is_empty() {
                query.fetch_all(&self.pool).await
            } else {
                self.submit_keyed(query, &gates).await
            };
            match result {
                Ok(created) => break created,
                Err(e) if attempt < 4 && lost_race(&e) => continue,
                Err(e) => return Err(db("submit tasks", e)),
            }
        };
        let created: rustc_hash::FxHashSet<TaskId> = created
            .iter()
            .map(|s| codec::task_id(s))
            .collect::<Result<_>>()?;
        // Keys that were already taken: answer with the existing tasks.
        let mut existing: FxHashMap<(String, String), (TaskId, u64)> = FxHashMap::default();
        let taken: Vec<(&str, &str)> = tasks
            .iter()
            .zip(&repeat_of)
            .filter(|(t, r)| r.is_none() && !created.contains(&t.id))
            .filter_map(|(t, _)| {
                let k = t.spec.idempotency_key.as_deref()?;
                Some((t.owner.tenant.as_str(), k))
            })
            .collect();
        if !taken.is_empty() {
            let (tenants, keys): (Vec<&str>, Vec<&str>) = taken.into_iter().unzip();
            let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
                "SELECT tenant, idem_key, id::text, last_seq FROM tasks \
                 WHERE (tenant, idem_key) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
            )
            .bind(tenants)
            .bind(keys)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db("read tasks by idempotency key", e))?;
            for (tenant, key, id, last_seq) in rows {
                existing.insert(
                    (tenant, key),
                    (codec::task_id(&id)?, codec::count("seq", last_seq)?),
                );
            }
        }
        let mut out: Vec<Submitted> = Vec::with_capacity(tasks.len());
        for (t, repeat) in tasks.iter().zip(&repeat_of) {
            let answer = match repeat {
                Some(first) => {
                    let first: &Submitted = out.get(*first).ok_or_else(|| Error::Backend {
                        message: "postgres: submit answers out of order".into(),
                        source: None,
                    })?;
                    Submitted {
                        id: first.id,
                        created: false,
                        last_seq: first.last_seq,
                    }
                }
                None if created.contains(&t.id) => Submitted {
                    id: t.id,
                    created: true,
                    last_seq: 1,
                },
                None => {
                    let key = (
                        t.owner.tenant.as_str().to_owned(),
                        t.spec.idempotency_key.clone().unwrap_or_default(),
                    );
                    let (id, last_seq) = existing.get(&key).copied().ok_or_else(|| {
                        Error::Backend {
                            message: format!(
                                "postgres: task {} was neither stored nor found by its idempotency key",
                                t.id
                            ),
                            source: None,
                        }
                    })?;
                    Submitted {
                        id,
                        created: false,
                        last_seq,
                    }
                }
            };
            out.push(answer);
        }
        Ok(out)
    }

    /// Runs the submit statement of a batch with concurrency keys in one
    /// transaction with the keys locked and their free slots handed on.
    async fn submit_keyed<'q>(
        &self,
        query: sqlx::query::QueryScalar<'q, sqlx::Postgres, String, sqlx::postgres::PgArguments>,
        gates: &[(&str, &str, u32)],
    ) -> std::result::Result<Vec<String>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let (tenants, keys): (Vec<&str>, Vec<&str>) = gates.iter().map(|g| (g.0, g.1)).unzip();
        sqlx::query(super::transition::LOCK_KEYS)
            .bind(&tenants)
            .bind(&keys)
            .execute(&mut *tx)
            .await?;
        let created = query.fetch_all(&mut *tx).await?;
        let maxes: Vec<i64> = gates.iter().map(|g| i64::from(g.2)).collect();
        sqlx::query(super::transition::ADMIT)
            .bind(&tenants)
            .bind(&keys)
            .bind(maxes)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(created)
    }

    pub(super) async fn get_one(&self, id: TaskId) -> Result<Option<Task>> {
        let row: Option<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE id = $1::uuid"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db("read task", e))?;
        row.map(codec::task).transpose()
    }

    pub(super) async fn get_many(&self, ids: &[TaskId]) -> Result<Vec<Task>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let rows: Vec<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE id = ANY($1::text[]::uuid[])"
        ))
        .bind(keys)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db("read tasks", e))?;
        let mut by_id: FxHashMap<TaskId, Task> = FxHashMap::default();
        for row in rows {
            let t = codec::task(row)?;
            by_id.insert(t.id, t);
        }
        Ok(ids.iter().filter_map(|id| by_id.get(id).cloned()).collect())
    }

    pub(super) async fn list(&self, tenant: &TenantId, q: &TaskQuery) -> Result<Page<Task>> {
        let limit = q.effective_limit();
        let states: Vec<&str> = q.states.iter().map(|s| s.as_str()).collect();
        let labels = if q.labels.is_empty() {
            None
        } else {
            Some(codec::encode_labels(&q.labels)?)
        };
        let rows: Vec<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE tenant = $1 \
               AND ($2::text IS NULL OR id > $2::uuid) \
               AND (cardinality($3::text[]) = 0 OR state = ANY($3::text[])) \
               AND ($4::text IS NULL OR agent = $4) \
               AND ($5::text IS NULL OR principal = $5) \
               AND ($6::jsonb IS NULL OR labels @> $6::jsonb) \
             ORDER BY id LIMIT $7"
        ))
        .bind(tenant.as_str())
        .bind(q.after.map(|a| a.to_string()))
        .bind(states)
        .bind(q.agent.as_ref().map(|a| a.as_str()))
        .bind(q.owner.as_ref().map(|o| o.as_str()))
        .bind(labels)
        .bind(codec::limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db("list tasks", e))?;
        let items = rows
            .into_iter()
            .map(codec::task)
            .collect::<Result<Vec<_>>>()?;
        let next = if items.len() == limit {
            items.last().map(|t| t.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    pub(super) async fn apply_commands(
        &self,
        commands: Vec<Command>,
        now: Timestamp,
    ) -> Result<Vec<Result<Ack>>> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<String> = commands.iter().map(|c| c.task.to_string()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut nodes: Vec<String> = commands
            .iter()
            .filter_map(|c| presenting_node(&c.op))
            .map(|n| n.to_string())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        let mut tx = self.begin().await?;
        let rows: Vec<LockedRow> = sqlx::query_as(concat!(
            "SELECT ",
            locked_columns!(),
            " FROM tasks WHERE id = ANY($1::text[]::uuid[]) ORDER BY id FOR UPDATE"
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db("lock tasks", e))?;
        let mut batch = Transitions::default();
        for row in rows {
            batch.add(locked(row)?);
        }
        let out: Vec<Result<Ack>> = commands
            .into_iter()
            .map(|c| match batch.find(c.task) {
                Some(i) => batch.apply(i, c.op, now),
                None => Err(task_not_found(c.task)),
            })
            .collect();
        let persisted = batch.persist(&mut tx, &self.channel, now, &nodes).await?;
        if !persisted && !nodes.is_empty() {
            // Nothing to write, but the nodes were still seen. Tasks first,
            // then nodes: the lock order every transaction follows.
            sqlx::query(
                "UPDATE nodes SET last_seen = greatest(last_seen, $2) WHERE id IN \
                 (SELECT id FROM nodes WHERE id = ANY($1::text[]::uuid[]) ORDER BY id FOR UPDATE)",
            )
            .bind(&nodes)
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await
            .map_err(|e| db("record node sign of life", e))?;
        }
        tx.commit().await.map_err(|e| db("commit", e))?;
        Ok(out)
    }
}

/// The node presenting an op, if the op is a node's (a sign of life).
fn presenting_node(op: &Op) -> Option<NodeId> {
    match op {
        Op::Start { node, .. }
        | Op::Heartbeat { node, .. }
        | Op::Log { node, .. }
        | Op::Succeed { node, .. }
        | Op::Fail { node, .. } => Some(*node),
        _ => None,
    }
}

/// Inserts the new tasks (a taken idempotency key skips its task), moves the
/// feed heads, appends the `Queued` events and notifies, in one statement;
/// answers the ids stored.
///
/// A task whose id is already stored is skipped like a taken key: two
/// processes driving one workflow both submit the step tasks it recorded,
/// with the same ids and keys. Queue order follows the batch, but rows are
/// inserted sorted by
/// `(tenant, idem_key)`: two batches that share keys (two processes driving
/// the same workflows) then take the key locks in one order and cannot
/// deadlock.
const SUBMIT: &str = r#"
WITH u AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::int4[], $7::text[], $8::text[], $9::text[], $10::text[], $11::int8[],
                         $16::int8[], $17::text[], $18::int8[])
        WITH ORDINALITY
        AS u(id, tenant, principal, agent, labels, priority, idem_key, spec, input, core, deadline_at,
             avail, ckey, key_wait, ord)
), q AS MATERIALIZED (
    SELECT u.*, nextval('task_order') AS queue_order FROM u ORDER BY u.ord
), ins AS (
    INSERT INTO tasks (id, tenant, principal, agent, labels, priority, idem_key, spec, input,
                       created_at, core, state, last_seq, available_at, queue_order, deadline_at,
                       ckey, key_wait)
    SELECT q.id::uuid, q.tenant, q.principal, q.agent, q.labels::jsonb, q.priority, q.idem_key,
           q.spec::json, q.input::json, $12, q.core::json, 'pending', 1, COALESCE(q.avail, $12),
           q.queue_order, q.deadline_at, q.ckey, q.key_wait
    FROM q ORDER BY q.tenant, q.idem_key NULLS LAST, q.ord
    ON CONFLICT DO NOTHING
    RETURNING id, tenant
), counts AS (
    SELECT tenant, count(*) AS n FROM ins GROUP BY tenant
), heads AS (
    INSERT INTO feeds AS f (tenant, head)
    SELECT tenant, n FROM counts ORDER BY tenant
    ON CONFLICT (tenant) DO UPDATE SET head = f.head + EXCLUDED.head
    RETURNING f.tenant, f.head
), note AS (
    SELECT pg_notify($14, $15) WHERE $15::text IS NOT NULL
), ev AS (
    INSERT INTO task_events (task, seq, tenant, feed_cursor, at, terminal, kind)
    SELECT ins.id, 1, ins.tenant,
           h.head - c.n + row_number() OVER (PARTITION BY ins.tenant ORDER BY ins.id),
           $12, false, $13::json
    FROM ins
    JOIN counts c ON c.tenant = ins.tenant
    JOIN heads h ON h.tenant = ins.tenant
    LEFT JOIN note ON true
)
SELECT id::text FROM ins
"#;
