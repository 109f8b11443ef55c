//! `/api/tasks` over real HTTP: submit (single, batch, idempotency), the
//! fast path (ETag/304, long poll), list, cancel, bulk cancel, results,
//! logs, diagnostics, and bad input answered with problems, nothing stored.

mod common;

use std::time::{Duration, Instant};

use common::{Server, problem};
use hive::iam::TokenKind;
use hive::prelude::*;
use honeycomb::api::ApiLimits;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn count(s: &Server, token: &str) -> usize {
    let r = s.get("/api/tasks?limit=1000", token).await;
    let body: Value = r.json().await.unwrap();
    body["items"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_get_and_list() {
    let s = Server::start().await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let r = s
        .post(
            "/api/tasks",
            &t,
            json!({"agent": "echo", "input": {"n": 1}, "labels": {"team": "a"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/tasks/{id}"));
    assert_eq!(body["created"], true);
    assert_eq!(body["last_seq"], 1);

    let r = s.get(&location, &t).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-cache");
    assert_eq!(
        r.headers()["etag"].to_str().unwrap(),
        format!("W/\"{id}-1\"")
    );
    let snap: Value = r.json().await.unwrap();
    assert_eq!(snap["state"], "pending");
    assert_eq!(snap["agent"], "echo");
    assert_eq!(snap["tenant"], "acme");
    assert_eq!(snap["owner"], "alice");
    assert_eq!(snap["labels"]["team"], "a");
    assert!(snap.get("input").is_none(), "the snapshot is small");

    // A batch: all or nothing.
    let r = s
        .post(
            "/api/tasks",
            &t,
            json!({"tasks": [{"agent": "a", "input": 1}, {"agent": "b", "input": 2}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let batch: Value = r.json().await.unwrap();
    assert_eq!(batch["tasks"].as_array().unwrap().len(), 2);
    let r = s
        .post(
            "/api/tasks",
            &t,
            json!({"tasks": [{"agent": "a", "input": 1}, {"agent": "", "input": 2}]}),
        )
        .await;
    let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec").await;
    assert_eq!(p["field"], "[1].agent");
    assert_eq!(count(&s, &t).await, 3, "the refused batch stored nothing");

    // Filters and pages.
    let r = s.get("/api/tasks?agent=a", &t).await;
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let r = s.get("/api/tasks?labels=team=a&state=pending", &t).await;
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["items"][0]["id"], id);
    let r = s.get("/api/tasks?limit=2", &t).await;
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap();
    let r = s.get(&format!("/api/tasks?limit=2&after={next}"), &t).await;
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    problem(
        s.get("/api/tasks?state=sleeping", &t).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    let p = problem(
        s.get("/api/tasks?colour=red", &t).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("colour"), "{p}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_answers_the_task_it_created() {
    let s = Server::start().await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let send = || {
        s.req(Method::POST, "/api/tasks", Some(&t))
            .header("Idempotency-Key", "order-42")
            .json(&json!({"agent": "echo", "input": {}}))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["created"], false);
    // A body with another key than the header is refused.
    let r = s
        .req(Method::POST, "/api/tasks", Some(&t))
        .header("Idempotency-Key", "k1")
        .json(&json!({"agent": "echo", "input": {}, "idempotency_key": "k2"}))
        .send()
        .await
        .unwrap();
    let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec").await;
    assert_eq!(p["field"], "idempotency_key");
    let r = s
        .req(Method::POST, "/api/tasks", Some(&t))
        .header("Idempotency-Key", "")
        .json(&json!({"agent": "echo", "input": {}}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::BAD_REQUEST, "bad_request").await;
    assert_eq!(count(&s, &t).await, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_304_and_a_long_poll_woken_by_the_store() {
    let s = Server::start().await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let id = s.submit(&t, "echo").await;
    let path = format!("/api/tasks/{id}");
    let r = s.get(&path, &t).await;
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let r = s
        .req(Method::GET, &path, Some(&t))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert!(r.bytes().await.unwrap().is_empty());
    // A list of tags, and `*`.
    for header in [format!("\"x\", {etag}"), "*".to_owned()] {
        let r = s
            .req(Method::GET, &path, Some(&t))
            .header("If-None-Match", header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    }

    // A long poll with nothing happening answers after its wait, unchanged.
    let started = Instant::now();
    let r = s.get(&format!("{path}?after_seq=1&wait=300ms"), &t).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let snap: Value = r.json().await.unwrap();
    assert_eq!(snap["last_seq"], 1);

    // A long poll answers as soon as the task moves (a cancel here).
    let poll = {
        let url = s.url(&format!("{path}?after_seq=1&wait=20s"));
        let http = s.http.clone();
        let t = t.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = http.get(url).bearer_auth(t).send().await.unwrap();
            (started.elapsed(), r.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = s
        .post(&format!("{path}/cancel"), &t, json!({"reason": "test"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (took, snap) = poll.await.unwrap();
    assert!(
        took < Duration::from_secs(5),
        "woken, not timed out: {took:?}"
    );
    assert_eq!(snap["state"], "cancelled");
    assert_eq!(snap["last_seq"], 2);
    // The old ETag no longer matches.
    let r = s
        .req(Method::GET, &path, Some(&t))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    problem(
        s.get(&format!("{path}?after_seq=1&wait=soon"), &t).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_bulk_cancel_and_conflicts() {
    let s = Server::start().await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let a = s.submit(&t, "slow").await;
    let _b = s.submit(&t, "slow").await;
    let c = s.submit(&t, "other").await;
    let r = s
        .post(&format!("/api/tasks/{c}/cancel"), &t, Value::Null)
        .await;
    // `null` is not an object: the body is refused, nothing happens.
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let r = s
        .req(Method::POST, &format!("/api/tasks/{c}/cancel"), Some(&t))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "an empty body is fine");
    let ack: Value = r.json().await.unwrap();
    assert_eq!(ack["state"], "cancelled");
    let r = s
        .post(&format!("/api/tasks/{c}/cancel"), &t, json!({}))
        .await;
    problem(r, StatusCode::CONFLICT, "already_terminal").await;

    let r = s
        .post(
            "/api/tasks/cancel",
            &t,
            json!({"filter": {"agent": "slow"}, "dry_run": true}),
        )
        .await;
    let dry: Value = r.json().await.unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["matched"].as_array().unwrap().len(), 2);
    assert!(dry["cancelled"].as_array().unwrap().is_empty());
    let snap: Value = s
        .get(&format!("/api/tasks/{a}"), &t)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(snap["state"], "pending", "a dry run changes nothing");
    let r = s
        .post(
            "/api/tasks/cancel",
            &t,
            json!({"filter": {"agent": "slow"}, "reason": "cleanup"}),
        )
        .await;
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["cancelled"].as_array().unwrap().len(), 2);
    let snap: Value = s
        .get(&format!("/api/tasks/{a}"), &t)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(snap["state"], "cancelled");
    problem(
        s.post(
            "/api/tasks/cancel",
            &t,
            json!({"filter": {"colour": "red"}}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_problem_and_stores_nothing() {
    let s = Server::with_limits(ApiLimits {
        body_bytes: 2048,
        ..ApiLimits::default()
    })
    .await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let raw = |body: &'static str, ct: &'static str| {
        s.req(Method::POST, "/api/tasks", Some(&t))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    problem(
        raw("{\"agent\":", "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    problem(
        raw("{\"agent\":\"a\"}", "text/plain").await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let p = problem(
        raw("{\"input\":{}}", "application/json").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("agent"), "{p}");
    let big = json!({"agent": "a", "input": "x".repeat(4096)});
    problem(
        s.post("/api/tasks", &t, big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
    problem(
        s.post(
            "/api/tasks",
            &t,
            json!({"agent": "a", "input": {}, "retry": {"max_attempts": -1}}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_eq!(count(&s, &t).await, 0, "nothing was stored");

    // Ids, routes, methods.
    problem(
        s.get("/api/tasks/not-an-id", &t).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    problem(
        s.get(&format!("/api/tasks/{}", TaskId::new()), &t).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    problem(
        s.get("/api/nothing-here", &t).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let r = s
        .req(Method::PUT, "/api/tasks", Some(&t))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_logs_and_diagnostics() {
    let s = Server::with_limits(ApiLimits {
        inline_bytes: 64,
        ..ApiLimits::default()
    })
    .await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let id = s.submit(&t, "echo").await;
    // Nothing to run it yet: the diagnosis says so.
    let d: Value = s
        .get(&format!("/api/tasks/{id}/diagnostics"), &t)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(d["waiting"]["reason"], "no_ready_node", "{d}");
    let (_, worker) = s.node(&t, 1).await;
    let d: Value = s
        .get(&format!("/api/tasks/{id}/diagnostics"), &t)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(d["waiting"]["reason"], "claimable", "{d}");

    let claim: Value = s
        .post("/api/worker/claim", &worker, json!({"start": true}))
        .await
        .json()
        .await
        .unwrap();
    let token = claim["tasks"][0]["token"].clone();
    let lines: Vec<Value> = (0..5)
        .map(|i| json!({"token": token, "stream": "stdout", "line": format!("line {i}")}))
        .collect();
    let r: Value = s
        .post("/api/worker/log", &worker, json!({"lines": lines}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["results"].as_array().unwrap().len(), 5);
    let big = "y".repeat(200);
    s.post(
        "/api/worker/report",
        &worker,
        json!({"reports": [{"token": token, "outcome": "success", "output": {"big": big}}]}),
    )
    .await;

    // The output is too large to show inline: linked.
    let snap: Value = s
        .get(&format!("/api/tasks/{id}"), &t)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(snap["state"], "succeeded");
    assert!(snap.get("output").is_none());
    let link = snap["result_link"].as_str().unwrap();
    let result: Value = s.get(link, &t).await.json().await.unwrap();
    assert_eq!(result["output"]["big"], big);

    let page: Value = s
        .get(&format!("/api/tasks/{id}/logs?limit=3"), &t)
        .await
        .json()
        .await
        .unwrap();
    let lines = page["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["line"], "line 0");
    assert_eq!(lines[0]["attempt"], 1);
    assert_eq!(page["truncated"], true);
    let next = page["next_after_seq"].as_u64().unwrap();
    let page: Value = s
        .get(&format!("/api/tasks/{id}/logs?after_seq={next}"), &t)
        .await
        .json()
        .await
        .unwrap();
    let rest: Vec<&str> = page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["line 3", "line 4"]);
    assert_eq!(page["truncated"], false);
    assert_eq!(page["ended"], true);
    let d: Value = s
        .get(&format!("/api/tasks/{id}/diagnostics"), &t)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(d["waiting"]["reason"], "ended");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_tasks_over_http() {
    let s = Server::start().await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let id = s
        .submit_spec(&t, json!({"agent": "later", "delay": "1h"}))
        .await;
    let snap = s.get_json(&format!("/api/tasks/{id}"), &t).await;
    assert_eq!(snap["state"], "pending");
    let due = snap["available_at"].as_i64().unwrap();
    assert!(
        due >= before + 3_600_000 && due < before + 3_660_000,
        "due in an hour: {due} vs {before}"
    );
    let at = before + 7_200_000;
    s.submit_spec(&t, json!({"agent": "later", "not_before": at}))
        .await;
    let r = s
        .post(
            "/api/tasks",
            &t,
            json!({"agent": "later", "not_before": at, "delay": "1s"}),
        )
        .await;
    let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec").await;
    assert_eq!(p["field"], "delay");
    assert_eq!(count(&s, &t).await, 2, "the refused spec stored nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_and_rate_limits_over_http() {
    let s = Server::start().await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let id = s
        .submit_spec(
            &t,
            json!({
                "agent": "later",
                "input": {"customer": {"id": 7}},
                "concurrency": {"key_from": "/customer/id", "max_running": 2},
                "rate_limit": {"key": "llm", "limit": 100, "per": "1s"},
            }),
        )
        .await;
    let snap = s.get_json(&format!("/api/tasks/{id}"), &t).await;
    assert_eq!(snap["state"], "pending", "{snap}");
    for (body, field) in [
        (
            json!({"agent": "later", "concurrency": {"key": "k", "max_running": 0}}),
            "concurrency.max_running",
        ),
        (
            json!({"agent": "later", "input": {}, "concurrency": {"key_from": "/customer"}}),
            "concurrency.key_from",
        ),
        (
            json!({"agent": "later", "rate_limit": {"key": "llm", "limit": 5, "per": "1s", "units": 9}}),
            "rate_limit.units",
        ),
    ] {
        let r = s.post("/api/tasks", &t, body).await;
        let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec").await;
        assert_eq!(p["field"], field);
    }
    assert_eq!(count(&s, &t).await, 1, "the refused specs stored nothing");
}
