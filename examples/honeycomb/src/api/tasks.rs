//! `/api/tasks`: submit, read (the fast path with ETag and long poll), list,
//! cancel (one, or many by filter), events and logs as SSE, diagnostics.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hive::prelude::*;
use hive::store::{Ack, Submitted};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::sse::{self, Item, Source};
use super::{ApiError, ApiJson, ApiQuery, ApiState, Caller, Problem, parse_id};

/// A task as the fast path shows it: state, attempt, timings and the seq of
/// its last event; the output and error inline up to a size, else linked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskSnapshot {
    /// The task id.
    pub id: String,
    /// `pending`, `scheduled`, `running`, `succeeded`, `failed`,
    /// `cancelled` or `timed_out`.
    pub state: String,
    /// Attempts started so far.
    pub attempt: u32,
    /// The agent it runs.
    pub agent: String,
    /// Its tenant.
    pub tenant: String,
    /// The principal that submitted it.
    pub owner: String,
    /// The node that holds or held it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The seq of its last event (poll with `after_seq` = this).
    pub last_seq: u64,
    /// Submitted at (milliseconds since the UNIX epoch).
    pub created_at: i64,
    /// Last changed at (ms).
    pub updated_at: i64,
    /// Claimable from (ms; later than now during a retry backoff).
    pub available_at: i64,
    /// Its labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The output, once succeeded (when small enough).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// The error, once failed (when small enough).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// Where the output or error is when it is too large to show inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_link: Option<String>,
}

impl TaskSnapshot {
    /// The snapshot of `task`, with results up to `inline` bytes inline.
    pub fn of(task: &Task, inline: usize) -> TaskSnapshot {
        let mut snap = TaskSnapshot {
            id: task.id.to_string(),
            state: task.state.as_str().to_owned(),
            attempt: task.attempt,
            agent: task.spec.agent.as_str().to_owned(),
            tenant: task.owner.tenant.to_string(),
            owner: task.owner.principal.to_string(),
            node: task.node.map(|n| n.to_string()),
            last_seq: task.last_seq,
            created_at: task.created_at.as_millis(),
            updated_at: task.updated_at.as_millis(),
            available_at: task.available_at.as_millis(),
            labels: task.spec.labels.clone(),
            output: None,
            error: None,
            result_link: None,
        };
        let output = task.output.clone();
        let error = task
            .error
            .as_ref()
            .and_then(|e| serde_json::to_value(e).ok());
        let size = output.as_ref().map_or(0, json_len) + error.as_ref().map_or(0, json_len);
        if size > inline {
            snap.result_link = Some(format!("/api/tasks/{}/result", task.id));
        } else {
            snap.output = output;
            snap.error = error;
        }
        snap
    }
}

fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(0, |b| b.len())
}

/// The answer to one submitted task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubmittedTask {
    /// The task id (the existing task's, for a reused idempotency key).
    pub id: String,
    /// `false` when an existing task was returned for the idempotency key.
    pub created: bool,
    /// Its last seq: follow its events after it to miss nothing.
    pub last_seq: u64,
}

impl From<Submitted> for SubmittedTask {
    fn from(s: Submitted) -> Self {
        SubmittedTask {
            id: s.id.to_string(),
            created: s.created,
            last_seq: s.last_seq,
        }
    }
}

/// The answer to a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubmittedBatch {
    /// One answer per spec, in order.
    pub tasks: Vec<SubmittedTask>,
}

/// `Idempotency-Key`, checked: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters")
        })?;
    Ok(Some(key.to_owned()))
}

