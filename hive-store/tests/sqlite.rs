//! The sqlite backend runs the conformance suite unchanged, plus its own tests:
//! opening (bad locations, foreign files, newer schemas, URL forms), restart
//! durability, and two stores on one file (as two processes would).

use std::sync::Arc;

use hive_store::OpenOptions;
use hive_store::sqlite::SqliteStore;

/// The folder of this test process's conformance databases: the stores
/// outlive the tests that make them (the harness holds no guard), so the
/// files stay until the next run of this suite removes the folders of
/// processes that have ended. Under Cargo's target folder, not the system
/// temp folder, which a suite of ~90 stores of ~2.5 MB each would fill run
/// after run.
fn conformance_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sqlite-conformance");
        // (Where there is no /proc to tell, nothing is removed.)
        if std::path::Path::new("/proc/self").exists()
            && let Ok(entries) = std::fs::read_dir(&root)
        {
            for e in entries.flatten() {
                let ended = e
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
                if ended {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = root.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).expect("the conformance folder");
        dir
    })
}

hive_store::conformance_tests!(|| async {
    let dir = tempfile::tempdir_in(conformance_dir())
        .expect("temp dir")
        .keep();
    let url = format!("sqlite://{}", dir.join("hive.db").display());
    Some(Arc::new(
        SqliteStore::connect(&url, &OpenOptions::default())
            .await
            .expect("open"),
    ) as Arc<dyn hive_core::store::Store>)
});

mod sqlite_specific {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use hive_core::store::{RecordQuery, RecordWrite, Store, TaskStore};
    use hive_core::task::TaskQuery;
    use hive_core::{
        Clock, Error, NodeId, NodeSpec, Principal, RetryPolicy, TaskError, TaskSpec, TaskState,
        Timestamp,
    };
    use hive_store::OpenOptions;
    use hive_store::conformance::{Harness, assert_event_contract};
    use hive_store::sqlite::{SCHEMA_VERSION, SqliteStore};
    use serde_json::json;
    use sqlx::Connection;

    fn url(path: &Path) -> String {
        format!("sqlite://{}", path.display())
    }

    async fn open(path: &Path) -> Result<SqliteStore, Error> {
        SqliteStore::connect(&url(path), &OpenOptions::default()).await
    }

    fn backend_message(r: Result<SqliteStore, Error>) -> String {
        match r {
            Err(Error::Backend { message, .. }) => message,
            other => panic!("expected Error::Backend, got {other:?}"),
        }
    }

    /// The message of the `InvalidArgument` a wrong file or location gets.
    fn invalid_message(r: Result<SqliteStore, Error>) -> String {
        match r {
            Err(Error::InvalidArgument { message }) => message,
            other => panic!("expected Error::InvalidArgument, got {other:?}"),
        }
    }

    async fn raw(path: &Path) -> sqlx::SqliteConnection {
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("raw connection")
    }

    fn alice() -> Principal {
        Principal::user("acme", "alice")
    }

