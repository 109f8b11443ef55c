//! `/api/nodes` (register, list, drain, remove, worker tokens) and
//! `/api/worker/*`: the engine's worker protocol over HTTP for remote
//! workers, authenticated by a worker token bound to one node. The fencing
//! tokens travel unchanged, so a stale report is refused as in-process.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hive::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::tasks::{AckBody, invalid_body};
use super::{ApiError, ApiJson, ApiState, Caller, Problem, parse_duration, parse_id};

/// A registered node with its first worker token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegisteredNode {
    /// The node (the engine's `Node`).
    #[schema(value_type = Object)]
    pub node: Node,
    /// Its worker token (`hive_<id>.<secret>`), shown this once: what the
    /// remote worker presents on `/api/worker/*`.
    pub worker_token: String,
    /// The worker token's id (to revoke it).
    pub worker_token_id: String,
}

fn ttl_of(body: &mut serde_json::Map<String, Value>) -> Result<Option<Duration>, ApiError> {
    match body.remove("worker_token_ttl") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_duration(&s).map(Some).ok_or_else(|| {
            invalid_body(format!("worker_token_ttl {s:?}: not a duration (30d, 12h)"))
        }),
        Some(other) => Err(invalid_body(format!(
            "worker_token_ttl: expected a duration string, got {other}"
        ))),
    }
}

/// `POST /api/nodes`: registers a node (a `NodeSpec`; `owner` defaults to
/// the caller) and issues its worker token (`worker_token_ttl`, e.g.
/// `"30d"`, bounds it; forever by default). Both are audited.
#[utoipa::path(
    operation_id = "register_node",
    post,
    path = "/api/nodes",
    tag = "nodes",
    request_body(content = Object, description = "A NodeSpec (owner optional) and an optional worker_token_ttl"),
    responses(
        (status = 201, description = "Created", body = RegisteredNode),
        (status = 422, description = "An invalid body or spec; nothing stored", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A scope is missing (the denial is audited)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let Value::Object(mut body) = body else {
        return Err(invalid_body("expected a NodeSpec object".into()));
    };
    let ttl = ttl_of(&mut body)?;
    if !body.contains_key("owner") {
        let owner = serde_json::to_value(NodeOwner::user_of(&p)).unwrap_or(Value::Null);
        body.insert("owner".into(), owner);
    }
    let spec: NodeSpec =
        serde_json::from_value(Value::Object(body)).map_err(|e| invalid_body(e.to_string()))?;
    let node = state.hive().register_node(&p, spec).await?;
    let issued = state
        .tokens()
        .issue_worker(state.hive(), &p, node.id, ttl)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(RegisteredNode {
            node,
            worker_token: issued.token,
            worker_token_id: issued.info.id,
        }),
    )
        .into_response())
}

/// `GET /api/nodes`: the nodes visible to the caller (system nodes and its
/// tenant's).
#[utoipa::path(
    operation_id = "list_nodes",
    get,
    path = "/api/nodes",
    tag = "nodes",
    responses((status = 200, description = "The engine's Node objects", body = [Object]))
)]
pub async fn list(
    State(state): State<ApiState>,
    Caller(p): Caller,
) -> Result<Json<Vec<Node>>, ApiError> {
    Ok(Json(state.hive().list_nodes(&p).await?))
}

