//! The promotion audit trail: every promote attempt from the hash-chained
//! audit trail (who, when, which experiment, passed or refused and by which
//! rule), under the chain's verification status.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use hive::AuditOutcome;
use hive::prelude::*;
use maud::html;
use serde::Deserialize;

use super::html::{self as h, Nav};
use super::tasks::query;
use super::{UiCaller, UiResult};
use crate::api::ApiState;

/// The audit action of a promotion.
const PROMOTE: &str = "experiment.promote";
/// Entries per page.
const PAGE: u32 = 100;

/// The page's cursor.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditPageQuery {
    after_seq: Option<u64>,
}

/// The rule a refusal names (`rule <rule>: <reason>`), if any.
fn rule_of(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix("rule ")?;
    rest.split_once(": ").map(|(rule, _)| rule)
}

/// `GET /ui/audit`.
pub(crate) async fn page(
    State(state): State<ApiState>,
    c: UiCaller,
    q: Result<Query<AuditPageQuery>, QueryRejection>,
) -> UiResult {
    let q = query(q)?;
    let hive = state.hive();
    let report = state.audit().verify(hive, &c.p, &c.p.tenant).await?;
    let aq = AuditQuery {
        action: Some(PROMOTE.into()),
        after_seq: q.after_seq.unwrap_or(0),
        limit: Some(PAGE),
        ..AuditQuery::default()
    };
    let page = state.audit().list(hive, &c.p, &aq).await?;
    let events = &page.events;
    // An authorized attempt passed every rule unless a refusal of the same
    // actor and experiment follows it before their next attempt.
    let refused_later: Vec<bool> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            e.outcome == AuditOutcome::Allowed
                && events[i + 1..]
                    .iter()
                    .take_while(|n| {
                        !(n.outcome == AuditOutcome::Allowed
                            && n.actor == e.actor
                            && n.resource == e.resource)
                    })
                    .any(|n| {
                        n.outcome == AuditOutcome::Denied
                            && n.actor == e.actor
                            && n.resource == e.resource
                    })
        })
        .collect();
    let body = html! {
        h1 { "Promotion audit trail" }
        @if report.ok {
            p.alert.ok #chain role="status" data-ok="true" {
                "Audit chain intact: " (report.checked) " events verified from seq 1."
            }
        } @else {
            div.alert.broken #chain role="alert" data-ok="false" data-first-broken=[report.first_broken] {
                p { strong { "AUDIT CHAIN BROKEN at seq " (report.first_broken.map(|s| s.to_string()).unwrap_or_else(|| "?".into())) } }
                p {
                    (report.broken.map(|b| serde_json::to_value(b).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()).unwrap_or_default())
                    ": " (report.reason.clone().unwrap_or_default())
                }
                p { (report.checked) " events before it verify. Treat every entry from that seq on as untrusted." }
            }
        }
        @if events.is_empty() {
            p #empty { "No promotion has been attempted." }
        } @else {
            div.scroll {
                table #promotions {
                    caption.visually-hidden { "Promotion attempts, oldest first" }
                    thead { tr {
                        th scope="col" { "Seq" } th scope="col" { "When" } th scope="col" { "Actor" }
                        th scope="col" { "Experiment" } th scope="col" { "Outcome" } th scope="col" { "Rule" } th scope="col" { "Detail" }
                    } }
                    tbody {
                        @for (e, refused) in events.iter().zip(&refused_later) {
                            @let reason = e.details.get("reason").and_then(|r| r.as_str()).unwrap_or("");
                            @let broken = report.first_broken.is_some_and(|b| e.seq >= b);
                            tr data-seq=(e.seq) data-outcome=(if e.outcome == AuditOutcome::Allowed { "allowed" } else { "denied" }) class=[broken.then_some("untrusted")] {
                                td { (e.seq) }
                                td { (h::time(e.at)) }
                                td { (e.actor) " (" (e.actor_kind) ")" }
                                td { code { (e.resource.strip_prefix("experiment/").unwrap_or(&e.resource)) } }
                                td {
                                    @if e.outcome == AuditOutcome::Denied {
                                        span.fail { "refused" }
                                    } @else if *refused {
                                        span.muted { "authorized, then refused" }
                                    } @else {
                                        span.pass { "passed every rule" }
                                    }
                                }
                                td { @if let Some(rule) = rule_of(reason) { code.rule { (rule) } } @else if e.outcome == AuditOutcome::Denied && reason.contains("experiment:promote") { code.rule { "caller-has-experiment:promote" } } }
                                td { (reason) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = page.next_after_seq {
            nav.pager aria-label="Pages" { a rel="next" href={ "/ui/audit?after_seq=" (next) } { "Later entries →" } }
        }
    };
    Ok(h::layout("Promotion audit trail", Some(&c), Nav::Audit, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::rule_of;

    #[test]
    fn the_rule_is_read_from_a_refusal() {
        assert_eq!(
            rule_of("rule metric:accuracy>=0.9: accuracy is 0.5"),
            Some("metric:accuracy>=0.9")
        );
        assert_eq!(rule_of("missing scope experiment:promote"), None);
    }
}
