//! Tokens × routes: every role against every kind of route — 401 without a
//! token, 404 for another tenant's object, 403 for a missing scope (each
//! denial audited by the engine), and the right success otherwise.

mod common;

use common::Server;
use hive::iam::{AUDIT_KIND, TokenKind};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ROLES: [&str; 7] = ["alice", "bob", "operator", "admin", "worker", "eve", "none"];

async fn chain_len(s: &Server, tenant: &str) -> usize {
    match s
        .hive
        .store()
        .read_record_events(AUDIT_KIND, tenant, 0, 100_000)
        .await
    {
        Ok(events) => events.len(),
        Err(hive::Error::NotFound { .. }) => 0,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_against_every_route() {
    let s = Server::start().await;
    let alice = s.token("acme", "alice", TokenKind::User).await;
    let bob = s.token("acme", "bob", TokenKind::User).await;
    let operator = s.token("acme", "ops", TokenKind::Operator).await;
    let admin = s.token("acme", "root", TokenKind::Admin).await;
    let eve = s.token("globex", "eve", TokenKind::User).await;
    let (node, worker) = s.node(&alice, 2).await;
    let tokens = [
        Some(alice.clone()),
        Some(bob),
        Some(operator),
        Some(admin.clone()),
        Some(worker),
        Some(eve),
        None,
    ];
    let task = s.submit(&alice, "echo").await;
    let done = s.submit(&alice, "echo").await;
    s.post(&format!("/api/tasks/{done}/cancel"), &alice, json!({}))
        .await;
    let wf: Value = s
        .post(
            "/api/workflows",
            &alice,
            json!({"name": "w", "steps": [{"id": "a", "agent": "x", "input": {}}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let wf = wf["id"].as_str().unwrap().to_owned();
    let victim: Value = s
        .post(
            "/api/tokens",
            &admin,
            json!({"principal": "svc", "kind": "user", "scopes": ["task:read"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let victim = victim["info"]["id"].as_str().unwrap().to_owned();

    use StatusCode as S;
    const OK: S = S::OK;
    const C: S = S::CREATED;
    const F: S = S::FORBIDDEN;
    const NF: S = S::NOT_FOUND;
    const U: S = S::UNAUTHORIZED;
    const NC: S = S::NO_CONTENT;
    // (method, path, body, fresh task to cancel, expected per role in ROLES order)
    type Row = (Method, String, Option<Value>, bool, [S; 7]);
    let rows: Vec<Row> = vec![
        (
            Method::GET,
            format!("/api/tasks/{task}"),
            None,
            false,
            [OK, OK, OK, OK, F, NF, U],
        ),
        (
            Method::GET,
            "/api/tasks".into(),
            None,
            false,
            [OK, OK, OK, OK, F, OK, U],
        ),
        (
            Method::POST,
            "/api/tasks".into(),
            Some(json!({"agent": "a", "input": 1})),
            false,
            [C, C, C, C, F, C, U],
        ),
        (
            Method::POST,
            "cancel".into(),
            Some(json!({})),
            true,
            [OK, F, OK, OK, F, NF, U],
        ),
        (
            Method::GET,
            format!("/api/tasks/{done}/events"),
            None,
            false,
            [OK, OK, OK, OK, F, NF, U],
        ),
        (
            Method::GET,
            format!("/api/tasks/{task}/logs"),
            None,
            false,
            [OK, OK, OK, OK, F, NF, U],
        ),
        (
            Method::GET,
            format!("/api/tasks/{task}/diagnostics"),
            None,
            false,
            [OK, OK, OK, OK, F, NF, U],
        ),
        (
            Method::GET,
            format!("/api/workflows/{wf}"),
            None,
            false,
            [OK, OK, OK, OK, F, NF, U],
        ),
        (
            Method::GET,
            "/api/workflows".into(),
            None,
            false,
            [OK, OK, OK, OK, F, OK, U],
        ),
        (
            Method::GET,
            "/api/feed".into(),
            None,
            false,
            [OK, OK, OK, OK, F, OK, U],
        ),
        (
            Method::GET,
            "/api/consumers/c1/unacked".into(),
            None,
            false,
            [OK, OK, OK, OK, F, OK, U],
        ),
        (
            Method::GET,
            "/api/nodes".into(),
            None,
            false,
            [OK, OK, OK, OK, F, OK, U],
        ),
        (
            Method::GET,
            format!("/api/nodes/{node}"),
            None,
            false,
            [OK, OK, OK, OK, F, NF, U],
        ),
        (
            Method::POST,
            format!("/api/nodes/{node}/worker-tokens"),
            Some(json!({})),
            false,
            [C, F, C, C, F, NF, U],
        ),
        (
            Method::POST,
            "/api/worker/claim".into(),
            Some(json!({})),
            false,
            [F, F, F, F, OK, F, U],
        ),
        (
            Method::POST,
            "/api/worker/node-heartbeat".into(),
            None,
            false,
            [F, F, F, F, OK, F, U],
        ),
        (
            Method::GET,
            "/api/audit".into(),
            None,
            false,
            [F, F, OK, OK, F, F, U],
        ),
        (
            Method::GET,
            "/api/audit/verify".into(),
            None,
            false,
            [F, F, OK, OK, F, F, U],
        ),
        (
            Method::GET,
            "/api/tokens".into(),
            None,
            false,
            [F, F, F, OK, F, F, U],
        ),
        (
            Method::POST,
            "/api/tokens".into(),
            Some(json!({"principal": "x", "kind": "user", "scopes": []})),
            false,
            [F, F, F, C, F, F, U],
        ),
        (
            Method::DELETE,
            format!("/api/tokens/{victim}"),
            None,
            false,
            [F, F, F, OK, F, NF, U],
        ),
        (
            Method::GET,
            "/api/whoami".into(),
            None,
            false,
            [OK, OK, OK, OK, OK, OK, U],
        ),
        (
            Method::GET,
            "/healthz".into(),
            None,
            false,
            [OK, OK, OK, OK, OK, OK, OK],
        ),
        (
            Method::GET,
            "/api/version".into(),
            None,
            false,
            [OK, OK, OK, OK, OK, OK, OK],
        ),
        (
            Method::GET,
            "/api/openapi.json".into(),
            None,
            false,
            [OK, OK, OK, OK, OK, OK, OK],
        ),
    ];
    let tenants = ["acme", "acme", "acme", "acme", "acme", "globex", ""];
    for (method, path, body, fresh, expected) in rows {
        for (i, role) in ROLES.iter().enumerate() {
            let path = if fresh {
                let t = s.submit(&alice, "echo").await;
                format!("/api/tasks/{t}/cancel")
            } else {
                path.clone()
            };
            let before = if tenants[i].is_empty() {
                0
            } else {
                chain_len(&s, tenants[i]).await
            };
            let mut req = s.req(method.clone(), &path, tokens[i].as_deref());
            if let Some(b) = &body {
                req = req.json(b);
            }
            let r = req.send().await.unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            assert_eq!(status, expected[i], "{role} {method} {path}: {text}");
            if status == F {
                assert!(
                    chain_len(&s, tenants[i]).await > before,
                    "{role} {method} {path}: the denial is audited"
                );
            }
        }
    }
    // Removing a node: not another user, not another tenant; its owner may.
    let path = format!("/api/nodes/{node}");
    for (i, want) in [(1, F), (5, NF), (6, U), (0, NC)] {
        let r = s
            .req(Method::DELETE, &path, tokens[i].as_deref())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{} DELETE {path}", ROLES[i]);
    }
    s.stop().await;
}
