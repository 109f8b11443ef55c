//! The PostgreSQL backend (`postgres://…`): durable, shared by many processes
//! on many machines.
//!
//! Everything lives in one schema ([`OpenOptions::schema`]), created and
//! migrated on [`PostgresStore::connect`] (embedded migrations, applied under
//! the migrator's advisory lock, so processes starting together do not race).
//! Every connection has that schema as its `search_path`.
//!
//! - **Transitions.** A task's row is locked, the machine decides on its stored
//!   core, and the new core, its event and the tenant feed's cursor are written
//!   in the same transaction; a whole batch (a claim, a report of many results,
//!   a sweep) is one transaction and a handful of statements, never one per
//!   task.
//! - **Feed cursors** come from a per-tenant counter row that the appending
//!   statement locks until commit, so cursors are gapless and become visible in
//!   order.
//! - **Claims** lock the node's row, read eligible tasks (owner, shares,
//!   labels, agents, `avoid_node`, availability, all in SQL) of every tenant
//!   with `FOR UPDATE SKIP LOCKED`, and let the scheduler order them.
//! - **Waiters** wake on `LISTEN`/`NOTIFY`: one listening connection per store
//!   (see `notify`), so subscribers and idle workers never poll.

mod claim;
mod codec;
mod error;
mod events;
mod nodes;
mod notify;
mod records;
mod tasks;
mod transition;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hive_core::clock::Timestamp;
use hive_core::id::{NodeId, TaskId};
use hive_core::node::{Node, NodeStatus};
use hive_core::principal::TenantId;
use hive_core::store::{
    Ack, ClaimRequest, ClaimResult, Command, KeySlots, NewTask, Record, RecordEvent, RecordQuery,
    RecordStore, RecordWrite, RecordWritten, Submitted, SweepOptions, SweepReport, TaskStore,
};
use hive_core::task::{FeedEvent, Page, Task, TaskEvent, TaskQuery};
use hive_core::{Error, Result};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, Postgres};

use crate::OpenOptions;
use error::db;
use notify::Hub;

/// The embedded migrations (`hive-store/migrations/postgres`).
static MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// A [`TaskStore`] and [`RecordStore`] on PostgreSQL. See the module docs.
pub struct PostgresStore {
    pool: PgPool,
    schema: String,
    /// The schema's notification channel.
    channel: String,
    hub: Arc<Hub>,
    listener: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool.size())
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn unavailable(message: String) -> Error {
    Error::BackendUnavailable {
        message,
        source: None,
    }
}

impl PostgresStore {
    /// Connects to the database at `driver_url` (a `postgres://` URL without
    /// Hive's own options), creates and migrates the schema `options.schema` if
    /// needed, and starts listening for notifications.
    ///
    /// An unreachable server is `BackendUnavailable` within
    /// `options.connect_timeout`; a schema migrated by a newer Hive (a migration
    /// version this build does not know) is `Backend`, naming both versions.
    pub async fn connect(driver_url: &str, options: &OpenOptions) -> Result<Self> {
        options.validate()?;
        let schema = options.schema.clone();
        let quoted = format!("\"{schema}\"");
        let timeout = options.connect_timeout;
        let connect_options = PgConnectOptions::from_str(driver_url)
            .map_err(|e| Error::InvalidArgument {
                message: format!("invalid postgres URL: {e}"),
            })?
            .options([("search_path", quoted.as_str())]);

        let mut conn = tokio::time::timeout(timeout, connect_options.connect())
            .await
            .map_err(|_| {
                unavailable(format!(
                    "postgres: no connection to the server within {timeout:?}"
                ))
            })?
            .map_err(|e| db("connect", e))?;
        let migrated = migrate(&mut conn, &schema).await;
        // Closing the session also releases the migration lock on every path.
        let _ = tokio::time::timeout(timeout, conn.close()).await;
        migrated?;

        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size)
            .acquire_timeout(timeout)
            .test_before_acquire(false)
            .connect_with(connect_options.clone())
            .await
            .map_err(|e| db("open the connection pool", e))?;
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(timeout)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(connect_options)
            .await
            .map_err(|e| db("open the notification connection", e))?;
        let channel = format!("hive:{schema}");
        let mut listener = PgListener::connect_with(&listen_pool)
            .await
            .map_err(|e| db("open the notification connection", e))?;
        listener.ignore_pool_close_event(true);
        listener
            .listen(&channel)
            .await
            .map_err(|e| db("listen for notifications", e))?;
        let hub = Arc::new(Hub::default());
        let listener = tokio::spawn(notify::listen(listener, hub.clone()));
        Ok(PostgresStore {
            pool,
            schema,
            channel,
            hub,
            listener,
        })
    }

    /// The schema this store's tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(|e| db("begin", e))
    }
}

