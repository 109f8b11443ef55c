//! `worker_token_denied`: the worker token of the run's first node tries
//! every operation that is not the worker protocol — submit a task, a batch
//! and a workflow; cancel a task (one, and by filter) and the workflow; list
//! and read tasks, events, logs, the workflow, the feed, nodes; issue, list
//! and revoke tokens; read and verify the audit trail; register a node;
//! drain and remove another node and issue it a worker token; promote an
//! experiment; read another tenant's task — each must be `403 forbidden`
//! (a problem), or `404` where the contract says another tenant's object is
//! not found; every `403` must then be in the tenant's audit trail as a
//! `denied` entry of the worker (`GET /api/audit?actor=worker:<node>&outcome=denied`
//! as the admin), one attempt at a time.

use std::time::Instant;

use reqwest::Method;
use serde_json::{Value, json};

use super::{Ctx, Setup, VICTIM_LABEL, ms_since};
use crate::error::{DogfoodError, Result};
use crate::report::CheckResult;

/// One attempt of the worker token.
struct Attempt {
    what: &'static str,
    method: Method,
    path: String,
    body: Option<Value>,
    /// The action its audit entry is expected to name.
    action: &'static str,
    /// Whether `404` is what the contract says (another tenant's object).
    cross_tenant: bool,
}

fn attempt(
    what: &'static str,
    method: Method,
    path: impl Into<String>,
    body: Option<Value>,
    action: &'static str,
) -> Attempt {
    Attempt {
        what,
        method,
        path: path.into(),
        body,
        action,
        cross_tenant: false,
    }
}

/// What the check needs from the rest of the run.
#[derive(Debug)]
pub struct Targets {
    /// A pending task of the first tenant (the victim).
    pub task: String,
    /// A task of another tenant, when there is one.
    pub other_tenant_task: Option<String>,
    /// A workflow of the first tenant.
    pub workflow: Option<String>,
    /// A token id of the first tenant (the user's).
    pub token_id: Option<String>,
}

