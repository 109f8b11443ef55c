//! Setting up the run (the first half of the `workers` check): who the token
//! is, the tenants (other tenants' admin tokens when the token may issue
//! them), a user token per tenant, a node per tenant (`POST /api/nodes` →
//! its worker token) with the tool's worker on it, and a victim node.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Ctx, RUN_LABEL, Setup, Tenant, VICTIM_LABEL, Whoami};
use crate::error::{DogfoodError, Result};
use crate::worker::{self, WorkerConfig, WorkerStats};

/// The scopes of the user the run submits as (the user role's preset).
const USER_SCOPES: [&str; 5] = [
    "task:submit",
    "workflow:submit",
    "task:read",
    "task:cancel",
    "node:register",
];

/// How long the tokens and worker tokens the run issues are valid.
const TOKEN_TTL: &str = "2h";

/// Asks who `token` stands for.
pub async fn whoami(ctx: &Ctx, token: &str) -> Result<Whoami> {
    let a = ctx
        .client
        .get("/api/whoami", token)
        .send()
        .await?
        .expect(&[200])?;
    let v = a.json()?;
    let text = |k: &str| -> Result<String> {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| a.bad(format!("no {k:?} in {v}")))
    };
    let kind = v["kind"]["type"]
        .as_str()
        .or_else(|| v["kind"].as_str())
        .unwrap_or("?")
        .to_owned();
    let scopes = v["scopes"]
        .as_array()
        .ok_or_else(|| a.bad(format!("no scopes list in {v}")))?
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    Ok(Whoami {
        tenant: text("tenant")?,
        id: text("id")?,
        kind,
        scopes,
    })
}

/// Issues a token as `issuer`: `(token, id)`.
pub async fn issue_token(ctx: &Ctx, issuer: &str, request: Value) -> Result<(String, String)> {
    let a = ctx
        .client
        .post("/api/tokens", issuer, request)
        .send()
        .await?
        .expect(&[201])?;
    let v = a.json()?;
    let token = v["token"]
        .as_str()
        .filter(|t| t.starts_with("hive_"))
        .ok_or_else(|| a.bad(format!("no hive_… token in {v}")))?;
    let id = v["info"]["id"]
        .as_str()
        .ok_or_else(|| a.bad(format!("no info.id in {v}")))?;
    Ok((token.to_owned(), id.to_owned()))
}

/// Registers a node as `token`: `(node id, worker token)`.
pub async fn register_node(ctx: &Ctx, token: &str, spec: Value) -> Result<(String, String)> {
    let a = ctx
        .client
        .post("/api/nodes", token, spec)
        .send()
        .await?
        .expect(&[201])?;
    let v = a.json()?;
    let node = v["node"]["id"]
        .as_str()
        .ok_or_else(|| a.bad(format!("no node.id in {v}")))?;
    let worker = v["worker_token"]
        .as_str()
        .filter(|t| t.starts_with("hive_"))
        .ok_or_else(|| a.bad(format!("no hive_… worker_token in {v}")))?;
    if v["worker_token_id"].as_str().is_none() {
        return Err(a.bad(format!("no worker_token_id in {v}")));
    }
    Ok((node.to_owned(), worker.to_owned()))
}

