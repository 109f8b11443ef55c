//! APIary over HTTP against a real `distribution` registry (Debian's
//! `docker-registry`; under `CI=true` a missing binary fails): agents,
//! experiments with their metrics, promotion allowed and refused (naming the
//! rule), scopes; and the routes without a registry.

mod common;

use std::sync::Arc;

use common::apiary::{apiary, registry, request};
use common::{Server, problem};
use hive::iam::TokenKind;
use hive::prelude::*;
use hive::registry::AgentRegistry;
use honeycomb::api::{ApiLimits, ApiState};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_experiments_and_promotion_over_http() {
    let Some(reg) = registry() else {
        return;
    };
    let hive = hive::open("memory://").await.unwrap();
    let apiary = apiary(&hive, &reg);
    let admin = Principal::admin("acme", "root");
    let good = apiary
        .publish(&admin, request("summarize", 0.95))
        .await
        .unwrap();
    let weak = apiary
        .publish(&admin, request("translate", 0.5))
        .await
        .unwrap();
    let registry: Arc<dyn AgentRegistry> = Arc::new(apiary);
    let state = ApiState::with_registry(
        hive.clone(),
        ApiLimits::default(),
        CancellationToken::new(),
        Some(registry),
    );
    let s = Server::with_state(hive, state).await;
    let user = s.token("acme", "uma", TokenKind::User).await;
    let root = s.token("acme", "root", TokenKind::Admin).await;
    let other = s.token("globex", "eve", TokenKind::Admin).await;

    let agents: Value = s.get("/api/agents", &user).await.json().await.unwrap();
    assert_eq!(agents.as_array().unwrap().len(), 2, "{agents}");
    let r = good.reference.to_string();
    let one: Value = s
        .get(&format!("/api/agents/get?ref={r}"), &user)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["digest"], good.digest);
    problem(
        s.get("/api/agents/get?ref=nonsense", &user).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    let others: Value = s.get("/api/agents", &other).await.json().await.unwrap();
    assert!(
        others.as_array().unwrap().is_empty(),
        "another tenant sees nothing: {others}"
    );
    problem(
        s.get(&format!("/api/agents/get?ref={r}"), &other).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let experiments: Value = s.get("/api/experiments", &user).await.json().await.unwrap();
    let list = experiments.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|e| e["status"] == "candidate"));
    assert!(list.iter().any(|e| e["metrics"]["accuracy"] == 0.95));

    // A user may not promote; the weak agent fails the metric rule; the good one goes.
    let r = s
        .post(
            "/api/experiments/promote",
            &user,
            json!({"agent": good.reference.to_string()}),
        )
        .await;
    problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = s
        .post(
            "/api/experiments/promote",
            &root,
            json!({"agent": weak.reference.to_string()}),
        )
        .await;
    let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY, "promotion_refused").await;
    assert_eq!(p["field"], "metric:accuracy>=0.9", "{p}");
    let r = s
        .post(
            "/api/experiments/promote",
            &root,
            json!({"agent": good.reference.to_string()}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let promotion: Value = r.json().await.unwrap();
    assert_eq!(
        promotion["production"]["reference"]["channel"],
        "production"
    );
    let promoted: Value = s
        .get("/api/experiments?status=promoted", &user)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(promoted.as_array().unwrap().len(), 1);
    let refused: Value = s
        .get("/api/experiments?status=refused", &user)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refused.as_array().unwrap().len(), 1);
    assert_eq!(
        refused[0]["last_refusal"]["rule"], "metric:accuracy>=0.9",
        "{refused}"
    );
    let production: Value = s
        .get("/api/agents?channel=production", &user)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(production.as_array().unwrap().len(), 1);
    // Every attempt is in the audit trail.
    let audit: Value = s
        .get("/api/audit?action=experiment.promote", &root)
        .await
        .json()
        .await
        .unwrap();
    // The user's denial; the admin's authorization then the rule's refusal
    // for the weak agent; the admin's promotion of the good one.
    let outcomes: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["denied", "allowed", "denied", "allowed"],
        "{audit}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_registry_the_routes_say_so() {
    let s = Server::start().await;
    let t = s.token("acme", "uma", TokenKind::User).await;
    for path in ["/api/agents", "/api/experiments"] {
        problem(
            s.get(path, &t).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "registry_not_configured",
        )
        .await;
    }
    let r = s
        .req(Method::POST, "/api/experiments/promote", Some(&t))
        .json(&json!({"agent": "acme/sandbox/x:1"}))
        .send()
        .await
        .unwrap();
    problem(
        r,
        StatusCode::SERVICE_UNAVAILABLE,
        "registry_not_configured",
    )
    .await;
    s.stop().await;
}
