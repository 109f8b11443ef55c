//! Nodes and the supervisor's sweep.
//!
//! Lock order, followed by every transaction so that none deadlocks: task rows
//! (by id), then node rows (by id), then feed heads (by tenant, in the last
//! statement). A claim locks its node first but takes tasks with `SKIP LOCKED`,
//! so it never waits for a task while holding a node.

use hive_core::clock::Timestamp;
use hive_core::id::NodeId;
use hive_core::node::{Node, NodeStatus};
use hive_core::store::{SweepOptions, SweepReport};
use hive_core::task::machine::{self, Op};
use hive_core::{Error, Result};
use sqlx::PgConnection;

use super::PostgresStore;
use super::codec::{self, NodeRow, node_columns};
use super::error::db;
use super::notify::Signal;
use super::transition::{LockedRow, Transitions, locked, locked_columns};

fn node_not_found(id: NodeId) -> Error {
    Error::NotFound {
        kind: "node",
        id: id.to_string(),
    }
}

/// Locks the tasks leased to `nodes`, waiting for them (tasks come first in the
/// lock order), and adds them to `batch`.
async fn lock_leases(
    conn: &mut PgConnection,
    nodes: &[String],
    batch: &mut Transitions,
) -> Result<()> {
    let rows: Vec<LockedRow> = sqlx::query_as(concat!(
        "SELECT ",
        locked_columns!(),
        " FROM tasks WHERE lease_node = ANY($1::text[]::uuid[]) ORDER BY id FOR UPDATE"
    ))
    .bind(nodes)
    .fetch_all(conn)
    .await
    .map_err(|e| db("lock leases", e))?;
    for row in rows {
        batch.add(locked(row)?);
    }
    Ok(())
}

/// Leases granted to `nodes` after [`lock_leases`] (by claims that committed in
/// between), now that the nodes are locked and no claim can add more. Skips
/// rows another transaction holds (waiting here could deadlock); those leases
/// end by their own deadlines.
async fn lock_late_leases(
    conn: &mut PgConnection,
    nodes: &[String],
    batch: &mut Transitions,
) -> Result<()> {
    let held: Vec<String> = (0..batch.len())
        .map(|i| batch.task(i).id.to_string())
        .collect();
    let rows: Vec<LockedRow> = sqlx::query_as(concat!(
        "SELECT ",
        locked_columns!(),
        " FROM tasks WHERE lease_node = ANY($1::text[]::uuid[]) \
           AND NOT (id = ANY($2::text[]::uuid[])) ORDER BY id FOR UPDATE SKIP LOCKED"
    ))
    .bind(nodes)
    .bind(held)
    .fetch_all(conn)
    .await
    .map_err(|e| db("lock leases", e))?;
    for row in rows {
        batch.add(locked(row)?);
    }
    Ok(())
}

/// Ends every loaded lease held by one of `nodes` as placement lost; answers
/// how many.
fn lose_placements(batch: &mut Transitions, nodes: &[NodeId], now: Timestamp) -> usize {
    let mut lost = 0;
    for i in 0..batch.len() {
        let Some(node) = batch.task(i).core.lease.as_ref().map(|l| l.node) else {
            continue;
        };
        if !nodes.contains(&node) {
            continue;
        }
        match batch.apply(i, Op::LosePlacement { node }, now) {
            Ok(_) => lost += 1,
            Err(e) => {
                let task = batch.task(i).id;
                tracing::error!(%task, error = %e, "reclaiming a lease failed");
            }
        }
    }
    lost
}

impl PostgresStore {
    pub(super) async fn insert_node(&self, node: Node) -> Result<()> {
        let inserted = sqlx::query(
            "INSERT INTO nodes (id, spec, status, registered_at, last_seen) \
             VALUES ($1::uuid, $2::json, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(node.id.to_string())
        .bind(codec::encode_node_spec(&node.spec)?)
        .bind(codec::node_status_str(node.status))
        .bind(node.registered_at.as_millis())
        .bind(node.last_seen.as_millis())
        .execute(&self.pool)
        .await
        .map_err(|e| db("register node", e))?
        .rows_affected();
        if inserted == 0 {
            return Err(Error::Conflict {
                message: format!("node {} already exists", node.id),
            });
        }
        self.notify_work().await
    }

    /// Tells every process's idle workers that work may be claimable.
    async fn notify_work(&self) -> Result<()> {
        let mut signal = Signal::default();
        signal.work();
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.channel)
            .bind(signal.payload())
            .execute(&self.pool)
            .await
            .map_err(|e| db("notify", e))?;
        Ok(())
    }

