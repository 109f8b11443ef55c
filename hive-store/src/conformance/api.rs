//! The engine's front door on every backend: cross-tenant ids are `NotFound`
//! everywhere (acknowledgements included), a task's stored events can be read
//! without waiting, and `wait` returns a task in its terminal state.

use std::sync::Arc;
use std::time::Duration;

use hive_core::store::Store;
use hive_core::task::{EventKind, TaskState};
use hive_core::{Error, TaskId};
use serde_json::json;

use super::{Harness, alice, carol, spec};

/// `ack_terminal` with another tenant's task id (or an unknown one) is
/// `NotFound` and acknowledges nothing, like every other cross-tenant call.
pub async fn ack_terminal_of_another_tenants_task_is_not_found(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(8).await;
    let mine = h.hive.submit(&alice(), spec("echo")).await.unwrap().id;
    let theirs = h.hive.submit(&carol(), spec("echo")).await.unwrap().id;
    for c in h.claim(&w, node, 2, true).await {
        h.hive
            .report_success(&w, c.token, json!(null))
            .await
            .unwrap();
    }
    // Carol acknowledges Alice's task: NotFound, and Alice's consumer is
    // untouched (Carol's consumer of the same name too).
    let e = h
        .hive
        .ack_terminal(&carol(), "mailer", &[mine])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    let e = h
        .hive
        .ack_terminal(&carol(), "mailer", &[theirs, TaskId::new()])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    let carols = h
        .hive
        .unacked_terminal(&carol(), "mailer", 10)
        .await
        .unwrap();
    assert_eq!(
        carols.iter().map(|e| e.event.task).collect::<Vec<_>>(),
        vec![theirs],
        "a refused batch acknowledges nothing"
    );
    let alices = h
        .hive
        .unacked_terminal(&alice(), "mailer", 10)
        .await
        .unwrap();
    assert_eq!(
        alices.iter().map(|e| e.event.task).collect::<Vec<_>>(),
        vec![mine]
    );
    // Their own tasks they acknowledge.
    h.hive
        .ack_terminal(&alice(), "mailer", &[mine])
        .await
        .unwrap();
    assert!(
        h.hive
            .unacked_terminal(&alice(), "mailer", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `read_events` answers what is stored now, without waiting; `wait` returns
/// the task once it has ended (at once if it has), `wait_timeout` gives up
/// with `Timeout`; both are `NotFound` for another tenant.
pub async fn read_events_does_not_wait_and_wait_returns_the_ended_task(store: Arc<dyn Store>) {
    let h = Harness::new(store);
    let (node, w) = h.system_node(8).await;
    let id = h.hive.submit(&alice(), spec("echo")).await.unwrap().id;

    let events = tokio::time::timeout(
        Duration::from_secs(5),
        h.hive.read_events(&alice(), id, 0, 100),
    )
    .await
    .expect("read_events does not wait for more events")
    .unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind.clone()).collect::<Vec<_>>(),
        vec![EventKind::Queued]
    );
    assert!(
        h.hive
            .read_events(&alice(), id, 1, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let e = h
        .hive
        .wait_timeout(&alice(), id, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    for e in [
        h.hive.read_events(&carol(), id, 0, 100).await.unwrap_err(),
        h.hive.wait(&carol(), id).await.unwrap_err(),
    ] {
        assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    }

    let waiter = {
        let hive = h.hive.clone();
        tokio::spawn(async move { hive.wait(&alice(), id).await })
    };
    let c = h.claim(&w, node, 1, true).await.remove(0);
    h.hive
        .report_success(&w, c.token, json!({"done": true}))
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("wait returns after the end")
        .unwrap()
        .unwrap();
    assert_eq!(ended.state, TaskState::Succeeded);
    assert_eq!(ended.output, Some(json!({"done": true})));
    let again = h.hive.wait(&alice(), id).await.unwrap();
    assert_eq!(again.last_seq, ended.last_seq, "an ended task at once");
    let all = h.hive.read_events(&alice(), id, 0, 100).await.unwrap();
    assert_eq!(all.len() as u64, ended.last_seq);
}
