//! Nodes and the supervisor's sweep inside the write transaction.

use super::*;

impl Tx<'_> {
    /// Ends every lease of `node` as placement lost; returns how many.
    pub(super) async fn reclaim(&mut self, node: NodeId) -> Result<usize> {
        self.flush().await?;
        // Every lease has a deadline: the deadline index holds them all.
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tasks INDEXED BY tasks_deadlines \
             WHERE deadline_at IS NOT NULL AND lease_node = ?",
        )
        .bind(node.to_string())
        .fetch_all(self.conn())
        .await
        .map_err(|e| db("find a node's leases", e))?;
        let ids = ids.iter().map(|s| task_id(s)).collect::<Result<Vec<_>>>()?;
        self.load(&ids).await?;
        let mut count = 0;
        for id in ids {
            match self.transition(id, Op::LosePlacement { node }) {
                Ok(_) => count += 1,
                Err(e) => tracing::error!(task = %id, error = %e, "reclaiming a lease failed"),
            }
        }
        Ok(count)
    }

    pub(in crate::sqlite) async fn register_node(&mut self, n: &Node) -> Result<()> {
        let sql = format!("INSERT INTO nodes ({NODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)");
        let res = sqlx::query(AssertSqlSafe(sql))
            .bind(n.id.to_string())
            .bind(to_json!(&n.spec, "node spec")?)
            .bind(node_status_code(n.status))
            .bind(i64::from(n.in_flight))
            .bind(n.registered_at.as_millis())
            .bind(n.last_seen.as_millis())
            .execute(self.conn())
            .await;
        match res {
            Ok(_) => {
                self.fx.new_work = true;
                Ok(())
            }
            Err(sqlx::Error::Database(d))
                if d.kind() == sqlx::error::ErrorKind::UniqueViolation =>
            {
                Err(Error::Conflict {
                    message: format!("node {} already exists", n.id),
                })
            }
            Err(e) => Err(db("register a node", e)),
        }
    }

    pub(in crate::sqlite) async fn touch_node(&mut self, id: NodeId) -> Result<Node> {
        let sql = format!(
            "UPDATE nodes SET last_seen = max(last_seen, ?), \
             status = CASE WHEN status = 2 THEN 0 ELSE status END \
             WHERE id = ? RETURNING {NODE_COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(self.now.as_millis())
            .bind(id.to_string())
            .fetch_optional(self.conn())
            .await
            .map_err(|e| db("touch a node", e))?;
        row.as_ref()
            .map(node)
            .transpose()?
            .ok_or_else(|| not_found("node", id))
    }

    pub(in crate::sqlite) async fn set_node_status(
        &mut self,
        id: NodeId,
        status: NodeStatus,
    ) -> Result<Node> {
        let done =
            sqlx::query("UPDATE nodes SET status = ?, last_seen = max(last_seen, ?) WHERE id = ?")
                .bind(node_status_code(status))
                .bind(self.now.as_millis())
                .bind(id.to_string())
                .execute(self.conn())
                .await
                .map_err(|e| db("set a node's status", e))?;
        if done.rows_affected() == 0 {
            return Err(not_found("node", id));
        }
        match status {
            NodeStatus::Lost => {
                self.reclaim(id).await?;
                self.flush().await?;
            }
            NodeStatus::Ready => self.fx.new_work = true,
            NodeStatus::Draining => {}
        }
        self.node(id).await?.ok_or_else(|| not_found("node", id))
    }

    pub(in crate::sqlite) async fn remove_node(&mut self, id: NodeId) -> Result<()> {
        if self.node(id).await?.is_none() {
            return Err(not_found("node", id));
        }
        self.reclaim(id).await?;
        self.flush().await?;
        sqlx::query("DELETE FROM nodes WHERE id = ?")
            .bind(id.to_string())
            .execute(self.conn())
            .await
            .map_err(|e| db("remove a node", e))?;
        Ok(())
    }

    pub(in crate::sqlite) async fn sweep(&mut self, options: &SweepOptions) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let threshold = self
            .now
            .as_millis()
            .saturating_sub(ms(options.node_lost_after));
        let lost: Vec<String> =
            sqlx::query_scalar("SELECT id FROM nodes WHERE status <> 2 AND last_seen < ?")
                .bind(threshold)
                .fetch_all(self.conn())
                .await
                .map_err(|e| db("find lost nodes", e))?;
        for id in lost {
            let id = crate::sqlite::codec::node_id(&id)?;
            sqlx::query("UPDATE nodes SET status = 2 WHERE id = ?")
                .bind(id.to_string())
                .execute(self.conn())
                .await
                .map_err(|e| db("mark a node lost", e))?;
            tracing::info!(node = %id, "node lost");
            report.nodes_lost += 1;
            report.placements_lost += self.reclaim(id).await?;
        }
        self.flush().await?;
        let limit = i64::try_from(options.limit).unwrap_or(i64::MAX - 1);
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE deadline_at <= ? ORDER BY deadline_at LIMIT ?",
        )
        .bind(self.now.as_millis())
        .bind(limit + 1)
        .fetch_all(self.conn())
        .await
        .map_err(|e| db("find due deadlines", e))?;
        let mut due = due.iter().map(|s| task_id(s)).collect::<Result<Vec<_>>>()?;
        if due.len() > options.limit {
            report.more = true;
            due.truncate(options.limit);
        }
        self.load(&due).await?;
        for id in due {
            let Some(t) = self.tasks.get(&id) else {
                continue;
            };
            let facts = TaskFacts {
                id,
                created_at: t.created_at,
                spec: &t.spec,
            };
            let Some((at, phase)) = machine::deadline(&t.core, facts) else {
                continue;
            };
            if at > self.now {
                continue;
            }
            match self.transition(id, Op::Expire { phase }) {
                Ok(_) => report.expired += 1,
                Err(e) => tracing::error!(task = %id, error = %e, "expiring a deadline failed"),
            }
        }
        Ok(report)
    }
}
