//! Per-task server costs of a throughput run, read from the server's own
//! counters before and after it, so that a change to a durable backend is
//! judged on what it costs the server and not only on tasks/s:
//!
//! - PostgreSQL: commits (`pg_stat_database.xact_commit`), rows written
//!   (`tup_inserted + tup_updated + tup_deleted`) of the benchmark's database,
//!   WAL bytes (`pg_stat_wal`, server-wide), and statements when the
//!   `pg_stat_statements` extension is loaded (`na` otherwise);
//! - Redis: CPU (`INFO cpu`: `used_cpu_sys + used_cpu_user`) and commands
//!   (`INFO stats`: `total_commands_processed`), server-wide.
//!
//! Server-wide counters include anything else the server did meanwhile: run
//! the benchmark on a server of its own.

use sqlx::Row;
use sqlx::postgres::PgConnection;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    commits: f64,
    rows: f64,
    wal_bytes: f64,
    statements: Option<f64>,
    cpu_s: f64,
    commands: f64,
}

/// Where the counters are read.
pub(crate) enum Probe {
    Postgres(String),
    Redis(String),
}

impl Probe {
    /// The probe for `backend` at `url` (the base URL, without the run's
    /// schema or prefix); none for memory and SQLite.
    pub(crate) fn for_backend(backend: &str, url: &str) -> Option<Probe> {
        match backend {
            "postgres" => Some(Probe::Postgres(url.to_owned())),
            "redis" => Some(Probe::Redis(url.to_owned())),
            _ => None,
        }
    }

    /// Reads the counters now.
    pub(crate) async fn read(&self) -> Result<Counters, BoxError> {
        match self {
            Probe::Postgres(url) => postgres(url).await,
            Probe::Redis(url) => redis(url).await,
        }
    }

    /// `key=value` pairs of the costs per task between two readings.
    pub(crate) fn per_task(&self, before: &Counters, after: &Counters, tasks: usize) -> String {
        let n = tasks.max(1) as f64;
        match self {
            Probe::Postgres(_) => {
                let stmts = match (before.statements, after.statements) {
                    (Some(b), Some(a)) => format!("{:.2}", (a - b) / n),
                    _ => "na".to_owned(),
                };
                format!(
                    "stmts_per_task={stmts} commits_per_task={:.3} rows_per_task={:.2} wal_bytes_per_task={:.0}",
                    (after.commits - before.commits) / n,
                    (after.rows - before.rows) / n,
                    (after.wal_bytes - before.wal_bytes) / n,
                )
            }
            Probe::Redis(_) => format!(
                "redis_cpu_us_per_task={:.1} redis_cmds_per_task={:.2}",
                (after.cpu_s - before.cpu_s) * 1e6 / n,
                (after.commands - before.commands) / n,
            ),
        }
    }
}

async fn postgres(url: &str) -> Result<Counters, BoxError> {
    use sqlx::Connection;
    let mut conn = PgConnection::connect(url).await?;
    let db = sqlx::query(
        "select xact_commit::float8 as commits, \
                (tup_inserted + tup_updated + tup_deleted)::float8 as rows \
           from pg_stat_database where datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await?;
    let wal: f64 = sqlx::query("select wal_bytes::float8 from pg_stat_wal")
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
    // Only when the extension is loaded and created; absent is not an error.
    let statements = match sqlx::query(
        "select coalesce(sum(calls), 0)::float8 from pg_stat_statements \
          where dbid = (select oid from pg_database where datname = current_database())",
    )
    .fetch_one(&mut conn)
    .await
    {
        Ok(row) => Some(row.try_get::<f64, _>(0)?),
        Err(_) => None,
    };
    // pg_stat_database is refreshed at transaction end: this connection's
    // own statements add a constant handful, negligible per task.
    Ok(Counters {
        commits: db.try_get("commits")?,
        rows: db.try_get("rows")?,
        wal_bytes: wal,
        statements,
        ..Counters::default()
    })
}

async fn redis(url: &str) -> Result<Counters, BoxError> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("all").query_async(&mut conn).await?;
    let field = |name: &str| -> Result<f64, BoxError> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .ok_or_else(|| format!("INFO lacks {name}"))?
            .trim()
            .parse::<f64>()
            .map_err(|e| format!("INFO {name}: {e}").into())
    };
    Ok(Counters {
        cpu_s: field("used_cpu_sys")? + field("used_cpu_user")?,
        commands: field("total_commands_processed")?,
        ..Counters::default()
    })
}
