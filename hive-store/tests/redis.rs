//! The redis backend runs the conformance suite unchanged, plus what only a
//! shared server can show: an unreachable server, two stores (two processes) on
//! one prefix, key isolation, contention across stores.
//!
//! The server comes from `HIVE_TEST_REDIS_URL`. Without it every test says
//! SKIPPED (under `CI=true` it fails instead); the conformance tests then run on
//! the memory backend so that the factory still returns a store.

use std::sync::Arc;

use hive_store::OpenOptions;
use hive_store::redis::RedisStore;
use hive_store::testing::{server_url, unique_name};

async fn store() -> Option<RedisStore> {
    let url = server_url("HIVE_TEST_REDIS_URL")?;
    let mut options = OpenOptions::default();
    options.prefix = unique_name("hive_t");
    Some(RedisStore::connect(&url, &options).await.expect("connect"))
}

hive_store::conformance_tests!(|| async {
    store()
        .await
        .map(|s| Arc::new(s) as Arc<dyn hive_core::store::Store>)
});

mod redis_specific {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use hive_core::node::Node;
    use hive_core::scheduler::FairScheduler;
    use hive_core::store::{
        ClaimRequest, ClaimedTask, Command, NewTask, RecordStore, RecordWrite, Store, SweepOptions,
        TaskStore,
    };
    use hive_core::task::machine::Op;
    use hive_core::{
        Error, EventKind, NodeId, NodeSpec, NodeStatus, Owner, TaskError, TaskId, TaskSpec,
        TaskState, Timestamp,
    };
    use hive_store::OpenOptions;
    use hive_store::redis::RedisStore;
    use hive_store::testing::{server_url, unique_name};
    use serde_json::json;

    const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

    fn owner() -> Owner {
        Owner {
            tenant: "acme:corp".into(),
            principal: "alice".into(),
        }
    }

    fn tasks(n: usize) -> Vec<NewTask> {
        (0..n)
            .map(|i| NewTask {
                id: TaskId::new(),
                owner: owner(),
                spec: Arc::new(TaskSpec::new("echo", json!({ "i": i }))),
            })
            .collect()
    }

    /// Two stores on one prefix, as two processes would have.
    async fn pair(url: &str, prefix: &str) -> (Arc<RedisStore>, Arc<RedisStore>) {
        let mut options = OpenOptions::default();
        options.prefix = prefix.to_owned();
        let a = RedisStore::connect(url, &options).await.expect("connect a");
        let b = RedisStore::connect(url, &options).await.expect("connect b");
        (Arc::new(a), Arc::new(b))
    }

    async fn node(store: &dyn Store, capacity: u32) -> NodeId {
        let id = NodeId::new();
        store
            .register_node(Node {
                id,
                spec: NodeSpec::system(format!("n-{id}"), capacity),
                status: NodeStatus::Ready,
                in_flight: 0,
                registered_at: T0,
                last_seen: T0,
            })
            .await
            .expect("register node");
        id
    }

    async fn claim(store: &dyn Store, node: NodeId, max: u32, now: Timestamp) -> Vec<ClaimedTask> {
        let scheduler = FairScheduler::default();
        store
            .claim(ClaimRequest {
                node,
                max,
                agents: &[],
                start: true,
                scheduler: &scheduler,
                now,
            })
            .await
            .expect("claim")
            .tasks
    }

    fn succeed(c: &ClaimedTask, node: NodeId) -> Command {
        Command {
            task: c.token.task,
            op: Op::Succeed {
                token: c.token,
                node,
                output: json!("done"),
            },
        }
    }

