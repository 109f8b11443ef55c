//! `health`: `/healthz` and `/readyz` answer 200 without a token, and
//! `/api/version` names the service (`name`, `version`, `commit`).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::{Ctx, ms_since};
use crate::error::{DogfoodError, Result};
use crate::report::CheckResult;

/// How long the health check waits for a target that is starting.
const WINDOW: Duration = Duration::from_secs(5);

/// Runs the check; also returns what `/api/version` said.
pub async fn run(ctx: &Ctx) -> (CheckResult, Value) {
    let started = Instant::now();
    let mut figures = json!({});
    let result = check(ctx, &mut figures).await;
    let version = figures
        .as_object_mut()
        .and_then(|o| o.remove("version_body"))
        .unwrap_or(Value::Null);
    (
        CheckResult::from_result("health", figures, result, ms_since(started)),
        version,
    )
}

async fn check(ctx: &Ctx, figures: &mut Value) -> Result<()> {
    for path in ["/healthz", "/readyz"] {
        let a = ctx
            .client
            .call(Method::GET, path, None)
            .retry_window(WINDOW)
            .send()
            .await?;
        figures[format!("{}_ms", path.trim_start_matches('/'))] =
            json!(a.elapsed.as_secs_f64() * 1000.0);
        a.expect(&[200])?;
    }
    let a = ctx
        .client
        .call(Method::GET, "/api/version", None)
        .retry_window(WINDOW)
        .send()
        .await?
        .expect(&[200])?;
    let v = a.json()?;
    for key in ["name", "version", "commit"] {
        match v.get(key).and_then(Value::as_str) {
            Some(s) if !s.trim().is_empty() => figures[key] = json!(s),
            _ => {
                return Err(DogfoodError::BadAnswer {
                    method: "GET".into(),
                    route: "/api/version".into(),
                    reason: format!("no {key:?} (a non-empty string) in {v}"),
                });
            }
        }
    }
    figures["version_body"] = v;
    Ok(())
}
