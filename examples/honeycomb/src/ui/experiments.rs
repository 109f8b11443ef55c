//! Loop experiments (APIary): what the generating loops produced, their
//! metrics against the promotion thresholds, provenance, signature status,
//! and Promote for those who hold `experiment:promote`.

use std::sync::Arc;

use axum::Form;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use hive::Scope;
use hive::auth::{Action, Resource};
use hive::registry::{
    AgentRef, AgentRegistry, ApiaryError, Experiment, ExperimentQuery, ExperimentStatus,
    PromotionRule,
};
use maud::{Markup, html};
use serde::Deserialize;

use super::html::{self as h, Nav};
use super::tasks::query;
use super::{UiCaller, UiError, UiResult};
use crate::api::ApiState;

/// The list's filters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    builder_id: String,
}

fn no_registry(c: &UiCaller) -> UiResult {
    let body = html! {
        h1 { "Experiments" }
        p.alert role="status" #no-registry {
            "This Honeycomb runs without an APIary registry: set " code { "registry" } " and "
            code { "registry_keys" } " to list the loops' experiments."
        }
    };
    Ok(h::layout("Experiments", Some(c), Nav::Experiments, body).into_response())
}

/// How an experiment's signatures stand, as a word and a sentence.
async fn signature(
    registry: &Arc<dyn AgentRegistry>,
    c: &UiCaller,
    r: &AgentRef,
) -> (&'static str, String) {
    match registry.attestations(&c.p, r).await {
        Ok(a) if a.provenance.is_some() => (
            "verified",
            "the artifact's signed provenance verifies against a trusted sandbox key".into(),
        ),
        Ok(_) => ("unsigned", "no signed provenance is attached".into()),
        Err(e @ ApiaryError::Verification { .. }) => ("invalid", e.to_string()),
        Err(e) => ("unknown", format!("could not check: {e}")),
    }
}

fn link(uri: &Option<String>, label: &str) -> Markup {
    match uri {
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
            html! { a href=(u) rel="noopener noreferrer" { (label) } }
        }
        Some(u) => html! { code { (u) } },
        None => html! { span.muted { "none" } },
    }
}

/// `GET /ui/experiments`.
pub(crate) async fn list(
    State(state): State<ApiState>,
    c: UiCaller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> UiResult {
    let q = query(q)?;
    let Some(registry) = state.registry() else {
        return no_registry(&c);
    };
    let status = if q.status.is_empty() {
        None
    } else {
        Some(
            serde_json::from_value::<ExperimentStatus>(serde_json::Value::String(q.status.clone()))
                .map_err(|_| {
                    UiError::BadRequest(format!(
                        "status={:?}: candidate, promoted or refused",
                        q.status
                    ))
                })?,
        )
    };
    let eq = ExperimentQuery {
        tenant: None,
        builder_id: (!q.builder_id.is_empty()).then(|| q.builder_id.clone()),
        status,
    };
    let experiments = registry
        .experiments(&c.p, &eq)
        .await
        .map_err(crate::api::ApiError::from)?;
    let thresholds = registry.promotion_thresholds();
    let signatures = futures::future::join_all(
        experiments
            .iter()
            .map(|e| signature(&registry, &c, &e.reference)),
    )
    .await;
    let may_promote = c.p.scopes.contains(Scope::ExperimentPromote);
    let body = html! {
        h1 { "Experiments" }
        p { "Sandbox agents the generating loops produced, with their metrics against the promotion thresholds." }
        form.filters method="get" action="/ui/experiments" aria-label="Filter experiments" {
            div {
                label for="f-status" { "Status" }
                select #f-status name="status" {
                    option value="" selected[q.status.is_empty()] { "any" }
                    @for s in ["candidate", "promoted", "refused"] { option value=(s) selected[q.status == s] { (s) } }
                }
            }
            div {
                label for="f-loop" { "Loop" }
                input #f-loop name="builder_id" value=(q.builder_id);
            }
            div.actions { button type="submit" { "Filter" } }
        }
        @if !thresholds.is_empty() {
            p #thresholds { "Promotion thresholds: "
                @for (m, min) in &thresholds { code { (m) " ≥ " (min) } " " }
            }
        }
        @if experiments.is_empty() {
            p #empty { "No experiments." }
        }
        @for (e, (sig, sig_detail)) in experiments.iter().zip(signatures) {
            (card(e, &thresholds, sig, &sig_detail, may_promote, &c.csrf))
        }
    };
    Ok(h::layout("Experiments", Some(&c), Nav::Experiments, body).into_response())
}

