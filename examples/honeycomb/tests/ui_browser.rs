//! The console in a real browser: Debian's headless Chromium driven through
//! chromedriver (`browser` module; `scripts/ui-deps` installs both and
//! axe-core). Every page loads for an operator with no serious or critical
//! axe violation, at desktop and phone widths; a task's log lines appear live
//! while its handler runs (measured: `hive-bench … ui=live_log`), survive a
//! hidden tab without a duplicate, and the terminal state shows without a
//! reload; a workflow's step colours change live; an admin promotes an
//! experiment that passes and sees the rule that refused one that fails; a
//! user sees no Promote control and a forged POST is refused (403, audited);
//! a tampered audit entry shows as a broken chain. Screenshots go to
//! `target/ui-screenshots/`.

mod browser;
mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use browser::Browser;
use common::Server;
use hive::iam::TokenKind;
use hive::prelude::*;
use hive::registry::AgentRegistry;
use hive::worker::handler_fn;
use honeycomb::api::{ApiLimits, ApiState};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A server on an SQLite file (the embedded default), with a registry when
/// one is given; the folder lives as long as the returned guard.
async fn server(registry: Option<Arc<dyn AgentRegistry>>) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hive.db").display());
    let hive = hive::open(&url).await.unwrap();
    let state = ApiState::with_registry(
        hive.clone(),
        ApiLimits::default(),
        CancellationToken::new(),
        registry,
    );
    (Server::with_state(hive, state).await, dir)
}

/// Signs in through the form, as a person would.
async fn sign_in(b: &Browser, s: &Server, token: &str) {
    b.goto(&s.url("/ui/login")).await;
    b.eval(&format!(
        "(() => {{ document.getElementById('token').value = {}; document.querySelector('form.stack').submit(); return true; }})()",
        json!(token)
    ))
    .await;
    b.wait_for(
        "location.pathname === '/ui/tasks' && document.documentElement.dataset.js === 'ready'",
        WAIT,
        "the tasks page after sign-in",
    )
    .await;
}

async fn open(b: &Browser, url: &str) {
    b.goto(url).await;
    b.wait_for(
        "document.readyState === 'complete' && document.documentElement.dataset.js === 'ready'",
        WAIT,
        "the page and its script",
    )
    .await;
}

/// An in-process worker whose `gated` handler writes one log line per
/// permit (with its write time), then waits for one more permit and succeeds.
async fn gated_worker(s: &Server, gate: Arc<Semaphore>) -> hive::WorkerHandle {
    s.hive
        .start_worker(
            &Principal::system(),
            WorkerOptions::new("browser-node")
                .system()
                .capacity(8)
                .handler(
                    "gated",
                    handler_fn(move |ctx| {
                        let gate = gate.clone();
                        async move {
                            let n = ctx.input()["lines"].as_u64().unwrap_or(0);
                            for i in 0..n {
                                gate.acquire().await.expect("gate").forget();
                                ctx.log("stdout", &format!("INFO tick {i} at={}", now_ms()))
                                    .await
                                    .map_err(|e| TaskError::new("log", e.to_string()))?;
                            }
                            gate.acquire().await.expect("gate").forget();
                            Ok(json!({"ticks": n}))
                        }
                    }),
                )
                .handler(
                    "quick",
                    handler_fn(|ctx| async move {
                        for i in 0..30 {
                            let level = if i % 10 == 9 { "WARN" } else { "INFO" };
                            ctx.log("stdout", &format!("{level} step {i} of 30"))
                                .await
                                .map_err(|e| TaskError::new("log", e.to_string()))?;
                        }
                        Ok(json!({"summary": "done"}))
                    }),
                ),
        )
        .await
        .unwrap()
}

/// A browser, a server on SQLite, and the gated worker.
struct Stage {
    b: Browser,
    s: Server,
    _dir: tempfile::TempDir,
    gate: Arc<Semaphore>,
    worker: hive::WorkerHandle,
}

