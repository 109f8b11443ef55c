//! The API's contract on the durable, shared backends (real PostgreSQL and
//! Redis; under `CI=true` a missing server fails): a long poll woken by the
//! store's notifications, an SSE stream resumed, a remote worker, an
//! idempotent submission — and two Honeycomb processes on one store.

mod common;

use std::time::{Duration, Instant};

use common::{Server, SseReader, run_remote};
use hive::iam::TokenKind;
use hive_store::testing::{server_url, unique_name};
use honeycomb::api::ApiLimits;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The contract through `a` and `b`: two processes on one store, or (for
/// SQLite, whose change notifications stay inside one process) the same one.
async fn contract(url: &str, two: bool) {
    let a = Server::on(url, ApiLimits::default()).await;
    let b_own = if two {
        Some(Server::on(url, ApiLimits::default()).await)
    } else {
        None
    };
    let b = b_own.as_ref().unwrap_or(&a);
    let t = a.token("acme", "alice", TokenKind::User).await;
    // A token issued through one process works on the other (one store).
    let id = b.submit(&t, "echo").await;

    // A long poll on A is woken by a cancel through B.
    let poll = {
        let http = a.http.clone();
        let url = a.url(&format!("/api/tasks/{id}?after_seq=1&wait=20s"));
        let t = t.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = http.get(url).bearer_auth(t).send().await.unwrap();
            (started.elapsed(), r.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = b
        .post(&format!("/api/tasks/{id}/cancel"), &t, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (took, snap) = poll.await.unwrap();
    assert_eq!(snap["state"], "cancelled");
    assert!(
        took < Duration::from_secs(10),
        "woken by the store: {took:?}"
    );

    // Idempotent across processes.
    let send = |s: &Server| {
        s.req(Method::POST, "/api/tasks", Some(&t))
            .header("Idempotency-Key", "same")
            .json(&json!({"agent": "echo", "input": 7}))
            .send()
    };
    let first: Value = send(&a).await.unwrap().json().await.unwrap();
    let again = send(b).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);

    // A worker on B runs it; the stream on A follows to the end, resumed once.
    let sid = first["id"].as_str().unwrap().to_owned();
    let mut events = SseReader::new(a.get(&format!("/api/tasks/{sid}/events"), &t).await);
    let queued = events.next().await.unwrap();
    assert_eq!(queued.id.as_deref(), Some("1"));
    drop(events);
    let (_, worker) = b.node(&t, 4).await;
    run_remote(b, &worker, 1).await;
    let r = a
        .req(Method::GET, &format!("/api/tasks/{sid}/events"), Some(&t))
        .header("Last-Event-ID", "1")
        .send()
        .await
        .unwrap();
    let rest = SseReader::new(r).until_end().await;
    let ids: Vec<&str> = rest.iter().filter_map(|e| e.id.as_deref()).collect();
    assert_eq!(ids, ["2", "3", "4"], "scheduled, started, succeeded");
    assert_eq!(rest[2].json()["type"], "succeeded");
    assert_eq!(rest.last().unwrap().event.as_deref(), Some("end"));
    let snap: Value = a
        .get(&format!("/api/tasks/{sid}"), &t)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(snap["output"]["echo"], 7);
    if let Some(b) = b_own {
        b.stop().await;
    }
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_on_postgres() {
    let Some(base) = server_url("HIVE_TEST_POSTGRES_URL") else {
        return;
    };
    contract(&format!("{base}?schema={}", unique_name("hc")), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_on_redis() {
    let Some(base) = server_url("HIVE_TEST_REDIS_URL") else {
        return;
    };
    contract(&format!("{base}?prefix={}", unique_name("hc")), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    contract(
        &format!("sqlite://{}", dir.path().join("hive.db").display()),
        false,
    )
    .await;
}