/// Sets the run up; `figures` gets what was done so far, also on failure.
pub async fn run(ctx: &Ctx, figures: &mut Value) -> Result<Setup> {
    let started = Instant::now();
    let token = ctx.opts.token.clone();
    let me = whoami(ctx, &token).await.map_err(|e| match e {
        DogfoodError::Status { status: 401, .. } => DogfoodError::Skipped(
            "the target refuses --token (401: invalid, expired or revoked)".into(),
        ),
        other => other,
    })?;
    figures["principal"] = json!(format!("{}/{} ({})", me.tenant, me.id, me.kind));
    figures["scopes"] = json!(me.scopes);
    if !me.can("task:submit") || !me.can("node:register") {
        return Err(DogfoodError::Skipped(format!(
            "the token ({}/{}) lacks task:submit or node:register",
            me.tenant, me.id
        )));
    }
    // The tenants: the token's own, then others when it may issue their tokens.
    let mut admins: Vec<(String, String, Option<String>)> =
        vec![(me.tenant.clone(), token.clone(), None)];
    let mut tenants_note = None;
    let wanted = ctx.opts.tenants.max(1);
    if wanted > 1 {
        if me.scopes.iter().any(|s| s == "system:admin") {
            let scopes: Vec<&String> = me
                .scopes
                .iter()
                .filter(|s| s.as_str() != "system:admin")
                .collect();
            for i in 1..wanted {
                let name = format!("dogfood-{}-t{i}", ctx.run_id);
                let (t, id) = issue_token(
                    ctx,
                    &token,
                    json!({
                        "tenant": name,
                        "principal": "dogfood-admin",
                        "kind": "admin",
                        "scopes": scopes,
                        "ttl": TOKEN_TTL,
                        "description": format!("hive-dogfood run {}", ctx.run_id),
                    }),
                )
                .await?;
                admins.push((name, t, Some(id)));
            }
        } else {
            let note = format!(
                "one tenant instead of {wanted}: the token lacks system:admin, so it cannot issue tokens for other tenants"
            );
            ctx.note(note.clone());
            tenants_note = Some(note);
        }
    }
    let stop = CancellationToken::new();
    let mut tenants = Vec::new();
    let mut workers = Vec::new();
    let mut victim_node = None;
    for (i, (name, admin_token, admin_token_id)) in admins.into_iter().enumerate() {
        let can_issue = if i == 0 { me.can("tenant:admin") } else { true };
        let (user_token, user_token_id) = if can_issue {
            let (t, id) = issue_token(
                ctx,
                &admin_token,
                json!({
                    "principal": format!("dogfood-user-{}", ctx.run_id),
                    "kind": "user",
                    "scopes": USER_SCOPES,
                    "ttl": TOKEN_TTL,
                    "description": format!("hive-dogfood run {}", ctx.run_id),
                }),
            )
            .await?;
            (t, Some(id))
        } else {
            ctx.note(format!(
                "tenant {name}: the token lacks tenant:admin; tasks are submitted with the token itself"
            ));
            (admin_token.clone(), None)
        };
        let (node_id, worker_token) = register_node(
            ctx,
            &user_token,
            json!({
                "name": format!("dogfood-{}", ctx.run_id),
                "capacity": ctx.opts.capacity,
                "labels": { RUN_LABEL: ctx.run_id },
                "worker_token_ttl": TOKEN_TTL,
            }),
        )
        .await?;
        if i == 0 {
            let (victim, _) = register_node(
                ctx,
                &user_token,
                json!({
                    "name": format!("dogfood-{}-victim", ctx.run_id),
                    "capacity": 1,
                    "labels": { VICTIM_LABEL: ctx.run_id },
                    "worker_token_ttl": TOKEN_TTL,
                }),
            )
            .await?;
            victim_node = Some(victim);
        }
        tenants.push(Tenant {
            name,
            admin_token,
            admin_token_id,
            user_token,
            user_token_id,
            node_id,
            worker_token,
            stats: Arc::new(WorkerStats::default()),
        });
    }
    // The workers start once everything is set up (nothing to stop on a
    // failure above).
    for t in &tenants {
        workers.push(tokio::spawn(worker::run(
            ctx.client.clone(),
            t.worker_token.clone(),
            WorkerConfig {
                capacity: ctx.opts.capacity,
                ..WorkerConfig::default()
            },
            t.stats.clone(),
            stop.clone(),
        )));
    }
    figures["tenants"] = json!(tenants.iter().map(|t| t.name.clone()).collect::<Vec<_>>());
    figures["nodes"] = json!(
        tenants
            .iter()
            .map(|t| t.node_id.clone())
            .collect::<Vec<_>>()
    );
    Ok(Setup {
        whoami: me,
        tenants,
        tenants_note,
        victim_node,
        stop_workers: stop,
        workers,
        started,
    })
}