/// The common stage of the tests without a registry (`None`: no browser
/// here, outside CI).
async fn stage() -> Option<Stage> {
    let b = Browser::start().await?;
    let (s, _dir) = server(None).await;
    let gate = Arc::new(Semaphore::new(0));
    let worker = gated_worker(&s, gate.clone()).await;
    Some(Stage {
        b,
        s,
        _dir,
        gate,
        worker,
    })
}

/// Lets every handler finish, then stops the worker and the server.
async fn finish(s: Server, gate: Arc<Semaphore>, worker: hive::WorkerHandle) {
    gate.add_permits(1000);
    worker.shutdown().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_loads_for_an_operator_accessible_on_desktop_and_phone() {
    let Some(Stage {
        b,
        s,
        _dir,
        gate,
        worker,
    }) = stage().await
    else {
        return;
    };
    let alice = Principal::user("acme", "alice");
    let done = s
        .hive
        .submit(&alice, TaskSpec::new("quick", json!({"text": "hello"})))
        .await
        .unwrap()
        .id;
    s.hive
        .wait_timeout(&alice, done, WAIT)
        .await
        .expect("quick ends");
    let waiting = s
        .hive
        .submit(
            &alice,
            TaskSpec::new("nowhere", json!({})).label("gpu", "a100"),
        )
        .await
        .unwrap()
        .id;
    let spec: WorkflowSpec = serde_json::from_value(json!({
        "name": "digest",
        "steps": [
            {"id": "fetch", "agent": "quick"},
            {"id": "left", "agent": "quick", "depends_on": ["fetch"]},
            {"id": "right", "agent": "quick", "depends_on": ["fetch"]},
            {"id": "publish", "agent": "quick", "depends_on": ["left", "right"], "join": "collect"}
        ]
    }))
    .unwrap();
    let wf = s.hive.submit_workflow(&alice, spec).await.unwrap().id;
    let admin = s.token("acme", "olga", TokenKind::Admin).await;
    s.node(&admin, 4).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !s
        .hive
        .get_workflow(&alice, wf)
        .await
        .unwrap()
        .state
        .is_terminal()
    {
        assert!(std::time::Instant::now() < deadline, "the workflow ends");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The sign-in page and an error page are pages too.
    b.goto(&s.url("/ui/login")).await;
    b.assert_accessible("login").await;
    sign_in(&b, &s, &admin).await;
    b.goto(&s.url("/ui/tasks/01a24048-5333-74c7-af99-f606a0978400"))
        .await;
    assert_eq!(
        b.eval("document.getElementById('error-detail') !== null")
            .await,
        json!(true),
        "a 404 page"
    );
    b.assert_accessible("not-found").await;
    let pages = [
        ("tasks", "/ui/tasks".to_owned(), "#tasks"),
        ("task", format!("/ui/tasks/{done}"), "#log li"),
        ("task-waiting", format!("/ui/tasks/{waiting}"), "#waiting"),
        ("workflows", "/ui/workflows".to_owned(), "#workflows"),
        ("workflow", format!("/ui/workflows/{wf}"), "svg#dag"),
        (
            "experiments-no-registry",
            "/ui/experiments".to_owned(),
            "#no-registry",
        ),
        ("audit-empty", "/ui/audit".to_owned(), "#chain"),
        ("nodes", "/ui/nodes".to_owned(), "#nodes"),
    ];
    for (name, path, selector) in &pages {
        open(&b, &s.url(path)).await;
        b.wait_for(
            &format!("document.querySelector({}) !== null", json!(selector)),
            WAIT,
            &format!("{selector} on {name}"),
        )
        .await;
        b.assert_accessible(name).await;
        b.screenshot(name).await;
    }
    // The waiting task says why; the workflow's join shows its input.
    open(&b, &s.url(&format!("/ui/tasks/{waiting}"))).await;
    let why = b
        .eval("document.getElementById('waiting').textContent")
        .await;
    assert!(
        why.as_str().unwrap().contains("label") || why.as_str().unwrap().contains("node"),
        "{why}"
    );
    open(&b, &s.url(&format!("/ui/workflows/{wf}"))).await;
    let states = b
        .eval("Array.from(document.querySelectorAll('svg#dag g.step')).map(g => g.dataset.state).join(',')")
        .await;
    assert_eq!(states, "succeeded,succeeded,succeeded,succeeded");
    let join = b
        .eval("document.querySelector('#detail-publish').textContent")
        .await;
    assert!(join.as_str().unwrap().contains("Join input"), "{join}");
    // Times in local or relative form on request.
    b.eval("(() => { const s = document.getElementById('timefmt-select'); s.value = 'relative'; s.dispatchEvent(new Event('change')); return true; })()").await;
    b.wait_for(
        "document.querySelector('main time').textContent.includes('ago') || document.querySelector('main time').textContent.includes('now')",
        WAIT,
        "relative times",
    )
    .await;
    b.close().await;

    // A phone: nothing wider than the screen, still accessible.
    let Some(phone) = Browser::start_with_size(390, 844).await else {
        return;
    };
    sign_in(&phone, &s, &admin).await;
    for (name, path) in [
        ("task-phone", format!("/ui/tasks/{done}")),
        ("workflow-phone", format!("/ui/workflows/{wf}")),
        ("tasks-phone", "/ui/tasks".to_owned()),
    ] {
        open(&phone, &s.url(&path)).await;
        let overflow = phone
            .eval("document.documentElement.scrollWidth - window.innerWidth")
            .await;
        assert!(
            overflow.as_i64().unwrap() <= 1,
            "{name} fits a phone's width (overflow {overflow} px)"
        );
        phone.assert_accessible(name).await;
        phone.screenshot(name).await;
    }
    phone.close().await;
    finish(s, gate, worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_log_arrives_live_resumes_after_a_hidden_tab_and_ends_without_reload() {
    let Some(Stage {
        b,
        s,
        _dir,
        gate,
        worker,
    }) = stage().await
    else {
        return;
    };
    let alice = Principal::user("acme", "alice");
    let lines = 12u64;
    let id = s
        .hive
        .submit(&alice, TaskSpec::new("gated", json!({"lines": lines})))
        .await
        .unwrap()
        .id;
    let deadline = std::time::Instant::now() + WAIT;
    while s.hive.get_task(&alice, id).await.unwrap().state != TaskState::Running {
        assert!(std::time::Instant::now() < deadline, "the task starts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = s.token("acme", "alice", TokenKind::User).await;
    sign_in(&b, &s, &token).await;
    open(&b, &s.url(&format!("/ui/tasks/{id}"))).await;
    b.eval("window.__noReload = 42").await;
    b.wait_for(
        "document.querySelector('.lead .badge').dataset.state === 'running'",
        WAIT,
        "the running state",
    )
    .await;
    let streams = || s.state.open_streams();
    let deadline = std::time::Instant::now() + WAIT;
    while streams() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "one stream for the tab"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let count = "document.querySelectorAll('#log li').length";
    let mut latencies = Vec::new();
    // Lines 0..6 one at a time: each appears live; measure write → shown.
    for i in 0..6u64 {
        gate.add_permits(1);
        b.wait_for(
            &format!("{count} === {}", i + 1),
            WAIT,
            &format!("log line {i} live"),
        )
        .await;
        let v = b
            .eval(&format!(
                "(() => {{ const li = document.querySelectorAll('#log li')[{i}]; const at = Number(li.querySelector('.text').textContent.split('at=')[1]); return Number(li.dataset.received) - at; }})()"
            ))
            .await;
        latencies.push(v.as_f64().unwrap());
    }

    // Paused: a new line waits (and is counted), then shows on resume.
    b.eval("document.getElementById('pause').click()").await;
    gate.add_permits(1);
    b.wait_for(
        "document.getElementById('pending').textContent.includes('1 new line')",
        WAIT,
        "the paused line counted",
    )
    .await;
    assert_eq!(
        b.eval(count).await,
        json!(6),
        "nothing appended while paused"
    );
    b.eval("document.getElementById('pause').click()").await;
    b.wait_for(&format!("{count} === 7"), WAIT, "the line after resume")
        .await;

    // A hidden tab closes its stream; shown again it resumes from its last
    // seq with nothing repeated.
    b.eval("(() => { Object.defineProperty(document, 'hidden', {configurable: true, get: () => true}); document.dispatchEvent(new Event('visibilitychange')); return true; })()").await;
    let deadline = std::time::Instant::now() + WAIT;
    while streams() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the hidden tab's stream closes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gate.add_permits(3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.eval(count).await, json!(7), "no line while hidden");
    b.eval("(() => { Object.defineProperty(document, 'hidden', {configurable: true, get: () => false}); document.dispatchEvent(new Event('visibilitychange')); return true; })()").await;
    b.wait_for(
        &format!("{count} === 10"),
        WAIT,
        "the missed lines after resume",
    )
    .await;

    // The rest, then the end: the terminal state and the output show
    // without a reload, and the stream ends.
    gate.add_permits(3);
    b.wait_for(&format!("{count} === {lines}"), WAIT, "every line")
        .await;
    b.wait_for(
        "document.querySelector('#task-state .badge').dataset.state === 'succeeded' && document.getElementById('output') !== null",
        WAIT,
        "the terminal state and output, live",
    )
    .await;
    b.wait_for(
        "document.body.dataset.streamEnded === 'true'",
        WAIT,
        "the end event",
    )
    .await;
    assert_eq!(b.eval("window.__noReload").await, json!(42), "no reload");
    let seqs = b
        .eval("Array.from(document.querySelectorAll('#log li')).map(li => Number(li.dataset.seq))")
        .await;
    let seqs: Vec<u64> = serde_json::from_value(seqs).unwrap();
    let mut unique = seqs.clone();
    unique.dedup();
    assert_eq!(seqs.len(), lines as usize);
    assert_eq!(unique, seqs, "in order, none twice");
    let texts = b
        .eval("Array.from(document.querySelectorAll('#log li .text')).map(t => t.textContent.split(' at=')[0])")
        .await;
    let expected: Vec<String> = (0..lines).map(|i| format!("INFO tick {i}")).collect();
    assert_eq!(texts, json!(expected));

    // Instant filters.
    b.eval("(() => { const q = document.getElementById('f-q'); q.value = 'tick 11'; q.dispatchEvent(new Event('input')); return true; })()").await;
    b.wait_for(
        "Array.from(document.querySelectorAll('#log li')).filter(li => !li.hidden).length === 1",
        WAIT,
        "the text filter",
    )
    .await;
    b.eval("document.getElementById('attempts-h').scrollIntoView()")
        .await;
    b.screenshot("task-live").await;
    b.close().await;

    latencies.sort_by(f64::total_cmp);
    println!(
        "hive-bench backend=sqlite ui=live_log lines={} p50_ms={:.0} max_ms={:.0}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    finish(s, gate, worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflows_step_colours_change_live() {
    let Some(Stage {
        b,
        s,
        _dir,
        gate,
        worker,
    }) = stage().await
    else {
        return;
    };
    let alice = Principal::user("acme", "alice");
    let spec: WorkflowSpec = serde_json::from_value(json!({
        "name": "two-steps",
        "steps": [
            {"id": "first", "agent": "gated", "input": {"lines": 0}},
            {"id": "second", "agent": "gated", "input": {"lines": 0}, "depends_on": ["first"]}
        ]
    }))
    .unwrap();
    let wf = s.hive.submit_workflow(&alice, spec).await.unwrap().id;
    let token = s.token("acme", "alice", TokenKind::User).await;
    sign_in(&b, &s, &token).await;
    open(&b, &s.url(&format!("/ui/workflows/{wf}"))).await;
    b.eval("window.__noReload = 7").await;
    let state = |step: &str| format!("document.getElementById('node-{step}').dataset.state");
    b.wait_for(
        &format!(
            "{} === 'running' && {} === 'waiting'",
            state("first"),
            state("second")
        ),
        WAIT,
        "first running, second waiting",
    )
    .await;
    let fill = "getComputedStyle(document.querySelector('#node-first rect')).fill";
    let running_fill = b.eval(fill).await;
    gate.add_permits(1);
    b.wait_for(
        &format!(
            "{} === 'succeeded' && {} === 'running'",
            state("first"),
            state("second")
        ),
        WAIT,
        "first succeeded, second running, live",
    )
    .await;
    assert_ne!(b.eval(fill).await, running_fill, "the colour changed");
    gate.add_permits(1);
    b.wait_for(
        &format!(
            "{} === 'succeeded' && document.querySelector('#wf-state .badge').dataset.state === 'succeeded'",
            state("second")
        ),
        WAIT,
        "the workflow succeeded, live",
    )
    .await;
    assert_eq!(b.eval("window.__noReload").await, json!(7), "no reload");
    b.assert_accessible("workflow-live").await;
    b.screenshot("workflow-live").await;
    b.close().await;
    finish(s, gate, worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_from_the_console_and_the_audit_trail_including_a_tampered_entry() {
    let Some(reg) = common::apiary::registry() else {
        return;
    };
    let Some(b) = Browser::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hive.db");
    let hive = hive::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let apiary = common::apiary::apiary(&hive, &reg);
    let root = Principal::admin("acme", "root");
    let good = apiary
        .publish(&root, common::apiary::request("summarize", 0.95))
        .await
        .unwrap()
        .reference
        .to_string();
    let weak = apiary
        .publish(&root, common::apiary::request("translate", 0.5))
        .await
        .unwrap()
        .reference
        .to_string();
    let state = ApiState::with_registry(
        hive.clone(),
        ApiLimits::default(),
        CancellationToken::new(),
        Some(Arc::new(apiary) as Arc<dyn AgentRegistry>),
    );
    let s = Server::with_state(hive, state).await;
    let admin = s.token("acme", "root", TokenKind::Admin).await;
    let user = s.token("acme", "uma", TokenKind::User).await;

    // The admin sees both experiments with their metrics against the
    // threshold, and a Promote control on each.
    sign_in(&b, &s, &admin).await;
    open(&b, &s.url("/ui/experiments")).await;
    assert_eq!(
        b.eval("document.querySelectorAll('article.experiment').length")
            .await,
        json!(2)
    );
    assert_eq!(
        b.eval("document.querySelectorAll('form.promote').length")
            .await,
        json!(2)
    );
    let weak_card = format!("article[data-ref={}]", json!(weak));
    assert_eq!(
        b.eval(&format!(
            "document.querySelector('{weak_card} tr[data-metric=accuracy] .fail') !== null"
        ))
        .await,
        json!(true),
        "0.5 fails the 0.9 threshold"
    );
    assert!(
        b.eval("document.getElementById('thresholds').textContent")
            .await
            .as_str()
            .unwrap()
            .contains("accuracy ≥ 0.9")
    );
    assert_eq!(
        b.eval(&format!(
            "document.querySelector('{weak_card} .sig').textContent"
        ))
        .await,
        json!("verified")
    );
    b.assert_accessible("experiments").await;
    b.screenshot("experiments").await;

    // Promote the weak one: refused, naming the rule.
    b.eval(&format!(
        "document.querySelector('{weak_card} form.promote button').click()"
    ))
    .await;
    b.wait_for(
        "document.getElementById('refusal-rule') !== null",
        WAIT,
        "the refusal page",
    )
    .await;
    assert_eq!(
        b.eval("document.getElementById('refusal-rule').textContent")
            .await,
        json!("metric:accuracy>=0.9")
    );
    b.assert_accessible("promotion-refused").await;
    b.screenshot("promotion-refused").await;
    // Promote the good one.
    open(&b, &s.url("/ui/experiments")).await;
    b.eval(&format!(
        "document.querySelector('article[data-ref={}] form.promote button').click()",
        json!(good)
    ))
    .await;
    b.wait_for(
        "document.querySelector('#promote-result[data-outcome=promoted]') !== null",
        WAIT,
        "the promotion page",
    )
    .await;
    assert!(
        b.eval("document.getElementById('production-ref').textContent")
            .await
            .as_str()
            .unwrap()
            .contains("production")
    );

    // A user: no Promote control, and a forged POST (with the user's own
    // session and CSRF token) is refused by the engine and audited.
    b.eval("document.querySelector('form[action=\"/ui/logout\"] button').click()")
        .await;
    b.wait_for("location.pathname === '/ui/login'", WAIT, "signed out")
        .await;
    sign_in(&b, &s, &user).await;
    open(&b, &s.url("/ui/experiments")).await;
    assert_eq!(
        b.eval("document.querySelectorAll('article.experiment').length")
            .await,
        json!(2)
    );
    assert_eq!(
        b.eval("document.querySelectorAll('form.promote').length")
            .await,
        json!(0),
        "no Promote for a user"
    );
    let status = b
        .eval(&format!(
            "fetch('/ui/experiments/promote', {{method: 'POST', headers: {{'content-type': 'application/x-www-form-urlencoded'}}, body: 'csrf=' + document.querySelector('input[name=csrf]').value + '&reference=' + encodeURIComponent({})}}).then(r => r.status)",
            json!(weak)
        ))
        .await;
    assert_eq!(status, json!(403), "a forged promotion is refused");
    let audit = s
        .state
        .audit()
        .list(
            &s.hive,
            &Principal::system(),
            &AuditQuery {
                tenant: Some("acme".into()),
                action: Some("experiment.promote".into()),
                actor: Some("uma".into()),
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(audit.events.len(), 1, "{audit:?}");
    assert_eq!(audit.events[0].outcome, hive::AuditOutcome::Denied);

    // The promotion audit trail: every attempt, the chain intact.
    b.eval("document.querySelector('form[action=\"/ui/logout\"] button').click()")
        .await;
    b.wait_for("location.pathname === '/ui/login'", WAIT, "signed out")
        .await;
    sign_in(&b, &s, &admin).await;
    open(&b, &s.url("/ui/audit")).await;
    assert_eq!(
        b.eval("document.getElementById('chain').dataset.ok").await,
        json!("true")
    );
    let rows = b
        .eval("Array.from(document.querySelectorAll('#promotions tbody tr')).map(r => r.dataset.outcome + ':' + r.cells[2].textContent + ':' + r.cells[5].textContent)")
        .await;
    let rows: Vec<String> = serde_json::from_value(rows).unwrap();
    assert!(
        rows.iter()
            .any(|r| r.starts_with("denied:root") && r.ends_with("metric:accuracy>=0.9")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("denied:uma") && r.ends_with("caller-has-experiment:promote")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .filter(|r| r.starts_with("allowed:root"))
            .count()
            >= 2,
        "{rows:?}"
    );
    b.assert_accessible("audit").await;
    b.screenshot("audit").await;

    // Someone edits an audit entry in the database: the page says so, loudly,
    // naming the seq.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let changed = sqlx::query(
        "UPDATE record_events SET body = json_set(body, '$.actor', 'mallory') WHERE kind = 'audit' AND id = 'acme' AND seq = 2",
    )
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(changed, 1);
    pool.close().await;
    open(&b, &s.url("/ui/audit")).await;
    assert_eq!(
        b.eval("document.getElementById('chain').dataset.ok").await,
        json!("false")
    );
    assert_eq!(
        b.eval("document.getElementById('chain').dataset.firstBroken")
            .await,
        json!("2")
    );
    let text = b.eval("document.getElementById('chain').textContent").await;
    assert!(
        text.as_str()
            .unwrap()
            .contains("AUDIT CHAIN BROKEN at seq 2"),
        "{text}"
    );
    assert_eq!(
        b.eval("document.getElementById('chain').getAttribute('role')")
            .await,
        json!("alert")
    );
    b.assert_accessible("audit-broken").await;
    b.screenshot("audit-broken").await;
    b.close().await;
    s.stop().await;
}
