//! The read side: queries on the reader pool. WAL readers see the last commit
//! without waiting for the writer; a feed reader sees cursors in commit order,
//! so never N+1 before N.

use hive_core::id::{NodeId, TaskId};
use hive_core::node::Node;
use hive_core::principal::TenantId;
use hive_core::task::{FeedEvent, Page, Task, TaskEvent, TaskQuery};
use hive_core::{Error, Result};
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite, SqlitePool};

use super::codec::{
    NODE_COLUMNS, TASK_COLUMNS, db, event, feed_event, int, node, not_found, rows_for_ids,
    state_code, task,
};
use super::write::Shared;

pub(super) async fn get_tasks(
    pool: &SqlitePool,
    shared: &Shared,
    ids: &[TaskId],
) -> Result<Vec<Task>> {
    let mut found = rustc_hash::FxHashMap::default();
    let mut conn = pool.acquire().await.map_err(|e| db("read tasks", e))?;
    let rows = rows_for_ids(
        &mut conn,
        &format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN task_specs s ON s.id = t.id WHERE t.id IN "
        ),
        ids,
        "read tasks",
    )
    .await?;
    for row in rows {
        let t = task(&row, |id| shared.specs.lock().get(&id))?;
        found.insert(t.id, t);
    }
    // In the order asked (an id asked twice is answered twice).
    Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
}

/// Pending tasks, counted over the partial index of ready tasks.
pub(super) async fn pending_count(pool: &SqlitePool) -> Result<u64> {
    // The ready index (claimable or in a backoff) and the keys' index
    // (waiting for a concurrency slot).
    let n: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM tasks WHERE state = 0 AND key_wait = 0) \
              + (SELECT count(*) FROM tasks WHERE ckey IS NOT NULL AND key_wait = 1 \
                 AND state IN (0, 1, 2))",
    )
    .fetch_one(pool)
    .await
    .map_err(|e| db("count pending tasks", e))?;
    Ok(n.max(0) as u64)
}

pub(super) async fn list_tasks(
    pool: &SqlitePool,
    shared: &Shared,
    tenant: &TenantId,
    query: &TaskQuery,
) -> Result<Page<Task>> {
    let limit = query.effective_limit();
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
        "SELECT {TASK_COLUMNS} FROM tasks t JOIN task_specs s ON s.id = t.id \
         JOIN queues q ON q.id = t.queue WHERE t.tenant = "
    ));
    qb.push_bind(tenant.as_str().to_owned());
    if let Some(after) = query.after {
        qb.push(" AND t.id > ").push_bind(after.to_string());
    }
    if !query.states.is_empty() {
        qb.push(" AND t.state IN (");
        let mut sep = qb.separated(", ");
        for s in &query.states {
            sep.push_bind(state_code(*s));
        }
        qb.push(")");
    }
    if let Some(agent) = &query.agent {
        qb.push(" AND q.agent = ")
            .push_bind(agent.as_str().to_owned());
    }
    if let Some(owner) = &query.owner {
        qb.push(" AND t.principal = ")
            .push_bind(owner.as_str().to_owned());
    }
    for (k, v) in &query.labels {
        qb.push(" AND EXISTS (SELECT 1 FROM json_each(q.labels) j WHERE j.key = ")
            .push_bind(k.clone())
            .push(" AND j.value = ")
            .push_bind(v.clone())
            .push(")");
    }
    qb.push(" ORDER BY t.id LIMIT ").push_bind(limit as i64);
    let rows = qb
        .build()
        .persistent(false)
        .fetch_all(pool)
        .await
        .map_err(|e| db("list tasks", e))?;
    let items = rows
        .iter()
        .map(|row| task(row, |id| shared.specs.lock().get(&id)))
        .collect::<Result<Vec<_>>>()?;
    let next = if items.len() == limit {
        items.last().map(|t| t.id)
    } else {
        None
    };
    Ok(Page { items, next })
}

/// A task's last seq, `None` if it does not exist.
pub(super) async fn last_seq(pool: &SqlitePool, id: TaskId) -> Result<Option<u64>> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM tasks WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(pool)
        .await
        .map_err(|e| db("read a task's last seq", e))?;
    seq.map(|s| super::codec::uint(s, "seq")).transpose()
}

pub(super) async fn read_events(
    pool: &SqlitePool,
    task: TaskId,
    after: u64,
    limit: usize,
) -> Result<Vec<TaskEvent>> {
    let rows = sqlx::query(
        "SELECT task, tenant, seq, at, kind FROM events WHERE task = ? AND seq > ? \
         ORDER BY seq LIMIT ?",
    )
    .bind(task.to_string())
    .bind(int(after))
    .bind(int(limit as u64))
    .fetch_all(pool)
    .await
    .map_err(|e| db("read events", e))?;
    if rows.is_empty() && last_seq(pool, task).await?.is_none() {
        return Err(not_found("task", task));
    }
    let out: Vec<TaskEvent> = rows.iter().map(|r| event(r, 0)).collect::<Result<_>>()?;
    // Retention keeps a compacted task's terminal event only.
    if let Some(first) = out.first()
        && first.seq > after.saturating_add(1)
    {
        return Err(Error::OffsetExpired {
            requested: after,
            earliest: first.seq,
        });
    }
    Ok(out)
}

