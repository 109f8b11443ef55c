//! The PostgreSQL backend runs the conformance suite unchanged (each test in a
//! fresh schema), plus what only a server-backed store can show: connection
//! failures, schema versions, concurrent starts, restarts and several stores on
//! one schema.

use std::sync::Arc;

// The macro has no way to skip a test: without HIVE_TEST_POSTGRES_URL (after
// `server_url` printed SKIPPED) the factory panics with that message.
hive_store::conformance_tests!(|| async {
    hive_store::testing::server_url("HIVE_TEST_POSTGRES_URL")?;
    let store = postgres_specific::open(&postgres_specific::fresh_schema())
        .await
        .expect("a postgres store");
    Some(Arc::new(store) as Arc<dyn hive_core::store::Store>)
});

mod postgres_specific {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use hive_core::scheduler::FairScheduler;
    use hive_core::store::{ClaimRequest, Command, NewTask, RecordStore, RecordWrite, TaskStore};
    use hive_core::task::machine::Op;
    use hive_core::{
        Error, NodeId, NodeSpec, NodeStatus, Owner, TaskId, TaskSpec, TaskState, Timestamp,
        node::Node,
    };
    use hive_store::OpenOptions;
    use hive_store::postgres::PostgresStore;
    use hive_store::testing::{server_url, unique_name};
    use serde_json::json;

    const URL_VAR: &str = "HIVE_TEST_POSTGRES_URL";

