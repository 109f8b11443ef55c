//! Reading task streams and tenant feeds, waiting on them, and named consumers
//! of terminal events.

use std::time::Duration;

use hive_core::Result;
use hive_core::clock::Timestamp;
use hive_core::id::TaskId;
use hive_core::principal::TenantId;
use hive_core::task::{FeedEvent, TaskEvent};

use super::PostgresStore;
use super::codec;
use super::error::db;
use super::notify::task_bucket;
use super::transition::task_not_found;

/// A row of a stream read: the task's tenant, then seq, at and kind of one
/// event (all null when there is none).
type StreamRow = (String, Option<i64>, Option<i64>, Option<String>);

/// A row of a feed read: cursor, task, seq, at, kind.
type FeedRow = (i64, String, i64, i64, String);

/// A row of a feed read with the tenant's retention floor first (the event
/// columns are null when the page is empty).
type FlooredFeedRow = (
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

fn feed_event(tenant: &TenantId, row: FeedRow) -> Result<FeedEvent> {
    let (cursor, task, seq, at, kind) = row;
    Ok(FeedEvent {
        cursor: codec::count("feed cursor", cursor)?,
        event: TaskEvent {
            task: codec::task_id(&task)?,
            tenant: tenant.clone(),
            seq: codec::count("seq", seq)?,
            at: Timestamp::from_millis(at),
            kind: codec::decode_event(&kind)?,
        },
    })
}

impl PostgresStore {
    pub(super) async fn events(
        &self,
        task: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TaskEvent>> {
        // The task row answers NotFound and the tenant; a task with no events
        // after `after` reads one row.
        let rows: Vec<StreamRow> = sqlx::query_as(
            "SELECT t.tenant, e.seq, e.at, e.kind::text FROM tasks t \
             LEFT JOIN LATERAL (SELECT seq, at, kind FROM task_events \
                 WHERE task = t.id AND seq > $2 ORDER BY seq LIMIT $3) e ON true \
             WHERE t.id = $1::uuid ORDER BY e.seq",
        )
        .bind(task.to_string())
        .bind(codec::big(after))
        .bind(codec::limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db("read events", e))?;
        if rows.is_empty() {
            return Err(task_not_found(task));
        }
        // Retention keeps a compacted task's terminal event only.
        if let Some((_, Some(first), _, _)) = rows.first()
            && codec::count("seq", *first)? > after.saturating_add(1)
        {
            return Err(hive_core::Error::OffsetExpired {
                requested: after,
                earliest: codec::count("seq", *first)?,
            });
        }
        let mut out = Vec::with_capacity(rows.len());
        for (tenant, seq, at, kind) in rows {
            let (Some(seq), Some(at), Some(kind)) = (seq, at, kind) else {
                continue;
            };
            out.push(TaskEvent {
                task,
                tenant: tenant.into(),
                seq: codec::count("seq", seq)?,
                at: Timestamp::from_millis(at),
                kind: codec::decode_event(&kind)?,
            });
        }
        Ok(out)
    }

    pub(super) async fn wait_events(
        &self,
        task: TaskId,
        after: u64,
        timeout: Duration,
    ) -> Result<()> {
        // Registered before the check, so that an event committed after the
        // check is a notification this waiter receives.
        self.hub
            .tasks
            .wait(task_bucket(task), timeout, async {
                let last: Option<i64> =
                    sqlx::query_scalar("SELECT last_seq FROM tasks WHERE id = $1::uuid")
                        .bind(task.to_string())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(|e| db("read task seq", e))?;
                let last = last.ok_or_else(|| task_not_found(task))?;
                Ok(codec::count("seq", last)? > after)
            })
            .await
    }

    pub(super) async fn feed(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        // One round trip: the retention floor with the page.
        let rows: Vec<FlooredFeedRow> =
            sqlx::query_as(
                "SELECT coalesce((SELECT floor FROM feed_retention WHERE tenant = $1), 0), \
                        e.feed_cursor, e.task::text, e.seq, e.at, e.kind::text \
                 FROM (SELECT 1) one LEFT JOIN LATERAL ( \
                     SELECT feed_cursor, task, seq, at, kind FROM task_events \
                     WHERE tenant = $1 AND feed_cursor > $2 ORDER BY feed_cursor LIMIT $3) e ON true \
                 ORDER BY e.feed_cursor",
            )
            .bind(tenant.as_str())
            .bind(codec::big(after))
            .bind(codec::limit(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db("read feed", e))?;
        let floor = match rows.first() {
            Some((f, ..)) => codec::count("feed floor", *f)?,
            None => 0,
        };
        if after.saturating_add(1) < floor {
            return Err(hive_core::Error::OffsetExpired {
                requested: after,
                earliest: floor,
            });
        }
        rows.into_iter()
            .filter_map(|(_, c, t, s, a, k)| Some((c?, t?, s?, a?, k?)))
            .map(|r| feed_event(tenant, r))
            .collect()
    }

    pub(super) async fn wait_feed(
        &self,
        tenant: &TenantId,
        after: u64,
        timeout: Duration,
    ) -> Result<()> {
        self.hub
            .feeds
            .wait(tenant.clone(), timeout, async {
                let head: Option<i64> =
                    sqlx::query_scalar("SELECT head FROM feeds WHERE tenant = $1")
                        .bind(tenant.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(|e| db("read feed head", e))?;
                Ok(codec::count("feed cursor", head.unwrap_or(0))? > after)
            })
            .await
    }

    pub(super) async fn ack(
        &self,
        tenant: &TenantId,
        consumer: &str,
        tasks: &[TaskId],
    ) -> Result<()> {
        let ids: Vec<String> = tasks.iter().map(|t| t.to_string()).collect();
        let mut tx = self.begin().await?;
        // The consumer's row serializes its acknowledgements.
        let floor: i64 = sqlx::query_scalar(
            "INSERT INTO feed_consumers AS c (tenant, consumer) VALUES ($1, $2) \
             ON CONFLICT (tenant, consumer) DO UPDATE SET floor = c.floor \
             RETURNING floor",
        )
        .bind(tenant.as_str())
        .bind(consumer)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| db("lock consumer", e))?;
        sqlx::query(
            "INSERT INTO feed_acks (tenant, consumer, task, feed_cursor) \
             SELECT $1, $2, e.task, e.feed_cursor FROM task_events e \
             WHERE e.task = ANY($3::text[]::uuid[]) AND e.tenant = $1 AND e.terminal \
               AND e.feed_cursor > $4 \
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(consumer)
        .bind(&ids)
        .bind(floor)
        .execute(&mut *tx)
        .await
        .map_err(|e| db("acknowledge terminal events", e))?;
        // Move the floor over the acknowledged prefix and forget those acks.
        sqlx::query(
            "WITH first_open AS ( \
                 SELECT min(e.feed_cursor) AS c FROM task_events e \
                 WHERE e.tenant = $1 AND e.terminal AND e.feed_cursor > $3 \
                   AND NOT EXISTS (SELECT 1 FROM feed_acks a \
                       WHERE a.tenant = $1 AND a.consumer = $2 AND a.task = e.task)), \
             new_floor AS ( \
                 SELECT CASE WHEN f.c IS NULL \
                     THEN coalesce((SELECT max(feed_cursor) FROM feed_acks \
                                    WHERE tenant = $1 AND consumer = $2), $3) \
                     ELSE greatest(f.c - 1, $3) END AS v \
                 FROM first_open f), \
             moved AS ( \
                 UPDATE feed_consumers SET floor = (SELECT v FROM new_floor) \
                 WHERE tenant = $1 AND consumer = $2) \
             DELETE FROM feed_acks WHERE tenant = $1 AND consumer = $2 \
               AND feed_cursor <= (SELECT v FROM new_floor)",
        )
        .bind(tenant.as_str())
        .bind(consumer)
        .bind(floor)
        .execute(&mut *tx)
        .await
        .map_err(|e| db("advance consumer", e))?;
        tx.commit().await.map_err(|e| db("commit", e))?;
        Ok(())
    }

    pub(super) async fn unacked(
        &self,
        tenant: &TenantId,
        consumer: &str,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        let rows: Vec<FeedRow> = sqlx::query_as(
            "SELECT e.feed_cursor, e.task::text, e.seq, e.at, e.kind::text FROM task_events e \
             WHERE e.tenant = $1 AND e.terminal \
               AND e.feed_cursor >= coalesce((SELECT floor FROM feed_retention WHERE tenant = $1), 0) \
               AND e.feed_cursor > coalesce((SELECT floor FROM feed_consumers \
                                             WHERE tenant = $1 AND consumer = $2), 0) \
               AND NOT EXISTS (SELECT 1 FROM feed_acks a \
                   WHERE a.tenant = $1 AND a.consumer = $2 AND a.task = e.task) \
             ORDER BY e.feed_cursor LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(consumer)
        .bind(codec::limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db("read unacknowledged terminal events", e))?;
        rows.into_iter().map(|r| feed_event(tenant, r)).collect()
    }
}

impl PostgresStore {
    /// Retention (see `TaskStore::compact`): the tenant's terminal events
    /// from its floor on are the candidates, oldest first. One transaction;
    /// the floor row serializes compactors of one tenant.
    pub(super) async fn compact_tenant(
        &self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<hive_core::store::CompactReport> {
        let mut tx = self.pool.begin().await.map_err(|e| db("begin", e))?;
        sqlx::query(
            "INSERT INTO feed_retention (tenant, floor) VALUES ($1, 0) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db("create the retention floor", e))?;
        let floor: i64 =
            sqlx::query_scalar("SELECT floor FROM feed_retention WHERE tenant = $1 FOR UPDATE")
                .bind(tenant.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| db("read the retention floor", e))?;
        let rows: Vec<crate::compaction::Candidate> = sqlx::query_as(
            "SELECT feed_cursor, task::text, at FROM task_events \
             WHERE tenant = $1 AND terminal AND feed_cursor >= $2 ORDER BY feed_cursor LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(floor)
        .bind(codec::limit(limit.saturating_add(1)))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db("find ended tasks to compact", e))?;
        let (due, more) = crate::compaction::due(&rows, ended_before, limit);
        let mut report = hive_core::store::CompactReport {
            feed_floor: codec::count("feed floor", floor)?,
            more,
            ..Default::default()
        };
        let Some(last) = due.last() else {
            return Ok(report);
        };
        let tasks: Vec<&str> = due.iter().map(|(_, t, _)| t.as_str()).collect();
        let deleted = sqlx::query(
            "DELETE FROM task_events e USING unnest($1::text[]) AS c(id) \
             WHERE e.task = c.id::uuid AND NOT e.terminal",
        )
        .bind(&tasks)
        .execute(&mut *tx)
        .await
        .map_err(|e| db("delete compacted events", e))?;
        sqlx::query("UPDATE feed_retention SET floor = $2 WHERE tenant = $1")
            .bind(tenant.as_str())
            .bind(last.0 + 1)
            .execute(&mut *tx)
            .await
            .map_err(|e| db("move the retention floor", e))?;
        tx.commit().await.map_err(|e| db("commit", e))?;
        report.tasks = due.len();
        report.events = deleted.rows_affected() as usize;
        report.feed_floor = codec::count("feed floor", last.0 + 1)?;
        Ok(report)
    }

    /// Retention's second stage (see `TaskStore::purge`): compacted tasks,
    /// by their terminal events below the floor, from `purged_to` on.
    pub(super) async fn purge_tenant(
        &self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<(usize, bool)> {
        let mut tx = self.pool.begin().await.map_err(|e| db("begin", e))?;
        let marks: Option<(i64, i64)> = sqlx::query_as(
            "SELECT floor, purged_to FROM feed_retention WHERE tenant = $1 FOR UPDATE",
        )
        .bind(tenant.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db("read the retention floor", e))?;
        let Some((floor, purged_to)) = marks else {
            return Ok((0, false));
        };
        let rows: Vec<crate::compaction::Candidate> = sqlx::query_as(
            "SELECT feed_cursor, task::text, at FROM task_events \
             WHERE tenant = $1 AND terminal AND feed_cursor >= $2 AND feed_cursor < $3 \
             ORDER BY feed_cursor LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(purged_to)
        .bind(floor)
        .bind(codec::limit(limit.saturating_add(1)))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db("find compacted tasks to delete", e))?;
        let (due, more) = crate::compaction::due(&rows, ended_before, limit);
        let Some(last) = due.last() else {
            return Ok((0, false));
        };
        let tasks: Vec<&str> = due.iter().map(|(_, t, _)| t.as_str()).collect();
        for sql in [
            "DELETE FROM task_events WHERE task = ANY($1::text[]::uuid[]) AND tenant = $2",
            "DELETE FROM feed_acks WHERE task = ANY($1::text[]::uuid[]) AND tenant = $2",
            "DELETE FROM tasks WHERE id = ANY($1::text[]::uuid[]) AND tenant = $2",
        ] {
            sqlx::query(sql)
                .bind(&tasks)
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| db("delete compacted tasks", e))?;
        }
        sqlx::query("UPDATE feed_retention SET purged_to = $2 WHERE tenant = $1")
            .bind(tenant.as_str())
            .bind(last.0 + 1)
            .execute(&mut *tx)
            .await
            .map_err(|e| db("move the deletion mark", e))?;
        tx.commit().await.map_err(|e| db("commit", e))?;
        Ok((due.len(), more))
    }

    /// The tenants that have a feed.
    pub(super) async fn tenant_list(&self) -> Result<Vec<TenantId>> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT tenant FROM feeds")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db("list tenants", e))?;
        Ok(rows.into_iter().map(TenantId::from).collect())
    }
}
