//! Workflows: the list, and a workflow's DAG drawn server-side as SVG,
//! coloured by step state and redrawn live; each step links to its tasks,
//! with its join input and skip reason.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use hive::prelude::*;
use hive::{StepView, WorkflowId, WorkflowQuery, WorkflowView};
use maud::{Markup, html};
use serde::Deserialize;

use super::html::{self as h, Nav};
use super::tasks::{StreamQuery, query, stream_after, stream_response};
use super::{UiCaller, UiError, UiResult};
use crate::api::ApiState;
use crate::api::workflows::WorkflowEvents;

/// Workflows per list page.
const LIST_PAGE: u32 = 50;

/// The list's filters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    after: String,
}

fn wire<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn parse_workflow_id(id: &str) -> Result<WorkflowId, UiError> {
    id.parse()
        .map_err(|_| UiError::NotFound(format!("{id:?} is not a workflow id")))
}

/// `GET /ui/workflows`.
pub(crate) async fn list(
    State(state): State<ApiState>,
    c: UiCaller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> UiResult {
    let q = query(q)?;
    let mut wq = WorkflowQuery {
        limit: Some(LIST_PAGE),
        ..WorkflowQuery::default()
    };
    if !q.state.is_empty() {
        wq.states = vec![
            serde_json::from_value(serde_json::Value::String(q.state.clone()))
                .map_err(|_| UiError::BadRequest(format!("state={:?}: no such state", q.state)))?,
        ];
    }
    if !q.after.is_empty() {
        wq.after =
            Some(parse_workflow_id(&q.after).map_err(|e| UiError::BadRequest(e.to_string()))?);
    }
    let page = state.hive().list_workflows(&c.p, &wq).await?;
    let next = page.next.map(|n| {
        let n = n.to_string();
        format!(
            "/ui/workflows?{}",
            h::query(&[("state", q.state.as_str()), ("after", n.as_str())])
        )
    });
    let body = html! {
        h1 { "Workflows" }
        form.filters method="get" action="/ui/workflows" aria-label="Filter workflows" {
            div {
                label for="f-wstate" { "State" }
                select #f-wstate name="state" {
                    option value="" selected[q.state.is_empty()] { "any" }
                    @for s in ["running", "succeeded", "failed", "cancelled"] {
                        option value=(s) selected[q.state == s] { (s) }
                    }
                }
            }
            div.actions { button type="submit" { "Filter" } }
        }
        @if page.items.is_empty() {
            p #empty { "No workflows match." }
        } @else {
            div.scroll {
                table #workflows {
                    caption.visually-hidden { "Workflows, oldest first" }
                    thead { tr { th scope="col" { "Workflow" } th scope="col" { "Name" } th scope="col" { "State" } th scope="col" { "Owner" } th scope="col" { "Submitted" } th scope="col" { "Ended" } } }
                    tbody {
                        @for w in &page.items {
                            tr {
                                td { a href={ "/ui/workflows/" (w.id) } { code.id { (w.id) } } }
                                td { (w.name) }
                                td { (h::badge(w.state.as_str())) }
                                td { (w.owner.principal) }
                                td { (h::time(w.created_at)) }
                                td { (h::maybe_time(w.ended_at)) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(href) = next {
            nav.pager aria-label="Pages" { a rel="next" href=(href) { "Next page →" } }
        }
    };
    Ok(h::layout("Workflows", Some(&c), Nav::Workflows, body).into_response())
}

/// `GET /ui/workflows/{id}`.
pub(crate) async fn page(
    State(state): State<ApiState>,
    c: UiCaller,
    Path(id): Path<String>,
) -> UiResult {
    let id = parse_workflow_id(&id)?;
    let w = state.hive().get_workflow(&c.p, id).await?;
    let body = html! {
        h1 { "Workflow " (w.name) }
        p.lead {
            span #wf-state { (h::badge(w.state.as_str())) }
            " " (h::copyable(&w.id.to_string()))
            " · submitted by " (w.owner.principal) " " (h::time(w.created_at))
            @if let Some(e) = w.ended_at { " · ended " (h::time(e)) }
        }
        div #wf-live hidden data-stream={ "/ui/workflows/" (w.id) "/stream" } data-after=(w.last_seq)
            data-terminal=(w.state.is_terminal()) data-graph={ "/ui/workflows/" (w.id) "/graph" } {}
        (h::live_hint())
        div #graph { (graph_body(&w)) }
    };
    Ok(h::layout(
        &format!("Workflow {}", w.name),
        Some(&c),
        Nav::Workflows,
        body,
    )
    .into_response())
}

/// `GET /ui/workflows/{id}/graph`: the graph and the steps table alone (what
/// the script swaps in when the workflow moves).
pub(crate) async fn graph(
    State(state): State<ApiState>,
    c: UiCaller,
    Path(id): Path<String>,
) -> UiResult {
    let id = parse_workflow_id(&id)?;
    let w = state.hive().get_workflow(&c.p, id).await?;
    Ok(graph_body(&w).into_response())
}

/// Box and gap sizes of the drawing.
const W: i64 = 180;
const H: i64 = 56;
const GX: i64 = 70;
const GY: i64 = 22;
const PAD: i64 = 12;

/// Each step's layer: 0 without parents, else one more than its deepest
/// parent's (the DAG is acyclic: the engine checked it).
fn layers(steps: &[StepView]) -> Vec<usize> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut layer: Vec<Option<usize>> = vec![None; steps.len()];
    fn visit(
        i: usize,
        steps: &[StepView],
        index: &HashMap<&str, usize>,
        layer: &mut Vec<Option<usize>>,
        depth: usize,
    ) -> usize {
        if let Some(l) = layer[i] {
            return l;
        }
        if depth > steps.len() {
            return 0;
        }
        let l = steps[i]
            .depends_on
            .iter()
            .filter_map(|p| index.get(p.as_str()))
            .map(|&p| visit(p, steps, index, layer, depth + 1) + 1)
            .max()
            .unwrap_or(0);
        layer[i] = Some(l);
        l
    }
    (0..steps.len())
        .map(|i| visit(i, steps, &index, &mut layer, 0))
        .collect()
}

/// The DAG as SVG: layers left to right, one box per step (coloured by
/// state, linking to its task or its row), an edge per dependency.
pub(crate) fn svg(w: &WorkflowView) -> Markup {
    let layer = layers(&w.steps);
    let mut rows = vec![0i64; layer.iter().max().map_or(1, |m| m + 1)];
    let mut pos = Vec::with_capacity(w.steps.len());
    for &l in &layer {
        pos.push((PAD + l as i64 * (W + GX), PAD + rows[l] * (H + GY)));
        rows[l] += 1;
    }
    let width = 2 * PAD + rows.len() as i64 * (W + GX) - GX;
    let height = 2 * PAD + rows.iter().max().copied().unwrap_or(1) * (H + GY) - GY;
    let index: HashMap<&str, usize> = w
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut edges = String::new();
    for (i, s) in w.steps.iter().enumerate() {
        for p in &s.depends_on {
            let Some(&j) = index.get(p.as_str()) else {
                continue;
            };
            let (x1, y1) = (pos[j].0 + W, pos[j].1 + H / 2);
            let (x2, y2) = (pos[i].0, pos[i].1 + H / 2);
            edges.push_str(&format!(
                "<path class=\"edge\" data-from=\"{}\" data-to=\"{}\" d=\"M{x1} {y1} C{} {y1}, {} {y2}, {} {y2}\" marker-end=\"url(#arrow)\"/>",
                html_attr(p),
                html_attr(&s.id),
                x1 + GX / 2,
                x2 - GX / 2,
                x2 - 2
            ));
        }
    }
    html! {
        svg.dag #dag role="group" aria-labelledby="dag-title" viewBox={ "0 0 " (width) " " (height) }
            width=(width) height=(height) xmlns="http://www.w3.org/2000/svg" {
            title #dag-title { "The workflow's steps and their dependencies, coloured by state" }
            defs {
                marker #arrow viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                    path d="M 0 0 L 10 5 L 0 10 z" class="arrowhead" {}
                }
            }
            (h::raw(edges))
            @for (i, s) in w.steps.iter().enumerate() {
                @let (x, y) = pos[i];
                @let state = s.state.as_str();
                @let href = match s.tasks.as_slice() {
                    [t] => format!("/ui/tasks/{t}"),
                    _ => format!("#step-{}", s.id),
                };
                a href=(href) {
                    g class={ "step state-" (state) } id={ "node-" (s.id) } data-step=(s.id) data-state=(state) {
                        title { (s.id) ": " (state) }
                        rect x=(x) y=(y) width=(W) height=(H) rx="8" {}
                        text x=(x + 12) y=(y + 23) class="name" { (truncate(&s.id, 20)) }
                        text x=(x + 12) y=(y + 43) class="sub" {
                            (state.replace('_', " "))
                            @if s.tasks.len() > 1 { " · " (s.tasks.len()) " tasks" }
                        }
                    }
                }
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn html_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn graph_body(w: &WorkflowView) -> Markup {
    html! {
        div.scroll.graph-wrap data-state=(w.state.as_str()) data-last-seq=(w.last_seq) { (svg(w)) }
        ul.legend aria-label="Colours" {
            @for s in ["waiting", "running", "succeeded", "failed", "cancelled", "timed_out", "skipped"] {
                li { (h::badge(s)) }
            }
        }
        h2 { "Steps" }
        div.scroll {
            table #steps {
                thead { tr {
                    th scope="col" { "Step" } th scope="col" { "State" } th scope="col" { "Agent" }
                    th scope="col" { "Waits for" } th scope="col" { "Trigger" } th scope="col" { "Tasks" }
                    th scope="col" { "Attempts" } th scope="col" { "Started" } th scope="col" { "Ended" }
                } }
                tbody {
                    @for s in &w.steps {
                        tr #{ "step-" (s.id) } data-state=(s.state.as_str()) {
                            th scope="row" { (s.id) }
                            td { (h::badge(s.state.as_str())) }
                            td { (s.agent) }
                            td { @if s.depends_on.is_empty() { span.muted { "—" } } @else { (s.depends_on.join(", ")) } }
                            td { (wire(&s.trigger)) @if let Some(j) = &s.join { " · join " (wire(j)) } }
                            td { @for t in &s.tasks { a href={ "/ui/tasks/" (t) } { code.id { (short(t)) } } " " } }
                            td { (s.attempts) }
                            td { (h::maybe_time(s.started_at)) }
                            td { (h::maybe_time(s.ended_at)) }
                        }
                    }
                }
            }
        }
        @for s in &w.steps {
            @if s.skip_reason.is_some() || s.error.is_some() || (s.join.is_some() && s.input.is_some()) || s.output.is_some() {
                details.step-detail #{ "detail-" (s.id) } open[s.skip_reason.is_some() || s.error.is_some()] {
                    summary { "Step " (s.id) }
                    @if let Some(r) = s.skip_reason {
                        p.skip { "Skipped: " strong { (wire(&r)) } " — "
                            @match r {
                                hive::SkipReason::UpstreamFailed => "a parent failed, so its trigger rule cannot be met",
                                hive::SkipReason::NotNeeded => "its trigger rule cannot be met (not a failure)",
                            }
                        }
                    }
                    @if let (Some(_), Some(input)) = (&s.join, &s.input) {
                        h3 { "Join input" }
                        (h::json_block(input))
                    }
                    @if let Some(e) = &s.error {
                        h3 { "Error" }
                        p.error-box { code { (e.code) } ": " (e.message) }
                    }
                    @if let Some(o) = &s.output {
                        h3 { "Output" }
                        (h::json_block(o))
                    }
                }
            }
        }
    }
}

fn short(t: &TaskId) -> String {
    let s = t.to_string();
    s[s.len() - 8..].to_owned()
}

/// `GET /ui/workflows/{id}/stream`: the workflow's events as SSE.
pub(crate) async fn stream(
    State(state): State<ApiState>,
    c: UiCaller,
    Path(id): Path<String>,
    q: Result<Query<StreamQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    let after = stream_after(q, &headers)?;
    let id = parse_workflow_id(&id)?;
    let sub = state.hive().subscribe_workflow(&c.p, id, after).await?;
    stream_response(&state, &c, WorkflowEvents::new(sub), after)
}
