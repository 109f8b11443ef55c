//! Sessions: an API token exchanged for a cookie, the CSRF token of every
//! form, sign-in and sign-out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, OptionalFromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, extract::Query};
use hive::Principal;
use maud::html;
use parking_lot::Mutex;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::html::{self as h, Nav};
use super::{UiError, UiResult};
use crate::api::ApiState;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "hive_session";
/// How long a session lives without use.
const IDLE: Duration = Duration::from_secs(12 * 3600);
/// The most sessions kept (the oldest are dropped beyond it).
const MAX_SESSIONS: usize = 10_000;

struct Session {
    /// The API token it was opened with (memory only).
    token: String,
    /// The CSRF token of its forms.
    csrf: String,
    last_used: Instant,
}

/// The console's sessions, in this process's memory (a restart signs
/// everyone out; several processes need sticky routing for the console).
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn random_hex() -> Result<String, UiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| UiError::Other {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        detail: format!("no randomness for a session: {e}"),
    })?;
    Ok(hex::encode(bytes))
}

impl Sessions {
    fn open(&self, token: String) -> Result<String, UiError> {
        let id = random_hex()?;
        let csrf = random_hex()?;
        let mut map = self.map.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.last_used.elapsed() < IDLE);
            if map.len() >= MAX_SESSIONS
                && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            key(&id),
            Session {
                token,
                csrf,
                last_used: Instant::now(),
            },
        );
        Ok(id)
    }

    /// The session's token and CSRF token, if it is open.
    fn touch(&self, id: &str) -> Option<(String, String)> {
        let mut map = self.map.lock();
        let k = key(id);
        let s = map.get_mut(&k)?;
        if s.last_used.elapsed() >= IDLE {
            map.remove(&k);
            return None;
        }
        s.last_used = Instant::now();
        Some((s.token.clone(), s.csrf.clone()))
    }

    fn close(&self, id: &str) {
        self.map.lock().remove(&key(id));
    }
}