/// `POST /api/tasks`: one task spec (the same JSON as Rust and Python), or
/// `{"tasks": [spec, …]}` for a batch (all or nothing). `Idempotency-Key`
/// sets the key of a single spec that has none (`<key>/<index>` for each
/// spec of a batch); a reused key answers the existing task with `200`.
#[utoipa::path(
    operation_id = "submit_task",
    post,
    path = "/api/tasks",
    tag = "tasks",
    request_body(content = Object, description = "A TaskSpec, or {\"tasks\": [TaskSpec…]}"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried submission answer the task it created")),
    responses(
        (status = 201, description = "Created (a batch: at least one new task)", body = SubmittedTask),
        (status = 200, description = "The existing task for the idempotency key (or a batch answer)", body = SubmittedBatch),
        (status = 422, description = "An invalid spec, naming the field; nothing stored", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "The request cannot be read (a bad id, query or JSON)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No token, or a bad, expired or revoked one", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A scope is missing (the denial is audited)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn submit(
    State(state): State<ApiState>,
    Caller(p): Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let batch = body
        .as_object()
        .is_some_and(|o| o.len() == 1 && o.contains_key("tasks"));
    if batch {
        let specs: Vec<TaskSpec> = serde_json::from_value(body["tasks"].clone())
            .map_err(|e| invalid_body(format!("tasks: {e}")))?;
        let specs = specs
            .into_iter()
            .enumerate()
            .map(|(i, mut spec)| {
                if spec.idempotency_key.is_none()
                    && let Some(k) = &key
                {
                    spec.idempotency_key = Some(format!("{k}/{i}"));
                }
                spec
            })
            .collect();
        let out = state.hive().submit_batch(&p, specs).await?;
        let status = if out.iter().any(|s| s.created) {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let tasks = out.into_iter().map(SubmittedTask::from).collect();
        return Ok((status, Json(SubmittedBatch { tasks })).into_response());
    }
    let mut spec: TaskSpec =
        serde_json::from_value(body).map_err(|e| invalid_body(e.to_string()))?;
    if let Some(k) = key {
        match &spec.idempotency_key {
            None => spec.idempotency_key = Some(k),
            Some(own) if *own == k => {}
            Some(_) => {
                return Err(ApiError::from(hive::Error::InvalidSpec {
                    field: "idempotency_key".into(),
                    message: "differs from the Idempotency-Key header; send one".into(),
                }));
            }
        }
    }
    let submitted = state.hive().submit(&p, spec).await?;
    let location = format!("/api/tasks/{}", submitted.id);
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(SubmittedTask::from(submitted))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

pub(crate) fn invalid_body(detail: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
        "Invalid body",
        detail,
    )
}

/// The query of the fast path.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PollQuery {
    /// Answer once the task's last seq is above this (a long poll).
    pub after_seq: Option<u64>,
    /// How long a long poll may wait (`25s`, `500ms`; capped at 25 s).
    pub wait: Option<String>,
}

/// Whether `If-None-Match` names `etag` (weak comparison).
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    let Some(v) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let ours = opaque(etag);
    v.split(',').any(|t| t.trim() == "*" || opaque(t) == ours)
}

/// `GET /api/tasks/{id}`: the fast path — one store read, a small snapshot,
/// a weak `ETag` from `(id, last_seq)` (`If-None-Match` → `304`), and a long
/// poll with `?after_seq=N&wait=25s` that answers as soon as the task has an
/// event after `N` (woken by the store's notifications) or ends.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(("id" = String, Path, description = "The task id"), PollQuery,
        ("If-None-Match" = Option<String>, Header, description = "A previous ETag")),
    responses(
        (status = 200, description = "The task", body = TaskSnapshot),
        (status = 304, description = "Unchanged since the ETag"),
        (status = 404, description = "No such task in the caller's tenant", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "The request cannot be read (a bad id, query or JSON)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No token, or a bad, expired or revoked one", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_task(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PollQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id: TaskId = parse_id("task", &id)?;
    let wait = state.long_poll(q.wait.as_deref())?;
    let mut task = state.hive().get_task(&p, id).await?;
    if let Some(after) = q.after_seq
        && !wait.is_zero()
    {
        let store = state.hive().store().clone();
        let deadline = Instant::now() + wait;
        while task.last_seq <= after && !task.state.is_terminal() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::select! {
                r = store.wait_for_events(id, task.last_seq, left) => r?,
                _ = state.stop().cancelled() => break,
            }
            task = store.get_task(id).await?.ok_or_else(|| {
                ApiError::from(hive::Error::NotFound {
                    kind: "task",
                    id: id.to_string(),
                })
            })?;
        }
    }
    let etag = format!("W/\"{}-{}\"", task.id, task.last_seq);
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("W/\"\""));
    let cache = HeaderValue::from_static("no-cache");
    if none_match(&headers, &etag) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag_value), (header::CACHE_CONTROL, cache)],
        )
            .into_response());
    }
    let snap = TaskSnapshot::of(&task, state.limits().inline_bytes);
    Ok((
        [(header::ETAG, etag_value), (header::CACHE_CONTROL, cache)],
        Json(snap),
    )
        .into_response())
}

