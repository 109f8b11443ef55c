//! Remote workers over HTTP: the worker protocol with worker tokens, the
//! fencing tokens unchanged (a stale lease is refused), and the Python
//! reference worker (`examples/python/http_worker.py`, standard library
//! only) running tasks to their end.

mod common;

use std::time::Duration;

use common::{Server, problem, run_remote};
use hive::iam::TokenKind;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_worker_runs_tasks_to_their_end() {
    let s = Server::start().await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let (_, worker) = s.node(&t, 16).await;
    let specs: Vec<Value> = (0..100)
        .map(|i| json!({"agent": "echo", "input": i}))
        .collect();
    let batch: Value = s
        .post("/api/tasks", &t, json!({"tasks": specs}))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<String> = batch["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    run_remote(&s, &worker, 100).await;
    for (i, id) in ids.iter().enumerate() {
        let snap: Value = s
            .get(&format!("/api/tasks/{id}"), &t)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(snap["state"], "succeeded");
        assert_eq!(snap["output"]["echo"], i);
    }
    // A claim with nothing to do waits (a long poll), then answers empty.
    let started = std::time::Instant::now();
    let r: Value = s
        .post("/api/worker/claim", &worker, json!({"wait": "300ms"}))
        .await
        .json()
        .await
        .unwrap();
    assert!(r["tasks"].as_array().unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A long-polling claim is woken by a submission.
    let claim = {
        let http = s.http.clone();
        let url = s.url("/api/worker/claim");
        let worker = worker.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = http
                .post(url)
                .bearer_auth(worker)
                .json(&json!({"wait": "20s"}))
                .send()
                .await
                .unwrap();
            (started.elapsed(), r.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.submit(&t, "echo").await;
    let (took, r) = claim.await.unwrap();
    assert_eq!(r["tasks"].as_array().unwrap().len(), 1);
    assert!(
        took < Duration::from_secs(5),
        "woken by the submission: {took:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lease_is_refused_as_in_process() {
    let s = Server::start().await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let id = s.submit(&t, "echo").await;
    let (_, worker) = s.node(&t, 1).await;
    let claim: Value = s
        .post("/api/worker/claim", &worker, json!({"start": true}))
        .await
        .json()
        .await
        .unwrap();
    let token = claim["tasks"][0]["token"].clone();
    assert_eq!(token["task"], id);
    // The owner cancels it: the lease is gone.
    s.post(&format!("/api/tasks/{id}/cancel"), &t, json!({}))
        .await;
    for (path, body) in [
        (
            "/api/worker/heartbeat",
            json!({"beats": [{"token": token}]}),
        ),
        (
            "/api/worker/log",
            json!({"lines": [{"token": token, "stream": "stdout", "line": "late"}]}),
        ),
        (
            "/api/worker/report",
            json!({"reports": [{"token": token, "outcome": "success", "output": 1}]}),
        ),
    ] {
        let r: Value = s.post(path, &worker, body).await.json().await.unwrap();
        let p = &r["results"][0]["problem"];
        assert!(r["results"][0]["ack"].is_null(), "{path}: {r}");
        assert_eq!(p["code"], "lease_lost", "{path}: {r}");
        assert_eq!(p["status"], 409);
    }
    let snap: Value = s
        .get(&format!("/api/tasks/{id}"), &t)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        snap["state"], "cancelled",
        "the late report changed nothing"
    );

    // A forged lease on a live task is refused too.
    let id = s.submit(&t, "echo").await;
    let claim: Value = s
        .post("/api/worker/claim", &worker, json!({"start": true}))
        .await
        .json()
        .await
        .unwrap();
    let mut forged = claim["tasks"][0]["token"].clone();
    forged["lease"] = json!(hive::LeaseId::new());
    let r: Value = s
        .post(
            "/api/worker/report",
            &worker,
            json!({"reports": [{"token": forged, "outcome": "success", "output": 1}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["results"][0]["problem"]["code"], "lease_lost", "{r}");
    // Another node's worker cannot touch this lease.
    let (_, other) = s.node(&t, 1).await;
    let real = claim["tasks"][0]["token"].clone();
    let r = s
        .post(
            "/api/worker/report",
            &other,
            json!({"reports": [{"token": real, "outcome": "success", "output": 1}]}),
        )
        .await;
    let body: Value = r.json().await.unwrap();
    assert!(body["results"][0]["problem"].is_object(), "{body}");
    let snap: Value = s
        .get(&format!("/api/tasks/{id}"), &t)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(snap["state"], "running");
    // Bad bodies are problems.
    problem(
        s.post(
            "/api/worker/report",
            &worker,
            json!({"reports": [{"token": 1}]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_reference_worker_runs_tasks_and_drops_a_stale_report() {
    let s = Server::start().await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let echo = s.submit(&t, "echo").await;
    let fail = s.submit(&t, "fail").await;
    let logs: Value = s
        .post(
            "/api/tasks",
            &t,
            json!({"agent": "log", "input": {"lines": 3}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let logs = logs["id"].as_str().unwrap().to_owned();
    let nap: Value = s
        .post(
            "/api/tasks",
            &t,
            json!({"agent": "nap", "input": {"seconds": 2}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let nap = nap["id"].as_str().unwrap().to_owned();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../python/http_worker.py");
    let child = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            "--url",
            &s.url(""),
            "--token",
            &t,
            "--max-tasks",
            "4",
            "--capacity",
            "4",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    // Cancel the nap while the worker sleeps on it.
    let mut running = false;
    for _ in 0..200 {
        let snap: Value = s
            .get(&format!("/api/tasks/{nap}"), &t)
            .await
            .json()
            .await
            .unwrap();
        if snap["state"] == "running" {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(running, "the python worker started the nap");
    s.post(&format!("/api/tasks/{nap}/cancel"), &t, json!({}))
        .await;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the worker exits")
        .expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    assert_eq!(summary, json!({"ran": 3, "lease_lost": 1}), "{stderr}");

    let get = |id: String| {
        let s = &s;
        let t = t.clone();
        async move {
            s.get(&format!("/api/tasks/{id}"), &t)
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let e = get(echo).await;
    assert_eq!(e["state"], "succeeded");
    assert_eq!(e["output"], json!({"echo": {}}));
    let f = get(fail).await;
    assert_eq!(f["state"], "failed");
    assert_eq!(f["error"]["code"], "Boom");
    let l = get(logs.clone()).await;
    assert_eq!(l["output"]["lines"], 3);
    let page: Value = s
        .get(&format!("/api/tasks/{logs}/logs"), &t)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["lines"].as_array().unwrap().len(), 3);
    let n = get(nap).await;
    assert_eq!(n["state"], "cancelled", "the stale report changed nothing");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_claims_nothing_and_the_audit_pages() {
    let s = Server::start().await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let ops = s.token("acme", "ops", TokenKind::Operator).await;
    let (node, worker) = s.node(&t, 2).await;
    let r: Value = s
        .post(&format!("/api/nodes/{node}/drain"), &t, json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "draining", "{r}");
    s.submit(&t, "echo").await;
    let claim: Value = s
        .post("/api/worker/claim", &worker, json!({"max": 2}))
        .await
        .json()
        .await
        .unwrap();
    assert!(claim["tasks"].as_array().unwrap().is_empty(), "{claim}");
    let listed: Value = s.get("/api/nodes", &t).await.json().await.unwrap();
    assert_eq!(listed[0]["status"], "draining");

    // The audit trail (node.register, token.issue_worker, node.drain,
    // task.submit…) in pages of one.
    let mut after = 0;
    let mut actions = Vec::new();
    loop {
        let page: Value = s
            .get(&format!("/api/audit?limit=1&after_seq={after}"), &ops)
            .await
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 1);
        actions.extend(
            events
                .iter()
                .map(|e| e["action"].as_str().unwrap().to_owned()),
        );
        match page["next_after_seq"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    for a in [
        "node.register",
        "token.issue_worker",
        "node.drain",
        "task.submit",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
    let verify: Value = s.get("/api/audit/verify", &ops).await.json().await.unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    s.stop().await;
}