    pub(super) async fn node(&self, id: NodeId) -> Result<Option<Node>> {
        let row: Option<NodeRow> = sqlx::query_as(concat!(
            "SELECT ",
            node_columns!(),
            " FROM nodes WHERE id = $1::uuid"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db("read node", e))?;
        row.map(codec::node).transpose()
    }

    pub(super) async fn nodes(&self) -> Result<Vec<Node>> {
        let rows: Vec<NodeRow> = sqlx::query_as(concat!(
            "SELECT ",
            node_columns!(),
            " FROM nodes ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db("list nodes", e))?;
        rows.into_iter().map(codec::node).collect()
    }

    pub(super) async fn touch(&self, id: NodeId, now: Timestamp) -> Result<Node> {
        let row: Option<NodeRow> = sqlx::query_as(concat!(
            "UPDATE nodes SET last_seen = greatest(last_seen, $2), \
               status = CASE WHEN status = 'lost' THEN 'ready' ELSE status END \
             WHERE id = $1::uuid RETURNING ",
            node_columns!()
        ))
        .bind(id.to_string())
        .bind(now.as_millis())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db("touch node", e))?;
        codec::node(row.ok_or_else(|| node_not_found(id))?)
    }

    pub(super) async fn set_status(
        &self,
        id: NodeId,
        status: NodeStatus,
        now: Timestamp,
    ) -> Result<Node> {
        if status == NodeStatus::Lost {
            let mut tx = self.begin().await?;
            let key = vec![id.to_string()];
            let mut batch = Transitions::default();
            lock_leases(&mut tx, &key, &mut batch).await?;
            let found = sqlx::query(
                "UPDATE nodes SET status = 'lost', last_seen = greatest(last_seen, $2) \
                 WHERE id = $1::uuid",
            )
            .bind(id.to_string())
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await
            .map_err(|e| db("set node status", e))?
            .rows_affected();
            if found == 0 {
                return Err(node_not_found(id));
            }
            lock_late_leases(&mut tx, &key, &mut batch).await?;
            lose_placements(&mut batch, &[id], now);
            batch.persist(&mut tx, &self.channel, now, &[]).await?;
            tx.commit().await.map_err(|e| db("commit", e))?;
            return self.node(id).await?.ok_or_else(|| node_not_found(id));
        }
        let row: Option<NodeRow> = sqlx::query_as(concat!(
            "UPDATE nodes SET status = $2, last_seen = greatest(last_seen, $3) \
             WHERE id = $1::uuid RETURNING ",
            node_columns!()
        ))
        .bind(id.to_string())
        .bind(codec::node_status_str(status))
        .bind(now.as_millis())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db("set node status", e))?;
        let node = codec::node(row.ok_or_else(|| node_not_found(id))?)?;
        if status == NodeStatus::Ready {
            self.notify_work().await?;
        }
        Ok(node)
    }

    pub(super) async fn delete_node(&self, id: NodeId, now: Timestamp) -> Result<()> {
        let mut tx = self.begin().await?;
        let key = vec![id.to_string()];
        let mut batch = Transitions::default();
        lock_leases(&mut tx, &key, &mut batch).await?;
        let deleted = sqlx::query("DELETE FROM nodes WHERE id = $1::uuid")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(|e| db("remove node", e))?
            .rows_affected();
        if deleted == 0 {
            return Err(node_not_found(id));
        }
        lock_late_leases(&mut tx, &key, &mut batch).await?;
        lose_placements(&mut batch, &[id], now);
        batch.persist(&mut tx, &self.channel, now, &[]).await?;
        tx.commit().await.map_err(|e| db("commit", e))?;
        Ok(())
    }

    pub(super) async fn sweep_once(
        &self,
        now: Timestamp,
        options: &SweepOptions,
    ) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        self.sweep_lost_nodes(now, options, &mut report).await?;
        self.expire_deadlines(now, options, &mut report).await?;
        Ok(report)
    }

