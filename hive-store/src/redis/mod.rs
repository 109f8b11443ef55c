//! The Redis backend (`redis://HOST:PORT/DB`): every guarantee of the store
//! contract for many processes on many machines sharing one Redis server.
//!
//! # Design
//!
//! - **State machine in Rust, compare-and-set in Lua.** A transition reads the
//!   task's core, runs [`hive_core::task::machine::apply`] in Rust, and commits
//!   with one Lua script that stores the new core only if the task's `seq` is
//!   still the one read (every appended event bumps it). In the same atomic
//!   step the script appends the event to the task's stream (a field `e{seq}` of
//!   the task's hash, written by the same `HSET` as the core) and to the tenant
//!   feed (a list: cursor = index + 1, so gapless and in commit order, and a
//!   reader can never see cursor N+1 before N), and updates every index: ready
//!   queues, backoffs, deadlines, node leases, terminal events. A miss is
//!   retried from a fresh read.
//! - **Compact tasks.** Every value of a task's hash is at most 64 bytes
//!   (`hash-max-listpack-value`), so that the hash keeps Redis's small
//!   (listpack) encoding: the core is a short binary form split over a few
//!   fields, event kinds have short forms, the spec is stored once per distinct
//!   spec under its content id (`spec:{id}`) and the task refers to it, and a
//!   value that is still too long (a large input, output or error) lives in the
//!   task's side hash, redirected to from the task's field. A commit writes
//!   only the fields that change. Decoding never trusts the bytes: a malformed
//!   value is `Error::Backend`. See `keys.rs` and `codec.rs`.
//! - **Batches are one round trip each way.** `submit`, `apply`, a claim's two
//!   halves and a sweep's steps each read with one pipeline (or not at all: the
//!   store remembers the cores it committed and the specs it read, and a stale
//!   core only costs a compare-and-set miss) and write with one script call for
//!   the whole batch;
//!   inside a script, index updates are batched into one multi-member command
//!   per key.
//! - **Scripts only where something is decided.** Every string a script reads,
//!   builds or passes on costs the server far more than the same bytes in a
//!   plain command, so Rust builds the stored strings (event fields, feed
//!   entries) and scripts reuse the keys they built. A submit without
//!   idempotency keys decides nothing: it is one MULTI/EXEC transaction of plain
//!   commands (still one atomic step; enqueue orders are taken just before with
//!   one `INCRBY`, and a tiny script inside the transaction publishes the
//!   wake-ups).
//! - **Claims.** The first script checks the node and reserves eligible
//!   candidates (owner, shares, labels, agent, avoided node, capacity, Ready:
//!   decided on the server); Rust lets the scheduler order them and decides
//!   Schedule (and Start) with the machine; the second script re-checks the node
//!   and commits, and puts back whatever it did not take. The reservation is one
//!   string of queue members, and the second script commits only if it can still
//!   delete it. A claimer that dies in between leaves a reservation that a sweep
//!   puts back (and deletes) after 30 s.
//! - **Wake-ups.** Scripts `PUBLISH`; one pub/sub connection per store wakes local
//!   waiters (see `notify.rs`). Waiters re-check the store, so a lost message
//!   costs at most the waiter's timeout.
//! - **Time** is always the caller's `now`, never the server clock.
//!
//! Keys are listed in `keys.rs`; all live under [`OpenOptions::prefix`].
//! The layout is not compatible with data written before the compact task
//! encoding (JSON cores and specs inside each task): such a store is not
//! readable by this version (there were no users yet); empty its prefix
//! before use.
//! Durability is Redis's: configure AOF (`appendfsync everysec` or `always`) for
//! a store that survives a server restart.
//!
//! Limits: the scripts touch keys they compute, so Redis Cluster is not
//! supported (one server, or a primary with replicas); there is no retention:
//! task events and feeds grow until the keys are deleted.

mod claim;
mod codec;
mod decode;
mod keys;
mod lua;
mod nodes;
mod notify;
mod records;
mod tasks;

use std::sync::atomic::{AtomicUsize, Ordering};
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
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::OpenOptions;
use keys::Keys;
use lua::Scripts;
use notify::Notifier;

/// How long one command or script may take before the call fails as
/// `BackendUnavailable` (large batches run one script each).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most connections a store opens (each is multiplexed: commands from many
/// callers share it).
const MAX_CONNECTIONS: u32 = 16;