/// A task's output and error, however large.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskResult {
    /// The task id.
    pub id: String,
    /// Its state.
    pub state: String,
    /// The output, once succeeded.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// The error, once failed.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

/// `GET /api/tasks/{id}/result`: the whole output and error (what a
/// snapshot links to when they are too large to show inline).
#[utoipa::path(
    get,
    path = "/api/tasks/{id}/result",
    tag = "tasks",
    params(("id" = String, Path, description = "The task id")),
    responses(
        (status = 200, description = "OK", body = TaskResult),
        (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_output(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<TaskResult>, ApiError> {
    let id: TaskId = parse_id("task", &id)?;
    let task = state.hive().get_task(&p, id).await?;
    Ok(Json(TaskResult {
        id: task.id.to_string(),
        state: task.state.as_str().to_owned(),
        output: task.output,
        error: task.error.and_then(|e| serde_json::to_value(e).ok()),
    }))
}

/// Filters of a task listing (and of a bulk cancel).
#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TaskFilter {
    /// States, comma-separated (`pending,running`).
    #[serde(default)]
    pub state: Option<String>,
    /// Only this agent.
    #[serde(default)]
    pub agent: Option<String>,
    /// Only tasks of this principal.
    #[serde(default)]
    pub owner: Option<String>,
    /// Required labels, `k=v` comma-separated.
    #[serde(default)]
    pub labels: Option<String>,
}

impl TaskFilter {
    fn query(&self) -> Result<TaskQuery, ApiError> {
        let mut q = TaskQuery::default();
        if let Some(states) = &self.state {
            for s in states.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                q.states.push(s.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "state={s:?}: not a task state (pending, scheduled, running, succeeded, failed, cancelled, timed_out)"
                    ))
                })?);
            }
        }
        q.agent = self.agent.as_deref().map(AgentRef::new);
        q.owner = self.owner.clone().map(Into::into);
        if let Some(labels) = &self.labels {
            for pair in labels.split(',').filter(|s| !s.is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    ApiError::bad_request(format!("labels: {pair:?} is not key=value"))
                })?;
                q.labels.insert(k.to_owned(), v.to_owned());
            }
        }
        Ok(q)
    }
}

