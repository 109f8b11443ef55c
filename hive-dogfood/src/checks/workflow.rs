//! `workflow`: a fork-join — `split` (`dogfood.ok`) fans out to `left`
//! (`dogfood.ok`) and `right` (`dogfood.fail`, no retry), joined by `join`
//! (`dogfood.ok`, trigger `all_done`, join `collect`). Its event stream must
//! verify to `end` (seq gapless from 1, `started` first, `finished` last);
//! then the workflow must be `succeeded` (its only leaf succeeded) with
//! `split`, `left` succeeded, `right` failed with `dogfood_fail`, `join`
//! succeeded — and the join's input must show both branches: `left`
//! succeeded with its output, `right` failed with its error.

use std::time::Instant;

use serde_json::{Value, json};

use super::{Ctx, ms_since};
use crate::error::{DogfoodError, Result};
use crate::report::CheckResult;
use crate::sse::{self, FollowPlan, SeqVerifier, StreamKind};
use crate::worker::FAIL_CODE;

/// Reports the workers send for the workflow's steps.
const REPORTS: u64 = 4;

/// Runs the check as `token`: the result, the stream's reconnections (for
/// `restart`), and the reports the workers owe for it.
pub async fn run(ctx: &Ctx, token: &str) -> (CheckResult, u32, u64) {
    let started = Instant::now();
    let mut figures = json!({});
    let mut reconnects = 0;
    let mut submitted = false;
    let result = check(ctx, token, &mut figures, &mut reconnects, &mut submitted).await;
    let reports = if submitted { REPORTS } else { 0 };
    (
        CheckResult::from_result("workflow", figures, result, ms_since(started)),
        reconnects,
        reports,
    )
}

async fn check(
    ctx: &Ctx,
    token: &str,
    figures: &mut Value,
    reconnects: &mut u32,
    submitted: &mut bool,
) -> Result<()> {
    let labels = ctx.labels();
    let spec = json!({
        "name": format!("dogfood-fork-join-{}", ctx.run_id),
        "steps": [
            {"id": "split", "agent": "dogfood.ok", "input": {"step": "split"}, "labels": labels},
            {"id": "left", "agent": "dogfood.ok", "input": {"step": "left"}, "labels": labels,
             "depends_on": ["split"]},
            {"id": "right", "agent": "dogfood.fail", "input": {"step": "right"}, "labels": labels,
             "depends_on": ["split"], "retry": {"max_attempts": 1}},
            {"id": "join", "agent": "dogfood.ok", "input": {"step": "join"}, "labels": labels,
             "depends_on": ["left", "right"], "trigger": "all_done", "join": "collect"},
        ]
    });
    let a = ctx
        .client
        .post("/api/workflows", token, spec)
        .header(
            "idempotency-key",
            format!("dogfood-{}-workflow", ctx.run_id),
        )
        .send()
        .await?
        .expect(&[201])?;
    let v = a.json()?;
    let id = match (v["id"].as_str(), v["created"].as_bool()) {
        (Some(id), Some(true)) => id.to_owned(),
        _ => {
            return Err(a.bad(format!(
                "a new workflow answers {{id, created: true}}, got {v}"
            )));
        }
    };
    *submitted = true;
    figures["id"] = json!(id);
    let followed = sse::follow(
        &ctx.client,
        &format!("/api/workflows/{id}/events"),
        token,
        SeqVerifier::new(StreamKind::Workflow, &id, None),
        FollowPlan {
            cut_after: None,
            allow_reconnect: ctx.opts.restart.is_some(),
            deadline: ctx.deadline,
        },
    )
    .await;
    *reconnects = followed.reconnects;
    figures["events"] = json!(followed.verifier.seen.len());
    if let Some(b) = followed.breach {
        return Err(DogfoodError::contract(b));
    }
    let finished = followed
        .verifier
        .terminal_data
        .as_ref()
        .and_then(|d| d["state"].as_str())
        .unwrap_or("?")
        .to_owned();
    let a = ctx
        .client
        .get(format!("/api/workflows/{id}"), token)
        .send()
        .await?
        .expect(&[200])?;
    let view = a.json()?;
    let state = view["state"].as_str().unwrap_or("?");
    figures["state"] = json!(state);
    let steps = view["steps"]
        .as_array()
        .ok_or_else(|| a.bad(format!("no steps in {view}")))?;
    let step = |sid: &str| steps.iter().find(|s| s["id"] == sid);
    let mut states = serde_json::Map::new();
    for s in steps {
        states.insert(
            s["id"].as_str().unwrap_or("?").to_owned(),
            s["state"].clone(),
        );
    }
    figures["steps"] = Value::Object(states);
    if finished != state {
        return Err(DogfoodError::contract(format!(
            "workflow {id}: its stream finished {finished}, GET says {state}"
        )));
    }
    for (sid, want) in [
        ("split", "succeeded"),
        ("left", "succeeded"),
        ("right", "failed"),
        ("join", "succeeded"),
    ] {
        let got = step(sid).map_or(&Value::Null, |s| &s["state"]);
        if got != want {
            return Err(DogfoodError::contract(format!(
                "workflow {id}: step {sid} is {got}, expected {want}"
            )));
        }
    }
    if state != "succeeded" {
        return Err(DogfoodError::contract(format!(
            "workflow {id} is {state}; its only leaf (join, all_done) succeeded, so it must be succeeded"
        )));
    }
    let right = step("right").cloned().unwrap_or_default();
    if right["error"]["code"] != FAIL_CODE {
        return Err(DogfoodError::contract(format!(
            "workflow {id}: step right failed with {}, expected the code {FAIL_CODE}",
            right["error"]
        )));
    }
    // The join's input: the step's recorded input, else what the worker
    // echoed back from it.
    let join = step("join").cloned().unwrap_or_default();
    let input = match join.get("input") {
        Some(i) if !i.is_null() => i.clone(),
        _ => join["output"]["echo"].clone(),
    };
    if join["output"]["echo"] != input {
        return Err(DogfoodError::contract(format!(
            "workflow {id}: the join's output {} does not echo its input {input}",
            join["output"]
        )));
    }
    let parents = &input["parents"];
    figures["join_input"] = input.clone();
    let left_ok = parents["left"]["state"] == "succeeded"
        && parents["left"]["output"]["echo"]["input"] == json!({"step": "left"});
    let right_failed =
        parents["right"]["state"] == "failed" && parents["right"]["error"]["code"] == FAIL_CODE;
    if input["input"] != json!({"step": "join"}) || !left_ok || !right_failed {
        return Err(DogfoodError::contract(format!(
            "workflow {id}: the join's input must hold its template input and both branches (left succeeded with its output, right failed with {FAIL_CODE}), got {input}"
        )));
    }
    Ok(())
}
