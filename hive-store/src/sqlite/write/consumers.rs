//! Terminal-event consumers: acknowledgements and listings.

use super::*;

impl Tx<'_> {
    pub(in crate::sqlite) async fn ack_terminal(
        &mut self,
        tenant: &TenantId,
        consumer: &str,
        tasks: &[TaskId],
    ) -> Result<()> {
        let floor: i64 =
            sqlx::query_scalar("SELECT floor FROM consumers WHERE tenant = ? AND name = ?")
                .bind(tenant.as_str())
                .bind(consumer)
                .fetch_optional(self.conn())
                .await
                .map_err(|e| db("read a consumer", e))?
                .unwrap_or(0);
        for chunk in tasks.chunks(CHUNK) {
            let sql = format!(
                "INSERT OR IGNORE INTO consumer_acks (tenant, name, cursor) \
                 SELECT ?, ?, cursor FROM events INDEXED BY events_by_task \
                 WHERE task IN {} AND terminal = 1 AND tenant = ? AND cursor > ?",
                tuple(chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql))
                .bind(tenant.as_str())
                .bind(consumer);
            for id in chunk {
                q = q.bind(id.to_string());
            }
            q.bind(tenant.as_str())
                .bind(floor)
                .execute(self.conn())
                .await
                .map_err(|e| db("acknowledge terminal events", e))?;
        }
        // Move the floor up to just below the oldest unacknowledged terminal event.
        let unacked: Option<i64> = sqlx::query_scalar(
            "SELECT min(e.cursor) FROM events e INDEXED BY events_terminal \
             WHERE e.tenant = ?1 AND e.terminal = 1 AND e.cursor > ?3 \
             AND NOT EXISTS (SELECT 1 FROM consumer_acks a \
                             WHERE a.tenant = ?1 AND a.name = ?2 AND a.cursor = e.cursor)",
        )
        .bind(tenant.as_str())
        .bind(consumer)
        .bind(floor)
        .fetch_one(self.conn())
        .await
        .map_err(|e| db("find unacknowledged terminal events", e))?;
        let new_floor = match unacked {
            Some(c) => c - 1,
            None => sqlx::query_scalar(
                "SELECT coalesce(max(cursor), 0) FROM events INDEXED BY events_terminal \
                 WHERE tenant = ? AND terminal = 1",
            )
            .bind(tenant.as_str())
            .fetch_one(self.conn())
            .await
            .map_err(|e| db("read the last terminal event", e))?,
        };
        if new_floor > floor {
            sqlx::query(
                "INSERT INTO consumers (tenant, name, floor) VALUES (?, ?, ?) \
                 ON CONFLICT (tenant, name) DO UPDATE SET floor = excluded.floor",
            )
            .bind(tenant.as_str())
            .bind(consumer)
            .bind(new_floor)
            .execute(self.conn())
            .await
            .map_err(|e| db("move a consumer's floor", e))?;
            sqlx::query("DELETE FROM consumer_acks WHERE tenant = ? AND name = ? AND cursor <= ?")
                .bind(tenant.as_str())
                .bind(consumer)
                .bind(new_floor)
                .execute(self.conn())
                .await
                .map_err(|e| db("prune acknowledgements", e))?;
        }
        Ok(())
    }
}