/// A listing's paging.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// A page of tasks, ordered by id (submission order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskPage {
    /// The tasks.
    pub items: Vec<TaskSnapshot>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(flatten)]
    filter: TaskFilter,
    after: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/tasks`: the caller's tenant's tasks, filtered, in cursor pages.
#[utoipa::path(
    operation_id = "list_tasks",
    get,
    path = "/api/tasks",
    tag = "tasks",
    params(TaskFilter, PageQuery),
    responses(
        (status = 200, description = "OK", body = TaskPage),
        (status = 400, description = "The request cannot be read (a bad id, query or JSON)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiQuery(q): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<TaskPage>, ApiError> {
    let q = list_query(q)?;
    let mut query = q.filter.query()?;
    query.after = q
        .after
        .as_deref()
        .map(|a| parse_id("task", a))
        .transpose()?;
    query.limit = q.limit;
    let page = state.hive().list_tasks(&p, &query).await?;
    let inline = state.limits().inline_bytes;
    Ok(Json(TaskPage {
        items: page
            .items
            .iter()
            .map(|t| TaskSnapshot::of(t, inline))
            .collect(),
        next: page.next.map(|n| n.to_string()),
    }))
}

/// The listing query from its pairs (an unknown parameter is named).
fn list_query(pairs: Vec<(String, String)>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery::default();
    for (k, v) in pairs {
        match k.as_str() {
            "state" => q.filter.state = Some(v),
            "agent" => q.filter.agent = Some(v),
            "owner" => q.filter.owner = Some(v),
            "labels" => q.filter.labels = Some(v),
            "after" => q.after = Some(v),
            "limit" => {
                q.limit = Some(
                    v.parse()
                        .map_err(|_| ApiError::bad_request(format!("limit={v:?}: not a number")))?,
                )
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?} (state, agent, owner, labels, after, limit)"
                )));
            }
        }
    }
    Ok(q)
}

/// Why a task is cancelled.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Recorded in the `cancelled` event and the audit trail.
    #[serde(default)]
    pub reason: Option<String>,
}

/// An optional JSON body (empty means the default).
pub(crate) fn optional_body<T: Default + serde::de::DeserializeOwned>(
    bytes: &Bytes,
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::bad_request(format!("the body is not JSON: {e}"))
        } else {
            invalid_body(e.to_string())
        }
    })
}

/// The answer to an accepted transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AckBody {
    /// The seq of the event it appended.
    pub seq: u64,
    /// The task's state after it.
    pub state: String,
}

impl From<Ack> for AckBody {
    fn from(a: Ack) -> Self {
        AckBody {
            seq: a.seq,
            state: a.state.as_str().to_owned(),
        }
    }
}

/// `POST /api/tasks/{id}/cancel`: cancels a task that has not ended (`409`
/// once it has).
#[utoipa::path(
    operation_id = "cancel_task",
    post,
    path = "/api/tasks/{id}/cancel",
    tag = "tasks",
    params(("id" = String, Path, description = "The task id")),
    request_body(content = Option<CancelBody>),
    responses(
        (status = 200, description = "OK", body = AckBody),
        (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task already ended", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A scope is missing (the denial is audited)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<AckBody>, ApiError> {
    let id: TaskId = parse_id("task", &id)?;
    let body: CancelBody = optional_body(&body)?;
    let reason = body.reason.unwrap_or_else(|| "cancelled over HTTP".into());
    let ack = state.hive().cancel(&p, id, reason).await?;
    Ok(Json(ack.into()))
}

/// A bulk cancel.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkCancel {
    /// Which tasks (only those that have not ended are cancelled).
    #[serde(default)]
    pub filter: TaskFilter,
    /// Only count and list what would be cancelled.
    #[serde(default)]
    pub dry_run: bool,
    /// At most this many (default and ceiling 10 000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Recorded with each cancellation.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One task a bulk cancel could not cancel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BulkFailure {
    /// The task.
    pub id: String,
    /// Why.
    pub problem: Problem,
}

/// The answer to a bulk cancel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BulkCancelled {
    /// Whether this was a dry run (nothing cancelled).
    pub dry_run: bool,
    /// The unfinished tasks that matched.
    pub matched: Vec<String>,
    /// The ones cancelled (empty on a dry run).
    pub cancelled: Vec<String>,
    /// The ones that could not be (ended meanwhile, refused…).
    pub failed: Vec<BulkFailure>,
    /// Whether more tasks matched than `limit`.
    pub truncated: bool,
}

/// The most tasks one bulk cancel touches.
const BULK_MAX: usize = 10_000;

/// `POST /api/tasks/cancel`: cancels the caller's tenant's unfinished tasks
/// that match a filter, or with `dry_run` lists them. Each cancellation is
/// authorized and audited as one `task.cancel`.
#[utoipa::path(
    post,
    path = "/api/tasks/cancel",
    tag = "tasks",
    request_body = BulkCancel,
    responses(
        (status = 200, description = "OK", body = BulkCancelled),
        (status = 400, description = "The request cannot be read (a bad id, query or JSON)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn bulk_cancel(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiJson(body): ApiJson<BulkCancel>,
) -> Result<Json<BulkCancelled>, ApiError> {
    let limit = body
        .limit
        .map_or(BULK_MAX, |l| (l as usize).clamp(1, BULK_MAX));
    let mut query = body.filter.query()?;
    if query.states.is_empty() {
        query.states = vec![TaskState::Pending, TaskState::Scheduled, TaskState::Running];
    }
    query.states.retain(|s| !s.is_terminal());
    let mut matched = Vec::new();
    let mut truncated = false;
    if !query.states.is_empty() {
        query.limit = Some(1000);
        loop {
            let page = state.hive().list_tasks(&p, &query).await?;
            for t in page.items {
                if matched.len() == limit {
                    truncated = true;
                    break;
                }
                matched.push(t.id);
            }
            match page.next {
                Some(next) if !truncated => query.after = Some(next),
                _ => break,
            }
        }
    }
    let mut cancelled = Vec::new();
    let mut failed = Vec::new();
    if !body.dry_run {
        let reason = body
            .reason
            .unwrap_or_else(|| "bulk cancel over HTTP".into());
        for id in &matched {
            match state.hive().cancel(&p, *id, reason.clone()).await {
                Ok(_) => cancelled.push(id.to_string()),
                Err(e) => failed.push(BulkFailure {
                    id: id.to_string(),
                    problem: *ApiError::from(e).0,
                }),
            }
        }
    }
    Ok(Json(BulkCancelled {
        dry_run: body.dry_run,
        matched: matched.iter().map(ToString::to_string).collect(),
        cancelled,
        failed,
        truncated,
    }))
}

/// Where a stream starts.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this id (for clients that cannot set `Last-Event-ID`).
    pub last_event_id: Option<String>,
}

/// A task's events as stream items (the API's and the console's streams).
pub(crate) struct TaskEvents {
    sub: TaskSubscription,
}

impl TaskEvents {
    pub(crate) fn new(sub: TaskSubscription) -> TaskEvents {
        TaskEvents { sub }
    }
}

impl Source for TaskEvents {
    async fn next_item(&mut self) -> Option<hive::Result<Item>> {
        let event = match self.sub.next().await? {
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        let terminal = event.kind.is_terminal();
        Some(
            serde_json::to_value(&event)
                .map_err(json_error)
                .map(|data| Item {
                    id: event.seq,
                    data,
                    terminal,
                }),
        )
    }
}

fn json_error(e: serde_json::Error) -> hive::Error {
    hive::Error::Backend {
        message: format!("an event does not serialize: {e}"),
        source: None,
    }
}

/// `GET /api/tasks/{id}/events`: the task's events as SSE, `id:` = seq,
/// from the start or after `Last-Event-ID` / `?last_event_id=`, live until
/// the terminal event, then an `end` event. Each event's data is the
/// engine's `TaskEvent` JSON.
#[utoipa::path(
    operation_id = "task_events",
    get,
    path = "/api/tasks/{id}/events",
    tag = "tasks",
    params(("id" = String, Path, description = "The task id"), StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this seq")),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many streams open for this token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn events(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id: TaskId = parse_id("task", &id)?;
    let after = sse::resume_from(&headers, q.last_event_id.as_deref(), 0)?;
    let sub = state.hive().subscribe(&p, id, after).await?;
    let slot = state.open_stream(&p)?;
    Ok(sse::respond(
        &state,
        slot,
        sse::events(TaskEvents { sub }, after),
    ))
}

/// One log line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// Its event's seq.
    pub seq: u64,
    /// When it was stored (ms).
    pub at: i64,
    /// The attempt that wrote it (0 before the first start).
    pub attempt: u32,
    /// Its stream (`stdout`, `stderr`…).
    pub stream: String,
    /// The line.
    pub line: String,
}

/// A page of log lines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogPage {
    /// The lines, in order.
    pub lines: Vec<LogLine>,
    /// Pass as `after_seq` for the next page; absent when nothing more is
    /// stored now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after_seq: Option<u64>,
    /// Whether this page was cut at the size cap (more follow).
    pub truncated: bool,
    /// Whether the task has ended (no line will be added).
    pub ended: bool,
}

/// The log query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Lines after this seq.
    pub after_seq: Option<u64>,
    /// At most this many lines (default 1000, at most 10 000).
    pub limit: Option<usize>,
    /// Follow as SSE (`text/event-stream`) instead of a page.
    pub follow: Option<bool>,
    /// Resume a follow after this id.
    pub last_event_id: Option<String>,
}

/// The most bytes of lines in one page.
const LOG_PAGE_BYTES: usize = 1024 * 1024;
/// The most events a page reads to find its lines.
const LOG_SCAN: u64 = 1_000_000;

/// The log lines after `after` (up to `limit` lines and
/// [`LOG_PAGE_BYTES`]), each with its attempt, reading the task's events from
/// the start (a log line carries no attempt; a `started` event sets it).
/// Returns the lines and, when the page was cut, the seq to resume after.
async fn read_logs(
    hive: &Hive,
    p: &Principal,
    id: TaskId,
    after: u64,
    limit: usize,
) -> Result<(Vec<LogLine>, Option<u64>), ApiError> {
    let mut attempt = 0;
    let mut lines = Vec::new();
    let mut bytes = 0;
    let mut cursor = 0;
    while cursor < LOG_SCAN {
        let batch = hive.read_events(p, id, cursor, 1000).await?;
        if batch.is_empty() {
            break;
        }
        for e in batch {
            match e.kind {
                EventKind::Started { attempt: a, .. } => attempt = a,
                EventKind::Log { stream, line } if e.seq > after => {
                    if lines.len() == limit || bytes + line.len() > LOG_PAGE_BYTES {
                        return Ok((lines, Some(e.seq - 1)));
                    }
                    bytes += line.len();
                    lines.push(LogLine {
                        seq: e.seq,
                        at: e.at.as_millis(),
                        attempt,
                        stream,
                        line,
                    });
                }
                _ => {}
            }
            cursor = e.seq;
        }
    }
    Ok((lines, None))
}

struct LogEvents {
    sub: TaskSubscription,
    attempt: u32,
}

impl Source for LogEvents {
    async fn next_item(&mut self) -> Option<hive::Result<Item>> {
        loop {
            let event = match self.sub.next().await? {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            let terminal = event.kind.is_terminal();
            let name = event.kind.name();
            let line = match event.kind {
                EventKind::Started { attempt, .. } => {
                    self.attempt = attempt;
                    None
                }
                EventKind::Log { stream, line } => Some(LogLine {
                    seq: event.seq,
                    at: event.at.as_millis(),
                    attempt: self.attempt,
                    stream,
                    line,
                }),
                _ => None,
            };
            let data = match line {
                Some(l) => serde_json::to_value(&l).map_err(json_error),
                // The terminal event is sent too (as the stream's end).
                None if terminal => Ok(serde_json::json!({
                    "seq": event.seq,
                    "kind": name,
                    "terminal": true,
                })),
                None => continue,
            };
            return Some(data.map(|data| Item {
                id: event.seq,
                data,
                terminal,
            }));
        }
    }
}

/// `GET /api/tasks/{id}/logs`: the log lines, each with its attempt, in
/// cursor pages capped at 1 MiB (`truncated` says a page was cut); with
/// `?follow=true` an SSE stream of new lines (resumable like the events),
/// ending after the task's terminal event.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}/logs",
    tag = "tasks",
    params(("id" = String, Path, description = "The task id"), LogQuery),
    responses(
        (status = 200, description = "A page (or, with follow, an event stream)", body = LogPage),
        (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn logs(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id: TaskId = parse_id("task", &id)?;
    let hive = state.hive();
    if q.follow.unwrap_or(false) {
        let default = q.after_seq.unwrap_or(0);
        let after = sse::resume_from(&headers, q.last_event_id.as_deref(), default)?;
        // The attempt at `after` (a resumed stream's lines keep theirs).
        let attempt = attempt_at(hive, &p, id, after).await?.unwrap_or(0);
        let sub = hive.subscribe(&p, id, after).await?;
        let slot = state.open_stream(&p)?;
        return Ok(sse::respond(
            &state,
            slot,
            sse::events(LogEvents { sub, attempt }, after),
        ));
    }
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let after = q.after_seq.unwrap_or(0);
    let task = hive.get_task(&p, id).await?;
    let (lines, next_after_seq) = read_logs(hive, &p, id, after, limit).await?;
    Ok(Json(LogPage {
        lines,
        next_after_seq,
        truncated: next_after_seq.is_some(),
        ended: task.state.is_terminal(),
    })
    .into_response())
}

/// The attempt in force at `seq`.
async fn attempt_at(
    hive: &Hive,
    p: &Principal,
    id: TaskId,
    seq: u64,
) -> Result<Option<u32>, ApiError> {
    let mut attempt = None;
    let mut cursor = 0;
    while cursor < seq {
        let batch = hive.read_events(p, id, cursor, 1000).await?;
        if batch.is_empty() {
            break;
        }
        for e in batch {
            if e.seq > seq {
                return Ok(attempt);
            }
            cursor = e.seq;
            if let EventKind::Started { attempt: a, .. } = e.kind {
                attempt = Some(a);
            }
        }
    }
    Ok(attempt)
}

/// `GET /api/tasks/{id}/diagnostics`: why a task is not running yet — a
/// retry backoff, no ready node, no eligible node (owner or labels), the
/// eligible ones at capacity — or that it is claimable now.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}/diagnostics",
    tag = "tasks",
    params(("id" = String, Path, description = "The task id")),
    responses(
        (status = 200, description = "The engine's diagnosis (hive::TaskDiagnosis)", body = Object),
        (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn diagnostics(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<TaskDiagnosis>, ApiError> {
    let id: TaskId = parse_id("task", &id)?;
    Ok(Json(state.hive().diagnose_task(&p, id).await?))
}
