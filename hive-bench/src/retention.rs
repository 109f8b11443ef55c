//! Store size under a steady load with retention (issue 17, item 5):
//!
//! ```text
//! hive-bench backend=B scenario=retention keep=1h delete=never|1h per_minute=1000 minute=M tasks=… events=… events_bytes=… store_bytes=…
//! ```
//!
//! A manual clock walks through `--seconds` simulated seconds (default three
//! hours); every simulated minute `per_minute` tasks (`--tasks`, default
//! 1,000) are submitted, claimed, started and reported (four events each),
//! and the engine's retention pass runs with a one-hour age. Every 30
//! simulated minutes a line gives what the store holds: stored events and
//! their bytes (events and feed), and the whole store's bytes (task rows
//! included, which retention keeps by design). With retention the events
//! stay flat after the first hour while the task rows grow; with
//! `--delete-ended` compacted tasks are also deleted after the hour
//! (`delete_ended`), and the whole store holds flat.
//!
//! Sizes: PostgreSQL `pg_total_relation_size` of `task_events` and of the
//! schema's tables, after a plain `VACUUM` (what autovacuum does many times
//! in a real hour); Redis `used_memory` (server-wide) and the events counted
//! from the tasks' `last_seq` minus what was compacted; SQLite the pages in
//! use.

use std::sync::Arc;
use std::time::Duration;

use hive_core::engine::{ClaimOptions, HiveConfig, Report, ReportOutcome};
use hive_core::node::NodeSpec;
use hive_core::{Hive, ManualClock, Principal, RetentionConfig, TaskSpec};

use crate::{Args, store_url};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) async fn bench(args: &Args) -> Result<(), BoxError> {
    let url = store_url(args)?;
    let store = hive_store::open(&url).await?;
    let per_minute = args.tasks.unwrap_or(1_000);
    let delete = args.delete_ended;
    let seconds = if args.seconds == 60 {
        3 * 3600
    } else {
        args.seconds
    };
    let clock = Arc::new(ManualClock::default());
    let hive = Hive::builder()
        .store(store)
        .clock(clock.clone())
        .config(HiveConfig {
            run_supervisor: false,
            run_workflows: false,
            retention: RetentionConfig {
                keep_ended: Some(Duration::from_secs(3600)),
                delete_ended: delete.then_some(Duration::from_secs(3600)),
                batch: 5_000,
                max_batches: 100,
                ..RetentionConfig::default()
            },
            ..HiveConfig::default()
        })
        .build()?;
    let system = Principal::system();
    let user = Principal::user("bench", "steady");
    let node = hive
        .register_node(&system, NodeSpec::system("steady", per_minute as u32))
        .await?;
    let worker = Principal::worker(node.tenant(), node.id);
    let mut compacted_events = 0u64;
    let mut deleted = 0u64;
    let mut total = 0u64;
    for minute in 1..=seconds / 60 {
        let specs = (0..per_minute)
            .map(|i| TaskSpec::new("noop", serde_json::json!({ "m": minute, "i": i })))
            .collect();
        hive.submit_batch(&user, specs).await?;
        let claimed = hive
            .claim(
                &worker,
                node.id,
                &ClaimOptions {
                    max: per_minute as u32,
                    agents: Vec::new(),
                    start: true,
                },
            )
            .await?
            .tasks;
        let reports = claimed
            .iter()
            .map(|c| Report {
                token: c.token,
                outcome: ReportOutcome::Success {
                    output: serde_json::json!({ "ok": true }),
                },
            })
            .collect();
        hive.report(&worker, reports).await?;
        total += per_minute as u64;
        clock.advance(Duration::from_secs(60));
        let r = hive.run_retention(&system).await?;
        compacted_events += r.events as u64;
        deleted += r.deleted as u64;
        if minute % 30 == 0 {
            let stored_events = total * 4 - compacted_events - deleted;
            let stored_tasks = total - deleted;
            let sizes = size(&args.backend, &url).await?;
            println!(
                "hive-bench backend={} scenario=retention keep=1h delete={} per_minute={per_minute} minute={minute} tasks={stored_tasks} events={stored_events} {sizes}",
                args.backend,
                if delete { "1h" } else { "never" },
            );
        }
    }
    hive.shutdown();
    Ok(())
}

/// `events_bytes=… store_bytes=…` for the store at `url`.
async fn size(backend: &str, url: &str) -> Result<String, BoxError> {
    match backend {
        "postgres" => {
            use sqlx::Connection;
            let (base, schema) = url.split_once("?schema=").ok_or("no schema in the URL")?;
            let mut conn = sqlx::postgres::PgConnection::connect(base).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "VACUUM \"{schema}\".task_events, \"{schema}\".tasks"
            )))
            .execute(&mut conn)
            .await?;
            let (events, all): (i64, i64) = sqlx::query_as(
                "SELECT pg_total_relation_size(format('%I.task_events', $1::text)::regclass), \
                        (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
                           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                          WHERE n.nspname = $1 AND c.relkind = 'r')",
            )
            .bind(schema)
            .fetch_one(&mut conn)
            .await?;
            Ok(format!("events_bytes={events} store_bytes={all}"))
        }
        "redis" => {
            let base = url.split('?').next().unwrap_or(url);
            let client = redis::Client::open(base)?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            let info: String = redis::cmd("INFO")
                .arg("memory")
                .query_async(&mut conn)
                .await?;
            let used = info
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .unwrap_or("0")
                .trim()
                .to_owned();
            Ok(format!("store_bytes={used}"))
        }
        "sqlite" => {
            let path = url.strip_prefix("sqlite://").ok_or("not a sqlite URL")?;
            let out = tokio::process::Command::new("sqlite3")
                .arg(path)
                .arg("PRAGMA page_size; PRAGMA page_count; PRAGMA freelist_count;")
                .output()
                .await;
            match out {
                Ok(o) if o.status.success() => {
                    let v: Vec<i64> = String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .filter_map(|l| l.trim().parse().ok())
                        .collect();
                    if let [page, count, free] = v[..] {
                        Ok(format!("store_bytes={}", page * (count - free)))
                    } else {
                        Ok("store_bytes=na".into())
                    }
                }
                _ => Ok(format!(
                    "store_bytes={}",
                    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
                )),
            }
        }
        _ => Ok("store_bytes=na".into()),
    }
}
