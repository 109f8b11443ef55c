//! A real Honeycomb served in-process on a loopback port over a memory://
//! store (restartable on the same port, the engine kept), and a proxy in
//! front of it that breaks one part of the contract on purpose.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hive::iam::{TokenKind, TokenRequest};
use hive::prelude::*;
use hive::{Scope, Scopes};
use honeycomb::api::{ApiLimits, ApiState};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// A Honeycomb in this process.
#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    pub hive: Hive,
    running: Arc<Mutex<Option<Running>>>,
}

async fn serve(hive: &Hive, listener: tokio::net::TcpListener) -> Running {
    let stop = CancellationToken::new();
    let state = ApiState::new(hive.clone(), ApiLimits::default(), stop.clone());
    let app = honeycomb::serve::router(state);
    let signal = stop.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { signal.cancelled().await })
        .await;
    });
    Running { stop, task }
}

impl Server {
    /// A Honeycomb over a fresh memory:// store.
    pub async fn start() -> Server {
        let hive = hive::open("memory://").await.expect("the store opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let running = serve(&hive, listener).await;
        Server {
            addr,
            hive,
            running: Arc::new(Mutex::new(Some(running))),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An admin token of `tenant`, issued as Hive itself; with
    /// `system:admin` too when `cross_tenant`.
    pub async fn admin_token(&self, tenant: &str, cross_tenant: bool) -> String {
        let mut request = TokenRequest::new("stabilizer", TokenKind::Admin).tenant(tenant);
        if cross_tenant {
            request = request.scopes(Scopes::admin().with(Scope::SystemAdmin));
        }
        self.hive
            .tokens()
            .issue(&self.hive, &Principal::system(), request)
            .await
            .expect("token issued")
            .token
    }

    /// Stops serving (open streams end, as on SIGTERM) and serves again on
    /// the same port over the same engine: a process restart, minus the
    /// store.
    pub async fn restart(&self) -> Result<(), String> {
        let mut running = self.running.lock().await;
        if let Some(r) = running.take() {
            r.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), r.task).await;
        }
        // Down for a moment, as a real restart is.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut last = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    *running = Some(serve(&self.hive, listener).await);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("cannot listen on {} again: {last:?}", self.addr))
    }

    /// [`Server::restart`] as a hook for `stabilize`.
    pub fn restart_hook(&self) -> hive_dogfood::RestartHook {
        let server = self.clone();
        Arc::new(move || {
            let server = server.clone();
            Box::pin(async move { server.restart().await })
        })
    }

    pub async fn stop(self) {
        if let Some(r) = self.running.lock().await.take() {
            r.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), r.task).await;
        }
        self.hive.shutdown();
    }
}

/// What the proxy breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breach {
    /// Task event streams lose their terminal event.
    DropTerminal,
    /// Task event streams send their first event twice.
    RepeatSeq,
    /// A refused (403) task cancellation is answered 200 with an ack, as if
    /// the worker token were allowed to cancel.
    WorkerCancel,
}

struct Proxy {
    upstream: String,
    breach: Breach,
    http: reqwest::Client,
}

/// A proxy in front of `upstream` that breaks the contract as `breach`
/// says; its base URL.
pub async fn proxy(upstream: &str, breach: Breach) -> String {
    let state = Arc::new(Proxy {
        upstream: upstream.to_owned(),
        breach,
        http: reqwest::Client::new(),
    });
    let app = axum::Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

const HOP: [&str; 5] = [
    "connection",
    "content-length",
    "transfer-encoding",
    "host",
    "keep-alive",
];

fn task_events_route(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() == 5 && parts[1] == "api" && parts[2] == "tasks" && parts[4] == "events"
}

fn task_cancel_route(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() == 5
        && parts[1] == "api"
        && parts[2] == "tasks"
        && parts[3] != "cancel"
        && parts[4] == "cancel"
}

async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let pq = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), 8 << 20).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut up = p
        .http
        .request(method.clone(), format!("{}{pq}", p.upstream))
        .body(body.to_vec());
    for (k, v) in &headers {
        if !HOP.contains(&k.as_str()) {
            up = up.header(k.as_str(), v.as_bytes());
        }
    }
    let answer = match up.send().await {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status().as_u16();
    if p.breach == Breach::WorkerCancel
        && method == axum::http::Method::POST
        && task_cancel_route(&path)
        && status == 403
    {
        return (
            StatusCode::OK,
            axum::Json(serde_json::json!({"seq": 99, "state": "cancelled"})),
        )
            .into_response();
    }
    let mut out_headers = HeaderMap::new();
    for (k, v) in answer.headers() {
        if HOP.contains(&k.as_str()) {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_str().as_bytes()),
            HeaderValue::from_bytes(v.as_bytes()),
        ) {
            out_headers.insert(k, v);
        }
    }
    let mangle = matches!(p.breach, Breach::DropTerminal | Breach::RepeatSeq)
        && status == 200
        && task_events_route(&path);
    let body = if mangle {
        let breach = p.breach;
        let blocks = futures::stream::unfold(
            (answer.bytes_stream().boxed(), String::new(), false),
            move |(mut up, mut buf, mut done)| async move {
                loop {
                    if let Some(end) = buf.find("\n\n") {
                        let block: String = buf.drain(..end + 2).collect();
                        let out = mangle_block(breach, block);
                        return Some((Ok::<_, std::io::Error>(out), (up, buf, done)));
                    }
                    if done {
                        return None;
                    }
                    match up.next().await {
                        Some(Ok(chunk)) => buf.push_str(&String::from_utf8_lossy(&chunk)),
                        _ => done = true,
                    }
                    if done && !buf.is_empty() {
                        let rest = std::mem::take(&mut buf);
                        return Some((Ok(rest), (up, buf, done)));
                    }
                }
            },
        );
        Body::from_stream(blocks)
    } else {
        Body::from_stream(answer.bytes_stream())
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    *response.headers_mut() = out_headers;
    response
}

/// One SSE block, broken as `breach` says.
fn mangle_block(breach: Breach, block: String) -> String {
    let data: Option<serde_json::Value> = block
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .and_then(|d| serde_json::from_str(d.trim()).ok());
    let Some(data) = data else { return block };
    let ty = data["type"].as_str().unwrap_or("");
    match breach {
        Breach::DropTerminal if ["succeeded", "failed", "cancelled", "timed_out"].contains(&ty) => {
            String::new()
        }
        Breach::RepeatSeq if data["seq"] == 1 => format!("{block}{block}"),
        _ => block,
    }
}
