//! The PostgreSQL baseline: the naive three-statement job queue most teams
//! start with — insert a job; claim one with `FOR UPDATE SKIP LOCKED`; mark it
//! done — every statement its own autocommitted transaction, on the same
//! server, with as many producers and consumers as Hive has workers' worth of
//! concurrency. Printed as
//!
//! ```text
//! hive-bench backend=postgres baseline=naive-queue jobs=N per_s=… ratio=…
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sqlx::AssertSqlSafe;
use sqlx::postgres::PgPoolOptions;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `jobs` jobs through the naive queue with `producers` and `consumers`
/// connections; returns jobs per second.
pub(crate) async fn naive_queue(
    url: &str,
    jobs: usize,
    producers: usize,
    consumers: usize,
) -> Result<f64, BoxError> {
    // Hive's own query parameters are not the driver's.
    let url = hive_store::StoreUrl::parse(url, hive_store::OpenOptions::default())?.driver_url;
    let pool = PgPoolOptions::new()
        .max_connections((producers + consumers + 1) as u32)
        .connect(&url)
        .await?;
    let table = format!("naive_jobs_{}", std::process::id());
    sqlx::query(AssertSqlSafe(format!(
        "create table {table} (id bigserial primary key, payload jsonb not null, \
         state text not null default 'queued', created_at timestamptz not null default now())"
    )))
    .execute(&pool)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "create index on {table} (id) where state = 'queued'"
    )))
    .execute(&pool)
    .await?;
    let done = Arc::new(AtomicUsize::new(0));
    let produced = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let (pool, table, produced) = (pool.clone(), table.clone(), produced.clone());
        tasks.push(tokio::spawn(async move {
            while produced.fetch_add(1, Ordering::Relaxed) < jobs {
                sqlx::query(AssertSqlSafe(format!(
                    "insert into {table} (payload) values ('{{}}')"
                )))
                .execute(&pool)
                .await?;
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    for _ in 0..consumers {
        let (pool, table, done) = (pool.clone(), table.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let claim = format!(
                "update {table} set state = 'running' where id = (select id from {table} \
                 where state = 'queued' order by id for update skip locked limit 1) returning id"
            );
            let finish = format!("update {table} set state = 'done' where id = $1");
            while done.load(Ordering::Relaxed) < jobs {
                let row: Option<(i64,)> = sqlx::query_as(AssertSqlSafe(claim.as_str()))
                    .fetch_optional(&pool)
                    .await?;
                match row {
                    Some((id,)) => {
                        sqlx::query(AssertSqlSafe(finish.as_str()))
                            .bind(id)
                            .execute(&pool)
                            .await?;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    None => tokio::task::yield_now().await,
                }
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let per_s = jobs as f64 / start.elapsed().as_secs_f64();
    sqlx::query(AssertSqlSafe(format!("drop table {table}")))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(per_s)
}
