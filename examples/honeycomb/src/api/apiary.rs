//! APIary over HTTP: agents (list, get), experiments, promotion — when the
//! service runs with a registry ([`super::ApiState::with_registry`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use hive::registry::{
    AgentEntry, AgentQuery, AgentRef, AgentRegistry, ApiaryError, Experiment, ExperimentQuery,
    Promotion,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiJson, ApiQuery, ApiState, Caller, Problem};

impl From<ApiaryError> for ApiError {
    fn from(e: ApiaryError) -> ApiError {
        let detail = e.to_string();
        match e {
            ApiaryError::Core(core) => core.into(),
            ApiaryError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "Not found", detail)
            }
            ApiaryError::Forbidden { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
            }
            ApiaryError::InvalidArgument { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                "Invalid argument",
                detail,
            ),
            ApiaryError::Conflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
            }
            ApiaryError::PromotionRefused { rule, .. } => {
                // A missing `experiment:promote` is a missing scope (403);
                // every other rule is about the agent (422).
                let mut p = if rule == hive::registry::PromotionRule::CallerScope {
                    ApiError::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
                } else {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "promotion_refused",
                        "Promotion refused",
                        detail,
                    )
                };
                p.0.field = Some(rule.to_string());
                p
            }
            ApiaryError::Verification { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "verification_failed",
                "Verification failed",
                detail,
            ),
            ApiaryError::RegistryDenied { .. } | ApiaryError::Registry { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "registry_error",
                "Registry error",
                detail,
            ),
            _ => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "registry_unavailable",
                "Registry unavailable",
                detail,
            ),
        }
    }
}

fn registry(state: &ApiState) -> Result<Arc<dyn AgentRegistry>, ApiError> {
    state.registry().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "registry_not_configured",
            "Registry not configured",
            "this Honeycomb runs without an APIary registry (set registry_keys)",
        )
    })
}

fn agent_ref(s: &str) -> Result<AgentRef, ApiError> {
    s.parse()
        .map_err(|e| ApiError::bad_request(format!("{s:?} is not an agent reference: {e}")))
}

/// An agent listing's filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AgentsQuery {
    /// `sandbox` or `production`.
    pub channel: Option<String>,
    /// Only this agent name.
    pub name: Option<String>,
    /// Name or description contains this (case insensitive).
    pub text: Option<String>,
}

/// `GET /api/agents`: the agents the caller may see.
#[utoipa::path(
    get,
    path = "/api/agents",
    tag = "apiary",
    params(AgentsQuery),
    responses(
        (status = 200, description = "AgentEntries", body = [Object]),
        (status = 503, description = "No registry configured", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_agents(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiQuery(q): ApiQuery<AgentsQuery>,
) -> Result<Json<Vec<AgentEntry>>, ApiError> {
    let registry = registry(&state)?;
    let channel = q
        .channel
        .map(|c| {
            serde_json::from_value(Value::String(c.clone()))
                .map_err(|_| ApiError::bad_request(format!("channel={c:?}: sandbox or production")))
        })
        .transpose()?;
    let query = AgentQuery {
        channel,
        tenant: None,
        name: q.name,
        text: q.text,
    };
    Ok(Json(registry.list(&p, &query).await?))
}

/// The agent reference of a route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RefQuery {
    /// The agent reference (`tenant/channel/name:version`, as APIary prints it).
    pub r#ref: String,
}

/// `GET /api/agents/get?ref=…`: one agent (`404` when missing or hidden).
#[utoipa::path(
    get,
    path = "/api/agents/get",
    tag = "apiary",
    params(RefQuery),
    responses(
        (status = 200, description = "An AgentEntry", body = Object),
        (status = 404, description = "Not found (or hidden from the caller)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_agent(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiQuery(q): ApiQuery<RefQuery>,
) -> Result<Json<AgentEntry>, ApiError> {
    let registry = registry(&state)?;
    Ok(Json(registry.get(&p, &agent_ref(&q.r#ref)?).await?))
}

/// An experiment listing's filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExperimentsQuery {
    /// Only those of this loop (builder id).
    pub builder_id: Option<String>,
    /// `candidate`, `promoted` or `refused`.
    pub status: Option<String>,
}

/// `GET /api/experiments`: the experiments (sandbox agents with provenance)
/// the caller may see, with their metrics and promotion state.
#[utoipa::path(
    get,
    path = "/api/experiments",
    tag = "apiary",
    params(ExperimentsQuery),
    responses(
        (status = 200, description = "Experiments", body = [Object]),
        (status = 503, description = "No registry configured", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn experiments(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiQuery(q): ApiQuery<ExperimentsQuery>,
) -> Result<Json<Vec<Experiment>>, ApiError> {
    let registry = registry(&state)?;
    let status = q
        .status
        .map(|s| {
            serde_json::from_value(Value::String(s.clone())).map_err(|_| {
                ApiError::bad_request(format!("status={s:?}: candidate, promoted or refused"))
            })
        })
        .transpose()?;
    let query = ExperimentQuery {
        tenant: None,
        builder_id: q.builder_id,
        status,
    };
    Ok(Json(registry.experiments(&p, &query).await?))
}

/// A promotion request.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    /// The sandbox agent to promote.
    pub agent: String,
}

/// `POST /api/experiments/promote`: promotes a sandbox agent to production
/// under the policy (signed, provenance present, metric thresholds met, the
/// caller holding `experiment:promote`); a refusal is `422` naming the rule
/// in `field`, and is audited like the success.
#[utoipa::path(
    post,
    path = "/api/experiments/promote",
    tag = "apiary",
    request_body = PromoteBody,
    responses(
        (status = 200, description = "The Promotion", body = Object),
        (status = 403, description = "A scope is missing (the denial is audited)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by a rule (named in field)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn promote(
    State(state): State<ApiState>,
    Caller(p): Caller,
    ApiJson(body): ApiJson<PromoteBody>,
) -> Result<Json<Promotion>, ApiError> {
    let registry = registry(&state)?;
    Ok(Json(registry.promote(&p, &agent_ref(&body.agent)?).await?))
}
