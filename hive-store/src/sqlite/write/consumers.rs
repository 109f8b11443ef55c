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
