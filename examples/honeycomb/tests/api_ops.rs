//! Operations: `/metrics` in Prometheus text (the engine's counters through
//! the `metrics` facade, Honeycomb's per-route counters), optionally behind
//! a token; the per-token rate limit answering `429` with `Retry-After`,
//! never for health probes; readiness and version.

mod common;

use common::{Server, problem};
use hive::iam::TokenKind;
use honeycomb::api::ApiLimits;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The value of the sample `name{labels…}` in Prometheus text (labels in
/// any order; every given `k="v"` must be present).
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|kv| l.contains(kv)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_engine_and_http_counters() {
    let s = Server::start().await;
    let t = s.token("metrics-acme", "alice", TokenKind::User).await;
    for _ in 0..3 {
        s.submit(&t, "echo").await;
    }
    let id = s.submit(&t, "echo").await;
    s.post(&format!("/api/tasks/{id}/cancel"), &t, json!({}))
        .await;
    let (_, worker) = s.node(&t, 4).await;
    common::run_remote(&s, &worker, 3).await;
    s.get("/api/tasks/not-an-id", &t).await;
    // Two left waiting: the queue depth.
    s.submit(&t, "nobody-runs-this").await;
    s.submit(&t, "nobody-runs-this").await;
    let r = s.req(Method::GET, "/metrics", None).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    assert_eq!(
        sample(
            &text,
            "hive_tasks_submitted_total",
            &["tenant=\"metrics-acme\""]
        ),
        Some(6.0),
        "{text}"
    );
    assert!(sample(&text, "hive_tasks_terminal_total", &["state=\"succeeded\""]).unwrap() >= 3.0);
    assert!(sample(&text, "hive_tasks_terminal_total", &["state=\"cancelled\""]).unwrap() >= 1.0);
    assert!(
        sample(&text, "hive_claim_duration_seconds_count", &[]).unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "honeycomb_http_requests_total",
            &[
                "route=\"/api/tasks/{id}\"",
                "status=\"400\"",
                "method=\"GET\""
            ]
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "honeycomb_http_request_duration_seconds_bucket",
            &["route=\"/api/tasks\""]
        )
        .is_some()
    );
    assert!(
        sample(&text, "honeycomb_sse_streams", &[]).is_some(),
        "{text}"
    );
    s.stop().await;

    // Behind a token when one is configured.
    let s = Server::with_limits(ApiLimits {
        metrics_token: Some("scrape-me".into()),
        ..ApiLimits::default()
    })
    .await;
    problem(
        s.req(Method::GET, "/metrics", None).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let r = s
        .req(Method::GET, "/metrics", Some("scrape-me"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_gets_429_with_retry_after() {
    let s = Server::with_limits(ApiLimits {
        rate_per_second: 1,
        rate_burst: 5,
        ..ApiLimits::default()
    })
    .await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let other = s.token("acme", "bob", TokenKind::User).await;
    let mut limited = None;
    for _ in 0..20 {
        let r = s.get("/api/tasks", &t).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = limited.expect("the burst ran out");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let p = problem(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert!(p["retry_after"].as_u64().is_some());
    // Another token has its own budget; health probes have none.
    assert_eq!(s.get("/api/tasks", &other).await.status(), StatusCode::OK);
    for _ in 0..20 {
        let r = s.req(Method::GET, "/healthz", None).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_version() {
    let s = Server::start().await;
    let r = s.req(Method::GET, "/readyz", None).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = s
        .req(Method::GET, "/api/version", None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["name"], "honeycomb");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["commit"].is_string());
    // A revoked token stops at once in the process that revoked it.
    let admin = s.token("acme", "root", TokenKind::Admin).await;
    let user = s.token("acme", "u", TokenKind::User).await;
    assert_eq!(s.get("/api/tasks", &user).await.status(), StatusCode::OK);
    let whoami: Value = s.get("/api/whoami", &user).await.json().await.unwrap();
    assert_eq!(whoami["id"], "u");
    let tokens: Value = s.get("/api/tokens", &admin).await.json().await.unwrap();
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["principal"] == "u")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .req(Method::DELETE, &format!("/api/tokens/{id}"), Some(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    problem(
        s.get("/api/tasks", &user).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    problem(
        s.get("/api/tasks", "hive_nope.nope").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let r = s
        .req(Method::GET, "/api/tasks", None)
        .header("Authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // CORS is off: no preflight is granted, no answer carries CORS headers.
    let r = s
        .req(Method::OPTIONS, "/api/tasks", None)
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = s
        .req(Method::GET, "/api/tasks", Some(&admin))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    s.stop().await;
}
