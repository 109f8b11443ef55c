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

/// Issue 11, item 7: what a worker sends is bounded by `HiveConfig::limits`,
/// enforced by the engine (remote workers go through the same calls): an
/// oversized output, error message, log line or progress is `TooLarge` for
/// that item only, nothing of it is stored, and the rest of the batch goes on.
pub async fn oversized_worker_values_are_refused_and_nothing_is_stored(store: Arc<dyn Store>) {
    use hive_core::engine::{Report, ReportOutcome};
    use hive_core::task::TaskError;

    let h = Harness::with_config(store, |c| {
        c.limits.max_output_bytes = 100;
        c.limits.max_error_message_bytes = 50;
        c.limits.max_log_line_bytes = 40;
        c.limits.max_progress_bytes = 30;
    });
    let (node, w) = h.system_node(8).await;
    for _ in 0..3 {
        h.hive.submit(&alice(), spec("echo")).await.unwrap();
    }
    let leases = h.claim(&w, node, 3, true).await;
    let (a, b, c) = (leases[0].token, leases[1].token, leases[2].token);
    let too_large = |r: &hive_core::Result<hive_core::store::Ack>, what: &str| {
        assert!(
            matches!(r, Err(Error::TooLarge { what: w, .. }) if w == what),
            "{what}: {r:?}"
        );
    };

    let e = h
        .hive
        .log(&w, a, "stdout", &"x".repeat(41))
        .await
        .map(|_| ());
    assert!(matches!(e, Err(Error::TooLarge { .. })), "{e:?}");
    h.hive.log(&w, a, "stdout", &"x".repeat(40)).await.unwrap();
    let beats = h
        .hive
        .heartbeat(
            &w,
            vec![
                (a, Some(json!("p".repeat(40)))),
                (b, Some(json!({"step": 1}))),
            ],
        )
        .await
        .unwrap();
    too_large(&beats[0], "progress");
    assert!(beats[1].is_ok(), "{:?}", beats[1]);

    let answers = h
        .hive
        .report(
            &w,
            vec![
                Report {
                    token: a,
                    outcome: ReportOutcome::Success {
                        output: json!("o".repeat(200)),
                    },
                },
                Report {
                    token: b,
                    outcome: ReportOutcome::Failure {
                        error: TaskError::new("boom", "m".repeat(51)),
                    },
                },
                Report {
                    token: c,
                    outcome: ReportOutcome::Success {
                        output: json!({"ok": true}),
                    },
                },
            ],
        )
        .await
        .unwrap();
    too_large(&answers[0], "output");
    too_large(&answers[1], "error.message");
    assert_eq!(answers[2].as_ref().unwrap().state, TaskState::Succeeded);

    // Nothing of the refused values was stored: a and b still run, their
    // events hold only what fit.
    assert_eq!(h.state(a.task).await, TaskState::Running);
    assert_eq!(h.state(b.task).await, TaskState::Running);
    let events = h.hive.read_events(&alice(), a.task, 0, 100).await.unwrap();
    let logs: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Log { line, .. } => Some(line.len()),
            _ => None,
        })
        .collect();
    assert_eq!(logs, vec![40]);
    assert!(
        !events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Heartbeat { progress: Some(p), .. } if p.as_str().is_some_and(|s| s.len() > 30))),
        "{events:?}"
    );
    // Within the limits, the same leases report.
    h.hive
        .report_success(&w, a, json!("o".repeat(50)))
        .await
        .unwrap();
    h.hive
        .report_failure(&w, b, TaskError::new("boom", "short").non_retryable())
        .await
        .unwrap();
    assert_eq!(h.state(a.task).await, TaskState::Succeeded);
    assert_eq!(h.state(b.task).await, TaskState::Failed);
}

/// Issue 11, item 6: identifiers are checked the same way on every backend,
/// with typed errors, before anything is stored or audited: empty, oversized
/// or separator-bearing tenant ids, malformed principal ids, NUL and control
/// characters in labels, idempotency keys and node names.
pub async fn malformed_identifiers_are_refused_the_same_on_every_backend(store: Arc<dyn Store>) {
    use hive_core::{NodeSpec, Principal, TaskSpec};

    let h = Harness::new(store);
    let invalid_argument = |r: hive_core::Result<hive_core::store::Submitted>, what: &str| {
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "{what}: {r:?}"
        );
    };
    let invalid_spec = |r: hive_core::Result<hive_core::store::Submitted>, what: &str| {
        assert!(matches!(r, Err(Error::InvalidSpec { .. })), "{what}: {r:?}");
    };
    for tenant in ["", "a/b", "a:b", "nul\0", "white space", &"t".repeat(65)] {
        let p = Principal::user(tenant, "alice");
        invalid_argument(h.hive.submit(&p, spec("echo")).await, tenant);
    }
    for id in ["", "a/b", "al\0ice", "tab\there", &"p".repeat(257)] {
        let p = Principal::user("acme", id);
        invalid_argument(h.hive.submit(&p, spec("echo")).await, id);
    }
    invalid_spec(
        h.hive
            .submit(&alice(), spec("echo").label("gpu", "h\0x"))
            .await,
        "NUL in a label value",
    );
    invalid_spec(
        h.hive
            .submit(&alice(), spec("echo").label("g\u{1}pu", "x"))
            .await,
        "control character in a label key",
    );
    invalid_spec(
        h.hive
            .submit(&alice(), spec("echo").label("gpu", "v".repeat(257)))
            .await,
        "oversized label value",
    );
    invalid_spec(
        h.hive
            .submit(&alice(), spec("echo").idempotency_key("k\0"))
            .await,
        "NUL in an idempotency key",
    );
    let node = h
        .hive
        .register_node(&alice(), NodeSpec::user("n\0", &alice(), 1))
        .await;
    assert!(matches!(node, Err(Error::InvalidSpec { .. })), "{node:?}");
    let node = h
        .hive
        .register_node(&alice(), NodeSpec::user("n", &alice(), 1).label("k", "\0"))
        .await;
    assert!(matches!(node, Err(Error::InvalidSpec { .. })), "{node:?}");
    assert!(matches!(
        hive_core::TenantId::parse("a/b"),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(hive_core::TenantId::parse("acme-2.eu_west").is_ok());
    assert!(hive_core::PrincipalId::parse("worker:3").is_ok());

    // Nothing was stored, and valid identifiers (NUL-free Unicode values
    // included) work.
    let page = h
        .hive
        .list_tasks(&alice(), &hive_core::TaskQuery::default())
        .await
        .unwrap();
    assert!(page.items.is_empty(), "{:?}", page.items);
    let ok = h
        .hive
        .submit(
            &Principal::user("acme-2.eu_west", "alice@example.com"),
            TaskSpec::new("echo", json!(null))
                .label("région", "île-de-france")
                .idempotency_key("clé:1/2"),
        )
        .await
        .unwrap();
    assert!(ok.created);
}
