//! Concurrency keys inside the write transaction: counting a key's slots and
//! handing free ones to waiting tasks.

use super::*;

impl Tx<'_> {
    /// How many tasks of a concurrency key hold a slot and how many wait.
    pub(super) async fn key_counts(&mut self, tenant: &TenantId, key: &str) -> Result<(u64, u64)> {
        let (holding, waiting): (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(key_wait = 0), 0), coalesce(sum(key_wait = 1), 0) FROM tasks \
             WHERE tenant = ? AND ckey = ? AND state IN (0, 1, 2)",
        )
        .bind(tenant.as_str())
        .bind(key)
        .fetch_one(self.conn())
        .await
        .map_err(|e| db("count a concurrency key's slots", e))?;
        Ok((uint(holding, "slots")?, uint(waiting, "waiting")?))
    }

    /// Hands a concurrency key's free slots to its first waiting tasks
    /// (priority, then submission): each gets a fresh queue order (the end
    /// of its queue, so keys take turns) and its own `available_at` back.
    pub(super) async fn admit(&mut self, tenant: &TenantId, key: &str, max: u32) -> Result<()> {
        // One statement: the first waiting tasks, as many as slots are free,
        // get their own `available_at` back (from the core) and fresh orders.
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "WITH w AS ( \
                 SELECT id, row_number() OVER (ORDER BY priority DESC, ord) AS rn FROM tasks \
                 WHERE tenant = ?1 AND ckey = ?2 AND key_wait = 1 AND state IN (0, 1, 2) \
                 ORDER BY priority DESC, ord \
                 LIMIT max(0, ?3 - (SELECT count(*) FROM tasks \
                     WHERE tenant = ?1 AND ckey = ?2 AND key_wait = 0 AND state IN (0, 1, 2)))) \
             UPDATE tasks SET key_wait = 0, ord = ?4 + w.rn, \
                 available_at = json_extract(tasks.core, '$.available_at') \
             FROM w WHERE tasks.id = w.id \
             RETURNING tasks.id, tasks.available_at, tasks.ord",
        )
        .bind(tenant.as_str())
        .bind(key)
        .bind(i64::from(max))
        .bind(self.next_ord - 1)
        .fetch_all(self.conn())
        .await
        .map_err(|e| db("give tasks their concurrency slots", e))?;
        self.next_ord += rows.len() as i64;
        for (id, at, ord) in rows {
            let at = Timestamp::from_millis(at);
            if at <= self.now {
                self.fx.new_work = true;
            } else {
                self.fx.delayed.push(at);
            }
            if let Some(t) = self.tasks.get_mut(&task_id(&id)?) {
                t.ord = ord;
            }
        }
        Ok(())
    }
}