impl Tx<'_> {
    /// Retention (see `TaskStore::compact`): the tenant's terminal events
    /// from its floor on are the candidates, oldest first.
    pub(in crate::sqlite) async fn compact(
        &mut self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<CompactReport> {
        let floor: i64 = sqlx::query_scalar("SELECT floor FROM retention WHERE tenant = ?")
            .bind(tenant.as_str())
            .fetch_optional(self.conn())
            .await
            .map_err(|e| db("read the retention floor", e))?
            .unwrap_or(0);
        let rows: Vec<crate::compaction::Candidate> = sqlx::query_as(
            "SELECT cursor, task, at FROM events INDEXED BY events_terminal \
             WHERE tenant = ? AND terminal = 1 AND cursor >= ? ORDER BY cursor LIMIT ?",
        )
        .bind(tenant.as_str())
        .bind(floor)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1))
        .fetch_all(self.conn())
        .await
        .map_err(|e| db("find ended tasks to compact", e))?;
        let (due, more) = crate::compaction::due(&rows, ended_before, limit);
        let mut report = CompactReport {
            feed_floor: u64::try_from(floor).unwrap_or(0),
            more,
            ..CompactReport::default()
        };
        let Some(last) = due.last() else {
            return Ok(report);
        };
        for chunk in due.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM events WHERE task IN {} AND terminal = 0",
                tuple(chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (_, task, _) in chunk {
                q = q.bind(task.as_str());
            }
            let done = q
                .execute(self.conn())
                .await
                .map_err(|e| db("delete compacted events", e))?;
            report.events += done.rows_affected() as usize;
        }
        let new_floor = last.0 + 1;
        sqlx::query(
            "INSERT INTO retention (tenant, floor) VALUES (?, ?) \
             ON CONFLICT (tenant) DO UPDATE SET floor = max(floor, excluded.floor)",
        )
        .bind(tenant.as_str())
        .bind(new_floor)
        .execute(self.conn())
        .await
        .map_err(|e| db("move the retention floor", e))?;
        report.tasks = due.len();
        report.feed_floor = u64::try_from(new_floor).unwrap_or(0);
        Ok(report)
    }

    /// Retention's second stage (see `TaskStore::purge`): compacted tasks,
    /// by their terminal events below the floor, from `purged_to` on.
    pub(in crate::sqlite) async fn purge(
        &mut self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<(usize, bool)> {
        let marks: Option<(i64, i64)> =
            sqlx::query_as("SELECT floor, purged_to FROM retention WHERE tenant = ?")
                .bind(tenant.as_str())
                .fetch_optional(self.conn())
                .await
                .map_err(|e| db("read the retention floor", e))?;
        let Some((floor, purged_to)) = marks else {
            return Ok((0, false));
        };
        let rows: Vec<crate::compaction::Candidate> = sqlx::query_as(
            "SELECT cursor, task, at FROM events INDEXED BY events_terminal \
             WHERE tenant = ? AND terminal = 1 AND cursor >= ? AND cursor < ? \
             ORDER BY cursor LIMIT ?",
        )
        .bind(tenant.as_str())
        .bind(purged_to)
        .bind(floor)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1))
        .fetch_all(self.conn())
        .await
        .map_err(|e| db("find compacted tasks to delete", e))?;
        let (due, more) = crate::compaction::due(&rows, ended_before, limit);
        let Some(last) = due.last() else {
            return Ok((0, false));
        };
        for chunk in due.chunks(CHUNK) {
            let ids = tuple(chunk.len());
            for sql in [
                format!("DELETE FROM events WHERE task IN {ids}"),
                format!("DELETE FROM task_specs WHERE id IN {ids}"),
                format!("DELETE FROM tasks WHERE id IN {ids}"),
            ] {
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for (_, task, _) in chunk {
                    q = q.bind(task.as_str());
                }
                q.execute(self.conn())
                    .await
                    .map_err(|e| db("delete compacted tasks", e))?;
            }
            let sql = format!(
                "DELETE FROM consumer_acks WHERE tenant = ? AND cursor IN {}",
                tuple(chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str());
            for (cursor, _, _) in chunk {
                q = q.bind(*cursor);
            }
            q.execute(self.conn())
                .await
                .map_err(|e| db("delete acknowledgements of deleted tasks", e))?;
        }
        sqlx::query("UPDATE retention SET purged_to = ? WHERE tenant = ?")
            .bind(last.0 + 1)
            .bind(tenant.as_str())
            .execute(self.conn())
            .await
            .map_err(|e| db("move the deletion mark", e))?;
        Ok((due.len(), more))
    }
}