/// A Hive store in Redis. See the module docs.
pub struct RedisStore {
    conns: Vec<ConnectionManager>,
    next: AtomicUsize,
    keys: Keys,
    scripts: Scripts,
    notifier: Notifier,
    cache: tasks::CoreCache,
    specs: tasks::SpecCache,
    queues: tasks::CheckedQueues,
    trimmed: tasks::TrimmedOffsets,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the server at `driver_url` (`redis://HOST:PORT/DB`), with
    /// `options.pool_size` connections (at most 16) and every key under
    /// `options.prefix`. An unreachable server is `BackendUnavailable` after at
    /// most `options.connect_timeout`; a malformed URL is `InvalidArgument`.
    pub async fn connect(driver_url: &str, options: &OpenOptions) -> Result<Self> {
        options.validate()?;
        let client = redis::Client::open(driver_url).map_err(|e| Error::InvalidArgument {
            message: format!("invalid redis URL: {e}"),
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let n = options.pool_size.clamp(1, MAX_CONNECTIONS) as usize;
        let opening = futures::future::try_join_all(
            (0..n).map(|_| ConnectionManager::new_with_config(client.clone(), config.clone())),
        );
        let conns = match tokio::time::timeout(options.connect_timeout, opening).await {
            Ok(Ok(conns)) => conns,
            Ok(Err(e)) => return Err(unavailable_or_backend("connecting to redis", e)),
            Err(_) => {
                return Err(Error::BackendUnavailable {
                    message: format!(
                        "redis: no connection within the connect timeout ({:?})",
                        options.connect_timeout
                    ),
                    source: None,
                });
            }
        };
        let keys = Keys::new(&options.prefix);
        check_format(&mut conns[0].clone(), &keys).await?;
        let notifier = Notifier::start(
            client,
            conns[0].clone(),
            keys.clone(),
            options.connect_timeout,
        )
        .await;
        Ok(RedisStore {
            conns,
            next: AtomicUsize::new(0),
            keys,
            scripts: Scripts::new(),
            notifier,
            cache: tasks::CoreCache::default(),
            specs: tasks::SpecCache::default(),
            queues: tasks::CheckedQueues::default(),
            trimmed: tasks::TrimmedOffsets::default(),
        })
    }

    /// The key prefix (without the trailing colon).
    pub fn prefix(&self) -> &str {
        &self.keys.prefix
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }
}

/// The version of the data layout this build writes (`keys.rs`). Stored under
/// `PREFIX:format` by the first store that opens a prefix.
pub const FORMAT_VERSION: u32 = 3;

/// Claims an empty prefix for this format, or checks that the prefix was written
/// by this format: data of a newer build (or of the older, unreadable layout) is
/// a clear error at connect, before anything is read or written.
async fn check_format(conn: &mut ConnectionManager, keys: &Keys) -> Result<()> {
    let key = format!("{}:format", keys.prefix);
    let set: bool = redis::cmd("SET")
        .arg(&key)
        .arg(FORMAT_VERSION)
        .arg("NX")
        .query_async::<Option<String>>(conn)
        .await
        .map(|r| r.is_some())
        .map_err(|e| unavailable_or_backend("checking the data format", e))?;
    if set {
        return Ok(());
    }
    let stored: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(conn)
        .await
        .map_err(|e| unavailable_or_backend("checking the data format", e))?;
    match stored.as_deref().map(str::parse::<u32>) {
        Some(Ok(v)) if v == FORMAT_VERSION => Ok(()),
        // Format 2 lacks the ready-queue head index: build it (one script,
        // so no claim sees half of it); a process that lost the race finds 3.
        Some(Ok(2)) => {
            let built: i64 = redis::cmd("EVAL")
                .arg(lua::MIGRATE_2_TO_3)
                .arg(0)
                .arg(&keys.prefix)
                .query_async(conn)
                .await
                .map_err(|e| {
                    unavailable_or_backend("indexing the ready queues (format 2 to 3)", e)
                })?;
            if built >= 0 {
                tracing::info!(prefix = %keys.prefix, queues = built, "redis: data format 2 migrated to 3 (ready-queue head index)");
            }
            Ok(())
        }
        Some(Ok(v)) if v > FORMAT_VERSION => Err(Error::Backend {
            message: format!(
                "redis prefix {:?} holds data format {v}, written by a newer build of Hive; \
                 this build knows format {FORMAT_VERSION}: upgrade Hive",
                keys.prefix
            ),
            source: None,
        }),
        Some(Ok(v)) => Err(Error::Backend {
            message: format!(
                "redis prefix {:?} holds data format {v}, which this build (format \
                 {FORMAT_VERSION}) cannot read: use another prefix or empty this one",
                keys.prefix
            ),
            source: None,
        }),
        _ => Err(Error::Backend {
            message: format!(
                "redis key {key:?} does not hold a Hive data format version ({stored:?}): \
                 the prefix is used by something else"
            ),
            source: None,
        }),
    }
}

/// Maps a driver error: connection trouble and a busy or loading server are
/// temporary (`BackendUnavailable`), everything else is `Backend`.
fn unavailable_or_backend(context: &str, e: redis::RedisError) -> Error {
    use redis::{ErrorKind, ServerErrorKind};
    let temporary = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::ReadOnly
            )
        )
        || matches!(
            e.code(),
            Some("BUSY") | Some("LOADING") | Some("NOREPLICAS")
        );
    Error::from_driver(temporary, format!("redis: {context}: {e}"), e)
}

