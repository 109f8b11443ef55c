//! Server faults: the PostgreSQL (and, separately, the Redis) server is
//! restarted in the middle of a run. While it is down the engine answers
//! `BackendUnavailable`; afterwards it reconnects by itself, and nothing that was
//! acknowledged is lost: every task whose submit was answered ends, with its
//! full event stream.
//!
//! Each test runs a private server (the shared ones of `scripts/test-all` must
//! not be restarted under the other tests' feet).

mod support;

use std::sync::Arc;
use std::time::Duration;

use hive::engine::HiveConfig;
use hive::worker::handler_fn;
use hive::{Error, Hive, Principal, RetryPolicy, TaskId, TaskSpec, WorkerOptions};
use hive_store::conformance::assert_event_contract;
use parking_lot::Mutex;
use serde_json::json;

async fn run_through_a_restart(url: String, mut restart: impl FnMut(bool)) {
    let store = hive_store::open(&format!("{url}?connect_timeout=2s"))
        .await
        .expect("open");
    let hive = Hive::builder()
        .store(store)
        .config(HiveConfig {
            sweep_interval: Duration::from_millis(200),
            node_heartbeat_interval: Duration::from_secs(2),
            subscription_poll: Duration::from_millis(300),
            ..HiveConfig::default()
        })
        .build()
        .unwrap();
    let alice = Principal::user("acme", "alice");
    let worker = hive
        .start_worker(
            &Principal::system(),
            WorkerOptions::new("survivor")
                .system()
                .capacity(16)
                .handler(
                    "work",
                    handler_fn(|_| async {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        Ok(json!("ok"))
                    }),
                ),
        )
        .await
        .unwrap();

    // A submitter that keeps going through the outage, remembering what was
    // acknowledged.
    let acked: Arc<Mutex<Vec<TaskId>>> = Arc::default();
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let submitter = {
        let (hive, alice, acked, refused) =
            (hive.clone(), alice.clone(), acked.clone(), refused.clone());
        tokio::spawn(async move {
            for round in 0..120 {
                let specs = (0..20)
                    .map(|i| {
                        TaskSpec::new("work", json!({"round": round, "i": i}))
                            .retry(RetryPolicy::attempts(20, Duration::from_millis(50)))
                    })
                    .collect();
                match hive.submit_batch(&alice, specs).await {
                    Ok(s) => acked.lock().extend(s.into_iter().map(|s| s.id)),
                    Err(e) => refused.lock().push(e.kind().to_string()),
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = acked.lock().len();
    assert!(before > 0, "work was acknowledged before the fault");

    // Down: calls fail with BackendUnavailable, never hang or panic.
    tokio::task::block_in_place(|| restart(false));
    let probe = acked.lock()[0];
    let mut saw_unavailable = false;
    for _ in 0..20 {
        match tokio::time::timeout(Duration::from_secs(10), hive.get_task(&alice, probe)).await {
            Ok(Err(Error::BackendUnavailable { .. })) => {
                saw_unavailable = true;
                break;
            }
            Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(Err(e)) => panic!("expected BackendUnavailable while the server is down, got {e:?}"),
            Err(_) => panic!("a call hung while the server was down"),
        }
    }
    assert!(saw_unavailable, "the engine reported BackendUnavailable");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Up again: the engine reconnects by itself.
    tokio::task::block_in_place(|| restart(true));
    submitter.await.unwrap();
    let acked = acked.lock().clone();
    assert!(
        acked.len() > before,
        "submits succeeded again after the restart"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for id in &acked {
        loop {
            match hive.get_task(&alice, *id).await {
                Ok(t) if t.state.is_terminal() => break,
                Ok(_) | Err(Error::BackendUnavailable { .. }) => {}
                Err(e) => panic!("acknowledged task {id}: {e:?}"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "acknowledged task {id} did not end"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let events = hive.store().read_events(*id, 0, 1000).await.unwrap();
        assert_event_contract(&events);
        assert!(events.last().unwrap().kind.is_terminal());
    }
    let refused = refused.lock().clone();
    assert!(
        refused.iter().all(|k| k == "backend_unavailable"),
        "submits during the outage are refused as BackendUnavailable, got {refused:?}"
    );
    println!(
        "fault: {} tasks acknowledged, {} submits refused during the outage",
        acked.len(),
        refused.len()
    );
    worker.shutdown().await;
    hive.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_run_loses_nothing_acknowledged() {
    let Some(pg) = support::PgServer::start() else {
        return;
    };
    let url = pg.url();
    run_through_a_restart(url, |up| if up { pg.restart() } else { pg.stop() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_run_loses_nothing_acknowledged() {
    let Some(redis) = support::RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let redis = std::sync::Mutex::new(redis);
    run_through_a_restart(url, |up| {
        let mut r = redis.lock().unwrap();
        if up { r.restart() } else { r.stop() }
    })
    .await;
}
