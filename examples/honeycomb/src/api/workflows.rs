//! `/api/workflows`: submit, read (every step with its tasks), list, cancel,
//! events as SSE.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hive::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::sse::{self, Item, Source};
use super::tasks::{CancelBody, StreamQuery, TaskSnapshot, invalid_body, optional_body};
use super::{ApiError, ApiJson, ApiQuery, ApiState, Caller, Problem, parse_id};

/// The answer to a workflow submission.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubmittedWorkflow {
    /// The workflow id (the existing one for a reused idempotency key).
    pub id: String,
    /// `false` when an existing workflow was returned for the key.
    pub created: bool,
}

/// `POST /api/workflows`: a workflow spec, the same JSON as Rust and Python.
/// `Idempotency-Key` sets the spec's key when it has none.
#[utoipa::path(
    operation_id = "submit_workflow",
    post,
    path = "/api/workflows",
    tag = "workflows",
    request_body(content = Object, description = "A WorkflowSpec"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried submission answer the workflow it created")),
    responses(
        (status = 201, description = "Created", body = SubmittedWorkflow),
        (status = 200, description = "The existing workflow for the idempotency key", body = SubmittedWorkflow),
        (status = 422, description = "An invalid body or spec; nothing stored", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn submit(
    State(state): State<ApiState>,
    Caller(p): Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let mut spec: WorkflowSpec =
        serde_json::from_value(body).map_err(|e| invalid_body(e.to_string()))?;
    if let Some(v) = headers.get("idempotency-key") {
        let key = v
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 255)
            .ok_or_else(|| {
                ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters")
            })?;
        if spec.idempotency_key.is_none() {
            spec.idempotency_key = Some(key.to_owned());
        }
    }
    let out = state.hive().submit_workflow(&p, spec).await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (
        status,
        Json(SubmittedWorkflow {
            id: out.id.to_string(),
            created: out.created,
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/workflows/{}", out.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// One step with its tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepBody {
    /// The engine's view of the step (id, state, attempts, timings, output,
    /// error, skip reason).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub step: StepView,
    /// Its tasks, each as the fast path shows it.
    pub task_states: Vec<TaskSnapshot>,
}

/// A workflow with every step and the states of its tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowBody {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its tenant.
    pub tenant: String,
    /// Who submitted it.
    pub owner: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    #[schema(value_type = String)]
    pub state: WorkflowState,
    /// Submitted at (ms).
    pub created_at: i64,
    /// Ended at (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    /// The seq of its last event.
    pub last_seq: u64,
    /// Every step, in spec order.
    pub steps: Vec<StepBody>,
}

/// `GET /api/workflows/{id}`: every step with its tasks, their states,
/// attempts, timings, outputs or errors.
#[utoipa::path(
    get,
    path = "/api/workflows/{id}",
    tag = "workflows",
    params(("id" = String, Path, description = "The workflow id")),
    responses(
        (status = 200, description = "OK", body = WorkflowBody),
        (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_workflow(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<WorkflowBody>, ApiError> {
    let id: WorkflowId = parse_id("workflow", &id)?;
    let view = state.hive().get_workflow(&p, id).await?;
    let ids: Vec<TaskId> = view
        .steps
        .iter()
        .flat_map(|s| s.tasks.iter().copied())
        .collect();
    let tasks = state.hive().store().get_tasks(&ids).await?;
    let inline = state.limits().inline_bytes;
    let steps = view
        .steps
        .into_iter()
        .map(|step| {
            let task_states = step
                .tasks
                .iter()
                .filter_map(|id| tasks.iter().find(|t| t.id == *id))
                .map(|t| TaskSnapshot::of(t, inline))
                .collect();
            StepBody { step, task_states }
        })
        .collect();
    Ok(Json(WorkflowBody {
        id: view.id.to_string(),
        name: view.name,
        tenant: view.owner.tenant.to_string(),
        owner: view.owner.principal.to_string(),
        state: view.state,
        created_at: view.created_at.as_millis(),
        ended_at: view.ended_at.map(|t| t.as_millis()),
        last_seq: view.last_seq,
        steps,
    }))
}

/// A workflow listing's query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WorkflowListQuery {
    /// States, comma-separated (`running,failed`).
    pub state: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// `GET /api/workflows`: the caller's tenant's workflows, in cursor pages
/// (the engine's `WorkflowPage`).
#[utoipa::path(
    operation_id = "list_workflows",
    get,
    path = "/api/workflows",
    tag = "workflows",
    params(WorkflowListQuery),
    responses(
        (status = 200, description = "A page: {items, next}", body = Object),
        (status = 400, description = "The request cannot be read (a bad id, query or JSON)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiQuery(q): ApiQuery<WorkflowListQuery>,
) -> Result<Json<hive::workflow::WorkflowPage>, ApiError> {
    let mut query = WorkflowQuery::default();
    if let Some(states) = &q.state {
        for s in states.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            query
                .states
                .push(serde_json::from_value(Value::String(s.to_owned())).map_err(
                |_| {
                    ApiError::bad_request(format!(
                        "state={s:?}: not a workflow state (running, succeeded, failed, cancelled)"
                    ))
                },
            )?);
        }
    }
    query.after = q
        .after
        .as_deref()
        .map(|a| parse_id("workflow", a))
        .transpose()?;
    query.limit = q.limit;
    Ok(Json(state.hive().list_workflows(&p, &query).await?))
}

/// `POST /api/workflows/{id}/cancel`: cancels a running workflow (`409`
/// once it ended).
#[utoipa::path(
    operation_id = "cancel_workflow",
    post,
    path = "/api/workflows/{id}/cancel",
    tag = "workflows",
    params(("id" = String, Path, description = "The workflow id")),
    request_body(content = Option<CancelBody>),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Conflict with the current state", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let id: WorkflowId = parse_id("workflow", &id)?;
    let body: CancelBody = optional_body(&body)?;
    let reason = body.reason.unwrap_or_else(|| "cancelled over HTTP".into());
    state.hive().cancel_workflow(&p, id, reason).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A workflow's events as stream items (the API's and the console's).
pub(crate) struct WorkflowEvents {
    sub: WorkflowSubscription,
}

impl WorkflowEvents {
    pub(crate) fn new(sub: WorkflowSubscription) -> WorkflowEvents {
        WorkflowEvents { sub }
    }
}

impl Source for WorkflowEvents {
    async fn next_item(&mut self) -> Option<hive::Result<Item>> {
        let event = match self.sub.next().await? {
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        let terminal = event.kind.is_terminal();
        Some(
            serde_json::to_value(&event)
                .map_err(|e| hive::Error::Backend {
                    message: format!("a workflow event does not serialize: {e}"),
                    source: None,
                })
                .map(|data| Item {
                    id: event.seq,
                    data,
                    terminal,
                }),
        )
    }
}

/// `GET /api/workflows/{id}/events`: the workflow's events as SSE (`id:` =
/// seq, resumable), ending with `end` after `finished`.
#[utoipa::path(
    operation_id = "workflow_events",
    get,
    path = "/api/workflows/{id}/events",
    tag = "workflows",
    params(("id" = String, Path, description = "The workflow id"), StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this seq")),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn events(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id: WorkflowId = parse_id("workflow", &id)?;
    let after = sse::resume_from(&headers, q.last_event_id.as_deref(), 0)?;
    let sub = state.hive().subscribe_workflow(&p, id, after).await?;
    let slot = state.open_stream(&p)?;
    Ok(sse::respond(
        &state,
        slot,
        sse::events(WorkflowEvents { sub }, after),
    ))
}
