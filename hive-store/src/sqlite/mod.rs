//! The SQLite backend: the embedded, durable default for one host (a service,
//! a desktop app, an Android app). Tasks, events, feeds, consumers, nodes and
//! records live in one file and survive a restart of the process.
//!
//! # URLs
//!
//! `sqlite://relative/path.db` or `sqlite:///absolute/path.db`. The file is
//! created if missing; its directory must exist. A missing directory, an
//! unwritable location, a file that is not a SQLite database, a SQLite database
//! of another application, or a Hive database written by a newer build (schema
//! version above [`SCHEMA_VERSION`]) is a clear error at [`SqliteStore::connect`],
//! and such a file is left untouched.
//!
//! Besides Hive's own `pool_size` (reader connections) and `connect_timeout`,
//! the query may carry:
//!
//! | parameter      | default | meaning |
//! |----------------|---------|---------|
//! | `synchronous`  | `full`  | `full`, `normal` or `extra`: see "Durability" |
//! | `busy_timeout` | `5s`    | how long a write waits for another process's write lock before `BackendUnavailable` |
//!
//! and SQLite's `vfs`, `cache` and `immutable` URI parameters, passed on to the
//! driver. `mode` may only be `rwc` or `rw` (a store must be writable).
//!
//! # Durability
//!
//! The file is in WAL mode. `synchronous=full` (the default) syncs the WAL on
//! every commit: a store call that returned survives a power cut. Every store
//! call is one transaction whatever its batch size (a submit of 1,000 tasks, a
//! claim of 1,000 leases, a batch of reports), so the sync is paid per batch,
//! not per task, and the throughput target holds with it: `hive-bench` (200,000
//! tasks, four events each, 2 vCPUs shared with other work) measured about
//! 13,000 tasks/s end to end with `full`, and the same within noise with
//! `normal`, because the cost is SQLite's page writes, not the syncs.
//!
//! `synchronous=normal` syncs only at checkpoints: commits are still atomic and
//! the database cannot be corrupted, but the last transactions before a power
//! cut (not a process crash) may be lost. Choose it only where a few lost
//! seconds of work are acceptable and the storage is slow to sync.
//!
//! # Concurrency
//!
//! Writes go through one connection behind an async mutex, each in a
//! `BEGIN IMMEDIATE` transaction: the file's write lock is taken before
//! anything is read, so every transition is decided by
//! [`hive_core::task::machine::apply`] on the latest committed core, and a
//! second process on the same file waits (up to `busy_timeout`) instead of
//! failing. Reads use a pool of read-only connections that never wait for the
//! writer. Feed cursors are allocated inside the write transaction, so commit
//! order is cursor order and no reader sees cursor N+1 before N.
//!
//! Claims decide eligibility in the write transaction: tasks are grouped in
//! queues by everything eligibility depends on (tenant, principal, agent,
//! required labels); the claim checks each queue against the node with
//! [`hive_core::node::eligible`]'s rules, reads the head of every eligible queue
//! (up to the claim's size each, skipping tasks whose backoff has not passed
//! or whose retry avoids this node) in one statement, lets the scheduler order
//! them, and applies `Schedule` (and `Start`) with the machine.
//!
//! # Notifications
//!
//! Waiters (`wait_for_events`, `wait_for_feed`, `wait_for_work`,
//! `wait_for_record_events`) are woken in-process, right after the commit of the
//! write that concerns them. A write by **another process** on the same file is
//! not signalled: its waiters see it when their timeout returns (the engine's
//! subscriptions re-read the store then), so cross-process latency is bounded by
//! the waiters' timeout, not by a notification.

mod codec;
mod notify;
mod read;
mod records;
mod schema;
mod write;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use hive_core::clock::Timestamp;
use hive_core::id::{NodeId, TaskId};
use hive_core::node::{Node, NodeStatus};
use hive_core::principal::TenantId;
use hive_core::retry::Backoff;
use hive_core::store::{
    Ack, ClaimRequest, ClaimResult, Command, CompactReport, KeySlots, NewTask, Record, RecordEvent,
    RecordQuery, RecordStore, RecordWrite, RecordWritten, Submitted, SweepOptions, SweepReport,
    TaskStore,
};
use hive_core::task::{FeedEvent, Page, Task, TaskEvent, TaskQuery};
use hive_core::{Error, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqliteConnection, SqlitePool};

use crate::OpenOptions;
use notify::{Waiters, Work};
use write::{Effects, PreparedTask, Shared, Tx};

/// The schema version this build creates and reads. A file with a higher
/// version is refused at connect.
pub const SCHEMA_VERSION: i64 = schema::VERSION;