/// Creates the schema and applies the embedded migrations, under the
/// migrator's advisory lock. A schema with a migration this build does not know
/// (written by a newer Hive) is refused before anything is applied.
async fn migrate(conn: &mut PgConnection, schema: &str) -> Result<()> {
    let latest = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
    let table = format!("\"{schema}\"._sqlx_migrations");
    let newer = |found: i64| Error::Backend {
        message: format!(
            "postgres: schema {schema:?} is at migration version {found}, newer than this \
             build of hive-store knows (latest {latest}); upgrade Hive or use another schema"
        ),
        source: None,
    };
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(&table)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db("read the schema version", e))?;
    if exists.is_some() {
        let found: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT max(version) FROM {table}"
        )))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db("read the schema version", e))?;
        if let Some(found) = found.filter(|&v| v > latest) {
            return Err(newer(found));
        }
    }
    let mut migrator = Migrator::with_migrations(MIGRATIONS.iter().cloned().collect());
    migrator.create_schema(format!("\"{schema}\""));
    migrator.dangerous_set_table_name(table);
    // `run_direct` is `run` without the `Acquire` bound whose higher-ranked
    // lifetime makes the future not `Send` (sqlx's own workaround).
    migrator
        .run_direct(None, conn, false)
        .await
        .map_err(|e| match e {
            MigrateError::Execute(e) => db("migrate", e),
            MigrateError::VersionMissing(v) if v > latest => newer(v),
            other => Error::Backend {
                message: format!("postgres: migrating schema {schema:?}: {other}"),
                source: Some(Box::new(other)),
            },
        })
}

#[async_trait]
impl TaskStore for PostgresStore {
    async fn submit(&self, tasks: Vec<NewTask>, now: Timestamp) -> Result<Vec<Submitted>> {
        self.submit_tasks(tasks, now).await
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<Task>> {
        self.get_one(id).await
    }

    async fn get_tasks(&self, ids: &[TaskId]) -> Result<Vec<Task>> {
        self.get_many(ids).await
    }

    async fn pending_count(&self) -> Result<Option<u64>> {
        // Index-only counts: claimable or in a backoff (the `tasks_pending` index), plus those
        // waiting for a concurrency slot (the `tasks_keys` index).
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM tasks WHERE state = 'pending' AND key_wait IS NULL) \
                  + (SELECT count(*) FROM tasks WHERE ckey IS NOT NULL AND key_wait IS NOT NULL \
                     AND state IN ('pending', 'scheduled', 'running'))",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| error::db("count pending tasks", e))?;
        Ok(Some(n.max(0) as u64))
    }

    async fn list_tasks(&self, tenant: &TenantId, query: &TaskQuery) -> Result<Page<Task>> {
        self.list(tenant, query).await
    }

    async fn apply(&self, commands: Vec<Command>, now: Timestamp) -> Result<Vec<Result<Ack>>> {
        self.apply_commands(commands, now).await
    }

    async fn claim(&self, req: ClaimRequest<'_>) -> Result<ClaimResult> {
        self.claim_tasks(req).await
    }

