//! `stabilize` against a real Honeycomb (in-process, memory://), where every
//! check must pass — through the library, through the binary, and across a
//! restart — and against deliberately broken targets (a proxy in front of
//! the real one), where it must fail naming the right check.

mod common;

use std::time::{Duration, Instant};

use common::{Breach, Server};
use hive_dogfood::{Report, Restart, StabilizeOptions, stabilize};

/// Small, quick options against `target`.
fn options(target: &str, token: &str) -> StabilizeOptions {
    StabilizeOptions {
        duration: Duration::from_secs(45),
        tenants: 2,
        tasks: 12,
        polls: 300,
        capacity: 8,
        ..StabilizeOptions::new(target, token)
    }
}

fn failed_check(report: &Report) -> (&str, &str) {
    let c = report.first_failure().expect("a check failed");
    (c.name.as_str(), c.reason.as_deref().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_passes_against_a_real_honeycomb() {
    let server = Server::start().await;
    let token = server.admin_token("acme", true).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let t0 = Instant::now();
    let report = stabilize(StabilizeOptions {
        report: Some(path.clone()),
        ..options(&server.url(), &token)
    })
    .await
    .expect("stabilize runs");
    eprintln!("{}{}", report.table(), report.verdict());
    eprintln!("took {:?}", t0.elapsed());
    assert!(
        report.passed,
        "{}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "health",
            "workers",
            "tasks",
            "workflow",
            "streams",
            "polling",
            "worker_token_denied",
            "audit_chain"
        ]
    );
    assert_eq!(report.verdict(), "hive-dogfood: PASSED (8 checks)");
    // Two tenants (the token has system:admin), every task and stream.
    let tasks = &report.check("tasks").unwrap().figures;
    assert_eq!(tasks["tenants"], 2, "{tasks}");
    assert_eq!(tasks["ended"], 12, "{tasks}");
    let streams = &report.check("streams").unwrap().figures;
    assert_eq!(streams["streams"], 24, "{streams}");
    assert_eq!(streams["resumed"], 12, "{streams}");
    let denied = &report.check("worker_token_denied").unwrap().figures;
    assert!(denied["denied_403"].as_u64().unwrap() >= 20, "{denied}");
    assert_eq!(denied["denied_403"], denied["audited"], "{denied}");
    let polling = &report.check("polling").unwrap().figures;
    assert_eq!(polling["ok"], 300, "{polling}");
    assert_eq!(polling["not_modified"], 12, "{polling}");
    // The report on disk is the same report.
    let on_disk: Report = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(on_disk, report);
    assert!(!std::fs::read_to_string(&path).unwrap().contains(&token));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_passes_with_one_tenant_when_the_token_cannot_issue_others() {
    let server = Server::start().await;
    let token = server.admin_token("solo", false).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hive-dogfood"))
        .args([
            "stabilize",
            "--target",
            &server.url(),
            "--duration",
            "45s",
            "--tenants",
            "2",
            "--tasks",
            "8",
            "--polls",
            "200",
            "--report",
        ])
        .arg(&path)
        .env("HIVE_DOGFOOD_TOKEN", &token)
        .output()
        .await
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some("hive-dogfood: PASSED (8 checks)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("worker_token_denied"),
        "the table: {stderr}"
    );
    let report: Report = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(report.passed);
    assert_eq!(report.check("tasks").unwrap().figures["tenants"], 1);
    assert!(
        report.notes.iter().any(|n| n.contains("system:admin")),
        "{:?}",
        report.notes
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_resume_and_tasks_end_across_a_restart() {
    let server = Server::start().await;
    let token = server.admin_token("acme", true).await;
    let report = stabilize(StabilizeOptions {
        restart: Some(Restart::Hook(server.restart_hook())),
        tenants: 1,
        tasks: 10,
        ..options(&server.url(), &token)
    })
    .await
    .expect("stabilize runs");
    eprintln!("{}{}", report.table(), report.verdict());
    assert!(
        report.passed,
        "{}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    let restart = report.check("restart").expect("the restart check ran");
    assert!(
        restart.figures["streams_resumed"].as_u64().unwrap() >= 1,
        "{}",
        restart.figures
    );
    assert_eq!(report.verdict(), "hive-dogfood: PASSED (9 checks)");
    server.stop().await;
}

async fn against_broken(breach: Breach) -> Report {
    let server = Server::start().await;
    let token = server.admin_token("acme", true).await;
    let target = common::proxy(&server.url(), breach).await;
    let report = stabilize(StabilizeOptions {
        tasks: 6,
        polls: 100,
        ..options(&target, &token)
    })
    .await
    .expect("stabilize runs");
    eprintln!("{breach:?}:\n{}{}", report.table(), report.verdict());
    server.stop().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_terminal_event_fails_streams() {
    let report = against_broken(Breach::DropTerminal).await;
    assert!(!report.passed);
    let (name, reason) = failed_check(&report);
    assert_eq!(name, "streams", "{reason}");
    assert!(reason.contains("without a terminal event"), "{reason}");
    assert!(
        report
            .verdict()
            .starts_with("hive-dogfood: FAILED: streams: ")
    );
    // The checks before it are not fooled into failing.
    assert!(report.check("tasks").unwrap().passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_seq_fails_streams() {
    let report = against_broken(Breach::RepeatSeq).await;
    let (name, reason) = failed_check(&report);
    assert_eq!(name, "streams", "{reason}");
    assert!(reason.contains("seq 1 (queued) repeated"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_token_that_may_cancel_fails_worker_token_denied() {
    let report = against_broken(Breach::WorkerCancel).await;
    let (name, reason) = failed_check(&report);
    assert_eq!(name, "worker_token_denied", "{reason}");
    assert!(reason.contains("cancel a task"), "{reason}");
    assert!(
        report
            .verdict()
            .starts_with("hive-dogfood: FAILED: worker_token_denied: ")
    );
}
