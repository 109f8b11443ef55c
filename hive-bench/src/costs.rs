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
//!
//! CPU on this machine (Linux, from `/proc`): `client_cpu_us_per_task` is
//! this process's user + system time (the engine, its workers, the drivers:
//! on memory and SQLite, everything), and for PostgreSQL
//! `server_cpu_us_per_task` is that of every `postgres` process here (its
//! live backends, and through the postmaster's reaped-children times those
//! that ended) — on a two-core machine the two share the cores, so their sum
//! bounds the rate. Both are read around the whole run, its setup (a fresh
//! schema, the connections) included.

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

/// CPU seconds (user + system) of this process and of the local PostgreSQL
/// server's processes, at one moment (`None` where `/proc` does not tell).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cpu {
    own: Option<f64>,
    postgres: Option<f64>,
}

/// Clock ticks per second of `/proc/*/stat` times (`CLK_TCK`; 100 on Linux).
const TICKS: f64 = 100.0;

/// The times of a `/proc/{pid}/stat` line after the command: utime, stime,
/// cutime, cstime (fields 14–17), in seconds; and the command.
fn stat_times(stat: &str) -> Option<(&str, [f64; 4])> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    // After ")": state is field 3, so utime (14) is the 12th from here.
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let f = |i: usize| rest.get(i)?.parse::<f64>().ok().map(|t| t / TICKS);
    Some((comm, [f(11)?, f(12)?, f(13)?, f(14)?]))
}

impl Cpu {
    /// Reads both now.
    pub(crate) fn now() -> Cpu {
        let own = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| stat_times(&s).map(|(_, t)| t[0] + t[1]));
        let mut postgres = None;
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let name = entry.file_name();
                if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                    continue;
                };
                if let Some(("postgres", t)) = stat_times(&stat) {
                    *postgres.get_or_insert(0.0) += t.iter().sum::<f64>();
                }
            }
        }
        Cpu { own, postgres }
    }

    /// `key=value` pairs of the CPU per task between two readings.
    pub(crate) fn per_task(&self, after: &Cpu, backend: &str, tasks: usize) -> String {
        let n = tasks.max(1) as f64;
        let mut out = String::new();
        if let (Some(b), Some(a)) = (self.own, after.own) {
            out += &format!(" client_cpu_us_per_task={:.1}", (a - b) * 1e6 / n);
        }
        if backend == "postgres"
            && let (Some(b), Some(a)) = (self.postgres, after.postgres)
        {
            out += &format!(" server_cpu_us_per_task={:.1}", (a - b) * 1e6 / n);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_their_times_and_command() {
        let line =
            "4242 (postgres) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 7 3 20 0 1 0 100 0 0";
        let (comm, t) = stat_times(line).unwrap();
        assert_eq!(comm, "postgres");
        assert_eq!(t, [2.5, 0.5, 0.07, 0.03]);
        // A command with spaces and parentheses in it.
        let odd = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 100 200 0 0 20 0 1 0 5 0 0";
        assert_eq!(stat_times(odd).unwrap().0, "a (b) c");
        assert!(stat_times("garbage").is_none());
        assert!(stat_times("1 (x) S 1").is_none());
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        let before = Cpu::now();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = Cpu::now();
        let line = before.per_task(&after, "memory", 1);
        assert!(line.starts_with(" client_cpu_us_per_task="), "{line}");
        assert!(after.own.unwrap() >= before.own.unwrap());
    }
}
