//! Nodes: owners, labels, capacity, leases, last heartbeat, drain.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use hive::auth::{Action, Resource};
use hive::{NodeId, NodeOwner, NodeStatus, Timestamp};
use maud::html;
use serde::Deserialize;

use super::html::{self as h, Nav};
use super::{UiCaller, UiError, UiResult};
use crate::api::ApiState;

fn status(s: NodeStatus) -> &'static str {
    match s {
        NodeStatus::Ready => "ready",
        NodeStatus::Draining => "draining",
        NodeStatus::Lost => "lost",
    }
}

/// `GET /ui/nodes`.
pub(crate) async fn list(State(state): State<ApiState>, c: UiCaller) -> UiResult {
    let nodes = state.hive().list_nodes(&c.p).await?;
    let now = Timestamp::now();
    let body = html! {
        h1 { "Nodes" }
        @if nodes.is_empty() {
            p #empty { "No nodes are registered." }
        } @else {
            div.scroll {
                table #nodes {
                    caption.visually-hidden { "Worker nodes" }
                    thead { tr {
                        th scope="col" { "Node" } th scope="col" { "Status" } th scope="col" { "Owner" }
                        th scope="col" { "Labels" } th scope="col" { "Leases / capacity" } th scope="col" { "Last heartbeat" }
                        th scope="col" { "Registered" } th scope="col" { span.visually-hidden { "Actions" } }
                    } }
                    tbody {
                        @for n in &nodes {
                            tr #{ "node-" (n.id) } data-status=(status(n.status)) {
                                td { strong { (n.spec.name) } br; (h::copyable(&n.id.to_string())) }
                                td { (h::badge(status(n.status))) }
                                td { @match &n.spec.owner {
                                    NodeOwner::System => "system",
                                    NodeOwner::User { tenant, principal } => { (tenant) "/" (principal) },
                                } }
                                td { @for (k, v) in &n.spec.labels { code { (k) "=" (v) } " " } }
                                td { (n.in_flight) " / " (n.spec.capacity) }
                                td { (h::time(n.last_seen)) " " span.muted { "(" (h::duration(n.last_seen, now)) " ago)" } }
                                td { (h::time(n.registered_at)) }
                                td {
                                    @if n.status == NodeStatus::Ready {
                                        form.inline method="post" action={ "/ui/nodes/" (n.id) "/drain" } {
                                            input type="hidden" name="csrf" value=(c.csrf);
                                            button type="submit" aria-label={ "Drain " (n.spec.name) } { "Drain" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(h::layout("Nodes", Some(&c), Nav::Nodes, body).into_response())
}

/// The drain form.
#[derive(Debug, Deserialize)]
pub(crate) struct DrainForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/nodes/{id}/drain`: the engine decides who may drain it.
pub(crate) async fn drain(
    State(state): State<ApiState>,
    c: UiCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<DrainForm>,
) -> UiResult {
    let id: NodeId = id
        .parse()
        .map_err(|_| UiError::NotFound(format!("{id:?} is not a node id")))?;
    let resource = Resource::Node {
        id,
        tenant: None,
        owner: None,
    };
    c.check_form(&state, &headers, &form.csrf, Action::DrainNode, &resource)
        .await?;
    state.hive().drain_node(&c.p, id).await?;
    Ok(Redirect::to(&format!("/ui/nodes#node-{id}")).into_response())
}