    #[tokio::test]
    async fn a_missing_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("sub").join("hive.db");
        let message = invalid_message(open(&path).await);
        assert!(
            message.contains(&path.display().to_string()),
            "the error names the file: {message}"
        );
        assert!(message.contains("does not exist"), "{message}");
        assert!(!dir.path().join("missing").exists(), "nothing was created");
    }

    #[tokio::test]
    async fn a_directory_in_place_of_the_file_is_an_invalid_argument() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hive.db");
        std::fs::create_dir(&path).unwrap();
        let message = invalid_message(open(&path).await);
        assert!(message.contains("it is a directory"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[tokio::test]
    async fn a_file_that_is_not_sqlite_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.db");
        let garbage: Vec<u8> = (0..16_384u32).map(|i| (i * 7 + 3) as u8).collect();
        std::fs::write(&path, &garbage).unwrap();
        let message = invalid_message(open(&path).await);
        assert!(message.contains("not a SQLite database"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            garbage,
            "the file is unchanged"
        );
    }

    #[tokio::test]
    async fn another_applications_database_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                .await
                .unwrap();
        sqlx::query("CREATE TABLE contacts (name TEXT)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let before = std::fs::read(&path).unwrap();
        let message = invalid_message(open(&path).await);
        assert!(message.contains("no Hive schema"), "{message}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the file is unchanged"
        );
    }

    #[tokio::test]
    async fn a_newer_schema_version_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hive.db");
        open(&path).await.unwrap().close().await;
        let newer = SCHEMA_VERSION + 1;
        let mut conn = raw(&path).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA user_version = {newer}"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let message = backend_message(open(&path).await);
        assert!(
            message.contains(&format!("version {newer}"))
                && message.contains(&format!("version {SCHEMA_VERSION}")),
            "{message}"
        );
    }

    #[tokio::test]
    async fn bad_urls_are_invalid_arguments_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hive.db");
        for (u, needle) in [
            ("sqlite://".to_string(), "no database file"),
            ("sqlite://:memory:".to_string(), "memory://"),
            (
                format!("{}?synchronous=sometimes", url(&file)),
                "synchronous",
            ),
            (format!("{}?busy_timeout=soon", url(&file)), "busy_timeout"),
            (format!("{}?mode=ro", url(&file)), "mode"),
            (format!("{}?bogus=1", url(&file)), "bogus"),
        ] {
            match SqliteStore::connect(&u, &OpenOptions::default()).await {
                Err(Error::InvalidArgument { message }) => {
                    assert!(message.contains(needle), "{u}: {message}")
                }
                other => panic!("{u}: expected InvalidArgument, got {other:?}"),
            }
        }
        assert!(!file.exists(), "nothing was created for a bad URL");
    }

    #[tokio::test]
    async fn relative_and_absolute_urls_with_options_open_through_open() {
        let dir = tempfile::tempdir().unwrap();
        // Absolute, with Hive's and the backend's options in the query.
        let abs = dir.path().join("abs.db");
        let store = hive_store::open(&format!(
            "{}?pool_size=2&connect_timeout=3s&synchronous=normal&busy_timeout=2s",
            url(&abs)
        ))
        .await
        .unwrap();
        let h = Harness::new(store);
        h.hive
            .submit(&alice(), TaskSpec::new("echo", json!(1)))
            .await
            .unwrap();
        assert!(abs.exists());
        // Relative to the working directory.
        let cwd = std::env::current_dir().unwrap();
        let up = "../".repeat(cwd.components().count().saturating_sub(1));
        let rel = format!(
            "{up}{}",
            dir.path()
                .join("rel.db")
                .display()
                .to_string()
                .trim_start_matches('/')
        );
        let store = hive_store::open(&format!("sqlite://{rel}")).await.unwrap();
        store
            .submit(
                vec![hive_core::store::NewTask {
                    id: hive_core::TaskId::new(),
                    owner: hive_core::Owner {
                        tenant: "acme".into(),
                        principal: "alice".into(),
                    },
                    spec: Arc::new(TaskSpec::new("echo", json!(null))),
                }],
                Timestamp::from_millis(1),
            )
            .await
            .unwrap();
        assert!(dir.path().join("rel.db").exists(), "{rel}");
    }

    /// Everything a restart must keep, read through the store.
    #[derive(Debug, PartialEq)]
    struct Snapshot {
        tasks: Vec<hive_core::Task>,
        events: Vec<Vec<hive_core::TaskEvent>>,
        feed: Vec<hive_core::FeedEvent>,
        unacked: Vec<hive_core::FeedEvent>,
        nodes: Vec<hive_core::Node>,
        records: Vec<hive_core::store::Record>,
        record_events: Vec<hive_core::store::RecordEvent>,
    }

    async fn snapshot(store: &dyn Store, ids: &[hive_core::TaskId]) -> Snapshot {
        let mut events = Vec::new();
        for id in ids {
            events.push(store.read_events(*id, 0, 1000).await.unwrap());
        }
        Snapshot {
            tasks: store.get_tasks(ids).await.unwrap(),
            events,
            feed: store.read_feed(&"acme".into(), 0, 1000).await.unwrap(),
            unacked: store
                .unacked_terminal(&"acme".into(), "mailer", 100)
                .await
                .unwrap(),
            nodes: store.list_nodes().await.unwrap(),
            records: store
                .list_records("workflow", &RecordQuery::default())
                .await
                .unwrap(),
            record_events: store
                .read_record_events("workflow", "wf-1", 0, 100)
                .await
                .unwrap(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn everything_survives_a_restart_and_work_continues() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hive.db");
        let store: Arc<dyn Store> = Arc::new(open(&path).await.unwrap());
        let h = Harness::new(store.clone());
        let (node, w) = h.system_node(3).await;
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut spec = TaskSpec::new("echo", json!({ "i": i })).retry(RetryPolicy::none());
            if i == 4 {
                spec = spec.idempotency_key("only-once");
            }
            ids.push(h.hive.submit(&alice(), spec).await.unwrap().id);
        }
        let claimed = h.claim(&w, node, 3, true).await;
        assert_eq!(claimed.len(), 3);
        h.hive
            .report_success(&w, claimed[0].token, json!("done"))
            .await
            .unwrap();
        h.hive
            .report_failure(&w, claimed[1].token, TaskError::new("boom", "no"))
            .await
            .unwrap();
        h.hive
            .log(&w, claimed[2].token, "stdout", "still going")
            .await
            .unwrap();
        let running = claimed[2].token;
        h.hive
            .ack_terminal(&alice(), "mailer", &[claimed[0].token.task])
            .await
            .unwrap();
        let record = |expected_version, n: i64| RecordWrite {
            kind: "workflow".into(),
            id: "wf-1".into(),
            tenant: "acme".into(),
            expected_version,
            status: "running".into(),
            body: json!({ "step": n }),
            events: vec![json!({ "advanced": n })],
            now: Timestamp::from_millis(5_000 + n),
        };
        store.write_record(record(0, 1)).await.unwrap();
        store.write_record(record(1, 2)).await.unwrap();
        let before = snapshot(&*store, &ids).await;
        let head = before.feed.last().unwrap().cursor;
        assert_eq!(before.feed.len() as u64, head, "cursors 1..head");
        let now = h.clock.now();
        drop(h);
        drop(store);

        let store: Arc<dyn Store> = Arc::new(open(&path).await.unwrap());
        let after = snapshot(&*store, &ids).await;
        assert_eq!(
            after, before,
            "tasks, events, feed, consumers, nodes and records"
        );
        let h = Harness::new(store.clone());
        h.clock.set(now);
        assert_eq!(
            h.state(running.task).await,
            TaskState::Running,
            "a task running at shutdown stays running (the supervisor reclaims it)"
        );
        assert_eq!(
            h.hive.get_node(&h.system, node).await.unwrap().in_flight,
            1,
            "its lease is still counted"
        );
        // The same idempotency key still answers with the stored task.
        let again = h
            .hive
            .submit(
                &alice(),
                TaskSpec::new("echo", json!(4)).idempotency_key("only-once"),
            )
            .await
            .unwrap();
        assert_eq!((again.id, again.created), (ids[4], false));
        // Pending tasks are claimable; the lease of the running one still works.
        let next = h.claim(&w, node, 10, true).await;
        let mut got: Vec<_> = next.iter().map(|c| c.token.task).collect();
        got.sort();
        assert_eq!(got, vec![ids[3], ids[4]]);
        h.hive
            .report_success(&w, running, json!("after restart"))
            .await
            .unwrap();
        // The feed continues from the stored head, gapless.
        let tail = store.read_feed(&"acme".into(), head, 100).await.unwrap();
        let cursors: Vec<u64> = tail.iter().map(|e| e.cursor).collect();
        assert_eq!(cursors, (head + 1..=head + 5).collect::<Vec<_>>());
        for id in &ids {
            assert_event_contract(&h.events(*id).await);
        }
        let w2 = store.write_record(record(2, 3)).await.unwrap();
        assert_eq!((w2.version, w2.last_seq), (3, 3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_file_share_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hive.db");
        let (a, b) = tokio::join!(open(&path), open(&path));
        let a: Arc<dyn Store> = Arc::new(a.unwrap());
        let b: Arc<dyn Store> = Arc::new(b.unwrap());
        let ha = Harness::new(a.clone());
        let hb = Harness::new(b.clone());
        // A registers a node and submits; B sees both and claims.
        let (node, w) = ha.system_node(100).await;
        let sub = ha
            .hive
            .submit_batch(
                &alice(),
                (0..10).map(|i| TaskSpec::new("echo", json!(i))).collect(),
            )
            .await
            .unwrap();
        assert_eq!(
            hb.hive.get_node(&hb.system, node).await.unwrap().in_flight,
            0
        );
        let page = hb
            .hive
            .list_tasks(&alice(), &TaskQuery::default())
            .await
            .unwrap();
        assert_eq!(page.items.len(), 10);
        let claimed = hb.claim(&w, node, 10, true).await;
        assert_eq!(claimed.len(), 10);
        // A reports; B sees the result; B's waiter returns (by its timeout at
        // worst, since notifications are per process) and finds the event.
        let waiter = {
            let b = b.clone();
            let task = claimed[0].token.task;
            tokio::spawn(async move {
                b.wait_for_events(task, 3, Duration::from_millis(500))
                    .await
                    .unwrap();
                b.read_events(task, 3, 10).await.unwrap()
            })
        };
        for c in &claimed {
            ha.hive
                .report_success(&w, c.token, json!("ok"))
                .await
                .unwrap();
        }
        let seen = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(seen.iter().any(|e| e.kind.is_terminal()), "{seen:?}");
        for s in &sub {
            assert_eq!(hb.state(s.id).await, TaskState::Succeeded);
        }
        assert_eq!(
            hb.hive.get_node(&hb.system, node).await.unwrap().in_flight,
            0
        );
        // Both write at once: one gapless feed, every task complete.
        let (ra, rb) = tokio::join!(
            async {
                for _ in 0..10 {
                    ha.hive
                        .submit_batch(&alice(), vec![TaskSpec::new("echo", json!(0)); 20])
                        .await
                        .unwrap();
                }
            },
            async {
                for _ in 0..10 {
                    hb.hive
                        .submit_batch(&alice(), vec![TaskSpec::new("echo", json!(1)); 20])
                        .await
                        .unwrap();
                }
            }
        );
        let ((), ()) = (ra, rb);
        let feed = a.read_feed(&"acme".into(), 0, 10_000).await.unwrap();
        let cursors: Vec<u64> = feed.iter().map(|e| e.cursor).collect();
        assert_eq!(cursors, (1..=feed.len() as u64).collect::<Vec<_>>());
        assert_eq!(
            feed.len(),
            10 + 10 * 2 + 10 + 400,
            "queued, scheduled+started, succeeded"
        );
        assert_eq!(feed, b.read_feed(&"acme".into(), 0, 10_000).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_waits_for_another_processs_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hive.db");
        let patient = SqliteStore::connect(
            &format!("{}?busy_timeout=10s", url(&path)),
            &OpenOptions::default(),
        )
        .await
        .unwrap();
        let impatient = SqliteStore::connect(
            &format!("{}?busy_timeout=50ms", url(&path)),
            &OpenOptions::default(),
        )
        .await
        .unwrap();
        let node = hive_core::Node {
            id: NodeId::new(),
            spec: NodeSpec::system("n", 1),
            status: hive_core::NodeStatus::Ready,
            in_flight: 0,
            registered_at: Timestamp::from_millis(1),
            last_seen: Timestamp::from_millis(1),
        };
        // Another "process" holds the write lock.
        let mut other = raw(&path).await;
        let mut lock = other.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("SELECT 1").execute(&mut *lock).await.unwrap();
        match impatient.register_node(node.clone()).await {
            Err(e @ Error::BackendUnavailable { .. }) => assert!(e.is_temporary()),
            other => panic!("expected BackendUnavailable, got {other:?}"),
        }
        let started = Instant::now();
        let waiting = tokio::spawn(async move { patient.register_node(node).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "the write waits for the lock");
        lock.rollback().await.unwrap();
        waiting.await.unwrap().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
