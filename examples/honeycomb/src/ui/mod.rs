//! The operator console: server-rendered pages under `/ui` over the same
//! public `hive` API as the HTTP API, for the principal signed in.
//!
//! - Sign-in exchanges an API token for a session cookie (`HttpOnly`,
//!   `SameSite=Strict`, `Secure` behind TLS); the token is kept in this
//!   process's memory only and resolved again (through the API's 2 s cache)
//!   on every request, so a revoked token ends its sessions.
//! - Every state-changing form carries the session's CSRF token, and a
//!   cross-origin `Origin` is refused; a refusal is a `403` page, audited by
//!   the engine.
//! - Pages read without JavaScript; `console.js` (served from the binary,
//!   no CDN) adds live updates over one `EventSource` per tab (closed while
//!   the tab is hidden, resumed from its last seq), the time format choice,
//!   copy buttons and instant log filters.
//! - Every page answers with `Server-Timing: app;dur=<ms>`.

mod audit;
mod experiments;
mod html;
mod nodes;
mod session;
mod tasks;
mod workflows;

use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::api::{ApiError, ApiState};

pub(crate) use session::Sessions;
pub use session::UiCaller;
pub(crate) use tasks::first_id_at;

/// The console's routes (under `/ui`), to merge into the service's router.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/tasks") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/tasks") }))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/tasks", get(tasks::list))
        .route("/ui/tasks/{id}", get(tasks::page))
        .route("/ui/tasks/{id}/log.txt", get(tasks::download))
        .route("/ui/tasks/{id}/stream", get(tasks::stream))
        .route("/ui/workflows", get(workflows::list))
        .route("/ui/workflows/{id}", get(workflows::page))
        .route("/ui/workflows/{id}/graph", get(workflows::graph))
        .route("/ui/workflows/{id}/stream", get(workflows::stream))
        .route("/ui/experiments", get(experiments::list))
        .route("/ui/experiments/promote", post(experiments::promote))
        .route("/ui/audit", get(audit::page))
        .route("/ui/nodes", get(nodes::list))
        .route("/ui/nodes/{id}/drain", post(nodes::drain))
        .route("/ui/assets/console.css", get(css))
        .route("/ui/assets/console.js", get(js))
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::from_fn(server_timing))
}

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn not_found(caller: Option<UiCaller>) -> UiError {
    let _ = caller;
    UiError::NotFound("no such page".into())
}

/// Adds `Server-Timing: app;dur=<ms>` (the time to the response's headers)
/// and the console's security headers to every console answer.
async fn server_timing(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let mut response = next.run(request).await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.2}")) {
        headers.insert("server-timing", v);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Why a console page could not be shown: rendered as an HTML error page
/// (or, with no session, a redirect to the sign-in page).
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// Not signed in (or the session ended): go to sign-in, then back.
    #[error("sign in to continue")]
    SignIn {
        /// Where to return after signing in.
        next: String,
    },
    /// No such object, or another tenant's.
    #[error("{0}")]
    NotFound(String),
    /// The signed-in principal may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request cannot be read.
    #[error("{0}")]
    BadRequest(String),
    /// Another failure, with its status.
    #[error("{detail}")]
    Other {
        /// The HTTP status.
        status: StatusCode,
        /// What went wrong.
        detail: String,
    },
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> UiError {
        let status = e.status();
        let detail = e.0.detail.clone();
        match status {
            StatusCode::NOT_FOUND => UiError::NotFound(detail),
            StatusCode::FORBIDDEN => UiError::Forbidden(detail),
            StatusCode::BAD_REQUEST => UiError::BadRequest(detail),
            _ => UiError::Other { status, detail },
        }
    }
}

impl From<hive::Error> for UiError {
    fn from(e: hive::Error) -> UiError {
        ApiError::from(e).into()
    }
}

impl UiError {
    fn status(&self) -> StatusCode {
        match self {
            UiError::SignIn { .. } => StatusCode::SEE_OTHER,
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::Forbidden(_) => StatusCode::FORBIDDEN,
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::Other { status, .. } => *status,
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if let UiError::SignIn { next } = &self {
            let to = format!("/ui/login?next={}", html::url_encode(next));
            return Redirect::to(&to).into_response();
        }
        let status = self.status();
        let title = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::BAD_REQUEST => "Bad request",
            _ => status.canonical_reason().unwrap_or("Error"),
        };
        let body = html::error_page(status, title, &self.to_string());
        (status, body).into_response()
    }
}

/// A console answer: a page or an error page.
pub type UiResult<T = Response> = Result<T, UiError>;