    /// The migrations this build embeds (the files of `migrations/postgres`).
    fn migration_count() -> i64 {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
        std::fs::read_dir(dir)
            .expect("the migrations folder")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
            })
            .count() as i64
    }

    pub(crate) fn fresh_schema() -> String {
        unique_name("hive_t")
    }

    fn options(schema: &str) -> OpenOptions {
        let mut o = OpenOptions::default();
        o.schema = schema.to_owned();
        o.pool_size = 4;
        o
    }

    /// A store on `schema` of the test server. Panics without a server (the
    /// conformance factory only runs when one is configured).
    pub(crate) async fn open(schema: &str) -> hive_core::Result<PostgresStore> {
        let url = server_url(URL_VAR)
            .expect("HIVE_TEST_POSTGRES_URL is not set: the conformance tests need a server");
        PostgresStore::connect(&url, &options(schema)).await
    }

    fn owner() -> Owner {
        Owner {
            tenant: "acme".into(),
            principal: "alice".into(),
        }
    }

    fn new_task(n: i64) -> NewTask {
        NewTask {
            id: TaskId::new(),
            owner: owner(),
            spec: Arc::new(TaskSpec::new("echo", json!({ "n": n }))),
        }
    }

    async fn register(store: &PostgresStore, at: Timestamp) -> NodeId {
        let node = Node {
            id: NodeId::new(),
            spec: NodeSpec::system("n", 100),
            status: NodeStatus::Ready,
            in_flight: 0,
            registered_at: at,
            last_seen: at,
        };
        let id = node.id;
        store.register_node(node).await.unwrap();
        id
    }

    async fn claim(store: &PostgresStore, node: NodeId, max: u32, now: Timestamp) -> Vec<TaskId> {
        let scheduler = FairScheduler::default();
        let req = ClaimRequest {
            node,
            max,
            agents: &[],
            start: true,
            scheduler: &scheduler,
            now,
        };
        store
            .claim(req)
            .await
            .unwrap()
            .tasks
            .iter()
            .map(|c| c.token.task)
            .collect()
    }

    /// (a) Nothing listens on port 1: `connect` answers `BackendUnavailable`
    /// within the connect timeout instead of hanging or panicking.
    #[tokio::test]
    async fn an_unreachable_server_is_backend_unavailable_within_the_timeout() {
        let mut o = OpenOptions::default();
        o.connect_timeout = Duration::from_secs(2);
        let started = Instant::now();
        let got = PostgresStore::connect("postgres://postgres@127.0.0.1:1/hive", &o).await;
        let took = started.elapsed();
        match got {
            Err(e @ Error::BackendUnavailable { .. }) => assert!(e.is_temporary()),
            other => panic!("expected BackendUnavailable, got {other:?}"),
        }
        assert!(took < Duration::from_secs(3), "took {took:?}");
        // A server that never answers (a blackholed address): the timeout ends
        // the wait. Where the address is unroutable the refusal is immediate.
        o.connect_timeout = Duration::from_millis(500);
        let started = Instant::now();
        let got = PostgresStore::connect("postgres://postgres@10.255.255.1:5432/hive", &o).await;
        let took = started.elapsed();
        assert!(
            matches!(got, Err(Error::BackendUnavailable { .. })),
            "{got:?}"
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
        // The same through `open`, options in the URL.
        let got =
            hive_store::open("postgres://postgres@127.0.0.1:1/hive?connect_timeout=500ms").await;
        assert!(
            matches!(got, Err(Error::BackendUnavailable { .. })),
            "{got:?}"
        );
    }

    /// (b) A schema migrated by a newer Hive (a migration version this build
    /// does not know) is refused at connect with a clear `Backend` error that
    /// names both versions, and nothing is changed.
    #[tokio::test]
    async fn a_schema_newer_than_this_build_is_refused_at_connect() {
        let Some(_) = server_url(URL_VAR) else { return };
        let schema = fresh_schema();
        let store = open(&schema).await.unwrap();
        drop(store);
        let admin = sqlx_admin().await;
        sqlx_exec(
            &admin,
            &format!(
                "INSERT INTO \"{schema}\"._sqlx_migrations \
                 (version, description, success, checksum, execution_time) \
                 VALUES (99990101000000, 'from the future', true, '\\x00', 0)"
            ),
        )
        .await;
        match open(&schema).await {
            Err(Error::Backend { message, .. }) => {
                assert!(message.contains("99990101000000"), "{message}");
                let latest = format!("latest {}", migration_count());
                assert!(message.contains(&latest), "{message}");
                assert!(message.contains(&schema), "{message}");
            }
            other => panic!("expected Backend, got {other:?}"),
        }
        // The same on a schema that is otherwise empty (only the fake row).
        let bare = fresh_schema();
        sqlx_exec(&admin, &format!("CREATE SCHEMA \"{bare}\"")).await;
        sqlx_exec(
            &admin,
            &format!(
                "CREATE TABLE \"{bare}\"._sqlx_migrations (version BIGINT PRIMARY KEY, \
                 description TEXT NOT NULL, installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), \
                 success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)"
            ),
        )
        .await;
        // The migration after the last one this build knows.
        let next = migration_count() + 1;
        sqlx_exec(
            &admin,
            &format!(
                "INSERT INTO \"{bare}\"._sqlx_migrations \
                 (version, description, success, checksum, execution_time) \
                 VALUES ({next}, 'next', true, '\\x00', 0)"
            ),
        )
        .await;
        match open(&bare).await {
            Err(Error::Backend { message, .. }) => {
                assert!(message.contains(&format!("version {next}")), "{message}")
            }
            other => panic!("expected Backend, got {other:?}"),
        }
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
        )
        .bind(&bare)
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!(tables, 1, "nothing was migrated into the refused schema");
    }

    /// (c) Stores starting at once on the same fresh schema all succeed: the
    /// migration runs once, under the migrator's lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_connects_to_a_fresh_schema_all_succeed() {
        let Some(_) = server_url(URL_VAR) else { return };
        let schema = fresh_schema();
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let schema = schema.clone();
                tokio::spawn(async move { open(&schema).await })
            })
            .collect();
        let mut stores = Vec::new();
        for o in opens {
            stores.push(o.await.unwrap().expect("every concurrent connect succeeds"));
        }
        let admin = sqlx_admin().await;
        let applied: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{schema}\"._sqlx_migrations"
        )))
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!(applied, migration_count(), "each migration applied once");
        // They share one state.
        let t = Timestamp::from_millis(1_000_000);
        let s = stores[0].submit(vec![new_task(1)], t).await.unwrap();
        for store in &stores {
            let got = store.get_task(s[0].id).await.unwrap().unwrap();
            assert_eq!(got.state, TaskState::Pending);
        }
    }

    /// (d) Tasks, events, nodes and records survive closing the store and
    /// opening the schema again; a pending task is claimable after the reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_survives_close_and_reopen() {
        let Some(_) = server_url(URL_VAR) else { return };
        let schema = fresh_schema();
        let t = Timestamp::from_millis(2_000_000);
        let (done, pending, node) = {
            let store = open(&schema).await.unwrap();
            let node = register(&store, t).await;
            let sub = store
                .submit(vec![new_task(1), new_task(2)], t)
                .await
                .unwrap();
            let c = claim(&store, node, 1, t).await;
            assert_eq!(c.len(), 1);
            // Cancel the claimed task (no token needed) so it ends.
            store
                .apply(
                    vec![Command {
                        task: c[0],
                        op: Op::Cancel {
                            by: "alice".into(),
                            reason: "done".into(),
                        },
                    }],
                    t,
                )
                .await
                .unwrap()
                .remove(0)
                .unwrap();
            store
                .write_record(RecordWrite {
                    kind: "widget".into(),
                    id: "w1".into(),
                    tenant: "acme".into(),
                    expected_version: 0,
                    status: "new".into(),
                    body: json!({"a": 1}),
                    events: vec![json!("created")],
                    now: t,
                })
                .await
                .unwrap();
            let other = sub.iter().map(|s| s.id).find(|id| *id != c[0]).unwrap();
            (c[0], other, node)
            // The store is dropped here: its pool and listener close.
        };
        let store = open(&schema).await.unwrap();
        let ended = store.get_task(done).await.unwrap().unwrap();
        assert_eq!(ended.state, TaskState::Cancelled);
        let kinds: Vec<&str> = store
            .read_events(done, 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.kind.name())
            .collect();
        assert_eq!(kinds, vec!["queued", "scheduled", "started", "cancelled"]);
        let feed = store.read_feed(&"acme".into(), 0, 100).await.unwrap();
        assert_eq!(
            feed.iter().map(|e| e.cursor).collect::<Vec<_>>(),
            (1..=5).collect::<Vec<u64>>()
        );
        let r = store.get_record("widget", "w1").await.unwrap().unwrap();
        assert_eq!((r.version, r.last_seq), (1, 1));
        assert_eq!(r.body, json!({"a": 1}));
        assert_eq!(store.get_node(node).await.unwrap().unwrap().in_flight, 0);
        let again = claim(&store, node, 10, t.saturating_add(Duration::from_secs(1))).await;
        assert_eq!(
            again,
            vec![pending],
            "the pending task is claimable after reopen"
        );
        assert_eq!(store.get_node(node).await.unwrap().unwrap().in_flight, 1);
        // The feed continues gaplessly after the restart.
        let feed = store.read_feed(&"acme".into(), 5, 100).await.unwrap();
        assert_eq!(
            feed.iter().map(|e| e.cursor).collect::<Vec<_>>(),
            vec![6, 7]
        );
    }

    /// (e) Two stores on one schema behave like two processes: a subscriber on
    /// one wakes when the other appends (the notification crosses connections),
    /// for a task's events, the tenant feed, records and new work.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_on_one_store_wakes_when_another_store_appends() {
        let Some(_) = server_url(URL_VAR) else { return };
        let schema = fresh_schema();
        let a = Arc::new(open(&schema).await.unwrap());
        let b = Arc::new(open(&schema).await.unwrap());
        let t = Timestamp::from_millis(3_000_000);
        let long = Duration::from_secs(30);
        let node = register(&b, t).await;

        // New work: an idle worker on A wakes when B submits.
        let epoch = {
            let scheduler = FairScheduler::default();
            let req = ClaimRequest {
                node,
                max: 1,
                agents: &[],
                start: true,
                scheduler: &scheduler,
                now: t,
            };
            let r = a.claim(req).await.unwrap();
            assert!(r.tasks.is_empty());
            r.epoch
        };
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                a.wait_for_work(epoch, long).await.unwrap();
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sub = b.submit(vec![new_task(1)], t).await.unwrap();
        let id = sub[0].id;
        let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the idle worker wakes on the other store's submit")
            .unwrap();
        assert!(waited < Duration::from_secs(10));

        // The tenant feed: A waits after cursor 1, B appends.
        let feed_waiter = {
            let a = a.clone();
            tokio::spawn(async move {
                // Wake-ups may be spurious (a late notification of the submit):
                // like a subscriber, read again and wait again.
                loop {
                    a.wait_for_feed(&"acme".into(), 1, long).await.unwrap();
                    let page = a.read_feed(&"acme".into(), 1, 10).await.unwrap();
                    if !page.is_empty() {
                        return page;
                    }
                }
            })
        };
        // A task's events: A waits after seq 1.
        let task_waiter = {
            let a = a.clone();
            tokio::spawn(async move {
                loop {
                    a.wait_for_events(id, 1, long).await.unwrap();
                    let events = a.read_events(id, 1, 10).await.unwrap();
                    if events.len() >= 2 {
                        return events;
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(claim(&b, node, 1, t).await, vec![id]);
        let feed = tokio::time::timeout(Duration::from_secs(10), feed_waiter)
            .await
            .expect("the feed waiter wakes on the other store's append")
            .unwrap();
        assert_eq!(feed.first().map(|e| e.cursor), Some(2));
        let events = tokio::time::timeout(Duration::from_secs(10), task_waiter)
            .await
            .expect("the task waiter wakes on the other store's append")
            .unwrap();
        assert_eq!(
            events.iter().map(|e| e.kind.name()).collect::<Vec<_>>(),
            vec!["scheduled", "started"]
        );

        // A record's stream.
        let write = |v: u64| RecordWrite {
            kind: "widget".into(),
            id: "shared".into(),
            tenant: "acme".into(),
            expected_version: v,
            status: "s".into(),
            body: json!(v),
            events: vec![json!(v)],
            now: t,
        };
        b.write_record(write(0)).await.unwrap();
        let record_waiter = {
            let a = a.clone();
            tokio::spawn(async move {
                loop {
                    a.wait_for_record_events("widget", "shared", 1, long)
                        .await
                        .unwrap();
                    let events = a
                        .read_record_events("widget", "shared", 1, 10)
                        .await
                        .unwrap();
                    if !events.is_empty() {
                        return events;
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.write_record(write(1)).await.unwrap();
        let events = tokio::time::timeout(Duration::from_secs(10), record_waiter)
            .await
            .expect("the record waiter wakes on the other store's write")
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].seq, 2);
    }

    /// Feed cursors stay gapless and in commit order under concurrent writers
    /// on two stores, and every claim respects capacity across stores.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_on_two_stores_keep_the_feed_gapless() {
        let Some(_) = server_url(URL_VAR) else { return };
        let schema = fresh_schema();
        let a = Arc::new(open(&schema).await.unwrap());
        let b = Arc::new(open(&schema).await.unwrap());
        let t = Timestamp::from_millis(4_000_000);
        let mut joins = Vec::new();
        for (k, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
            .into_iter()
            .enumerate()
        {
            joins.push(tokio::spawn(async move {
                for round in 0..10 {
                    let batch: Vec<NewTask> = (0..20)
                        .map(|i| new_task((k * 1000 + round * 20 + i) as i64))
                        .collect();
                    store.submit(batch, t).await.unwrap();
                }
            }));
        }
        // A reader follows the feed while it grows: it must never see a gap.
        let reader = {
            let a = a.clone();
            tokio::spawn(async move {
                let mut after = 0u64;
                let deadline = Instant::now() + Duration::from_secs(30);
                while after < 800 && Instant::now() < deadline {
                    let page = a.read_feed(&"acme".into(), after, 97).await.unwrap();
                    for e in &page {
                        assert_eq!(e.cursor, after + 1, "a gap or reordering in the feed");
                        after = e.cursor;
                    }
                    if page.is_empty() {
                        a.wait_for_feed(&"acme".into(), after, Duration::from_secs(1))
                            .await
                            .unwrap();
                    }
                }
                after
            })
        };
        for j in joins {
            j.await.unwrap();
        }
        assert_eq!(reader.await.unwrap(), 800);
        // Two stores claim for one node of capacity 50 at once: never more.
        let node = {
            let n = Node {
                id: NodeId::new(),
                spec: NodeSpec::system("small", 50),
                status: NodeStatus::Ready,
                in_flight: 0,
                registered_at: t,
                last_seen: t,
            };
            let id = n.id;
            a.register_node(n).await.unwrap();
            id
        };
        let (x, y) = tokio::join!(claim(&a, node, 40, t), claim(&b, node, 40, t));
        assert_eq!(x.len() + y.len(), 50);
        assert_eq!(a.get_node(node).await.unwrap().unwrap().in_flight, 50);
    }

    async fn sqlx_admin() -> sqlx::PgPool {
        let url = server_url(URL_VAR).expect("HIVE_TEST_POSTGRES_URL");
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("admin connection")
    }

    async fn sqlx_exec(pool: &sqlx::PgPool, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}