/// Submits the victim task: it requires a label no node carries, so it
/// stays pending until the run cancels it.
pub async fn victim(ctx: &Ctx, token: &str) -> Result<String> {
    let a = ctx
        .client
        .post(
            "/api/tasks",
            token,
            json!({
                "agent": "dogfood.ok",
                "input": {"victim": true},
                "labels": { VICTIM_LABEL: format!("{}-none", ctx.run_id) },
            }),
        )
        .header("idempotency-key", format!("dogfood-{}-victim", ctx.run_id))
        .send()
        .await?
        .expect(&[201])?;
    let v = a.json()?;
    v["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| a.bad(format!("no id in {v}")))
}

/// Runs the check.
pub async fn run(ctx: &Ctx, setup: &Setup, targets: &Targets) -> CheckResult {
    let started = Instant::now();
    let mut figures = json!({});
    let result = check(ctx, setup, targets, &mut figures).await;
    CheckResult::from_result("worker_token_denied", figures, result, ms_since(started))
}

async fn check(ctx: &Ctx, setup: &Setup, targets: &Targets, figures: &mut Value) -> Result<()> {
    let first = &setup.tenants[0];
    let admin = &first.admin_token;
    if !setup.whoami.can("audit:read") {
        return Err(DogfoodError::Skipped(
            "the token lacks audit:read, so the denials cannot be found in the audit trail".into(),
        ));
    }
    let worker = &first.worker_token;
    let actor = format!("worker:{}", first.node_id);
    let task = &targets.task;
    let victim = setup.victim_node.clone().unwrap_or_default();
    let spec = json!({"agent": "dogfood.ok", "input": {}, "labels": ctx.labels()});
    let mut attempts = vec![
        attempt(
            "submit a task",
            Method::POST,
            "/api/tasks",
            Some(spec.clone()),
            "task.submit",
        ),
        attempt(
            "submit a batch",
            Method::POST,
            "/api/tasks",
            Some(json!({"tasks": [spec.clone(), spec]})),
            "task.submit",
        ),
        attempt(
            "submit a workflow",
            Method::POST,
            "/api/workflows",
            Some(json!({"name": "evil", "steps": [{"id": "a", "agent": "dogfood.ok"}]})),
            "workflow.submit",
        ),
        attempt(
            "cancel a task",
            Method::POST,
            format!("/api/tasks/{task}/cancel"),
            Some(json!({"reason": "a worker must not cancel"})),
            "task.cancel",
        ),
        attempt(
            "cancel tasks by filter",
            Method::POST,
            "/api/tasks/cancel",
            Some(json!({"filter": {"labels": format!("{VICTIM_LABEL}={}-none", ctx.run_id)}})),
            "task.read",
        ),
        attempt("list tasks", Method::GET, "/api/tasks", None, "task.read"),
        attempt(
            "read a task",
            Method::GET,
            format!("/api/tasks/{task}"),
            None,
            "task.read",
        ),
        attempt(
            "read a task's events",
            Method::GET,
            format!("/api/tasks/{task}/events"),
            None,
            "task.read",
        ),
        attempt(
            "read a task's logs",
            Method::GET,
            format!("/api/tasks/{task}/logs"),
            None,
            "task.read",
        ),
        attempt("read the feed", Method::GET, "/api/feed", None, "task.read"),
        attempt(
            "list workflows",
            Method::GET,
            "/api/workflows",
            None,
            "workflow.read",
        ),
        attempt(
            "issue a token",
            Method::POST,
            "/api/tokens",
            Some(json!({"principal": "dogfood-evil", "kind": "admin", "scopes": ["tenant:admin"]})),
            "token.issue",
        ),
        attempt(
            "list tokens",
            Method::GET,
            "/api/tokens",
            None,
            "token.read",
        ),
        attempt(
            "read the audit trail",
            Method::GET,
            "/api/audit",
            None,
            "audit.read",
        ),
        attempt(
            "verify the audit trail",
            Method::GET,
            "/api/audit/verify",
            None,
            "audit.read",
        ),
        attempt(
            "register a node",
            Method::POST,
            "/api/nodes",
            Some(json!({"name": "evil", "capacity": 1})),
            "node.register",
        ),
        attempt("list nodes", Method::GET, "/api/nodes", None, "node.read"),
        attempt(
            "drain another node",
            Method::POST,
            format!("/api/nodes/{victim}/drain"),
            None,
            "node.drain",
        ),
        attempt(
            "issue a worker token for another node",
            Method::POST,
            format!("/api/nodes/{victim}/worker-tokens"),
            Some(json!({})),
            "token.issue_worker",
        ),
        attempt(
            "remove another node",
            Method::DELETE,
            format!("/api/nodes/{victim}"),
            None,
            "node.remove",
        ),
        attempt(
            "promote an experiment",
            Method::POST,
            "/api/experiments/promote",
            Some(json!({"agent": "dogfood/sandbox/evil:1"})),
            "experiment.promote",
        ),
    ];
    if let Some(wf) = &targets.workflow {
        attempts.push(attempt(
            "read a workflow",
            Method::GET,
            format!("/api/workflows/{wf}"),
            None,
            "workflow.read",
        ));
        attempts.push(attempt(
            "cancel a workflow",
            Method::POST,
            format!("/api/workflows/{wf}/cancel"),
            Some(json!({})),
            "workflow.cancel",
        ));
    }
    if let Some(id) = &targets.token_id {
        attempts.push(attempt(
            "revoke a token",
            Method::DELETE,
            format!("/api/tokens/{id}"),
            None,
            "token.revoke",
        ));
    }
    if let Some(other) = &targets.other_tenant_task {
        attempts.push(Attempt {
            cross_tenant: true,
            ..attempt(
                "read another tenant's task",
                Method::GET,
                format!("/api/tasks/{other}"),
                None,
                "task.read",
            )
        });
        attempts.push(Attempt {
            cross_tenant: true,
            ..attempt(
                "cancel another tenant's task",
                Method::POST,
                format!("/api/tasks/{other}/cancel"),
                Some(json!({})),
                "task.cancel",
            )
        });
    }
    // Where the trail ends now: the attempts' entries come after it.
    let mut cursor = audit_head(ctx, admin).await?;
    figures["audit_from_seq"] = json!(cursor);
    let mut denied = 0u64;
    let mut not_found = 0u64;
    let mut audited = 0u64;
    let mut not_applicable = Vec::new();
    let mut actions = serde_json::Map::new();
    let mut problems: Vec<String> = Vec::new();
    for a in &attempts {
        let mut call = ctx
            .client
            .call(a.method.clone(), a.path.clone(), Some(worker));
        if let Some(b) = &a.body {
            call = call.json(b.clone());
        }
        let answer = call.send().await?;
        let label = format!("{} ({} {})", a.what, a.method, a.path);
        match answer.status {
            403 => {
                denied += 1;
                if let Err(e) = answer.expect_problem("forbidden") {
                    problems.push(format!("{label}: {e}"));
                    continue;
                }
                let found = denials_after(ctx, admin, &actor, cursor).await?;
                match found.last() {
                    None => problems.push(format!(
                        "{label}: answered 403 but no denied entry of {actor} is in the audit trail after seq {cursor}"
                    )),
                    Some(last) => {
                        audited += 1;
                        cursor = last["seq"].as_u64().unwrap_or(cursor);
                        let names: Vec<&str> =
                            found.iter().filter_map(|e| e["action"].as_str()).collect();
                        actions.insert(a.what.to_owned(), json!(names));
                        if !names.contains(&a.action) {
                            problems.push(format!(
                                "{label}: audited as {names:?}, expected the action {}",
                                a.action
                            ));
                        }
                    }
                }
            }
            404 if a.cross_tenant => {
                not_found += 1;
                if let Err(e) = answer.expect_problem("not_found") {
                    problems.push(format!("{label}: {e}"));
                }
            }
            503 if answer.problem_code().as_deref() == Some("registry_not_configured") => {
                ctx.note(format!(
                    "worker_token_denied: {label} answered 503 registry_not_configured before any authorization, so it was not tried"
                ));
                not_applicable.push(format!("{}: no registry on the target (503)", a.what));
            }
            s => problems.push(format!(
                "{label}: the worker token was answered {s} (expected 403{}): {}",
                if a.cross_tenant { " or 404" } else { "" },
                answer.excerpt()
            )),
        }
    }
    figures["attempts"] = json!(attempts.len());
    figures["denied_403"] = json!(denied);
    figures["not_found_404"] = json!(not_found);
    figures["audited"] = json!(audited);
    figures["actor"] = json!(actor);
    figures["audited_actions"] = Value::Object(actions);
    figures["not_applicable"] = json!(not_applicable);
    figures["problems"] = json!(problems);
    match problems.first() {
        None => Ok(()),
        Some(p) if problems.len() == 1 => Err(DogfoodError::contract(p.clone())),
        Some(p) => Err(DogfoodError::contract(format!(
            "{p} (and {} more)",
            problems.len() - 1
        ))),
    }
}

/// The seq of the tenant's last audit entry (from `/api/audit/verify`'s
/// head; 0 when the chain is empty or broken).
async fn audit_head(ctx: &Ctx, admin: &str) -> Result<u64> {
    let a = ctx
        .client
        .get("/api/audit/verify", admin)
        .send()
        .await?
        .expect(&[200])?;
    let v = a.json()?;
    Ok(v["head"]["seq"]
        .as_u64()
        .or_else(|| v["checked"].as_u64())
        .unwrap_or(0))
}

/// The denied entries of `actor` after `after`, as the admin reads them.
async fn denials_after(ctx: &Ctx, admin: &str, actor: &str, after: u64) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut cursor = after;
    loop {
        let a = ctx
            .client
            .get(
                format!("/api/audit?actor={actor}&outcome=denied&after_seq={cursor}&limit=1000"),
                admin,
            )
            .send()
            .await?
            .expect(&[200])?;
        let v = a.json()?;
        let events = v["events"]
            .as_array()
            .ok_or_else(|| a.bad(format!("no events list in {v}")))?;
        for e in events {
            if e["actor"] != actor || e["outcome"] != "denied" {
                return Err(a.bad(format!(
                    "the filter actor={actor}&outcome=denied answered another entry: {e}"
                )));
            }
        }
        out.extend(events.iter().cloned());
        match v["next_after_seq"].as_u64() {
            Some(next) if next > cursor => cursor = next,
            _ => return Ok(out),
        }
    }
}
