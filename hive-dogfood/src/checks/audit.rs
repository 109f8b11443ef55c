//! `audit_chain`: `GET /api/audit/verify` answers `ok: true` for every tenant
//! the run acted in (each with its admin token), after everything the run
//! did was audited.

use std::time::Instant;

use serde_json::{Value, json};

use super::{Ctx, Setup, ms_since};
use crate::error::{DogfoodError, Result};
use crate::report::CheckResult;

/// Runs the check.
pub async fn run(ctx: &Ctx, setup: &Setup) -> CheckResult {
    let started = Instant::now();
    let mut figures = json!({});
    let result = check(ctx, setup, &mut figures).await;
    CheckResult::from_result("audit_chain", figures, result, ms_since(started))
}

async fn check(ctx: &Ctx, setup: &Setup, figures: &mut Value) -> Result<()> {
    if !setup.whoami.can("audit:read") {
        return Err(DogfoodError::Skipped(
            "the token lacks audit:read, so it cannot verify the audit trail".into(),
        ));
    }
    let mut per_tenant = serde_json::Map::new();
    let mut checked = 0;
    let mut broken = None;
    for t in &setup.tenants {
        let a = ctx
            .client
            .get("/api/audit/verify", &t.admin_token)
            .send()
            .await?
            .expect(&[200])?;
        let v = a.json()?;
        let ok = v["ok"]
            .as_bool()
            .ok_or_else(|| a.bad(format!("no ok in {v}")))?;
        checked += v["checked"].as_u64().unwrap_or(0);
        per_tenant.insert(t.name.clone(), v.clone());
        if !ok && broken.is_none() {
            broken = Some(format!(
                "tenant {}'s audit chain is broken at seq {} ({}): {}",
                t.name, v["first_broken"], v["broken"], v["reason"]
            ));
        }
    }
    figures["tenants"] = json!(setup.tenants.len());
    figures["checked"] = json!(checked);
    figures["per_tenant"] = Value::Object(per_tenant);
    match broken {
        None => Ok(()),
        Some(b) => Err(DogfoodError::contract(b)),
    }
}