/// `GET /api/nodes/{id}`.
#[utoipa::path(
    get,
    path = "/api/nodes/{id}",
    tag = "nodes",
    params(("id" = String, Path, description = "The node id")),
    responses(
        (status = 200, description = "OK", body = Object),
        (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_node(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Node>, ApiError> {
    let id: NodeId = parse_id("node", &id)?;
    Ok(Json(state.hive().get_node(&p, id).await?))
}

/// `DELETE /api/nodes/{id}`: removes a node; its leases are reclaimed at once.
#[utoipa::path(
    operation_id = "remove_node",
    delete,
    path = "/api/nodes/{id}",
    tag = "nodes",
    params(("id" = String, Path, description = "The node id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn remove(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: NodeId = parse_id("node", &id)?;
    state.hive().remove_node(&p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/nodes/{id}/drain`: the node keeps its leases, claims nothing new.
#[utoipa::path(
    operation_id = "drain_node",
    post,
    path = "/api/nodes/{id}/drain",
    tag = "nodes",
    params(("id" = String, Path, description = "The node id")),
    responses(
        (status = 200, description = "OK", body = Object),
        (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn drain(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Node>, ApiError> {
    let id: NodeId = parse_id("node", &id)?;
    Ok(Json(state.hive().drain_node(&p, id).await?))
}

/// A worker token request.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerTokenBody {
    /// How long it is valid (`30d`); forever when absent.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// An issued worker token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerToken {
    /// The token, shown this once.
    pub token: String,
    /// Its id (to revoke it).
    pub id: String,
}

/// `POST /api/nodes/{id}/worker-tokens`: another worker token for a node
/// (its owner, an operator or an admin of its tenant).
#[utoipa::path(
    post,
    path = "/api/nodes/{id}/worker-tokens",
    tag = "nodes",
    params(("id" = String, Path, description = "The node id")),
    request_body(content = Option<WorkerTokenBody>),
    responses(
        (status = 201, description = "Created", body = WorkerToken),
        (status = 403, description = "A scope is missing (the denial is audited)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn worker_token(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id: NodeId = parse_id("node", &id)?;
    let body: WorkerTokenBody = super::tasks::optional_body(&body)?;
    let ttl = match body.ttl {
        Some(s) => Some(
            parse_duration(&s).ok_or_else(|| invalid_body(format!("ttl {s:?}: not a duration")))?,
        ),
        None => None,
    };
    let issued = state
        .tokens()
        .issue_worker(state.hive(), &p, id, ttl)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(WorkerToken {
            token: issued.token,
            id: issued.info.id,
        }),
    )
        .into_response())
}

/// The node a worker token works; any other caller is refused by the
/// engine (and the refusal audited).
async fn own_node(state: &ApiState, p: &Principal) -> Result<NodeId, ApiError> {
    match p.worker_node() {
        Some(node) => Ok(node),
        None => Err(state
            .hive()
            .deny(
                p,
                hive::auth::Action::WorkNode,
                &hive::auth::Resource::System,
                "the worker protocol needs a worker token (POST /api/nodes issues one)",
            )
            .await
            .into()),
    }
}

/// A claim.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// At most this many tasks (capped by the node's free capacity; default 1).
    #[serde(default)]
    pub max: Option<u32>,
    /// Only tasks for these agents (any when empty).
    #[serde(default)]
    pub agents: Vec<String>,
    /// Also start them (scheduled and running in one step).
    #[serde(default)]
    pub start: bool,
    /// Wait this long for work when there is none (`20s`; capped at 25 s).
    #[serde(default)]
    pub wait: Option<String>,
}

/// One leased task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClaimedBody {
    /// The fencing token: present it with every start, heartbeat, log and
    /// report about this lease (`{task, attempt, lease}`).
    #[schema(value_type = Object)]
    pub token: LeaseToken,
    /// The task's tenant.
    pub tenant: String,
    /// The principal that submitted it.
    pub owner: String,
    /// What to run (the engine's `TaskSpec`: agent, input, labels, timeouts…).
    #[schema(value_type = Object)]
    pub spec: TaskSpec,
    /// Whether the claim also started it.
    pub started: bool,
    /// The task's last seq after the claim.
    pub last_seq: u64,
}

/// The answer to a claim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClaimAnswer {
    /// The leased tasks (none when the wait ran out).
    pub tasks: Vec<ClaimedBody>,
    /// When the earliest retry in its backoff becomes claimable (ms), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_due: Option<i64>,
}

/// `POST /api/worker/claim`: leases eligible tasks to the token's node; with
/// `wait`, a long poll that answers as soon as work arrives (woken by the
/// store's notifications).
#[utoipa::path(
    operation_id = "worker_claim",
    post,
    path = "/api/worker/claim",
    tag = "worker",
    request_body = ClaimBody,
    responses(
        (status = 200, description = "OK", body = ClaimAnswer),
        (status = 403, description = "Not a worker token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The node was removed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn claim(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiJson(body): ApiJson<ClaimBody>,
) -> Result<Json<ClaimAnswer>, ApiError> {
    let node = own_node(&state, &p).await?;
    let wait = state.long_poll(body.wait.as_deref())?;
    let options = ClaimOptions {
        max: body.max.unwrap_or(1).max(1),
        agents: body.agents.iter().map(AgentRef::new).collect(),
        start: body.start,
    };
    let hive = state.hive();
    let store = hive.store().clone();
    let deadline = Instant::now() + wait;
    loop {
        let claimed = hive.claim(&p, node, &options).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if !claimed.tasks.is_empty() || left.is_zero() {
            let tasks = claimed
                .tasks
                .into_iter()
                .map(|c| ClaimedBody {
                    token: c.token,
                    tenant: c.owner.tenant.to_string(),
                    owner: c.owner.principal.to_string(),
                    spec: (*c.spec).clone(),
                    started: c.started,
                    last_seq: c.last_seq,
                })
                .collect();
            return Ok(Json(ClaimAnswer {
                tasks,
                next_due: claimed.next_due.map(|t| t.as_millis()),
            }));
        }
        let until_due = claimed
            .next_due
            .map(|at| at.since(hive.clock().now()).max(Duration::from_millis(1)))
            .unwrap_or(left);
        tokio::select! {
            r = store.wait_for_work(claimed.epoch, left.min(until_due)) => r?,
            _ = state.stop().cancelled() => {
                return Ok(Json(ClaimAnswer { tasks: Vec::new(), next_due: None }));
            }
        }
    }
}

/// One item's answer in a batch: the ack, or the problem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ItemAnswer {
    /// The ack, when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<AckBody>,
    /// Why it was refused (`lease_lost` for a stale lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// The answers of a batch, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchAnswer {
    /// One per item.
    pub results: Vec<ItemAnswer>,
}

fn answers(out: Vec<hive::Result<hive::store::Ack>>) -> Json<BatchAnswer> {
    Json(BatchAnswer {
        results: out
            .into_iter()
            .map(|r| match r {
                Ok(ack) => ItemAnswer {
                    ack: Some(ack.into()),
                    problem: None,
                },
                Err(e) => ItemAnswer {
                    ack: None,
                    problem: Some(*ApiError::from(e).0),
                },
            })
            .collect(),
    })
}

/// Leases to start.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// Their fencing tokens.
    #[schema(value_type = [Object])]
    pub tokens: Vec<LeaseToken>,
}

/// `POST /api/worker/start`: starts claimed tasks (scheduled → running).
#[utoipa::path(
    operation_id = "worker_start",
    post,
    path = "/api/worker/start",
    tag = "worker",
    request_body = StartBody,
    responses((status = 200, description = "OK", body = BatchAnswer))
)]
pub async fn start(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiJson(body): ApiJson<StartBody>,
) -> Result<Json<BatchAnswer>, ApiError> {
    own_node(&state, &p).await?;
    Ok(answers(state.hive().start(&p, &body.tokens).await?))
}

/// One heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Beat {
    /// The lease.
    #[schema(value_type = Object)]
    pub token: LeaseToken,
    /// The handler's progress, if any.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub progress: Option<Value>,
}

/// Heartbeats.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    /// One per running lease.
    pub beats: Vec<Beat>,
}

/// `POST /api/worker/heartbeat`: heartbeats running leases; a `lease_lost`
/// answer tells the worker to stop that attempt.
#[utoipa::path(
    operation_id = "worker_heartbeat",
    post,
    path = "/api/worker/heartbeat",
    tag = "worker",
    request_body = HeartbeatBody,
    responses((status = 200, description = "OK", body = BatchAnswer))
)]
pub async fn heartbeat(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> Result<Json<BatchAnswer>, ApiError> {
    own_node(&state, &p).await?;
    let beats = body
        .beats
        .into_iter()
        .map(|b| (b.token, b.progress))
        .collect();
    Ok(answers(state.hive().heartbeat(&p, beats).await?))
}

/// One log line.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogItem {
    /// The lease.
    #[schema(value_type = Object)]
    pub token: LeaseToken,
    /// The stream (`stdout`, `stderr`…).
    pub stream: String,
    /// The line.
    pub line: String,
}

/// Log lines.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogBody {
    /// In order.
    pub lines: Vec<LogItem>,
}

/// `POST /api/worker/log`: appends log lines to leased tasks, in order.
#[utoipa::path(
    operation_id = "worker_log",
    post,
    path = "/api/worker/log",
    tag = "worker",
    request_body = LogBody,
    responses((status = 200, description = "OK", body = BatchAnswer))
)]
pub async fn log(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiJson(body): ApiJson<LogBody>,
) -> Result<Json<BatchAnswer>, ApiError> {
    own_node(&state, &p).await?;
    let mut out = Vec::with_capacity(body.lines.len());
    for item in body.lines {
        out.push(
            state
                .hive()
                .log(&p, item.token, &item.stream, &item.line)
                .await,
        );
    }
    Ok(answers(out))
}

/// Reports.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// Each `{token, outcome: "success", output}` or `{token, outcome:
    /// "failure", error: {code, message, …}}`.
    #[schema(value_type = [Object])]
    pub reports: Vec<Report>,
}

/// `POST /api/worker/report`: reports outcomes. A duplicate of an accepted
/// report gets the same answer; a stale lease gets `lease_lost`.
#[utoipa::path(
    operation_id = "worker_report",
    post,
    path = "/api/worker/report",
    tag = "worker",
    request_body = ReportBody,
    responses((status = 200, description = "OK", body = BatchAnswer))
)]
pub async fn report(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiJson(body): ApiJson<ReportBody>,
) -> Result<Json<BatchAnswer>, ApiError> {
    own_node(&state, &p).await?;
    Ok(answers(state.hive().report(&p, body.reports).await?))
}

/// `POST /api/worker/node-heartbeat`: the node's sign of life while it has
/// nothing to heartbeat (a lost node is revived).
#[utoipa::path(
    post,
    path = "/api/worker/node-heartbeat",
    tag = "worker",
    responses((status = 200, description = "The node", body = Object))
)]
pub async fn node_heartbeat(
    State(state): State<ApiState>,
    Caller(p): Caller,
) -> Result<Json<Node>, ApiError> {
    let node = own_node(&state, &p).await?;
    Ok(Json(state.hive().node_heartbeat(&p, node).await?))
}