    async fn wait_for_work(&self, epoch: u64, timeout: Duration) -> Result<()> {
        self.hub.wait_for_work(epoch, timeout).await;
        Ok(())
    }

    async fn read_events(
        &self,
        task: TaskId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<TaskEvent>> {
        self.events(task, after_seq, limit).await
    }

    async fn wait_for_events(&self, task: TaskId, after_seq: u64, timeout: Duration) -> Result<()> {
        self.wait_events(task, after_seq, timeout).await
    }

    async fn read_feed(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        self.feed(tenant, after, limit).await
    }

    async fn wait_for_feed(&self, tenant: &TenantId, after: u64, timeout: Duration) -> Result<()> {
        self.wait_feed(tenant, after, timeout).await
    }

    async fn ack_terminal(
        &self,
        tenant: &TenantId,
        consumer: &str,
        tasks: &[TaskId],
    ) -> Result<()> {
        self.ack(tenant, consumer, tasks).await
    }

    async fn compact(
        &self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<hive_core::store::CompactReport> {
        self.compact_tenant(tenant, ended_before, limit).await
    }

    async fn purge(
        &self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<(usize, bool)> {
        self.purge_tenant(tenant, ended_before, limit).await
    }

    async fn tenants(&self) -> Result<Vec<TenantId>> {
        self.tenant_list().await
    }

    async fn key_slots(&self, tenant: &TenantId, key: &str) -> Result<KeySlots> {
        let rows: Vec<(String, bool)> = sqlx::query_as(
            "SELECT id::text, key_wait IS NOT NULL FROM tasks \
             WHERE tenant = $1 AND ckey = $2 AND state IN ('pending', 'scheduled', 'running')",
        )
        .bind(tenant.as_str())
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db("read a concurrency key's slots", e))?;
        let tasks = rows
            .into_iter()
            .map(|(id, waiting)| Ok((codec::task_id(&id)?, waiting)))
            .collect::<Result<Vec<_>>>()?;
        Ok(KeySlots::from_tasks(tasks))
    }

    async fn unacked_terminal(
        &self,
        tenant: &TenantId,
        consumer: &str,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        self.unacked(tenant, consumer, limit).await
    }

    async fn register_node(&self, node: Node) -> Result<()> {
        self.insert_node(node).await
    }

    async fn get_node(&self, id: NodeId) -> Result<Option<Node>> {
        self.node(id).await
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        self.nodes().await
    }

    async fn touch_node(&self, id: NodeId, now: Timestamp) -> Result<Node> {
        self.touch(id, now).await
    }

    async fn set_node_status(
        &self,
        id: NodeId,
        status: NodeStatus,
        now: Timestamp,
    ) -> Result<Node> {
        self.set_status(id, status, now).await
    }

    async fn remove_node(&self, id: NodeId, now: Timestamp) -> Result<()> {
        self.delete_node(id, now).await
    }

    async fn sweep(&self, now: Timestamp, options: &SweepOptions) -> Result<SweepReport> {
        self.sweep_once(now, options).await
    }
}

#[async_trait]
impl RecordStore for PostgresStore {
    async fn write_record(&self, write: RecordWrite) -> Result<RecordWritten> {
        self.write(write).await
    }

    async fn get_record(&self, kind: &str, id: &str) -> Result<Option<Record>> {
        self.record(kind, id).await
    }

    async fn list_records(&self, kind: &str, query: &RecordQuery) -> Result<Vec<Record>> {
        self.records(kind, query).await
    }

    async fn read_record_events(
        &self,
        kind: &str,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<RecordEvent>> {
        self.record_events(kind, id, after_seq, limit).await
    }

    async fn wait_for_record_events(
        &self,
        kind: &str,
        id: &str,
        after_seq: u64,
        timeout: Duration,
    ) -> Result<()> {
        self.wait_record(kind, id, after_seq, timeout).await
    }
}
