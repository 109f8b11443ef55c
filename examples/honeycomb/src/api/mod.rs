//! The HTTP API: a thin mapping of the public `hive` API.
//!
//! Every route but `/healthz`, `/readyz`, `/api/version` and the OpenAPI
//! document needs `Authorization: Bearer <token>` (an API token or a worker
//! token, resolved by `hive-iam`); the engine authorizes and audits each call
//! as if it came from Rust. Errors are [`problem::Problem`]s.

pub mod admin;
pub mod apiary;
pub mod auth;
pub mod nodes;
pub mod problem;
pub mod sse;
pub mod tasks;
pub mod telemetry;
pub mod workflows;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode};
use axum::response::IntoResponse;
use axum::{Json, Router};
use hive::prelude::*;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::Caller;
pub use problem::{ApiError, Problem};

/// The limits of the API (defaults in [`ApiLimits::default`]).
#[derive(Clone, Debug)]
pub struct ApiLimits {
    /// The largest request body, in bytes (413 above it).
    pub body_bytes: usize,
    /// How long a request may take before it is answered `503` (streams
    /// are exempt once their headers are sent; long polls are capped below).
    pub request_timeout: Duration,
    /// The longest long poll (`wait=` is capped to it): below common proxy
    /// idle timeouts (60 s).
    pub long_poll_max: Duration,
    /// Event streams one token may hold open at once (429 beyond).
    pub streams_per_token: usize,
    /// The largest output or error shown inline in a task snapshot; larger
    /// ones are linked (`output_link`).
    pub inline_bytes: usize,
    /// How often an idle event stream sends a keep-alive comment.
    pub keep_alive: Duration,
    /// How long a resolved token is remembered (a revocation reaches other
    /// processes within this; the revoking process forgets at once).
    pub token_cache_ttl: Duration,
    /// Requests per second one token may make (0: no limit); beyond it and
    /// its burst, `429` with `Retry-After`.
    pub rate_per_second: u32,
    /// How many requests a token may make at once above its rate.
    pub rate_burst: u32,
    /// The bearer token `/metrics` needs (open when `None`).
    pub metrics_token: Option<String>,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            body_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            long_poll_max: Duration::from_secs(25),
            streams_per_token: 256,
            inline_bytes: 64 * 1024,
            keep_alive: Duration::from_secs(15),
            token_cache_ttl: Duration::from_secs(2),
            rate_per_second: 2_000,
            rate_burst: 4_000,
            metrics_token: None,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    hive: Hive,
    tokens: TokenService,
    audit: AuditTrail,
    limits: ApiLimits,
    stop: CancellationToken,
    cache: auth::TokenCache,
    streams: sse::StreamCounter,
    registry: Option<Arc<dyn hive::registry::AgentRegistry>>,
    sessions: crate::ui::Sessions,
    telegram: std::sync::OnceLock<Arc<crate::telegram::Telegram>>,
}

impl ApiState {
    /// The state of an API over `hive`; `stop` ends every open stream (the
    /// service's shutdown).
    pub fn new(hive: Hive, limits: ApiLimits, stop: CancellationToken) -> ApiState {
        ApiState::with_registry(hive, limits, stop, None)
    }

    /// [`ApiState::new`] with an APIary registry behind `/api/agents` and
    /// `/api/experiments` (without one they answer `503`).
    pub fn with_registry(
        hive: Hive,
        limits: ApiLimits,
        stop: CancellationToken,
        registry: Option<Arc<dyn hive::registry::AgentRegistry>>,
    ) -> ApiState {
        ApiState {
            inner: Arc::new(Inner {
                registry,
                sessions: crate::ui::Sessions::default(),
                telegram: std::sync::OnceLock::new(),
                tokens: hive.tokens(),
                audit: hive.audit_trail(),
                cache: auth::TokenCache::new(limits.token_cache_ttl),
                streams: sse::StreamCounter::default(),
                hive,
                limits,
                stop,
            }),
        }
    }

    /// The engine.
    pub fn hive(&self) -> &Hive {
        &self.inner.hive
    }

    /// The token service.
    pub fn tokens(&self) -> &TokenService {
        &self.inner.tokens
    }

    /// The audit trail.
    pub fn audit(&self) -> &AuditTrail {
        &self.inner.audit
    }

    /// The APIary registry, if the service has one.
    pub fn registry(&self) -> Option<Arc<dyn hive::registry::AgentRegistry>> {
        self.inner.registry.clone()
    }

