//! `/metrics` (Prometheus text) and the per-request counters. The engine
//! emits its own counters and histograms through the `metrics` facade;
//! Honeycomb installs the Prometheus recorder once per process.

use std::sync::OnceLock;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use subtle::ConstantTimeEq;

use super::{ApiError, ApiState};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's Prometheus recorder (installed on first use; `None` when
/// another recorder was installed first by the host).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: another recorder is installed; /metrics is empty");
                    None
                }
            }
        })
        .as_ref()
}

/// Counts every request by route template, method and status, and times it.
pub async fn track(request: Request<Body>, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("honeycomb_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("honeycomb_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: Prometheus text; behind `Bearer <metrics token>` when
/// one is configured.
pub async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(want) = state.metrics_token() {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(want.as_bytes())) {
            return ApiError::unauthorized("/metrics needs the configured metrics token")
                .into_response();
        }
    }
    metrics::gauge!("honeycomb_sse_streams").set(state.open_streams() as f64);
    match state.hive().store().pending_count().await {
        Ok(Some(n)) => metrics::gauge!("hive_queue_depth").set(n as f64),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count pending tasks"),
    }
    let Some(h) = handle() else {
        return (StatusCode::OK, String::new()).into_response();
    };
    h.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        h.render(),
    )
        .into_response()
}
