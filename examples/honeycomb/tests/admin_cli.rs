//! `honeycomb admin …`, run as the real binary against PostgreSQL (a fresh
//! schema per test; under `CI=true` a missing server fails): every command's
//! `--json` output, the store's state afterwards, the audit entries with the
//! local user as actor, a tampered audit row found by `audit verify`, and bad
//! arguments refused with one line on stderr and a non-zero exit code.

use std::collections::BTreeSet;
use std::time::Duration;

use hive::iam::{AuditEvent, AuditQuery};
use hive::prelude::*;
use hive::{TaskError, Timestamp};
use hive_store::testing::{server_url, unique_name};
use serde_json::{Value, json};

/// The login name the binary runs under: its actor is `cli:night-owl`.
const USER: &str = "night-owl";
const ACTOR: &str = "cli:night-owl";

/// A fresh schema on the test server, dropped at the end.
struct Pg {
    base: String,
    schema: String,
    url: String,
}

impl Pg {
    fn new() -> Option<Pg> {
        let base = server_url("HIVE_TEST_POSTGRES_URL")?;
        let schema = unique_name("adm");
        let url = format!("{base}?schema={schema}");
        Some(Pg { base, schema, url })
    }

    /// Runs SQL on the server with `psql` (as an intruder with write access
    /// to the database would).
    fn psql(&self, sql: &str) {
        let out = std::process::Command::new("psql")
            .args([self.base.as_str(), "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An engine on the same store, without background work (so nothing
    /// moves between the binary's runs).
    async fn hive(&self) -> Hive {
        let config = HiveConfig {
            run_supervisor: false,
            run_workflows: false,
            ..HiveConfig::default()
        };
        hive::open_with(&self.url, config).await.expect("opens")
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([
                self.base.as_str(),
                "-q",
                "-c",
                &format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema),
            ])
            .output();
    }
}

/// What one run of the binary printed and returned.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success and parses stdout as one JSON document.
    #[track_caller]
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "{self:#?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:#?}"))
    }

    /// Asserts the exit code and that stderr is one line naming each of
    /// `words`.
    #[track_caller]
    fn refused(&self, code: i32, words: &[&str]) {
        assert_eq!(self.code, code, "{self:#?}");
        let line = self.stderr.trim_end();
        assert!(
            line.starts_with("honeycomb: ") && !line.contains('\n'),
            "one line on stderr: {self:#?}"
        );
        for w in words {
            assert!(line.contains(w), "stderr names {w:?}: {self:#?}");
        }
        assert!(!line.contains("panicked"), "{self:#?}");
    }
}

/// Runs `honeycomb admin <args> --backend <url>` as the user [`USER`].
async fn admin(url: &str, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend(["--backend", url]);
    admin_raw(&all).await
}