/// The signed-in principal of a console request, with its session's CSRF
/// token. Without a session, pages redirect to sign-in.
#[derive(Clone, Debug)]
pub struct UiCaller {
    /// Who.
    pub p: Principal,
    /// The CSRF token its forms carry.
    pub csrf: String,
    session: String,
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

async fn caller(parts: &Parts, state: &ApiState) -> Result<Option<UiCaller>, UiError> {
    let Some(id) = cookie(&parts.headers, COOKIE) else {
        return Ok(None);
    };
    let Some((token, csrf)) = state.sessions().touch(&id) else {
        return Ok(None);
    };
    match crate::api::auth::resolve(state, &token).await {
        Ok(p) => Ok(Some(UiCaller {
            p,
            csrf,
            session: id,
        })),
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => {
            // The token was revoked or expired: the session ends with it.
            state.sessions().close(&id);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn here(parts: &Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/ui/tasks".into())
}

impl FromRequestParts<ApiState> for UiCaller {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, UiError> {
        caller(parts, state).await?.ok_or_else(|| UiError::SignIn {
            next: if parts.method == axum::http::Method::GET {
                here(parts)
            } else {
                "/ui/tasks".into()
            },
        })
    }
}

impl OptionalFromRequestParts<ApiState> for UiCaller {
    type Rejection = UiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Option<Self>, UiError> {
        caller(parts, state).await
    }
}

impl UiCaller {
    /// Checks a form's CSRF token (and that the request did not come from
    /// another origin); a mismatch is refused and audited by the engine as
    /// a denial of `action` on `resource`.
    pub(crate) async fn check_form(
        &self,
        state: &ApiState,
        headers: &HeaderMap,
        form_csrf: &str,
        action: hive::auth::Action,
        resource: &hive::auth::Resource,
    ) -> Result<(), UiError> {
        let same_token: bool = self.csrf.as_bytes().ct_eq(form_csrf.as_bytes()).into();
        let reason = if !same_token {
            Some("the form's CSRF token is missing or wrong (reload the page and try again)")
        } else if !same_origin(headers) {
            Some("the request came from another origin")
        } else {
            None
        };
        match reason {
            None => Ok(()),
            Some(reason) => {
                let e = state.hive().deny(&self.p, action, resource, reason).await;
                Err(UiError::Forbidden(e.to_string()))
            }
        }
    }
}

/// Whether `Origin` (when the browser sends one) names this host.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

fn secure(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(value: &str, max_age: Option<u64>, secure: bool) -> Option<HeaderValue> {
    let mut c = format!("{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).ok()
}

/// Where to go after signing in: a console path, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_owned()
        }
        _ => "/ui/tasks".into(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

fn login_form(next: &str, error: Option<&str>) -> maud::Markup {
    let body = html! {
        h1 { "Sign in" }
        p { "Paste an API token (" code { "hive_…" } "). It is exchanged for a session cookie and never stored in the browser." }
        @if let Some(e) = error {
            p.alert role="alert" { (e) }
        }
        form.stack method="post" action="/ui/login" {
            input type="hidden" name="next" value=(next);
            label for="token" { "API token" }
            input #token type="password" name="token" autocomplete="off" required;
            button type="submit" { "Sign in" }
        }
    };
    h::layout("Sign in", None, Nav::None, body)
}

/// `GET /ui/login`.
pub(crate) async fn login_page(Query(q): Query<LoginQuery>) -> Response {
    login_form(&safe_next(q.next.as_deref()), None).into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    next: Option<String>,
}

/// `POST /ui/login`: a valid token opens a session.
pub(crate) async fn login(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> UiResult {
    let next = safe_next(form.next.as_deref());
    if !same_origin(&headers) {
        return Err(UiError::Forbidden(
            "the sign-in form was posted from another origin".into(),
        ));
    }
    let token = form.token.trim().to_owned();
    let refused = |msg: &str| {
        (
            StatusCode::UNAUTHORIZED,
            login_form(&next, Some(msg)).into_response(),
        )
            .into_response()
    };
    if token.is_empty() {
        return Ok(refused("Enter a token."));
    }
    match crate::api::auth::resolve(&state, &token).await {
        Ok(p) if p.worker_node().is_some() => Ok(refused(
            "A worker token cannot sign in to the console; use an API token.",
        )),
        Ok(_) => {
            let id = state.sessions().open(token)?;
            let mut response = Redirect::to(&next).into_response();
            if let Some(c) = set_cookie(&id, None, secure(&headers)) {
                response.headers_mut().insert(header::SET_COOKIE, c);
            }
            Ok(response)
        }
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => {
            Ok(refused("That token is invalid, expired or revoked."))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/logout`: ends the session.
pub(crate) async fn logout(
    State(state): State<ApiState>,
    caller: Option<UiCaller>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> UiResult {
    if let Some(c) = caller {
        let resource = hive::auth::Resource::Tenant(c.p.tenant.clone());
        c.check_form(
            &state,
            &headers,
            &form.csrf,
            hive::auth::Action::ReadTask,
            &resource,
        )
        .await?;
        state.sessions().close(&c.session);
    }
    let mut response = Redirect::to("/ui/login").into_response();
    if let Some(c) = set_cookie("", Some(0), secure(&headers)) {
        response.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_in_the_console() {
        assert_eq!(safe_next(Some("/ui/tasks/x?y=1")), "/ui/tasks/x?y=1");
        assert_eq!(safe_next(Some("https://evil.example/")), "/ui/tasks");
        assert_eq!(safe_next(Some("//evil.example/ui/")), "/ui/tasks");
        assert_eq!(safe_next(Some("/api/tasks")), "/ui/tasks");
        assert_eq!(safe_next(None), "/ui/tasks");
    }

    #[test]
    fn origin_must_match_the_host() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "no Origin: a same-origin navigation");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8780"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8780"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; hive_session=abc ; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
