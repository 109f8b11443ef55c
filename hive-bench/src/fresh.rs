//! The stores a run creates for itself — a SQLite file in a fresh folder, a
//! fresh PostgreSQL schema, a fresh Redis key prefix — are removed when the
//! benchmark ends, so that repeated runs do not fill the disk or the server
//! (a durable run leaves tens of megabytes behind).

use std::path::PathBuf;
use std::sync::Mutex;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Something a run created on its own.
enum Fresh {
    /// A folder holding a SQLite file.
    Folder(PathBuf),
    /// A PostgreSQL schema on the server at `base` (a URL without `schema=`).
    Schema { base: String, schema: String },
    /// A Redis key prefix on the server at `base`.
    Prefix { base: String, prefix: String },
}

static CREATED: Mutex<Vec<Fresh>> = Mutex::new(Vec::new());

fn remember(f: Fresh) {
    CREATED.lock().unwrap_or_else(|e| e.into_inner()).push(f);
}

/// Remembers a fresh folder of a SQLite store.
pub(crate) fn folder(dir: PathBuf) {
    remember(Fresh::Folder(dir));
}

/// Remembers a fresh schema on the PostgreSQL server at `base`.
pub(crate) fn schema(base: &str, schema: &str) {
    remember(Fresh::Schema {
        base: base.to_owned(),
        schema: schema.to_owned(),
    });
}

/// Remembers a fresh key prefix on the Redis server at `base`.
pub(crate) fn prefix(base: &str, prefix: &str) {
    remember(Fresh::Prefix {
        base: base.to_owned(),
        prefix: prefix.to_owned(),
    });
}

/// Removes everything remembered; says on stderr what could not be removed
/// (the benchmark's lines stand either way).
pub(crate) async fn remove_all() {
    let all = std::mem::take(&mut *CREATED.lock().unwrap_or_else(|e| e.into_inner()));
    for f in all {
        let (what, result) = match &f {
            Fresh::Folder(dir) => (
                format!("folder {}", dir.display()),
                std::fs::remove_dir_all(dir).map_err(BoxError::from),
            ),
            Fresh::Schema { base, schema } => {
                (format!("schema {schema}"), drop_schema(base, schema).await)
            }
            Fresh::Prefix { base, prefix } => (
                format!("key prefix {prefix}"),
                drop_prefix(base, prefix).await,
            ),
        };
        if let Err(e) = result {
            eprintln!("hive-bench: could not remove the run's {what}: {e}");
        }
    }
}

async fn drop_schema(base: &str, schema: &str) -> Result<(), BoxError> {
    use sqlx::Connection;
    let mut conn = sqlx::postgres::PgConnection::connect(base).await?;
    // The name is ours (`hive_store::testing::unique_name`), quoted anyway.
    let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {quoted} CASCADE"
    )))
    .execute(&mut conn)
    .await?;
    Ok(())
}

async fn drop_prefix(base: &str, prefix: &str) -> Result<(), BoxError> {
    let client = redis::Client::open(base)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: i64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