/// `map_err` for driver calls.
fn driver(context: &'static str) -> impl Fn(redis::RedisError) -> Error {
    move |e| unavailable_or_backend(context, e)
}

#[async_trait]
impl TaskStore for RedisStore {
    async fn submit(&self, tasks: Vec<NewTask>, now: Timestamp) -> Result<Vec<Submitted>> {
        self.submit_tasks(tasks, now).await
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<Task>> {
        Ok(self.snapshots(&[id]).await?.pop().flatten())
    }

    async fn get_tasks(&self, ids: &[TaskId]) -> Result<Vec<Task>> {
        Ok(self.snapshots(ids).await?.into_iter().flatten().collect())
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
        self.notifier.wait_for_work(epoch, timeout).await;
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
        let gate = tasks::gate_of(&keys::esc(tenant.as_str()), key);
        let p = &self.keys.prefix;
        let (holding, waiting): (Vec<String>, u64) = redis::pipe()
            .cmd("SMEMBERS")
            .arg(format!("{p}:kh:{gate}"))
            .cmd("ZCARD")
            .arg(format!("{p}:kw:{gate}"))
            .query_async(&mut self.conn())
            .await
            .map_err(driver("reading a concurrency key's slots"))?;
        let mut slots = KeySlots::from_tasks(
            holding
                .iter()
                .map(|id| Ok((decode::parse(id, "task id")?, false)))
                .collect::<Result<Vec<(TaskId, bool)>>>()?,
        );
        slots.waiting = waiting;
        Ok(slots)
    }

    async fn ack_terminal(
        &self,
        tenant: &TenantId,
        consumer: &str,
        tasks: &[TaskId],
    ) -> Result<()> {
        self.ack(tenant, consumer, tasks).await
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
        self.register(node).await
    }

    async fn get_node(&self, id: NodeId) -> Result<Option<Node>> {
        Ok(self.nodes_by_id(&[id]).await?.pop().flatten())
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        self.all_nodes().await
    }

    async fn touch_node(&self, id: NodeId, now: Timestamp) -> Result<Node> {
        self.change_node(id, "touch", now).await
    }

    async fn set_node_status(
        &self,
        id: NodeId,
        status: NodeStatus,
        now: Timestamp,
    ) -> Result<Node> {
        self.change_node(id, nodes::status_str(status), now).await
    }

    async fn remove_node(&self, id: NodeId, now: Timestamp) -> Result<()> {
        self.change_node(id, "remove", now).await.map(|_| ())
    }

    async fn sweep(&self, now: Timestamp, options: &SweepOptions) -> Result<SweepReport> {
        self.sweep_once(now, options).await
    }

    async fn pending_count(&self) -> Result<Option<u64>> {
        let n: i64 = redis::cmd("EVAL")
            .arg(lua::PENDING_COUNT)
            .arg(0)
            .arg(&self.keys.prefix)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| unavailable_or_backend("counting pending tasks", e))?;
        Ok(Some(n.max(0) as u64))
    }
}

#[async_trait]
impl RecordStore for RedisStore {
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
