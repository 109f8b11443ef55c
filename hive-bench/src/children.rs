//! What the multi-process benchmarks share: running this binary again as
//! children and reading the one line each prints; registering a node.

use std::process::Stdio;

use hive_core::node::Node;
use hive_core::store::Store;
use hive_core::{NodeId, NodeSpec, NodeStatus, Timestamp};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Starts `count` copies of this binary with `--backend BACKEND` and `args`,
/// waits for them all, and returns the line each printed that starts with
/// `prefix` (without it), in start order.
pub(crate) async fn run(
    count: usize,
    backend: &str,
    args: &[String],
    prefix: &str,
) -> Result<Vec<String>, BoxError> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::with_capacity(count);
    for _ in 0..count {
        children.push(
            tokio::process::Command::new(&exe)
                .arg("--backend")
                .arg(backend)
                .args(args)
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?,
        );
    }
    let mut lines = Vec::with_capacity(count);
    for c in children {
        let out = c.wait_with_output().await?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .ok_or_else(|| {
                format!(
                    "a child printed no {prefix:?} line ({}): {text}",
                    out.status
                )
            })?;
        lines.push(line.to_owned());
    }
    Ok(lines)
}

/// The value of `key=value` in a `key=value …` line.
pub(crate) fn field<T>(line: &str, key: &str) -> Result<T, BoxError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .ok_or_else(|| format!("no {key} in {line:?}"))?
        .parse()
        .map_err(|e| format!("{key} in {line:?}: {e}").into())
}

/// Registers a Ready system node of `capacity` seen at `now`.
pub(crate) async fn system_node(
    store: &dyn Store,
    name: String,
    capacity: u32,
    now: Timestamp,
) -> Result<NodeId, BoxError> {
    let id = NodeId::new();
    store
        .register_node(Node {
            id,
            spec: NodeSpec::system(name, capacity),
            status: NodeStatus::Ready,
            in_flight: 0,
            registered_at: now,
            last_seen: now,
        })
        .await?;
    Ok(id)
}
