//! The console without a browser: what a reader without JavaScript gets.
//! Sign-in and the session cookie, every page's content for the principal
//! signed in (another tenant's ids are 404 pages, a missing scope a 403
//! page), log paging, filters and download, CSRF and cross-origin refusals
//! (403 and audited), and the task page's server time with 10,000 log lines
//! (printed as a `hive-bench` line).

mod common;

use std::time::Duration;

use common::Server;
use hive::iam::TokenKind;
use hive::prelude::*;
use hive::worker::handler_fn;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Response, StatusCode};
use serde_json::json;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Signs in with `token` and returns the `Cookie` header value.
async fn sign_in(s: &Server, token: &str) -> String {
    let r = client()
        .post(s.url("/ui/login"))
        .form(&[("token", token), ("next", "/ui/tasks")])
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "sign-in redirects");
    let set = r
        .headers()
        .get(SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .expect("ascii")
        .to_owned();
    set.split(';').next().expect("name=value").to_owned()
}

async fn page(s: &Server, cookie: &str, path: &str) -> Response {
    client()
        .get(s.url(path))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("answered")
}

async fn html(s: &Server, cookie: &str, path: &str) -> String {
    let r = page(s, cookie, path).await;
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "GET {path} is a page"
    );
    r.text().await.expect("body")
}

/// The CSRF token in a page's forms.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("end")].to_owned()
}

