//! The tenant feed and named consumers, API tokens, the audit trail.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hive::iam::{AuditPage, TokenInfo, TokenRequest, VerifyReport};
use hive::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::sse::{self, Item, Source};
use super::tasks::StreamQuery;
use super::{ApiError, ApiJson, ApiQuery, ApiState, Caller, Problem, parse_id};

/// A feed page's query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Events after this cursor (0: from the start).
    pub cursor: Option<u64>,
    /// At most this many (default 100, at most 10 000).
    pub limit: Option<usize>,
}

/// `GET /api/feed`: one page of the caller's tenant's feed (every task
/// event, each with its cursor).
#[utoipa::path(
    get,
    path = "/api/feed",
    tag = "feed",
    params(FeedQuery),
    responses(
        (status = 200, description = "FeedEvents: {cursor, event}", body = [Object]),
        (status = 410, description = "The cursor is older than what is kept", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn feed(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiQuery(q): ApiQuery<FeedQuery>,
) -> Result<Json<Vec<FeedEvent>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    Ok(Json(
        state
            .hive()
            .read_feed(&p, q.cursor.unwrap_or(0), limit)
            .await?,
    ))
}

struct FeedEvents {
    sub: FeedSubscription,
}

impl Source for FeedEvents {
    async fn next_item(&mut self) -> Option<hive::Result<Item>> {
        let event = match self.sub.next().await {
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        Some(
            serde_json::to_value(&event)
                .map_err(|e| hive::Error::Backend {
                    message: format!("a feed event does not serialize: {e}"),
                    source: None,
                })
                .map(|data| Item {
                    id: event.cursor,
                    data,
                    terminal: false,
                }),
        )
    }
}

/// `GET /api/feed/events`: the tenant feed as SSE, `id:` = the feed cursor,
/// resumable with `Last-Event-ID` / `?last_event_id=`; it does not end.
#[utoipa::path(
    get,
    path = "/api/feed/events",
    tag = "feed",
    params(StreamQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this cursor")),
    responses((status = 200, description = "An event stream", content_type = "text/event-stream", body = String))
)]
pub async fn feed_events(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiQuery(q): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let after = sse::resume_from(&headers, q.last_event_id.as_deref(), 0)?;
    let sub = state.hive().feed(&p, after).await?;
    let slot = state.open_stream(&p)?;
    Ok(sse::respond(
        &state,
        slot,
        sse::events(FeedEvents { sub }, after),
    ))
}

/// Tasks whose terminal events a consumer acknowledges.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckTasks {
    /// The task ids.
    pub tasks: Vec<String>,
}

/// `POST /api/consumers/{name}/ack`: acknowledges, as consumer `name`, the
/// terminal events of `tasks` (twice is harmless; another tenant's task is
/// `404` and nothing is acknowledged).
#[utoipa::path(
    post,
    path = "/api/consumers/{name}/ack",
    tag = "feed",
    params(("name" = String, Path, description = "The consumer's name")),
    request_body = AckTasks,
    responses(
        (status = 204, description = "Acknowledged"),
        (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ack(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<AckTasks>,
) -> Result<StatusCode, ApiError> {
    let tasks = body
        .tasks
        .iter()
        .map(|t| parse_id::<TaskId>("task", t))
        .collect::<Result<Vec<_>, _>>()?;
    state.hive().ack_terminal(&p, &name, &tasks).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many unacknowledged events to list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    /// At most this many (default 100, at most 10 000).
    pub limit: Option<usize>,
}

/// `GET /api/consumers/{name}/unacked`: the terminal events consumer `name`
/// has not acknowledged, oldest first.
#[utoipa::path(
    get,
    path = "/api/consumers/{name}/unacked",
    tag = "feed",
    params(("name" = String, Path, description = "The consumer's name"), LimitQuery),
    responses((status = 200, description = "FeedEvents", body = [Object]))
)]
pub async fn unacked(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Vec<FeedEvent>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    Ok(Json(state.hive().unacked_terminal(&p, &name, limit).await?))
}

/// An issued API token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IssuedBody {
    /// `hive_<id>.<secret>`: shown this once.
    pub token: String,
    /// The token without its secret.
    #[schema(value_type = Object)]
    pub info: TokenInfo,
}