fn card(
    e: &Experiment,
    thresholds: &std::collections::BTreeMap<String, f64>,
    sig: &str,
    sig_detail: &str,
    may_promote: bool,
    csrf: &str,
) -> Markup {
    let reference = e.reference.to_string();
    let mut names: Vec<&String> = e.metrics.keys().chain(thresholds.keys()).collect();
    names.sort();
    names.dedup();
    html! {
        article.card.experiment data-ref=(reference) data-status=(e.status.as_str()) aria-labelledby={ "exp-" (e.digest) } {
            h2 #{ "exp-" (e.digest) } { code { (reference) } " " (h::badge(e.status.as_str())) }
            dl.facts {
                dt { "Loop" } dd.loop { (e.builder_id) }
                dt { "Run" } dd { code { (e.invocation_id) } }
                dt { "Rationale" } dd { (link(&e.rationale_uri, "rationale")) }
                dt { "Metrics document" } dd { (link(&e.metrics_uri, "metrics")) }
                dt { "Signature" } dd { span class={ "sig sig-" (sig) } title=(sig_detail) { (sig) } " " span.muted { (sig_detail) } }
                dt { "Published" } dd { (h::time(e.created_at)) }
                dt { "Digest" } dd { (h::copyable(&e.digest)) }
            }
            table.metrics {
                caption { "Metrics" }
                thead { tr { th scope="col" { "Metric" } th scope="col" { "Value" } th scope="col" { "Threshold" } th scope="col" { "Passes" } } }
                tbody {
                    @for m in names {
                        @let value = e.metrics.get(m);
                        @let min = thresholds.get(m);
                        @let pass = match (value, min) { (Some(v), Some(t)) => Some(v >= t), (None, Some(_)) => Some(false), _ => None };
                        tr data-metric=(m) {
                            th scope="row" { (m) }
                            td { @if let Some(v) = value { (v) } @else { span.muted { "missing" } } }
                            td { @if let Some(t) = min { "≥ " (t) } @else { span.muted { "—" } } }
                            td { @match pass { Some(true) => span.pass { "yes" }, Some(false) => span.fail { "no" }, None => span.muted { "—" } } }
                        }
                    }
                }
            }
            @if let Some(p) = &e.promoted {
                p.promoted { "Promoted to " code { (p.reference) } " by " (p.by) " " (h::time(p.at)) }
            }
            @if let Some(r) = &e.last_refusal {
                p.refusal { "Last refusal: rule " code.rule { (r.rule) } " — " (r.reason) " (" (r.by) ", " (h::time(r.at)) ")" }
            }
            @if may_promote && e.promoted.is_none() {
                form.inline.promote method="post" action="/ui/experiments/promote" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="reference" value=(reference);
                    button type="submit" { "Promote " (e.reference.name) " " (e.reference.version) }
                }
            }
        }
    }
}

/// The promote form.
#[derive(Debug, Deserialize)]
pub(crate) struct PromoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reference: String,
}

/// `POST /ui/experiments/promote`: the registry decides; a refusal shows
/// the rule that failed (and is audited, like the success).
pub(crate) async fn promote(
    State(state): State<ApiState>,
    c: UiCaller,
    headers: HeaderMap,
    Form(form): Form<PromoteForm>,
) -> UiResult {
    let resource = Resource::Named {
        kind: "experiment",
        id: form.reference.clone(),
        tenant: c.p.tenant.clone(),
    };
    c.check_form(
        &state,
        &headers,
        &form.csrf,
        Action::PromoteExperiment,
        &resource,
    )
    .await?;
    let Some(registry) = state.registry() else {
        return no_registry(&c);
    };
    let r: AgentRef = form.reference.parse().map_err(|e| {
        UiError::BadRequest(format!(
            "{:?} is not an agent reference: {e}",
            form.reference
        ))
    })?;
    match registry.promote(&c.p, &r).await {
        Ok(p) => {
            let body = html! {
                h1 { "Promoted" }
                p.alert.ok role="status" #promote-result data-outcome="promoted" {
                    code { (p.sandbox.reference) } " is now " code #production-ref { (p.production.reference) } "."
                }
                p { a href="/ui/experiments" { "Back to the experiments" } " · " a href="/ui/audit" { "See the audit trail" } }
            };
            Ok(h::layout("Promoted", Some(&c), Nav::Experiments, body).into_response())
        }
        Err(ApiaryError::PromotionRefused { rule, reason, .. })
            if rule != PromotionRule::CallerScope =>
        {
            let body = html! {
                h1 { "Promotion refused" }
                div.alert role="alert" #promote-result data-outcome="refused" {
                    p { "The rule that failed: " code #refusal-rule { (rule) } }
                    p #refusal-reason { (reason) }
                }
                p { a href="/ui/experiments" { "Back to the experiments" } " · " a href="/ui/audit" { "See the audit trail" } }
            };
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                h::layout("Promotion refused", Some(&c), Nav::Experiments, body),
            )
                .into_response())
        }
        Err(e) => Err(crate::api::ApiError::from(e).into()),
    }
}