/// The writer connection and the store's time.
struct Writer {
    conn: SqliteConnection,
    /// The latest time any caller passed in: callers read their clocks before
    /// they get the writer, so their times can arrive out of order, and the
    /// store's time never goes backwards.
    last_now: Timestamp,
}

/// The SQLite store. See the module docs.
pub struct SqliteStore {
    path: PathBuf,
    writer: tokio::sync::Mutex<Writer>,
    readers: SqlitePool,
    shared: Shared,
    task_waiters: Waiters<TaskId>,
    feed_waiters: Waiters<TenantId>,
    record_waiters: Waiters<(String, String)>,
    work: Work,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument {
        message: message.into(),
    }
}

/// A parsed `sqlite://` URL.
struct Target {
    options: SqliteConnectOptions,
    synchronous: SqliteSynchronous,
    busy_timeout: Duration,
}

impl Target {
    fn parse(driver_url: &str) -> Result<Target> {
        let forms = "expected sqlite://relative/path.db or sqlite:///absolute/path.db";
        let rest = driver_url
            .strip_prefix("sqlite://")
            .or_else(|| driver_url.strip_prefix("sqlite:"))
            .ok_or_else(|| invalid(format!("{driver_url:?} is not a sqlite URL; {forms}")))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(invalid(format!(
                "{driver_url:?} names no database file; {forms}"
            )));
        }
        if path == ":memory:" {
            return Err(invalid(
                "sqlite://:memory: is not durable; use memory:// for an in-memory store",
            ));
        }
        let mut synchronous = SqliteSynchronous::Full;
        let mut busy_timeout = Duration::from_secs(5);
        let mut passed = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "synchronous" => {
                    synchronous = match v.to_ascii_lowercase().as_str() {
                        "full" => SqliteSynchronous::Full,
                        "normal" => SqliteSynchronous::Normal,
                        "extra" => SqliteSynchronous::Extra,
                        _ => {
                            return Err(invalid(format!(
                                "synchronous must be full, normal or extra, got {v:?}"
                            )));
                        }
                    }
                }
                "busy_timeout" => {
                    busy_timeout = humantime::parse_duration(v).map_err(|e| {
                        invalid(format!(
                            "busy_timeout must be a duration like 5s or 500ms, got {v:?}: {e}"
                        ))
                    })?
                }
                "mode" if v == "rwc" || v == "rw" => {}
                "mode" => {
                    return Err(invalid(format!(
                        "mode={v} is not supported: a Hive store must be readable and writable"
                    )));
                }
                _ => passed.push(pair),
            }
        }
        let mut url = format!("sqlite://{path}");
        if !passed.is_empty() {
            url.push('?');
            url.push_str(&passed.join("&"));
        }
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(|e| invalid(format!("bad SQLite URL {driver_url:?}: {e}")))?;
        Ok(Target {
            options,
            synchronous,
            busy_timeout,
        })
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database a `sqlite://` URL names, checks
    /// it, and brings its schema up to date. See the module docs for the URL.
    pub async fn connect(driver_url: &str, options: &OpenOptions) -> Result<Self> {
        options.validate()?;
        let target = Target::parse(driver_url)?;
        let path = target.options.get_filename().to_path_buf();
        match tokio::time::timeout(options.connect_timeout, Self::open(target, options)).await {
            Ok(r) => r,
            Err(_) => Err(Error::BackendUnavailable {
                message: format!(
                    "opening the SQLite store {} took longer than {:?} (another process may hold its write lock)",
                    path.display(),
                    options.connect_timeout
                ),
                source: None,
            }),
        }
    }

    async fn open(target: Target, options: &OpenOptions) -> Result<Self> {
        let path = target.options.get_filename().to_path_buf();
        check_location(&path)?;
        let base = target
            .options
            .busy_timeout(target.busy_timeout)
            .synchronous(target.synchronous)
            .foreign_keys(false)
            // Statement journals (multi-row statements) and sorts stay in memory.
            .pragma("temp_store", "MEMORY")
            .statement_cache_capacity(512);
        let mut conn = base
            .clone()
            .create_if_missing(true)
            // The writer's cache survives its own commits: keep the hot pages.
            .pragma("cache_size", "-65536")
            // Checkpoint every 4,000 pages (16 MiB) rather than 1,000: the pages
            // every batch rewrites (the ends of the event and task trees) are
            // copied to the database once per checkpoint, not once per batch.
            .pragma("wal_autocheckpoint", "4000")
            .pragma("journal_size_limit", "67108864")
            .connect()
            .await
            .map_err(|e| schema::open_error(&path, e))?;
        // Two processes opening a new file at once: switching it to WAL can
        // answer SQLITE_BUSY at once (the busy handler does not cover it), so
        // retry rather than fail the open; `connect` bounds the whole open by
        // its timeout.
        let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(200));
        loop {
            match schema::prepare(&mut conn, &path).await {
                Err(Error::BackendUnavailable { .. }) => {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                r => break r?,
            }
        }
        let readers = SqlitePoolOptions::new()
            .max_connections(options.pool_size)
            .acquire_timeout(options.connect_timeout)
            .test_before_acquire(false)
            .connect_with(base.create_if_missing(false).pragma("query_only", "ON"))
            .await
            .map_err(|e| schema::open_error(&path, e))?;
        Ok(SqliteStore {
            path,
            writer: tokio::sync::Mutex::new(Writer {
                conn,
                last_now: Timestamp::EPOCH,
            }),
            readers,
            shared: Shared::default(),
            task_waiters: Waiters::default(),
            feed_waiters: Waiters::default(),
            record_waiters: Waiters::default(),
            work: Work::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the connections, waiting for them to finish (a dropped store
    /// closes them in the background).
    pub async fn close(self) {
        self.readers.close().await;
        let writer = self.writer.into_inner();
        if let Err(e) = sqlx::Connection::close(writer.conn).await {
            tracing::warn!(path = %self.path.display(), error = %e, "closing the SQLite writer failed");
        }
    }

    /// Runs `f` in one write transaction at the store's time for `now`, commits,
    /// then publishes its effects (caches, waiters, the work epoch).
    async fn with_tx<T>(
        &self,
        now: Timestamp,
        f: impl for<'a, 'b> AsyncFnOnce(&'a mut Tx<'b>) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.writer.lock().await;
        let w = &mut *guard;
        if now > w.last_now {
            w.last_now = now;
        }
        let now = w.last_now;
        let mut tx = Tx::begin(&mut w.conn, &self.shared, now).await?;
        let out = f(&mut tx).await?;
        let mut fx = tx.commit().await?;
        drop(guard);
        self.publish(&mut fx);
        Ok(out)
    }

    fn publish(&self, fx: &mut Effects) {
        self.shared.publish(fx);
        self.task_waiters.wake(&fx.tasks);
        self.feed_waiters.wake(&fx.tenants);
        // A retry in its backoff also wakes the waiting workers: they claim
        // again and learn its due time (`ClaimResult::next_due`).
        let delayed = !fx.delayed.is_empty();
        if delayed {
            self.work.delay(fx.delayed.drain(..));
        }
        if fx.new_work || delayed {
            self.work.signal();
        }
    }
}

/// A missing directory or a directory in place of the file is refused
/// (`InvalidArgument` naming the path) before SQLite is asked to create
/// anything.
fn check_location(path: &Path) -> Result<()> {
    let p = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(Error::InvalidArgument {
            message: format!(
                "cannot open the SQLite store {p}: directory {} does not exist",
                dir.display()
            ),
        });
    }
    if path.is_dir() {
        return Err(Error::InvalidArgument {
            message: format!("cannot open the SQLite store {p}: it is a directory"),
        });
    }
    Ok(())
}

#[async_trait]
impl TaskStore for SqliteStore {
    async fn submit(&self, tasks: Vec<NewTask>, now: Timestamp) -> Result<Vec<Submitted>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        // Encoded before the write lock: the lock is held for SQLite's work only.
        let tasks = tasks
            .into_iter()
            .map(PreparedTask::new)
            .collect::<Result<Vec<_>>>()?;
        self.with_tx(now, async move |tx| tx.submit(tasks).await)
            .await
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<Task>> {
        Ok(read::get_tasks(&self.readers, &self.shared, &[id])
            .await?
            .pop())
    }

    async fn get_tasks(&self, ids: &[TaskId]) -> Result<Vec<Task>> {
        read::get_tasks(&self.readers, &self.shared, ids).await
    }

    async fn pending_count(&self) -> Result<Option<u64>> {
        read::pending_count(&self.readers).await.map(Some)
    }

    async fn list_tasks(&self, tenant: &TenantId, query: &TaskQuery) -> Result<Page<Task>> {
        read::list_tasks(&self.readers, &self.shared, tenant, query).await
    }

    async fn apply(&self, commands: Vec<Command>, now: Timestamp) -> Result<Vec<Result<Ack>>> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        self.with_tx(now, async move |tx| tx.apply(commands).await)
            .await
    }

    async fn claim(&self, req: ClaimRequest<'_>) -> Result<ClaimResult> {
        let epoch = self.work.epoch();
        let tasks = self
            .with_tx(req.now, async |tx| tx.claim(&req).await)
            .await?;
        Ok(ClaimResult {
            tasks,
            epoch,
            next_due: self.work.next_due(req.now),
        })
    }

    async fn wait_for_work(&self, epoch: u64, timeout: Duration) -> Result<()> {
        self.work.wait(epoch, timeout).await;
        Ok(())
    }

    async fn read_events(
        &self,
        task: TaskId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<TaskEvent>> {
        read::read_events(&self.readers, task, after_seq, limit).await
    }

    async fn wait_for_events(&self, task: TaskId, after_seq: u64, timeout: Duration) -> Result<()> {
        self.task_waiters
            .wait(task, timeout, async {
                let seq = read::require(read::last_seq(&self.readers, task).await?, task)?;
                Ok(seq > after_seq)
            })
            .await
    }

    async fn read_feed(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        read::read_feed(&self.readers, tenant, after, limit).await
    }

    async fn wait_for_feed(&self, tenant: &TenantId, after: u64, timeout: Duration) -> Result<()> {
        self.feed_waiters
            .wait(tenant.clone(), timeout, async {
                Ok(read::feed_head(&self.readers, tenant).await? > after)
            })
            .await
    }

    async fn ack_terminal(
        &self,
        tenant: &TenantId,
        consumer: &str,
        tasks: &[TaskId],
    ) -> Result<()> {
        if tasks.is_empty() {
            return Ok(());
        }
        self.with_tx(Timestamp::EPOCH, async |tx| {
            tx.ack_terminal(tenant, consumer, tasks).await
        })
        .await
    }

    async fn compact(
        &self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<CompactReport> {
        self.with_tx(Timestamp::EPOCH, async |tx| {
            tx.compact(tenant, ended_before, limit).await
        })
        .await
    }

    async fn purge(
        &self,
        tenant: &TenantId,
        ended_before: Timestamp,
        limit: usize,
    ) -> Result<(usize, bool)> {
        self.with_tx(Timestamp::EPOCH, async |tx| {
            tx.purge(tenant, ended_before, limit).await
        })
        .await
    }

    async fn tenants(&self) -> Result<Vec<TenantId>> {
        read::tenants(&self.readers).await
    }

    async fn key_slots(&self, tenant: &TenantId, key: &str) -> Result<KeySlots> {
        read::key_slots(&self.readers, tenant, key).await
    }

    async fn unacked_terminal(
        &self,
        tenant: &TenantId,
        consumer: &str,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        read::unacked_terminal(&self.readers, tenant, consumer, limit).await
    }

    async fn register_node(&self, node: Node) -> Result<()> {
        self.with_tx(Timestamp::EPOCH, async |tx| tx.register_node(&node).await)
            .await
    }

    async fn get_node(&self, id: NodeId) -> Result<Option<Node>> {
        read::get_node(&self.readers, id).await
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        read::list_nodes(&self.readers).await
    }

    async fn touch_node(&self, id: NodeId, now: Timestamp) -> Result<Node> {
        self.with_tx(now, async |tx| tx.touch_node(id).await).await
    }

    async fn set_node_status(
        &self,
        id: NodeId,
        status: NodeStatus,
        now: Timestamp,
    ) -> Result<Node> {
        self.with_tx(now, async |tx| tx.set_node_status(id, status).await)
            .await
    }

    async fn remove_node(&self, id: NodeId, now: Timestamp) -> Result<()> {
        self.with_tx(now, async |tx| tx.remove_node(id).await).await
    }

    async fn sweep(&self, now: Timestamp, options: &SweepOptions) -> Result<SweepReport> {
        let report = self
            .with_tx(now, async |tx| tx.sweep(options).await)
            .await?;
        if self.work.due(now) {
            self.work.signal();
        }
        Ok(report)
    }
}

#[async_trait]
impl RecordStore for SqliteStore {
    async fn write_record(&self, write: RecordWrite) -> Result<RecordWritten> {
        let key = (write.kind.clone(), write.id.clone());
        let (written, appended) = {
            let mut w = self.writer.lock().await;
            records::write(&mut w.conn, write).await?
        };
        if appended {
            self.record_waiters.wake([&key]);
        }
        Ok(written)
    }

    async fn get_record(&self, kind: &str, id: &str) -> Result<Option<Record>> {
        records::get(&self.readers, kind, id).await
    }

    async fn list_records(&self, kind: &str, query: &RecordQuery) -> Result<Vec<Record>> {
        records::list(&self.readers, kind, query).await
    }

    async fn read_record_events(
        &self,
        kind: &str,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<RecordEvent>> {
        records::read_events(&self.readers, kind, id, after_seq, limit).await
    }

    async fn wait_for_record_events(
        &self,
        kind: &str,
        id: &str,
        after_seq: u64,
        timeout: Duration,
    ) -> Result<()> {
        self.record_waiters
            .wait((kind.to_owned(), id.to_owned()), timeout, async {
                Ok(records::last_seq(&self.readers, kind, id).await? > after_seq)
            })
            .await
    }
}
