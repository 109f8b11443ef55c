//! A Honeycomb served in-process on a loopback port, over a store the test
//! also holds (to issue tokens and look behind the API), and an SSE reader.

#![allow(dead_code, unreachable_pub)]

pub mod apiary;

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use hive::iam::{TokenKind, TokenRequest};
use hive::prelude::*;
use honeycomb::api::{ApiLimits, ApiState};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub struct Server {
    pub addr: SocketAddr,
    pub hive: Hive,
    pub http: reqwest::Client,
    pub stop: CancellationToken,
    pub state: ApiState,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start() -> Server {
        Server::on("memory://", ApiLimits::default()).await
    }

    pub async fn with_limits(limits: ApiLimits) -> Server {
        Server::on("memory://", limits).await
    }

    pub async fn on(url: &str, limits: ApiLimits) -> Server {
        let hive = hive::open(url).await.expect("the store opens");
        let state = ApiState::new(hive.clone(), limits, CancellationToken::new());
        Server::with_state(hive, state).await
    }

    /// A server over `state` (built on `hive`).
    pub async fn with_state(hive: Hive, state: ApiState) -> Server {
        let stop = state.stop().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = honeycomb::serve::router(state.clone());
        let signal = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { signal.cancelled().await })
            .await
            .expect("serves");
        });
        Server {
            addr,
            hive,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("client"),
            stop,
            state,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// An API token of `kind` for `tenant`/`principal`, issued as Hive itself.
    pub async fn token(&self, tenant: &str, principal: &str, kind: TokenKind) -> String {
        self.hive
            .tokens()
            .issue(
                &self.hive,
                &Principal::system(),
                TokenRequest::new(principal, kind).tenant(tenant),
            )
            .await
            .expect("token issued")
            .token
    }

    pub fn req(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let r = self.http.request(method, self.url(path));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.req(Method::GET, path, Some(token))
            .send()
            .await
            .expect("answered")
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.req(Method::POST, path, Some(token))
            .json(&body)
            .send()
            .await
            .expect("answered")
    }

    /// A GET answered with JSON: its body.
    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        self.get(path, token).await.json().await.expect("json")
    }

    /// Submits a task over HTTP and returns its id.
    pub async fn submit(&self, token: &str, agent: &str) -> String {
        self.submit_spec(token, serde_json::json!({"agent": agent, "input": {}}))
            .await
    }

    /// Submits `spec` (a `POST /api/tasks` body), asserts it was created and
    /// returns the task's id.
    pub async fn submit_spec(&self, token: &str, spec: Value) -> String {
        let r = self.post("/api/tasks", token, spec).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: Value = r.json().await.expect("json");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Registers a node for `token`'s principal and returns (node id, worker token).
    pub async fn node(&self, token: &str, capacity: u32) -> (String, String) {
        let r = self
            .post(
                "/api/nodes",
                token,
                serde_json::json!({"name": "remote", "capacity": capacity}),
            )
            .await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap_or_default()
        );
        let body: Value = r.json().await.expect("json");
        (
            body["node"]["id"].as_str().expect("node id").to_owned(),
            body["worker_token"]
                .as_str()
                .expect("worker token")
                .to_owned(),
        )
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.hive.shutdown();
    }
}

/// Reads a response body as a problem and checks its frame.
pub async fn problem(r: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(r.status(), status, "status");
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let request_id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = r.json().await.expect("problem json");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["type"], format!("/problems/{code}"), "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    assert!(
        body["instance"]
            .as_str()
            .is_some_and(|i| i.starts_with('/')),
        "{body}"
    );
    assert_eq!(body["request_id"].as_str(), request_id.as_deref(), "{body}");
    body
}

/// One server-sent event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sse {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl Sse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// An event stream being read.
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl SseReader {
    pub fn new(r: Response) -> SseReader {
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        SseReader {
            body: r.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next event with data (comments and `retry:` skipped); `None` at
    /// the end of the stream.
    pub async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut e = Sse::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        e.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        e.event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                e.data = data.join("\n");
                return Some(e);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// Events until (and with) `end`, or the end of the stream.
    pub async fn until_end(&mut self) -> Vec<Sse> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            let end = e.event.as_deref() == Some("end");
            out.push(e);
            if end {
                break;
            }
        }
        out
    }
}

/// A remote worker over HTTP: claims with a long poll, starts, reports
/// success with the input echoed, until `n` tasks ran.
pub async fn run_remote(server: &Server, worker_token: &str, n: usize) {
    let mut done = 0;
    while done < n {
        let r = server
            .post(
                "/api/worker/claim",
                worker_token,
                serde_json::json!({"max": 16, "start": true, "wait": "5s"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let claim: Value = r.json().await.expect("json");
        let tasks = claim["tasks"].as_array().expect("tasks").clone();
        if tasks.is_empty() {
            continue;
        }
        let reports: Vec<Value> = tasks
            .iter()
            .map(|t| {
                serde_json::json!({
                    "token": t["token"],
                    "outcome": "success",
                    "output": {"echo": t["spec"]["input"]},
                })
            })
            .collect();
        let r = server
            .post(
                "/api/worker/report",
                worker_token,
                serde_json::json!({"reports": reports}),
            )
            .await;
        let body: Value = r.json().await.expect("json");
        for result in body["results"].as_array().expect("results") {
            assert!(result["ack"].is_object(), "{result}");
        }
        done += tasks.len();
    }
}