/// Runs `honeycomb admin <args>` as the user [`USER`], with no
/// `HONEYCOMB_*` variable from the test's environment.
async fn admin_raw(args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_honeycomb"));
    cmd.arg("admin").args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("HONEYCOMB_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("USER", USER).env_remove("LOGNAME");
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("honeycomb admin answers within 2 minutes")
        .expect("honeycomb runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `tenant`'s audit trail, read as Hive itself.
async fn trail(hive: &Hive, tenant: &str) -> Vec<AuditEvent> {
    let query = AuditQuery {
        tenant: Some(tenant.into()),
        limit: Some(1000),
        ..AuditQuery::default()
    };
    hive.audit_trail()
        .list(hive, &Principal::system(), &query)
        .await
        .expect("the trail reads")
        .events
}

/// The events of `tenant`'s trail for `action` by the local operator.
async fn by_operator(hive: &Hive, tenant: &str, action: &str) -> Vec<AuditEvent> {
    let events = trail(hive, tenant).await;
    let ours: Vec<AuditEvent> = events
        .into_iter()
        .filter(|e| e.action == action && e.actor.as_str() == ACTOR)
        .collect();
    for e in &ours {
        assert_eq!(e.actor_kind, "system", "{e:?}");
        assert_eq!(e.outcome, AuditOutcome::Allowed, "{e:?}");
    }
    ours
}

async fn submit(hive: &Hive, who: &Principal, agent: &str, n: usize) -> Vec<TaskId> {
    let specs = (0..n).map(|i| TaskSpec::new(agent, json!(i))).collect();
    hive.submit_batch(who, specs)
        .await
        .expect("submit")
        .into_iter()
        .map(|s| s.id)
        .collect()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| {
            x.as_str()
                .or_else(|| x["id"].as_str())
                .expect("an id")
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_issue_list_and_revoke_act_on_the_store_audited_as_the_local_user() {
    let Some(pg) = Pg::new() else { return };
    let issue = |tenant: &'static str, principal: &'static str, kind: &'static str| {
        let url = pg.url.clone();
        async move {
            admin(
                &url,
                &[
                    "token",
                    "issue",
                    "--tenant",
                    tenant,
                    "--principal",
                    principal,
                    "--kind",
                    kind,
                    "--json",
                ],
            )
            .await
            .json()
        }
    };
    let alice = issue("acme", "alice", "user").await;
    let alice_id = alice["info"]["id"].as_str().expect("id").to_owned();
    let alice_token = alice["token"].as_str().expect("token").to_owned();
    assert_eq!(alice["info"]["status"], "active");
    assert_eq!(alice["info"]["issued_by"], ACTOR);
    let bob = issue("globex", "bob", "operator").await;
    let bob_token = bob["token"].as_str().expect("token").to_owned();

    // One tenant's, then every tenant's, never a secret.
    let acme = admin(&pg.url, &["token", "list", "--tenant", "acme", "--json"]).await;
    assert_eq!(ids(&acme.json()), std::slice::from_ref(&alice_id));
    let all = admin(&pg.url, &["token", "list", "--json"]).await;
    let listed = all.json();
    let tenants: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["tenant"].as_str().expect("tenant"))
        .collect();
    assert_eq!(tenants, ["acme", "globex"], "issue order");
    for secret in [&alice_token, &bob_token] {
        let secret = secret.split_once('.').expect("id.secret").1;
        assert!(!all.stdout.contains(secret), "no secret in a listing");
    }

    let revoked = admin(&pg.url, &["token", "revoke", &alice_id, "--json"])
        .await
        .json();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_by"], ACTOR);

    // The store agrees: the token no longer resolves; the other still does.
    let hive = pg.hive().await;
    assert!(hive.tokens().resolve(&alice_token).await.is_err());
    hive.tokens()
        .resolve(&bob_token)
        .await
        .expect("bob's token still resolves");
    // Audited in the system tenant's trail, as the local user.
    assert_eq!(by_operator(&hive, "_system", "token.issue").await.len(), 2);
    let revokes = by_operator(&hive, "_system", "token.revoke").await;
    assert_eq!(revokes.len(), 1);
    assert_eq!(revokes[0].resource, format!("token/{alice_id}"));

    // A table for people.
    let table = admin(&pg.url, &["token", "list"]).await;
    assert_eq!(table.code, 0, "{table:#?}");
    assert!(table.stdout.contains("STATUS") && table.stdout.contains("revoked"));

    // Bad arguments: an unknown token, a bad kind, a malformed tenant.
    admin(&pg.url, &["token", "revoke", &"0".repeat(32)])
        .await
        .refused(4, &["token", "not found"]);
    admin(
        &pg.url,
        &[
            "token",
            "issue",
            "--tenant",
            "acme",
            "--principal",
            "x",
            "--kind",
            "root",
        ],
    )
    .await
    .refused(2, &["--kind"]);
    admin(&pg.url, &["token", "list", "--tenant", "no such"])
        .await
        .refused(2, &["--tenant", "no such"]);
    hive.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_passes_then_names_the_seq_of_a_tampered_row() {
    let Some(pg) = Pg::new() else { return };
    let hive = pg.hive().await;
    let alice = Principal::user("acme", "alice");
    for _ in 0..3 {
        submit(&hive, &alice, "echo", 1).await;
    }
    submit(&hive, &Principal::user("globex", "carol"), "echo", 1).await;

    let intact = admin(&pg.url, &["audit", "verify", "--json"]).await.json();
    assert_eq!(intact["ok"], true);
    let trails = intact["trails"].as_array().expect("trails");
    let names: Vec<&str> = trails
        .iter()
        .map(|t| t["tenant"].as_str().expect("tenant"))
        .collect();
    assert_eq!(names, ["acme", "globex"]);
    assert_eq!(trails[0]["checked"], 3);

    // Someone with write access edits acme's second event.
    pg.psql(&format!(
        "UPDATE \"{}\".record_events SET body = jsonb_set(body::jsonb, '{{action}}', \
         '\"task.cancel\"')::json WHERE kind = 'audit' AND id = 'acme' AND seq = 2",
        pg.schema
    ));
    let broken = admin(&pg.url, &["audit", "verify", "--tenant", "acme", "--json"]).await;
    assert_eq!(broken.code, 3, "{broken:#?}");
    let report: Value = serde_json::from_str(&broken.stdout).expect("json");
    assert_eq!(report["ok"], false);
    assert_eq!(report["trails"][0]["first_broken"], 2);
    assert_eq!(report["trails"][0]["broken"], "hash_mismatch");
    assert_eq!(report["trails"][0]["checked"], 1);
    broken.refused(3, &["tenant acme", "seq 2", "hash_mismatch", "edited"]);

    // Every trail: globex is intact, acme is not; a table for people.
    let all = admin(&pg.url, &["audit", "verify"]).await;
    all.refused(3, &["tenant acme", "seq 2"]);
    assert!(all.stdout.contains("BROKEN") && all.stdout.contains("intact"));
    let globex = admin(&pg.url, &["audit", "verify", "--tenant", "globex"]).await;
    assert_eq!(globex.code, 0, "{globex:#?}");

    admin(&pg.url, &["audit", "verify", "--tenant", "a/b"])
        .await
        .refused(2, &["--tenant"]);
    hive.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_writes_json_lines_after_a_seq_to_stdout_or_a_file() {
    let Some(pg) = Pg::new() else { return };
    let hive = pg.hive().await;
    let alice = Principal::user("acme", "alice");
    for _ in 0..3 {
        submit(&hive, &alice, "echo", 1).await;
    }
    submit(&hive, &Principal::user("globex", "carol"), "echo", 1).await;

    let out = admin(
        &pg.url,
        &["audit", "export", "--tenant", "acme", "--after-seq", "1"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:#?}");
    let events: Vec<AuditEvent> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one event per line"))
        .collect();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [2, 3]);
    for e in &events {
        assert_eq!(e.tenant.as_str(), "acme");
        assert_eq!(
            e.compute_hash(),
            e.hash,
            "exported as stored: re-verifiable"
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("audit.jsonl");
    let to_file = admin(
        &pg.url,
        &["audit", "export", "--output", file.to_str().expect("utf-8")],
    )
    .await;
    assert_eq!(to_file.code, 0, "{to_file:#?}");
    assert!(to_file.stdout.is_empty(), "the lines go to the file");
    let text = std::fs::read_to_string(&file).expect("the file");
    let tenants: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<AuditEvent>(l)
                .expect("event")
                .tenant
                .to_string()
        })
        .collect();
    assert_eq!(tenants, ["acme", "acme", "acme", "globex"]);
    assert!(
        !dir.path().join("audit.jsonl.partial").exists(),
        "renamed into place"
    );

    admin(
        &pg.url,
        &[
            "audit",
            "export",
            "--output",
            "/nonexistent/dir/audit.jsonl",
        ],
    )
    .await
    .refused(1, &["cannot write", "/nonexistent/dir/audit.jsonl"]);
    hive.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_list_drain_and_remove_change_the_store_audited_as_the_local_user() {
    let Some(pg) = Pg::new() else { return };
    let hive = pg.hive().await;
    let system = Principal::system();
    let alice = Principal::user("acme", "alice");
    let gpu = hive
        .register_node(&system, NodeSpec::system("gpu-1", 2).label("gpu", "a100"))
        .await
        .expect("register");
    let laptop = hive
        .register_node(&alice, NodeSpec::user("laptop", &alice, 4))
        .await
        .expect("register");

    let listed = admin(&pg.url, &["nodes", "list", "--json"]).await.json();
    let mut names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|n| n["spec"]["name"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["gpu-1", "laptop"]);

    let gpu_id = gpu.id.to_string();
    let drained = admin(&pg.url, &["nodes", "drain", &gpu_id, "--json"])
        .await
        .json();
    assert_eq!(drained["status"], "draining");
    assert_eq!(
        hive.get_node(&system, gpu.id).await.expect("node").status,
        NodeStatus::Draining
    );
    let table = admin(&pg.url, &["nodes", "list"]).await;
    assert!(table.stdout.contains("draining") && table.stdout.contains("gpu=a100"));

    let laptop_id = laptop.id.to_string();
    let removed = admin(&pg.url, &["nodes", "remove", &laptop_id, "--json"])
        .await
        .json();
    assert_eq!(removed["removed"], laptop_id.as_str());
    assert!(matches!(
        hive.get_node(&system, laptop.id).await,
        Err(hive::Error::NotFound { .. })
    ));

    let drains = by_operator(&hive, "_system", "node.drain").await;
    assert_eq!(drains.len(), 1);
    assert_eq!(drains[0].resource, format!("node/{gpu_id}"));
    let removals = by_operator(&hive, "_system", "node.remove").await;
    assert_eq!(removals.len(), 1);
    assert_eq!(removals[0].resource, format!("node/{laptop_id}"));

    // An unknown node, a malformed id.
    let unknown = NodeId::new().to_string();
    admin(&pg.url, &["nodes", "drain", &unknown])
        .await
        .refused(4, &[unknown.as_str(), "not found"]);
    admin(&pg.url, &["nodes", "remove", &laptop_id])
        .await
        .refused(4, &["not found"]);
    admin(&pg.url, &["nodes", "drain", "gpu-1"])
        .await
        .refused(2, &["\"gpu-1\"", "not a node id"]);
    hive.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_cancel_by_filter_after_a_dry_run_that_touches_nothing() {
    let Some(pg) = Pg::new() else { return };
    let hive = pg.hive().await;
    let alice = Principal::user("acme", "alice");
    let bob = Principal::user("acme", "bob");
    let carol = Principal::user("globex", "carol");
    let alice_echo = submit(&hive, &alice, "echo", 3).await;
    let alice_resize = submit(&hive, &alice, "resize", 2).await;
    let bob_echo = submit(&hive, &bob, "echo", 1).await;
    let carol_echo = submit(&hive, &carol, "echo", 1).await;
    let carol_resize = submit(&hive, &carol, "resize", 1).await;
    let state = |id: TaskId| {
        let hive = hive.clone();
        async move {
            hive.get_task(&Principal::system(), id)
                .await
                .expect("task")
                .state
        }
    };

    // A dry run lists and changes nothing.
    let dry = admin(
        &pg.url,
        &[
            "tasks",
            "cancel",
            "--tenant",
            "acme",
            "--agent",
            "echo",
            "--dry-run",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(dry["dry_run"], true);
    let matched: BTreeSet<String> = ids(&dry["matched"]).into_iter().collect();
    let expected: BTreeSet<String> = alice_echo
        .iter()
        .chain(&bob_echo)
        .map(ToString::to_string)
        .collect();
    assert_eq!(matched, expected);
    assert_eq!(dry["cancelled"], json!([]));
    for id in alice_echo.iter().chain(&bob_echo) {
        assert_eq!(state(*id).await, TaskState::Pending);
    }
    assert!(by_operator(&hive, "acme", "task.cancel").await.is_empty());

    // Cancel alice's echo tasks only, with a reason.
    let done = admin(
        &pg.url,
        &[
            "tasks",
            "cancel",
            "--tenant",
            "acme",
            "--agent",
            "echo",
            "--owner",
            "alice",
            "--state",
            "pending,scheduled",
            "--reason",
            "3am: echo is broken",
            "--json",
        ],
    )
    .await
    .json();
    let cancelled: BTreeSet<String> = ids(&done["cancelled"]).into_iter().collect();
    let expected: BTreeSet<String> = alice_echo.iter().map(ToString::to_string).collect();
    assert_eq!(cancelled, expected);
    for id in &alice_echo {
        assert_eq!(state(*id).await, TaskState::Cancelled);
        let events = hive
            .read_events(&Principal::system(), *id, 0, 10)
            .await
            .expect("events");
        let last = serde_json::to_value(events.last().expect("an event")).expect("json");
        assert_eq!(last["type"], "cancelled");
        assert_eq!(last["by"], ACTOR);
        assert_eq!(last["reason"], "3am: echo is broken");
    }
    for id in bob_echo.iter().chain(&alice_resize).chain(&carol_echo) {
        assert_eq!(state(*id).await, TaskState::Pending, "not matched");
    }
    // Each cancellation is audited in the task's tenant, by the local user.
    let audited = by_operator(&hive, "acme", "task.cancel").await;
    let resources: BTreeSet<String> = audited.iter().map(|e| e.resource.clone()).collect();
    let expected: BTreeSet<String> = alice_echo.iter().map(|id| format!("task/{id}")).collect();
    assert_eq!(resources, expected);

    // Without --tenant: every tenant's matching tasks, as a table.
    let resize = admin(&pg.url, &["tasks", "cancel", "--agent", "resize"]).await;
    assert_eq!(resize.code, 0, "{resize:#?}");
    assert!(resize.stdout.contains("cancelled 3 of 3 matched tasks"));
    for id in alice_resize.iter().chain(&carol_resize) {
        assert_eq!(state(*id).await, TaskState::Cancelled);
    }
    assert_eq!(by_operator(&hive, "globex", "task.cancel").await.len(), 1);
    // Nothing left to cancel is not an error.
    let again = admin(&pg.url, &["tasks", "cancel", "--agent", "resize", "--json"])
        .await
        .json();
    assert_eq!(again["matched"], json!([]));

    // Bad filters are refused before anything is touched.
    admin(&pg.url, &["tasks", "cancel", "--state", "pending,bogus"])
        .await
        .refused(2, &["--state", "bogus"]);
    admin(&pg.url, &["tasks", "cancel", "--state", "succeeded"])
        .await
        .refused(2, &["succeeded", "ended"]);
    admin(&pg.url, &["tasks", "cancel", "--tenant", "bad tenant"])
        .await
        .refused(2, &["--tenant"]);
    admin(&pg.url, &["tasks", "cancel", "--owner", "a/b"])
        .await
        .refused(2, &["--owner"]);
    admin(&pg.url, &["tasks", "cancel"])
        .await
        .refused(2, &["--tenant, --state, --agent or --owner"]);
    for id in bob_echo.iter().chain(&carol_echo) {
        assert_eq!(state(*id).await, TaskState::Pending);
    }
    hive.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_counts_what_was_submitted_per_tenant_and_agent() {
    let Some(pg) = Pg::new() else { return };
    let hive = pg.hive().await;
    let alice = Principal::user("acme", "alice");
    submit(&hive, &alice, "echo", 5).await;
    submit(&hive, &alice, "resize", 2).await;
    submit(&hive, &Principal::user("globex", "carol"), "resize", 1).await;
    let flaky =
        TaskSpec::new("flaky", json!(0)).retry(RetryPolicy::attempts(3, Duration::from_secs(3600)));
    hive.submit(&alice, flaky).await.expect("submit");

    // A system node: one flaky attempt fails (its retry waits an hour), two
    // echo tasks are leased, one runs.
    let node = hive
        .register_node(&Principal::system(), NodeSpec::system("n1", 10))
        .await
        .expect("register");
    let worker = Principal::worker(TenantId::system(), node.id);
    let claim = |agent: &str, max: u32, start: bool| ClaimOptions {
        max,
        agents: vec![AgentRef::new(agent)],
        start,
    };
    let failed = hive
        .claim(&worker, node.id, &claim("flaky", 1, true))
        .await
        .expect("claim");
    hive.report_failure(
        &worker,
        failed.tasks[0].token,
        TaskError::new("boom", "fails once"),
    )
    .await
    .expect("report");
    let scheduled = hive
        .claim(&worker, node.id, &claim("echo", 2, false))
        .await
        .expect("claim");
    assert_eq!(scheduled.tasks.len(), 2);
    let running = hive
        .claim(&worker, node.id, &claim("echo", 1, true))
        .await
        .expect("claim");
    assert_eq!(running.tasks.len(), 1);

    let queue = admin(&pg.url, &["queue", "--json"]).await.json();
    let tenants = queue["tenants"].as_array().expect("tenants");
    assert_eq!(
        tenants.len(),
        2,
        "tenants without unfinished tasks are left out"
    );
    let acme = &tenants[0];
    assert_eq!(acme["tenant"], "acme");
    assert_eq!(
        (
            &acme["pending"],
            &acme["delayed"],
            &acme["scheduled"],
            &acme["running"]
        ),
        (&json!(5), &json!(1), &json!(2), &json!(1))
    );
    let agent = |name: &str| {
        acme["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .find(|a| a["agent"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("agent {name}: {acme}"))
    };
    let echo = agent("echo");
    assert_eq!(
        (&echo["pending"], &echo["scheduled"], &echo["running"]),
        (&json!(2), &json!(2), &json!(1))
    );
    let flaky = agent("flaky");
    assert_eq!(
        (&flaky["pending"], &flaky["delayed"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(agent("resize")["pending"], 2);
    assert!(echo["oldest_pending_at"].as_i64().expect("a time") <= Timestamp::now().as_millis());
    assert_eq!(tenants[1]["tenant"], "globex");
    assert_eq!(tenants[1]["pending"], 1);
    assert_eq!(queue["total"]["pending"], 6);
    assert_eq!(queue["total"]["scheduled"], 2);
    assert_eq!(queue["total"]["running"], 1);

    let one = admin(&pg.url, &["queue", "--tenant", "globex", "--json"])
        .await
        .json();
    assert_eq!(one["tenants"].as_array().expect("tenants").len(), 1);
    assert_eq!(one["total"]["pending"], 1);
    let none = admin(&pg.url, &["queue", "--tenant", "initech", "--json"])
        .await
        .json();
    assert_eq!(none["tenants"][0]["pending"], 0, "a named tenant is shown");

    let table = admin(&pg.url, &["queue"]).await;
    assert_eq!(table.code, 0, "{table:#?}");
    assert!(table.stdout.contains("PENDING") && table.stdout.contains("resize"));
    admin(&pg.url, &["queue", "--tenant", ""])
        .await
        .refused(2, &["--tenant"]);
    hive.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_reports_each_check_and_fails_on_a_bad_one() {
    let Some(pg) = Pg::new() else { return };
    let good = admin(&pg.url, &["config", "check", "--json"]).await.json();
    assert_eq!(good["ok"], true);
    let statuses: Vec<(&str, &str)> = good["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name"),
                c["status"].as_str().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("settings", "ok"),
            ("listen", "ok"),
            ("store", "ok"),
            ("store read", "ok"),
            ("registry keys", "skipped"),
        ]
    );

    // A registry keys folder that loads, then one with a bad key.
    let keys = tempfile::tempdir().expect("tempdir");
    for name in ["sandbox", "production"] {
        let key = hive_registry::AgentSigningKey::generate();
        std::fs::write(
            keys.path().join(format!("{name}.pub")),
            key.public_key().pem(),
        )
        .expect("write");
    }
    let dir = keys.path().to_str().expect("utf-8");
    let with_keys = admin(
        &pg.url,
        &["config", "check", "--registry-keys", dir, "--json"],
    )
    .await
    .json();
    assert_eq!(with_keys["checks"][4]["status"], "ok", "{with_keys}");
    std::fs::write(keys.path().join("production.pub"), "not a key").expect("write");
    let bad_key = admin(&pg.url, &["config", "check", "--registry-keys", dir]).await;
    bad_key.refused(1, &["registry keys", "production.pub"]);
    assert!(bad_key.stdout.contains("FAIL"), "{bad_key:#?}");

    // A listen address that does not parse.
    admin(&pg.url, &["config", "check", "--listen", "nowhere"])
        .await
        .refused(1, &["listen", "nowhere"]);

    // A store that does not answer.
    let down = admin_raw(&[
        "config",
        "check",
        "--json",
        "--backend",
        "postgres://postgres@127.0.0.1:1/none",
    ])
    .await;
    down.refused(1, &["store", "127.0.0.1:1"]);
    let report: Value = serde_json::from_str(&down.stdout).expect("json");
    assert_eq!(report["checks"][2]["status"], "fail");
    assert_eq!(report["checks"][3]["status"], "skipped");
}

#[tokio::test]
async fn a_configuration_that_does_not_resolve_fails_every_command_naming_the_setting() {
    admin_raw(&["queue", "--backend", "memory://", "--rate-limit", "lots"])
        .await
        .refused(2, &["rate_limit", "lots", "--rate-limit"]);
    admin_raw(&["nodes", "list", "--backend", "nonsense"])
        .await
        .refused(2, &["backend", "nonsense"]);
}