    /// The limits.
    pub fn limits(&self) -> &ApiLimits {
        &self.inner.limits
    }

    /// The token `/metrics` needs, if any.
    pub fn metrics_token(&self) -> Option<&str> {
        self.inner.limits.metrics_token.as_deref()
    }

    /// Fires when the service stops.
    pub fn stop(&self) -> &CancellationToken {
        &self.inner.stop
    }

    pub(crate) fn cache(&self) -> &auth::TokenCache {
        &self.inner.cache
    }

    pub(crate) fn streams(&self) -> &sse::StreamCounter {
        &self.inner.streams
    }

    pub(crate) fn sessions(&self) -> &crate::ui::Sessions {
        &self.inner.sessions
    }

    /// Turns the Telegram route on (once; later calls change nothing).
    pub fn set_telegram(&self, telegram: Arc<crate::telegram::Telegram>) {
        let _ = self.inner.telegram.set(telegram);
    }

    /// The Telegram route, when it is on.
    pub fn telegram(&self) -> Option<Arc<crate::telegram::Telegram>> {
        self.inner.telegram.get().cloned()
    }

    /// The wait of a long poll: `wait`, capped to [`ApiLimits::long_poll_max`].
    pub(crate) fn long_poll(&self, wait: Option<&str>) -> Result<Duration, ApiError> {
        let Some(wait) = wait else {
            return Ok(Duration::ZERO);
        };
        let d = parse_duration(wait).ok_or_else(|| {
            ApiError::bad_request(format!("wait={wait:?}: not a duration (25s, 500ms)"))
        })?;
        Ok(d.min(self.inner.limits.long_poll_max))
    }
}

/// A duration in humantime syntax (`25s`, `500ms`) or whole seconds (`25`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).ok()
}

/// A JSON body; a body that is not JSON, or not the JSON the route takes,
/// is a problem naming what is wrong (and nothing is stored).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => {
                let status = rejection.status();
                let detail = rejection.body_text();
                Err(match status {
                    StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                        status,
                        "too_large",
                        "Too large",
                        "the request body is larger than the limit",
                    ),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
                        status,
                        "unsupported_media_type",
                        "Unsupported media type",
                        "send the body as application/json",
                    ),
                    StatusCode::UNPROCESSABLE_ENTITY => {
                        ApiError::new(status, "invalid_body", "Invalid body", detail)
                    }
                    _ => ApiError::bad_request(detail),
                })
            }
        }
    }
}

/// Query parameters; a bad one is a `400` naming it.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(q) => Ok(ApiQuery(q.0)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// Parses an id from a path or body (`T::from_str`); a malformed one is a
/// `400` naming the kind.
pub(crate) fn parse_id<T: std::str::FromStr>(kind: &str, s: &str) -> Result<T, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("{s:?} is not a {kind} id")))
}

/// The OpenAPI document's frame: its info, tags and security scheme (the
/// paths come from the routes).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Honeycomb",
        description = "Hive behind HTTP: tasks, workflows, live event streams, remote workers, tokens and audit.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "tasks", description = "Submit, read, poll, cancel and follow tasks"),
        (name = "workflows", description = "Workflow DAGs"),
        (name = "feed", description = "The tenant feed and named consumers"),
        (name = "nodes", description = "Worker nodes"),
        (name = "worker", description = "The remote-worker protocol (worker tokens)"),
        (name = "admin", description = "Tokens and the audit trail"),
        (name = "apiary", description = "Agents, experiments and promotion (with a registry)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token (hive_<id>.<secret>) or a worker token"))
                    .build(),
            ),
        );
    }
}