    /// Every key of the server's current database, by SCAN.
    async fn all_keys(conn: &mut redis::aio::MultiplexedConnection) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .expect("scan");
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_is_backend_unavailable_within_the_connect_timeout() {
        let mut options = OpenOptions::default();
        options.connect_timeout = Duration::from_millis(800);
        let started = Instant::now();
        let r = RedisStore::connect("redis://127.0.0.1:1/", &options).await;
        let took = started.elapsed();
        match r {
            Err(e @ Error::BackendUnavailable { .. }) => assert!(e.is_temporary()),
            other => panic!("expected BackendUnavailable, got {other:?}"),
        }
        assert!(
            took < options.connect_timeout + Duration::from_millis(500),
            "gave up after {took:?}, the timeout is {:?}",
            options.connect_timeout
        );
        // A malformed URL is a clear error, not a panic or a wait.
        assert!(matches!(
            RedisStore::connect("redis://[::1/", &options).await,
            Err(Error::InvalidArgument { .. })
        ));
    }

    /// A prefix written by a newer build (or by something that is not Hive) is a
    /// clear error at connect, and nothing is changed.
    #[tokio::test]
    async fn a_newer_or_foreign_data_format_is_refused_at_connect() {
        let Some(url) = server_url("HIVE_TEST_REDIS_URL") else {
            return;
        };
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        for (stored, needle) in [
            (
                format!("{}", hive_store::redis::FORMAT_VERSION + 1),
                "newer build",
            ),
            ("1".to_owned(), "cannot read"),
            ("not-a-version".to_owned(), "something else"),
        ] {
            let prefix = unique_name("fmt");
            let key = format!("{prefix}:format");
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(&stored)
                .query_async(&mut conn)
                .await
                .unwrap();
            let mut options = OpenOptions::default();
            options.prefix = prefix.clone();
            match RedisStore::connect(&url, &options).await {
                Err(Error::Backend { message, .. }) => {
                    assert!(message.contains(needle), "{message}")
                }
                other => panic!("expected Backend, got {other:?}"),
            }
            let after: String = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(after, stored, "the stored version is left alone");
            let _: () = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        // An empty prefix is claimed with this build's format.
        let prefix = unique_name("fmt");
        let mut options = OpenOptions::default();
        options.prefix = prefix.clone();
        RedisStore::connect(&url, &options).await.unwrap();
        let v: String = redis::cmd("GET")
            .arg(format!("{prefix}:format"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(v, hive_store::redis::FORMAT_VERSION.to_string());
    }

    /// Format 2 had no ready-queue head index: a store opening such a prefix
    /// builds it from the ready queues (and marks the prefix format 3), so
    /// every waiting task stays claimable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_format_2_prefix_gets_its_head_index_and_loses_no_task() {
        let Some(url) = server_url("HIVE_TEST_REDIS_URL") else {
            return;
        };
        let prefix = unique_name("hive_fmt2");
        let (a, _) = pair(&url, &prefix).await;
        let mut new = tasks(5);
        for (i, t) in new.iter_mut().enumerate() {
            // Five principals: five ready queues.
            t.owner.principal = format!("p{i}").into();
        }
        a.submit(new, T0).await.unwrap();
        drop(a);
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        // What a format-2 build left behind: no index, format 2.
        let _: () = redis::cmd("DEL")
            .arg(format!("{prefix}:qh"))
            .arg(format!("{prefix}:qhk"))
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}:format"))
            .arg("2")
            .query_async(&mut conn)
            .await
            .unwrap();
        let (b, c) = pair(&url, &prefix).await;
        let v: String = redis::cmd("GET")
            .arg(format!("{prefix}:format"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(v, hive_store::redis::FORMAT_VERSION.to_string());
        let heads: i64 = redis::cmd("ZCARD")
            .arg(format!("{prefix}:qh"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(heads, 5, "one index member per ready queue");
        let n = node(&*b, 10).await;
        let claimed = claim(&*c, n, 10, T0).await;
        assert_eq!(
            claimed.len(),
            5,
            "every task of the old prefix is claimable"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_prefix_see_and_wake_each_other() {
        let Some(url) = server_url("HIVE_TEST_REDIS_URL") else {
            return;
        };
        let (a, b) = pair(&url, &unique_name("hive_two")).await;
        let tenant = owner().tenant;

        // A worker idle on store A wakes when store B submits.
        let n = node(&*a, 10).await;
        let idle = a
            .claim(ClaimRequest {
                node: n,
                max: 10,
                agents: &[],
                start: true,
                scheduler: &FairScheduler::default(),
                now: T0,
            })
            .await
            .unwrap();
        assert!(idle.tasks.is_empty());
        let work_waiter = {
            let a = a.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                a.wait_for_work(idle.epoch, Duration::from_secs(30))
                    .await
                    .unwrap();
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!work_waiter.is_finished(), "nothing woke it yet");
        let submitted = b.submit(tasks(3), T0).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_secs(10), work_waiter)
            .await
            .expect("the work waiter on A wakes when B submits")
            .unwrap();
        assert!(waited < Duration::from_secs(10));

        // Tasks submitted on B are claimable on A, and the other way round.
        let claimed = claim(&*a, n, 10, T0).await;
        let ids: BTreeSet<TaskId> = claimed.iter().map(|c| c.token.task).collect();
        let expected: BTreeSet<TaskId> = submitted.iter().map(|s| s.id).collect();
        assert_eq!(ids, expected);
        let more = a.submit(tasks(2), T0).await.unwrap();
        let m = node(&*b, 10).await;
        let on_b: BTreeSet<TaskId> = claim(&*b, m, 10, T0)
            .await
            .iter()
            .map(|c| c.token.task)
            .collect();
        assert_eq!(on_b, more.iter().map(|s| s.id).collect());

        // Waiters on A (task events, the tenant feed) wake when B appends.
        let c = claimed[0].clone();
        let head = a.read_feed(&tenant, 0, 1000).await.unwrap().len() as u64;
        let event_waiter = {
            let a = a.clone();
            tokio::spawn(async move {
                a.wait_for_events(c.token.task, c.last_seq, Duration::from_secs(30))
                    .await
                    .unwrap();
            })
        };
        let feed_waiter = {
            let (a, tenant) = (a.clone(), tenant.clone());
            tokio::spawn(async move {
                a.wait_for_feed(&tenant, head, Duration::from_secs(30))
                    .await
                    .unwrap();
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!event_waiter.is_finished() && !feed_waiter.is_finished());
        let acks = b.apply(vec![succeed(&c, n)], T0).await.unwrap();
        assert_eq!(acks[0].as_ref().unwrap().state, TaskState::Succeeded);
        tokio::time::timeout(Duration::from_secs(10), event_waiter)
            .await
            .expect("the event waiter on A wakes when B appends")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), feed_waiter)
            .await
            .expect("the feed waiter on A wakes when B appends")
            .unwrap();
        let seen_on_a = a.read_events(c.token.task, 0, 100).await.unwrap();
        assert_eq!(
            seen_on_a.last().unwrap().kind,
            EventKind::Succeeded {
                output: json!("done")
            }
        );

        // Record waiters too.
        let write = |expected_version, n: i64| RecordWrite {
            kind: "wf:run".into(),
            id: "r:1".into(),
            tenant: tenant.clone(),
            expected_version,
            status: "running".into(),
            body: json!({ "n": n }),
            events: vec![json!({ "n": n })],
            now: T0,
        };
        b.write_record(write(0, 0)).await.unwrap();
        let record_waiter = {
            let a = a.clone();
            tokio::spawn(async move {
                a.wait_for_record_events("wf:run", "r:1", 1, Duration::from_secs(30))
                    .await
                    .unwrap();
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!record_waiter.is_finished());
        b.write_record(write(1, 1)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), record_waiter)
            .await
            .expect("the record waiter on A wakes when B writes")
            .unwrap();
        let r = a.get_record("wf:run", "r:1").await.unwrap().unwrap();
        assert_eq!((r.version, r.last_seq), (2, 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_key_or_channel_is_written_outside_the_prefix() {
        let Some(url) = server_url("HIVE_TEST_REDIS_URL") else {
            return;
        };
        // A database of its own, so that other tests' keys do not mix in.
        let url = format!("{}/13", url.trim_end_matches('/'));
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut spy = client.get_async_pubsub().await.unwrap();
        spy.psubscribe("*").await.unwrap();
        let before = all_keys(&mut conn).await;

        let prefix = unique_name("hive_iso");
        let (a, b) = pair(&url, &prefix).await;
        let tenant = owner().tenant;
        let n = node(&*a, 100).await;
        let gone = node(&*b, 100).await;
        let mut many = tasks(20);
        let keyed = Arc::make_mut(&mut many[0].spec);
        keyed.idempotency_key = Some("k:1".into());
        a.submit(many, T0).await.unwrap();
        let claimed = claim(&*b, gone, 5, T0).await;
        b.remove_node(gone, T0).await.unwrap();
        let claimed_again = claim(&*a, n, 100, T0.saturating_add(Duration::from_secs(5))).await;
        assert!(claimed_again.len() >= claimed.len());
        let done: Vec<Command> = claimed_again.iter().map(|c| succeed(c, n)).collect();
        a.apply(done, T0).await.unwrap();
        let ended: Vec<TaskId> = claimed_again.iter().map(|c| c.token.task).collect();
        b.ack_terminal(&tenant, "mail:er", &ended[..2])
            .await
            .unwrap();
        assert!(
            !b.unacked_terminal(&tenant, "mail:er", 100)
                .await
                .unwrap()
                .is_empty()
        );
        a.wait_for_events(ended[0], 0, Duration::from_secs(1))
            .await
            .unwrap();
        a.wait_for_feed(&tenant, 0, Duration::from_secs(1))
            .await
            .unwrap();
        b.write_record(RecordWrite {
            kind: "audit".into(),
            id: "e:1".into(),
            tenant: tenant.clone(),
            expected_version: 0,
            status: "new".into(),
            body: json!({}),
            events: vec![json!(1)],
            now: T0,
        })
        .await
        .unwrap();
        let listed = a
            .list_records("audit", &hive_core::store::RecordQuery::default())
            .await
            .unwrap();
        assert_eq!(
            listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["e:1"]
        );
        a.sweep(
            T0.saturating_add(Duration::from_secs(3600 * 24)),
            &SweepOptions {
                limit: 100,
                node_lost_after: Duration::from_secs(6),
            },
        )
        .await
        .unwrap();

        let after = all_keys(&mut conn).await;
        let ours = format!("{prefix}:");
        let new: Vec<&String> = after.difference(&before).collect();
        assert!(
            new.iter().any(|k| k.starts_with(&ours)),
            "the store wrote keys"
        );
        let outside: Vec<&&String> = new
            .iter()
            .filter(|k| !k.starts_with(&ours) && !k.starts_with("hive_iso_"))
            .collect();
        assert!(outside.is_empty(), "keys outside the prefix: {outside:?}");

        // Every message published while the stores worked went to a channel
        // under some store's prefix (other tests publish under theirs).
        let mut channels = BTreeSet::new();
        {
            let mut messages = spy.on_message();
            while let Ok(Some(msg)) = tokio::time::timeout(
                Duration::from_millis(300),
                futures::StreamExt::next(&mut messages),
            )
            .await
            {
                channels.insert(msg.get_channel_name().to_owned());
            }
        }
        assert!(
            channels.iter().any(|c| c.starts_with(&ours)),
            "{channels:?}"
        );
        let stray: Vec<&String> = channels
            .iter()
            .filter(|c| !c.starts_with("hive_"))
            .collect();
        assert!(stray.is_empty(), "channels outside any prefix: {stray:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn contention_across_two_stores_never_doubles_a_lease_or_a_terminal_event() {
        let Some(url) = server_url("HIVE_TEST_REDIS_URL") else {
            return;
        };
        let (a, b) = pair(&url, &unique_name("hive_race")).await;
        let tenant = owner().tenant;
        let total = 300;
        a.submit(tasks(total), T0).await.unwrap();

        // Two nodes, one per store, claim concurrently in small batches.
        let na = node(&*a, 1000).await;
        let nb = node(&*b, 1000).await;
        let claimer = |s: Arc<RedisStore>, n: NodeId| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let batch = claim(&*s, n, 7, T0).await;
                    if batch.is_empty() {
                        return got;
                    }
                    got.extend(batch);
                }
            })
        };
        let (ca, cb) = (claimer(a.clone(), na), claimer(b.clone(), nb));
        let (ca, cb) = (ca.await.unwrap(), cb.await.unwrap());
        let ids_a: BTreeSet<TaskId> = ca.iter().map(|c| c.token.task).collect();
        let ids_b: BTreeSet<TaskId> = cb.iter().map(|c| c.token.task).collect();
        assert_eq!(ids_a.len(), ca.len(), "no task leased twice to A");
        assert_eq!(ids_b.len(), cb.len(), "no task leased twice to B");
        assert!(ids_a.is_disjoint(&ids_b), "no task leased to both nodes");
        assert_eq!(ids_a.len() + ids_b.len(), total, "every task was leased");
        assert_eq!(
            a.get_node(na).await.unwrap().unwrap().in_flight as usize,
            ca.len()
        );
        assert_eq!(
            b.get_node(nb).await.unwrap().unwrap().in_flight as usize,
            cb.len()
        );

        // Then every competing end at once, from both stores: success from the
        // node, a non-retryable failure, a cancel, and two sweepers past every
        // deadline.
        let mut joins = Vec::new();
        for (claims, node) in [(ca, na), (cb, nb)] {
            for c in claims {
                let fail = Command {
                    task: c.token.task,
                    op: Op::Fail {
                        token: c.token,
                        node,
                        error: TaskError::new("boom", "no").non_retryable(),
                    },
                };
                let cancel = Command {
                    task: c.token.task,
                    op: Op::Cancel {
                        by: "oscar".into(),
                        reason: "race".into(),
                    },
                };
                for (store, cmd) in [
                    (a.clone(), succeed(&c, node)),
                    (b.clone(), fail),
                    (b.clone(), cancel),
                ] {
                    joins.push(tokio::spawn(
                        async move { store.apply(vec![cmd], T0).await },
                    ));
                }
            }
        }
        let late = T0.saturating_add(Duration::from_secs(7200));
        let opts = SweepOptions {
            limit: 50,
            node_lost_after: Duration::from_secs(3600 * 24),
        };
        for s in [a.clone(), b.clone()] {
            joins.push(tokio::spawn(async move {
                loop {
                    let r = s.sweep(late, &opts).await.unwrap();
                    if !r.more {
                        return Ok(Vec::new());
                    }
                }
            }));
        }
        for j in joins {
            j.await.unwrap().expect("no call fails as a whole");
        }
        let mut ended = BTreeMap::new();
        for id in ids_a.iter().chain(&ids_b) {
            let events = a.read_events(*id, 0, 100).await.unwrap();
            hive_store::conformance::assert_event_contract(&events);
            let terminals = events.iter().filter(|e| e.kind.is_terminal()).count();
            assert_eq!(terminals, 1, "{events:?}");
            *ended.entry(events.last().unwrap().kind.name()).or_insert(0) += 1;
            let t = b.get_task(*id).await.unwrap().unwrap();
            assert!(t.state.is_terminal());
        }
        assert_eq!(ended.values().sum::<usize>(), total, "{ended:?}");
        assert_eq!(a.get_node(na).await.unwrap().unwrap().in_flight, 0);
        assert_eq!(b.get_node(nb).await.unwrap().unwrap().in_flight, 0);
        // The feed holds each terminal event once, with gapless cursors.
        let feed = a.read_feed(&tenant, 0, 100_000).await.unwrap();
        for (i, e) in feed.iter().enumerate() {
            assert_eq!(e.cursor, i as u64 + 1);
        }
        assert_eq!(
            feed.iter().filter(|e| e.event.kind.is_terminal()).count(),
            total
        );
    }

    /// Every value of a task hash fits the small (listpack) encoding when the
    /// task's values are short; long inputs, keys, principals, errors, outputs
    /// and events go to the side hash, and everything reads back exactly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_stay_compact_and_long_values_read_back_exactly() {
        let Some(url) = server_url("HIVE_TEST_REDIS_URL") else {
            return;
        };
        let prefix = unique_name("hive_compact");
        let (s, _) = pair(&url, &prefix).await;
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let long = "x".repeat(300);
        let mut short_spec = TaskSpec::new("echo", json!({ "i": 1 }));
        short_spec.retry.max_attempts = hive_core::retry::MaxAttempts::Limited(2);
        short_spec.retry.initial_interval = Duration::from_millis(1);
        let mut long_spec = short_spec.clone();
        long_spec.input = json!({ "long": long });
        long_spec.idempotency_key = Some(format!("key {long}"));
        let long_owner = Owner {
            tenant: "acme".into(),
            principal: format!("p {long}").as_str().into(),
        };
        let submitted = s
            .submit(
                vec![
                    NewTask {
                        id: TaskId::new(),
                        owner: owner(),
                        spec: Arc::new(short_spec.clone()),
                    },
                    NewTask {
                        id: TaskId::new(),
                        owner: long_owner.clone(),
                        spec: Arc::new(long_spec.clone()),
                    },
                ],
                T0,
            )
            .await
            .unwrap();
        let (short_id, long_id) = (submitted[0].id, submitted[1].id);
        let n = node(&*s, 10).await;

        // A first attempt fails with a long error, the retry succeeds with a
        // long output on the short task and a short one on the long task.
        let claimed = claim(&*s, n, 10, T0).await;
        assert_eq!(claimed.len(), 2);
        let error = TaskError::new("boom", long.clone()).with_details(json!({ "d": long }));
        let fails: Vec<Command> = claimed
            .iter()
            .map(|c| Command {
                task: c.token.task,
                op: Op::Fail {
                    token: c.token,
                    node: n,
                    error: error.clone(),
                },
            })
            .collect();
        for r in s.apply(fails, T0).await.unwrap() {
            r.unwrap();
        }
        let later = T0.saturating_add(Duration::from_secs(5));
        let claimed = claim(&*s, n, 10, later).await;
        assert_eq!(claimed.len(), 2);
        for c in &claimed {
            let spec = if c.token.task == long_id {
                assert_eq!(c.owner, long_owner);
                &long_spec
            } else {
                &short_spec
            };
            assert_eq!(*c.spec, *spec);
        }
        let done: Vec<Command> = claimed
            .iter()
            .map(|c| Command {
                task: c.token.task,
                op: Op::Succeed {
                    token: c.token,
                    node: n,
                    output: if c.token.task == short_id {
                        json!({ "out": long })
                    } else {
                        json!(1)
                    },
                },
            })
            .collect();
        for r in s.apply(done, later).await.unwrap() {
            r.unwrap();
        }

        // Snapshots, events and the feed read back what was written.
        let tasks = s.get_tasks(&[short_id, long_id]).await.unwrap();
        assert_eq!(tasks.len(), 2);
        for t in &tasks {
            assert_eq!(t.state, TaskState::Succeeded);
            assert_eq!(t.attempt, 2);
            assert_eq!(t.error.as_ref(), Some(&error));
            if t.id == long_id {
                assert_eq!(*t.spec, long_spec);
                assert_eq!(t.owner, long_owner);
                assert_eq!(t.output, Some(json!(1)));
            } else {
                assert_eq!(*t.spec, short_spec);
                assert_eq!(t.output, Some(json!({ "out": long })));
            }
            let events = s.read_events(t.id, 0, 100).await.unwrap();
            let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, (1..=t.last_seq).collect::<Vec<_>>());
            assert!(matches!(events[0].kind, EventKind::Queued));
            assert!(events.iter().any(
                |e| matches!(&e.kind, EventKind::AttemptFailed { error: e, .. } if *e == error)
            ));
            assert!(matches!(
                &events.last().unwrap().kind,
                EventKind::Succeeded { output } if Some(output) == t.output.as_ref()
            ));
        }
        let feed = s.read_feed(&"acme".into(), 0, 100).await.unwrap();
        let feed_kinds: Vec<_> = feed
            .iter()
            .filter(|f| f.event.task == long_id)
            .map(|f| f.event.kind.clone())
            .collect();
        let task_kinds: Vec<_> = s
            .read_events(long_id, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(feed_kinds, task_kinds);

        // Resubmitting the long key answers the same task.
        let again = s
            .submit(
                vec![NewTask {
                    id: TaskId::new(),
                    owner: long_owner.clone(),
                    spec: Arc::new(long_spec.clone()),
                }],
                later,
            )
            .await
            .unwrap();
        assert_eq!((again[0].id, again[0].created), (long_id, false));

        // The short task's hash is small; the long one's values are redirects.
        let enc = |id: TaskId| {
            redis::cmd("OBJECT")
                .arg("ENCODING")
                .arg(format!("{prefix}:t:{id}"))
                .clone()
        };
        let e: String = enc(short_id).query_async(&mut conn).await.unwrap();
        assert_eq!(e, "listpack");
        let e: String = enc(long_id).query_async(&mut conn).await.unwrap();
        assert_eq!(e, "listpack");
        let spec_keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:spec:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(spec_keys.len(), 1, "both tasks share one stored spec");

        // A corrupt core is an error, never a panic.
        let _: () = redis::cmd("HSET")
            .arg(format!("{prefix}:t:{short_id}"))
            .arg("c")
            .arg("\u{1}\u{1}")
            .query_async(&mut conn)
            .await
            .unwrap();
        let (_, fresh) = pair(&url, &prefix).await;
        assert!(matches!(
            fresh.get_task(short_id).await,
            Err(Error::Backend { .. })
        ));
    }

    /// Issue 11, item 14: one old unacknowledged terminal event followed by
    /// 10,000 acknowledged ones (acknowledged both after being listed and
    /// before the consumer's mark reached them, more than one script call's
    /// budget) still lists exactly the old one, and what was taken in is kept
    /// in the consumer's own set rather than scanned again on every call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_old_unacked_terminal_event_does_not_make_listing_scan_the_rest() {
        let Some(url) = server_url("HIVE_TEST_REDIS_URL") else {
            return;
        };
        let prefix = unique_name("hive_ack");
        let (store, _) = pair(&url, &prefix).await;
        let tenant: hive_core::TenantId = owner().tenant;
        let batch = tasks(10_001);
        let ids: Vec<TaskId> = batch.iter().map(|t| t.id).collect();
        store.submit(batch, T0).await.unwrap();
        let cancel = |id: TaskId| Command {
            task: id,
            op: Op::Cancel {
                by: "oscar".into(),
                reason: "ended".into(),
            },
        };
        for chunk in ids.chunks(1_000) {
            let acks = store
                .apply(chunk.iter().copied().map(cancel).collect(), T0)
                .await
                .unwrap();
            assert!(acks.iter().all(|a| a.is_ok()));
        }
        // The consumer lists and acknowledges the first half page by page,
        // keeping the very first task unacknowledged ...
        let mut acked = 0;
        while acked < 5_000 {
            let page = store
                .unacked_terminal(&tenant, "mailer", 1_001)
                .await
                .unwrap();
            assert_eq!(page[0].event.task, ids[0]);
            let ack: Vec<TaskId> = page[1..].iter().map(|e| e.event.task).collect();
            acked += ack.len();
            store.ack_terminal(&tenant, "mailer", &ack).await.unwrap();
        }
        // ... then acknowledges the rest before ever listing them.
        store
            .ack_terminal(&tenant, "mailer", &ids[acked + 1..])
            .await
            .unwrap();
        for _ in 0..3 {
            let left = store.unacked_terminal(&tenant, "mailer", 10).await.unwrap();
            let left: Vec<TaskId> = left.iter().map(|e| e.event.task).collect();
            assert_eq!(left, vec![ids[0]]);
        }
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let waiting: usize = redis::cmd("ZCARD")
            .arg(format!("{prefix}:cu:acme%3Acorp:mailer"))
            .query_async(&mut conn)
            .await
            .unwrap();
        let ahead: usize = redis::cmd("SCARD")
            .arg(format!("{prefix}:ca:acme%3Acorp:mailer"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            (waiting, ahead),
            (1, 0),
            "only the unacknowledged task is kept"
        );
    }

    /// Issue 11, item 11: a script that fails half-way through a batch (here
    /// the second tenant's feed key holds the wrong type) writes nothing at
    /// all: the first task keeps its state and seq, and its feed and events
    /// agree. Before, the first task's hash was written at once and its feed
    /// entry, batched for the end, was lost with the error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_fails_half_way_writes_nothing() {
        let Some(url) = server_url("HIVE_TEST_REDIS_URL") else {
            return;
        };
        let prefix = unique_name("hive_half");
        let (store, _) = pair(&url, &prefix).await;
        let task = |tenant: &str, key: Option<&str>| {
            let mut spec = TaskSpec::new("echo", json!(null));
            spec.idempotency_key = key.map(str::to_owned);
            NewTask {
                id: TaskId::new(),
                owner: Owner {
                    tenant: tenant.into(),
                    principal: "alice".into(),
                },
                spec: Arc::new(spec),
            }
        };
        let good = task("good", None);
        let bad = task("bad", None);
        let (a, b) = (good.id, bad.id);
        store.submit(vec![good, bad], T0).await.unwrap();
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::pipe()
            .cmd("DEL")
            .arg(format!("{prefix}:f:bad"))
            .cmd("SET")
            .arg(format!("{prefix}:f:bad"))
            .arg("not a list")
            .query_async(&mut conn)
            .await
            .unwrap();
        let cancel = |id: TaskId| Command {
            task: id,
            op: Op::Cancel {
                by: "oscar".into(),
                reason: "x".into(),
            },
        };
        let r = store.apply(vec![cancel(a), cancel(b)], T0).await;
        assert!(r.is_err(), "the script fails: {r:?}");
        let t = store.get_task(a).await.unwrap().unwrap();
        assert_eq!(
            t.state,
            TaskState::Pending,
            "nothing of the batch was written"
        );
        let events = store.read_events(a, 0, 100).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(t.last_seq, 1);
        let good_tenant: hive_core::TenantId = "good".into();
        let feed = store.read_feed(&good_tenant, 0, 100).await.unwrap();
        assert_eq!(feed.len(), 1, "the feed agrees with the task");

        // The same for a scripted submit (idempotency keys): the good
        // tenant's task, key and queue entry are not stored either.
        let good = task("good", Some("k1"));
        let bad = task("bad", Some("k2"));
        let good_id = good.id;
        assert!(store.submit(vec![good, bad], T0).await.is_err());
        assert!(store.get_task(good_id).await.unwrap().is_none());
        let keys: Option<String> = redis::cmd("HGET")
            .arg(format!("{prefix}:idem:good"))
            .arg("k1")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(keys, None);
        assert_eq!(
            store.read_feed(&good_tenant, 0, 100).await.unwrap().len(),
            1
        );

        // Once the key is repaired, the same batch goes through whole.
        let _: () = redis::cmd("DEL")
            .arg(format!("{prefix}:f:bad"))
            .query_async(&mut conn)
            .await
            .unwrap();
        let acks = store.apply(vec![cancel(a), cancel(b)], T0).await.unwrap();
        assert!(acks.iter().all(|a| a.is_ok()), "{acks:?}");
        let events = store.read_events(a, 0, 100).await.unwrap();
        hive_store::conformance::assert_event_contract(&events);
        assert_eq!(
            store.read_feed(&good_tenant, 0, 100).await.unwrap().len(),
            2
        );
    }
}
