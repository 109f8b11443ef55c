//! A small HTTP client for Honeycomb: JSON in, [`Answer`]s out, bearer
//! tokens, and retries where a real client retries (the target unreachable
//! for a moment, `429` with `Retry-After`, `502`/`503`/`504`), each counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::error::{DogfoodError, Result};

/// How long a request may take by default (the service's own request
/// timeout is 30 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(35);

/// Counters of what the client saw, across every request.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Requests sent (each retry counts).
    pub requests: AtomicU64,
    /// Requests sent again after a transport error or a retryable status.
    pub retries: AtomicU64,
    /// `429` answers.
    pub rate_limited: AtomicU64,
    /// `502`, `503` and `504` answers.
    pub unavailable: AtomicU64,
    /// Transport errors (refused, reset, timed out).
    pub transport_errors: AtomicU64,
}

impl ClientStats {
    /// The counters as JSON figures.
    pub fn figures(&self) -> Value {
        serde_json::json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "retries": self.retries.load(Ordering::Relaxed),
            "rate_limited": self.rate_limited.load(Ordering::Relaxed),
            "unavailable": self.unavailable.load(Ordering::Relaxed),
            "transport_errors": self.transport_errors.load(Ordering::Relaxed),
        })
    }
}

/// A client of one target.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: String,
    retry_window: Duration,
    stats: ClientStats,
}

/// One answer: status, headers, the whole body and how long it took.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The request's method.
    pub method: Method,
    /// The request's path.
    pub route: String,
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
    /// From sending the (last) request to the end of the body.
    pub elapsed: Duration,
}

impl Answer {
    /// This answer if its status is one of `codes`, else a
    /// [`DogfoodError::Status`] naming the route and the body's start.
    pub fn expect(self, codes: &[u16]) -> Result<Answer> {
        if codes.contains(&self.status) {
            return Ok(self);
        }
        let expected = codes
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" or ");
        Err(DogfoodError::Status {
            method: self.method.to_string(),
            route: self.route.clone(),
            expected,
            status: self.status,
            body: self.excerpt(),
        })
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .map_err(|e| self.bad(format!("the body is not JSON: {e}")))
    }

    /// A header's value, if it is there and is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The problem's `code`, when the body is a problem.
    pub fn problem_code(&self) -> Option<String> {
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        v.get("code")?.as_str().map(str::to_owned)
    }

    /// Checks that the answer is an RFC 9457 problem with `code` (and the
    /// frame Honeycomb documents: content type, `type`, `status`).
    pub fn expect_problem(&self, code: &str) -> Result<()> {
        let ct = self.header("content-type").unwrap_or("");
        if ct != "application/problem+json" {
            return Err(self.bad(format!(
                "a {} answer is application/problem+json, got content-type {ct:?}",
                self.status
            )));
        }
        let v = self.json()?;
        if v["code"] != code {
            return Err(self.bad(format!(
                "expected the problem code {code:?}, got {}",
                v["code"]
            )));
        }
        if v["type"] != format!("/problems/{code}") || v["status"] != self.status {
            return Err(self.bad(format!(
                "the problem's type or status does not match its code and status: {v}"
            )));
        }
        Ok(())
    }

    /// The body's start, as text, for messages.
    pub fn excerpt(&self) -> String {
        excerpt(&String::from_utf8_lossy(&self.body), 300)
    }

    /// A [`DogfoodError::BadAnswer`] about this answer.
    pub fn bad(&self, reason: impl Into<String>) -> DogfoodError {
        DogfoodError::BadAnswer {
            method: self.method.to_string(),
            route: self.route.clone(),
            reason: reason.into(),
        }
    }
}

/// `s` cut to at most `max` characters (with an ellipsis when cut).
pub fn excerpt(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

/// A request being built.
#[derive(Debug)]
#[must_use = "a call does nothing until it is sent"]
pub struct Call<'c> {
    client: &'c Client,
    method: Method,
    path: String,
    token: Option<String>,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
    timeout: Duration,
    retry_window: Duration,
}