/// The API routes with their OpenAPI document.
pub fn api_routes() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tasks::submit, tasks::list))
        .routes(routes!(tasks::get_task))
        .routes(routes!(tasks::get_output))
        .routes(routes!(tasks::cancel))
        .routes(routes!(tasks::bulk_cancel))
        .routes(routes!(tasks::events))
        .routes(routes!(tasks::logs))
        .routes(routes!(tasks::diagnostics))
        .routes(routes!(workflows::submit, workflows::list))
        .routes(routes!(workflows::get_workflow))
        .routes(routes!(workflows::cancel))
        .routes(routes!(workflows::events))
        .routes(routes!(admin::feed))
        .routes(routes!(admin::feed_events))
        .routes(routes!(admin::ack))
        .routes(routes!(admin::unacked))
        .routes(routes!(nodes::register, nodes::list))
        .routes(routes!(nodes::get_node, nodes::remove))
        .routes(routes!(nodes::drain))
        .routes(routes!(nodes::worker_token))
        .routes(routes!(nodes::claim))
        .routes(routes!(nodes::start))
        .routes(routes!(nodes::heartbeat))
        .routes(routes!(nodes::log))
        .routes(routes!(nodes::report))
        .routes(routes!(nodes::node_heartbeat))
        .routes(routes!(admin::issue_token, admin::list_tokens))
        .routes(routes!(admin::revoke_token))
        .routes(routes!(admin::audit))
        .routes(routes!(admin::verify_audit))
        .routes(routes!(admin::whoami))
        .routes(routes!(apiary::list_agents))
        .routes(routes!(apiary::get_agent))
        .routes(routes!(apiary::experiments))
        .routes(routes!(apiary::promote))
        .split_for_parts()
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_routes();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The OpenAPI document as pretty JSON (what `honeycomb openapi` prints and
/// `docs/openapi.json` holds).
pub fn openapi_json() -> String {
    serde_json::to_string_pretty(&openapi()).unwrap_or_default()
}

/// The whole API router with its layers: request ids, tracing (the
/// `Authorization` header marked sensitive), panics caught, body limit,
/// timeout, and problems with `instance` and `request_id`. `extra` (health,
/// readiness, version) is served without a token.
pub fn router(state: ApiState, extra: Router<ApiState>) -> Router {
    let (mut api, _) = api_routes();
    let doc = serde_json::to_vec(&openapi()).unwrap_or_default();
    let limits = state.limits().clone();
    let x_request_id = HeaderName::from_static("x-request-id");
    if let Some(layer) = rate_limit(&state) {
        api = api.layer(layer);
    }
    telemetry::handle();
    api.merge(extra)
        .merge(crate::ui::routes())
        .merge(crate::telegram::routes())
        .route("/metrics", axum::routing::get(telemetry::metrics))
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc,
                    )
                }
            }),
        )
        .route(
            "/api/docs",
            axum::routing::get(|| async { axum::response::Html(DOCS_PAGE) }),
        )
        .layer(axum::middleware::from_fn(telemetry::track))
        .fallback(|uri: axum::http::Uri| async move { ApiError::no_route(uri.path()) })
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "the service failed while answering; the failure is logged",
                )
                .into_response()
            },
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
        .layer(axum::middleware::from_fn(problem::problem_context))
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
        ]))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
        .with_state(state)
}

/// Requests are limited per token (the `Authorization` header's hash):
/// the key of a rate limit.
#[derive(Clone, Copy, Debug)]
struct TokenKey;

impl tower_governor::key_extractor::KeyExtractor for TokenKey {
    type Key = u64;

    fn extract<T>(
        &self,
        req: &axum::http::Request<T>,
    ) -> Result<u64, tower_governor::GovernorError> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        req.headers()
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default()
            .hash(&mut h);
        Ok(h.finish())
    }
}

type RateLayer = tower_governor::GovernorLayer<
    TokenKey,
    governor::middleware::NoOpMiddleware<governor::clock::QuantaInstant>,
    axum::body::Body,
>;

/// The per-token rate limit (`None` when off), answering `429` problems
/// with `Retry-After`; forgotten keys are swept every minute until the
/// service stops.
fn rate_limit(state: &ApiState) -> Option<RateLayer> {
    let limits = state.limits();
    if limits.rate_per_second == 0 {
        return None;
    }
    let period = Duration::from_secs(1) / limits.rate_per_second;
    let config = tower_governor::governor::GovernorConfigBuilder::default()
        .period(period.max(Duration::from_nanos(1)))
        .burst_size(limits.rate_burst.max(1))
        .key_extractor(TokenKey)
        .finish()?;
    let config = Arc::new(config);
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let limiter = config.limiter().clone();
        let stop = state.stop().clone();
        rt.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => limiter.retain_recent(),
                }
            }
        });
    }
    Some(
        tower_governor::GovernorLayer::new(config).error_handler(|e| match e {
            tower_governor::GovernorError::TooManyRequests { wait_time, .. } => {
                ApiError::rate_limited(
                    format!("this token is over its rate limit; retry in {wait_time} s"),
                    wait_time,
                )
                .into_response()
            }
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                format!("rate limiting failed: {other}"),
            )
            .into_response(),
        }),
    )
}

/// The vendored API docs page: renders `/api/openapi.json` as a list of
/// routes with their parameters, bodies and answers, with no script from
/// elsewhere.
const DOCS_PAGE: &str = include_str!("docs.html");
