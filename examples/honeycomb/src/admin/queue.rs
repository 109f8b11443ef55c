//! `admin queue`: the queue's depth per tenant and agent — how many tasks
//! wait (pending, and of those how many are delayed by a backoff), are
//! leased (scheduled) and run — counted from pages of `Hive::list_tasks`.

use std::collections::BTreeMap;

use hive::Timestamp;
use hive::prelude::*;
use serde::Serialize;

use super::output::{print_json, print_table, progress, table, time_or_dash};
use super::{AdminError, OutputArgs, operator_in, tenants};

/// `admin queue`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct QueueArgs {
    /// Only this tenant [default: every tenant with unfinished tasks].
    #[arg(long)]
    pub tenant: Option<String>,
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// How many unfinished tasks are in each state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Depth {
    /// Waiting for a node (including `delayed`).
    pub pending: u64,
    /// Pending but not claimable yet: a retry's backoff, or a delay.
    pub delayed: u64,
    /// Leased to a node that has not started them.
    pub scheduled: u64,
    /// Running on a node.
    pub running: u64,
    /// When the longest-waiting pending task was submitted.
    pub oldest_pending_at: Option<Timestamp>,
}

impl Depth {
    fn count(&mut self, task: &Task, now: Timestamp) {
        match task.state {
            TaskState::Pending => {
                self.pending += 1;
                if task.available_at > now {
                    self.delayed += 1;
                }
                if self.oldest_pending_at.is_none_or(|t| task.created_at < t) {
                    self.oldest_pending_at = Some(task.created_at);
                }
            }
            TaskState::Scheduled => self.scheduled += 1,
            TaskState::Running => self.running += 1,
            _ => {}
        }
    }

    fn add(&mut self, other: &Depth) {
        self.pending += other.pending;
        self.delayed += other.delayed;
        self.scheduled += other.scheduled;
        self.running += other.running;
        self.oldest_pending_at = match (self.oldest_pending_at, other.oldest_pending_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn is_empty(&self) -> bool {
        self.pending + self.scheduled + self.running == 0
    }
}

/// One agent's depth in a tenant.
#[derive(Clone, Debug, Serialize)]
pub struct AgentDepth {
    /// The agent.
    pub agent: String,
    /// Its counts.
    #[serde(flatten)]
    pub depth: Depth,
}

/// One tenant's depth, in all and per agent (by agent name).
#[derive(Clone, Debug, Serialize)]
pub struct TenantDepth {
    /// The tenant.
    pub tenant: TenantId,
    /// Its counts over every agent.
    #[serde(flatten)]
    pub depth: Depth,
    /// Per agent.
    pub agents: Vec<AgentDepth>,
}

/// The queue: every tenant counted (the one named, or those with unfinished
/// tasks), and the total.
#[derive(Clone, Debug, Serialize)]
pub struct Queue {
    /// Per tenant, by name.
    pub tenants: Vec<TenantDepth>,
    /// Over every tenant listed.
    pub total: Depth,
}

/// Counts the unfinished tasks of `tenant`, or of every tenant.
pub async fn queue_depth(hive: &Hive, tenant: Option<&str>) -> Result<Queue, AdminError> {
    let named = tenant.is_some();
    let tenants = tenants(hive, tenant).await?;
    let now = hive.clock().now();
    let bar = progress(None, "counting unfinished tasks");
    let mut out = Queue {
        tenants: Vec::new(),
        total: Depth::default(),
    };
    for tenant in tenants {
        bar.set_message(tenant.to_string());
        let counted = count_tenant(hive, &tenant, now, &bar).await;
        let agents = match counted {
            Ok(a) => a,
            Err(e) => {
                bar.finish_and_clear();
                return Err(e);
            }
        };
        let mut depth = Depth::default();
        for d in agents.values() {
            depth.add(d);
        }
        if depth.is_empty() && !named {
            continue;
        }
        out.total.add(&depth);
        out.tenants.push(TenantDepth {
            tenant,
            depth,
            agents: agents
                .into_iter()
                .map(|(agent, depth)| AgentDepth { agent, depth })
                .collect(),
        });
    }
    bar.finish_and_clear();
    Ok(out)
}

async fn count_tenant(
    hive: &Hive,
    tenant: &TenantId,
    now: Timestamp,
    bar: &indicatif::ProgressBar,
) -> Result<BTreeMap<String, Depth>, AdminError> {
    let p = operator_in(tenant);
    let mut query = TaskQuery {
        states: vec![TaskState::Pending, TaskState::Scheduled, TaskState::Running],
        limit: Some(TaskQuery::MAX_LIMIT),
        ..TaskQuery::default()
    };
    let mut agents: BTreeMap<String, Depth> = BTreeMap::new();
    loop {
        let page = hive.list_tasks(&p, &query).await?;
        bar.inc(page.items.len() as u64);
        for task in &page.items {
            agents
                .entry(task.spec.agent.as_str().to_owned())
                .or_default()
                .count(task, now);
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok(agents),
        }
    }
}

/// `admin queue`: a table per tenant and agent (or `--json`).
pub(crate) async fn run(hive: &Hive, args: QueueArgs) -> Result<(), AdminError> {
    let queue = queue_depth(hive, args.tenant.as_deref()).await?;
    if args.output.json {
        return print_json(&queue);
    }
    let mut t = table(&[
        "TENANT",
        "AGENT",
        "PENDING",
        "DELAYED",
        "SCHEDULED",
        "RUNNING",
        "OLDEST PENDING",
    ]);
    let row = |tenant: &str, agent: &str, d: &Depth| {
        vec![
            tenant.to_owned(),
            agent.to_owned(),
            d.pending.to_string(),
            d.delayed.to_string(),
            d.scheduled.to_string(),
            d.running.to_string(),
            time_or_dash(d.oldest_pending_at),
        ]
    };
    for tenant in &queue.tenants {
        for a in &tenant.agents {
            t.add_row(row(tenant.tenant.as_str(), &a.agent, &a.depth));
        }
        if tenant.agents.len() != 1 {
            t.add_row(row(tenant.tenant.as_str(), "(all)", &tenant.depth));
        }
    }
    if queue.tenants.len() > 1 {
        t.add_row(row("(all)", "(all)", &queue.total));
    }
    print_table(&t, "nothing queued: no pending, scheduled or running task")
}
