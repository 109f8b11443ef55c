//! `admin nodes list | drain | remove`: worker nodes.

use hive::prelude::*;

use super::output::{print, print_json, print_table, table, time};
use super::{AdminError, OutputArgs, local_operator};

/// `admin nodes list`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct ListArgs {
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `admin nodes drain` and `admin nodes remove`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct NodeArgs {
    /// The node's id.
    pub id: String,
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

fn parse_node(id: &str) -> Result<NodeId, AdminError> {
    id.trim()
        .parse()
        .map_err(|_| AdminError::Invalid(format!("node id {id:?}: not a node id (a UUID)")))
}

fn owner(node: &Node) -> String {
    match &node.spec.owner {
        NodeOwner::System => "system".into(),
        NodeOwner::User { tenant, principal } => format!("{tenant}/{principal}"),
    }
}

fn status(node: &Node) -> &'static str {
    match node.status {
        NodeStatus::Ready => "ready",
        NodeStatus::Draining => "draining",
        NodeStatus::Lost => "lost",
    }
}

/// `admin nodes list`: every node (system nodes and every tenant's).
pub(crate) async fn list(hive: &Hive, args: ListArgs) -> Result<(), AdminError> {
    let nodes = hive.list_nodes(&local_operator()).await?;
    if args.output.json {
        return print_json(&nodes);
    }
    let mut t = table(&[
        "ID",
        "NAME",
        "OWNER",
        "STATUS",
        "LEASES",
        "LABELS",
        "LAST SEEN",
    ]);
    for n in &nodes {
        let labels: Vec<String> = n
            .spec
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        t.add_row(vec![
            n.id.to_string(),
            n.spec.name.clone(),
            owner(n),
            status(n).to_owned(),
            format!("{}/{}", n.in_flight, n.spec.capacity),
            labels.join(","),
            time(n.last_seen),
        ]);
    }
    print_table(&t, "no nodes")
}

/// `admin nodes drain <id>`: the node keeps its leases and claims nothing
/// new. Audited as `node.drain`.
pub(crate) async fn drain(hive: &Hive, args: NodeArgs) -> Result<(), AdminError> {
    let id = parse_node(&args.id)?;
    let node = hive.drain_node(&local_operator(), id).await?;
    if args.output.json {
        return print_json(&node);
    }
    print(&format!(
        "node {} ({}) is {}: it keeps its {} leases and claims nothing new\n",
        node.id,
        node.spec.name,
        status(&node),
        node.in_flight
    ))
}

/// `admin nodes remove <id>`: the node is gone and its leases are reclaimed
/// at once (as placement lost). Audited as `node.remove`.
pub(crate) async fn remove(hive: &Hive, args: NodeArgs) -> Result<(), AdminError> {
    let id = parse_node(&args.id)?;
    hive.remove_node(&local_operator(), id).await?;
    if args.output.json {
        return print_json(&serde_json::json!({ "removed": id }));
    }
    print(&format!(
        "removed node {id}; its leases were reclaimed (placement lost)\n"
    ))
}
