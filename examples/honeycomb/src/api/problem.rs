//! Errors as `application/problem+json` (RFC 9457), one stable `type` per
//! kind of failure.

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The prefix of every problem `type`: `/problems/<code>` (a relative URI,
/// resolved against the service; the codes are listed in the README).
pub const TYPE_PREFIX: &str = "/problems/";

/// The largest error body the context layer rewrites (anything larger is
/// passed on as it is).
const MAX_PROBLEM_BODY: usize = 64 * 1024;

/// An error answer (RFC 9457 problem details), with Hive's `code` (the
/// `hive::Error` kind, or an HTTP-level one such as `unauthorized`) and the
/// request's id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// `/problems/<code>`: stable per kind of failure.
    #[serde(rename = "type")]
    pub type_: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// The request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The kind, as a word (`not_found`, `invalid_spec`, `unauthorized`…).
    pub code: String,
    /// The request's id (also in the `x-request-id` header): quote it when
    /// reporting a problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The offending field of an invalid spec (`retry.max_attempts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait before retrying (also the `Retry-After` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// An error a handler returns: turned into a problem response.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError(pub Box<Problem>);

impl ApiError {
    /// A problem with this status, code, title and detail.
    pub fn new(status: StatusCode, code: &str, title: &str, detail: impl Into<String>) -> ApiError {
        ApiError(Box::new(Problem {
            type_: format!("{TYPE_PREFIX}{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
            code: code.to_owned(),
            request_id: None,
            field: None,
            retry_after: None,
        }))
    }

    /// 400 `bad_request`: the request cannot be read (bad JSON, a bad query).
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Bad request",
            detail,
        )
    }

    /// 401 `unauthorized`: no token, or a bad, expired or revoked one.
    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    /// 404 `not_found` for a path no route serves.
    pub fn no_route(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found",
            format!("no route for {path}"),
        )
    }

    /// 429 `rate_limited`, retry after `seconds`.
    pub fn rate_limited(detail: impl Into<String>, seconds: u64) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many requests",
            detail,
        );
        e.0.retry_after = Some(seconds.max(1));
        e
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<hive::Error> for ApiError {
    fn from(e: hive::Error) -> ApiError {
        use hive::Error as E;
        let detail = e.to_string();
        if hive::iam::is_invalid_token(&e) {
            return ApiError::unauthorized("the token is invalid, expired or revoked");
        }
        let (status, title) = match &e {
            E::NotFound { .. } => (StatusCode::NOT_FOUND, "Not found"),
            E::Forbidden { .. } => (StatusCode::FORBIDDEN, "Forbidden"),
            E::InvalidSpec { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid spec"),
            E::InvalidArgument { .. } => (StatusCode::BAD_REQUEST, "Invalid argument"),
            E::InvalidTransition { .. } => (StatusCode::CONFLICT, "Invalid transition"),
            E::AlreadyTerminal { .. } => (StatusCode::CONFLICT, "Already ended"),
            E::LeaseLost { .. } => (StatusCode::CONFLICT, "Lease lost"),
            E::Conflict { .. } => (StatusCode::CONFLICT, "Conflict"),
            E::OffsetExpired { .. } => (StatusCode::GONE, "Offset expired"),
            E::BackendUnavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "Backend unavailable")
            }
            E::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "Too large"),
            E::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "Timed out"),
            E::Shutdown => (StatusCode::SERVICE_UNAVAILABLE, "Shutting down"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "Backend error"),
        };
        let mut out = ApiError::new(status, e.kind(), title, detail);
        if let E::InvalidSpec { field, .. } = &e {
            out.0.field = Some(field.clone());
        }
        if matches!(e, E::BackendUnavailable { .. } | E::Shutdown) {
            out.0.retry_after = Some(1);
        }
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "backend error");
        }
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&*self.0).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(s) = self.0.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hive\""),
            );
        }
        response
    }
}

/// The layer that gives every error answer its `instance` (the path) and
/// `request_id`, and turns an error answer without a body of its own (a
/// method not allowed, a timeout, a body over the limit) into a problem
/// (the console's HTML error pages are left as they are).
pub async fn problem_context(request: Request<Body>, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type.starts_with("text/html") {
        // The console's error pages are pages, not problems.
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PROBLEM_BODY).await else {
        return ApiError::new(
            status,
            "internal",
            "Internal error",
            "the error body was lost",
        )
        .into_response();
    };
    let mut problem = if content_type == PROBLEM_JSON {
        match serde_json::from_slice::<Problem>(&bytes) {
            Ok(p) => p,
            Err(_) => return Response::from_parts(parts, Body::from(bytes)),
        }
    } else {
        let detail = String::from_utf8_lossy(&bytes).trim().to_owned();
        *fallback(status, detail).0
    };
    problem.instance = Some(path);
    problem.request_id = request_id;
    let mut rebuilt = ApiError(Box::new(problem)).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rebuilt.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rebuilt
}

/// The problem for an error answer that came without one.
fn fallback(status: StatusCode, detail: String) -> ApiError {
    let (code, title, default) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "Method not allowed",
            "this route does not serve that method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "too_large",
            "Too large",
            "the request body is larger than the limit",
        ),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "Timed out", "the request took too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "Unsupported media type",
            "send application/json",
        ),
        StatusCode::NOT_FOUND => ("not_found", "Not found", "no such resource"),
        s if s.is_server_error() => ("internal", "Internal error", "the service failed"),
        _ => ("bad_request", "Bad request", "the request was refused"),
    };
    let detail = if detail.is_empty() {
        default.to_owned()
    } else {
        detail
    };
    ApiError::new(status, code, title, detail)
}