pub(super) async fn feed_head(pool: &SqlitePool, tenant: &TenantId) -> Result<u64> {
    let head: i64 =
        sqlx::query_scalar("SELECT coalesce(max(cursor), 0) FROM events WHERE tenant = ?")
            .bind(tenant.as_str())
            .fetch_one(pool)
            .await
            .map_err(|e| db("read a feed head", e))?;
    super::codec::uint(head, "cursor")
}

pub(super) async fn read_feed(
    pool: &SqlitePool,
    tenant: &TenantId,
    after: u64,
    limit: usize,
) -> Result<Vec<FeedEvent>> {
    let floor = feed_floor(pool, tenant).await?;
    if after.saturating_add(1) < floor {
        return Err(Error::OffsetExpired {
            requested: after,
            earliest: floor,
        });
    }
    let rows = sqlx::query(
        "SELECT cursor, task, tenant, seq, at, kind FROM events WHERE tenant = ? AND cursor > ? \
         ORDER BY cursor LIMIT ?",
    )
    .bind(tenant.as_str())
    .bind(int(after))
    .bind(int(limit as u64))
    .fetch_all(pool)
    .await
    .map_err(|e| db("read a feed", e))?;
    rows.iter().map(feed_event).collect()
}

/// A tenant feed's earliest readable cursor (0: never compacted).
pub(super) async fn feed_floor(pool: &SqlitePool, tenant: &TenantId) -> Result<u64> {
    let floor: Option<i64> = sqlx::query_scalar("SELECT floor FROM retention WHERE tenant = ?")
        .bind(tenant.as_str())
        .fetch_optional(pool)
        .await
        .map_err(|e| db("read the retention floor", e))?;
    super::codec::uint(floor.unwrap_or(0), "floor")
}

/// The tenants that have stored tasks.
pub(super) async fn tenants(pool: &SqlitePool) -> Result<Vec<TenantId>> {
    let rows: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tenant FROM queues")
        .fetch_all(pool)
        .await
        .map_err(|e| db("list tenants", e))?;
    Ok(rows.into_iter().map(TenantId::from).collect())
}

pub(super) async fn key_slots(
    pool: &SqlitePool,
    tenant: &TenantId,
    key: &str,
) -> Result<hive_core::store::KeySlots> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT id, key_wait FROM tasks INDEXED BY tasks_keys \
         WHERE tenant = ? AND ckey = ? AND state IN (0, 1, 2)",
    )
    .bind(tenant.as_str())
    .bind(key)
    .fetch_all(pool)
    .await
    .map_err(|e| db("read a concurrency key's slots", e))?;
    let tasks = rows
        .into_iter()
        .map(|(id, wait)| Ok((super::codec::task_id(&id)?, wait != 0)))
        .collect::<Result<Vec<_>>>()?;
    Ok(hive_core::store::KeySlots::from_tasks(tasks))
}

pub(super) async fn unacked_terminal(
    pool: &SqlitePool,
    tenant: &TenantId,
    consumer: &str,
    limit: usize,
) -> Result<Vec<FeedEvent>> {
    let rows = sqlx::query(
        "SELECT e.cursor, e.task, e.tenant, e.seq, e.at, e.kind FROM events e INDEXED BY events_terminal \
         WHERE e.tenant = ?1 AND e.terminal = 1 \
         AND e.cursor > coalesce((SELECT floor FROM consumers WHERE tenant = ?1 AND name = ?2), 0) \
         AND e.cursor >= coalesce((SELECT floor FROM retention WHERE tenant = ?1), 0) \
         AND NOT EXISTS (SELECT 1 FROM consumer_acks a \
                         WHERE a.tenant = ?1 AND a.name = ?2 AND a.cursor = e.cursor) \
         ORDER BY e.cursor LIMIT ?3",
    )
    .bind(tenant.as_str())
    .bind(consumer)
    .bind(int(limit as u64))
    .fetch_all(pool)
    .await
    .map_err(|e| db("list unacknowledged terminal events", e))?;
    rows.iter().map(feed_event).collect()
}

pub(super) async fn get_node(pool: &SqlitePool, id: NodeId) -> Result<Option<Node>> {
    let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(pool)
        .await
        .map_err(|e| db("read a node", e))?;
    row.as_ref().map(node).transpose()
}

pub(super) async fn list_nodes(pool: &SqlitePool) -> Result<Vec<Node>> {
    let sql = format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id");
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .map_err(|e| db("list nodes", e))?;
    rows.iter().map(node).collect()
}

/// `Err(NotFound)` for a missing task, for waiters.
pub(super) fn require<T>(v: Option<T>, id: TaskId) -> Result<T> {
    v.ok_or_else(|| Error::NotFound {
        kind: "task",
        id: id.to_string(),
    })
}