impl Call<'_> {
    /// With a JSON body.
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// With a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// With a request timeout other than [`REQUEST_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Retrying for at most `window` (zero: no retry).
    pub fn retry_window(mut self, window: Duration) -> Self {
        self.retry_window = window;
        self
    }

    /// Sends it (retrying as the client does) and reads the whole answer.
    pub async fn send(self) -> Result<Answer> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let stats = &self.client.inner.stats;
            let (response, left, attempt) = self.connect(false, started, &mut backoff).await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = match response.bytes().await {
                Ok(b) => b.to_vec(),
                Err(e) => {
                    stats.transport_errors.fetch_add(1, Ordering::Relaxed);
                    if left.is_zero() {
                        return Err(self.transport(e));
                    }
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff.min(left)).await;
                    continue;
                }
            };
            if let Some(wait) = retryable(status, &headers, &body, stats)
                && !left.is_zero()
            {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(wait.min(left)).await;
                continue;
            }
            return Ok(Answer {
                method: self.method.clone(),
                route: self.path.clone(),
                status,
                headers,
                body,
                elapsed: attempt.elapsed(),
            });
        }
    }

    /// Sends it and returns the response once its headers arrived, for a
    /// stream (`200` with `text/event-stream`, else an error naming what came
    /// back). Retries as [`Call::send`] does.
    pub async fn open_stream(self) -> Result<reqwest::Response> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let stats = &self.client.inner.stats;
            let (response, left, _) = self.connect(true, started, &mut backoff).await?;
            let status = response.status().as_u16();
            if status != 200 {
                let headers = response.headers().clone();
                let body = response
                    .bytes()
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                if let Some(wait) = retryable(status, &headers, &body, stats)
                    && !left.is_zero()
                {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait.min(left)).await;
                    continue;
                }
                let answer = Answer {
                    method: self.method.clone(),
                    route: self.path.clone(),
                    status,
                    headers,
                    body,
                    elapsed: started.elapsed(),
                };
                return Err(answer.expect(&[200]).err().unwrap_or_else(|| {
                    DogfoodError::contract("unreachable: a 200 refused as a stream")
                }));
            }
            let ct = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if !ct.starts_with("text/event-stream") {
                return Err(DogfoodError::BadAnswer {
                    method: self.method.to_string(),
                    route: self.path.clone(),
                    reason: format!("a stream is text/event-stream, got content-type {ct:?}"),
                });
            }
            return Ok(response);
        }
    }

    /// Sends the request until a response arrives: transport errors are
    /// retried with backoff while the retry window (from `started`) lasts.
    /// Returns the response, the time left of the window, and when the
    /// attempt that answered began.
    async fn connect(
        &self,
        stream: bool,
        started: Instant,
        backoff: &mut Duration,
    ) -> Result<(reqwest::Response, Duration, Instant)> {
        let stats = &self.client.inner.stats;
        loop {
            let attempt = Instant::now();
            stats.requests.fetch_add(1, Ordering::Relaxed);
            let request = if stream {
                self.build_stream()
            } else {
                self.build()
            };
            let out = request.send().await;
            let left = self.retry_window.saturating_sub(started.elapsed());
            match out {
                Ok(r) => return Ok((r, left, attempt)),
                Err(e) => {
                    stats.transport_errors.fetch_add(1, Ordering::Relaxed);
                    if left.is_zero() {
                        return Err(self.transport(e));
                    }
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep((*backoff).min(left)).await;
                    *backoff = (*backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn build(&self) -> reqwest::RequestBuilder {
        let mut r = self
            .client
            .inner
            .http
            .request(self.method.clone(), self.client.url(&self.path))
            .timeout(self.timeout);
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        for (k, v) in &self.headers {
            r = r.header(*k, v);
        }
        if let Some(b) = &self.body {
            r = r.json(b);
        }
        r
    }

    fn build_stream(&self) -> reqwest::RequestBuilder {
        let mut r = self
            .client
            .inner
            .http
            .request(self.method.clone(), self.client.url(&self.path))
            .header("accept", "text/event-stream");
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        for (k, v) in &self.headers {
            r = r.header(*k, v);
        }
        r
    }

    fn transport(&self, source: reqwest::Error) -> DogfoodError {
        DogfoodError::Transport {
            method: self.method.to_string(),
            route: self.path.clone(),
            source,
        }
    }
}

/// Problem codes of a `503` that say "try again" (the service stopping, the
/// store away); any other `503` problem (`registry_not_configured`) is an
/// answer.
const UNAVAILABLE_CODES: [&str; 2] = ["shutdown", "backend_unavailable"];

/// How long to wait before sending again after `status`, if it is one a
/// client retries: `429` by its `Retry-After`; `502`, `504`; `503` unless it
/// is a problem with another code than [`UNAVAILABLE_CODES`].
fn retryable(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    stats: &ClientStats,
) -> Option<Duration> {
    if status == 503 {
        let code = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_owned));
        if code.is_some_and(|c| !UNAVAILABLE_CODES.contains(&c.as_str())) {
            return None;
        }
    }
    match status {
        429 => {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            let secs = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1);
            Some(Duration::from_secs(secs.clamp(1, 5)))
        }
        502..=504 => {
            stats.unavailable.fetch_add(1, Ordering::Relaxed);
            Some(Duration::from_millis(250))
        }
        _ => None,
    }
}

impl Client {
    /// A client of the target at `base` (`http://host:port`), retrying
    /// transport errors and retryable statuses for up to `retry_window`.
    pub fn new(base: &str, retry_window: Duration) -> Result<Client> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(DogfoodError::Usage(format!(
                "--target {base:?} is not an http:// URL"
            )));
        }
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| DogfoodError::Usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                retry_window,
                stats: ClientStats::default(),
            }),
        })
    }

    /// The target's base URL.
    pub fn base(&self) -> &str {
        &self.inner.base
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base)
    }

    /// What the client saw so far.
    pub fn stats(&self) -> &ClientStats {
        &self.inner.stats
    }

    /// A request of `method` to `path`, with `token` as the bearer if any.
    pub fn call(&self, method: Method, path: impl Into<String>, token: Option<&str>) -> Call<'_> {
        Call {
            client: self,
            method,
            path: path.into(),
            token: token.map(str::to_owned),
            body: None,
            headers: Vec::new(),
            timeout: REQUEST_TIMEOUT,
            retry_window: self.inner.retry_window,
        }
    }

    /// `GET path` as `token`.
    pub fn get(&self, path: impl Into<String>, token: &str) -> Call<'_> {
        self.call(Method::GET, path, Some(token))
    }

    /// `POST path` as `token` with a JSON body.
    pub fn post(&self, path: impl Into<String>, token: &str, body: Value) -> Call<'_> {
        self.call(Method::POST, path, Some(token)).json(body)
    }

    /// `DELETE path` as `token`.
    pub fn delete(&self, path: impl Into<String>, token: &str) -> Call<'_> {
        self.call(Method::DELETE, path, Some(token))
    }
}