    /// Nodes not seen for `node_lost_after` become Lost and their leases end.
    async fn sweep_lost_nodes(
        &self,
        now: Timestamp,
        options: &SweepOptions,
        report: &mut SweepReport,
    ) -> Result<()> {
        let lost_after = i64::try_from(options.node_lost_after.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now.as_millis().saturating_sub(lost_after);
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT id::text FROM nodes WHERE status <> 'lost' AND last_seen < $1",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db("find lost nodes", e))?;
        if stale.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let mut batch = Transitions::default();
        lock_leases(&mut tx, &stale, &mut batch).await?;
        // Checked again under the node locks: a node seen meanwhile is not lost.
        let lost: Vec<String> = sqlx::query_scalar(
            "UPDATE nodes SET status = 'lost' WHERE id IN \
               (SELECT id FROM nodes WHERE id = ANY($1::text[]::uuid[]) \
                  AND status <> 'lost' AND last_seen < $2 ORDER BY id FOR UPDATE) \
             RETURNING id::text",
        )
        .bind(&stale)
        .bind(cutoff)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db("mark nodes lost", e))?;
        if !lost.is_empty() {
            lock_late_leases(&mut tx, &lost, &mut batch).await?;
        }
        let lost_ids = lost
            .iter()
            .map(|s| codec::node_id(s))
            .collect::<Result<Vec<_>>>()?;
        for id in &lost_ids {
            tracing::info!(node = %id, "node lost");
        }
        let placements = lose_placements(&mut batch, &lost_ids, now);
        batch.persist(&mut tx, &self.channel, now, &[]).await?;
        tx.commit().await.map_err(|e| db("commit", e))?;
        report.nodes_lost += lost_ids.len();
        report.placements_lost += placements;
        Ok(())
    }

    /// Due deadlines, oldest first, up to `limit`; rows another sweeper (or a
    /// transition) holds are skipped and left to the next sweep.
    async fn expire_deadlines(
        &self,
        now: Timestamp,
        options: &SweepOptions,
        report: &mut SweepReport,
    ) -> Result<()> {
        if options.limit == 0 {
            report.more = true;
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let rows: Vec<LockedRow> = sqlx::query_as(concat!(
            "SELECT ",
            locked_columns!(),
            " FROM tasks WHERE deadline_at <= $1 ORDER BY deadline_at, id \
              LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
        .bind(now.as_millis())
        .bind(codec::limit(options.limit.saturating_add(1)))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db("find due deadlines", e))?;
        if rows.len() > options.limit {
            report.more = true;
        }
        let mut batch = Transitions::default();
        // Rows whose stored deadline disagrees with the machine's (not due after
        // all): their index entry is corrected so that they are not found again.
        let mut stale_ids = Vec::new();
        let mut stale_deadlines = Vec::new();
        for row in rows.into_iter().take(options.limit) {
            let i = batch.add(locked(row)?);
            let t = batch.task(i);
            let facts = machine::TaskFacts {
                id: t.id,
                created_at: t.created_at,
                spec: &t.spec,
            };
            let due = machine::deadline(&t.core, facts);
            let phase = match due {
                Some((at, phase)) if at <= now => phase,
                _ => {
                    stale_ids.push(t.id.to_string());
                    stale_deadlines.push(due.map(|(at, _)| at.as_millis()));
                    continue;
                }
            };
            match batch.apply(i, Op::Expire { phase }, now) {
                Ok(_) => report.expired += 1,
                Err(e) => {
                    let task = batch.task(i).id;
                    tracing::error!(%task, error = %e, "expiring a deadline failed");
                }
            }
        }
        if !stale_ids.is_empty() {
            sqlx::query(
                "UPDATE tasks t SET deadline_at = u.deadline_at \
                 FROM UNNEST($1::text[], $2::int8[]) AS u(id, deadline_at) \
                 WHERE t.id = u.id::uuid",
            )
            .bind(stale_ids)
            .bind(stale_deadlines)
            .execute(&mut *tx)
            .await
            .map_err(|e| db("correct deadlines", e))?;
        }
        batch.persist(&mut tx, &self.channel, now, &[]).await?;
        tx.commit().await.map_err(|e| db("commit", e))?;
        Ok(())
    }
}