/// `POST /api/tokens`: issues an API token (a `TokenRequest`: `principal`,
/// `kind` user/operator/admin, `scopes`, `ttl`, `description`, `tenant`).
/// Needs `tenant:admin`; never above the caller's own rights; audited.
#[utoipa::path(
    post,
    path = "/api/tokens",
    tag = "admin",
    request_body(content = Object, description = "A TokenRequest"),
    responses(
        (status = 201, description = "Created", body = IssuedBody),
        (status = 403, description = "A scope is missing (the denial is audited)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn issue_token(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<Response, ApiError> {
    let issued = state.tokens().issue(state.hive(), &p, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedBody {
            token: issued.token,
            info: issued.info,
        }),
    )
        .into_response())
}

/// `GET /api/tokens`: the caller's tenant's tokens, without secrets.
#[utoipa::path(
    get,
    path = "/api/tokens",
    tag = "admin",
    responses(
        (status = 200, description = "TokenInfos", body = [Object]),
        (status = 403, description = "A scope is missing (the denial is audited)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_tokens(
    State(state): State<ApiState>,
    Caller(p): Caller,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(state.tokens().list(state.hive(), &p).await?))
}

/// `DELETE /api/tokens/{id}`: revokes a token; this process forgets it at
/// once, others within the token cache's two seconds.
#[utoipa::path(
    delete,
    path = "/api/tokens/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "The token id")),
    responses(
        (status = 200, description = "The revoked TokenInfo", body = Object),
        (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke_token(
    State(state): State<ApiState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let info = state.tokens().revoke(state.hive(), &p, &id).await?;
    state.cache().clear();
    Ok(Json(info))
}

/// An audit listing's query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditListQuery {
    /// Another tenant's trail (needs `system:admin`).
    pub tenant: Option<String>,
    /// Only this action (`task.cancel`, `token.issue`…).
    pub action: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only `allowed` or `denied`.
    pub outcome: Option<String>,
    /// Events after this seq.
    pub after_seq: Option<u64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// `GET /api/audit`: a page of the tenant's hash-chained audit trail.
#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "admin",
    params(AuditListQuery),
    responses(
        (status = 200, description = "An AuditPage: {events, next_after_seq}", body = Object),
        (status = 403, description = "A scope is missing (the denial is audited)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn audit(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiQuery(q): ApiQuery<AuditListQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let outcome = match q.outcome.as_deref() {
        None => None,
        Some(o) => Some(
            serde_json::from_value(serde_json::Value::String(o.to_owned()))
                .map_err(|_| ApiError::bad_request(format!("outcome={o:?}: allowed or denied")))?,
        ),
    };
    let query = AuditQuery {
        tenant: q.tenant.as_deref().map(TenantId::parse).transpose()?,
        action: q.action,
        actor: q.actor.map(Into::into),
        outcome,
        after_seq: q.after_seq.unwrap_or(0),
        limit: q.limit,
    };
    Ok(Json(state.audit().list(state.hive(), &p, &query).await?))
}

/// Whose trail to verify.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// Another tenant's (needs `system:admin`).
    pub tenant: Option<String>,
}

/// `GET /api/audit/verify`: walks the tenant's chain and reports the first
/// broken link, if any.
#[utoipa::path(
    get,
    path = "/api/audit/verify",
    tag = "admin",
    params(VerifyQuery),
    responses(
        (status = 200, description = "A VerifyReport", body = Object),
        (status = 403, description = "A scope is missing (the denial is audited)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn verify_audit(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiQuery(q): ApiQuery<VerifyQuery>,
) -> Result<Json<VerifyReport>, ApiError> {
    let tenant = match q.tenant {
        Some(t) => TenantId::parse(&t)?,
        None => p.tenant.clone(),
    };
    Ok(Json(state.audit().verify(state.hive(), &p, &tenant).await?))
}

/// `GET /api/whoami`: the principal the presented token stands for.
#[utoipa::path(
    get,
    path = "/api/whoami",
    tag = "admin",
    responses((status = 200, description = "The Principal", body = Object))
)]
pub async fn whoami(Caller(p): Caller) -> Json<Principal> {
    Json(p)
}