/// Runs one task whose handler writes `lines` log lines and succeeds.
async fn task_with_log(s: &Server, owner: &Principal, lines: usize) -> TaskId {
    let worker = s
        .hive
        .start_worker(
            &Principal::system(),
            WorkerOptions::new("ui-node").system().capacity(4).handler(
                "chatty",
                handler_fn(|ctx| async move {
                    let n = ctx.input()["lines"].as_u64().unwrap_or(0);
                    for i in 0..n {
                        let level = match i % 4 {
                            0 => "INFO",
                            1 => "DEBUG",
                            2 => "WARN",
                            _ => "ERROR",
                        };
                        ctx.log("stdout", &format!("{level} line {i}"))
                            .await
                            .map_err(|e| TaskError::new("log", e.to_string()))?;
                    }
                    Ok(json!({"wrote": n}))
                }),
            ),
        )
        .await
        .expect("worker");
    let id = s
        .hive
        .submit(owner, TaskSpec::new("chatty", json!({"lines": lines})))
        .await
        .expect("submit")
        .id;
    let t = s
        .hive
        .wait_timeout(owner, id, Duration::from_secs(60))
        .await
        .expect("ends");
    assert_eq!(t.state, TaskState::Succeeded);
    worker.shutdown().await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_it() {
    let s = Server::start().await;
    // No session: every page sends the reader to sign-in, and back.
    let r = client()
        .get(s.url("/ui/tasks?state=failed"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[LOCATION],
        "/ui/login?next=%2Fui%2Ftasks%3Fstate%3Dfailed"
    );
    let login = client().get(s.url("/ui/login")).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    assert!(login.text().await.unwrap().contains("API token"));

    // A wrong token: the form again, 401, no cookie.
    let r = client()
        .post(s.url("/ui/login"))
        .form(&[("token", "hive_nope.nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("invalid, expired or revoked")
    );

    // A worker token cannot sign in.
    let admin = s.token("acme", "root", TokenKind::Admin).await;
    let (_, worker_token) = s.node(&admin, 1).await;
    let r = client()
        .post(s.url("/ui/login"))
        .form(&[("token", worker_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A good one: HttpOnly, SameSite=Strict, Path=/ui; Secure behind TLS.
    let token = s.token("acme", "alice", TokenKind::User).await;
    let r = client()
        .post(s.url("/ui/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", token.as_str()), ("next", "https://evil.example/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/ui/tasks", "never off-site");
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Secure"] {
        assert!(set.contains(attr), "{set} has {attr}");
    }
    assert!(!set.contains(&token), "the token is not the cookie");

    let cookie = sign_in(&s, &token).await;
    let tasks = html(&s, &cookie, "/ui/tasks").await;
    assert!(tasks.contains("acme/alice"), "the principal is shown");

    // A sign-out without the CSRF token is refused; with it the session ends.
    let r = client()
        .post(s.url("/ui/logout"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client()
        .post(s.url("/ui/logout"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf(&tasks).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let r = page(&s, &cookie, "/ui/tasks").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the session is over");

    // A revoked token ends its sessions.
    let cookie = sign_in(&s, &token).await;
    let r = s
        .get("/api/tokens", &admin)
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let id = r["items"]
        .as_array()
        .or(r.as_array())
        .expect("tokens")
        .iter()
        .find(|t| t["principal"] == "alice")
        .expect("alice's token")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .req(
            reqwest::Method::DELETE,
            &format!("/api/tokens/{id}"),
            Some(&admin),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "revoked: {}", r.status());
    let r = page(&s, &cookie, "/ui/tasks").await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "revoked token, no session"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_only_what_the_principal_may_read() {
    let s = Server::start().await;
    let alice = Principal::user("acme", "alice");
    let id = task_with_log(&s, &alice, 12).await;
    let user = sign_in(&s, &s.token("acme", "alice", TokenKind::User).await).await;
    let olga = s.token("acme", "olga", TokenKind::Operator).await;
    let (node, _) = s.node(&olga, 3).await;
    let operator = sign_in(&s, &olga).await;
    let stranger = sign_in(&s, &s.token("globex", "gus", TokenKind::Operator).await).await;

    // The list, filtered, and the task page: state, input, output, log lines.
    let list = html(&s, &user, "/ui/tasks").await;
    assert!(list.contains(&id.to_string()));
    let list = html(&s, &user, "/ui/tasks?state=failed").await;
    assert!(!list.contains(&id.to_string()) && list.contains("No tasks match"));
    let list = html(&s, &user, "/ui/tasks?since=1h&owner=alice&agent=chatty").await;
    assert!(list.contains(&id.to_string()));
    let list = html(&s, &user, "/ui/tasks?until=2000-01-01%2000:00").await;
    assert!(!list.contains(&id.to_string()), "until cuts newer tasks");
    let r = page(&s, &user, "/ui/tasks?since=yesterday").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("not a time"));

    let r = page(&s, &user, &format!("/ui/tasks/{id}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let timing = r.headers()["server-timing"].to_str().unwrap().to_owned();
    assert!(timing.starts_with("app;dur="), "{timing}");
    assert!(r.headers().contains_key("content-security-policy"));
    let body = r.text().await.unwrap();
    for needle in [
        "state-succeeded",
        "&quot;wrote&quot;: 12",
        "&quot;lines&quot;: 12",
        "INFO line 0",
        "ERROR line 11",
        "12 lines",
        "attempt-1",
        "Download",
    ] {
        assert!(body.contains(needle), "the task page shows {needle}");
    }

    // Another tenant's task is a 404 page; a bad id too.
    let r = page(&s, &stranger, &format!("/ui/tasks/{id}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.unwrap().contains("404"));
    let r = page(&s, &user, "/ui/tasks/not-an-id").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = page(&s, &user, "/ui/no-such-page").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The promotion audit trail needs audit:read: a user gets a 403 page.
    let r = page(&s, &user, "/ui/audit").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let audit = html(&s, &operator, "/ui/audit").await;
    assert!(audit.contains("Audit chain intact"), "{audit}");

    // Nodes and experiments (no registry here: the page says so).
    let nodes = html(&s, &operator, "/ui/nodes").await;
    assert!(nodes.contains(&node), "the tenant's node is listed");
    assert!(nodes.contains("0 / 3"), "leases / capacity");
    let other = html(&s, &stranger, "/ui/nodes").await;
    assert!(!other.contains(&node), "not another tenant's node");
    let exp = html(&s, &operator, "/ui/experiments").await;
    assert!(exp.contains("without an APIary registry"));

    // Workflows: the list and the DAG with its join.
    let spec: WorkflowSpec = serde_json::from_value(json!({
        "name": "fanout",
        "steps": [
            {"id": "a", "agent": "nobody"},
            {"id": "b", "agent": "nobody", "depends_on": ["a"]},
            {"id": "c", "agent": "nobody", "depends_on": ["a"]},
            {"id": "join", "agent": "nobody", "depends_on": ["b", "c"], "join": "collect"}
        ]
    }))
    .unwrap();
    let wf = s.hive.submit_workflow(&alice, spec).await.unwrap().id;
    let list = html(&s, &user, "/ui/workflows").await;
    assert!(list.contains(&wf.to_string()) && list.contains("fanout"));
    let w = html(&s, &user, &format!("/ui/workflows/{wf}")).await;
    assert!(w.contains("<svg"), "the DAG is drawn");
    for step in ["a", "b", "c", "join"] {
        assert!(w.contains(&format!("data-step=\"{step}\"")), "step {step}");
    }
    assert_eq!(
        w.matches("class=\"edge\"").count(),
        4,
        "one edge per dependency"
    );
    assert!(w.contains("state-running") && w.contains("state-waiting"));
    assert!(w.contains("join collect"));
    let r = page(&s, &stranger, &format!("/ui/workflows/{wf}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_logs_are_paged_filtered_and_downloadable() {
    let s = Server::start().await;
    let alice = Principal::user("acme", "alice");
    let id = task_with_log(&s, &alice, 1_200).await;
    let c = sign_in(&s, &s.token("acme", "alice", TokenKind::User).await).await;
    // A finished task opens on page 1 of 3.
    let p1 = html(&s, &c, &format!("/ui/tasks/{id}")).await;
    assert!(p1.contains("page 1 of 3"));
    assert!(p1.contains(">INFO line 0<") && !p1.contains(">INFO line 500<"));
    let p3 = html(&s, &c, &format!("/ui/tasks/{id}?log_page=3")).await;
    assert!(p3.contains(">ERROR line 1199<") && !p3.contains(">INFO line 0<"));
    // Filters, server-side (for readers without JavaScript).
    let errors = html(&s, &c, &format!("/ui/tasks/{id}?level=error")).await;
    assert!(errors.contains("300 shown"), "a quarter are errors");
    assert!(!errors.contains(">INFO line 0<"));
    let text = html(&s, &c, &format!("/ui/tasks/{id}?q=line%201199")).await;
    assert!(text.contains("1 shown") && text.contains(">ERROR line 1199<"));
    let r = page(&s, &c, &format!("/ui/tasks/{id}?level=loud")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // The download holds every line.
    let r = page(&s, &c, &format!("/ui/tasks/{id}/log.txt")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let text = r.text().await.unwrap();
    assert_eq!(text.lines().count(), 1_200);
    assert!(text.contains("ERROR line 1199"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_the_csrf_token_or_from_elsewhere_are_refused_and_audited() {
    let s = Server::start().await;
    let admin = s.token("acme", "root", TokenKind::Admin).await;
    let (node, _) = s.node(&admin, 2).await;
    let c = sign_in(&s, &admin).await;
    let nodes = html(&s, &c, "/ui/nodes").await;
    assert!(nodes.contains(&node));
    let token = csrf(&nodes);
    let drain = s.url(&format!("/ui/nodes/{node}/drain"));

    // No token, a wrong token, another origin: 403, nothing drained.
    for (csrf_value, origin) in [
        ("", None),
        ("0000", None),
        (token.as_str(), Some("http://evil.example")),
    ] {
        let mut r = client().post(&drain).header(COOKIE, &c);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        let r = r.form(&[("csrf", csrf_value)]).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "csrf={csrf_value:?}");
        assert!(r.text().await.unwrap().contains("403"));
    }
    let n = s
        .hive
        .get_node(&Principal::system(), node.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(n.status, NodeStatus::Ready, "nothing was drained");
    let audit = s
        .state
        .audit()
        .list(
            &s.hive,
            &Principal::system(),
            &AuditQuery {
                tenant: Some("acme".into()),
                action: Some("node.drain".into()),
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap();
    let denied: Vec<_> = audit
        .events
        .iter()
        .filter(|e| e.outcome == hive::AuditOutcome::Denied)
        .collect();
    assert_eq!(denied.len(), 3, "each refusal is audited: {audit:?}");
    assert!(
        denied[0].details["reason"]
            .as_str()
            .unwrap()
            .contains("CSRF")
    );
    assert!(
        denied[2].details["reason"]
            .as_str()
            .unwrap()
            .contains("origin")
    );

    // The real form drains it.
    let r = client()
        .post(&drain)
        .header(COOKIE, &c)
        .header("origin", format!("http://{}", s.addr))
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let n = s
        .hive
        .get_node(&Principal::system(), node.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(n.status, NodeStatus::Draining);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_page_server_time_with_ten_thousand_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ui.db").display());
    let s = Server::on(&url, honeycomb::api::ApiLimits::default()).await;
    let alice = Principal::user("acme", "alice");
    let id = task_with_log(&s, &alice, 10_000).await;
    let c = sign_in(&s, &s.token("acme", "alice", TokenKind::User).await).await;
    let mut ms = Vec::new();
    for _ in 0..5 {
        let r = page(&s, &c, &format!("/ui/tasks/{id}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let t = r.headers()["server-timing"].to_str().unwrap().to_owned();
        let dur: f64 = t.trim_start_matches("app;dur=").parse().unwrap();
        let body = r.text().await.unwrap();
        assert!(body.contains("page 1 of 20"), "paged: 500 lines a page");
        assert_eq!(body.matches("<li id=\"L").count(), 500);
        ms.push(dur);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "hive-bench backend=sqlite ui=task_page log_lines=10000 page_lines=500 server_ms_min={:.1} server_ms_median={:.1} server_ms_max={:.1}",
        ms[0], ms[2], ms[4]
    );
    s.stop().await;
}
